package configsrv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Failover, reprotect and failback (FAILOVER.md §B), as the configuration
// server sees them:
//
//   - FailedOver (from the orchestrator): the machine runs in Azure. It
//     becomes failed-over: nothing replicates, its RPO and heartbeats are
//     no longer watched, and the agent it had (the source VM's) is stale:
//     its registrations are answered and ignored. The agent in the Azure
//     VM (same machine name, another address) registers as any agent.
//   - Reprotect to on-premises: every machine failed over, its Azure
//     agent registered since, the process server in Azure heard from
//     within PSFreshness (else ASR's 95226: no VPN path), a group only
//     whole (one master target), at most proto.MaxTargetDisks disks. One
//     vCenter check (the original VMs exist, or the names of the VMs to
//     create are free: ASR's 78052) decides the Reply; nothing changes
//     before it. Then one job per machine: the original VM powered off
//     (it stays off throughout) or a new VM created; AttachTarget to the
//     master target, answered by its Reply; then a new generation, the
//     direction failback, and Protect with the failback policy through the
//     process server in Azure. The master target reports ReplicaEvents and
//     Checksums as the Azure side does, so the state machine runs as it
//     does forward: initial-sync, protected, resyncs.
//   - FailedBack (from the orchestrator): the machine runs on premises
//     again, in the VM failback wrote. Unprotect goes to the Azure agent,
//     which becomes stale; the on-premises agent registers again.
//   - Reprotect to Azure: every machine failed back, its on-premises agent
//     registered since. One job per machine: ResumeReplication to the
//     Azure side, answered by its Reply; then a new generation, the
//     direction forward, Protect with the machine's own policy through the
//     configured process server. The Azure side's checksums are those of
//     the replica it kept, so the sync sends only the blocks that differ.
//
// Requests the jobs wait a Reply to are sent again every CheckEvery until
// it comes (both are idempotent on the receiving side).

// ErrReprotect is a refused Reprotect, FailedOver or FailedBack.
var ErrReprotect = errors.New("configsrv: reprotect refused")

// PSFreshness is how recent the Azure process server's last PSHealth must
// be for a reprotect to on-premises: it reports every 30 s through the
// VPN, so silence longer than this means no path.
const PSFreshness = 2 * time.Minute

// awaiting is a request a reprotect job waits a Reply to.
type awaiting struct {
	to    runtime.Addr
	req   string
	step  string // StepAttach or StepResume
	msg   wire.Msg
	since time.Time // when it was last sent
	fresh bool      // StepAttach: the disks were just created
	vm    string    // StepAttach: the on-premises VM
}

// reprotectCheck is a reprotect to on-premises waiting for its vCenter
// check: the request and, per machine, where its data goes.
type reprotectCheck struct {
	from  runtime.Addr
	req   *proto.Reprotect
	names []string // sorted
	plans map[string]*targetPlan
}

// targetPlan is where one machine's failback stream goes.
type targetPlan struct {
	alternate bool
	ref       vsphere.VMRef  // original location: the VM
	spec      vsphere.VMSpec // alternate location: the VM to create
	disks     int            // disks the machine has in Azure (its agent's registration)
	vm        vsphere.VM     // the check's result for the original VM
}

// replyReq answers a failover-era request: Req echoed.
func replyReq(ctx runtime.Context, to runtime.Addr, req wire.Msg, id, subject, note string, err error) {
	r := &proto.Reply{Request: wire.KindName(req.WireKind()), Subject: subject, OK: err == nil, Reason: note, Req: id}
	if err != nil {
		r.Reason = err.Error()
		ctx.Log().Info("configsrv: request refused", "request", r.Request, "subject", subject, "reason", r.Reason)
	}
	send(ctx, to, r)
}

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrReprotect}, args...)...)
}

// failedOver records a committed failover of a machine replicating forward.
func (s *Server) failedOver(ctx runtime.Context, from runtime.Addr, req *proto.FailedOver) {
	m, ok := s.machines[req.Machine]
	switch {
	case !ok:
		replyReq(ctx, from, req, req.Req, req.Machine, "", fmt.Errorf("%w %s", ErrUnknownMachine, req.Machine))
		return
	case req.AzureVM == "":
		replyReq(ctx, from, req, req.Req, m.name, "", refused("failed-over report for %s names no Azure VM", m.name))
		return
	case m.state == StateFailedOver && m.azureVM == req.AzureVM:
		replyReq(ctx, from, req, req.Req, m.name, "already failed over to "+m.azureVM, nil)
		return
	case m.state == StateFailedOver:
		replyReq(ctx, from, req, req.Req, m.name, "", refused("%s already failed over to Azure VM %s, not %s", m.name, m.azureVM, req.AzureVM))
		return
	case !m.state.watched() || m.direction == DirectionFailback:
		replyReq(ctx, from, req, req.Req, m.name, "", refused("%s is %s (direction %s): only a machine replicating to Azure fails over",
			m.name, m.state, orNone(m.direction)))
		return
	}
	s.finish(ctx, m.job, JobFailed, "machine failed over")
	m.job, m.await = nil, nil
	m.azureVM, m.failedOverAt = req.AzureVM, ctx.Now()
	m.staleAgent, m.regsAt, m.lateReg = m.agent, m.regs, ""
	m.policyPending = false
	m.rpo, m.rpoAt = 0, ctx.Now()
	s.setState(ctx, m, StateFailedOver, "failed over to Azure VM "+req.AzureVM)
	s.clear(ctx, AlertRPO, m.name)
	s.clear(ctx, AlertHeartbeatLost, m.name)
	replyReq(ctx, from, req, req.Req, m.name, "failed over; waiting for the agent in "+req.AzureVM+" to register for a reprotect", nil)
}

// failedBack records a committed failback of a machine replicating to
// on-premises.
func (s *Server) failedBack(ctx runtime.Context, from runtime.Addr, req *proto.FailedBack) {
	m, ok := s.machines[req.Machine]
	switch {
	case !ok:
		replyReq(ctx, from, req, req.Req, req.Machine, "", fmt.Errorf("%w %s", ErrUnknownMachine, req.Machine))
		return
	case req.VM == "":
		replyReq(ctx, from, req, req.Req, m.name, "", refused("failed-back report for %s names no VM", m.name))
		return
	case m.state == StateFailedBack && m.failbackVM == req.VM:
		replyReq(ctx, from, req, req.Req, m.name, "already failed back to "+m.failbackVM, nil)
		return
	case m.direction != DirectionFailback || !m.state.replicating():
		replyReq(ctx, from, req, req.Req, m.name, "", refused("%s is %s (direction %s): only a machine replicating to on-premises fails back",
			m.name, m.state, orNone(m.direction)))
		return
	}
	s.finish(ctx, m.job, JobFailed, "machine failed back")
	m.job, m.await = nil, nil
	send(ctx, m.agent, &proto.Unprotect{Machine: m.name})
	azureAgent := m.agent
	m.staleAgent, m.regsAt = m.agent, m.regs
	if m.lateReg != "" && m.lateReg != azureAgent {
		// The on-premises agent registered while the failback ran (its VM
		// powered on before this commit): it is the machine's agent now.
		ctx.Log().Info("configsrv: agent registered during the failback adopted", "machine", m.name, "agent", string(m.lateReg))
		m.agent, m.registered, m.registeredAt = m.lateReg, true, ctx.Now()
		m.regs++
	}
	m.lateReg = ""
	m.failbackVM, m.failedBackAt = req.VM, ctx.Now()
	m.policyPending = false
	m.rpo, m.rpoAt = 0, ctx.Now()
	s.setState(ctx, m, StateFailedBack, "failed back to on-premises VM "+req.VM)
	s.clear(ctx, AlertRPO, m.name)
	s.clear(ctx, AlertHeartbeatLost, m.name)
	replyReq(ctx, from, req, req.Req, m.name, "failed back; Unprotect sent to the agent in Azure; waiting for the agent in "+req.VM+
		" to register for a reprotect to Azure", nil)
}

// reprotect starts replication of req.Machines in req.Direction.
func (s *Server) reprotect(ctx runtime.Context, from runtime.Addr, req *proto.Reprotect) {
	subject := strings.Join(req.Machines, ",")
	names, err := s.reprotectMachines(req)
	if err != nil {
		replyReq(ctx, from, req, req.Req, subject, "", err)
		return
	}
	switch req.Direction {
	case proto.ReprotectToOnPrem:
		c, err := s.checkToOnPrem(ctx, req, names)
		if err != nil {
			replyReq(ctx, from, req, req.Req, subject, "", err)
			return
		}
		c.from = from
		s.startCheck(ctx, c)
	case proto.ReprotectToAzure:
		if err := s.checkToAzure(names); err != nil {
			replyReq(ctx, from, req, req.Req, subject, "", err)
			return
		}
		var jobs []string
		for _, name := range names {
			jobs = append(jobs, fmt.Sprint(s.resume(ctx, s.machines[name])))
		}
		replyReq(ctx, from, req, req.Req, subject, "reprotect to Azure started: jobs "+strings.Join(jobs, ", "), nil)
	default:
		replyReq(ctx, from, req, req.Req, subject, "", refused("unknown direction %q (want %s or %s)",
			req.Direction, proto.ReprotectToOnPrem, proto.ReprotectToAzure))
	}
}

// reprotectMachines checks the request's machine list: not empty, no
// machine twice, every one known and without a reprotect in progress. It
// returns the names sorted.
func (s *Server) reprotectMachines(req *proto.Reprotect) ([]string, error) {
	if len(req.Machines) == 0 {
		return nil, refused("no machines named")
	}
	names := slices.Clone(req.Machines)
	sort.Strings(names)
	for i, name := range names {
		if i > 0 && names[i-1] == name {
			return nil, refused("%s named twice", name)
		}
		m, ok := s.machines[name]
		if !ok {
			return nil, fmt.Errorf("%w %s", ErrUnknownMachine, name)
		}
		waiting := m.state == StateFailedOver || m.state == StateFailedBack
		if m.checking || (waiting && m.job != nil && (m.job.kind == JobReprotect || m.job.kind == JobReprotectAzure)) {
			return nil, refused("a reprotect of %s is already in progress", name)
		}
	}
	return names, nil
}

// registeredSince says whether an agent registered for m since its last
// failover or failback.
func registeredSince(m *machine) bool { return m.registered && m.regs > m.regsAt }

// checkToOnPrem checks everything a reprotect to on-premises needs that the
// server knows without vCenter, and plans each machine's target.
func (s *Server) checkToOnPrem(ctx runtime.Context, req *proto.Reprotect, names []string) (*reprotectCheck, error) {
	for _, name := range names {
		if m := s.machines[name]; m.state != StateFailedOver {
			return nil, refused("%s is %s, not failed over: a reprotect to on-premises follows a committed failover", name, m.state)
		}
	}
	for _, name := range names {
		g := s.memberGroup(s.machines[name])
		if g == nil {
			continue
		}
		var missing []string
		for _, mem := range g.members {
			if !slices.Contains(names, mem) {
				missing = append(missing, mem)
			}
		}
		if len(missing) > 0 {
			return nil, refused("%s is a member of replication group %s, whose members (%s) fail back together to one master target: "+
				"without %s the group would need two master targets; reprotect every member in one request",
				name, g.name, strings.Join(g.members, ", "), strings.Join(missing, ", "))
		}
	}
	if req.MasterTarget == "" {
		return nil, refused("no master target named")
	}
	if req.ProcessServer == "" {
		return nil, refused("no process server in Azure named")
	}
	host := runtime.Addr(req.ProcessServer).Host()
	r := s.ps[host]
	if r == nil {
		r = s.ps[req.ProcessServer]
	}
	now := ctx.Now()
	switch {
	case r == nil:
		return nil, refused("95226: the Azure VM cannot reach the configuration server: process server %s in Azure has never reported to it; "+
			"a reprotect needs a site-to-site VPN or ExpressRoute path between the Azure network and on-premises", host)
	case now.Sub(r.at) > PSFreshness:
		return nil, refused("95226: the Azure VM cannot reach the configuration server: process server %s in Azure last reported %v ago (at %s); "+
			"a reprotect needs a site-to-site VPN or ExpressRoute path between the Azure network and on-premises",
			host, now.Sub(r.at), r.at.UTC().Format(time.RFC3339))
	}
	for _, name := range names {
		if m := s.machines[name]; !registeredSince(m) {
			return nil, refused("agent not registered: the Mobility agent in Azure VM %s (%s) has not registered with the configuration server "+
				"since the failover (ASR allows 15 min after the VM boots); retry once it has", m.azureVM, name)
		}
	}
	total, attached := 0, 0
	for _, name := range names {
		m := s.machines[name]
		if len(m.diskSizes) == 0 {
			return nil, refused("the agent of %s registered no disks", name)
		}
		total += len(m.diskSizes)
	}
	for _, m := range s.sortedMachines() {
		if m.direction == DirectionFailback && m.state.replicating() && m.masterTarget == runtime.Addr(req.MasterTarget) &&
			!slices.Contains(names, m.name) {
			attached += len(m.diskSizes)
		}
	}
	if total+attached > proto.MaxTargetDisks {
		return nil, refused("%d disks to fail back and %d already attached to master target %s: more than the %d disks one master target serves; "+
			"use another master target", total, attached, req.MasterTarget, proto.MaxTargetDisks)
	}
	loc := req.Location
	if loc == "" {
		loc = proto.LocationOriginal
	}
	if loc != proto.LocationOriginal && loc != proto.LocationAlternate {
		return nil, refused("unknown location %q (want %s or %s)", req.Location, proto.LocationOriginal, proto.LocationAlternate)
	}
	if s.cfg.VSphere == nil {
		return nil, refused("no vCenter client configured: a reprotect to on-premises writes VMware VMs")
	}
	c := &reprotectCheck{req: req, names: names, plans: map[string]*targetPlan{}}
	for _, name := range names {
		m := s.machines[name]
		p := &targetPlan{disks: len(m.diskSizes), alternate: loc == proto.LocationAlternate || m.physical || m.vm.Ref == ""}
		if p.alternate {
			if req.Host == "" || req.Datastore == "" {
				what := "location alternate"
				if loc == proto.LocationOriginal {
					what = name + " is a physical server, which always fails back to a new VMware VM: that"
				}
				return nil, refused("%s needs a host and a datastore to create the VM on", what)
			}
			p.spec = vsphere.VMSpec{Name: name, GuestOS: m.vm.GuestOS, CPUs: m.vm.CPUs, MemoryMB: m.vm.MemoryMB,
				Host: req.Host, Datastore: req.Datastore}
			for _, size := range m.diskSizes {
				p.spec.Disks = append(p.spec.Disks, vsphere.DiskSpec{CapacityBytes: size})
			}
		} else {
			p.ref = m.vm.Ref
		}
		c.plans[name] = p
	}
	return c, nil
}

// vmCheck is the vCenter check's finding for one machine: the original VM
// as it is, or why the machine cannot go where it was asked to.
type vmCheck struct {
	vm     vsphere.VM
	refuse string
}

// startCheck looks the targets up in vCenter; the Reply waits for it.
func (s *Server) startCheck(ctx runtime.Context, c *reprotectCheck) {
	for _, name := range c.names {
		s.machines[name].checking = true
	}
	client := s.cfg.VSphere
	names, plans := slices.Clone(c.names), c.plans
	s.ops.Start(ctx, runtime.Op{Name: "reprotect check vcenter", Run: func(ctx context.Context) (any, error) {
		out := map[string]vmCheck{}
		var inventory []vsphere.VM
		listed := false
		for _, name := range names {
			p := plans[name]
			if !p.alternate {
				vm, err := client.VM(ctx, p.ref)
				switch {
				case errors.Is(err, vsphere.ErrNotFound):
					out[name] = vmCheck{refuse: fmt.Sprintf("the original VM of %s (%s) no longer exists in vCenter; "+
						"reprotect with location=%s to create a new VM on the master target's host and datastore", name, p.ref, proto.LocationAlternate)}
				case err != nil:
					return nil, err
				case len(vm.Disks) != p.disks:
					out[name] = vmCheck{refuse: fmt.Sprintf("the original VM of %s (%s) has %d disks, the machine in Azure %d; "+
						"reprotect with location=%s", name, p.ref, len(vm.Disks), p.disks, proto.LocationAlternate)}
				default:
					out[name] = vmCheck{vm: vm}
				}
				continue
			}
			if !listed {
				var err error
				if inventory, err = client.Discover(ctx); err != nil {
					return nil, err
				}
				listed = true
			}
			for _, vm := range inventory {
				if vm.Name == p.spec.Name {
					out[name] = vmCheck{refuse: fmt.Sprintf("78052: a VM named %s already exists in vCenter (%s); "+
						"remove or rename it, or reprotect to the original location", vm.Name, vm.Ref)}
					break
				}
			}
		}
		return out, nil
	}}, pendingOp{kind: opReprotectCheck, check: c})
}

// reprotectChecked answers a reprotect to on-premises once vCenter was
// checked, and starts its jobs.
func (s *Server) reprotectChecked(ctx runtime.Context, op pendingOp, ev runtime.Done) {
	c := op.check
	subject := strings.Join(c.req.Machines, ",")
	for _, name := range c.names {
		s.machines[name].checking = false
	}
	if ev.Err != nil {
		replyReq(ctx, c.from, c.req, c.req.Req, subject, "", refused("vCenter check failed: %v", ev.Err))
		return
	}
	found, _ := ev.Value.(map[string]vmCheck)
	for _, name := range c.names {
		if why := found[name].refuse; why != "" {
			replyReq(ctx, c.from, c.req, c.req.Req, subject, "", refused("%s", why))
			return
		}
	}
	// The world may have moved while vCenter answered: check again.
	again, err := s.reprotectMachines(c.req)
	if err == nil {
		_, err = s.checkToOnPrem(ctx, c.req, again)
	}
	if err != nil {
		replyReq(ctx, c.from, c.req, c.req.Req, subject, "", err)
		return
	}
	var jobs []string
	for _, name := range c.names {
		m, p := s.machines[name], c.plans[name]
		p.vm = found[name].vm
		j := s.newJob(ctx, JobReprotect, name)
		m.job = j
		jobs = append(jobs, fmt.Sprint(j.id))
		loc := proto.LocationOriginal
		if p.alternate {
			loc = proto.LocationAlternate
		}
		j.stepEnd(ctx.Now(), StepPrerequisites, JobSucceeded, fmt.Sprintf("master target %s, process server %s, location %s, policy %s",
			c.req.MasterTarget, c.req.ProcessServer, loc, proto.FailbackPolicy(m.policy).Name))
		m.masterTarget, m.failbackPS = runtime.Addr(c.req.MasterTarget), runtime.Addr(c.req.ProcessServer)
		s.prepareVM(ctx, m, p)
	}
	replyReq(ctx, c.from, c.req, c.req.Req, subject, "reprotect to on-premises started: jobs "+strings.Join(jobs, ", "), nil)
}

// prepareResult is a prepared target VM and whether its disks are new.
type prepareResult struct {
	vm    vsphere.VM
	fresh bool
	note  string
}

// prepareVM powers the original VM off (it stays off throughout) or
// creates the new one.
func (s *Server) prepareVM(ctx runtime.Context, m *machine, p *targetPlan) {
	client := s.cfg.VSphere
	if p.alternate {
		spec := p.spec
		spec.Disks = slices.Clone(spec.Disks)
		m.job.stepRun(ctx.Now(), StepTargetVM, fmt.Sprintf("create VM %s on host %s, datastore %s", spec.Name, spec.Host, spec.Datastore))
		s.ops.Start(ctx, runtime.Op{Name: "reprotect create vm " + m.name, Run: func(ctx context.Context) (any, error) {
			vm, err := client.CreateVM(ctx, spec)
			if errors.Is(err, vsphere.ErrExists) {
				return nil, fmt.Errorf("78052: a VM named %s already exists in vCenter: %w", spec.Name, err)
			}
			return prepareResult{vm: vm, fresh: true, note: fmt.Sprintf("created VM %s (%s)", vm.Name, vm.Ref)}, err
		}}, pendingOp{kind: opPrepareVM, machine: m.name, job: m.job.id})
		return
	}
	vm := p.vm
	vm.Disks = slices.Clone(vm.Disks)
	m.job.stepRun(ctx.Now(), StepTargetVM, fmt.Sprintf("original VM %s (%s), kept powered off", vm.Name, vm.Ref))
	s.ops.Start(ctx, runtime.Op{Name: "reprotect power off " + m.name, Run: func(ctx context.Context) (any, error) {
		if vm.PowerState == vsphere.PoweredOff {
			return prepareResult{vm: vm, note: fmt.Sprintf("original VM %s (%s) is off", vm.Name, vm.Ref)}, nil
		}
		err := client.PowerOff(ctx, vm.Ref)
		if errors.Is(err, vsphere.ErrInvalidPowerState) {
			err = nil // powered off meanwhile
		}
		vm.PowerState = vsphere.PoweredOff
		return prepareResult{vm: vm, note: fmt.Sprintf("original VM %s (%s) powered off", vm.Name, vm.Ref)}, err
	}}, pendingOp{kind: opPrepareVM, machine: m.name, job: m.job.id})
}

// vmPrepared attaches the prepared VM's disks to the master target.
func (s *Server) vmPrepared(ctx runtime.Context, op pendingOp, ev runtime.Done) {
	m := s.machines[op.machine]
	if m == nil || m.job == nil || m.job.id != op.job {
		ctx.Log().Info("configsrv: stale reprotect result dropped", "machine", op.machine, "job", op.job)
		return
	}
	if ev.Err != nil {
		s.reprotectFailed(ctx, m, StepTargetVM, ev.Err.Error())
		return
	}
	r, _ := ev.Value.(prepareResult)
	var disks []proto.TargetDisk
	for _, d := range r.vm.Disks {
		flat, err := vsphere.FlatExtentPath(d.Path)
		if err != nil {
			s.reprotectFailed(ctx, m, StepTargetVM, fmt.Sprintf("disk %s of VM %s: %v", d.Label, r.vm.Name, err))
			return
		}
		disks = append(disks, proto.TargetDisk{Path: flat, CapacityBytes: d.CapacityBytes})
	}
	m.job.stepEnd(ctx.Now(), StepTargetVM, JobSucceeded, r.note)
	m.failbackVM = r.vm.Name
	id := fmt.Sprintf("cs-job-%d", m.job.id)
	at := &proto.AttachTarget{Req: id, Machine: m.name, Disks: disks, VM: r.vm.Name, Fresh: r.fresh}
	m.await = &awaiting{to: m.masterTarget, req: id, step: StepAttach, msg: at, since: ctx.Now(), fresh: r.fresh, vm: r.vm.Name}
	m.job.stepRun(ctx.Now(), StepAttach, fmt.Sprintf("%d disks of %s to master target %s", len(disks), r.vm.Name, m.masterTarget))
	send(ctx, m.masterTarget, at)
}

// reprotectFailed ends m's reprotect job at step; the machine stays as it
// was (failed over or failed back).
func (s *Server) reprotectFailed(ctx runtime.Context, m *machine, step, why string) {
	m.job.stepEnd(ctx.Now(), step, JobFailed, why)
	s.finish(ctx, m.job, JobFailed, why)
	m.job, m.await = nil, nil
}

// checkToAzure checks a reprotect to Azure.
func (s *Server) checkToAzure(names []string) error {
	for _, name := range names {
		m := s.machines[name]
		if m.state != StateFailedBack {
			return refused("%s is %s, not failed back: a reprotect to Azure follows a committed failback", name, m.state)
		}
		if !registeredSince(m) {
			return refused("agent not registered: the Mobility agent in %s (%s) has not registered with the configuration server "+
				"since the failback (ASR allows 15 min after the VM boots); retry once it has", orNone(m.failbackVM), name)
		}
	}
	if s.cfg.Azure == "" {
		return refused("no Azure side configured")
	}
	return nil
}

// resume starts m's reprotect to Azure and returns its job's id.
func (s *Server) resume(ctx runtime.Context, m *machine) int {
	j := s.newJob(ctx, JobReprotectAzure, m.name)
	m.job = j
	j.stepEnd(ctx.Now(), StepPrerequisites, JobSucceeded, fmt.Sprintf("agent at %s, process server %s, policy %s",
		m.agent, s.cfg.ProcessServer, m.policy))
	id := fmt.Sprintf("cs-job-%d", j.id)
	rr := &proto.ResumeReplication{Req: id, Machine: m.name}
	m.await = &awaiting{to: s.cfg.Azure, req: id, step: StepResume, msg: rr, since: ctx.Now()}
	j.stepRun(ctx.Now(), StepResume, "ResumeReplication sent")
	send(ctx, s.cfg.Azure, rr)
	return j.id
}

// replyIn takes the Reply a reprotect job waits for; others are dropped.
func (s *Server) replyIn(ctx runtime.Context, from runtime.Addr, r *proto.Reply) {
	m := s.machines[r.Subject]
	if m == nil || m.await == nil || m.await.req != r.Req || m.job == nil {
		ctx.Log().Info("configsrv: reply nobody waits for dropped", "from", string(from), "request", r.Request,
			"subject", r.Subject, "req", r.Req)
		return
	}
	a := m.await
	m.await = nil
	if !r.OK {
		who := "master target " + string(a.to)
		if a.step == StepResume {
			who = "the Azure side"
		}
		s.reprotectFailed(ctx, m, a.step, fmt.Sprintf("%s refused: %s", who, r.Reason))
		return
	}
	now := ctx.Now()
	m.gen++
	m.enabledAt = now
	m.points = map[string]time.Time{}
	m.newestPoint, m.rpo, m.rpoAt, m.lastError, m.applied, m.refusedItem = time.Time{}, 0, now, "", 0, 0
	switch a.step {
	case StepAttach:
		m.job.stepEnd(now, StepAttach, JobSucceeded, fmt.Sprintf("attached to master target %s (disks: %d)", m.masterTarget, len(m.diskSizes)))
		m.direction = DirectionFailback
		s.protect(ctx, m, StateInitialSync, fmt.Sprintf("reprotect to on-premises: failback Protect gen %d sent (master target %s, VM %s, fresh %v)",
			m.gen, m.masterTarget, a.vm, a.fresh))
	case StepResume:
		m.job.stepEnd(now, StepResume, JobSucceeded, "replication resumed in Azure")
		m.direction = DirectionForward
		m.policyPending = true
		s.sendPolicyFor(ctx, m)
		s.protect(ctx, m, StateInitialSync, fmt.Sprintf("reprotect to Azure: Protect gen %d sent", m.gen))
	}
}

// resendAwaited sends the request m's job waits for again when its Reply
// is CheckEvery late.
func (s *Server) resendAwaited(ctx runtime.Context, m *machine, now time.Time) {
	if m.await == nil || now.Sub(m.await.since) < CheckEvery {
		return
	}
	ctx.Log().Info("configsrv: no reply yet; request sent again", "machine", m.name, "step", m.await.step, "to", string(m.await.to))
	m.await.since = now
	send(ctx, m.await.to, m.await.msg)
}

// fromOtherSide says whether a report about m comes from the side m does
// not replicate to now: the Azure side while it fails back.
func (s *Server) fromOtherSide(m *machine, from runtime.Addr) bool {
	return m.direction == DirectionFailback && from == s.cfg.Azure && from != m.masterTarget
}
