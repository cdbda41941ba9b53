// Checks of a machine's points over time: monotonic and retention (both ways).

package harness

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/proto"
)

func checkMonotonic(m string, pts []azuresvc.Point) Result {
	r := Result{Check: "monotonic", Subject: m, Verdict: OK, Detail: fmt.Sprintf("%d points", len(pts))}
	seen := map[string]bool{}
	for i, p := range pts {
		if seen[p.ID] {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point id %s appears twice", p.ID)
			return r
		}
		seen[p.ID] = true
		if i > 0 && (p.Seq == pts[i-1].Seq || p.Time.Before(pts[i-1].Time)) {
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
//   - nothing dropped that the policy keeps, judged against made, the
//     record of every point the Azure side reported making (not the
//     catalog itself): every made point of the last azuresvc.KeepAllFor is
//     there, and every clock hour inside the window and beyond the newest
//     two hours in which points were made still has one.
//
// Points the Azure side took away for reasons retention does not decide
// (made[i].Gone: a revoked group round, a lost snapshot) are not owed.
func checkRetention(m string, pts []azuresvc.Point, now time.Time, retention time.Duration, made []madePoint, group bool) Result {
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
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
		}
	}
	// The other way. Every point of the newest two hours is kept: the
	// service prunes at some time <= now, keeping everything at most
	// KeepAllFor older than that. Beyond them, in each clock hour inside
	// the window, thinning keeps the hour's earliest point (for a member
	// of a replication group, the group's tags come first and are
	// bucketed by the group point's time, which may lie a little across
	// the hour from the member's own: there, some point of the hour, give
	// or take the slack, must be kept).
	recent, hours := 0, 0
	seenHour := map[int64]bool{}
	for _, p := range made {
		if p.Gone != "" {
			continue
		}
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			recent++
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s) of the newest %s was made and is gone (the policy keeps every point that recent)", p.ID, p.Kind, p.Time.Format(time.DateTime), azuresvc.KeepAllFor)
				return r
			}
			continue
		}
		if p.Time.Before(now.Add(-retention + retentionSlack)) {
			continue // expired, or about to be
		}
		hs := p.Time.UTC().Truncate(time.Hour)
		h := hs.Unix() / 3600
		if seenHour[h] {
			continue // not the hour's earliest
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
	r.Detail = fmt.Sprintf("window %s; %d points, %d made in the newest %s all kept, %d older hours each with its point", retention, len(pts), recent, azuresvc.KeepAllFor, hours)
	return r
}
