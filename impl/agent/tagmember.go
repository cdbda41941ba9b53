package agent

import (
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

// onTag handles a phase from the network and answers its sender.
func (a *Agent) onTag(ctx runtime.Context, from runtime.Addr, t *proto.Tag) {
	ack := a.memberTag(ctx, t)
	ctx.Send(from, wire.Encode(&ack))
}

// memberTag does phase t.Phase of round t.TagID and returns the answer.
func (a *Agent) memberTag(ctx runtime.Context, t *proto.Tag) proto.TagAck {
	r := a.remembered[t.TagID]
	if r != nil {
		if ack, ok := r.answers[t.Phase]; ok {
			return ack // a duplicate: the same answer
		}
	} else {
		if t.Phase != proto.PhaseBegin {
			// Remembered, so that a late begin of it is refused too.
			r = a.remember(&memberRound{tag: *t, phase: t.Phase, ended: true, answers: map[string]proto.TagAck{}})
			return a.answer(r, t.Phase, false, reasonUnknownTag)
		}
		return a.memberBegin(ctx, t)
	}
	switch t.Phase {
	case proto.PhaseRevoke:
		// Also after resume: another member failed, and the tag inserted
		// here must not become part of a group point.
		a.endMember(ctx, r, true)
		return a.answer(r, proto.PhaseRevoke, true, "")
	case proto.PhaseBegin, proto.PhasePrepare, proto.PhaseQuiesce, proto.PhaseCommit, proto.PhaseResume:
	default:
		return a.answer(r, t.Phase, false, "unknown phase "+t.Phase)
	}
	if r.ended {
		return a.answer(r, t.Phase, false, "round over after "+r.phase)
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
		return a.answer(r, t.Phase, false, fmt.Sprintf("out of order: %s after %s", t.Phase, r.phase))
	}
	switch t.Phase {
	case proto.PhasePrepare:
		a.filter.Hold()
		a.filter.SetHoldDeadline(ctx.Now().Add(r.timeouts.Hold()))
		r.holding, r.heldAt = true, ctx.Now()
		a.set(ctx, tTagDeadline, r.timeouts.Hold())
	case proto.PhaseQuiesce:
		if err := a.cfg.Guest.Freeze(); err != nil {
			return a.answer(r, t.Phase, false, "freeze failed: "+err.Error())
		}
		r.frozen = true
	case proto.PhaseCommit:
		if reason := a.bookmarkBlocker(); reason != "" {
			return a.answer(r, t.Phase, false, reason)
		}
		seq, err := a.filter.InsertBookmark(r.tag.Kind, r.tag.TagID, ctx.Now().UnixNano())
		if err != nil {
			return a.answer(r, t.Phase, false, err.Error())
		}
		r.seq = seq
		ctx.Log().Info("agent: group tag", "machine", a.cfg.Machine, "tag", r.tag.TagID, "seq", seq)
	case proto.PhaseResume:
		a.endMember(ctx, r, false)
	}
	r.phase = t.Phase
	return a.answer(r, t.Phase, true, "")
}

// memberBegin answers the begin of a round not seen before.
func (a *Agent) memberBegin(ctx runtime.Context, t *proto.Tag) proto.TagAck {
	r := &memberRound{tag: *t, phase: proto.PhaseBegin, answers: map[string]proto.TagAck{}}
	r.tag.Phase, r.tag.Reason = "", ""
	if a.group != nil {
		r.timeouts = timeoutsFor(a.group, t.Kind)
	}
	a.remember(r)
	if reason := a.beginBlocker(t); reason != "" {
		r.ended = true
		a.member.refused[reason]++
		ctx.Log().Info("agent: group round refused", "machine", a.cfg.Machine, "tag", t.TagID, "reason", reason)
		return a.answer(r, proto.PhaseBegin, false, reason)
	}
	if c := a.cur; c != nil {
		// The master runs one round at a time: a newer one means it gave up
		// on the older, whose revoke we missed.
		ctx.Log().Info("agent: group round superseded", "machine", a.cfg.Machine, "tag", c.tag.TagID, "by", t.TagID)
		a.endMember(ctx, c, true)
		c.answers[proto.PhaseRevoke] = proto.TagAck{Group: c.tag.Group, TagID: c.tag.TagID, Phase: proto.PhaseRevoke,
			Machine: a.cfg.Machine, Reason: "superseded by " + t.TagID, Held: c.held}
	}
	a.newest[t.Master] = max(a.newest[t.Master], tagNumber(t.TagID))
	a.cur = r
	a.member.begun++
	// A round that never gets to prepare is forgotten after the longest it
	// could last.
	a.set(ctx, tTagDeadline, r.timeouts.Prepare+r.timeouts.Hold())
	return a.answer(r, proto.PhaseBegin, true, "")
}

// beginBlocker says why this member cannot take part in round t, or "".
func (a *Agent) beginBlocker(t *proto.Tag) string {
	switch {
	case a.group == nil:
		return "not in a replication group"
	case t.Group != a.group.Group:
		return "not a member of group " + t.Group
	case t.Master != a.group.Master:
		return "not the group's master: " + t.Master
	case !t.Kind.Valid():
		return fmt.Sprintf("unknown kind %q", t.Kind.String())
	case tagNumber(t.TagID) < a.newest[t.Master]:
		return "stale tag"
	case a.refusedReason != "" || !a.registered:
		return "not registered"
	}
	return a.bookmarkBlocker() // syncing, resync-required, idle, or the log cannot honour a tag
}

// answer records and returns the answer to phase of r.
func (a *Agent) answer(r *memberRound, phase string, ok bool, reason string) proto.TagAck {
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

// endMember ends this member's part in r: with revoke, the tag (if
// inserted and not yet revoked) gets a revoke record — before the writes
// are released, so nothing admitted after the release precedes it; then
// the writes are released and the guest thawed. The hold is counted once.
func (a *Agent) endMember(ctx runtime.Context, r *memberRound, revoke bool) {
	if revoke && r.seq != 0 && !r.revoked {
		r.revoked = true
		a.member.tagsRevoked++
		if _, err := a.filter.RevokeBookmark(r.tag.TagID); err != nil {
			a.fail(ctx, "revoke tag", err)
		}
		ctx.Log().Info("agent: group tag revoked", "machine", a.cfg.Machine, "tag", r.tag.TagID)
	}
	if r.holding {
		r.holding = false
		r.held = ctx.Now().Sub(r.heldAt)
		a.holds.add(r.held)
		a.filter.Release()
	}
	if r.frozen {
		r.frozen = false
		a.cfg.Guest.Thaw()
	}
	if !r.ended {
		r.ended = true
		if revoke {
			a.member.revoked++
		} else {
			a.member.resumed++
		}
	}
	if a.cur == r {
		a.cur = nil
		a.cancel(ctx, tTagDeadline)
	}
}

// memberDeadline: the round took longer than any round may. A member that
// holds writes revokes its own tag, releases, thaws and tells the master.
func (a *Agent) memberDeadline(ctx runtime.Context) {
	r := a.cur
	if r == nil {
		return
	}
	wasHolding := r.holding
	a.endMember(ctx, r, true)
	ack := a.answer(r, proto.PhaseRevoke, false, reasonHoldDeadline)
	if !wasHolding {
		return // begun, never prepared: nothing was held, nothing to say
	}
	a.holds.Deadline++
	ctx.Log().Info("agent: group round hold deadline", "machine", a.cfg.Machine, "tag", r.tag.TagID,
		"held", r.held.String())
	if r.tag.Master == a.cfg.Machine {
		a.roundAck(ctx, &ack)
		return
	}
	ctx.Send(runtime.MakeAddr(r.tag.Master, runtime.PortTag), wire.Encode(&ack))
}

// remember keeps r's answers for duplicates, forgetting the oldest ended
// rounds beyond memberMemory.
func (a *Agent) remember(r *memberRound) *memberRound {
	a.remembered[r.tag.TagID] = r
	a.rememberOrder = append(a.rememberOrder, r.tag.TagID)
	for len(a.rememberOrder) > memberMemory {
		old := a.rememberOrder[0]
		if o := a.remembered[old]; o != nil && !o.ended {
			break
		}
		delete(a.remembered, old)
		a.rememberOrder = a.rememberOrder[1:]
	}
	return r
}

// recoverHold: a restarted agent finds the filter (kernel state) still
// holding writes for a round it no longer knows the state of. It revokes
// the tag inserted under the hold, if any, and releases at once.
func (a *Agent) recoverHold(ctx runtime.Context) {
	if !a.filter.Holding() {
		return
	}
	tag := a.filter.HoldTag()
	if tag != "" {
		if _, err := a.filter.RevokeBookmark(tag); err != nil {
			a.fail(ctx, "revoke tag", err)
		}
		a.member.tagsRevoked++
		r := a.remember(&memberRound{tag: proto.Tag{TagID: tag}, phase: proto.PhaseRevoke, revoked: true, ended: true,
			answers: map[string]proto.TagAck{}})
		if a.group != nil {
			r.tag.Group = a.group.Group
		}
		a.answer(r, proto.PhaseRevoke, false, reasonRestarted)
	}
	a.filter.Release()
	a.holds.Restart++
	ctx.Log().Info("agent: released writes held before a restart", "machine", a.cfg.Machine, "revokedTag", tag)
}
