// Package failover is the failover orchestrator: the part of Site Recovery
// that turns recovery points into running Azure VMs. It runs test
// failovers and their cleanup, failovers, changes of recovery point and
// commits, for single VMs and for recovery plans, as jobs whose tasks,
// states and allowed actions are what the portal shows.
//
// The Orchestrator is a runtime.Actor. Requests arrive as proto messages
// (FailoverRequest, JobAction, SetTarget) and are answered with a
// proto.Reply to the sender: a request that cannot be served is refused at
// once, with a clear reason and nothing created or changed; an accepted one
// is answered with its job id (Reply.Result) and runs as a job.
//
// # Jobs and steps
//
// A job is a list of phases run in order; a phase is a set of step chains
// run in parallel (one per VM, or one plan action), and the next phase
// starts only when every chain of the current one has ended well. Each step
// is a Task of the job, with its start and end times, so that RTO can be
// read per step, per VM, per boot group and per job. The phases are:
//
//   - test failover: prerequisites → latest (only for the "latest" point:
//     proto.MakeLatest to the Azure side) → recovery points (catalogs read
//     straight from storage with proto.LoadCatalog: replication is not
//     disturbed) → per VM, in parallel: copy each disk of the point to a new
//     blob, create a managed disk from each, create the NIC in the chosen
//     network → per boot group, in order: pre actions, create and boot the
//     group's VMs in parallel, wait until each is healthy, post actions.
//   - failover: prerequisites → shut the sources down (optional; a
//     failure is a warning and the failover goes on) → latest → stop
//     replication (proto.StopReplication, before anything is created) →
//     recovery points → as for a test, in the production network.
//   - test cleanup: per VM, delete exactly what its test made: the VM,
//     then its NICs, then its disks, then the copied blobs.
//   - change recovery point: per VM, disks from the new point; the old VM
//     is deleted, a new one boots from the new disks on the same NIC; the
//     old disks and blobs are deleted.
//   - commit: proto.CommitPoint per VM; afterwards the point is fixed.
//     Of a failed-back VM: its Azure VM, NICs, disks and blobs deleted,
//     then proto.FailedBack to the configuration server.
//   - failback (proto.OpFailback, FAILOVER.md §B; see failback.go): points
//     from the master target → per boot group, in order: the Azure VM shut
//     down, the on-premises disks brought to the point, the on-premises VM
//     powered on and checked; plan actions of DirectionBack.
//
// A failover tells the configuration server proto.FailedOver once a VM is
// healthy (Config.ConfigServer; resent until answered, a warning after
// Config.NotifyTimeout).
//
// Ordering rules. Phases never overlap. Within a plan, group N+1 starts
// only after every VM of group N is healthy and its post actions ended.
// Every long-running fabric operation is polled every Config.PollEvery; a
// 429 is retried after its RetryAfter; any other failure fails the step
// with its ASR error code (28031 VM create, 28092 NIC create, 170010
// hydration) and reason, and the job fails with that reason. A plan action
// that fails stops the plan with AllowedActions resume and skip: resume
// runs the action again and goes on, skip marks it skipped and goes on;
// finished steps are never run again. A manual action waits (job state
// "waiting", AllowedActions ack) until acknowledged.
//
// What a job creates is recorded in its machine's state before the create
// is asked for, so a cleanup deletes it even when the job failed midway
// (deleting what does not exist is not an error on ARM).
//
// # Restarts
//
// With Config.Store, jobs and machine records survive a restart (see
// persist.go for the rules): they are JSON blobs in the container
// ContainerPrefix+ContainerRecovery, each create is asked of the fabric
// only once the record naming it is written, a reply to the portal only
// once what its request changed is, and at Started the records are loaded
// before anything is served. A job the restart interrupted is failed
// ("interrupted: the recovery service restarted during <task>") with the
// operation that makes sense next in its AllowedActions: a test
// failover's cleanup (deleting exactly what it recorded), a failover's
// change of point, else the same operation again. What is not kept: a
// job's in-memory progress (it is never resumed), and requests in flight
// to the Azure side, the configuration server or the master target
// (their answers to the old incarnation are dropped).
//
// The orchestrator never writes a catalog: points are read with
// proto.LoadCatalog and changed only through the Azure side's requests.
package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Config configures an Orchestrator.
type Config struct {
	Fabric          compute.Fabric
	FabricPeer      string     // host for the network model, e.g. "management.azure"
	Store           blob.Store // the storage account holding replica disks and points
	StoragePeer     string
	ContainerPrefix string
	Vault           runtime.Addr   // the Azure-side service (azuresvc)
	VSphere         vsphere.Client // source shutdown; nil: shutdown is refused with a clear reason
	VSpherePeer     string
	Runbooks        Runbooks    // script actions of plans; nil: none
	Group           string      // target resource group
	Production      compute.Ref // the production network
	PollEvery       time.Duration
	// VaultTimeout is how long a request to the Azure side (or to the
	// master target) may go unanswered before its step fails (default
	// 10 min).
	VaultTimeout time.Duration
	// ConfigServer is the configuration server, told FailedOver when a
	// failover (not a test) brought a machine's Azure VM up and
	// FailedBack when a failback is committed. "" tells no one (a world
	// without a configuration server).
	ConfigServer runtime.Addr
	// NotifyTimeout bounds how long the configuration server is told
	// (the message resent every ResendEvery) before the step ends with a
	// warning and the job goes on (default 5 min).
	NotifyTimeout time.Duration
	// MasterTarget is the on-premises master target failback asks for
	// its points and brings the disks to one; "" refuses failback.
	MasterTarget runtime.Addr
	// OnPremBoot is the health check of a VM failback powered on on
	// premises (vm its vCenter name, machine the protected machine); nil:
	// a powered-on VM is healthy. It runs in an Op.
	OnPremBoot func(ctx context.Context, vm, machine string) error
}

// Runbooks runs the script actions of recovery plans.
type Runbooks interface {
	Run(ctx context.Context, name string, p RunbookParams) error
}

// RunbookParams are what a runbook receives (Azure Automation's
// RecoveryPlanContext): VMs is empty for a group's pre action.
type RunbookParams struct {
	Plan, FailoverType, Direction string
	Group                         int
	VMs                           []string
}

// Defaults and limits.
const (
	DefaultPollEvery     = 15 * time.Second
	DefaultVaultTimeout  = 10 * time.Minute
	DefaultNotifyTimeout = 5 * time.Minute
	// ResendEvery is how often an unanswered message to the configuration
	// server or the master target is sent again (each is idempotent).
	ResendEvery   = 30 * time.Second
	DefaultSize   = "Standard_D2s_v3"
	MaxPlanVMs    = 100 // Azure Site Recovery's limit per plan
	MaxPlanGroups = 7
	// maxEarly bounds the messages kept while the records load.
	maxEarly = 4096
	// maxThrottled bounds the retries of one Begin answered 429, and
	// maxPollErrors the failed polls of one operation.
	maxThrottled  = 100
	maxPollErrors = 20
	// maxDeleteConflicts bounds the retries (every PollEvery) of a delete
	// refused with a conflict: a resource still being made, e.g. by a job
	// a restart interrupted (a hydrated VM takes up to 13 min).
	maxDeleteConflicts = 80
)

// ContainerFailover is the suffix of the container that holds the blobs
// failover copies from points (under ContainerPrefix).
const ContainerFailover = "failover"

// Errors of refused requests; a Reply's Reason wraps one of them.
var (
	ErrInvalid     = errors.New("failover: invalid request")
	ErrInProgress  = errors.New("failover: an operation is in progress")
	ErrTestRunning = errors.New("failover: failover could not be initiated since test failover is in progress")
	ErrFailedOver  = errors.New("failover: already failed over")
	ErrNotFailed   = errors.New("failover: not failed over")
	ErrFailedBack  = errors.New("failover: failed back")
	ErrCommitted   = errors.New("failover: already committed")
	ErrNoTest      = errors.New("failover: no test failover to clean up")
	ErrPlanLimits  = errors.New("failover: recovery plan over Azure Site Recovery's limits")
	ErrPoint       = errors.New("failover: recovery point not available")
	ErrUnknownJob  = errors.New("failover: no such job")
	ErrAction      = errors.New("failover: action not allowed")
)

// errAborted is a step not started because its phase is failing.
var errAborted = errors.New("failover: aborted, the job is failing")

// Machine states.
const (
	StateReplicating = "replicating"
	StateTest        = "test-failover"
	StateFailedOver  = "failed-over"
	StateCommitted   = "committed"
	// StateFailedBack: a failback shut the Azure VM down (its job may
	// still be running, or have failed: failback may then run again);
	// commit deletes the Azure VM and its resources.
	StateFailedBack = "failed-back"
	// StateOnPrem: the failback is committed; the machine runs on
	// premises again and may be protected to Azure again.
	StateOnPrem = "on-premises"
)

// MachineState is one protected machine as failover sees it.
type MachineState struct {
	Machine string
	State   string
	Job     string // the job that put it in State; "" while replicating
	Point   string // the point its Azure VM runs from
	Busy    string // the job working on it now, "" when none
	// ReplicationGroup is its multi-VM consistency group at failover ("" for
	// none): failback to latest-app puts the members on a common point.
	ReplicationGroup string
	// BackPoint is the failback point its on-premises disks were brought
	// to, OnPremVM the on-premises VM (the master target's answer).
	BackPoint string
	OnPremVM  string
	// What the test or failover created, for cleanup and change point.
	VM    compute.Ref
	NICs  []compute.Ref
	Disks []compute.Ref
	Blobs []string // in the failover container
}

func (m *MachineState) clone() MachineState {
	c := *m
	c.NICs, c.Disks, c.Blobs = slices.Clone(m.NICs), slices.Clone(m.Disks), slices.Clone(m.Blobs)
	return c
}

// target is a machine's SetTarget.
type target struct {
	subnet  string
	ip      netip.Addr
	size    string
	os      compute.OSType
	hydrate bool
}

// Orchestrator is the failover actor. Build it with New.
type Orchestrator struct {
	cfg      Config
	jobs     []*job
	byID     map[string]*job
	machines map[string]*MachineState
	targets  map[string]target
	ops      runtime.Callbacks
	timers   map[runtime.TimerID]func(runtime.Context)
	waiting  map[string]func(runtime.Context, wire.Msg) // request id → continuation (a Reply or TargetPoints)
	seq      int                                        // job ids and vault request ids
	p        persister
}

// New returns an Orchestrator.
func New(cfg Config) *Orchestrator {
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = DefaultPollEvery
	}
	if cfg.VaultTimeout <= 0 {
		cfg.VaultTimeout = DefaultVaultTimeout
	}
	if cfg.NotifyTimeout <= 0 {
		cfg.NotifyTimeout = DefaultNotifyTimeout
	}
	if cfg.Vault == "" {
		cfg.Vault = runtime.MakeAddr(proto.HostService, runtime.PortConfig)
	}
	if cfg.StoragePeer == "" {
		cfg.StoragePeer = proto.HostStorage
	}
	return &Orchestrator{cfg: cfg, byID: map[string]*job{}, machines: map[string]*MachineState{},
		targets: map[string]target{}, timers: map[runtime.TimerID]func(runtime.Context){},
		waiting: map[string]func(runtime.Context, wire.Msg){},
		p:       persister{latest: map[string][]byte{}, pending: map[string][]byte{}, final: map[string]bool{}}}
}

// Jobs returns a deep copy of every job, oldest first.
func (o *Orchestrator) Jobs() []Job {
	out := make([]Job, 0, len(o.jobs))
	for _, j := range o.jobs {
		out = append(out, j.Job.clone())
	}
	return out
}

// Loaded reports whether the orchestrator has loaded its records and
// serves (at once without a Config.Store).
func (o *Orchestrator) Loaded() bool { return o.p.loaded }

// Machines returns a copy of every machine failover knows, by name.
func (o *Orchestrator) Machines() []MachineState {
	var out []MachineState
	for _, name := range sortedKeys(o.machines) {
		out = append(out, o.machines[name].clone())
	}
	return out
}

// Handle implements runtime.Actor.
func (o *Orchestrator) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		ctx.Log().Info("failover: started", "poll_every", o.cfg.PollEvery.String())
		if o.cfg.Store == nil {
			o.p.loaded = true
		} else {
			o.startLoad(ctx)
		}
	case runtime.Timer:
		if fn, ok := o.timers[ev.ID]; ok {
			delete(o.timers, ev.ID)
			fn(ctx)
		}
	case runtime.Done:
		o.ops.Dispatch(ctx, ev)
	case runtime.Message:
		if !o.p.loaded {
			// Served once the records are loaded; past maxEarly dropped
			// (senders retry as for a lost frame).
			if len(o.p.early) < maxEarly {
				o.p.early = append(o.p.early, ev)
			}
			return
		}
		o.message(ctx, ev)
	}
	o.flush(ctx)
}

func (o *Orchestrator) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := wire.Decode(ev.Data)
	if err != nil {
		ctx.Log().Warn("failover: undecodable frame dropped", "from", string(ev.From), "err", err.Error())
		return
	}
	switch m := msg.(type) {
	case *proto.Reply:
		o.answer(ctx, m.Req, m)
	case *proto.TargetPoints:
		o.answer(ctx, m.Req, m)
	case *proto.SetTarget:
		err := o.setTarget(m)
		o.saved(func(ctx runtime.Context) { o.reply(ctx, ev.From, msg, m.Req, m.Machine, "", err) })
	case *proto.FailoverRequest:
		o.request(ctx, ev.From, m)
	case *proto.JobAction:
		err := o.action(ctx, m)
		o.saved(func(ctx runtime.Context) { o.reply(ctx, ev.From, msg, m.Req, m.JobID, m.JobID, err) })
	default:
		ctx.Log().Debug("failover: message ignored", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

// answer runs the continuation of request req with its answer m.
func (o *Orchestrator) answer(ctx runtime.Context, req string, m wire.Msg) {
	if fn, ok := o.waiting[req]; ok && req != "" {
		delete(o.waiting, req)
		fn(ctx, m)
		return
	}
	ctx.Log().Debug("failover: reply to no request dropped", "req", req)
}

// reply answers a request.
func (o *Orchestrator) reply(ctx runtime.Context, to runtime.Addr, req wire.Msg, reqID, subject, result string, err error) {
	r := &proto.Reply{Request: wire.KindName(req.WireKind()), Subject: subject, OK: err == nil, Req: reqID, Result: result}
	if err != nil {
		r.Reason = err.Error()
		ctx.Log().Warn("failover: request refused", "request", r.Request, "req", reqID, "subject", subject, "reason", r.Reason)
	}
	ctx.Send(to, wire.Encode(r))
}

func (o *Orchestrator) setTarget(m *proto.SetTarget) error {
	if m.Machine == "" {
		return fmt.Errorf("%w: set target: no machine", ErrInvalid)
	}
	t := target{subnet: m.Subnet, size: m.Size, os: compute.OSType(m.OSType), hydrate: m.Hydrate}
	if m.IP != "" {
		ip, err := netip.ParseAddr(m.IP)
		if err != nil {
			return fmt.Errorf("%w: set target of %s: IP %q: %v", ErrInvalid, m.Machine, m.IP, err)
		}
		t.ip = ip
	}
	switch t.os {
	case "":
		t.os = compute.Linux
	case compute.Linux, compute.Windows:
	default:
		return fmt.Errorf("%w: set target of %s: OS type %q (want Linux or Windows)", ErrInvalid, m.Machine, m.OSType)
	}
	if t.size == "" {
		t.size = DefaultSize
	}
	o.targets[m.Machine] = t
	o.machine(m.Machine)
	return nil
}

func (o *Orchestrator) targetOf(machine string) target {
	if t, ok := o.targets[machine]; ok {
		return t
	}
	return target{size: DefaultSize, os: compute.Linux}
}

func (o *Orchestrator) machine(name string) *MachineState {
	m, ok := o.machines[name]
	if !ok {
		m = &MachineState{Machine: name, State: StateReplicating}
		o.machines[name] = m
	}
	return m
}

// after runs fn after d on the actor's turn.
func (o *Orchestrator) after(ctx runtime.Context, d time.Duration, name string, fn func(runtime.Context)) {
	o.timers[ctx.After(d, name)] = fn
}

// vault sends a request to the Azure side and runs then with its reply, or
// with a failed reply after VaultTimeout.
func (o *Orchestrator) vault(ctx runtime.Context, j *job, msg wire.Msg, req string, then func(runtime.Context, *proto.Reply)) {
	gen := j.gen
	live := func() bool { return j.gen == gen && j.State == JobInProgress }
	o.waiting[req] = func(ctx runtime.Context, m wire.Msg) {
		r, ok := m.(*proto.Reply)
		if !ok {
			r = &proto.Reply{Request: wire.KindName(msg.WireKind()), Req: req,
				Reason: fmt.Sprintf("failover: the Azure service answered %s", wire.KindName(m.WireKind()))}
		}
		if live() {
			then(ctx, r)
		}
	}
	ctx.Send(o.cfg.Vault, wire.Encode(msg))
	o.after(ctx, o.cfg.VaultTimeout, "failover-vault-timeout", func(ctx runtime.Context) {
		if _, ok := o.waiting[req]; !ok {
			return
		}
		delete(o.waiting, req)
		if live() {
			then(ctx, &proto.Reply{Request: wire.KindName(msg.WireKind()), Req: req,
				Reason: fmt.Sprintf("failover: no answer from the Azure service in %s", o.cfg.VaultTimeout)})
		}
	})
}

func (o *Orchestrator) nextReq(j *job) string {
	o.seq++
	return fmt.Sprintf("%s/%d", j.ID, o.seq)
}

// call runs fn in an Op against peer, then then with its result, unless
// the job moved on (failed, or resumed into a new attempt) meanwhile.
func (o *Orchestrator) call(ctx runtime.Context, j *job, name, peer string, fn func(context.Context) (any, error), then func(runtime.Context, any, error)) {
	gen := j.gen
	o.ops.Go(ctx, runtime.Op{Name: name, Peer: peer, Run: fn}, func(ctx runtime.Context, d runtime.Done) {
		if j.gen == gen && j.State == JobInProgress {
			then(ctx, d.Value, d.Err)
		}
	})
}

// lro runs a long-running fabric operation: begin (in an Op) is retried
// after a 429's RetryAfter; the operation is then polled every PollEvery
// until done. then gets the Begin's own error or the operation's.
func (o *Orchestrator) lro(ctx runtime.Context, j *job, name string, begin func(context.Context) (compute.Pending, error), then func(runtime.Context, error)) {
	throttled := 0
	var try func(ctx runtime.Context)
	try = func(ctx runtime.Context) {
		if j.failing != "" {
			then(ctx, fmt.Errorf("%w: %s not started", errAborted, name))
			return
		}
		o.call(ctx, j, "failover-"+name, o.cfg.FabricPeer, func(c context.Context) (any, error) { return begin(c) },
			func(ctx runtime.Context, v any, err error) {
				var ce *compute.Error
				if errors.Is(err, compute.ErrThrottled) && throttled < maxThrottled {
					throttled++
					wait := o.cfg.PollEvery
					if errors.As(err, &ce) && ce.RetryAfter > 0 {
						wait = ce.RetryAfter
					}
					ctx.Log().Info("failover: throttled, retrying", "job", j.ID, "step", name, "after", wait.String(), "try", throttled)
					o.after(ctx, wait, "failover-retry", try)
					return
				}
				if err != nil {
					then(ctx, err)
					return
				}
				o.poll(ctx, j, name, v.(compute.Pending), 0, then)
			})
	}
	try(ctx)
}

func (o *Orchestrator) poll(ctx runtime.Context, j *job, name string, p compute.Pending, failures int, then func(runtime.Context, error)) {
	gen := j.gen
	o.after(ctx, o.cfg.PollEvery, "failover-poll", func(ctx runtime.Context) {
		if j.gen != gen || j.State != JobInProgress {
			return
		}
		o.call(ctx, j, "failover-poll-"+name, o.cfg.FabricPeer, func(c context.Context) (any, error) { return o.cfg.Fabric.Poll(c, p) },
			func(ctx runtime.Context, v any, err error) {
				switch {
				case err != nil && failures+1 >= maxPollErrors:
					then(ctx, fmt.Errorf("failover: %s: polling failed %d times: %w", name, failures+1, err))
				case err != nil:
					o.poll(ctx, j, name, p, failures+1, then)
				case !v.(compute.Result).Done:
					o.poll(ctx, j, name, p, failures, then)
				default:
					then(ctx, v.(compute.Result).Err)
				}
			})
	})
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// errText is err's text without the container prefix (which must not
// appear in a deterministic trace).
func (o *Orchestrator) errText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if o.cfg.ContainerPrefix != "" {
		s = strings.ReplaceAll(s, o.cfg.ContainerPrefix, "")
	}
	return s
}
