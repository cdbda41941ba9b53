// Failover commands: the Azure fabric, target settings, recovery plans,
// test failover and cleanup, failover, change of point, commit, the
// actions a job waits for, and the views of jobs and the fabric.

package harness

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/fabric"
	"github.com/v2a-dr/v2a/sim/sched"
)

// defaultJobWait is how long a failover command runs the world for its
// job to settle unless wait= says otherwise.
const defaultJobWait = 2 * time.Hour

// planGroupKeys are plan's group keys: group1 … group9 (the orchestrator
// refuses more than 7, and a script must be able to show it).
var planGroupKeys = func() []string {
	var ks []string
	for i := 1; i <= 9; i++ {
		ks = append(ks, "group"+strconv.Itoa(i))
	}
	return ks
}()

// azureNetwork creates a virtual network in the recovery resource group:
//
//	azure-network name=N cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,…) [production] [peer=(N2,…)]
func (r *Runner) azureNetwork(a argMap) (string, error) {
	name, err := a.need("name")
	if err != nil {
		return "", err
	}
	cidr, err := a.need("cidr")
	if err != nil {
		return "", err
	}
	space, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", fmt.Errorf("azure-network: cidr=%s: %v", cidr, err)
	}
	subnets, err := parseSubnets(a.list("subnets"))
	if err != nil {
		return "", fmt.Errorf("azure-network: %w", err)
	}
	if len(subnets) == 0 {
		return "", fmt.Errorf("azure-network: want subnets=(NAME:PREFIX,…), at least one")
	}
	_, prod := a["production"]
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	if prod && fo.production != (compute.Ref{}) {
		return "", fmt.Errorf("azure-network: the production network is already %s", fo.production.Name)
	}
	ctx := r.Env.ctx
	ref := compute.Ref{Kind: compute.KindNetwork, Group: RecoveryGroup, Name: name}
	if err := fo.Fabric.CreateNetwork(ctx, compute.NetworkSpec{Group: RecoveryGroup, Name: name, AddressSpace: space, Subnets: subnets}); err != nil {
		return "", fmt.Errorf("azure-network: %w", err)
	}
	for _, p := range a.list("peer") {
		if err := fo.Fabric.Peer(ctx, ref, compute.Ref{Kind: compute.KindNetwork, Group: RecoveryGroup, Name: p}); err != nil {
			return "", fmt.Errorf("azure-network: peer %s: %w", p, err)
		}
	}
	if prod {
		fo.production = ref
	}
	n, err := fo.Fabric.Network(ctx, ref)
	if err != nil {
		return "", err
	}
	return formatNetwork(n, prod), nil
}

func formatNetwork(n compute.Network, prod bool) string {
	var b strings.Builder
	role := "isolated"
	if prod {
		role = "production"
	}
	if len(n.Peers) > 0 {
		var ps []string
		for _, p := range n.Peers {
			ps = append(ps, p.Name)
		}
		role = "peered with " + strings.Join(ps, ",")
		if prod {
			role = "production, " + role
		}
	}
	fmt.Fprintf(&b, "network %s %s (%s)\n", n.Ref.Name, n.AddressSpace, role)
	for _, s := range n.Subnets {
		fmt.Fprintf(&b, "  subnet %-8s %-16s %d addresses in use\n", s.Name, s.Prefix, len(s.Used))
	}
	return b.String()
}

// target sets a machine's target settings (Compute & Network):
//
//	target vm=NAME subnet=S [ip=A] [size=SIZE] [os=linux|windows] [hydrate]
func (r *Runner) target(a argMap) (string, error) {
	_, vm, err := r.deployedMachine("target", a)
	if err != nil {
		return "", err
	}
	subnet, err := a.need("subnet")
	if err != nil {
		return "", err
	}
	ip := a.str("ip", "")
	if ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			return "", fmt.Errorf("target: ip=%s: %v", ip, err)
		}
	}
	osType := a.str("os", "linux")
	if osType != "linux" && osType != "windows" {
		return "", fmt.Errorf("target: os=%s: want linux or windows", osType)
	}
	_, hydrate := a["hydrate"]
	fo, err := r.orchestrator()
	if err != nil {
		return "", err
	}
	req := fo.newReq()
	ost := compute.Linux
	if osType == "windows" {
		ost = compute.Windows
	}
	m := &proto.SetTarget{Req: req, Machine: vm, Subnet: subnet, IP: ip, Size: a.str("size", "Standard_D2s_v3"), OSType: string(ost), Hydrate: hydrate}
	if _, err := fo.request(m, req); err != nil {
		return "", fmt.Errorf("target: %w", err)
	}
	ipText := ip
	if ipText == "" {
		ipText = "next free"
	}
	return fmt.Sprintf("%s → subnet %s, ip %s, size %s, %s%s\n", vm, subnet, ipText, m.Size, ost, map[bool]string{true: ", hydrated at first boot"}[hydrate]), nil
}

// plan defines a recovery plan:
//
//	plan name=P group1=(a,b) [group2=(c) …]
func (r *Runner) plan(a argMap) (string, error) {
	name, err := a.need("name")
	if err != nil {
		return "", err
	}
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	p := &proto.RecoveryPlan{Name: name}
	for i, k := range planGroupKeys {
		vms := a.list(k)
		if len(vms) == 0 {
			if _, set := a[k]; set {
				return "", fmt.Errorf("plan: %s is empty", k)
			}
			continue
		}
		if len(p.Groups) != i {
			return "", fmt.Errorf("plan: %s without group%d: number the groups from 1", k, len(p.Groups)+1)
		}
		p.Groups = append(p.Groups, proto.PlanGroup{VMs: vms})
	}
	if len(p.Groups) == 0 {
		return "", fmt.Errorf("plan: want group1=(vm,…) at least")
	}
	fo.plans[name] = p
	var b strings.Builder
	fmt.Fprintf(&b, "plan %s: %d VMs in %d groups\n", name, len(p.VMs()), len(p.Groups))
	for i, g := range p.Groups {
		fmt.Fprintf(&b, "  group %d: %s\n", i+1, strings.Join(g.VMs, ","))
	}
	return b.String(), nil
}

// planAction adds an action to a plan's group:
//
//	plan-action plan=P group=N when=pre|post name=A (manual | runbook=R) [types=(…)] [directions=(…)]
func (r *Runner) planAction(a argMap) (string, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	p, err := fo.planNamed(a.str("plan", ""))
	if err != nil {
		return "", err
	}
	g, err := a.intIn("group", 0, 1, int64(len(p.Groups)))
	if err != nil {
		return "", err
	}
	name, err := a.need("name")
	if err != nil {
		return "", err
	}
	_, manual := a["manual"]
	rb := a.str("runbook", "")
	if manual == (rb != "") {
		return "", fmt.Errorf("plan-action: say manual or runbook=NAME (one of them)")
	}
	act := proto.PlanAction{Name: name, Manual: manual, Runbook: rb, FailoverTypes: a.list("types"), Directions: a.list("directions")}
	for _, t := range act.FailoverTypes {
		if !slices.Contains([]string{proto.OpTestFailover, proto.OpFailover}, t) {
			return "", fmt.Errorf("plan-action: type %q: want %s or %s", t, proto.OpTestFailover, proto.OpFailover)
		}
	}
	for _, d := range act.Directions {
		if d != proto.DirectionToAzure && d != proto.DirectionBack {
			return "", fmt.Errorf("plan-action: direction %q: want %s or %s", d, proto.DirectionToAzure, proto.DirectionBack)
		}
	}
	grp := &p.Groups[g-1]
	switch a.str("when", "pre") {
	case "pre":
		grp.Pre = append(grp.Pre, act)
	case "post":
		grp.Post = append(grp.Post, act)
	default:
		return "", fmt.Errorf("plan-action: when=%s: want pre or post", a.str("when", ""))
	}
	kind := "manual"
	if rb != "" {
		kind = "runbook " + rb
	}
	return fmt.Sprintf("plan %s group %d %s-action %s (%s)\n", p.Name, g, a.str("when", "pre"), name, kind), nil
}

func (fo *Failover) planNamed(name string) (*proto.RecoveryPlan, error) {
	if name == "" {
		return nil, fmt.Errorf("want plan=NAME")
	}
	p, ok := fo.plans[name]
	if !ok {
		return nil, fmt.Errorf("no plan %q (plans: %s)", name, orList(sortedKeys(fo.plans)))
	}
	return p, nil
}

// runbook scripts a plan runbook's outcome:
//
//	runbook name=R fail=N
func (r *Runner) runbook(a argMap) (string, error) {
	name, err := a.need("name")
	if err != nil {
		return "", err
	}
	n, err := a.intIn("fail", 1, 0, 1000)
	if err != nil {
		return "", err
	}
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	fo.runbooks.fail[name] = int(n)
	return fmt.Sprintf("runbook %s: the next %d run(s) fail\n", name, n), nil
}

// azureFault injects a fault into the simulated fabric:
//
//	azure-fault kind=quota|nic|hydration|throttle [match=GLOB] [count=N] [retry-after=DURATION]
func (r *Runner) azureFault(a argMap) (string, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	match := a.str("match", "")
	count, err := a.intIn("count", 1, 1, 10000)
	if err != nil {
		return "", err
	}
	var f memfabric.Fault
	switch kind := a.str("kind", ""); kind {
	case "quota":
		f = memfabric.Quota(match)
	case "nic":
		f = memfabric.NICFailed(match)
	case "hydration":
		f = memfabric.HydrationFailed(match)
	case "throttle":
		after, err := a.durMin("retry-after", 10*time.Second, time.Second)
		if err != nil {
			return "", err
		}
		f = memfabric.Throttle(a.str("op", memfabric.OpCreateVM), match, after, int(count))
	default:
		return "", fmt.Errorf("azure-fault: kind=%q: want quota (28031), nic (28092), hydration (170010) or throttle (429)", kind)
	}
	f.Count = int(count)
	if fo.sim == nil {
		return "", fmt.Errorf("azure-fault: faults go into the simulated Azure fabric, and this target's is a real subscription")
	}
	if err := fo.sim.Inject(f); err != nil {
		return "", fmt.Errorf("azure-fault: %w", err)
	}
	return fmt.Sprintf("azure fault: %d× %s on %s %s (%d %s)\n", f.Count, a.str("kind", ""), f.Op, orAll(match), f.Status, f.Code), nil
}

func orAll(glob string) string {
	if glob == "" {
		return "every resource"
	}
	return glob
}

// vmsOrPlan reads vms=(…) or plan=P (one of them).
func (fo *Failover) vmsOrPlan(a argMap) ([]string, *proto.RecoveryPlan, error) {
	vms, planName := a.list("vms"), a.str("plan", "")
	if (len(vms) > 0) == (planName != "") {
		return nil, nil, fmt.Errorf("say vms=(…) or plan=NAME (one of them)")
	}
	if planName != "" {
		p, err := fo.planNamed(planName)
		return nil, p, err
	}
	for _, vm := range vms {
		if _, ok := fo.d.e.Machines[vm]; !ok {
			return nil, nil, fmt.Errorf("no machine %q in this world (have %s)", vm, strings.Join(fo.d.e.MachineNames(), ", "))
		}
	}
	return vms, nil, nil
}

// startJob sends a FailoverRequest and, unless wait=0, runs until the job
// settles; it prints the job.
func (r *Runner) startJob(a argMap, op string) (string, error) {
	fo, err := r.orchestrator()
	if err != nil {
		return "", err
	}
	vms, plan, err := fo.vmsOrPlan(a)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	wait, err := a.dur("wait", defaultJobWait)
	if err != nil {
		return "", err
	}
	m := &proto.FailoverRequest{Req: fo.newReq(), JobID: fo.newJob(), Op: op, VMs: vms, Plan: plan,
		Point: proto.PointChoice{Kind: a.str("point", ""), ID: a.str("id", "")}}
	if op == proto.OpTestFailover {
		net, err := a.need("network")
		if err != nil {
			return "", err
		}
		m.Network = proto.NetworkChoice{Group: RecoveryGroup, Name: net}
	}
	_, m.ShutdownSource = a["shutdown"]
	var before compute.Inventory
	if op == proto.OpTestFailover {
		if before, err = fo.Fabric.Inventory(r.Env.ctx); err != nil {
			return "", err
		}
	}
	rep, err := fo.request(m, m.Req)
	if err != nil {
		fo.nextJob-- // a refused request makes no job: the next one takes its id
		return "", fmt.Errorf("%s: %w", op, err)
	}
	id := m.JobID
	if rep.Result != "" {
		id = rep.Result
	}
	switch op {
	case proto.OpTestFailover:
		fo.before[id] = before
		fo.tests[id] = true
	case proto.OpTestCleanup:
		for _, t := range fo.testsOf(vms, plan) {
			fo.cleanups[t] = id
		}
	}
	return fo.settle(id, wait)
}

// testsOf are the test jobs whose VMs a cleanup names.
func (fo *Failover) testsOf(vms []string, plan *proto.RecoveryPlan) []string {
	if plan != nil {
		vms = plan.VMs()
	}
	js, _ := fo.Jobs()
	var out []string
	for _, j := range js {
		if !fo.tests[j.ID] {
			continue
		}
		for vm := range j.Point {
			if slices.Contains(vms, vm) {
				out = append(out, j.ID)
				break
			}
		}
	}
	return out
}

// settle runs until job id settles (wait 0: not at all) and prints it.
func (fo *Failover) settle(id string, wait time.Duration) (string, error) {
	var j failover.Job
	var err error
	if wait > 0 {
		j, err = fo.waitJob(id, wait)
	} else {
		j, err = fo.Job(id)
	}
	if err != nil {
		return "", err
	}
	return formatJob(j, false), nil
}

func (r *Runner) testFailover(a argMap) (string, error) { return r.startJob(a, proto.OpTestFailover) }
func (r *Runner) cleanup(a argMap) (string, error)      { return r.startJob(a, proto.OpTestCleanup) }
func (r *Runner) failoverCmd(a argMap) (string, error)  { return r.startJob(a, proto.OpFailover) }
func (r *Runner) changePoint(a argMap) (string, error)  { return r.startJob(a, proto.OpChangePoint) }
func (r *Runner) commit(a argMap) (string, error)       { return r.startJob(a, proto.OpCommit) }

// jobAction acknowledges a manual action, resumes or skips:
//
//	ack|resume|skip job=ID [wait=DURATION]
func jobAction(action string) func(r *Runner, a argMap) (string, error) {
	return func(r *Runner, a argMap) (string, error) {
		fo, err := r.orchestrator()
		if err != nil {
			return "", err
		}
		id, err := a.need("job")
		if err != nil {
			return "", err
		}
		wait, err := a.dur("wait", defaultJobWait)
		if err != nil {
			return "", err
		}
		req := fo.newReq()
		if _, err := fo.request(&proto.JobAction{Req: req, JobID: id, Action: action}, req); err != nil {
			return "", fmt.Errorf("%s: %w", action, err)
		}
		return fo.settle(id, wait)
	}
}

// failoverJobs shows the orchestrator's jobs, or one with its tasks:
//
//	failover-jobs [job=ID]
func (r *Runner) failoverJobs(a argMap) (string, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	js, err := fo.Jobs()
	if err != nil {
		return "", err
	}
	if id := a.str("job", ""); id != "" {
		j, err := fo.Job(id)
		if err != nil {
			return "", err
		}
		return formatJob(j, true), nil
	}
	if len(js) == 0 {
		return "no failover jobs yet\n", nil
	}
	var b strings.Builder
	for _, j := range js {
		b.WriteString(jobLine(j))
	}
	return b.String(), nil
}

// fabricView shows the fabric's inventory and IP tables:
//
//	fabric
func (r *Runner) fabricView(argMap) (string, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return "", err
	}
	inv, err := fo.Fabric.Inventory(r.Env.ctx)
	if err != nil {
		return "", err
	}
	return fabric.Format(inv), nil
}

func elapsed(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return sched.FormatElapsed(t.Sub(sched.Epoch))
}

// ms is a duration to the millisecond, as a portal shows one (a step
// shorter than that shows in microseconds).
func ms(d time.Duration) string {
	if d < time.Millisecond {
		return d.String()
	}
	return d.Round(time.Millisecond).String()
}

func jobLine(j failover.Job) string {
	what := j.Plan
	if what == "" {
		what = strings.Join(sortedKeys(j.Point), ",")
		if what == "" { // a cleanup: no point
			what = strings.Join(slices.Sorted(slices.Values(j.VMs)), ",")
		}
	} else {
		what = "plan " + what
	}
	rto := "-"
	if !j.Ended.IsZero() {
		rto = ms(j.RTO())
	}
	return fmt.Sprintf("%s %s %s: %s at %s, took %s\n", j.ID, j.Op, what, j.State, elapsed(j.Requested), rto)
}

// formatJob prints a job: its line, its points, each task, RTO and what
// it waits for.
func formatJob(j failover.Job, verbose bool) string {
	var b strings.Builder
	b.WriteString(jobLine(j))
	for _, vm := range sortedKeys(j.Point) {
		fmt.Fprintf(&b, "  point %s = %s\n", vm, j.Point[vm])
	}
	for _, t := range j.Tasks {
		if !verbose && t.State == "succeeded" && t.VM != "" {
			continue
		}
		where := t.VM
		if t.Group > 0 {
			where = fmt.Sprintf("group %d %s", t.Group, t.VM)
		}
		took := "-"
		if !t.End.IsZero() {
			took = ms(t.End.Sub(t.Start))
		}
		fmt.Fprintf(&b, "  %-10s %-34s %-18s %s", t.State, t.Name, strings.TrimSpace(where), took)
		if t.Code != 0 {
			fmt.Fprintf(&b, " error %d", t.Code)
		}
		if t.Reason != "" {
			fmt.Fprintf(&b, ": %s", t.Reason)
		}
		b.WriteString("\n")
	}
	if j.State == failover.JobSucceeded && len(j.Point) > 0 {
		var vs []string
		for _, vm := range sortedKeys(j.Point) {
			vs = append(vs, fmt.Sprintf("%s %s", vm, ms(j.VMRTO(vm))))
		}
		fmt.Fprintf(&b, "  RTO: job %s; %s\n", ms(j.RTO()), strings.Join(vs, ", "))
		groups := 0
		for _, t := range j.Tasks {
			groups = max(groups, t.Group)
		}
		if j.Plan != "" && groups > 0 {
			var gs []string
			for g := 1; g <= groups; g++ {
				gs = append(gs, fmt.Sprintf("group %d %s", g, ms(j.GroupRTO(g))))
			}
			fmt.Fprintf(&b, "  RTO by boot group: %s\n", strings.Join(gs, ", "))
		}
	}
	for _, w := range j.Warnings {
		fmt.Fprintf(&b, "  warning: %s\n", w)
	}
	for _, e := range j.Errors {
		fmt.Fprintf(&b, "  error: %s\n", e)
	}
	switch {
	case len(j.AllowedActions) > 0 && j.State == failover.JobFailed && !j.Ended.IsZero():
		// An ended job's AllowedActions are operations on its machines
		// (an interrupted job's: see failover.interruptedActions).
		fmt.Fprintf(&b, "  allowed next: %s\n", strings.Join(j.AllowedActions, " or "))
	case len(j.AllowedActions) > 0:
		fmt.Fprintf(&b, "  waiting for: %s\n", strings.Join(j.AllowedActions, " or "))
	}
	return b.String()
}
