package failover

import (
	"cmp"
	"fmt"

	"github.com/v2a-dr/v2a/impl/proto"
)

// usable says whether a point has a snapshot of every disk.
func usable(c *proto.Catalog, p proto.Point) bool { return len(p.Snapshots) == len(c.Disks) }

// newer orders points by generation, then change-log position.
func newer(a, b proto.Point) bool {
	return cmp.Or(cmp.Compare(a.Gen, b.Gen), cmp.Compare(a.Seq, b.Seq)) > 0
}

// newest is the newest usable point (app-consistent only if app).
func newest(c *proto.Catalog, app bool) (proto.Point, bool) {
	var best proto.Point
	found := false
	for _, p := range c.Points {
		if !usable(c, p) || (app && p.Kind != proto.App) {
			continue
		}
		if !found || newer(p, best) {
			best, found = p, true
		}
	}
	return best, found
}

// choose picks each machine's point (its catalog loaded in r.cat).
//
// latest-processed and latest take the newest point (after MakeLatest,
// for latest, that is the point it made, or the newest when nothing was
// pending); latest-app the newest app-consistent one. The multi-VM
// choices put the plan's members of one replication group on the newest
// group tag every one of them has as a point (app-consistent for
// latest-multivm-app), and every other machine on its own newest point.
// custom takes the named point.
func choose(pc proto.PointChoice, runs []*vmRun) (map[string]proto.Point, error) {
	out := map[string]proto.Point{}
	app := pc.Kind == proto.PointLatestApp || pc.Kind == proto.PointLatestMultiVMApp
	if pc.Kind == proto.PointLatestMultiVM || pc.Kind == proto.PointLatestMultiVMApp {
		members := map[string][]*vmRun{}
		var groups []string
		for _, r := range runs {
			if g := r.cat.Group; g != "" {
				if members[g] == nil {
					groups = append(groups, g)
				}
				members[g] = append(members[g], r)
			}
		}
		for _, g := range groups {
			ms := members[g]
			if len(ms) < 2 {
				continue // alone in the plan: its own point
			}
			best, ok := commonTag(g, ms, app)
			if !ok {
				return nil, fmt.Errorf("%w: no %s point common to the members of group %s in the plan", ErrPoint, pc.Kind, g)
			}
			for _, r := range ms {
				p, _ := r.cat.FindPoint(best)
				out[r.machine] = p
			}
		}
	}
	for _, r := range runs {
		if _, done := out[r.machine]; done {
			continue
		}
		var p proto.Point
		var ok bool
		switch pc.Kind {
		case proto.PointCustom:
			p, ok = r.cat.FindPoint(pc.ID)
			ok = ok && usable(r.cat, p)
		default:
			p, ok = newest(r.cat, app)
		}
		if !ok {
			what := "no usable recovery point"
			if app {
				what = "no app-consistent recovery point"
			}
			if pc.Kind == proto.PointCustom {
				what = fmt.Sprintf("no point %q (pruned by retention, or never made)", pc.ID)
			}
			return nil, fmt.Errorf("%w: %s: %s", ErrPoint, r.machine, what)
		}
		out[r.machine] = p
	}
	return out, nil
}

// commonTag is the newest tag of group that every member has as a usable
// point (app-consistent if app), by the tag's round number.
func commonTag(group string, ms []*vmRun, app bool) (string, bool) {
	var best proto.TagID
	var bestID string
	found := false
	for _, p := range ms[0].cat.Points {
		t, err := proto.ParseTagID(p.ID)
		if err != nil || t.Group != group || (app && p.Kind != proto.App) {
			continue
		}
		all := true
		for _, r := range ms {
			q, ok := r.cat.FindPoint(p.ID)
			if !ok || !usable(r.cat, q) || (app && q.Kind != proto.App) {
				all = false
				break
			}
		}
		if all && (!found || t.N > best.N) {
			best, bestID, found = t, p.ID, true
		}
	}
	return bestID, found
}
