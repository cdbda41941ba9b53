package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/azarm"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
	"github.com/v2a-dr/v2a/sim/disk"
	"github.com/v2a-dr/v2a/sim/fabric"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

// Hosts of the failover actors in the simulated world (both in Azure).
const (
	// HostRecovery runs the failover orchestrator: Site Recovery's
	// recovery service in the vault.
	HostRecovery = "recovery"
	// HostFabric is the Azure Resource Manager endpoint the compute port
	// talks to.
	HostFabric = "management.azure"
)

// AddrRecovery is the failover orchestrator's address.
var AddrRecovery = runtime.MakeAddr(HostRecovery, runtime.PortConfig)

// RecoveryGroup is the resource group failover creates VMs in.
const RecoveryGroup = "v2a-recovery"

// Failover is the failover side of a deployment: the simulated Azure
// fabric, the orchestrator, and what the checks need to remember (the
// inventory before each test, the plans, the runbooks' scripted outcomes).
// It is made by the first failover command, so that a scenario that never
// fails over runs exactly as before.
type Failover struct {
	d *Deployment
	// Fabric is the Azure compute the failovers land in: the simulated
	// fabric (sim, below), or a real subscription (target azure.mode arm).
	Fabric compute.Fabric
	// sim is the simulated fabric, nil against a real subscription (faults
	// can only be injected into the simulated one).
	sim     *memfabric.Fabric
	started bool
	// production is the production network (azure-network … production).
	production compute.Ref
	plans      map[string]*proto.RecoveryPlan
	runbooks   *simRunbooks
	// before is the inventory before each test failover job, for leftovers.
	before map[string]compute.Inventory
	// tests are the test failover jobs, cleanups the cleanup job of each.
	tests    map[string]bool
	cleanups map[string]string
	nextReq  int
	nextJob  int
}

// failoverSide returns the deployment's failover side, making it (the
// fabric, and its network hosts) on first use.
func (r *Runner) failoverSide() (*Failover, error) {
	d, err := r.deployment()
	if err != nil {
		return nil, err
	}
	if d.fo != nil {
		return d.fo, nil
	}
	e := d.e
	store, _, err := e.Storage()
	if err != nil {
		return nil, err
	}
	fo := &Failover{d: d, plans: map[string]*proto.RecoveryPlan{}, runbooks: &simRunbooks{fail: map[string]int{}},
		before: map[string]compute.Inventory{}, tests: map[string]bool{}, cleanups: map[string]string{}}
	switch mode := e.Target.Azure.Mode; mode {
	case "", "sim":
		f, err := fabric.New(store, fabric.Config{Clock: e.Sim.Now, Rand: e.Sim.SubRand("fabric"), Booter: d.boot})
		if err != nil {
			return nil, err
		}
		fo.Fabric, fo.sim = f, f
	case "arm":
		cfg, err := azarm.ConfigFromEnv(os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("target %s: azure.mode arm: %w", e.Target.Name, err)
		}
		cfg.Groups = []string{RecoveryGroup}
		f, err := azarm.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("target %s: azure.mode arm: %w", e.Target.Name, err)
		}
		fo.Fabric = f
	default:
		return nil, fmt.Errorf("target %s: azure.mode %q: want sim or arm", e.Target.Name, mode)
	}
	f := fo.Fabric
	for _, h := range []string{HostRecovery, HostFabric} {
		if err := e.Net.AddHost(simnet.Host{Name: h, Site: simnet.Azure, Public: true}); err != nil {
			return nil, err
		}
	}
	if err := f.CreateGroup(e.ctx, RecoveryGroup); err != nil {
		return nil, err
	}
	d.fo = fo
	return fo, nil
}

// orchestrator starts the failover orchestrator on first use; it needs the
// production network.
func (r *Runner) orchestrator() (*Failover, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return nil, err
	}
	if fo.started {
		return fo, nil
	}
	if fo.production == (compute.Ref{}) {
		return nil, fmt.Errorf("no production network in Azure yet: make one with `azure-network name=prod cidr=10.0.0.0/16 subnets=(default:10.0.0.0/24) production`")
	}
	d := fo.d
	store, prefix, err := d.e.Storage()
	if err != nil {
		return nil, err
	}
	// The source shutdown's vCenter calls have no network peer: ASR makes
	// them through the configuration server, on premises.
	if err := d.e.Sim.Spawn(AddrRecovery, func() runtime.Actor {
		return failover.New(failover.Config{Fabric: fo.Fabric, FabricPeer: HostFabric, Store: store, StoragePeer: HostStorage,
			ContainerPrefix: prefix, Vault: AddrAzure, VSphere: d.vc, Runbooks: fo.runbooks,
			Group: RecoveryGroup, Production: fo.production, ConfigServer: AddrConfigServer,
			MasterTarget: runtime.MakeAddr(d.failbackMTHost(), runtime.PortTarget), OnPremBoot: d.onPremBoot})
	}); err != nil {
		return nil, err
	}
	fo.started = true
	return fo, nil
}

// boot is the simulated fabric's Booter: a failed-over VM is healthy when
// its source's guest application recovers on its disks. A machine of the
// order flow (whose application spans three machines, judged together by
// the image check) is healthy when its disks are a state its history
// explains: crash-consistent, as after a power loss.
func (d *Deployment) boot(ctx context.Context, vm compute.VM, disks []io.ReaderAt) error {
	if vm.Tags[tagRole] != "" {
		return nil // the failback process server's VM: not a protected machine
	}
	if err := d.bootHealth(ctx, vm, disks); err != nil {
		return err
	}
	// A failed-over VM (a test failover's is "<vm>-test") runs its guest
	// on in Azure, where its agent can reprotect it.
	if src := vm.Tags[compute.TagSource]; vm.Ref.Name == src {
		return d.bootAzureGuest(vm, disks)
	}
	return nil
}

// bootHealth is a booted VM's health: its source's application recovers
// on its disks.
func (d *Deployment) bootHealth(_ context.Context, vm compute.VM, disks []io.ReaderAt) error {
	src := vm.Tags[compute.TagSource]
	m := d.e.Machines[src]
	if m == nil {
		return fmt.Errorf("no source machine %q: nothing to vouch for the guest", src)
	}
	if wl := d.e.Workloads.Workload(src); wl != nil {
		return fabric.WorkloadCheck(wl)(disks)
	}
	if d.e.orderFlowOn(src) != nil || len(m.Oracle().Writes()) > 0 {
		v, err := m.Oracle().Match(disks, nil)
		if err != nil {
			return err
		}
		if !v.OK() {
			return fmt.Errorf("the disks are no state the guest ever had: %s", v.Evidence)
		}
		return nil
	}
	return errors.New("the source ran no workload: nothing to vouch for the guest")
}

// simRunbooks are the plans' scripts in the simulated world: each runs at
// once and succeeds, unless the scenario made it fail (`runbook`).
type simRunbooks struct {
	fail map[string]int // runbook → how many more runs fail
	ran  []runbookRun   // in order
}

func (s *simRunbooks) Run(_ context.Context, name string, p failover.RunbookParams) error {
	run := runbookRun{Runbook: name, Plan: p.Plan, Op: p.FailoverType, Group: p.Group, OK: true}
	defer func() { s.ran = append(s.ran, run) }()
	if s.fail[name] > 0 {
		s.fail[name]--
		run.OK = false
		return fmt.Errorf("runbook %s failed (scripted by the scenario)", name)
	}
	return nil
}

// request sends a portal request to the orchestrator and runs until its
// reply arrives.
func (fo *Failover) request(m wire.Msg, req string) (proto.Reply, error) {
	return fo.d.ask(AddrRecovery, "the orchestrator", "failover: ", time.Minute, m, req)
}

func (fo *Failover) newReq() string {
	fo.nextReq++
	return fmt.Sprintf("req-%d", fo.nextReq)
}

func (fo *Failover) newJob() string {
	fo.nextJob++
	return fmt.Sprintf("job-%d", fo.nextJob)
}

// Jobs are the orchestrator's jobs. While the recovery host is down they
// are an error saying so; right after its restart the world runs (a
// minute at most) until the orchestrator has loaded its records.
func (fo *Failover) Jobs() ([]failover.Job, error) {
	js, err := fo.jobsNow()
	if errors.Is(err, errRecoveryLoading) {
		fo.d.e.RunUntil(time.Minute, func() bool {
			js, err = fo.jobsNow()
			return !errors.Is(err, errRecoveryLoading)
		})
	}
	return js, err
}

// errRecoveryLoading: the restarted orchestrator has not loaded its
// records yet.
var errRecoveryLoading = errors.New("the recovery service is loading its records")

// jobsNow are the orchestrator's jobs as it holds them now, without
// running the world.
func (fo *Failover) jobsNow() ([]failover.Job, error) {
	if !fo.started {
		return nil, nil
	}
	e := fo.d.e
	if e.Sim.Down(HostRecovery) {
		return nil, fmt.Errorf("the recovery service (host %s) is down: `fault restart host=%s` brings it back", HostRecovery, HostRecovery)
	}
	var loaded bool
	js, err := runtime.InspectAs(e.ctx, e.Sim, AddrRecovery, func(a runtime.Actor) []failover.Job {
		o := a.(*failover.Orchestrator)
		loaded = o.Loaded()
		return o.Jobs()
	})
	if err == nil && !loaded {
		return nil, errRecoveryLoading
	}
	return js, err
}

// Job is one job by id.
func (fo *Failover) Job(id string) (failover.Job, error) {
	js, err := fo.Jobs()
	if err != nil {
		return failover.Job{}, err
	}
	return jobByID(js, id)
}

func jobByID(js []failover.Job, id string) (failover.Job, error) {
	for _, j := range js {
		if j.ID == id {
			return j, nil
		}
	}
	return failover.Job{}, fmt.Errorf("no job %q (jobs: %s)", id, jobIDs(js))
}

func jobIDs(js []failover.Job) string {
	if len(js) == 0 {
		return "none yet"
	}
	var ids []string
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return orList(ids)
}

// jobSettled: the job ended, or waits for someone (a manual action, a
// resume or skip).
func jobSettled(j failover.Job) bool {
	return j.State != failover.JobInProgress
}

// waitJob runs until a job settles or limit passes.
func (fo *Failover) waitJob(id string, limit time.Duration) (failover.Job, error) {
	var j failover.Job
	var err error
	fo.d.e.RunUntil(limit, func() bool {
		var js []failover.Job
		js, err = fo.jobsNow()
		if errors.Is(err, errRecoveryLoading) {
			return false
		}
		if err == nil {
			j, err = jobByID(js, id)
		}
		return err != nil || jobSettled(j)
	})
	if err != nil {
		return j, err
	}
	if !jobSettled(j) {
		return j, fmt.Errorf("job %s still %s after %s", id, j.State, limit)
	}
	return j, nil
}

// pointLookup reads a machine's point from its catalog in storage.
func (d *Deployment) pointLookup(machine, id string) ([]io.ReaderAt, uint64, proto.Consistency, bool, error) {
	cat, err := d.Catalog(machine)
	if err != nil {
		return nil, 0, 0, false, err
	}
	p, ok := cat.FindPoint(id)
	if !ok {
		return nil, 0, 0, false, nil
	}
	imgs, _, err := d.PointImages(cat, p)
	if err != nil {
		return nil, 0, 0, false, err
	}
	return imgs, p.Seq, p.Kind, true, nil
}

// CheckFailover runs the failover checks that read the fabric.
func (fo *Failover) check(what string) ([]Result, error) {
	d := fo.d
	ctx := d.e.ctx
	inv, err := fo.Fabric.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	switch what {
	case "image":
		out, booted := judgeImages(ctx, fo.Fabric, inv, d.pointLookup, func(m string) *disk.Oracle {
			if mm := d.e.Machines[m]; mm != nil {
				return mm.Oracle()
			}
			return nil
		}, d.recoverImage)
		// The order flow spans three machines: its recovery runs on the
		// three VMs one job booted from one group point.
		for _, job := range sortedKeys(booted) {
			for _, f := range d.e.orders {
				ns := f.o.Machines()
				imgs := booted[job]
				if imgs[ns[0]] == nil || imgs[ns[1]] == nil || imgs[ns[2]] == nil {
					continue
				}
				rep, err := f.o.CheckGroup(imgs[ns[0]][0], imgs[ns[1]][0], imgs[ns[2]][0])
				r := Result{Check: "image", Subject: f.group + "@" + job, Verdict: OK, Detail: "order flow " + rep.Summary}
				if err != nil {
					r.Verdict, r.Evidence = Illegal, "the order flow does not recover on the booted VMs: "+err.Error()
				}
				out = append(out, r)
			}
		}
		return out, nil
	case "isolation":
		return judgeIsolation(inv, fo.production, func(job string) bool { return fo.tests[job] }), nil
	case "leftovers":
		var out []Result
		for _, job := range sortedKeys(fo.before) {
			cl, ok := fo.cleanups[job]
			if !ok {
				out = append(out, Result{Check: "leftovers", Subject: job, Verdict: Unknown, Evidence: "the test was not cleaned up yet: run `cleanup` first"})
				continue
			}
			j, err := fo.Job(cl)
			if err != nil || j.State != failover.JobSucceeded {
				out = append(out, Result{Check: "leftovers", Subject: job, Verdict: Unknown, Evidence: fmt.Sprintf("its cleanup %s has not succeeded (%s %v)", cl, j.State, err)})
				continue
			}
			out = append(out, judgeLeftovers(job, fo.before[job], inv))
		}
		return out, nil
	case "plan-order":
		js, err := fo.Jobs()
		if err != nil {
			return nil, err
		}
		var out []Result
		for _, j := range js {
			p, ok := fo.plans[j.Plan]
			if !ok || (j.Op != proto.OpTestFailover && j.Op != proto.OpFailover) {
				continue
			}
			out = append(out, judgePlanOrder(j, p, fo.runbooks.ran)...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown failover check %q", what)
}

// recoverImage runs a machine's workload recovery on booted disks.
func (d *Deployment) recoverImage(machine string, imgs []io.ReaderAt, app bool) (string, error) {
	wl := d.e.Workloads.Workload(machine)
	if wl == nil {
		return "", nil
	}
	rep, err := wl.Check(imgs, app)
	return wl.Name() + " " + rep.Summary, err
}

// parseSubnets reads `subnets=(name:prefix,…)`.
func parseSubnets(items []string) ([]compute.SubnetSpec, error) {
	var out []compute.SubnetSpec
	for _, it := range items {
		name, pfx, ok := strings.Cut(it, ":")
		if !ok {
			return nil, fmt.Errorf("subnet %q: want NAME:PREFIX, e.g. app:10.1.1.0/24", it)
		}
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return nil, fmt.Errorf("subnet %q: %v", it, err)
		}
		out = append(out, compute.SubnetSpec{Name: name, Prefix: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
