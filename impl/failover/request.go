package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// request serves a FailoverRequest: refused at once, or a job started.
func (o *Orchestrator) request(ctx runtime.Context, from runtime.Addr, m *proto.FailoverRequest) {
	subject := strings.Join(m.VMs, ",")
	if m.Plan != nil {
		subject = m.Plan.Name
	}
	groups, skip, err := o.check(m)
	if err != nil {
		o.reply(ctx, from, m, m.Req, subject, "", err)
		return
	}
	if m.Point.Kind == proto.PointCustom && (m.Op == proto.OpTestFailover || m.Op == proto.OpFailover || m.Op == proto.OpChangePoint) {
		// A named point is checked against the catalog before the job
		// exists: a pruned or unknown point is refused, nothing made.
		vm := groups[0][0]
		store, prefix, id := o.cfg.Store, o.cfg.ContainerPrefix, m.Point.ID
		o.ops.Go(ctx, runtime.Op{Name: "failover-check-point", Peer: o.cfg.StoragePeer, Run: func(c context.Context) (any, error) {
			cat, _, err := proto.LoadCatalog(c, store, prefix, vm)
			return cat, err
		}}, func(ctx runtime.Context, d runtime.Done) {
			if d.Err != nil {
				o.reply(ctx, from, m, m.Req, subject, "", fmt.Errorf("%w: %s: %s", ErrPoint, vm, o.errText(d.Err)))
				return
			}
			if _, ok := d.Value.(*proto.Catalog).FindPoint(id); !ok {
				o.reply(ctx, from, m, m.Req, subject, "", fmt.Errorf("%w: %s has no point %q (pruned by retention, or never made)", ErrPoint, vm, id))
				return
			}
			// Checked again: another request may have come meanwhile.
			groups, skip, err := o.check(m)
			if err != nil {
				o.reply(ctx, from, m, m.Req, subject, "", err)
				return
			}
			o.startJob(ctx, from, m, subject, groups, skip)
		})
		return
	}
	o.startJob(ctx, from, m, subject, groups, skip)
}

// check validates a request against the limits and the machines' states.
// It returns the boot groups and the plan VMs to skip (deployed by another
// job).
func (o *Orchestrator) check(m *proto.FailoverRequest) (groups [][]string, skip map[string]string, err error) {
	bad := func(format string, args ...any) ([][]string, map[string]string, error) {
		return nil, nil, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch m.Op {
	case proto.OpTestFailover, proto.OpTestCleanup, proto.OpFailover, proto.OpChangePoint, proto.OpCommit, proto.OpFailback:
	default:
		return bad("unknown operation %q", m.Op)
	}
	if m.JobID != "" {
		if _, dup := o.byID[m.JobID]; dup {
			return bad("job %s exists", m.JobID)
		}
	}
	switch {
	case m.Plan != nil && len(m.VMs) > 0:
		return bad("both VMs and a plan")
	case m.Plan == nil && len(m.VMs) == 0:
		return bad("no VM and no plan")
	case m.Plan != nil:
		if m.Plan.Name == "" {
			return bad("the plan has no name")
		}
		n := len(m.Plan.VMs())
		if n > MaxPlanVMs || len(m.Plan.Groups) > MaxPlanGroups {
			return nil, nil, fmt.Errorf("%w: plan %s has %d VMs in %d groups (at most %d VMs in %d groups)",
				ErrPlanLimits, m.Plan.Name, n, len(m.Plan.Groups), MaxPlanVMs, MaxPlanGroups)
		}
		for i, g := range m.Plan.Groups {
			if len(g.VMs) == 0 {
				return bad("plan %s: group %d has no VM", m.Plan.Name, i+1)
			}
			groups = append(groups, slices.Clone(g.VMs))
			for _, a := range append(slices.Clone(g.Pre), g.Post...) {
				if a.Name == "" || (!a.Manual && a.Runbook == "") {
					return bad("plan %s: group %d: an action needs a name, and a runbook unless manual", m.Plan.Name, i+1)
				}
			}
		}
	default:
		groups = [][]string{slices.Clone(m.VMs)}
	}
	seen := map[string]bool{}
	for _, g := range groups {
		for _, vm := range g {
			if vm == "" || seen[vm] {
				return bad("machine %q empty or named twice", vm)
			}
			seen[vm] = true
		}
	}
	if m.Op == proto.OpTestFailover || m.Op == proto.OpFailover || m.Op == proto.OpChangePoint {
		switch m.Point.Kind {
		case proto.PointLatestProcessed, proto.PointLatest, proto.PointLatestApp:
		case proto.PointLatestMultiVM, proto.PointLatestMultiVMApp:
			if m.Plan == nil {
				return bad("point %s is for recovery plans only", m.Point.Kind)
			}
		case proto.PointCustom:
			if m.Plan != nil || len(m.VMs) != 1 {
				return bad("a custom point is for a single VM, never a plan")
			}
			if m.Point.ID == "" {
				return bad("a custom point needs its id")
			}
		default:
			return bad("unknown point choice %q", m.Point.Kind)
		}
		if m.Op == proto.OpChangePoint && m.Point.Kind == proto.PointLatest {
			return bad("change point to %q: replication is stopped, nothing more will be processed", m.Point.Kind)
		}
	}
	if m.Op == proto.OpFailback {
		switch m.Point.Kind {
		case proto.PointLatest, proto.PointLatestApp:
		default:
			return bad("failback point %q: want %s or %s", m.Point.Kind, proto.PointLatest, proto.PointLatestApp)
		}
		if o.cfg.MasterTarget == "" {
			return bad("failback: no master target configured")
		}
	}
	if m.Op == proto.OpTestFailover && m.Network.Name == "" {
		return bad("a test failover needs its network")
	}
	if m.ShutdownSource && m.Op != proto.OpFailover {
		return bad("source shutdown is part of a failover only")
	}
	skip = map[string]string{}
	for _, g := range groups {
		for _, vm := range g {
			st, ok := o.machines[vm]
			if !ok {
				st = &MachineState{Machine: vm, State: StateReplicating}
			}
			if st.Busy != "" {
				return nil, nil, fmt.Errorf("%w: %s: job %s", ErrInProgress, vm, st.Busy)
			}
			if err := o.allowed(m.Op, st, m.Plan != nil); err != nil {
				if errors.Is(err, errSkip) {
					skip[vm] = st.Job
					continue
				}
				return nil, nil, err
			}
		}
	}
	if len(skip) == len(seen) && (m.Op == proto.OpTestFailover || m.Op == proto.OpFailover) {
		return nil, nil, fmt.Errorf("%w: every VM of plan %s already failed over", ErrFailedOver, m.Plan.Name)
	}
	return groups, skip, nil
}

// errSkip marks a plan VM deployed by another job: skipped, not refused.
var errSkip = errors.New("skip")

// allowed says whether op may run on a machine in state st.
func (o *Orchestrator) allowed(op string, st *MachineState, plan bool) error {
	// backOK: the failback that put the machine in StateFailedBack
	// succeeded (a failed one may run again, and cannot be committed).
	backOK := false
	if j := o.byID[st.Job]; j != nil && st.State == StateFailedBack {
		backOK = j.State == JobSucceeded
	}
	if st.State == StateFailedBack && (op == proto.OpTestFailover || op == proto.OpFailover) {
		return fmt.Errorf("%w: %s (job %s), not committed: commit the failback first", ErrFailedBack, st.Machine, st.Job)
	}
	switch op {
	case proto.OpFailback:
		switch st.State {
		case StateFailedOver, StateCommitted:
			if st.Point == "" {
				return fmt.Errorf("%w: %s: its failover (job %s) never brought the Azure VM up", ErrNotFailed, st.Machine, st.Job)
			}
		case StateFailedBack:
			if backOK {
				return fmt.Errorf("%w: %s (job %s): commit it", ErrFailedBack, st.Machine, st.Job)
			}
		default:
			return fmt.Errorf("%w: %s is %s: failback needs a VM failed over by this orchestrator", ErrNotFailed, st.Machine, st.State)
		}
	case proto.OpTestFailover:
		switch st.State {
		case StateTest:
			return fmt.Errorf("%w: %s is in a test failover (job %s): clean it up first", ErrInProgress, st.Machine, st.Job)
		case StateFailedOver, StateCommitted:
			if plan {
				return errSkip
			}
			return fmt.Errorf("%w: %s (job %s): no test failover of a failed-over VM", ErrFailedOver, st.Machine, st.Job)
		}
	case proto.OpFailover:
		switch st.State {
		case StateTest:
			return fmt.Errorf("%w: %s (job %s)", ErrTestRunning, st.Machine, st.Job)
		case StateFailedOver, StateCommitted:
			if plan {
				return errSkip
			}
			return fmt.Errorf("%w: %s (job %s)", ErrFailedOver, st.Machine, st.Job)
		}
	case proto.OpTestCleanup:
		if st.State != StateTest {
			return fmt.Errorf("%w: %s is %s", ErrNoTest, st.Machine, st.State)
		}
	case proto.OpChangePoint:
		switch st.State {
		case StateFailedOver:
		case StateCommitted:
			return fmt.Errorf("%w: %s at point %s: the point can no longer change", ErrCommitted, st.Machine, st.Point)
		default:
			return fmt.Errorf("%w: %s is %s: change point needs a failed-over VM", ErrNotFailed, st.Machine, st.State)
		}
	case proto.OpCommit:
		switch st.State {
		case StateFailedOver:
			if st.Point == "" {
				return fmt.Errorf("%w: %s: its failover (job %s) never brought the Azure VM up: change the recovery point first", ErrNotFailed, st.Machine, st.Job)
			}
		case StateFailedBack:
			if !backOK {
				return fmt.Errorf("%w: %s: its failback (job %s) did not succeed: run the failback again first", ErrFailedBack, st.Machine, st.Job)
			}
		case StateCommitted:
			return fmt.Errorf("%w: %s at point %s", ErrCommitted, st.Machine, st.Point)
		default:
			return fmt.Errorf("%w: %s is %s: commit needs a failed-over VM", ErrNotFailed, st.Machine, st.State)
		}
	}
	return nil
}

// startJob makes the job, marks its machines and starts its first phase.
func (o *Orchestrator) startJob(ctx runtime.Context, from runtime.Addr, m *proto.FailoverRequest, subject string, groups [][]string, skip map[string]string) {
	id := m.JobID
	if id == "" {
		o.seq++
		id = fmt.Sprintf("job-%d", o.seq)
	}
	j := &job{Job: Job{ID: id, Op: m.Op, State: JobInProgress, Requested: ctx.Now(), Point: map[string]string{}},
		req: m, groups: groups, vms: map[string]*vmRun{}, pi: -1}
	if m.Plan != nil {
		j.Plan = m.Plan.Name
	}
	for gi, g := range groups {
		for _, vm := range g {
			j.VMs = append(j.VMs, vm)
			name := vm
			if m.Op == proto.OpTestFailover {
				name = vm + "-test"
			}
			r := &vmRun{machine: vm, group: gi + 1, name: name}
			if _, ok := skip[vm]; ok {
				r.skipped = true
			}
			j.vms[vm] = r
			st := o.machine(vm)
			if !r.skipped {
				st.Busy = id
			}
		}
	}
	o.jobs = append(o.jobs, j)
	o.byID[id] = j
	j.phases = o.phases(j)
	ctx.Log().Info("failover: job started", "job", id, "op", m.Op, "plan", j.Plan, "vms", len(j.VMs), "point", m.Point.Kind, "skipped", len(skip))
	// Answered once the job and its machines are written: a crash after
	// the answer cannot take the job back.
	o.saved(func(ctx runtime.Context) { o.reply(ctx, from, m, m.Req, subject, id, nil) })
	o.next(ctx, j)
}

// active is the job's machines that are not skipped, in boot order.
func (j *job) active() []*vmRun {
	var out []*vmRun
	for _, vm := range j.VMs {
		if r := j.vms[vm]; !r.skipped {
			out = append(out, r)
		}
	}
	return out
}
