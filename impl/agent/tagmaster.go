package agent

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The distributed tag protocol, master side. A round is
//
//	begin → prepare → [quiesce, app rounds] → commit → resume
//
// The master sends each phase to every other member (<machine>:20004),
// does it itself as a member, and waits for every member's OK
// acknowledgement within the phase's timeout. A missing or not-OK
// acknowledgement revokes the round: Tag{revoke} to every member and
// locally, a wait of the resume timeout for the revoke acknowledgements
// (they carry each member's hold), then TagRound to the configuration
// server. Committed rounds end with TagRound too. TagRound carries each
// phase the master drove with the times it saw: when it sent the phase
// and when it left it (the last acknowledgement, or giving up on it).
//
// Safety does not rest on the master: each member bounds its own hold
// (tagmember.go), so a master that dies mid-round leaves no writes held
// past TagTimeouts.Hold().

// tagMaster is the master's side of the protocol in one agent: the
// group's round schedule, the round in progress and what became of the
// finished ones, and the timers that drive them (the schedule, a phase's
// timeout and resend). It owns that state alone; the agent routes TagAcks
// and these timers to it and reads its figures for Status. What it needs
// of the agent (the machine's name, the group, agent.state for the tag
// numbers, the agent's own member) it reads through a.
type tagMaster struct {
	a      *Agent
	timers runtime.Timers
	sched  groupSchedule
	round  *masterRound
	stats  roundStats
}

// timer handles a firing of one of the master's own timers.
func (tm *tagMaster) timer(ctx runtime.Context, name string) {
	switch name {
	case tGroupRound:
		tm.groupTimer(ctx)
	case tGroupRetry:
		tm.retryTimer(ctx)
	case tTagPhase:
		tm.phaseTimeout(ctx)
	case tTagResend:
		tm.resendPhase(ctx)
	}
}

// tagPhase is one step of a round as the master drives it.
type tagPhase struct {
	name    string
	timeout func(proto.TagTimeouts) time.Duration
	appOnly bool
}

// roundPhases is the protocol, in order, with each phase's timeout. The
// product gives no timeout of its own to begin (sending the tag id); it
// gets prepare's, and the members' hold deadlines count from prepare.
var roundPhases = []tagPhase{
	{proto.PhaseBegin, func(t proto.TagTimeouts) time.Duration { return t.Prepare }, false},
	{proto.PhasePrepare, func(t proto.TagTimeouts) time.Duration { return t.Prepare }, false},
	{proto.PhaseQuiesce, func(t proto.TagTimeouts) time.Duration { return t.Quiesce }, true},
	{proto.PhaseCommit, func(t proto.TagTimeouts) time.Duration { return t.Commit }, false},
	{proto.PhaseResume, func(t proto.TagTimeouts) time.Duration { return t.Resume }, false},
}

// revokeWait is how long a revoking master collects revoke
// acknowledgements (and the holds they report) before it reports.
func revokeWait(t proto.TagTimeouts) time.Duration { return t.Resume }

// masterRound is a round this agent runs as master.
type masterRound struct {
	tag      proto.Tag // Group, TagID, Kind, Master; Phase is set per send
	timeouts proto.TagTimeouts
	members  []string // sorted, the master included
	started  time.Time
	step     int    // index in roundPhases of phase
	phase    string // the phase whose acknowledgements are awaited
	acked    map[string]bool
	holds    map[string]time.Duration // reported by resume and revoke acks
	revoking bool
	reason   string             // why it was revoked
	phases   []proto.RoundPhase // the phases entered so far, the last one open while End is zero
}

// openPhase records that the master enters phase name at now (it sends it).
func (r *masterRound) openPhase(name string, now time.Time) {
	r.phases = append(r.phases, proto.RoundPhase{Name: name, Start: now})
}

// closePhase records that the master leaves its open phase at now, ok if
// every member acknowledged it; it does nothing when no phase is open.
func (r *masterRound) closePhase(now time.Time, ok bool) {
	if n := len(r.phases); n > 0 && r.phases[n-1].End.IsZero() {
		r.phases[n-1].End, r.phases[n-1].OK = now, ok
	}
}

func timeoutsFor(gc *proto.GroupConfig, kind proto.Consistency) proto.TagTimeouts {
	if kind == proto.App {
		return gc.App
	}
	return gc.Crash
}

// tagNumber is the round number of a tag id, 0 if id is not one.
func tagNumber(id string) uint64 {
	t, _ := proto.ParseTagID(id)
	return t.N
}

// startRound begins a round of kind. Its number is the clock in
// milliseconds, or one more than the last one when the clock has not
// moved past it: persisted, it never repeats.
func (tm *tagMaster) startRound(ctx runtime.Context, kind proto.Consistency) {
	a := tm.a
	n := max(uint64(ctx.Now().UnixMilli()), a.st.LastTagN+1)
	a.st.LastTagN = n
	gc := a.group
	r := &masterRound{
		tag:      proto.Tag{Group: gc.Group, TagID: proto.TagID{Group: gc.Group, Kind: kind, N: n}.String(), Kind: kind, Master: a.cfg.Machine},
		timeouts: timeoutsFor(gc, kind),
		members:  slices.Clone(gc.Members),
		started:  ctx.Now(),
		step:     -1,
		holds:    map[string]time.Duration{},
	}
	tm.round = r
	tm.stats.started++
	ctx.Log().Info("agent: group round", "machine", a.cfg.Machine, "group", gc.Group, "tag", r.tag.TagID, "kind", kind)
	// The tag number goes out only once it is durable: a restart must
	// never number a round the same again.
	a.saveThen(ctx, func(ctx runtime.Context) {
		if tm.round == r && r.step < 0 {
			tm.enterPhase(ctx, 0)
		}
	})
}

// enterPhase moves the round to roundPhases[i] (skipping app-only phases
// of crash rounds), or commits it past the last phase.
func (tm *tagMaster) enterPhase(ctx runtime.Context, i int) {
	r := tm.round
	r.closePhase(ctx.Now(), true) // every member acknowledged the last one
	for i < len(roundPhases) && roundPhases[i].appOnly && r.tag.Kind != proto.App {
		i++
	}
	if i == len(roundPhases) {
		tm.finishRound(ctx, proto.RoundCommitted)
		return
	}
	p := roundPhases[i]
	r.step, r.phase, r.acked = i, p.name, map[string]bool{}
	r.openPhase(p.name, ctx.Now())
	tm.broadcast(ctx, r, p.timeout(r.timeouts), "")
}

// broadcast sends the round's current phase to every other member, arms
// its timeout (and a resend at half of it, against a lost message), then
// does it locally. The local acknowledgement may move the round on, so
// nothing follows it.
func (tm *tagMaster) broadcast(ctx runtime.Context, r *masterRound, timeout time.Duration, reason string) {
	a := tm.a
	t := r.tag
	t.Phase, t.Reason = r.phase, reason
	frame := wire.Encode(&t)
	for _, m := range r.members {
		if m != a.cfg.Machine {
			ctx.Send(a.memberAddr(m), frame)
		}
	}
	tm.timers.Set(ctx, tTagPhase, timeout)
	tm.timers.Set(ctx, tTagResend, timeout/2)
	if slices.Contains(r.members, a.cfg.Machine) {
		a.member.tag(ctx, &t, func(ctx runtime.Context, ack proto.TagAck) { tm.roundAck(ctx, &ack) })
	}
}

// resendPhase repeats the current phase to the members that have not
// acknowledged it; they answer a duplicate as they answered the original.
func (tm *tagMaster) resendPhase(ctx runtime.Context) {
	a, r := tm.a, tm.round
	if r == nil {
		return
	}
	t := r.tag
	t.Phase, t.Reason = r.phase, r.reason
	frame := wire.Encode(&t)
	for _, m := range r.members {
		if m != a.cfg.Machine && !r.acked[m] {
			ctx.Send(a.memberAddr(m), frame)
		}
	}
}

// roundAck takes a member's acknowledgement (from the network, or the
// master's own as a member).
func (tm *tagMaster) roundAck(ctx runtime.Context, m *proto.TagAck) {
	r := tm.round
	if r == nil || m.TagID != r.tag.TagID || !slices.Contains(r.members, m.Machine) {
		return // a late answer to a finished round, or a stranger's
	}
	if m.Phase == proto.PhaseResume && m.OK {
		r.holds[m.Machine] = m.Held
	}
	if m.Phase == proto.PhaseRevoke {
		r.holds[m.Machine] = m.Held
		if !r.revoking {
			// Unasked: the member gave up on its own (its hold deadline).
			tm.revokeRound(ctx, fmt.Sprintf("%s: %s revoked: %s", r.phase, m.Machine, m.Reason))
			return
		}
		r.acked[m.Machine] = true
		if len(r.acked) == len(r.members) {
			r.closePhase(ctx.Now(), true)
			tm.finishRound(ctx, proto.RoundRevoked)
		}
		return
	}
	if r.revoking || m.Phase != r.phase || r.acked[m.Machine] {
		return // a late or duplicated answer to an earlier phase
	}
	if !m.OK {
		tm.revokeRound(ctx, fmt.Sprintf("%s: %s refused: %s", r.phase, m.Machine, m.Reason))
		return
	}
	r.acked[m.Machine] = true
	if len(r.acked) == len(r.members) {
		tm.enterPhase(ctx, r.step+1)
	}
}

// phaseTimeout: some member did not acknowledge in time.
func (tm *tagMaster) phaseTimeout(ctx runtime.Context) {
	r := tm.round
	if r == nil {
		return
	}
	if r.revoking {
		tm.finishRound(ctx, proto.RoundRevoked)
		return
	}
	var missing []string
	for _, m := range r.members {
		if !r.acked[m] {
			missing = append(missing, m)
		}
	}
	tm.revokeRound(ctx, fmt.Sprintf("%s: %s did not answer", r.phase, strings.Join(missing, ",")))
}

// revokeRound abandons the round everywhere.
func (tm *tagMaster) revokeRound(ctx runtime.Context, reason string) {
	a, r := tm.a, tm.round
	if r == nil || r.revoking {
		return
	}
	ctx.Log().Info("agent: group round revoked", "machine", a.cfg.Machine, "tag", r.tag.TagID, "reason", reason)
	r.revoking, r.reason = true, reason
	r.closePhase(ctx.Now(), false)
	r.phase, r.acked = proto.PhaseRevoke, map[string]bool{}
	r.openPhase(proto.PhaseRevoke, ctx.Now())
	tm.broadcast(ctx, r, revokeWait(r.timeouts), reason)
}

// finishRound reports the round to the configuration server, then starts
// a round that came due meanwhile.
func (tm *tagMaster) finishRound(ctx runtime.Context, outcome string) {
	a, r := tm.a, tm.round
	tm.round = nil
	r.closePhase(ctx.Now(), false) // a revoke whose acknowledgements did not all come
	tm.timers.Cancel(ctx, tTagPhase)
	tm.timers.Cancel(ctx, tTagResend)
	revoked := uint64(tm.stats.revoked)
	if outcome != proto.RoundCommitted {
		revoked++
	}
	rep := &proto.TagRound{Group: r.tag.Group, TagID: r.tag.TagID, Kind: r.tag.Kind, Outcome: outcome,
		Reason: r.reason, Started: r.started, Since: a.startedAt,
		Finished: uint64(tm.stats.committed+tm.stats.revoked) + 1, RevokedSoFar: revoked, Phases: r.phases}
	for _, m := range r.members {
		held, ok := r.holds[m]
		if !ok {
			held = -1
		}
		rep.Holds = append(rep.Holds, proto.MemberHold{Machine: m, Held: held})
	}
	sort.Slice(rep.Holds, func(i, j int) bool { return rep.Holds[i].Machine < rep.Holds[j].Machine })
	ctx.Send(a.cfg.ConfigServer, wire.Encode(rep))
	if outcome == proto.RoundCommitted {
		tm.stats.committed++
	} else {
		tm.stats.revoked++
		tm.stats.revokedBy[r.reason]++
	}
	tm.stats.lastTag, tm.stats.lastOutcome = r.tag.TagID, outcome
	ctx.Log().Info("agent: group round done", "machine", a.cfg.Machine, "tag", r.tag.TagID, "outcome", outcome,
		"reason", r.reason, "took", ctx.Now().Sub(r.started).String())
	if kind := tm.sched.pending; kind != 0 && a.isMaster() {
		tm.sched.pending = 0
		tm.dueRound(ctx, kind)
		return
	}
	if outcome == proto.RoundCommitted {
		tm.sched.retry = 0
		tm.timers.Cancel(ctx, tGroupRetry)
		return
	}
	tm.scheduleRetry(ctx, r.tag.Kind)
}

// GroupRetry is how long after a revoked round its master tries a round of
// the same kind again, while the next regular round is due later than
// that: a member that was down or busy for one round does not cost the
// group a whole interval without a point (swarm seed 59: a member's agent
// down across the first round, no group point for 26 minutes of a
// 15-minute schedule). The schedule is not moved: regular rounds stay due
// at their times, and a regular round replaces a pending retry.
const GroupRetry = time.Minute

// scheduleRetry arms a retry of a revoked round of kind, unless the next
// regular round of that kind comes first.
func (tm *tagMaster) scheduleRetry(ctx runtime.Context, kind proto.Consistency) {
	if !tm.a.isMaster() {
		return
	}
	next := tm.sched.nextCrash
	if kind == proto.App {
		next = tm.sched.nextApp
	}
	if next.IsZero() || !ctx.Now().Add(GroupRetry).Before(next) {
		return
	}
	tm.sched.retry = kind
	tm.timers.Set(ctx, tGroupRetry, GroupRetry)
}

// retryTimer: a revoked round's retry is due.
func (tm *tagMaster) retryTimer(ctx runtime.Context) {
	kind := tm.sched.retry
	tm.sched.retry = 0
	if kind == 0 || !tm.a.isMaster() {
		return
	}
	tm.stats.retried++
	tm.dueRound(ctx, kind)
}
