package agent

import (
	"slices"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Replication groups (multi-VM consistency). The configuration server sends
// every member's agent a GroupConfig; the agent keeps the last one in
// agent.state and reports its version in Heartbeat (the server resends it
// while a member reports an older one). The master's agent runs the group's
// tag rounds on the group schedule (tag.go); every member, the master
// included, answers the phases (tagmember.go).

// groupSchedule is when the master's next group rounds are due.
type groupSchedule struct {
	nextCrash, nextApp time.Time         // zero: none of that kind
	pending            proto.Consistency // a round that came due while another ran; 0: none
	retry              proto.Consistency // a revoked round's kind, tried again at tGroupRetry; 0: none
}

// onGroupConfig applies a GroupConfig: a newer version (or another group)
// replaces the one held, "" as group leaves it. Stale and duplicate ones
// change nothing.
func (a *Agent) onGroupConfig(ctx runtime.Context, m *proto.GroupConfig) {
	if m.Group == "" {
		if a.group != nil {
			ctx.Log().Info("agent: left replication group", "machine", a.cfg.Machine, "group", a.group.Group)
			a.leaveGroup(ctx)
		}
		return
	}
	if a.group != nil && a.group.Group == m.Group && m.Version <= a.group.Version {
		return // a duplicate or a late older version
	}
	if reason := groupConfigProblem(m, a.cfg.Machine); reason != "" {
		ctx.Log().Warn("agent: group config refused", "machine", a.cfg.Machine, "group", m.Group,
			"version", m.Version, "reason", reason)
		a.lastErr = "group config " + m.Group + ": " + reason
		return
	}
	gc := *m
	gc.Members = slices.Clone(m.Members)
	sort.Strings(gc.Members)
	if gc.Crash == (proto.TagTimeouts{}) {
		gc.Crash = proto.CrashTagTimeouts
	}
	if gc.App == (proto.TagTimeouts{}) {
		gc.App = proto.AppTagTimeouts
	}
	a.group = &gc
	if a.st.Gen > 0 {
		a.save(ctx) // otherwise the next Protect's save keeps it
	}
	ctx.Log().Info("agent: replication group", "machine", a.cfg.Machine, "group", gc.Group, "version", gc.Version,
		"master", gc.Master, "members", len(gc.Members))
	a.master.scheduleGroup(ctx)
	if a.registered {
		a.heartbeat(ctx) // tells the configuration server the version applied
	}
}

// groupConfigProblem says why m cannot be applied by machine, or "".
func groupConfigProblem(m *proto.GroupConfig, machine string) string {
	switch {
	case len(m.Members) < 2 || len(m.Members) > proto.MaxGroupMembers:
		return "a group has 2 to 16 members"
	case !slices.Contains(m.Members, machine):
		return "this machine is not a member"
	case !slices.Contains(m.Members, m.Master):
		return "the master is not a member"
	}
	return ""
}

// leaveGroup forgets the group: no more rounds, and a round in progress
// here ends (its tag revoked, writes released).
func (a *Agent) leaveGroup(ctx runtime.Context) {
	if a.master.round != nil {
		a.master.revokeRound(ctx, "master left the group")
	}
	if a.member.cur != nil {
		a.member.end(ctx, a.member.cur, true)
	}
	a.group = nil
	a.master.timers.Cancel(ctx, tGroupRound)
	a.master.timers.Cancel(ctx, tGroupRetry)
	a.master.sched = groupSchedule{}
	if a.st.Gen > 0 {
		a.save(ctx)
	}
}

// isMaster says whether this agent runs its group's rounds.
// memberAddr is where a member of the agent's group listens for the tag
// protocol (proto.GroupConfig.MemberAddr).
func (a *Agent) memberAddr(member string) runtime.Addr {
	if a.group == nil {
		return runtime.MakeAddr(member, runtime.PortTag)
	}
	return a.group.MemberAddr(member)
}

func (a *Agent) isMaster() bool { return a.group != nil && a.group.Master == a.cfg.Machine }

// scheduleGroup (re)starts the master's round schedule from now.
func (tm *tagMaster) scheduleGroup(ctx runtime.Context) {
	a := tm.a
	tm.timers.Cancel(ctx, tGroupRound)
	tm.timers.Cancel(ctx, tGroupRetry)
	tm.sched = groupSchedule{}
	if !a.isMaster() {
		return
	}
	now := ctx.Now()
	if a.group.CrashInterval > 0 {
		tm.sched.nextCrash = now.Add(a.group.CrashInterval)
	}
	if a.group.AppInterval > 0 {
		tm.sched.nextApp = now.Add(a.group.AppInterval)
	}
	tm.armGroupTimer(ctx)
}

func (tm *tagMaster) armGroupTimer(ctx runtime.Context) {
	next := tm.sched.nextCrash
	if !tm.sched.nextApp.IsZero() && (next.IsZero() || tm.sched.nextApp.Before(next)) {
		next = tm.sched.nextApp
	}
	if !next.IsZero() {
		tm.timers.Set(ctx, tGroupRound, max(next.Sub(ctx.Now()), 0))
	}
}

// groupTimer: a round is due. When both kinds are due, one app round
// serves both.
func (tm *tagMaster) groupTimer(ctx runtime.Context) {
	a := tm.a
	if !a.isMaster() {
		return
	}
	now := ctx.Now()
	var kind proto.Consistency
	if !tm.sched.nextApp.IsZero() && !now.Before(tm.sched.nextApp) {
		kind = proto.App
		tm.sched.nextApp = now.Add(a.group.AppInterval)
	}
	if !tm.sched.nextCrash.IsZero() && !now.Before(tm.sched.nextCrash) {
		if kind == 0 {
			kind = proto.Crash
		}
		tm.sched.nextCrash = now.Add(a.group.CrashInterval)
	}
	tm.armGroupTimer(ctx)
	if kind != 0 {
		tm.sched.retry = 0 // the regular round replaces a retry
		tm.timers.Cancel(ctx, tGroupRetry)
		tm.dueRound(ctx, kind)
	}
}

// dueRound starts a round of kind, or keeps it for when the running round
// ends, or counts why it cannot run.
func (tm *tagMaster) dueRound(ctx runtime.Context, kind proto.Consistency) {
	a := tm.a
	switch {
	case tm.round != nil:
		if tm.sched.pending != proto.App {
			tm.sched.pending = kind
		}
	case a.phase != PhaseReplicating:
		tm.stats.skipped[a.phase]++
		ctx.Log().Info("agent: group round skipped", "machine", a.cfg.Machine, "group", a.group.Group,
			"kind", kind, "reason", a.phase)
	default:
		tm.startRound(ctx, kind)
	}
}

// ReasonCount counts events of one reason.
type ReasonCount struct {
	Reason string
	Count  int64
}

func reasonList(m map[string]int64) []ReasonCount {
	return sortedCounts(m, func(r string, n int64) ReasonCount { return ReasonCount{Reason: r, Count: n} })
}

// RoundStats is what this agent did as its group's master.
type RoundStats struct {
	// Started, Committed and Revoked count rounds; RevokedBy counts the
	// revoked ones by reason (the phase and member that failed, as in
	// TagRound.Reason).
	Started, Committed, Revoked int64
	RevokedBy                   []ReasonCount
	// Retried counts retries that came due GroupRetry after a revoked
	// round; each starts a round (counted in Started too) unless a round
	// runs or the agent is not replicating.
	Retried int64
	// Skipped counts due rounds not started, by reason: the agent's phase
	// when it was not replicating.
	Skipped []ReasonCount
	// Tag, Kind and Phase are the round in progress ("" when none); Phase
	// is the one whose acknowledgements the master waits for ("revoke"
	// while it collects revoke acknowledgements).
	Tag, Phase string
	Kind       proto.Consistency
	// LastTag and LastOutcome are the last finished round's.
	LastTag, LastOutcome string
}

type roundStats struct {
	started, committed, revoked, retried int64
	revokedBy, skipped                   map[string]int64
	lastTag, lastOutcome                 string
}

// MemberStats is what this agent did as a member of group rounds (the
// master is a member too).
type MemberStats struct {
	// Tag and Phase are the round this member takes part in ("" when
	// none); Phase is the last phase it did.
	Tag, Phase string
	// Begun counts rounds it accepted; Refused counts begins it refused,
	// by reason (syncing, resync-required, not registered, ...).
	Begun   int64
	Refused []ReasonCount
	// Resumed counts rounds it finished with resume; Revoked those that
	// ended with a revoke (from the master, its hold deadline, a newer
	// round or a restart); TagsRevoked the revoke records it appended.
	Resumed, Revoked, TagsRevoked int64
}

type memberStats struct {
	begun, resumed, revoked, tagsRevoked int64
	refused                              map[string]int64
}

// HoldStats describes how long this member held its guest's writes.
type HoldStats struct {
	// Count holds ended; Max, Last and Total their durations; Recent the
	// last (at most RecentHolds) ones, oldest first.
	Count            int64
	Max, Last, Total time.Duration
	Recent           []time.Duration
	// Deadline counts holds ended by the member's own hold deadline;
	// Restart counts holds a restarted agent found and released (their
	// length is unknown and not in the other figures).
	Deadline, Restart int64
}

// RecentHolds is how many hold durations HoldStats.Recent keeps.
const RecentHolds = 32

func (h *HoldStats) add(d time.Duration) {
	h.Count++
	h.Max = max(h.Max, d)
	h.Last = d
	h.Total += d
	if len(h.Recent) == RecentHolds {
		h.Recent = append(h.Recent[:0], h.Recent[1:]...)
	}
	h.Recent = append(h.Recent, d)
}
