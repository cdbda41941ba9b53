package failover

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// phases lays out a job's phases (see the package doc).
func (o *Orchestrator) phases(j *job) []phase {
	ps := []phase{{"prerequisites", o.prerequisites}}
	req := j.req
	switch j.Op {
	case proto.OpTestFailover, proto.OpFailover:
		if req.ShutdownSource {
			ps = append(ps, phase{"shutdown", o.perVM(o.shutdown)})
		}
		if req.Point.Kind == proto.PointLatest {
			ps = append(ps, phase{"latest", o.perVM(o.latest)})
		}
		if j.Op == proto.OpFailover {
			ps = append(ps, phase{"stop replication", o.perVM(o.stop)})
		}
		ps = append(ps, phase{"recovery points", o.choosePoints}, phase{"disks and NICs", o.perVM(o.prepare)})
		for gi := range j.groups {
			ps = append(ps, o.groupPhases(j, gi, phase{fmt.Sprintf("boot group %d", gi+1), o.boot(gi + 1)})...)
		}
	case proto.OpFailback:
		ps = append(ps, phase{"failback points", o.perVM(o.targetPoints)}, phase{"choose failback points", o.chooseBackPoints})
		for gi := range j.groups {
			ps = append(ps, o.groupPhases(j, gi, phase{fmt.Sprintf("failback group %d", gi+1), o.backGroup(gi + 1)})...)
		}
	case proto.OpTestCleanup:
		ps = append(ps, phase{"cleanup", o.perVM(o.cleanup)})
	case proto.OpChangePoint:
		ps = append(ps, phase{"recovery points", o.choosePoints}, phase{"change point", o.perVM(o.changePoint)})
	case proto.OpCommit:
		ps = append(ps, phase{"commit", o.perVM(func(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
			if o.machine(r.machine).State == StateFailedBack {
				o.commitBack(ctx, j, r, done)
				return
			}
			o.commit(ctx, j, r, done)
		})})
	}
	return ps
}

// groupPhases is boot group gi's (0-based) main phase with the plan's pre
// and post actions that apply to the job around it.
func (o *Orchestrator) groupPhases(j *job, gi int, main phase) []phase {
	var g proto.PlanGroup
	if j.req.Plan != nil {
		g = j.req.Plan.Groups[gi]
	}
	var ps []phase
	for _, a := range g.Pre {
		if applies(a, j.Op) {
			ps = append(ps, o.actionPhase(gi, a, true))
		}
	}
	ps = append(ps, main)
	for _, a := range g.Post {
		if applies(a, j.Op) {
			ps = append(ps, o.actionPhase(gi, a, false))
		}
	}
	return ps
}

// direction is a job's failover direction: VMware/physical → Azure is
// always primary-to-recovery; failback recovery-to-primary.
func direction(op string) string {
	if op == proto.OpFailback {
		return proto.DirectionBack
	}
	return proto.DirectionToAzure
}

// applies says whether a plan action runs for a failover of type op, in
// op's direction. A failback is ASR's unplanned failover back: an action
// for the failover type runs in it too (when its direction lets it).
func applies(a proto.PlanAction, op string) bool {
	typeOK := len(a.FailoverTypes) == 0 || slices.Contains(a.FailoverTypes, op) ||
		(op == proto.OpFailback && slices.Contains(a.FailoverTypes, proto.OpFailover))
	return typeOK && (len(a.Directions) == 0 || slices.Contains(a.Directions, direction(op)))
}

// perVM is a phase of one chain per active VM, in boot order.
func (o *Orchestrator) perVM(step func(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error))) func(runtime.Context, *job) {
	return func(ctx runtime.Context, j *job) {
		var chains []chain
		for _, r := range j.active() {
			chains = append(chains, func(ctx runtime.Context, done func(runtime.Context, error)) { step(ctx, j, r, done) })
		}
		o.run(ctx, j, chains)
	}
}

// prerequisites checks what the request could not: the resource group
// exists (made if not). Skipped plan VMs get their task here.
func (o *Orchestrator) prerequisites(ctx runtime.Context, j *job) {
	ti := o.task(ctx, j, TaskPrerequisites, "", 0)
	for _, vm := range j.VMs {
		if r := j.vms[vm]; r.skipped {
			si := o.task(ctx, j, TaskSkipVM, vm, r.group)
			o.taskEnd(ctx, j, si, TaskSkipped, 0, "deployed by job "+o.machines[vm].Job)
		}
	}
	switch j.Op {
	case proto.OpTestFailover, proto.OpFailover:
		for _, r := range j.active() {
			st := o.machine(r.machine)
			st.State, st.Job = StateTest, j.ID
			if j.Op == proto.OpFailover {
				st.State = StateFailedOver
			}
		}
	case proto.OpTestCleanup, proto.OpCommit, proto.OpFailback:
		for _, r := range j.active() {
			r.replGroup = o.machine(r.machine).ReplicationGroup
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		o.next(ctx, j)
		return
	}
	fabric, group := o.cfg.Fabric, o.cfg.Group
	o.call(ctx, j, "failover-create-group", o.cfg.FabricPeer, func(c context.Context) (any, error) {
		return nil, fabric.CreateGroup(c, group)
	}, func(ctx runtime.Context, _ any, err error) {
		if err != nil {
			reason := fmt.Sprintf("failover: resource group %s: %s", group, o.errText(err))
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			o.fail(ctx, j, reason, false)
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		o.next(ctx, j)
	})
}

// shutdown powers the source off through vCenter. Its failure is a
// warning: the failover goes on (Azure Site Recovery does the same).
func (o *Orchestrator) shutdown(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskShutdown, r.machine, r.group)
	warn := func(ctx runtime.Context, reason string) {
		o.taskEnd(ctx, j, ti, TaskWarning, 0, reason)
		j.Warnings = append(j.Warnings, r.machine+": "+reason)
		done(ctx, nil)
	}
	vs := o.cfg.VSphere
	if vs == nil {
		warn(ctx, "failover: source shutdown refused: no vCenter connection configured")
		return
	}
	name := r.machine
	o.call(ctx, j, "failover-shutdown", o.cfg.VSpherePeer, func(c context.Context) (any, error) {
		vms, err := vs.Discover(c)
		if err != nil {
			return nil, err
		}
		for _, v := range vms {
			if v.Name == name {
				return nil, vs.PowerOff(c, v.Ref)
			}
		}
		return nil, fmt.Errorf("failover: no VM %s in vCenter", name)
	}, func(ctx runtime.Context, _ any, err error) {
		if err != nil {
			warn(ctx, "failover: source shutdown failed, failover goes on: "+err.Error())
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		done(ctx, nil)
	})
}

// latest asks the Azure side to process pending data into a point.
func (o *Orchestrator) latest(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskLatest, r.machine, r.group)
	req := o.nextReq(j)
	o.vault(ctx, j, &proto.MakeLatest{Req: req, Machine: r.machine}, req, func(ctx runtime.Context, rep *proto.Reply) {
		if !rep.OK {
			o.taskEnd(ctx, j, ti, TaskFailed, 0, rep.Reason)
			done(ctx, fmt.Errorf("failover: latest of %s: %s", r.machine, rep.Reason))
			return
		}
		note := "nothing pending: no new point"
		if rep.Result != "" {
			note = "point " + rep.Result
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, note)
		done(ctx, nil)
	})
}

// stop asks the Azure side to stop the machine's replication, before
// anything is created from its points.
func (o *Orchestrator) stop(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskStop, r.machine, r.group)
	req := o.nextReq(j)
	o.vault(ctx, j, &proto.StopReplication{Req: req, Machine: r.machine}, req, func(ctx runtime.Context, rep *proto.Reply) {
		if !rep.OK {
			o.taskEnd(ctx, j, ti, TaskFailed, 0, rep.Reason)
			done(ctx, fmt.Errorf("failover: stop replication of %s: %s", r.machine, rep.Reason))
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		done(ctx, nil)
	})
}

// commit asks the Azure side to keep only the machine's point.
func (o *Orchestrator) commit(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	st := o.machine(r.machine)
	ti := o.task(ctx, j, TaskCommit, r.machine, r.group)
	req := o.nextReq(j)
	point := st.Point
	j.Point[r.machine] = point
	o.vault(ctx, j, &proto.CommitPoint{Req: req, Machine: r.machine, Point: point}, req, func(ctx runtime.Context, rep *proto.Reply) {
		if !rep.OK {
			o.taskEnd(ctx, j, ti, TaskFailed, 0, rep.Reason)
			done(ctx, fmt.Errorf("failover: commit of %s: %s", r.machine, rep.Reason))
			return
		}
		st.State, st.Job = StateCommitted, j.ID
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "point "+point)
		done(ctx, nil)
	})
}

// actionPhase runs one plan action of boot group gi (0-based).
func (o *Orchestrator) actionPhase(gi int, a proto.PlanAction, pre bool) phase {
	when := "post"
	if pre {
		when = "pre"
	}
	kind := "script"
	if a.Manual {
		kind = "manual"
	}
	name := fmt.Sprintf("Group %d %s-action %s (%s)", gi+1, when, a.Name, kind)
	return phase{name, func(ctx runtime.Context, j *job) {
		var ti int
		if j.retry != nil {
			// resume: the failed action's own task runs again.
			ti, j.retry = *j.retry, nil
			t := &j.Tasks[ti]
			t.State, t.Start, t.End, t.Reason = TaskInProgress, ctx.Now(), time.Time{}, ""
			ctx.Log().Info("failover: task started again", "job", j.ID, "task", name)
		} else {
			ti = o.task(ctx, j, name, "", gi+1)
		}
		if a.Manual {
			j.State, j.AllowedActions, j.waitingTask = JobWaiting, []string{proto.ActionAck}, ti
			j.Tasks[ti].State = TaskWaiting
			ctx.Log().Info("failover: waiting for a manual action", "job", j.ID, "action", a.Name, "group", gi+1)
			return
		}
		failAction := func(ctx runtime.Context, reason string) {
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			j.failed = &failedAction{task: ti}
			o.fail(ctx, j, reason, true)
		}
		rb := o.cfg.Runbooks
		if rb == nil {
			failAction(ctx, fmt.Sprintf("failover: action %s: no runbook service configured", a.Name))
			return
		}
		p := RunbookParams{Plan: j.Plan, FailoverType: j.Op, Direction: direction(j.Op), Group: gi + 1}
		if !pre {
			for _, r := range j.active() {
				if r.group == gi+1 {
					p.VMs = append(p.VMs, r.machine)
				}
			}
		}
		book := a.Runbook
		o.call(ctx, j, "failover-runbook", "", func(c context.Context) (any, error) {
			return nil, rb.Run(c, book, p)
		}, func(ctx runtime.Context, _ any, err error) {
			if err != nil {
				failAction(ctx, fmt.Sprintf("failover: action %s (runbook %s) failed: %v", a.Name, book, err))
				return
			}
			o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
			o.next(ctx, j)
		})
	}}
}
