package azuresvc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
)

// policyFor is the configuration server's PolicyFor of a group member (or
// of a machine in no group when group is "").
func policyFor(machine, group string, members ...string) *proto.PolicyFor {
	return &proto.PolicyFor{Machine: machine, Policy: proto.DefaultPolicy(), Group: group, Members: members}
}

// smallSync is a one-disk initial sync.
func smallSync(m *model) []*batch.Item {
	return []*batch.Item{m.syncStart(64 << 10), m.chunk(0, batch.Run{Off: 0, Data: m.data(8192)}), m.syncEnd(1)}
}

// tagged is a Log item of m with a write and then bookmark id.
func tagged(m *model, kind proto.Consistency, id string, at time.Time) *batch.Item {
	return m.log(m.write(0, 4096, m.data(4096)), m.bookmark(kind, id, at))
}

// feed uploads items and hints the service of the last one.
func feed(t testing.TB, d *runtimetest.Driver, store blob.Store, items ...*batch.Item) {
	t.Helper()
	upload(t, store, items...)
	hint(d, items[len(items)-1].Machine, last(items))
}

// groupSetUp makes each machine a synced member of group (no group when
// group is ""), with the PolicyFor of the configuration server.
func groupSetUp(t testing.TB, d *runtimetest.Driver, store blob.Store, group string, machines ...string) map[string]*model {
	t.Helper()
	out := map[string]*model{}
	for _, name := range machines {
		if group != "" {
			d.Receive(csAddr, policyFor(name, group, machines...))
		}
		m := newModel(name)
		feed(t, d, store, smallSync(m)...)
		out[name] = m
	}
	return out
}

// groupEvents are the group-point events among evs, as "group:id", and
// fails the test for a group event of another kind.
func groupEvents(t testing.TB, evs []*proto.ReplicaEvent) []string {
	t.Helper()
	var out []string
	for _, e := range evs {
		if e.Event == proto.EventGroupPoint {
			out = append(out, e.Group+":"+e.PointID)
		} else if e.Group != "" {
			t.Errorf("event %s carries group %s", e.Event, e.Group)
		}
	}
	return out
}

func loadGroup(t testing.TB, store blob.Store, group string) *GroupCatalog {
	t.Helper()
	c, _, err := LoadGroupCatalog(context.Background(), store, testPrefix, group)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func groupIDs(c *GroupCatalog) []string {
	var out []string
	for _, p := range c.Points {
		out = append(out, p.ID)
	}
	return out
}

// checkGroupPoints checks that every group point names, for each of its
// members, exactly that member's point (seq and snapshots).
func checkGroupPoints(t testing.TB, store blob.Store, c *GroupCatalog) {
	t.Helper()
	for _, gp := range c.Points {
		var machines []string
		for _, mp := range gp.Members {
			machines = append(machines, mp.Machine)
			p, ok := loadCatalog(t, store, mp.Machine).FindPoint(gp.ID)
			if !ok {
				t.Errorf("group point %s: %s has no such point", gp.ID, mp.Machine)
				continue
			}
			if p.Seq != mp.Seq || !slices.Equal(p.Snapshots, mp.Snapshots) {
				t.Errorf("group point %s: member %+v, but %s's point is seq %d snapshots %v", gp.ID, mp, mp.Machine, p.Seq, p.Snapshots)
			}
		}
		if !slices.IsSorted(machines) {
			t.Errorf("group point %s: members not sorted: %v", gp.ID, machines)
		}
	}
}

// TestGroupPoint covers how tags on the members of one group become (or
// do not become) a group point. Each case runs on three synced members
// vm1..vm3 of group g1 and uploads its items member by member.
func TestGroupPoint(t *testing.T) {
	t0 := runtimetest.Epoch.Add(time.Minute)
	type step struct {
		machine string
		item    func(m *model) *batch.Item
	}
	tag := func(machine, id string, kind proto.Consistency, at time.Time) step {
		return step{machine, func(m *model) *batch.Item { return tagged(m, kind, id, at) }}
	}
	revoke := func(machine, id string) step {
		return step{machine, func(m *model) *batch.Item { return m.log(m.write(0, 0, m.data(512)), m.revoke(id)) }}
	}
	tests := []struct {
		name       string
		steps      []step
		wantEvents []string          // group-point events, in order
		wantPoints []string          // group catalog at the end
		wantKind   proto.Consistency // of the first group point
		wantBy     string            // Machine of the first group-point event
	}{
		{"every member has the tag", []step{
			tag("vm1", "g1:c:1", proto.Crash, t0),
			tag("vm2", "g1:c:1", proto.Crash, t0.Add(time.Millisecond)),
			tag("vm3", "g1:c:1", proto.Crash, t0.Add(2*time.Millisecond)),
		}, []string{"g1:g1:c:1"}, []string{"g1:c:1"}, proto.Crash, "vm3"},
		{"app tag in a different upload order", []step{
			tag("vm3", "g1:a:1", proto.App, t0),
			tag("vm1", "g1:a:1", proto.App, t0),
			tag("vm2", "g1:a:1", proto.App, t0),
		}, []string{"g1:g1:a:1"}, []string{"g1:a:1"}, proto.App, "vm2"},
		{"kinds differ: crash", []step{
			tag("vm1", "g1:a:7", proto.App, t0),
			tag("vm2", "g1:a:7", proto.Crash, t0),
			tag("vm3", "g1:a:7", proto.App, t0),
		}, []string{"g1:g1:a:7"}, []string{"g1:a:7"}, proto.Crash, "vm3"},
		{"an id on every member that is not a tag of the group", []step{
			tag("vm1", "g2:c:1", proto.Crash, t0),
			tag("vm2", "g2:c:1", proto.Crash, t0),
			tag("vm3", "g2:c:1", proto.Crash, t0),
		}, nil, nil, 0, ""},
		// Per-VM bookmark ids of machines named like the group ("g1-c-9")
		// once read as the group's tags; the TagID format cannot be confused.
		{"per-VM bookmark ids shaped like the group's name", []step{
			tag("vm1", "g1-c-9", proto.Crash, t0),
			tag("vm2", "g1-c-9", proto.Crash, t0),
			tag("vm3", "g1-c-9", proto.Crash, t0),
		}, nil, nil, 0, ""},
		{"tag missing on one member", []step{
			tag("vm1", "g1:c:1", proto.Crash, t0),
			tag("vm2", "g1:c:1", proto.Crash, t0),
			tag("vm3", "vm3-c-9", proto.Crash, t0),
		}, nil, nil, 0, ""},
		{"tag revoked on one member, others made points", []step{
			tag("vm1", "g1:c:1", proto.Crash, t0),
			tag("vm2", "g1:c:1", proto.Crash, t0),
			revoke("vm3", "g1:c:1"),
			tag("vm3", "g1:c:1", proto.Crash, t0), // a late duplicate of the revoked tag
		}, nil, nil, 0, ""},
		{"tag revoked on one member after the group point", []step{
			tag("vm1", "g1:c:1", proto.Crash, t0),
			tag("vm2", "g1:c:1", proto.Crash, t0),
			tag("vm3", "g1:c:1", proto.Crash, t0),
			revoke("vm2", "g1:c:1"),
		}, []string{"g1:g1:c:1"}, nil, proto.Crash, "vm3"},
		{"revoked everywhere, then a good tag", []step{
			tag("vm1", "g1:c:1", proto.Crash, t0),
			tag("vm2", "g1:c:1", proto.Crash, t0),
			tag("vm3", "g1:c:1", proto.Crash, t0),
			revoke("vm1", "g1:c:1"), revoke("vm2", "g1:c:1"), revoke("vm3", "g1:c:1"),
			tag("vm1", "g1:c:2", proto.Crash, t0.Add(5*time.Minute)),
			tag("vm2", "g1:c:2", proto.Crash, t0.Add(5*time.Minute)),
			tag("vm3", "g1:c:2", proto.Crash, t0.Add(5*time.Minute)),
		}, []string{"g1:g1:c:1", "g1:g1:c:2"}, []string{"g1:c:2"}, proto.Crash, "vm3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			d.SetLogger(warnLogger(t))
			ms := groupSetUp(t, d, store, "g1", "vm1", "vm2", "vm3")
			toCS(t, d)
			var evs []*proto.ReplicaEvent
			fed := map[string][]*batch.Item{}
			for _, s := range tt.steps {
				it := s.item(ms[s.machine])
				fed[s.machine] = append(fed[s.machine], it)
				feed(t, d, store, it)
				e, _ := toCS(t, d)
				evs = append(evs, e...)
			}
			// Nothing more comes of polls, a repeated PolicyFor, the
			// same items uploaded again, or a restart.
			d.Advance(3 * DefaultPollEvery)
			d.Receive(csAddr, policyFor("vm1", "g1", "vm1", "vm2", "vm3"))
			for _, name := range []string{"vm1", "vm2", "vm3"} {
				if len(fed[name]) > 0 {
					feed(t, d, store, fed[name]...)
				}
			}
			e, _ := toCS(t, d)
			evs = append(evs, e...)
			d2 := start(t, store)
			d2.Advance(DefaultPollEvery)
			e, _ = toCS(t, d2)
			evs = append(evs, e...)

			if diff := cmp.Diff(tt.wantEvents, groupEvents(t, evs)); diff != "" {
				t.Errorf("group-point events (-want +got):\n%s", diff)
			}
			for _, e := range evs {
				if len(tt.wantEvents) > 0 && e.Event == proto.EventGroupPoint && "g1:"+e.PointID == tt.wantEvents[0] {
					if e.Kind != tt.wantKind || e.Machine != tt.wantBy || !e.PointTime.Equal(t0) {
						t.Errorf("event %+v, want kind %s by %s at %v", e, tt.wantKind, tt.wantBy, t0)
					}
					break
				}
			}
			c := loadGroup(t, store, "g1")
			if diff := cmp.Diff(tt.wantPoints, groupIDs(c)); diff != "" {
				t.Errorf("group points (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"vm1", "vm2", "vm3"}, c.Members); diff != "" {
				t.Errorf("group members (-want +got):\n%s", diff)
			}
			checkGroupPoints(t, store, c)
			for _, m := range ms {
				checkPoints(t, store, m)
				if mc := loadCatalog(t, store, m.machine); mc.Group != "g1" || len(mc.Members) != 3 {
					t.Errorf("%s catalog group %q members %v", m.machine, mc.Group, mc.Members)
				}
			}
			gs := service(d2).Status().Groups
			want := []GroupStatus{{Group: "g1", Members: []string{"vm1", "vm2", "vm3"}, Loaded: true, Points: len(tt.wantPoints)}}
			if len(c.Points) > 0 {
				newest := c.Points[len(c.Points)-1]
				want[0].NewestPoint, want[0].RPO, want[0].LatestProcessed = newest.Time, d2.Now().Sub(newest.Time), newest
				if newest.Kind == proto.App {
					want[0].LatestApp = newest
				}
			}
			if diff := cmp.Diff(want, gs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("group status after a restart (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGroupUpdateRetried: the group catalog update fails after every member
// made its point (as if the service crashed between a member's point and
// the group update); the group point appears at the next poll, or after a
// restart that has only the members' catalogs to go by (no PolicyFor).
func TestGroupUpdateRetried(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			inner := memStore()
			store := &hookStore{Store: inner}
			store.hook = func(op, c, name string) error {
				if op == "Put" && name == groupBlob("g1") {
					return errCrashed
				}
				return nil
			}
			d := start(t, store)
			ms := groupSetUp(t, d, inner, "g1", "vm1", "vm2", "vm3")
			at := runtimetest.Epoch.Add(time.Minute)
			for _, name := range []string{"vm1", "vm2", "vm3"} {
				feed(t, d, inner, tagged(ms[name], proto.Crash, "g1:c:1", at))
			}
			evs, _ := toCS(t, d)
			if got := groupEvents(t, evs); len(got) != 0 {
				t.Fatalf("group events %v while the group catalog cannot be written", got)
			}
			for _, m := range ms {
				checkPoints(t, inner, m)
			}
			if _, _, err := LoadGroupCatalog(context.Background(), inner, testPrefix, "g1"); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("group catalog: %v, want not found", err)
			}
			gs := service(d).Status().Groups
			if len(gs) != 1 || gs[0].Failures == 0 || !strings.Contains(gs[0].LastError, "crashed") || gs[0].Points != 0 {
				t.Fatalf("group status %+v", gs)
			}

			store.mu.Lock()
			store.hook = nil
			store.mu.Unlock()
			if restart {
				d = start(t, inner)
			} else {
				d.Advance(DefaultPollEvery)
			}
			evs, _ = toCS(t, d)
			d.Advance(2 * DefaultPollEvery)
			more, _ := toCS(t, d)
			if diff := cmp.Diff([]string{"g1:g1:c:1"}, groupEvents(t, append(evs, more...))); diff != "" {
				t.Errorf("group-point events (-want +got):\n%s", diff)
			}
			c := loadGroup(t, inner, "g1")
			want := &GroupCatalog{Group: "g1", Members: []string{"vm1", "vm2", "vm3"}, Points: []GroupPoint{{ID: "g1:c:1", Kind: proto.Crash, Time: at}}}
			if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(GroupPoint{}, "Members")); diff != "" {
				t.Errorf("group catalog (-want +got):\n%s", diff)
			}
			checkGroupPoints(t, inner, c)
			if len(c.Points) == 1 && len(c.Points[0].Members) != 3 {
				t.Errorf("group point members %+v", c.Points[0].Members)
			}
		})
	}
}

// TestGroupsDoNotMix: two groups and a machine in none; a tag counts only
// for the group all of whose members have it.
func TestGroupsDoNotMix(t *testing.T) {
	store := memStore()
	d := start(t, store)
	ms := groupSetUp(t, d, store, "g1", "a1", "a2")
	for k, v := range groupSetUp(t, d, store, "g2", "b1", "b2") {
		ms[k] = v
	}
	for k, v := range groupSetUp(t, d, store, "", "solo") {
		ms[k] = v
	}
	toCS(t, d)
	at := runtimetest.Epoch.Add(time.Minute)
	steps := []struct{ id, on string }{
		{"g1:c:1", "a1 a2"},
		{"g2:c:1", "b1 b2"},
		{"shared-1", "a1 b1"},        // one member of each group: nothing
		{"g1:c:2", "a1 a2 b1 solo"},  // g1's; b1 and solo do not matter
		{"g2:c:2", "b1 a1 a2"},       // b2 lacks it: not g2's; every g1 member has it, but it is not g1's tag
		{"everyone-1", "solo a1 b2"}, // nothing
	}
	for i, s := range steps {
		for _, name := range strings.Fields(s.on) {
			feed(t, d, store, tagged(ms[name], proto.Crash, s.id, at.Add(time.Duration(i)*time.Minute)))
		}
	}
	d.Advance(DefaultPollEvery)
	evs, _ := toCS(t, d)
	if diff := cmp.Diff([]string{"g1:g1:c:1", "g2:g2:c:1", "g1:g1:c:2"}, groupEvents(t, evs)); diff != "" {
		t.Errorf("group-point events (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		group   string
		members []string
		points  []string
	}{{"g1", []string{"a1", "a2"}, []string{"g1:c:1", "g1:c:2"}}, {"g2", []string{"b1", "b2"}, []string{"g2:c:1"}}} {
		c := loadGroup(t, store, tc.group)
		if diff := cmp.Diff(tc.members, c.Members); diff != "" {
			t.Errorf("%s members (-want +got):\n%s", tc.group, diff)
		}
		if diff := cmp.Diff(tc.points, groupIDs(c)); diff != "" {
			t.Errorf("%s points (-want +got):\n%s", tc.group, diff)
		}
		for _, gp := range c.Points {
			var got []string
			for _, mp := range gp.Members {
				got = append(got, mp.Machine)
			}
			if diff := cmp.Diff(tc.members, got); diff != "" {
				t.Errorf("%s point %s members (-want +got):\n%s", tc.group, gp.ID, diff)
			}
		}
		checkGroupPoints(t, store, c)
	}
	var groups []string
	for _, g := range service(d).Status().Groups {
		groups = append(groups, g.Group)
	}
	if diff := cmp.Diff([]string{"g1", "g2"}, groups); diff != "" {
		t.Errorf("status groups (-want +got):\n%s", diff)
	}
	for _, m := range ms {
		checkPoints(t, store, m)
	}
}

// TestNoGroupUnaffected: a machine in no group, beside a group, replicates
// exactly as before: the same events, no group fields, no group catalog of
// its own; its points are thinned as before even when their ids look like
// a group's tags.
func TestNoGroupUnaffected(t *testing.T) {
	store := memStore()
	d := start(t, store)
	ms := groupSetUp(t, d, store, "g1", "vm1", "vm2")
	d.Receive(csAddr, policyFor("db01", "")) // a machine in no group
	m := newModel("db01")
	items := stream(m)
	for _, name := range []string{"vm1", "vm2"} {
		feed(t, d, store, tagged(ms[name], proto.Crash, "g1:c:1", runtimetest.Epoch))
		feed(t, d, store, tagged(ms[name], proto.Crash, "db01-c-3", runtimetest.Epoch)) // db01's id too
	}
	toCS(t, d)
	feed(t, d, store, items...)
	evs, _ := toCS(t, d)
	want := []string{"sync-started", "sync-complete", "point:db01-c-3", "point:db01-a-5", "point:db01-c-8", "point:db01-c-10"}
	if diff := cmp.Diff(want, eventNames(evs)); diff != "" {
		t.Errorf("db01 events (-want +got):\n%s", diff)
	}
	c := loadCatalog(t, store, "db01")
	if c.Group != "" || c.Members != nil {
		t.Errorf("db01 catalog group %q members %v", c.Group, c.Members)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
	if diff := cmp.Diff([]string{"g1:c:1"}, groupIDs(loadGroup(t, store, "g1"))); diff != "" {
		t.Errorf("g1 points (-want +got):\n%s", diff)
	}
	cats, err := store.List(context.Background(), catalogContainer(testPrefix), "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range cats {
		names = append(names, it.Name)
	}
	if diff := cmp.Diff([]string{"db01.json", "group-g1.json", "vm1.json", "vm2.json"}, names); diff != "" {
		t.Errorf("catalog blobs (-want +got):\n%s", diff)
	}
	for _, ms := range service(d).Status().Machines {
		if wantG := map[bool]string{true: "g1", false: ""}[ms.Machine != "db01"]; ms.Group != wantG {
			t.Errorf("%s status group %q, want %q", ms.Machine, ms.Group, wantG)
		}
	}

	// Thinning of a machine in no group: the earliest point of the hour,
	// whatever the ids.
	now := time.Date(2026, 1, 2, 12, 30, 0, 0, time.UTC)
	pts := []Point{{ID: "db01-c-1", Time: now.Add(-170 * time.Minute)}, {ID: "g1:c:2", Time: now.Add(-165 * time.Minute)}}
	keep, _ := prune(pts, now, 0, 0, thinning{})
	if len(keep) != 1 || keep[0].ID != "db01-c-1" {
		t.Errorf("no-group thinning kept %v", keep)
	}
}

func TestInvalidGroupIgnored(t *testing.T) {
	many := make([]string, proto.MaxGroupMembers+1)
	for i := range many {
		many[i] = fmt.Sprintf("vm%02d", i)
	}
	tests := []struct {
		name string
		msg  *proto.PolicyFor
	}{
		{"machine not a member", policyFor("vm1", "g1", "vm2", "vm3")},
		{"too many members", policyFor("vm00", "g1", many...)},
		{"empty member name", policyFor("vm1", "g1", "vm1", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			m := newModel(tt.msg.Machine)
			feed(t, d, store, smallSync(m)...)
			d.Receive(csAddr, tt.msg)
			if c := loadCatalog(t, store, tt.msg.Machine); c.Group != "" || c.Members != nil {
				t.Errorf("catalog group %q members %v", c.Group, c.Members)
			}
			if gs := service(d).Status().Groups; len(gs) != 0 {
				t.Errorf("groups %+v", gs)
			}
		})
	}
}

func TestPruneGroupThinning(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 30, 0, 0, time.UTC)
	pt := func(id string, at time.Time) Point { return Point{ID: id, Time: at} }
	h9 := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		points []Point
		group  map[string]time.Time // recorded group points
		keep   []string
	}{
		{"group point preferred to an earlier point", []Point{pt("vm1-c-1", h9.Add(time.Minute)), pt("g1:c:1", h9.Add(3*time.Minute)), pt("g1:c:2", h9.Add(18*time.Minute))},
			map[string]time.Time{"g1:c:1": h9.Add(3 * time.Minute), "g1:c:2": h9.Add(18 * time.Minute)}, []string{"g1:c:1"}},
		{"earliest group point, not earliest tag", []Point{pt("g1:c:1", h9.Add(3*time.Minute)), pt("g1:c:2", h9.Add(18*time.Minute))},
			map[string]time.Time{"g1:c:2": h9.Add(18 * time.Minute)}, []string{"g1:c:2"}},
		{"a tag not (yet) a group point beats other points", []Point{pt("vm1-c-1", h9.Add(time.Minute)), pt("g1:a:1", h9.Add(3*time.Minute))},
			nil, []string{"g1:a:1"}},
		// The member's own time is past the hour; the group time (the
		// earliest member's) is not: bucketed with the group time, so the
		// tag loses to the hour's first group point on every member.
		{"bucketed by the group time", []Point{pt("g1:c:1", h9.Add(3*time.Minute)), pt("g1:c:2", h9.Add(time.Hour+time.Millisecond)), pt("g1:c:3", h9.Add(time.Hour+3*time.Minute))},
			map[string]time.Time{"g1:c:1": h9.Add(3 * time.Minute), "g1:c:2": h9.Add(time.Hour - time.Millisecond), "g1:c:3": h9.Add(time.Hour + 3*time.Minute)},
			[]string{"g1:c:1", "g1:c:3"}},
		// A member named like its group: its own bookmarks ("g1-c-N") are
		// plain points, and the group's tag is kept, not the earliest of them.
		{"a machine named like its group", []Point{pt("g1-c-1", h9.Add(time.Minute)), pt("g1-a-7", h9.Add(2*time.Minute)), pt("g1:c:9", h9.Add(3*time.Minute))},
			nil, []string{"g1:c:9"}},
		{"another group's tags are plain points", []Point{pt("vm1-c-1", h9.Add(time.Minute)), pt("g2:c:1", h9.Add(2*time.Minute))}, nil, []string{"vm1-c-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := groupThinning("g1", tt.group)
			keep, drop := prune(tt.points, now, 24*time.Hour, 0, th)
			var got []string
			for _, p := range keep {
				got = append(got, p.ID)
			}
			if diff := cmp.Diff(tt.keep, got); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
			if len(keep)+len(drop) != len(tt.points) {
				t.Errorf("kept %d + dropped %d of %d", len(keep), len(drop), len(tt.points))
			}
			if _, more := prune(keep, now, 24*time.Hour, 0, th); len(more) != 0 {
				t.Errorf("pruning again drops %d more", len(more))
			}
		})
	}
}

// TestGroupRetentionOverADay replays 26 hours of a three-member group: a
// per-VM crash point every 5 minutes on each member (at :01, :06, ...), a
// group tag every 15 minutes (at :03, :18, :33 and :48, the last one
// app-consistent), each member's clock a millisecond apart, the :03 tag of
// every even hour revoked by all members 5 minutes later, and every third
// hour a tag right on the hour boundary (the first member's clock before
// it, the others' after); every sixth hour all rounds but that last one are
// revoked, so the boundary tag is the hour's only group point and must not
// count for the next hour on the members whose clocks put it there. Then,
// as properties: past the newest two hours
// every member keeps exactly the same points, one group point per hour
// (the hour's first committed tag by the group's time), and the group
// catalog holds exactly those; within the two hours every committed tag is
// a group point; nothing is older than the retention; every group-point
// event is sent once.
func TestGroupRetentionOverADay(t *testing.T) {
	store := memStore()
	d := start(t, store)
	names := []string{"vm1", "vm2", "vm3"}
	ms := groupSetUp(t, d, store, "g1", names...)
	toCS(t, d)
	type tagInfo struct {
		at      time.Time // the group time: the first member's
		kind    proto.Consistency
		revoked bool
	}
	tags := map[string]*tagInfo{}
	events := map[string]int{}
	var revokeNext []string
	begin := d.Now()
	// Apply 10 s after each 5-minute mark, so that the members' copies of
	// a boundary tag pass the two-hour line in the same step (a member
	// bucketing by its own clock would then keep the wrong point).
	d.Advance(10 * time.Second)
	for d.Now().Sub(begin) < 26*time.Hour {
		d.Advance(5 * time.Minute)
		from := d.Now().Add(-5 * time.Minute).Truncate(time.Minute)
		var ids []string
		if from.Minute()%15 == 0 {
			id := fmt.Sprintf("g1:c:%d", from.Unix())
			ti := &tagInfo{at: from.Add(3 * time.Minute), kind: proto.Crash,
				revoked: from.Hour()%6 == 0 || from.Minute() == 0 && from.Hour()%2 == 0}
			if from.Minute() == 45 {
				id, ti.kind = fmt.Sprintf("g1:a:%d", from.Unix()), proto.App
			}
			tags[id] = ti
			ids = append(ids, id)
		}
		if from.Minute() == 55 && from.Hour()%3 == 0 {
			id := fmt.Sprintf("g1:c:%d", from.Unix()+1)
			tags[id] = &tagInfo{at: from.Add(5*time.Minute - time.Millisecond), kind: proto.Crash}
			ids = append(ids, id)
		}
		for i, name := range names {
			m := ms[name]
			recs := []batch.Record{m.write(0, 0, m.data(512))}
			for _, id := range revokeNext {
				recs = append(recs, m.revoke(id))
			}
			recs = append(recs, m.bookmark(proto.Crash, fmt.Sprintf("%s-c-%d", name, m.logSeq+1), from.Add(time.Minute)))
			for _, id := range ids {
				recs = append(recs, m.bookmark(tags[id].kind, id, tags[id].at.Add(time.Duration(i)*time.Millisecond)))
			}
			upload(t, store, m.log(recs...))
		}
		revokeNext = nil
		for _, id := range ids {
			if tags[id].revoked {
				revokeNext = append(revokeNext, id)
			}
		}
		hint(d, "vm1", ms["vm1"].seq)
		evs, _ := toCS(t, d)
		for _, id := range groupEvents(t, evs) {
			events[strings.TrimPrefix(id, "g1:")]++
		}
	}
	d.Advance(DefaultPollEvery)
	evs, _ := toCS(t, d)
	for _, id := range groupEvents(t, evs) {
		events[strings.TrimPrefix(id, "g1:")]++
	}

	now := service(d).Status().Now
	oldest, thinBefore := now.Add(-24*time.Hour), now.Add(-KeepAllFor)
	// Whole hours past the newest two and not straddling the retention
	// limit are settled: they keep exactly their first committed tag.
	lo, hi := oldest.Truncate(time.Hour).Add(time.Hour), thinBefore.Truncate(time.Hour)
	firstOfHour := map[time.Time]string{}
	var recent []string
	for id, ti := range tags {
		if ti.revoked {
			continue
		}
		h := ti.at.Truncate(time.Hour)
		if f, ok := firstOfHour[h]; !ok || ti.at.Before(tags[f].at) {
			firstOfHour[h] = id
		}
		if !ti.at.Before(thinBefore) {
			recent = append(recent, id)
		}
	}
	var settled []string
	for h := lo; h.Before(hi); h = h.Add(time.Hour) {
		settled = append(settled, firstOfHour[h])
	}
	if len(settled) < 20 {
		t.Fatalf("only %d settled hours: the test checks little", len(settled))
	}
	inRange := func(ids []string, from, to time.Time, at func(string) time.Time) []string {
		var out []string
		for _, id := range ids {
			if a := at(id); !a.Before(from) && a.Before(to) {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	slices.Sort(settled)
	slices.Sort(recent)

	gc := loadGroup(t, store, "g1")
	checkGroupPoints(t, store, gc)
	gtime := map[string]time.Time{}
	for _, p := range gc.Points {
		gtime[p.ID] = p.Time
		if ti := tags[p.ID]; ti == nil || ti.revoked || !p.Time.Equal(ti.at) {
			t.Errorf("group point %s at %v is not a committed tag at that time", p.ID, p.Time)
		}
		if p.Time.Before(oldest) {
			t.Errorf("group point %s at %v is older than the retention (%v)", p.ID, p.Time, oldest)
		}
		if wantKind := map[bool]proto.Consistency{true: proto.App, false: proto.Crash}[strings.HasPrefix(p.ID, "g1:a:")]; p.Kind != wantKind {
			t.Errorf("group point %s kind %s", p.ID, p.Kind)
		}
	}
	ids := groupIDs(gc)
	if diff := cmp.Diff(settled, inRange(ids, lo, hi, func(id string) time.Time { return gtime[id] })); diff != "" {
		t.Errorf("group points of the settled hours (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(recent, inRange(ids, thinBefore, now.Add(time.Hour), func(id string) time.Time { return gtime[id] })); diff != "" {
		t.Errorf("group points of the newest two hours (-want +got):\n%s", diff)
	}
	for _, name := range names {
		c := loadCatalog(t, store, name)
		var pids []string
		own := map[string]time.Time{}
		for _, p := range c.Points {
			pids = append(pids, p.ID)
			own[p.ID] = p.Time
			if p.Time.Before(oldest) {
				t.Errorf("%s point %s at %v is older than the retention", name, p.ID, p.Time)
			}
		}
		// Bucket with the group time for tags (a member's own time may be
		// past the hour), the own time for the rest.
		at := func(id string) time.Time {
			if ti := tags[id]; ti != nil {
				return ti.at
			}
			return own[id]
		}
		if diff := cmp.Diff(settled, inRange(pids, lo, hi, at)); diff != "" {
			t.Errorf("%s points of the settled hours (-want +got):\n%s", name, diff)
		}
		checkNoOrphans(t, store, c)
	}
	for id, n := range events {
		if n != 1 {
			t.Errorf("group point %s reported %d times", id, n)
		}
	}
	for _, id := range ids {
		if events[id] != 1 {
			t.Errorf("group point %s reported %d times", id, events[id])
		}
	}
	gs := service(d).Status().Groups
	if len(gs) != 1 || gs[0].Points != len(gc.Points) || gs[0].LatestProcessed.ID != ids[len(ids)-1] ||
		!strings.HasPrefix(gs[0].LatestApp.ID, "g1:a:") || gs[0].LatestApp.Time.Before(now.Add(-time.Hour-15*time.Minute)) {
		t.Errorf("group status %+v", gs)
	}
}

// TestGroupCatalogRecovers: a malformed group catalog is rebuilt from the
// members' catalogs, and a group catalog changed underneath (ETag
// conflict) is reloaded and the update applied again.
func TestGroupCatalogRecovers(t *testing.T) {
	at := runtimetest.Epoch.Add(time.Minute)
	tests := []struct {
		name string
		// before runs with the service stopped, after every member made
		// its point; it returns a hook for the new service's store.
		before func(t *testing.T, inner blob.Store) func(op, c, name string) error
	}{
		{"malformed", func(t *testing.T, inner blob.Store) func(op, c, name string) error {
			if _, err := inner.Put(context.Background(), catalogContainer(testPrefix), groupBlob("g1"), []byte("{not json"), blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{"another group's catalog in its place", func(t *testing.T, inner blob.Store) func(op, c, name string) error {
			if _, err := inner.Put(context.Background(), catalogContainer(testPrefix), groupBlob("g1"), []byte(`{"group":"g9"}`), blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{"changed underneath before the update", func(t *testing.T, inner blob.Store) func(op, c, name string) error {
			conflicts := 0
			return func(op, c, name string) error {
				if op == "Put" && name == groupBlob("g1") && conflicts < 2 {
					conflicts++
					// Another writer rewrites the same content: a new ETag.
					data, _, err := inner.Get(context.Background(), c, name, blob.ReadOptions{})
					if errors.Is(err, blob.ErrNotFound) {
						data = []byte(`{"group":"g1","members":["vm1","vm2","vm3"],"points":[]}`)
					} else if err != nil {
						return err
					}
					if _, err := inner.Put(context.Background(), c, name, data, blob.WriteOptions{}); err != nil {
						return err
					}
				}
				return nil
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := memStore()
			off := &hookStore{Store: inner, hook: func(op, c, name string) error {
				if name == groupBlob("g1") {
					return errCrashed // the first service never writes the group catalog
				}
				return nil
			}}
			d := start(t, off)
			ms := groupSetUp(t, d, inner, "g1", "vm1", "vm2", "vm3")
			for _, name := range []string{"vm1", "vm2", "vm3"} {
				feed(t, d, inner, tagged(ms[name], proto.Crash, "g1:c:1", at))
			}
			store := &hookStore{Store: inner, hook: tt.before(t, inner)}
			d2 := start(t, store)
			d2.SetLogger(warnLogger(t))
			evs, _ := toCS(t, d2)
			if diff := cmp.Diff([]string{"g1:g1:c:1"}, groupEvents(t, evs)); diff != "" {
				t.Errorf("group-point events (-want +got):\n%s", diff)
			}
			c := loadGroup(t, inner, "g1")
			if diff := cmp.Diff([]string{"g1:c:1"}, groupIDs(c)); diff != "" {
				t.Errorf("group points (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"vm1", "vm2", "vm3"}, c.Members); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			checkGroupPoints(t, inner, c)
			if gs := service(d2).Status().Groups; len(gs) != 1 || gs[0].Failures != 0 || gs[0].Points != 1 {
				t.Errorf("group status %+v", gs)
			}
		})
	}
}

// actionText is a for-tests text of a tracker action.
func actionText(a action) string {
	switch a.kind {
	case actLoadMember:
		return "load-member " + a.machine
	case actLoadGroup:
		return "load-group " + a.group
	case actUpdateGroup:
		ch := a.change
		drops := slices.Sorted(maps.Keys(ch.Drop))
		for i, id := range drops {
			drops[i] = id + " (" + ch.Drop[id] + ")"
		}
		var adds []string
		for _, p := range ch.Add {
			var ms []string
			for _, m := range p.Members {
				ms = append(ms, fmt.Sprintf("%s@%d", m.Machine, m.Seq))
			}
			adds = append(adds, fmt.Sprintf("%s %s %v", p.ID, p.Kind, ms))
		}
		return fmt.Sprintf("update-group %s members=%v add=%v drop=%v by=%q", a.group, ch.Members, adds, drops, ch.By)
	case actKickMembers:
		return "kick-members " + a.group
	case actLog:
		return fmt.Sprintf("log %s %s", a.note.level, a.note.msg)
	case actSend:
		e := a.event
		return fmt.Sprintf("send %s %s %s %s by=%q", e.Event, e.Group, e.PointID, e.Kind, e.Machine)
	}
	return fmt.Sprintf("unknown action %d", a.kind)
}

// trackerCat is a member's catalog with points (each with one snapshot
// named after the machine and the point) and revoked ids.
func trackerCat(machine, group string, members []string, revoked []string, points ...Point) *Catalog {
	c := newCatalog(machine)
	c.Group, c.Members, c.Revoked = group, members, revoked
	for _, p := range points {
		p.Snapshots = []string{machine + "@" + p.ID}
		c.Points = append(c.Points, p)
	}
	return c
}

// TestTracker feeds the group tracker catalog changes, PolicyFors and Op
// ends, and checks the actions it answers with, step by step. Each case
// runs on a fresh tracker; the last update action a step returned is
// what the next "update done" step applies.
func TestTracker(t *testing.T) {
	t0 := runtimetest.Epoch.Add(time.Minute)
	tag1 := proto.TagID{Group: "g1", Kind: proto.Crash, N: 1}.String()
	tag2 := proto.TagID{Group: "g1", Kind: proto.App, N: 2}.String()
	other := proto.TagID{Group: "g2", Kind: proto.Crash, N: 1}.String()
	perVM := proto.BookmarkID("g1", proto.Crash, 1) // a per-VM bookmark of a machine named like the group
	pt := func(id string, kind proto.Consistency, at time.Time, seq uint64) Point {
		return Point{ID: id, Kind: kind, Time: at, Seq: seq}
	}
	both := []string{"vm1", "vm2"}
	type state struct {
		tr   *tracker
		last action // the last update action returned
	}
	type step struct {
		name string
		do   func(s *state) []action
		want []string
	}
	observe := func(machine string, c *Catalog) step {
		return step{name: "observe+done " + machine, do: func(s *state) []action {
			s.tr.observe(machine, c)
			return s.tr.memberDone(machine)
		}}
	}
	policy := func(machine string, members ...string) step {
		return step{name: "policy " + machine, do: func(s *state) []action {
			st, ok := groupSetting(policyFor(machine, "g1", members...))
			if !ok {
				t.Fatalf("policy of %s refused", machine)
			}
			s.tr.policy(st)
			return s.tr.evalAll("")
		}}
	}
	loaded := func(cat *GroupCatalog) step {
		return step{name: "load done", do: func(s *state) []action {
			return s.tr.opDone(groupEnd{group: "g1", result: groupResult{cat: cat, etag: "e1"}})
		}}
	}
	updated := step{name: "update done", do: func(s *state) []action {
		next, added, dropped := s.last.change.applyTo(s.last.cat)
		return s.tr.opDone(groupEnd{group: "g1", update: true, change: s.last.change,
			result: groupResult{cat: next, etag: "e2", added: added, dropped: dropped}})
	}}
	updateFailed := step{name: "update failed", do: func(s *state) []action {
		return s.tr.opDone(groupEnd{group: "g1", update: true, change: s.last.change, failed: true, err: "503"})
	}}
	want := func(st step, w ...string) step { st.want = w; return st }
	loadedMsgs := []string{"log INFO azuresvc: group catalog loaded", "kick-members g1"}

	tests := []struct {
		name  string
		steps []step
	}{
		{"a tag on every member makes a group point", []step{
			want(policy("vm1", both...), "load-group g1"),
			want(observe("vm1", trackerCat("vm1", "g1", both, nil, pt(tag1, proto.App, t0, 5)))), // busy: the load is in flight
			want(loaded(&GroupCatalog{Group: "g1"}), append(loadedMsgs, "load-member vm2")...),
			want(observe("vm2", trackerCat("vm2", "g1", both, nil, pt(tag1, proto.Crash, t0.Add(-time.Second), 7))),
				`update-group g1 members=[vm1 vm2] add=[g1:c:1 crash [vm1@5 vm2@7]] drop=[] by="vm2"`),
			want(updated,
				"log INFO azuresvc: group recovery point",
				`send group-point g1 g1:c:1 crash by="vm2"`,
				"log INFO azuresvc: group members recorded",
				"kick-members g1"),
			want(observe("vm1", trackerCat("vm1", "g1", both, nil, pt(tag1, proto.App, t0, 5)))), // nothing new
		}},
		{"per-VM bookmarks, other groups' tags and a tag one member lacks make none", []step{
			want(policy("vm1", both...), "load-group g1"),
			want(loaded(&GroupCatalog{Group: "g1", Members: both}), append(loadedMsgs, "load-member vm1", "load-member vm2")...),
			want(observe("vm1", trackerCat("vm1", "g1", both, nil, pt(perVM, proto.Crash, t0, 1), pt(other, proto.Crash, t0, 2), pt(tag1, proto.Crash, t0, 3))),
				"load-member vm2"),
			want(observe("vm2", trackerCat("vm2", "g1", both, nil, pt(perVM, proto.Crash, t0, 1), pt(other, proto.Crash, t0, 2)))),
			want(observe("vm2", trackerCat("vm2", "g1", both, []string{tag1}, pt(perVM, proto.Crash, t0, 1)))), // revoked there
		}},
		{"a recorded point goes when a member revokes or prunes it", []step{
			want(observe("vm1", trackerCat("vm1", "g1", both, []string{tag1}, pt(tag2, proto.App, t0, 9))), "load-group g1"),
			want(loaded(&GroupCatalog{Group: "g1", Members: both, Points: []GroupPoint{
				{ID: tag1, Kind: proto.Crash, Time: t0, Members: []MemberPoint{{"vm1", 5, []string{"vm1@" + tag1}}, {"vm2", 7, []string{"vm2@" + tag1}}}},
				{ID: tag2, Kind: proto.App, Time: t0, Members: []MemberPoint{{"vm1", 9, []string{"vm1@" + tag2}}, {"vm2", 8, []string{"vm2@" + tag2}}}},
			}}), "log INFO azuresvc: group catalog loaded", "kick-members g1", "load-member vm2"),
			want(observe("vm2", trackerCat("vm2", "g1", both, nil, pt(tag1, proto.Crash, t0, 7))),
				`update-group g1 members=[] add=[] drop=[g1:a:2 (pruned on vm2) g1:c:1 (revoked on vm1)] by="vm2"`),
			want(updated,
				"log INFO azuresvc: group recovery point dropped",
				"log INFO azuresvc: group recovery point dropped",
				"kick-members g1"),
		}},
		{"a failed update holds the group until a poll releases it", []step{
			want(policy("vm1", both...), "load-group g1"),
			want(loaded(&GroupCatalog{Group: "g1"}), append(loadedMsgs, "load-member vm1", "load-member vm2")...),
			want(observe("vm1", trackerCat("vm1", "g1", both, nil)), "load-member vm2"),
			want(observe("vm2", trackerCat("vm2", "g1", both, nil)), `update-group g1 members=[vm1 vm2] add=[] drop=[] by="vm2"`),
			want(updateFailed, "log ERROR azuresvc: group catalog update failed, retrying at the next poll"),
			want(observe("vm1", trackerCat("vm1", "g1", both, nil))), // held
			want(step{name: "poll", do: func(s *state) []action { s.tr.release(); return s.tr.evalAll("") }}, "load-group g1"),
		}},
		{"a member waits for its group's catalog, not for a failed one", []step{
			want(step{name: "await", do: func(s *state) []action {
				acts, wait := s.tr.await("g1")
				if !wait {
					t.Error("await did not wait for an unloaded group catalog")
				}
				return acts
			}}, "load-group g1"),
			want(step{name: "await again", do: func(s *state) []action {
				acts, wait := s.tr.await("g1")
				if !wait {
					t.Error("await did not wait while the group catalog loads")
				}
				return acts
			}}),
			want(step{name: "load failed", do: func(s *state) []action {
				return s.tr.opDone(groupEnd{group: "g1", failed: true, err: "503"})
			}}, "log ERROR azuresvc: group catalog update failed, retrying at the next poll"),
			want(step{name: "await when held", do: func(s *state) []action {
				acts, wait := s.tr.await("g1")
				if wait {
					t.Error("await waits for a group catalog that failed to load")
				}
				return acts
			}}),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &state{tr: newTracker()}
			for i, st := range tc.steps {
				acts := st.do(s)
				var got []string
				for _, a := range acts {
					got = append(got, actionText(a))
					if a.kind == actUpdateGroup {
						s.last = a
					}
				}
				if diff := cmp.Diff(st.want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("step %d (%s): actions (-want +got):\n%s", i, st.name, diff)
				}
			}
		})
	}
}
