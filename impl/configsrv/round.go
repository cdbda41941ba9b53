package configsrv

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Bounds of what the server keeps per group, so that memory does not grow
// with the rounds a long-lived group runs.
const (
	// HoldWindow is how many of the most recent holds P50 and P99 are
	// computed over (count, max and the histogram cover every hold).
	HoldWindow = 4096
	// RecentRounds is how many finished rounds GroupStats.Recent lists.
	RecentRounds = 16
	// MaxRevokeReasons is how many distinct revoke reasons are counted
	// apart; further ones are counted under ReasonOther.
	MaxRevokeReasons = 64
	// roundMemory is how many tag ids are remembered to drop duplicated
	// TagRound reports.
	roundMemory = 1024
)

// ReasonOther counts revoked rounds past MaxRevokeReasons distinct reasons.
const ReasonOther = "other"

// holdBounds are the inclusive upper bounds of the hold histogram's
// buckets; a last bucket counts holds over the largest. Crash rounds hold
// for milliseconds (at most proto.CrashTagTimeouts.Hold(), 600 ms); app
// rounds freeze the applications and may hold for seconds, hence the
// buckets past one second.
var holdBounds = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond,
	time.Second, 10 * time.Second, time.Minute,
}

// holdDist is a distribution of write holds.
type holdDist struct {
	count   int
	unknown int // members that did not report a hold (-1)
	max     time.Duration
	buckets [len(holdBounds) + 1]int
	window  []time.Duration // the last HoldWindow holds, a ring from next
	next    int
}

func (h *holdDist) add(d time.Duration) {
	if d < 0 {
		h.unknown++
		return
	}
	h.count++
	h.max = max(h.max, d)
	i := sort.Search(len(holdBounds), func(i int) bool { return d <= holdBounds[i] })
	h.buckets[i]++
	if len(h.window) < HoldWindow {
		h.window = append(h.window, d)
		return
	}
	h.window[h.next] = d
	h.next = (h.next + 1) % HoldWindow
}

// status summarises h; percentiles are nearest-rank over the window.
func (h *holdDist) status() HoldStats {
	st := HoldStats{Count: h.count, Unknown: h.unknown, Max: h.max}
	if n := len(h.window); n > 0 {
		sorted := slices.Clone(h.window)
		slices.Sort(sorted)
		rank := func(p int) time.Duration { return sorted[(p*n+99)/100-1] }
		st.P50, st.P99 = rank(50), rank(99)
	}
	for i, c := range h.buckets {
		b := HoldBucket{Count: c}
		if i < len(holdBounds) {
			b.UpTo, b.Label = holdBounds[i], "<="+holdBounds[i].String()
		} else {
			b.Label = ">" + holdBounds[len(holdBounds)-1].String()
		}
		st.Histogram = append(st.Histogram, b)
	}
	return st
}

// roundStats are a group's tag-round statistics.
type roundStats struct {
	committed, revoked           int
	committedCrash, committedApp int
	revokedBy                    map[string]int
	consecutiveRevoked           int
	lastRevokeReason             string
	lastCommitted                time.Time // when the last committed round was reported
	recent                       []RoundStatus
	holds, crashHolds, appHolds  holdDist
	seen                         map[string]bool // tag ids of reported rounds (the last roundMemory)
	seenOrder                    []string
	duplicates                   int
	// masters tallies, per master incarnation (master@since), the reports
	// received against the master's own counts in them: the difference is
	// reports lost on the way (a master sends each once).
	masters     map[string]*masterTally
	masterOrder []string
}

// masterTally is one master incarnation's reports as received, and its own
// counts as of the latest of them.
type masterTally struct {
	received, receivedRevoked int
	finished, revoked         uint64
}

func newRoundStats() roundStats {
	return roundStats{revokedBy: map[string]int{}, seen: map[string]bool{}, masters: map[string]*masterTally{}}
}

// tally counts a new report against its master's own counts.
func (r *roundStats) tally(from runtime.Addr, tr *proto.TagRound) {
	if tr.Finished == 0 {
		return // a master that keeps no tally
	}
	key := fmt.Sprintf("%s@%d", from.Host(), tr.Since.UnixNano())
	m := r.masters[key]
	if m == nil {
		m = &masterTally{}
		r.masters[key] = m
		r.masterOrder = append(r.masterOrder, key)
	}
	m.received++
	if tr.Outcome == proto.RoundRevoked {
		m.receivedRevoked++
	}
	m.finished, m.revoked = max(m.finished, tr.Finished), max(m.revoked, tr.RevokedSoFar)
}

// lost is how many rounds the masters finished whose reports never came,
// and how many of those they revoked (both as of their latest report).
func (r *roundStats) lost() (rounds, revoked int) {
	for _, k := range r.masterOrder {
		m := r.masters[k]
		rounds += max(int(m.finished)-m.received, 0)
		revoked += max(int(m.revoked)-m.receivedRevoked, 0)
	}
	return rounds, revoked
}

// remember records a round's tag id and reports whether it is new.
func (r *roundStats) remember(id string) bool {
	if r.seen[id] {
		r.duplicates++
		return false
	}
	r.seen[id] = true
	r.seenOrder = append(r.seenOrder, id)
	if len(r.seenOrder) > roundMemory {
		delete(r.seen, r.seenOrder[0])
		r.seenOrder = r.seenOrder[1:]
	}
	return true
}

// tagRound applies a master's report of a finished round. A duplicated
// report (same tag id) changes nothing.
func (s *Server) tagRound(ctx runtime.Context, from runtime.Addr, tr *proto.TagRound) {
	g := s.groups[tr.Group]
	if g == nil || tr.TagID == "" {
		ctx.Log().Warn("configsrv: tag round for an unknown group dropped", "group", tr.Group, "tag", tr.TagID,
			"from", string(from))
		return
	}
	if tr.Outcome != proto.RoundCommitted && tr.Outcome != proto.RoundRevoked {
		ctx.Log().Warn("configsrv: tag round with an unknown outcome dropped", "group", g.name, "tag", tr.TagID,
			"outcome", tr.Outcome)
		return
	}
	r := &g.rounds
	if !r.remember(tr.TagID) {
		return
	}
	r.tally(from, tr)
	now := ctx.Now()
	rs := RoundStatus{TagID: tr.TagID, Kind: tr.Kind, Outcome: tr.Outcome, Reason: tr.Reason, Started: tr.Started,
		Reported: now, Holds: slices.Clone(tr.Holds), Phases: slices.Clone(tr.Phases)}
	r.recent = append(r.recent, rs)
	if len(r.recent) > RecentRounds {
		r.recent = r.recent[len(r.recent)-RecentRounds:]
	}
	byKind := &r.crashHolds
	if tr.Kind == proto.App {
		byKind = &r.appHolds
	}
	for _, h := range tr.Holds {
		r.holds.add(h.Held)
		byKind.add(h.Held)
	}
	if tr.Outcome == proto.RoundCommitted {
		r.committed++
		if tr.Kind == proto.App {
			r.committedApp++
		} else {
			r.committedCrash++
		}
		r.consecutiveRevoked = 0
		r.lastCommitted = now
		g.lastEvidence = now
		s.clear(ctx, AlertMultiVM, g.name)
		return
	}
	r.revoked++
	r.consecutiveRevoked++
	r.lastRevokeReason = tr.Reason
	key := tr.Reason
	if _, ok := r.revokedBy[key]; !ok && len(r.revokedBy) >= MaxRevokeReasons {
		key = ReasonOther
	}
	r.revokedBy[key]++
	ctx.Log().Info("configsrv: group round revoked", "group", g.name, "tag", tr.TagID, "reason", tr.Reason,
		"consecutive", r.consecutiveRevoked)
	s.evalGroupAlert(ctx, g, now)
}

func (r *roundStats) status() GroupStats {
	st := GroupStats{Rounds: r.committed + r.revoked, Committed: r.committed, Revoked: r.revoked,
		CommittedCrash: r.committedCrash, CommittedApp: r.committedApp, ConsecutiveRevoked: r.consecutiveRevoked,
		LastRevokeReason: r.lastRevokeReason, LastCommitted: r.lastCommitted, Duplicates: r.duplicates,
		Holds: r.holds.status(), CrashHolds: r.crashHolds.status(), AppHolds: r.appHolds.status()}
	st.Unreported, st.UnreportedRevoked = r.lost()
	for reason, n := range r.revokedBy {
		st.RevokedBy = append(st.RevokedBy, ReasonCount{Reason: reason, Count: n})
	}
	sort.Slice(st.RevokedBy, func(i, j int) bool { return st.RevokedBy[i].Reason < st.RevokedBy[j].Reason })
	for _, rs := range r.recent {
		rs.Holds = slices.Clone(rs.Holds)
		rs.Phases = slices.Clone(rs.Phases)
		st.Recent = append(st.Recent, rs)
	}
	return st
}
