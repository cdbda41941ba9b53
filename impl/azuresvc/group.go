package azuresvc

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Multi-VM consistency on the Azure side.
//
// A group point is computed, never applied: it is a function of the
// members' catalogs (the same tag id is a non-revoked point of every
// member), recorded in the group catalog by a separate Op after the
// members' points are made. The per-machine apply path does not wait for
// it. The group is evaluated again whenever a member's catalog changes, a
// PolicyFor arrives, a group Op ends, and at every poll (which also retries
// a failed update), so a lost update, a crash between a member's point and
// the group update, or an ETag conflict only delays the record: a
// restarted service loads the members' catalogs and records what is due.
//
// Membership: the last PolicyFor of any member says who the members are
// (all members get the same list from the configuration server). A
// restarted service takes it from the first member catalog it loads that
// names the group, until a PolicyFor says otherwise. A new group point
// needs a tag id of the group (proto.IsTagOf: per-VM bookmarks and other
// groups' tags never count, whatever the names) that is a point of every
// current member (at least two); a recorded one is dropped as soon as the point of one of ITS members (as recorded) is gone.

// group is the actor's view of one replication group.
type group struct {
	name       string
	members    []string      // current membership, sorted; nil: not known yet
	fromPolicy bool          // members came from a PolicyFor of this incarnation
	cat        *GroupCatalog // nil until loaded
	etag       string
	busy       bool // a group Op is in flight
	held       bool // an attempt failed: wait for the next poll
	recorded   int  // group points this incarnation recorded (and reported)
	dropped    int  // group points this incarnation dropped
	failures   int
	lastErr    string
}

// setting is what a PolicyFor sets for a machine.
type setting struct {
	Policy  proto.Policy
	Group   string
	Members []string // sorted, nil without a group
}

func (st setting) in(c *Catalog) bool {
	return st.Policy == c.Policy && st.Group == c.Group && slices.Equal(st.Members, c.Members)
}

func (st setting) clone() setting {
	st.Members = slices.Clone(st.Members)
	return st
}

// groupSetting checks and normalises a PolicyFor's group part.
func groupSetting(m *proto.PolicyFor) (setting, bool) {
	st := setting{Policy: m.Policy, Group: m.Group}
	if m.Group == "" {
		return st, true
	}
	members := slices.Clone(m.Members)
	slices.Sort(members)
	members = slices.Compact(members)
	if !slices.Contains(members, m.Machine) || len(members) > proto.MaxGroupMembers || slices.Contains(members, "") {
		return st, false
	}
	st.Members = members
	return st, true
}

func (s *Service) group(name string) *group {
	g, ok := s.groups[name]
	if !ok {
		g = &group{name: name}
		s.groups[name] = g
	}
	return g
}

func (s *Service) sortedGroups() []*group {
	names := slices.Sorted(maps.Keys(s.groups))
	out := make([]*group, len(names))
	for i, n := range names {
		out[i] = s.groups[n]
	}
	return out
}

// groupName is the group m belongs to: the one a pending PolicyFor sets,
// else its catalog's; "" for none.
func (s *Service) groupName(m *machine) string {
	switch {
	case m.want != nil:
		return m.want.Group
	case m.cat != nil:
		return m.cat.Group
	}
	return ""
}

// learnMembership takes a group's membership from a loaded member catalog
// when no PolicyFor gave it in this incarnation (first catalog wins).
func (s *Service) learnMembership(m *machine) {
	if m.cat == nil || m.cat.Group == "" {
		return
	}
	g := s.group(m.cat.Group)
	if g.members == nil && !g.fromPolicy && len(m.cat.Members) > 0 {
		g.members = slices.Clone(m.cat.Members)
	}
}

// thinningFor is how m's points are thinned now: with its group's recorded
// group points and those due (complete on every member, not recorded yet).
func (s *Service) thinningFor(m *machine) thinning {
	name := s.groupName(m)
	if name == "" {
		return thinning{}
	}
	pts := map[string]time.Time{}
	if g := s.groups[name]; g != nil && g.cat != nil {
		for _, p := range g.cat.Points {
			pts[p.ID] = p.Time
		}
		if ch, ok := s.groupDelta(g); ok {
			for id := range ch.Drop {
				delete(pts, id)
			}
			for _, p := range ch.Add {
				pts[p.ID] = p.Time
			}
		}
	}
	return groupThinning(name, pts)
}

// groupDelta compares g's catalog with its members' catalogs. ok is false
// while a member's catalog is not loaded (nothing can be decided then).
func (s *Service) groupDelta(g *group) (ch groupChange, ok bool) {
	byMachine := map[string]map[string]Point{}
	pointsOf := func(name string) (map[string]Point, *Catalog) {
		m := s.machines[name]
		if m == nil || m.cat == nil {
			return nil, nil
		}
		if byMachine[name] == nil {
			idx := make(map[string]Point, len(m.cat.Points))
			for _, p := range m.cat.Points {
				idx[p.ID] = p
			}
			byMachine[name] = idx
		}
		return byMachine[name], m.cat
	}
	members := g.members
	if members == nil {
		members = g.cat.Members
	}
	if g.members != nil && !slices.Equal(g.members, g.cat.Members) {
		ch.Members = slices.Clone(g.members)
	}
	ch.Drop = map[string]string{}
	for _, gp := range g.cat.Points {
		for _, mp := range gp.Members {
			pts, cat := pointsOf(mp.Machine)
			if cat == nil {
				return groupChange{}, false
			}
			p, has := pts[gp.ID]
			switch {
			case cat.IsRevoked(gp.ID):
				ch.Drop[gp.ID] = "revoked on " + mp.Machine
			case !has || p.Seq != mp.Seq || !slices.Equal(p.Snapshots, mp.Snapshots):
				ch.Drop[gp.ID] = "pruned on " + mp.Machine
			}
			if _, gone := ch.Drop[gp.ID]; gone {
				break
			}
		}
	}
	if len(members) < 2 {
		return ch, true
	}
	cats := make([]*Catalog, len(members))
	idx := make([]map[string]Point, len(members))
	for i, name := range members {
		idx[i], cats[i] = pointsOf(name)
		if cats[i] == nil {
			return groupChange{}, false
		}
	}
	for _, p := range cats[0].Points {
		if _, rec := g.cat.point(p.ID); rec || !proto.IsTagOf(g.name, p.ID) {
			continue
		}
		gp := GroupPoint{ID: p.ID, Kind: proto.App, Time: p.Time}
		complete := true
		for i, c := range cats {
			q, has := idx[i][p.ID]
			if !has || c.IsRevoked(p.ID) {
				complete = false
				break
			}
			if q.Kind != proto.App {
				gp.Kind = proto.Crash
			}
			if q.Time.Before(gp.Time) {
				gp.Time = q.Time
			}
			gp.Members = append(gp.Members, MemberPoint{Machine: members[i], Seq: q.Seq, Snapshots: slices.Clone(q.Snapshots)})
		}
		if complete {
			ch.Add = append(ch.Add, gp)
		}
	}
	slices.SortFunc(ch.Add, compareGroupPoints)
	return ch, true
}

// ensureMembers starts loading the catalogs of g's machines (current
// members and those of recorded points) that are not loaded, and says
// whether all are.
func (s *Service) ensureMembers(ctx runtime.Context, g *group) bool {
	names := slices.Clone(g.members)
	if g.members == nil {
		names = slices.Clone(g.cat.Members)
	}
	for _, gp := range g.cat.Points {
		for _, mp := range gp.Members {
			names = append(names, mp.Machine)
		}
	}
	slices.Sort(names)
	all := true
	for _, name := range slices.Compact(names) {
		m := s.machine(name)
		if m.cat != nil {
			continue
		}
		all = false
		if !m.busy && !m.held {
			s.kick(ctx, m)
		}
	}
	return all
}

// evalGroups evaluates every group; by is the machine whose change led
// here ("" for none).
func (s *Service) evalGroups(ctx runtime.Context, by string) {
	for _, g := range s.sortedGroups() {
		s.evalGroup(ctx, g, by)
	}
}

// evalGroup loads g's catalog, or records what its members' catalogs say
// is due, if g is idle.
func (s *Service) evalGroup(ctx runtime.Context, g *group, by string) {
	if !s.ready || g.busy || g.held {
		return
	}
	if g.cat == nil {
		s.startGroupLoad(ctx, g)
		return
	}
	if !s.ensureMembers(ctx, g) {
		return
	}
	ch, ok := s.groupDelta(g)
	if !ok || ch.empty(g.cat) {
		return
	}
	if slices.Contains(g.members, by) {
		ch.By = by
	}
	s.startGroupUpdate(ctx, g, ch)
}

func (s *Service) startGroupLoad(ctx runtime.Context, g *group) {
	g.busy = true
	st, name := s.st, g.name
	s.start(ctx, pending{kind: opGroupLoad, group: name}, runtime.Op{Name: "azuresvc-group-load", Run: func(ctx context.Context) (any, error) {
		c, etag, rebuilt, err := loadGroupOrNew(ctx, st.store, st.prefix, name)
		return groupResult{cat: c, etag: etag, rebuilt: rebuilt}, err
	}})
}

func (s *Service) startGroupUpdate(ctx runtime.Context, g *group, ch groupChange) {
	g.busy = true
	st, cat, etag := s.st, g.cat.clone(), g.etag
	s.start(ctx, pending{kind: opGroupUpdate, group: g.name, change: ch}, runtime.Op{Name: "azuresvc-group-update", Run: func(ctx context.Context) (any, error) {
		return updateGroup(ctx, st, cat, etag, ch)
	}})
}

func (s *Service) groupDone(ctx runtime.Context, p pending, ev runtime.Done) {
	g := s.groups[p.group]
	g.busy = false
	r, _ := ev.Value.(groupResult)
	if r.cat != nil {
		g.cat, g.etag = r.cat, r.etag
	} else if p.kind == opGroupUpdate {
		g.cat = nil // unknown outcome: reload
	}
	if ev.Err != nil {
		text := s.scrub(ev.Err.Error())
		g.held, g.failures, g.lastErr = true, g.failures+1, text
		ctx.Log().Error("azuresvc: group catalog update failed, retrying at the next poll", "group", g.name, "err", text)
		return
	}
	switch p.kind {
	case opGroupLoad:
		if g.members == nil {
			g.members = slices.Clone(g.cat.Members)
		}
		if r.rebuilt {
			ctx.Log().Warn("azuresvc: malformed group catalog, rebuilding it from the members' catalogs", "group", g.name)
		}
		ctx.Log().Info("azuresvc: group catalog loaded", "group", g.name, "members", len(g.cat.Members), "points", len(g.cat.Points))
	case opGroupUpdate:
		if r.retries > 0 {
			ctx.Log().Warn("azuresvc: group catalog changed underneath, reloaded", "group", g.name, "conflicts", r.retries)
		}
		for _, id := range r.dropped {
			g.dropped++
			ctx.Log().Info("azuresvc: group recovery point dropped", "group", g.name, "point", id, "reason", p.change.Drop[id])
		}
		for _, gp := range r.added {
			g.recorded++
			ctx.Log().Info("azuresvc: group recovery point", "group", g.name, "point", gp.ID, "kind", gp.Kind, "members", len(gp.Members))
			s.send(ctx, &proto.ReplicaEvent{Machine: p.change.By, Group: g.name, Event: proto.EventGroupPoint,
				PointID: gp.ID, Kind: gp.Kind, PointTime: gp.Time})
		}
		if p.change.Members != nil && slices.Equal(g.cat.Members, p.change.Members) {
			ctx.Log().Info("azuresvc: group members recorded", "group", g.name, "members", len(g.cat.Members))
		}
	}
	// Members wait for their group's catalog before applying (thinning
	// needs it), and their thinning changes with the group's points.
	for _, m := range s.sortedMachines() {
		if s.groupName(m) == g.name {
			s.kick(ctx, m)
		}
	}
	s.evalGroup(ctx, g, "")
}

// GroupStatus is one replication group's multi-VM state.
type GroupStatus struct {
	Group   string
	Members []string // current membership, sorted
	Loaded  bool     // the group catalog was read (the point fields are zero until then)
	Points  int      // recorded group points
	// NewestPoint is the newest group point's time (zero without points),
	// and RPO is Status.Now − NewestPoint (0 without points).
	NewestPoint time.Time
	RPO         time.Duration
	// LatestProcessed is the newest group point (zero ID without points)
	// and LatestApp the newest app-consistent one: the multi-VM failover
	// choices "latest processed" and "latest app-consistent".
	LatestProcessed GroupPoint
	LatestApp       GroupPoint
	Recorded        int    // group points this incarnation recorded (and reported)
	Dropped         int    // group points this incarnation dropped (a member's point revoked or pruned)
	Failures        int    // failed group catalog loads/updates of this incarnation
	LastError       string // the last failure, "" if none
}

func (s *Service) groupStatus() []GroupStatus {
	var out []GroupStatus
	for _, g := range s.sortedGroups() {
		gs := GroupStatus{Group: g.name, Members: slices.Clone(g.members), Loaded: g.cat != nil,
			Recorded: g.recorded, Dropped: g.dropped, Failures: g.failures, LastError: g.lastErr}
		if g.cat != nil {
			if gs.Members == nil {
				gs.Members = slices.Clone(g.cat.Members)
			}
			gs.Points = len(g.cat.Points)
			for _, p := range g.cat.Points { // sorted by time
				gs.LatestProcessed = p.clone()
				if p.Kind == proto.App {
					gs.LatestApp = p.clone()
				}
			}
			if gs.Points > 0 {
				gs.NewestPoint = gs.LatestProcessed.Time
				gs.RPO = s.now.Sub(gs.NewestPoint)
			}
		}
		out = append(out, gs)
	}
	return out
}
