package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The distributed tag protocol, member side (every member, the master
// included, which calls memberTag directly).
//
// A member does each phase in order — begin (check it can take part),
// prepare (Hold the guest's writes), quiesce (app rounds: Freeze), commit
// (insert the tag as a bookmark), resume (Release, Thaw) — and answers each
// with a TagAck. Revoke may come at any time: it appends a revoke record if
// the tag was inserted (even after resume), releases and thaws.
//
// Whatever fails, the member never holds writes longer than
// TagTimeouts.Hold() of the round's kind since it received prepare: its
// own deadline timer then revokes its tag, releases, thaws, and tells the
// master (TagAck{revoke, OK: false, "hold deadline"}). The answer to every
// phase is kept, so a duplicated or late message gets the same answer
// again; a phase for an unknown tag, or out of order, is answered OK false.

// tagMember is the member's side of the protocol in one agent (the
// master's agent has one too): the round it takes part in, the answers it
// remembers, the holds it made, and its hold-deadline timer. It owns that
// state alone; the agent routes Tags and the deadline's firing to it. What
// it needs of the agent (the machine, the group, the filter that holds the
// writes, the guest that freezes, whether a bookmark can be honoured) it
// reads through a.
type tagMember struct {
	a             *Agent
	timers        runtime.Timers
	cur           *memberRound
	remembered    map[string]*memberRound
	rememberOrder []string
	newest        map[string]uint64 // highest tag number begun, per master
	stats         memberStats
	holds         HoldStats
}

// memberRound is one round as this member sees it.
type memberRound struct {
	tag      proto.Tag // as begin brought it (Phase and Reason unused)
	timeouts proto.TagTimeouts
	phase    string                  // the last phase done
	answers  map[string]proto.TagAck // by phase: what was answered
	holding  bool
	heldAt   time.Time
	held     time.Duration
	frozen   bool
	freezing bool   // the freeze op runs
	seq      uint64 // the tag's bookmark; 0 until commit
	revoked  bool   // a revoke record was appended
	ended    bool   // resumed or revoked: no more holding
}

// memberMemory is how many finished rounds a member remembers the answers
// of, for duplicates and late messages.
const memberMemory = 64

// Reasons a member gives.
const (
	reasonHoldDeadline = "hold deadline"
	reasonUnknownTag   = "unknown tag"
	reasonRestarted    = "agent restarted mid-round"
)

// onTag handles a phase from the network and answers its sender, now or
// (quiesce) when the guest's freeze completes.
func (mb *tagMember) onTag(ctx runtime.Context, from runtime.Addr, t *proto.Tag) {
	mb.tag(ctx, t, func(ctx runtime.Context, ack proto.TagAck) { ctx.Send(from, wire.Encode(&ack)) })
}

// tag does phase t.Phase of round t.TagID and gives the answer to reply:
// at once, or, for a quiesce, when the freeze op completes. A duplicate of
// a quiesce whose freeze still runs gets no answer: the freeze's will do.
func (mb *tagMember) tag(ctx runtime.Context, t *proto.Tag, reply func(runtime.Context, proto.TagAck)) {
	if t.Phase == proto.PhaseQuiesce {
		if r := mb.remembered[t.TagID]; r != nil && !r.ended && r.phase == proto.PhasePrepare && r.tag.Kind == proto.App {
			if _, answered := r.answers[t.Phase]; !answered {
				mb.quiesce(ctx, r, reply)
				return
			}
		}
	}
	reply(ctx, mb.tagNow(ctx, t))
}

// quiesce freezes the guest in an op (durable: a freeze that succeeded is
// always thawed) and answers when it completes. Writes stay held
// meanwhile; a round that ended in between (revoked, superseded, its hold
// deadline) thaws at once and is not answered: its end was.
func (mb *tagMember) quiesce(ctx runtime.Context, r *memberRound, reply func(runtime.Context, proto.TagAck)) {
	if r.freezing {
		return
	}
	a := mb.a
	g := a.cfg.Guest
	r.freezing = true
	a.ops.GoDurable(ctx, runtime.Op{Name: "freeze", Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Syncs: 1},
		Run: func(context.Context) (any, error) { return nil, g.Freeze() }}, func(ctx runtime.Context, d runtime.Done) {
		r.freezing = false
		if r.ended {
			if d.Err == nil {
				g.Thaw()
			}
			return
		}
		if d.Err != nil {
			reply(ctx, mb.answer(r, proto.PhaseQuiesce, false, "freeze failed: "+d.Err.Error()))
			return
		}
		r.frozen = true
		r.phase = proto.PhaseQuiesce
		reply(ctx, mb.answer(r, proto.PhaseQuiesce, true, ""))
	})
}

// tagNow does phase t.Phase of round t.TagID, except a first quiesce, and
// returns the answer.
func (mb *tagMember) tagNow(ctx runtime.Context, t *proto.Tag) proto.TagAck {
	a := mb.a
	r := mb.remembered[t.TagID]
	if r != nil {
		if ack, ok := r.answers[t.Phase]; ok {
			return ack // a duplicate: the same answer
		}
	} else {
		if t.Phase != proto.PhaseBegin {
			// Remembered, so that a late begin of it is refused too.
			r = mb.remember(&memberRound{tag: *t, phase: t.Phase, ended: true, answers: map[string]proto.TagAck{}})
			return mb.answer(r, t.Phase, false, reasonUnknownTag)
		}
		return mb.begin(ctx, t)
	}
	switch t.Phase {
	case proto.PhaseRevoke:
		// Also after resume: another member failed, and the tag inserted
		// here must not become part of a group point.
		mb.end(ctx, r, true)
		return mb.answer(r, proto.PhaseRevoke, true, "")
	case proto.PhaseBegin, proto.PhasePrepare, proto.PhaseQuiesce, proto.PhaseCommit, proto.PhaseResume:
	default:
		return mb.answer(r, t.Phase, false, "unknown phase "+t.Phase)
	}
	if r.ended {
		return mb.answer(r, t.Phase, false, "round over after "+r.phase)
	}
	want := map[string]string{proto.PhasePrepare: proto.PhaseBegin, proto.PhaseCommit: proto.PhasePrepare,
		proto.PhaseQuiesce: proto.PhasePrepare, proto.PhaseResume: proto.PhaseCommit}[t.Phase]
	if r.tag.Kind == proto.App && t.Phase == proto.PhaseCommit {
		want = proto.PhaseQuiesce
	}
	if t.Phase == proto.PhaseQuiesce && r.tag.Kind != proto.App {
		want = "" // crash rounds have no quiesce
	}
	if r.phase != want {
		return mb.answer(r, t.Phase, false, fmt.Sprintf("out of order: %s after %s", t.Phase, r.phase))
	}
	switch t.Phase {
	case proto.PhasePrepare:
		a.filter.Hold()
		a.filter.SetHoldDeadline(ctx.Now().Add(r.timeouts.Hold()))
		r.holding, r.heldAt = true, ctx.Now()
		mb.timers.Set(ctx, tTagDeadline, r.timeouts.Hold())
	case proto.PhaseQuiesce:
		// tag runs a first quiesce as an op (quiesce); one that reaches
		// here is not in order for it.
		return mb.answer(r, t.Phase, false, "quiesce out of turn")
	case proto.PhaseCommit:
		if reason := a.bookmarkBlocker(); reason != "" {
			return mb.answer(r, t.Phase, false, reason)
		}
		seq, err := a.filter.InsertBookmark(r.tag.Kind, r.tag.TagID, ctx.Now().UnixNano())
		if err != nil {
			return mb.answer(r, t.Phase, false, err.Error())
		}
		r.seq = seq
		a.drainBookmark()
		ctx.Log().Info("agent: group tag", "machine", a.cfg.Machine, "tag", r.tag.TagID, "seq", seq)
	case proto.PhaseResume:
		mb.end(ctx, r, false)
	}
	r.phase = t.Phase
	return mb.answer(r, t.Phase, true, "")
}

// begin answers the begin of a round not seen before.
func (mb *tagMember) begin(ctx runtime.Context, t *proto.Tag) proto.TagAck {
	a := mb.a
	r := &memberRound{tag: *t, phase: proto.PhaseBegin, answers: map[string]proto.TagAck{}}
	r.tag.Phase, r.tag.Reason = "", ""
	if a.group != nil {
		r.timeouts = timeoutsFor(a.group, t.Kind)
	}
	mb.remember(r)
	if reason := mb.beginBlocker(t); reason != "" {
		r.ended = true
		mb.stats.refused[reason]++
		ctx.Log().Info("agent: group round refused", "machine", a.cfg.Machine, "tag", t.TagID, "reason", reason)
		return mb.answer(r, proto.PhaseBegin, false, reason)
	}
	if c := mb.cur; c != nil {
		// The master runs one round at a time: a newer one means it gave up
		// on the older, whose revoke we missed.
		ctx.Log().Info("agent: group round superseded", "machine", a.cfg.Machine, "tag", c.tag.TagID, "by", t.TagID)
		mb.end(ctx, c, true)
		c.answers[proto.PhaseRevoke] = proto.TagAck{Group: c.tag.Group, TagID: c.tag.TagID, Phase: proto.PhaseRevoke,
			Machine: a.cfg.Machine, Reason: "superseded by " + t.TagID, Held: c.held}
	}
	mb.newest[t.Master] = max(mb.newest[t.Master], tagNumber(t.TagID))
	mb.cur = r
	mb.stats.begun++
	// A round that never gets to prepare is forgotten after the longest it
	// could last.
	mb.timers.Set(ctx, tTagDeadline, r.timeouts.Prepare+r.timeouts.Hold())
	return mb.answer(r, proto.PhaseBegin, true, "")
}

// beginBlocker says why this member cannot take part in round t, or "".
func (mb *tagMember) beginBlocker(t *proto.Tag) string {
	a := mb.a
	switch {
	case a.group == nil:
		return "not in a replication group"
	case t.Group != a.group.Group:
		return "not a member of group " + t.Group
	case t.Master != a.group.Master:
		return "not the group's master: " + t.Master
	case !t.Kind.Valid():
		return fmt.Sprintf("unknown kind %q", t.Kind.String())
	case tagNumber(t.TagID) < mb.newest[t.Master]:
		return "stale tag"
	case a.refusedReason != "" || !a.registered:
		return "not registered"
	}
	return a.bookmarkBlocker() // syncing, resync-required, idle, or the log cannot honour a tag
}

// answer records and returns the answer to phase of r.
func (mb *tagMember) answer(r *memberRound, phase string, ok bool, reason string) proto.TagAck {
	a := mb.a
	ack := proto.TagAck{Group: r.tag.Group, TagID: r.tag.TagID, Phase: phase, Machine: a.cfg.Machine, OK: ok, Reason: reason}
	switch phase {
	case proto.PhaseCommit:
		ack.Seq = r.seq
	case proto.PhaseResume, proto.PhaseRevoke:
		ack.Held = r.held
	}
	r.answers[phase] = ack
	return ack
}

// end ends this member's part in r: with revoke, the tag (if
// inserted and not yet revoked) gets a revoke record — before the writes
// are released, so nothing admitted after the release precedes it; then
// the writes are released and the guest thawed. The hold is counted once.
func (mb *tagMember) end(ctx runtime.Context, r *memberRound, revoke bool) {
	a := mb.a
	if revoke && r.seq != 0 && !r.revoked {
		r.revoked = true
		mb.stats.tagsRevoked++
		if _, err := a.filter.RevokeBookmark(r.tag.TagID); err != nil {
			a.fail(ctx, "revoke tag", err)
		}
		ctx.Log().Info("agent: group tag revoked", "machine", a.cfg.Machine, "tag", r.tag.TagID)
	}
	if r.holding {
		r.holding = false
		r.held = ctx.Now().Sub(r.heldAt)
		mb.holds.add(r.held)
		a.filter.Release()
	}
	if r.frozen {
		r.frozen = false
		a.cfg.Guest.Thaw()
	}
	if !r.ended {
		r.ended = true
		if revoke {
			mb.stats.revoked++
		} else {
			mb.stats.resumed++
		}
	}
	if mb.cur == r {
		mb.cur = nil
		mb.timers.Cancel(ctx, tTagDeadline)
	}
}

// deadline: the round took longer than any round may. A member that
// holds writes revokes its own tag, releases, thaws and tells the master.
func (mb *tagMember) deadline(ctx runtime.Context) {
	a := mb.a
	r := mb.cur
	if r == nil {
		return
	}
	wasHolding := r.holding
	mb.end(ctx, r, true)
	ack := mb.answer(r, proto.PhaseRevoke, false, reasonHoldDeadline)
	if !wasHolding {
		return // begun, never prepared: nothing was held, nothing to say
	}
	mb.holds.Deadline++
	ctx.Log().Info("agent: group round hold deadline", "machine", a.cfg.Machine, "tag", r.tag.TagID,
		"held", r.held.String())
	if r.tag.Master == a.cfg.Machine {
		a.master.roundAck(ctx, &ack)
		return
	}
	ctx.Send(a.memberAddr(r.tag.Master), wire.Encode(&ack))
}

// remember keeps r's answers for duplicates, forgetting the oldest ended
// rounds beyond memberMemory.
func (mb *tagMember) remember(r *memberRound) *memberRound {
	mb.remembered[r.tag.TagID] = r
	mb.rememberOrder = append(mb.rememberOrder, r.tag.TagID)
	for len(mb.rememberOrder) > memberMemory {
		old := mb.rememberOrder[0]
		if o := mb.remembered[old]; o != nil && !o.ended {
			break
		}
		delete(mb.remembered, old)
		mb.rememberOrder = mb.rememberOrder[1:]
	}
	return r
}

// recoverHold: a restarted agent finds the filter (kernel state) still
// holding writes for a round it no longer knows the state of. It revokes
// the tag inserted under the hold, if any, and releases at once.
func (mb *tagMember) recoverHold(ctx runtime.Context) {
	a := mb.a
	if !a.filter.Holding() {
		return
	}
	tag := a.filter.HoldTag()
	if tag != "" {
		if _, err := a.filter.RevokeBookmark(tag); err != nil {
			a.fail(ctx, "revoke tag", err)
		}
		mb.stats.tagsRevoked++
		r := mb.remember(&memberRound{tag: proto.Tag{TagID: tag}, phase: proto.PhaseRevoke, revoked: true, ended: true,
			answers: map[string]proto.TagAck{}})
		if a.group != nil {
			r.tag.Group = a.group.Group
		}
		mb.answer(r, proto.PhaseRevoke, false, reasonRestarted)
	}
	a.filter.Release()
	mb.holds.Restart++
	ctx.Log().Info("agent: released writes held before a restart", "machine", a.cfg.Machine, "revoked_tag", tag)
}
