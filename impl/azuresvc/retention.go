package azuresvc

import (
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// KeepAllFor is how far back every recovery point is kept; older points
// are thinned to the first of each clock hour (as the real service does).
const KeepAllFor = 2 * time.Hour

// prune splits points into those kept and those to delete at now under
// retention (0 = the default policy's): a point older than now−retention is
// deleted; among points older than now−KeepAllFor, only the earliest of each
// clock hour (UTC) is kept. Both results keep the input order.
//
// Applying prune again to what it kept deletes nothing more at the same
// now. Pruning after every new point can keep fewer points than pruning
// once in the one hour that straddles now−retention (its first point may
// expire after the others were thinned away): that hour is on its way out.
func prune(points []Point, now time.Time, retention time.Duration) (keep, drop []Point) {
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
	}
	oldest := now.Add(-retention)
	thinBefore := now.Add(-KeepAllFor)
	first := map[time.Time]int{} // clock hour -> index of its earliest retained point
	for i, p := range points {
		if p.Time.Before(oldest) || !p.Time.Before(thinBefore) {
			continue
		}
		h := p.Time.UTC().Truncate(time.Hour)
		if j, ok := first[h]; !ok || earlier(p, points[j]) {
			first[h] = i
		}
	}
	for i, p := range points {
		switch {
		case p.Time.Before(oldest):
			drop = append(drop, p)
		case p.Time.Before(thinBefore) && first[p.Time.UTC().Truncate(time.Hour)] != i:
			drop = append(drop, p)
		default:
			keep = append(keep, p)
		}
	}
	return keep, drop
}

// earlier orders points by time, then log position, then id, so that ties
// are broken the same way in every run.
func earlier(a, b Point) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	return a.ID < b.ID
}
