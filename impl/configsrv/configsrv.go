// Package configsrv is the configuration server (cs01:443): the on-premises
// brain of replication. It discovers VMs through the vSphere port, keeps the
// replication policies, answers the portal's management requests, push-installs
// the Mobility service, registers agents (checking that they know the vault's
// passphrase), orders initial syncs and resyncs with numbered generations,
// relays the Azure side's block checksums to agents, and watches health:
// heartbeats, RPO, the process server's cache and backlog. It raises alerts and
// runs jobs a person can follow; Status is its portal view.
//
// Replication groups (multi-VM consistency) are enabled as a whole with
// EnableGroup: each member is enabled as EnableReplication does it and its
// agent gets a GroupConfig after its Protect. The master's agent runs the
// tag rounds; the server keeps their statistics (TagRound), the group
// recovery points the Azure side reports, and the multi-vm-consistency alert.
//
// Failover and failback (reprotect.go): a committed failover leaves a
// machine failed-over; Reprotect to on-premises replicates it from the
// Azure VM's agent through a process server in Azure to a master target
// with the failback policy, the master target reporting as the Azure side
// does; a committed failback leaves it failed-back; Reprotect to Azure
// resumes the Azure replica and replicates forward again.
//
// The server is a runtime.Actor. With a store (Config.Store, a csstore
// port: SQLite in the daemon and in the simulated world) its machines,
// policies, groups, jobs and alerts survive a restart: it loads them
// before it serves anything, and writes what each event changed before
// the messages the event caused go out (persist.go). Without one it keeps
// its state in memory only: a restarted server rediscovers vCenter and
// learns agents again as they register.
package configsrv

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Errors the server puts in the Reason of a refused management request
// (wrapped with the machine or policy concerned).
var (
	ErrUnknownMachine   = errors.New("configsrv: unknown machine")
	ErrUnknownPolicy    = errors.New("configsrv: unknown policy")
	ErrInvalidPolicy    = errors.New("configsrv: invalid policy")
	ErrAlreadyProtected = errors.New("configsrv: already protected")
	ErrNotProtected     = errors.New("configsrv: replication is not enabled")
	ErrNoAgent          = errors.New("configsrv: no registered agent")
	ErrNoVault          = errors.New("configsrv: no usable vault key")
	ErrInvalidGroup     = errors.New("configsrv: invalid replication group")
	ErrGroupSize        = errors.New("configsrv: replication group size")
	ErrGroupReplicating = errors.New("configsrv: machines can join a replication group only when it is enabled")
	ErrInOtherGroup     = errors.New("configsrv: in another replication group")
	ErrInGroup          = errors.New("configsrv: member of a replication group")
	// ErrFailbackPolicy: a failback policy (proto.FailbackPolicy) was to be
	// created or edited, or used to protect a machine forward; it is made
	// with its policy, fixed, and only reprotect uses it.
	ErrFailbackPolicy = errors.New("configsrv: failback policy")
)

// ReasonWrongPassphrase is the RegisterReply.Reason of an agent whose proof
// does not verify: it was installed with another vault's passphrase.
const ReasonWrongPassphrase = "wrong vault passphrase"

// Installer paths of the Mobility service, run in the guest by push install.
const (
	LinuxInstaller   = "/usr/local/ASR/install.sh"
	WindowsInstaller = `C:\ProgramData\ASR\UnifiedAgentInstaller.exe`
)

// Alert names.
const (
	AlertRPO                 = "rpo-threshold-exceeded"
	AlertHeartbeatLost       = "agent-heartbeat-lost"
	AlertPSCacheLow          = "ps-cache-low"
	AlertPSBacklogHigh       = "ps-backlog-high"
	AlertRegistrationRefused = "registration-refused"
	AlertPushInstallFailed   = "push-install-failed"
	// AlertItemRefused: the Azure side refused a stream item that does not
	// open (corrupt in storage); a resync was ordered. Cleared when the
	// resync completes.
	AlertItemRefused = "replica-item-refused"
	// AlertPointLost: a recovery point's snapshot disappeared from
	// storage; the point is gone. Subject: machine/point.
	AlertPointLost = "recovery-point-lost"
)

// Health thresholds and periods that the contract fixes.
const (
	// CheckEvery is how often RPO and heartbeats are evaluated and pending
	// PolicyFor messages resent.
	CheckEvery = time.Minute
	// CacheLowFraction: ps-cache-low is raised while the process server's
	// free cache is under this fraction of its capacity.
	CacheLowFraction = 0.20
	// BacklogHigh: ps-backlog-high is raised while the process server's
	// upload estimate exceeds it.
	BacklogHigh = 30 * time.Minute
	// discoverRetry bounds the wait after a failed discovery.
	discoverRetry = time.Minute
)

// Config is everything the configuration server needs.
type Config struct {
	VaultID    string
	Passphrase string // derives the vault keys that check agents' registration proofs
	// VSphere is the vCenter port; nil means no vCenter (physical servers only).
	VSphere vsphere.Client
	// ProcessServer is the address agents stream to (sent in Protect).
	ProcessServer runtime.Addr
	// Azure is the Azure side's address (PolicyFor goes there).
	Azure runtime.Addr
	// Policies are created at start, beside proto.DefaultPolicy() (which one
	// named "default" here replaces). Invalid ones are dropped and logged.
	Policies []proto.Policy
	// InstallAuth is the guest account push install runs the installer with.
	InstallAuth vsphere.GuestAuth
	// HeartbeatLost raises agent-heartbeat-lost after this long without a
	// heartbeat from a protected machine's agent (default 15 min).
	HeartbeatLost time.Duration
	// RediscoverEvery is the period of vCenter discovery (default 15 min).
	RediscoverEvery time.Duration
	// Store keeps the server's state across restarts; nil keeps it in
	// memory only. The server owns it while it runs but does not close it:
	// whoever opened it closes it after the actor stops.
	Store csstore.Store
}

// Server is the configuration server actor. Build it with New. It is
// owned by its runtime's goroutine: read it (Status) only through the
// runtime's Inspect, between events.
type Server struct {
	cfg      Config
	keys     vault.Keys
	keysErr  error
	badConf  []string // policies dropped from Config, logged at Started
	policies map[string]proto.Policy
	machines map[string]*machine
	groups   map[string]*group
	jobs     []*job
	alerts   []*alert
	ps       map[string]*psReport
	ops      runtime.Ops[pendingOp]
	timers   runtime.Timers
	persist  *persister // nil without a store

	// startedAt is when this incarnation started: a restarted server
	// gives every agent HeartbeatLost from it before it calls a heartbeat
	// lost.
	startedAt time.Time

	discovering    bool
	lastDiscovery  time.Time
	discoveryError string
	discoveredVMs  int
}

// pendingOp says what a started Op was for, so its Done can be applied.
type pendingOp struct {
	kind    opKind
	machine string
	job     int             // the job that started it: a result for an older job is stale
	check   *reprotectCheck // opReprotectCheck
}

// opKind is what an Op of the server does.
type opKind int

const (
	opDiscover       opKind = iota // a vCenter discovery
	opInstall                      // a push install of the Mobility service
	opReprotectCheck               // a reprotect request's vCenter check (reprotect.go)
	opPrepareVM                    // a reprotect job's power-off or VM creation (reprotect.go)
)

// Timer names.
const (
	timerDiscover = "discover"
	timerCheck    = "check"
)

// New builds a configuration server. It derives the vault keys once; a
// passphrase that cannot be a vault's leaves the server refusing every
// registration (and saying so in the log at start).
func New(cfg Config) *Server {
	if cfg.HeartbeatLost <= 0 {
		cfg.HeartbeatLost = 15 * time.Minute
	}
	if cfg.RediscoverEvery <= 0 {
		cfg.RediscoverEvery = 15 * time.Minute
	}
	s := &Server{cfg: cfg, policies: map[string]proto.Policy{}, machines: map[string]*machine{},
		groups: map[string]*group{},
		ps:     map[string]*psReport{}}
	if cfg.Store != nil {
		s.persist = &persister{store: cfg.Store}
	}
	s.keys, s.keysErr = vault.Derive(cfg.VaultID, cfg.Passphrase)
	s.addPolicy(proto.DefaultPolicy())
	for _, p := range cfg.Policies {
		if err := p.Validate(); err != nil {
			s.badConf = append(s.badConf, err.Error())
			continue
		}
		if err := checkNotFailback(p.Name, "it cannot be edited"); err != nil {
			s.badConf = append(s.badConf, err.Error())
			continue
		}
		s.addPolicy(p)
	}
	return s
}

// Handle implements runtime.Actor.
func (s *Server) Handle(ctx runtime.Context, ev runtime.Event) {
	if s.persist != nil {
		s.handleStored(ctx, ev)
		return
	}
	s.handle(ctx, ev)
}

// handle is one event's effect on the state.
func (s *Server) handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		s.start(ctx)
	case runtime.Timer:
		if !s.timers.Fired(ev) {
			return
		}
		switch ev.Name {
		case timerDiscover:
			s.discover(ctx)
		case timerCheck:
			s.check(ctx)
			s.timers.Set(ctx, timerCheck, CheckEvery)
		}
	case runtime.Done:
		op, ok := s.ops.Complete(ev)
		if !ok {
			return
		}
		switch op.kind {
		case opDiscover:
			s.discovered(ctx, ev)
		case opInstall:
			s.installed(ctx, op, ev)
		case opReprotectCheck:
			s.reprotectChecked(ctx, op, ev)
		case opPrepareVM:
			s.vmPrepared(ctx, op, ev)
		}
	case runtime.Message:
		s.message(ctx, ev)
	}
}

func (s *Server) start(ctx runtime.Context) {
	s.startedAt = ctx.Now()
	for _, e := range s.badConf {
		ctx.Log().Error("configsrv: policy from configuration dropped", "err", e)
	}
	if s.keysErr != nil {
		ctx.Log().Error("configsrv: vault keys unusable; every registration will be refused", "err", s.keysErr)
	}
	s.discover(ctx)
	s.timers.Set(ctx, timerCheck, CheckEvery)
}

func (s *Server) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := wire.Decode(ev.Data)
	if err != nil {
		ctx.Log().Warn("configsrv: dropped undecodable frame", "from", string(ev.From), "err", err)
		return
	}
	switch m := msg.(type) {
	case *proto.EnableReplication:
		s.enable(ctx, ev.From, m)
	case *proto.EnableGroup:
		s.enableGroup(ctx, ev.From, m)
	case *proto.TagRound:
		s.tagRound(ctx, ev.From, m)
	case *proto.DisableReplication:
		s.disable(ctx, ev.From, m)
	case *proto.CreatePolicy:
		s.createPolicy(ctx, ev.From, m)
	case *proto.Register:
		s.register(ctx, ev.From, m)
	case *proto.Heartbeat:
		s.heartbeat(ctx, ev.From, m)
	case *proto.ResyncNeeded:
		s.resyncNeeded(ctx, ev.From, m)
	case *proto.ReplicaEvent:
		s.replicaEvent(ctx, ev.From, m)
	case *proto.Checksums:
		s.relayChecksums(ctx, ev.From, m)
	case *proto.FailedOver:
		s.failedOver(ctx, ev.From, m)
	case *proto.FailedBack:
		s.failedBack(ctx, ev.From, m)
	case *proto.Reprotect:
		s.reprotect(ctx, ev.From, m)
	case *proto.Reply:
		s.replyIn(ctx, ev.From, m)
	case *proto.PSHealth:
		s.psHealth(ctx, ev.From, m)
	default:
		ctx.Log().Warn("configsrv: dropped unexpected message", "from", string(ev.From),
			"kind", wire.KindName(msg.WireKind()))
	}
}

// send frames and sends one message.
func send(ctx runtime.Context, to runtime.Addr, m wire.Msg) {
	if to == "" {
		return
	}
	ctx.Send(to, wire.Encode(m))
}

// sortedMachines lists machines by name, for deterministic sweeps.
func (s *Server) sortedMachines() []*machine {
	out := make([]*machine, 0, len(s.machines))
	for _, m := range s.machines {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// check is the periodic sweep: RPO, lost heartbeats, PolicyFor resends,
// group RPO and the silence of group rounds.
// It only raises and clears alerts and resends PolicyFor: it never changes
// a machine's state or the agent's schedule.
func (s *Server) check(ctx runtime.Context) {
	now := ctx.Now()
	for _, m := range s.sortedMachines() {
		s.evalRPO(ctx, m, now)
		s.evalHeartbeat(ctx, m, now)
		if m.policyPending && m.state.enabled() {
			s.sendPolicyFor(ctx, m)
		}
		s.resendAwaited(ctx, m, now)
	}
	for _, g := range s.sortedGroups() {
		s.evalGroupRPO(g, now)
		s.evalGroupAlert(ctx, g, now)
	}
}

func describeErr(code int, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("installer exited with code %d", code)
}
