package mastertarget

import (
	"context"
	"fmt"
	"strings"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// closedErr says why a machine's items are refused once a rollback began.
func closedErr(m *machine) error {
	if m.st.FailedBack != "" {
		return fmt.Errorf("%w: %s's disks were rolled back to point %s; its stream is closed", ErrFailedBack, m.st.Machine, m.st.FailedBack)
	}
	return fmt.Errorf("%w: %s's disks are being rolled back to point %s; its stream is closed", ErrFailedBack, m.st.Machine, m.st.Rollback)
}

// pointList names points for a refusal: "none", or their ids and kinds.
func pointList(points []point) string {
	if len(points) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, p := range points {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", p.ID, p.Kind)
	}
	return b.String()
}

func (t *Target) failbackPoint(ctx runtime.Context, from runtime.Addr, req *proto.FailbackPoint) {
	m, ok := t.machines[req.Machine]
	if !ok || m.attaching {
		t.fbReply(ctx, req.Machine, "", fbReq{from, *req}, "", fmt.Errorf("%w: %s", ErrNotAttached, req.Machine))
		return
	}
	m.fbWaiting = append(m.fbWaiting, fbReq{from, *req})
	t.kick(ctx, m)
}

func (t *Target) fbReply(ctx runtime.Context, machine, vm string, r fbReq, id string, err error) {
	rep := &proto.Reply{Request: "failback-point", Req: r.req.Req, Subject: vm, OK: err == nil, Result: id}
	if err != nil {
		rep.Reason, rep.Result = err.Error(), ""
		ctx.Log().Warn("mastertarget: failback point refused", "machine", machine, "point", r.req.Point, "err", rep.Reason)
	}
	ctx.Send(r.to, wire.Encode(rep))
}

// answerFailbacks answers the failback requests it can on this turn and
// starts the rollback the first other one needs; it reports whether it
// started one. Run only when the machine has no op and no rollback
// pending.
func (t *Target) answerFailbacks(ctx runtime.Context, m *machine) bool {
	for len(m.fbWaiting) > 0 {
		r := m.fbWaiting[0]
		p, ok := resolve(m.st.Points, r.req.Point)
		switch {
		case m.st.FailedBack != "" && ok && p.ID == m.st.FailedBack:
			t.fbReply(ctx, m.st.Machine, m.st.VM, r, p.ID, nil)
		case m.st.FailedBack != "":
			t.fbReply(ctx, m.st.Machine, m.st.VM, r, "", fmt.Errorf("%w: %s is at point %s (%s) already; no other point can be reached",
				ErrFailedBack, m.st.Machine, m.st.FailedBack, r.req.Point))
		case !ok:
			t.fbReply(ctx, m.st.Machine, m.st.VM, r, "", fmt.Errorf("%w: %s has no point %q; its points: %s",
				ErrNoPoint, m.st.Machine, r.req.Point, pointList(m.st.Points)))
		default:
			t.startRollback(ctx, m, p)
			return true
		}
		m.fbWaiting = m.fbWaiting[1:]
	}
	return false
}

// rollbackJob is a rollback op's work: bring the disks to point to by
// undoing, newest first, every journal entry after it. mark is the state
// that says a rollback to it began; done the state once it is over (the
// machine failed back at to, the only point left).
type rollbackJob struct {
	disks  []proto.TargetDisk
	to     point
	mark   state
	done   state
	marked bool // mark is durable already (a rollback being redone)
	jour   jinfo
}

type rollbackResult struct {
	marked  bool // mark reached the retention volume
	undone  int  // entries undone
	jour    jinfo
	dropErr error // the journal could not be removed (it stays, unused)
}

// run rolls back, durably: write mark and fsync it before any disk is
// touched; read the journal; put back the old bytes of the entries after
// the point, newest first, each with a ranged write (the disks are never
// read whole); write
// done and fsync it; remove the journal. Undoing is idempotent — each
// byte ends as the oldest entry after the point covering it says, the
// byte at the point, whatever the disk holds when it starts — so a crash
// anywhere before done is durable is repaired by doing it all again, which
// a restarted target does when it finds mark.
func (j rollbackJob) run(ctx context.Context, vc vsphere.Client, ret retention) (rollbackResult, error) {
	res := rollbackResult{marked: j.marked, jour: j.jour}
	machine := j.done.Machine
	if !j.marked {
		if err := ret.write(j.mark); err != nil {
			return res, fmt.Errorf("%w: %w", ErrRetention, err)
		}
		res.marked = true
	}
	entries, err := ret.readJournal(machine, j.jour.Bytes)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrRetention, err)
	}
	first := len(entries)
	for first > 0 && entries[first-1].At.cmp(j.to.At) > 0 {
		first--
	}
	undo := entries[first:]
	for _, e := range undo {
		if int(e.Disk) >= len(j.disks) {
			return res, fmt.Errorf("%w: journal entry for disk %d of %d", ErrStateCorrupt, e.Disk, len(j.disks))
		}
	}
	for k := len(undo) - 1; k >= 0; k-- {
		e := undo[k]
		if err := vc.WriteAt(ctx, j.disks[e.Disk].Path, e.Data, e.Off); err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, e.Disk, err)
		}
	}
	res.undone = len(undo)
	if err := ret.write(j.done); err != nil {
		return res, fmt.Errorf("%w: %w", ErrRetention, err)
	}
	res.jour, res.dropErr = ret.rewriteJournal(machine, nil)
	if res.dropErr != nil {
		res.jour = j.jour
	}
	return res, nil
}

func (t *Target) startRollback(ctx runtime.Context, m *machine, p point) {
	mark := m.st.clone()
	mark.Rollback = p.ID
	done := m.st.clone()
	done.Rollback, done.FailedBack, done.Points = "", p.ID, []point{p}
	job := rollbackJob{disks: done.Disks, to: p, mark: mark, done: done, marked: m.st.Rollback == p.ID, jour: m.jour}
	// The entries after the point are at most the journal.
	bytes := m.jour.Bytes
	vc, ret := t.cfg.VC, t.ret
	m.busy = true
	ctx.Log().Info("mastertarget: rollback", "machine", m.st.Machine, "point", p.ID, "kind", p.Kind.String(), "at", p.At.String(),
		"journal_bytes", m.jour.Bytes, "redo", job.marked)
	t.ops.Start(ctx, runtime.Op{Name: "mastertarget rollback " + m.st.Machine, Peer: t.cfg.VCenterPeer, Bytes: bytes,
		Disk: &runtime.DiskIO{Device: DeviceRetention, Bytes: m.jour.Bytes + 2*int64(len(done.marshal())), Syncs: 6},
		Run:  func(c context.Context) (any, error) { return job.run(c, vc, ret) }},
		opTag{kind: opRollback, machine: m.st.Machine, rb: job})
}

func (t *Target) rollbackDone(ctx runtime.Context, tag opTag, d runtime.Done) {
	m := t.machines[tag.machine]
	m.busy = false
	res, _ := d.Value.(rollbackResult)
	to := tag.rb.to
	if d.Err != nil {
		m.lastErr = d.Err.Error()
		// Requests for this point hear of the failure; the others are
		// answered when the machine is settled.
		var rest []fbReq
		for _, r := range m.fbWaiting {
			if p, ok := resolve(m.st.Points, r.req.Point); ok && p.ID == to.ID {
				t.fbReply(ctx, m.st.Machine, m.st.VM, r, "", fmt.Errorf("mastertarget: rollback of %s to %s failed: %w", m.st.Machine, to.ID, d.Err))
				continue
			}
			rest = append(rest, r)
		}
		m.fbWaiting = rest
		if res.marked {
			// The disks may be partly rolled back: the rollback must
			// finish, and is retried until it does.
			m.st.Rollback = to.ID
			m.retrying = true
			t.timers.Arm(ctx, timerRetry, t.cfg.RetryEvery)
		}
		t.applyError(ctx, m, m.st.Applied)
		ctx.Log().Warn("mastertarget: rollback failed", "machine", tag.machine, "point", to.ID, "err", m.lastErr, "will_retry", res.marked)
		t.kick(ctx, m)
		return
	}
	m.st, m.jour = tag.rb.done, res.jour
	m.queue, m.sumsDue, m.syncSums = nil, false, nil
	m.lastErr, m.errSent, m.retrying = "", false, false
	if res.dropErr != nil {
		ctx.Log().Warn("mastertarget: undo journal not removed", "machine", tag.machine, "err", res.dropErr.Error())
	}
	ctx.Log().Info("mastertarget: failed back", "machine", tag.machine, "point", to.ID, "vm", m.st.VM, "undone", res.undone)
	t.kick(ctx, m) // answers the requests
}

func (t *Target) targetPoints(ctx runtime.Context, from runtime.Addr, req *proto.TargetPointsRequest) {
	rep := &proto.TargetPoints{Req: req.Req, Machine: req.Machine}
	m, ok := t.machines[req.Machine]
	if !ok || m.attaching {
		rep.Err = fmt.Errorf("%w: %s", ErrNotAttached, req.Machine).Error()
	} else {
		rep.VM, rep.Applied = m.st.VM, m.st.Applied
		for _, p := range m.st.Points {
			rep.Points = append(rep.Points, p.target())
		}
	}
	ctx.Send(from, wire.Encode(rep))
}
