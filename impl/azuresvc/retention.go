package azuresvc

import (
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// KeepAllFor is how far back every recovery point is kept; older points
// are thinned to one per clock hour (as the real service does).
const KeepAllFor = 2 * time.Hour

// thinning says which point hourly thinning keeps in each hour. For a
// machine in no group (the zero thinning) it is the earliest point of the
// hour. For a member of a replication group, group tags come first, so
// that every member keeps the same tag and the group point survives:
//
//  1. recorded group points of the machine's group (Group: id -> the group
//     point's time). They are bucketed and ordered by the group point's
//     time, which is the same on every member, not by the member's own
//     bookmark time, which may fall on the other side of an hour boundary
//     on another member;
//  2. then points whose id is a tag id of the group (proto.TagID) that
//     is not a group point (yet: a lagging member may
//     still complete it);
//  3. then any other point.
//
// Within a rank the earliest wins.
type thinning struct {
	Group    map[string]time.Time
	GroupTag string // the group's name; "" in no group
}

// groupThinning is the thinning of a member of group, with its recorded
// (or due) group points.
func groupThinning(group string, points map[string]time.Time) thinning {
	if group == "" {
		return thinning{}
	}
	return thinning{Group: points, GroupTag: group}
}

// rank is p's preference class (lower is kept first) and the time it is
// bucketed and ordered by.
func (th thinning) rank(p Point) (int, time.Time) {
	if t, ok := th.Group[p.ID]; ok {
		return 0, t
	}
	if proto.IsTagOf(th.GroupTag, p.ID) {
		return 1, p.Time
	}
	return 2, p.Time
}

func (th thinning) hour(p Point) time.Time {
	_, t := th.rank(p)
	return t.UTC().Truncate(time.Hour)
}

// better says whether thinning keeps a rather than b in their hour.
func (th thinning) better(a, b Point) bool {
	ra, ta := th.rank(a)
	rb, tb := th.rank(b)
	if ra != rb {
		return ra < rb
	}
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return earlier(a, b)
}

// prune splits points into those kept and those to delete at now under
// retention (0 = the default policy's): a point older than now−retention is
// deleted; among points older than now−KeepAllFor, one per clock hour
// (UTC) is kept, the one th prefers. Both results keep the input order.
//
// Applying prune again to what it kept deletes nothing more at the same
// now. Pruning after every new point can keep fewer points than pruning
// once in the one hour that straddles now−retention (its first point may
// expire after the others were thinned away): that hour is on its way out.
func prune(points []Point, now time.Time, retention time.Duration, th thinning) (keep, drop []Point) {
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
	}
	oldest := now.Add(-retention)
	thinBefore := now.Add(-KeepAllFor)
	first := map[time.Time]int{} // clock hour -> index of its preferred retained point
	for i, p := range points {
		if p.Time.Before(oldest) || !p.Time.Before(thinBefore) {
			continue
		}
		h := th.hour(p)
		if j, ok := first[h]; !ok || th.better(p, points[j]) {
			first[h] = i
		}
	}
	for i, p := range points {
		switch {
		case p.Time.Before(oldest):
			drop = append(drop, p)
		case p.Time.Before(thinBefore) && first[th.hour(p)] != i:
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
