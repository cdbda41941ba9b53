package azuresvc

import (
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
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
// current member (at least two); a recorded one is dropped as soon as the
// point of one of ITS members (as recorded) is gone.

// tracker holds every replication group's state and decides what the
// groups need. It is fed what changes — a machine's catalog (observe), a
// PolicyFor (policy), the end of a member's Op (memberDone), the end of a
// group Op (opDone), a listing (listed), a poll (release) — and answers
// with a list of actions that the Service executes in order: start a
// group Op, load a member's catalog, kick the members, log, send. It never
// starts an Op, logs, sends or calls into the Service; its queries
// (thinning, status) change nothing.
//
// The tracker's view of a machine's catalog is what observe last gave it:
// the Service feeds every catalog it adopts, at the moment it adopts it.
type tracker struct {
	groups map[string]*group
	cats   map[string]*Catalog // machine -> its catalog; nil or absent: not loaded
}

// group is the tracker's view of one replication group.
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

// actionKind is what an action asks of the Service.
type actionKind int

const (
	// actLoadMember: load machine's catalog, unless it is loaded, or its
	// machine is busy or held (the Service knows; the tracker does not).
	actLoadMember actionKind = iota + 1
	// actLoadGroup: start the Op that loads group's catalog.
	actLoadGroup
	// actUpdateGroup: start the Op that applies change to group's catalog,
	// stored as cat (a clone, the Op's own) under etag.
	actUpdateGroup
	// actKickMembers: kick every machine of group (a machine waits for
	// its group's catalog before applying, and its thinning follows the
	// group's points).
	actKickMembers
	// actLog: write note.
	actLog
	// actSend: send event to the configuration server.
	actSend
)

// action is one thing the tracker asks the Service to do.
type action struct {
	kind    actionKind
	group   string // actLoadGroup, actUpdateGroup, actKickMembers
	machine string // actLoadMember
	cat     *GroupCatalog
	etag    string
	change  groupChange
	note    note
	event   *proto.ReplicaEvent
}

// groupEnd is the end of a group Op, as the tracker is fed it.
type groupEnd struct {
	group  string
	update bool        // an update Op (else a load)
	change groupChange // update: the change it applied
	result groupResult // the Op's value (also on error)
	failed bool
	err    string // failed: the error's text, scrubbed of the container prefix
}

func newTracker() *tracker {
	return &tracker{groups: map[string]*group{}, cats: map[string]*Catalog{}}
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

// group returns the named group, made (unknown, not loaded) if new.
func (t *tracker) group(name string) *group {
	g, ok := t.groups[name]
	if !ok {
		g = &group{name: name}
		t.groups[name] = g
	}
	return g
}

func (t *tracker) sorted() []*group {
	names := slices.Sorted(maps.Keys(t.groups))
	out := make([]*group, len(names))
	for i, n := range names {
		out[i] = t.groups[n]
	}
	return out
}

// observe records machine's catalog as the Service now holds it (nil: not
// loaded, or unknown after a failed Op). It decides nothing: the groups
// are evaluated when the Op that changed it ends (memberDone).
func (t *tracker) observe(machine string, cat *Catalog) {
	t.cats[machine] = cat
}

// policy records a PolicyFor's membership (st as groupSetting made it).
func (t *tracker) policy(st setting) {
	if st.Group == "" {
		return
	}
	g := t.group(st.Group)
	g.members, g.fromPolicy = slices.Clone(st.Members), true
}

// listed records the groups a listing found a group catalog of.
func (t *tracker) listed(groups []string) {
	for _, name := range groups {
		t.group(name)
	}
}

// anyHeld says whether a group waits for a poll to try again.
func (t *tracker) anyHeld() bool {
	for _, g := range t.groups {
		if g.held {
			return true
		}
	}
	return false
}

// release lets every held group try again (a poll).
func (t *tracker) release() {
	for _, g := range t.groups {
		g.held = false
	}
}

// await is asked before a member of group applies anything: wait says the
// member must wait for the group's catalog (thinning its points needs it),
// and the actions load that catalog if no Op does yet. A group whose
// catalog failed to load does not hold its members up: replication goes
// on, and thinning then prefers the group's tags by their ids only.
func (t *tracker) await(name string) (acts []action, wait bool) {
	g := t.group(name)
	if g.cat != nil || g.held {
		return nil, false
	}
	if !g.busy {
		g.busy = true
		acts = append(acts, action{kind: actLoadGroup, group: g.name})
	}
	return acts, true
}

// memberDone is fed when an Op of machine ends, whatever its outcome (its
// catalog, as observed, may have changed: a point made before a later step
// failed). It learns the membership from the catalog if nothing else gave
// it, and evaluates every group; machine is credited with a group point it
// completed.
func (t *tracker) memberDone(machine string) []action {
	if c := t.cats[machine]; c != nil && c.Group != "" {
		g := t.group(c.Group)
		if g.members == nil && !g.fromPolicy && len(c.Members) > 0 {
			g.members = slices.Clone(c.Members)
		}
	}
	return t.evalAll(machine)
}

// evalAll evaluates every group, in name order; by is the machine whose
// change led here ("" for none).
func (t *tracker) evalAll(by string) []action {
	var acts []action
	for _, g := range t.sorted() {
		acts = append(acts, t.eval(g, by)...)
	}
	return acts
}

// eval loads g's catalog, or the catalogs of its machines, or records what
// its members' catalogs say is due, if g is idle.
func (t *tracker) eval(g *group, by string) []action {
	if g.busy || g.held {
		return nil
	}
	if g.cat == nil {
		g.busy = true
		return []action{{kind: actLoadGroup, group: g.name}}
	}
	if acts := t.unloaded(g); len(acts) > 0 {
		return acts
	}
	ch, ok := t.delta(g)
	if !ok || ch.empty(g.cat) {
		return nil
	}
	if slices.Contains(g.members, by) {
		ch.By = by
	}
	g.busy = true
	return []action{{kind: actUpdateGroup, group: g.name, cat: g.cat.clone(), etag: g.etag, change: ch}}
}

// unloaded asks for the catalogs of g's machines (current members and
// those of recorded points) that are not loaded, in name order.
func (t *tracker) unloaded(g *group) []action {
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
	var acts []action
	for _, name := range slices.Compact(names) {
		if t.cats[name] == nil {
			acts = append(acts, action{kind: actLoadMember, machine: name})
		}
	}
	return acts
}

// opDone is fed the end of a group Op.
func (t *tracker) opDone(end groupEnd) []action {
	g := t.groups[end.group]
	g.busy = false
	r := end.result
	if r.cat != nil {
		g.cat, g.etag = r.cat, r.etag
	} else if end.update {
		g.cat = nil // unknown outcome: reload
	}
	if end.failed {
		g.held, g.failures, g.lastErr = true, g.failures+1, end.err
		return []action{logAction(slog.LevelError, "azuresvc: group catalog update failed, retrying at the next poll", "group", g.name, "err", end.err)}
	}
	var acts []action
	if !end.update {
		if g.members == nil {
			g.members = slices.Clone(g.cat.Members)
		}
		if r.rebuilt {
			acts = append(acts, logAction(slog.LevelWarn, "azuresvc: malformed group catalog, rebuilding it from the members' catalogs", "group", g.name))
		}
		acts = append(acts, logAction(slog.LevelInfo, "azuresvc: group catalog loaded", "group", g.name, "members", len(g.cat.Members), "points", len(g.cat.Points)))
	} else {
		if r.retries > 0 {
			acts = append(acts, logAction(slog.LevelWarn, "azuresvc: group catalog changed underneath, reloaded", "group", g.name, "conflicts", r.retries))
		}
		for _, id := range r.dropped {
			g.dropped++
			acts = append(acts, logAction(slog.LevelInfo, "azuresvc: group recovery point dropped", "group", g.name, "point", id, "reason", end.change.Drop[id]))
		}
		for _, gp := range r.added {
			g.recorded++
			acts = append(acts,
				logAction(slog.LevelInfo, "azuresvc: group recovery point", "group", g.name, "point", gp.ID, "kind", gp.Kind, "members", len(gp.Members)),
				action{kind: actSend, event: &proto.ReplicaEvent{Machine: end.change.By, Group: g.name, Event: proto.EventGroupPoint,
					PointID: gp.ID, Kind: gp.Kind, PointTime: gp.Time}})
		}
		if end.change.Members != nil && slices.Equal(g.cat.Members, end.change.Members) {
			acts = append(acts, logAction(slog.LevelInfo, "azuresvc: group members recorded", "group", g.name, "members", len(g.cat.Members)))
		}
	}
	// Kicking the members changes nothing the tracker holds (g's catalog
	// is loaded, so await passes them; their Ops end later), so g is
	// evaluated now, for after the kicks.
	acts = append(acts, action{kind: actKickMembers, group: g.name})
	return append(acts, t.eval(g, "")...)
}

func logAction(level slog.Level, msg string, args ...any) action {
	return action{kind: actLog, note: note{level: level, msg: msg, args: args}}
}

// thinning is how a member of group (by its name, "" for none) thins its
// points now: with the group's recorded group points and those due
// (complete on every member, not recorded yet).
func (t *tracker) thinning(name string) thinning {
	if name == "" {
		return thinning{}
	}
	pts := map[string]time.Time{}
	if g := t.groups[name]; g != nil && g.cat != nil {
		for _, p := range g.cat.Points {
			pts[p.ID] = p.Time
		}
		if ch, ok := t.delta(g); ok {
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

// delta compares g's catalog with its members' catalogs. ok is false
// while a member's catalog is not loaded (nothing can be decided then).
func (t *tracker) delta(g *group) (ch groupChange, ok bool) {
	byMachine := map[string]map[string]Point{}
	pointsOf := func(name string) (map[string]Point, *Catalog) {
		c := t.cats[name]
		if c == nil {
			return nil, nil
		}
		if byMachine[name] == nil {
			idx := make(map[string]Point, len(c.Points))
			for _, p := range c.Points {
				idx[p.ID] = p
			}
			byMachine[name] = idx
		}
		return byMachine[name], c
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

// status is every group's state, in name order; RPOs are computed at now.
func (t *tracker) status(now time.Time) []GroupStatus {
	var out []GroupStatus
	for _, g := range t.sorted() {
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
				gs.RPO = now.Sub(gs.NewestPoint)
			}
		}
		out = append(out, gs)
	}
	return out
}
