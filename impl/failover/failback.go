package failover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Failback (FAILOVER.md §B): machines failed over to Azure and reprotected
// to the on-premises master target go back to their on-premises VMs.
//
//   - failback points (per VM, in parallel): proto.TargetPointsRequest to
//     the master target; a machine with no point fails the job here,
//     before anything is shut down.
//   - choose: latest → each machine's newest point; latest-app → its newest
//     app-consistent one, and the members of one replication group (two or
//     more of them in the job) the newest app-consistent point id every
//     member has. No such point fails the job, nothing shut down.
//   - per boot group, in order: pre actions (those of DirectionBack),
//     then per VM in parallel: shut the Azure VM down (deallocate, polled;
//     the machine is StateFailedBack from here) → proto.FailbackPoint to
//     the master target (its Reply names the on-premises VM) → power the
//     on-premises VM on (already on is fine) → Config.OnPremBoot; then
//     post actions.
//
// Commit of a failed-back machine deletes its Azure VM, then its NICs,
// disks and copied blobs, then tells the configuration server FailedBack;
// the machine is then StateOnPrem.
//
// Messages to the configuration server and the master target are resent
// every ResendEvery until answered (each is idempotent). The master target
// unanswered for VaultTimeout fails the step; the configuration server
// unanswered for NotifyTimeout (or refusing) is a warning and the job goes
// on: a lost configuration server must not hold a recovery.

// Failback's task names.
const (
	TaskTargetPoints  = "Read the failback points"
	TaskDeallocate    = "Shut down the Azure virtual machine"
	TaskFailbackPoint = "Bring the on-premises disks to the failback point"
	TaskPowerOn       = "Power on the on-premises virtual machine"
	TaskOnPremHealth  = "Check the on-premises guest's health"
	TaskTellCS        = "Tell the configuration server"
)

// ask sends msg (request id req) to `to` and runs then with its answer (a
// *proto.Reply or *proto.TargetPoints), or with nil when none came within
// bound. Unanswered, msg is sent again every resend (0: never). Nothing
// runs once the job has moved on (failed, or resumed into a new attempt).
func (o *Orchestrator) ask(ctx runtime.Context, j *job, to runtime.Addr, msg wire.Msg, req string, resend, bound time.Duration, then func(runtime.Context, wire.Msg)) {
	gen := j.gen
	live := func() bool { return j.gen == gen && j.State == JobInProgress }
	o.waiting[req] = func(ctx runtime.Context, m wire.Msg) {
		if live() {
			then(ctx, m)
		}
	}
	frame := wire.Encode(msg)
	ctx.Send(to, frame)
	if resend > 0 {
		n := 0
		var again func(runtime.Context)
		again = func(ctx runtime.Context) {
			if _, ok := o.waiting[req]; !ok {
				return
			}
			if !live() {
				delete(o.waiting, req)
				return
			}
			n++
			ctx.Log().Info("failover: unanswered, sent again", "job", j.ID, "to", string(to), "kind", wire.KindName(msg.WireKind()), "req", req, "try", n+1)
			ctx.Send(to, frame)
			o.after(ctx, resend, "failover-resend", again)
		}
		o.after(ctx, resend, "failover-resend", again)
	}
	o.after(ctx, bound, "failover-answer-timeout", func(ctx runtime.Context) {
		if _, ok := o.waiting[req]; !ok {
			return
		}
		delete(o.waiting, req)
		if live() {
			then(ctx, nil)
		}
	})
}

// notify tells the configuration server msg as r's task TaskTellCS: an
// answer other than OK, or none within NotifyTimeout, is a warning and
// done(nil) all the same. With no configuration server configured it does
// nothing.
func (o *Orchestrator) notify(ctx runtime.Context, j *job, r *vmRun, msg wire.Msg, req string, done func(runtime.Context, error)) {
	if o.cfg.ConfigServer == "" {
		done(ctx, nil)
		return
	}
	ti := o.task(ctx, j, TaskTellCS, r.machine, r.group)
	kind := wire.KindName(msg.WireKind())
	o.ask(ctx, j, o.cfg.ConfigServer, msg, req, ResendEvery, o.cfg.NotifyTimeout, func(ctx runtime.Context, m wire.Msg) {
		rep, _ := m.(*proto.Reply)
		var warn string
		switch {
		case m == nil:
			warn = fmt.Sprintf("failover: the configuration server did not answer %s in %s (sent every %s): it was not told", kind, o.cfg.NotifyTimeout, ResendEvery)
		case rep == nil:
			warn = fmt.Sprintf("failover: the configuration server answered %s with %s", kind, wire.KindName(m.WireKind()))
		case !rep.OK:
			warn = fmt.Sprintf("failover: the configuration server refused %s: %s", kind, rep.Reason)
		}
		if warn != "" {
			o.taskEnd(ctx, j, ti, TaskWarning, 0, warn)
			j.Warnings = append(j.Warnings, r.machine+": "+warn)
			done(ctx, nil)
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, kind)
		done(ctx, nil)
	})
}

// tellFailedOver tells the configuration server that r's failover brought
// its Azure VM up.
func (o *Orchestrator) tellFailedOver(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	req := o.nextReq(j)
	o.notify(ctx, j, r, &proto.FailedOver{Req: req, Machine: r.machine, AzureVM: r.name}, req, done)
}

// askTarget sends a request to the master target, resent until answered;
// none within VaultTimeout gives nil.
func (o *Orchestrator) askTarget(ctx runtime.Context, j *job, msg wire.Msg, req string, then func(runtime.Context, wire.Msg)) {
	o.ask(ctx, j, o.cfg.MasterTarget, msg, req, ResendEvery, o.cfg.VaultTimeout, then)
}

// targetAnswer is an answer of the master target as an error: nil for a
// Reply OK or TargetPoints without Err.
func (o *Orchestrator) targetAnswer(m wire.Msg) error {
	switch m := m.(type) {
	case nil:
		return fmt.Errorf("no answer from the master target %s in %s", o.cfg.MasterTarget, o.cfg.VaultTimeout)
	case *proto.Reply:
		if !m.OK {
			return fmt.Errorf("the master target refused: %s", m.Reason)
		}
	case *proto.TargetPoints:
		if m.Err != "" {
			return fmt.Errorf("the master target has none: %s", m.Err)
		}
	}
	return nil
}

// targetPoints asks the master target for r's failback points. A machine
// with none fails the job: nothing has been shut down yet.
func (o *Orchestrator) targetPoints(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskTargetPoints, r.machine, r.group)
	req := o.nextReq(j)
	o.askTarget(ctx, j, &proto.TargetPointsRequest{Req: req, Machine: r.machine}, req, func(ctx runtime.Context, m wire.Msg) {
		err := o.targetAnswer(m)
		tp, ok := m.(*proto.TargetPoints)
		switch {
		case err != nil:
		case !ok:
			err = fmt.Errorf("the master target answered %s, not its points", wire.KindName(m.WireKind()))
		case len(tp.Points) == 0:
			err = fmt.Errorf("%w: no failback point yet (reprotect has not made one)", ErrPoint)
		}
		if err != nil {
			reason := fmt.Sprintf("failover: failback points of %s: %s", r.machine, err)
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		r.backPoints, r.onPremVM = tp.Points, tp.VM
		newest := tp.Points[len(tp.Points)-1]
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, fmt.Sprintf("%d points, newest %s", len(tp.Points), newest.ID))
		done(ctx, nil)
	})
}

// chooseBackPoints chooses each machine's failback point (see
// chooseBack), as one task; a machine without one fails the job.
func (o *Orchestrator) chooseBackPoints(ctx runtime.Context, j *job) {
	ti := o.task(ctx, j, TaskPoint, "", 0)
	runs := j.active()
	points, err := chooseBack(j.req.Point.Kind, runs)
	if err != nil {
		o.taskEnd(ctx, j, ti, TaskFailed, 0, err.Error())
		o.fail(ctx, j, err.Error(), false)
		return
	}
	for _, r := range runs {
		r.backPoint = points[r.machine]
		j.Point[r.machine] = r.backPoint
		ctx.Log().Info("failover: failback point chosen", "job", j.ID, "vm", r.machine, "point", r.backPoint, "group", r.replGroup)
	}
	o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
	o.next(ctx, j)
}

// chooseBack picks each machine's failback point id from r.backPoints
// (oldest first): for latest its newest; for latest-app its newest
// app-consistent one, except that the members of one replication group
// (two or more in runs) take the newest app-consistent id every member
// has, newest in the first member's order.
func chooseBack(kind string, runs []*vmRun) (map[string]string, error) {
	out := map[string]string{}
	app := kind == proto.PointLatestApp
	if app {
		members := map[string][]*vmRun{}
		var groups []string
		for _, r := range runs {
			if g := r.replGroup; g != "" {
				if members[g] == nil {
					groups = append(groups, g)
				}
				members[g] = append(members[g], r)
			}
		}
		for _, g := range groups {
			ms := members[g]
			if len(ms) < 2 {
				continue
			}
			common := ""
			for _, p := range ms[0].backPoints {
				if p.Kind != proto.App {
					continue
				}
				all := true
				for _, r := range ms[1:] {
					if !hasAppPoint(r.backPoints, p.ID) {
						all = false
						break
					}
				}
				if all {
					common = p.ID
				}
			}
			if common == "" {
				return nil, fmt.Errorf("%w: no app-consistent failback point common to the members of group %s", ErrPoint, g)
			}
			for _, r := range ms {
				out[r.machine] = common
			}
		}
	}
	for _, r := range runs {
		if _, done := out[r.machine]; done {
			continue
		}
		id := ""
		for _, p := range r.backPoints {
			if !app || p.Kind == proto.App {
				id = p.ID
			}
		}
		if id == "" {
			what := "no failback point"
			if app {
				what = "no app-consistent failback point"
			}
			return nil, fmt.Errorf("%w: %s: %s", ErrPoint, r.machine, what)
		}
		out[r.machine] = id
	}
	return out, nil
}

func hasAppPoint(ps []proto.TargetPoint, id string) bool {
	for _, p := range ps {
		if p.ID == id && p.Kind == proto.App {
			return true
		}
	}
	return false
}

// backGroup is the phase that fails boot group g's machines back in
// parallel.
func (o *Orchestrator) backGroup(g int) func(runtime.Context, *job) {
	return func(ctx runtime.Context, j *job) {
		var chains []chain
		for _, r := range j.active() {
			if r.group == g {
				chains = append(chains, func(ctx runtime.Context, done func(runtime.Context, error)) {
					o.failback(ctx, j, r, done)
				})
			}
		}
		o.run(ctx, j, chains)
	}
}

// failback is one machine's chain: Azure VM down, disks to the point,
// on-premises VM on, its guest healthy.
func (o *Orchestrator) failback(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	step := func(next func(runtime.Context, *job, *vmRun, func(runtime.Context, error))) func(runtime.Context, error) {
		return func(ctx runtime.Context, err error) {
			if err != nil {
				done(ctx, err)
				return
			}
			next(ctx, j, r, done)
		}
	}
	o.deallocate(ctx, j, r, step(func(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
		o.failbackPoint(ctx, j, r, step(func(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
			o.powerOn(ctx, j, r, step(o.onPremHealth))
		}))
	}))
}

// deallocate shuts r's Azure VM down; the machine is failed back from
// here. A VM that no longer exists runs nothing: not an error.
func (o *Orchestrator) deallocate(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskDeallocate, r.machine, r.group)
	st := o.machine(r.machine)
	st.State, st.Job = StateFailedBack, j.ID
	ref, fabric := st.VM, o.cfg.Fabric
	o.lro(ctx, j, "deallocate", func(c context.Context) (compute.Pending, error) { return fabric.BeginDeallocate(c, ref) },
		func(ctx runtime.Context, err error) {
			note := ""
			if errors.Is(err, compute.ErrNotFound) {
				note, err = "the Azure VM no longer exists", nil
			}
			if err != nil {
				reason := fmt.Sprintf("failover: shut down the Azure VM %s: %s", ref.Name, o.errText(err))
				o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
				done(ctx, errors.New(reason))
				return
			}
			o.taskEnd(ctx, j, ti, TaskSucceeded, 0, note)
			done(ctx, nil)
		})
}

// failbackPoint asks the master target to bring r's on-premises disks to
// the chosen point and stop taking its stream; its Reply names the VM.
func (o *Orchestrator) failbackPoint(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskFailbackPoint, r.machine, r.group)
	req := o.nextReq(j)
	o.askTarget(ctx, j, &proto.FailbackPoint{Req: req, Machine: r.machine, Point: r.backPoint}, req, func(ctx runtime.Context, m wire.Msg) {
		err := o.targetAnswer(m)
		rep, ok := m.(*proto.Reply)
		switch {
		case err != nil:
		case !ok:
			err = fmt.Errorf("the master target answered %s", wire.KindName(m.WireKind()))
		case rep.Subject == "":
			err = errors.New("the master target named no on-premises VM")
		}
		if err != nil {
			reason := fmt.Sprintf("failover: failback point %s of %s: %s", r.backPoint, r.machine, err)
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		r.onPremVM = rep.Subject
		st := o.machine(r.machine)
		st.BackPoint, st.OnPremVM = r.backPoint, r.onPremVM
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, fmt.Sprintf("point %s on VM %s", r.backPoint, r.onPremVM))
		done(ctx, nil)
	})
}

// powerOn powers r's on-premises VM on through vCenter; one already on is
// fine.
func (o *Orchestrator) powerOn(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskPowerOn, r.machine, r.group)
	fail := func(ctx runtime.Context, err error) {
		reason := fmt.Sprintf("failover: power on the on-premises VM %s of %s: %s", r.onPremVM, r.machine, err)
		o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
		done(ctx, errors.New(reason))
	}
	vs := o.cfg.VSphere
	if vs == nil {
		fail(ctx, errors.New("no vCenter connection configured"))
		return
	}
	name := r.onPremVM
	o.call(ctx, j, "failover-power-on", o.cfg.VSpherePeer, func(c context.Context) (any, error) {
		vms, err := vs.Discover(c)
		if err != nil {
			return nil, err
		}
		for _, v := range vms {
			if v.Name != name {
				continue
			}
			if v.PowerState == vsphere.PoweredOn {
				return "already on", nil
			}
			err := vs.PowerOn(c, v.Ref)
			if errors.Is(err, vsphere.ErrInvalidPowerState) {
				// On meanwhile? Only then is it not an error.
				if now, verr := vs.VM(c, v.Ref); verr == nil && now.PowerState == vsphere.PoweredOn {
					return "already on", nil
				}
			}
			if err != nil {
				return nil, err
			}
			return "powered on", nil
		}
		return nil, fmt.Errorf("no VM %s in vCenter", name)
	}, func(ctx runtime.Context, v any, err error) {
		if err != nil {
			fail(ctx, err)
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, v.(string))
		done(ctx, nil)
	})
}

// onPremHealth runs Config.OnPremBoot on r's on-premises VM.
func (o *Orchestrator) onPremHealth(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskOnPremHealth, r.machine, r.group)
	ok := func(ctx runtime.Context, note string) {
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, note)
		ctx.Log().Info("failover: on-premises vm healthy", "job", j.ID, "vm", r.machine, "on_prem_vm", r.onPremVM, "point", r.backPoint, "rto", j.VMRTO(r.machine).String())
		done(ctx, nil)
	}
	check := o.cfg.OnPremBoot
	if check == nil {
		ok(ctx, "powered on; no health check configured")
		return
	}
	vm, machine := r.onPremVM, r.machine
	o.call(ctx, j, "failover-on-prem-health", o.cfg.VSpherePeer, func(c context.Context) (any, error) {
		return nil, check(c, vm, machine)
	}, func(ctx runtime.Context, _ any, err error) {
		if err != nil {
			reason := fmt.Sprintf("failover: on-premises VM %s of %s is not healthy: %v", vm, machine, err)
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		ok(ctx, "")
	})
}

// commitBack commits a failback: the Azure VM, then its NICs, disks and
// copied blobs are deleted, then the configuration server is told
// FailedBack.
func (o *Orchestrator) commitBack(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	st := o.machine(r.machine)
	j.Point[r.machine] = st.BackPoint
	o.deleteCreated(ctx, j, r, func(ctx runtime.Context, err error) {
		if err != nil {
			done(ctx, err)
			return
		}
		st.State, st.Job, st.Point = StateOnPrem, j.ID, ""
		req := o.nextReq(j)
		o.notify(ctx, j, r, &proto.FailedBack{Req: req, Machine: r.machine, VM: st.OnPremVM}, req, done)
	})
}
