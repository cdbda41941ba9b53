// Checks of a machine's points over time: monotonic and retention (both ways).

package harness

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/proto"
)

// checkMonotonic: points in pointBefore order have non-decreasing times,
// distinct ids, and distinct log positions within a generation.
func checkMonotonic(m string, pts []azuresvc.Point) Result {
	r := Result{Check: "monotonic", Subject: m, Verdict: OK, Detail: fmt.Sprintf("%d points", len(pts))}
	seen := map[string]bool{}
	for i, p := range pts {
		if seen[p.ID] {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point id %s appears twice", p.ID)
			return r
		}
		seen[p.ID] = true
		if i > 0 && (p.Seq == pts[i-1].Seq && p.Gen == pts[i-1].Gen || p.Time.Before(pts[i-1].Time)) {
			r.Verdict = Illegal
			r.Evidence = fmt.Sprintf("point %s (seq %d, %s) follows %s (seq %d, %s)", p.ID, p.Seq, p.Time.Format(time.TimeOnly), pts[i-1].ID, pts[i-1].Seq, pts[i-1].Time.Format(time.TimeOnly))
			return r
		}
	}
	return r
}

// retentionSlack is how late retention may act: a point is pruned when
// the next point arrives or the service next looks, so a point may outlive
// its window by about a crash interval.
const retentionSlack = 10 * time.Minute

// checkRetention checks the catalog's points against the policy both ways:
//
//   - nothing kept too long: no point older than the window (plus slack),
//     and at most one point per clock hour beyond the newest two hours;
//     under continuous protection (a crash interval under
//     azuresvc.ContinuousUnder) also at most one point per whole clock
//     minute older than azuresvc.KeepEveryFor before the newest point (the
//     service pruned when it made that point, so those were thinned);
//   - nothing dropped that the policy keeps, judged against made, the
//     record of every point the Azure side reported making (not the
//     catalog itself): every made point of the newest keep-all span (2 h,
//     or azuresvc.KeepEveryFor under continuous protection; never more
//     than the retention window) is there; under continuous protection,
//     for each whole clock minute of the minute tier, the one point the
//     rule keeps (an app point before a crash point, then the earliest) is
//     there; and every clock hour inside the window and beyond the newest
//     two hours in which points were made still has one (the earliest of
//     the points the minute tier left).
//
// Points the Azure side took away for reasons retention does not decide
// (made[i].Gone: a revoked group round, a lost snapshot) are not owed; a
// minute with such a point is not judged exactly (the rule's choice among
// the others depends on when it went). A member of a replication group
// is judged more loosely: its group's tags come first and are bucketed by
// the group point's time, which the check does not have, so some point of
// each hour, give or take the slack, must be kept, and the minute tier is
// judged only by the not-too-much side.
func checkRetention(m string, pts []azuresvc.Point, now time.Time, pol proto.Policy, made []madePoint, group bool) Result {
	retention := pol.Retention
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
	}
	continuous := pol.CrashInterval > 0 && pol.CrashInterval < azuresvc.ContinuousUnder
	keepAll := azuresvc.KeepAllFor
	if continuous {
		keepAll = azuresvc.KeepEveryFor
	}
	r := Result{Check: "retention", Subject: m, Verdict: OK}
	if len(pts) == 0 {
		r.Verdict, r.Evidence = Unknown, "no points to judge"
		return r
	}
	newest := pts[0].Time
	have := map[string]bool{}
	for _, p := range pts {
		if p.Time.After(newest) {
			newest = p.Time
		}
		have[p.ID] = true
	}
	perHour := map[int64]string{}
	perMinute := map[int64]string{}
	for _, p := range pts {
		if p.Time.Before(now.Add(-retention - retentionSlack)) {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point %s at %s is older than the %s window", p.ID, p.Time.Format(time.DateTime), retention)
			return r
		}
		if p.Time.Before(newest.Add(-azuresvc.KeepAllFor - retentionSlack)) {
			h := p.Time.Unix() / 3600
			if other, ok := perHour[h]; ok {
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("points %s and %s share an hour beyond the newest two hours (not thinned)", other, p.ID)
				return r
			}
			perHour[h] = p.ID
			continue
		}
		if continuous && !p.Time.Truncate(time.Minute).Add(time.Minute).After(newest.Add(-azuresvc.KeepEveryFor)) {
			mi := p.Time.Unix() / 60
			if other, ok := perMinute[mi]; ok {
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("points %s and %s share a minute older than %s (not thinned to one a minute)", other, p.ID, azuresvc.KeepEveryFor)
				return r
			}
			perMinute[mi] = p.ID
		}
	}
	// The other way. Every point of the newest keep-all span is kept: the
	// service prunes at some time <= now, keeping everything at most that
	// much older than that (and inside the window).
	recent, minutes, hours := 0, 0, 0
	allFrom := now.Add(-min(keepAll, retention))
	var older []madePoint // made, live, older than the keep-all span
	for _, p := range made {
		if p.Gone != "" {
			continue
		}
		if !p.Time.Before(allFrom) {
			recent++
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s) of the newest %s was made and is gone (the policy keeps every point that recent)", p.ID, p.Kind, p.Time.Format(time.DateTime), min(keepAll, retention))
				return r
			}
			continue
		}
		older = append(older, p)
	}
	if continuous {
		// The minute tier: a whole clock minute from now−KeepAllFor (and
		// inside the window) up to newest−KeepEveryFor was in the minute
		// tier at the last pruning and at no time in the hour tier: it
		// keeps exactly the rule's point. What the minute tier left is
		// what the hour tier later chooses from.
		gone := map[int64]bool{}
		for _, p := range made {
			if p.Gone != "" {
				gone[p.Time.Unix()/60] = true
			}
		}
		lo := now.Add(-min(azuresvc.KeepAllFor, retention))
		hi := newest.Add(-azuresvc.KeepEveryFor)
		best := map[int64]madePoint{}
		var order []int64
		for _, p := range older {
			mi := p.Time.Unix() / 60
			q, ok := best[mi]
			if !ok {
				order = append(order, mi)
			}
			if !ok || minuteBetter(p, q) {
				best[mi] = p
			}
		}
		var left []madePoint
		for _, mi := range order {
			p := best[mi]
			left = append(left, p)
			start := time.Unix(mi*60, 0)
			if group || gone[mi] || start.Before(lo) || start.Add(time.Minute).After(hi) {
				continue
			}
			minutes++
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s), the one its minute keeps (app first, then the earliest), was made and is gone (the policy keeps one point a minute from %s to %s)", p.ID, p.Kind, p.Time.Format(time.DateTime), azuresvc.KeepEveryFor, azuresvc.KeepAllFor)
				return r
			}
		}
		older = left
	}
	// Beyond the newest two hours, in each clock hour inside the window,
	// thinning keeps the hour's earliest point (for a member of a
	// replication group, the group's tags come first and are bucketed by
	// the group point's time, which may lie a little across the hour from
	// the member's own: there, some point of the hour, give or take the
	// slack, must be kept).
	//
	// An hour from which the Azure side took a point away for a reason
	// retention does not decide (a failover's commit deletes every other
	// point, a revoked round, a lost snapshot) is not judged: that point
	// may have been the one the hour kept, and its others were pruned
	// before — as a minute with such a point is not judged above.
	goneHour := map[int64]bool{}
	for _, p := range made {
		if p.Gone == "" {
			continue
		}
		for _, t := range []time.Time{p.Time, p.Time.Add(-retentionSlack), p.Time.Add(retentionSlack)} {
			if group || t.Equal(p.Time) {
				goneHour[t.UTC().Truncate(time.Hour).Unix()/3600] = true
			}
		}
	}
	seenHour := map[int64]bool{}
	for _, p := range older {
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			continue // the minute tier, judged above
		}
		if p.Time.Before(now.Add(-retention + retentionSlack)) {
			continue // expired, or about to be
		}
		hs := p.Time.UTC().Truncate(time.Hour)
		h := hs.Unix() / 3600
		if seenHour[h] || goneHour[h] {
			continue // not the hour's earliest, or an hour not judged
		}
		seenHour[h] = true
		hours++
		if !group {
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s), the earliest of its hour, was made and is gone (the policy keeps one point an hour for %s)", p.ID, p.Kind, p.Time.Format(time.DateTime), retention)
				return r
			}
			continue
		}
		lo, hi := hs.Add(-retentionSlack), hs.Add(time.Hour+retentionSlack)
		found := false
		for _, q := range pts {
			if !q.Time.Before(lo) && q.Time.Before(hi) {
				found = true
				break
			}
		}
		if !found {
			r.Verdict = Illegal
			r.Evidence = fmt.Sprintf("no point kept for the hour from %s, which had points (e.g. %s): the policy keeps one an hour for %s", hs.Format(time.DateTime), p.ID, retention)
			return r
		}
	}
	r.Detail = fmt.Sprintf("window %s; %d points, %d made in the newest %s all kept, ", retention, len(pts), recent, min(keepAll, retention))
	if continuous {
		r.Detail += fmt.Sprintf("%d minutes each with its point, ", minutes)
	}
	r.Detail += fmt.Sprintf("%d older hours each with its point", hours)
	return r
}

// minuteBetter says whether the minute tier keeps a rather than b: an
// app-consistent point first, then the earliest (ties by id).
func minuteBetter(a, b madePoint) bool {
	if (a.Kind == proto.App) != (b.Kind == proto.App) {
		return a.Kind == proto.App
	}
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	return a.ID < b.ID
}
