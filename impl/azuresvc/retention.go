package azuresvc

import (
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// KeepAllFor is how far back every recovery point is kept under a crash
// interval of ContinuousUnder or more (ASR's 5 minutes by default); older
// points are thinned to one per clock hour (as the real service does).
const KeepAllFor = 2 * time.Hour

// Continuous protection (a crash interval under ContinuousUnder, down to
// proto.MinCrashInterval) makes a point every few seconds: 720 an hour at
// 5 s. Keeping them all for KeepAllFor would hold 1,440 snapshots per disk,
// so thinning has three tiers there, by the point's age at the time of
// pruning:
//
//	newer than KeepEveryFor (15 min)      every point
//	KeepEveryFor .. KeepAllFor (2 h)      one per clock minute
//	KeepAllFor .. the retention window    one per clock hour
//
// which bounds a machine at 5 s to 180 + 105 + one an hour (about 307
// points at the default 24 h) instead of 17,280. In the minute tier an
// app-consistent point is preferred to a crash-consistent one (so an app
// point that falls in the same minute as a crash point survives), after
// the group ranks of thinning; the hour tier is the same as under the
// default interval. Under an interval of ContinuousUnder or more there is
// no minute tier: every point of the newest KeepAllFor is kept, as before.
const (
	ContinuousUnder = time.Minute
	KeepEveryFor    = 15 * time.Minute
)

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

// better says whether thinning keeps a rather than b in their bucket;
// byKind (the minute tier) prefers an app-consistent point to a
// crash-consistent one of the same group rank.
func (th thinning) better(a, b Point, byKind bool) bool {
	ra, ta := th.rank(a)
	rb, tb := th.rank(b)
	if ra != rb {
		return ra < rb
	}
	if byKind && (a.Kind == proto.App) != (b.Kind == proto.App) {
		return a.Kind == proto.App
	}
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return earlier(a, b)
}

// tier is a point's thinning tier at pruning time.
type tier int

const (
	tierAll    tier = iota // kept
	tierMinute             // one per clock minute
	tierHour               // one per clock hour
	tierGone               // past the retention window
)

// prune splits points into those kept and those to delete at now under
// retention (0 = the default policy's) and the policy's crash interval
// crashEvery (which decides whether there is a minute tier: see
// ContinuousUnder): a point older than now−retention is deleted; in the
// minute and hour tiers, one point per clock minute or hour (UTC) is kept,
// the one th prefers. Both results keep the input order.
//
// Applying prune again to what it kept deletes nothing more at the same
// now. Pruning after every new point can keep fewer points than pruning
// once in the one hour that straddles now−retention (its first point may
// expire after the others were thinned away): that hour is on its way out.
func prune(points []Point, now time.Time, retention, crashEvery time.Duration, th thinning) (keep, drop []Point) {
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
	}
	oldest := now.Add(-retention)
	hourBefore := now.Add(-KeepAllFor)
	minuteBefore := hourBefore
	if crashEvery > 0 && crashEvery < ContinuousUnder {
		minuteBefore = now.Add(-KeepEveryFor)
	}
	tierOf := func(p Point) tier {
		switch {
		case p.Time.Before(oldest):
			return tierGone
		case p.Time.Before(hourBefore):
			return tierHour
		case p.Time.Before(minuteBefore):
			return tierMinute
		}
		return tierAll
	}
	type bucket struct {
		tier tier
		at   time.Time
	}
	bucketOf := func(p Point, t tier) bucket {
		_, at := th.rank(p)
		if t == tierMinute {
			return bucket{t, at.UTC().Truncate(time.Minute)}
		}
		return bucket{t, at.UTC().Truncate(time.Hour)}
	}
	first := map[bucket]int{} // bucket -> index of its preferred retained point
	for i, p := range points {
		t := tierOf(p)
		if t != tierMinute && t != tierHour {
			continue
		}
		b := bucketOf(p, t)
		if j, ok := first[b]; !ok || th.better(p, points[j], t == tierMinute) {
			first[b] = i
		}
	}
	for i, p := range points {
		switch t := tierOf(p); t {
		case tierGone:
			drop = append(drop, p)
		case tierMinute, tierHour:
			if first[bucketOf(p, t)] != i {
				drop = append(drop, p)
				continue
			}
			keep = append(keep, p)
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
