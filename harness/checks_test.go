package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
	"github.com/v2a-dr/v2a/sim/sched"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// history is a machine with a recorded write history and the images after
// any subset of it.
type history struct {
	m      *disk.Machine
	init   []byte
	writes [][2]any // off, data
}

type seqs struct{ n uint64 }

func (s *seqs) Capture(int, int64, []byte) uint64 { s.n++; return s.n }

func newHistory(t *testing.T) *history {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d-flat.vmdk")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := disk.Open("vm", []string{p}, func() time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.SetFilter(&seqs{})
	h := &history{m: m, init: make([]byte, 64<<10)}
	for i := 0; i < 6; i++ {
		off, data := int64(i%3)*4096, bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if err := m.Write(0, off, data); err != nil {
			t.Fatal(err)
		}
		h.writes = append(h.writes, [2]any{off, data})
	}
	return h
}

func (h *history) image(order ...int) []io.ReaderAt {
	b := append([]byte(nil), h.init...)
	for _, i := range order {
		copy(b[h.writes[i][0].(int64):], h.writes[i][1].([]byte))
	}
	return []io.ReaderAt{bytes.NewReader(b)}
}

// TestJudgePoint is the write-order and durability check with its negative
// controls: a point must be exactly the writes logged before its bookmark.
func TestJudgePoint(t *testing.T) {
	h := newHistory(t)
	o := h.m.Oracle()
	// Writes got log seqs 1..6; a bookmark at seq 5 follows writes 1-4.
	tests := []struct {
		name  string
		img   []io.ReaderAt
		want  Verdict
		about string
	}{
		{"exact prefix", h.image(0, 1, 2, 3), OK, "k=4"},
		// Write 4 (block 1) applied without write 2 (block 2), which
		// came before it: no prefix of the history looks like that.
		{"reordered writes", h.image(0, 1, 3, 4), Illegal, "no prefix"},
		{"acknowledged write missing", h.image(0, 1, 2), Illegal, "durability"},
		{"a write from after the bookmark", h.image(0, 1, 2, 3, 4), Illegal, "durability"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := judgePoint(o, "vm@p", 5, tt.img, nil)
			if r.Verdict != tt.want {
				t.Fatalf("verdict %s, want %s: %s", r.Verdict, tt.want, r)
			}
			if tt.want != OK && r.Evidence == "" {
				t.Fatal("an ILLEGAL verdict without evidence")
			}
			if tt.want == OK && r.Detail != tt.about {
				t.Fatalf("detail %q, want %q", r.Detail, tt.about)
			}
		})
	}
}

func pt(id, kind string, min int, seq uint64) azuresvc.Point {
	k, err := proto.ParseConsistency(kind)
	if err != nil {
		panic(err)
	}
	return azuresvc.Point{ID: id, Kind: k, Time: sched.Epoch.Add(time.Duration(min) * time.Minute), Seq: seq}
}

// schedNow is "now" for the schedule cases: every point is in the newest
// two hours except where a case says otherwise.
var schedNow = sched.Epoch.Add(4*time.Hour + 30*time.Minute)

func TestCatalogChecks(t *testing.T) {
	pol := proto.DefaultPolicy()
	good := []azuresvc.Point{pt("c1", "crash", 155, 10), pt("c2", "crash", 160, 20), pt("a1", "app", 165, 30), pt("c3", "crash", 170, 40)}
	if r := checkMonotonic("vm", good); r.Verdict != OK {
		t.Fatalf("monotonic on good points: %s", r)
	}
	if r := checkSchedule("vm", good, pol, schedNow); r.Verdict != OK {
		t.Fatalf("schedule on good points: %s", r)
	}
	// Hourly thinning beyond the newest two hours is no schedule gap.
	thinned := []azuresvc.Point{pt("a0", "app", 0, 1), pt("a1", "app", 60, 2), pt("a2", "app", 120, 3)}
	for i := 0; i <= 24; i++ {
		thinned = append(thinned, pt(fmt.Sprintf("c%d", i), "crash", 125+5*i, uint64(10+i)))
	}
	thinned = append(thinned, pt("a3", "app", 180, 9), pt("a4", "app", 240, 99))
	sort.Slice(thinned, func(i, j int) bool { return thinned[i].Time.Before(thinned[j].Time) })
	for i := range thinned {
		thinned[i].Seq = uint64(i + 1)
	}
	if r := checkSchedule("vm", thinned, pol, sched.Epoch.Add(4*time.Hour+5*time.Minute)); r.Verdict != OK {
		t.Fatalf("schedule on thinned points: %s", r)
	}
	// A resync (a new generation) makes no points until the replica is
	// whole: a gap across it is counted, not judged; the same gap inside
	// one generation is a failure.
	resync := []azuresvc.Point{pt("c1", "crash", 155, 10), pt("c2", "crash", 160, 20), pt("c3", "crash", 175, 30), pt("c4", "crash", 180, 40)}
	for i := range resync {
		resync[i].Gen = uint64(1 + i/2)
	}
	if r := checkSchedule("vm", resync, pol, schedNow); r.Verdict != OK || !strings.Contains(r.Detail, "across a resync") {
		t.Fatalf("schedule across a resync: %s", r)
	}
	resync[2].Gen, resync[3].Gen = 1, 1
	if r := checkSchedule("vm", resync, pol, schedNow); r.Verdict != Illegal {
		t.Fatalf("a 15-minute gap inside one generation passed: %s", r)
	}
	// A machine crash loses the bookmarks its filter held in memory: a gap
	// across one is counted, not judged; the same gap with the crash
	// before it (or none) is a failure.
	c2, c3 := resync[1].Time, resync[2].Time
	if r := checkSchedule("vm", resync, pol, schedNow, c2.Add(time.Minute)); r.Verdict != OK || !strings.Contains(r.Detail, "across a machine crash") {
		t.Fatalf("schedule across a machine crash: %s", r)
	}
	if r := checkSchedule("vm", resync, pol, schedNow, c2.Add(-time.Minute), c3.Add(time.Minute)); r.Verdict != Illegal {
		t.Fatalf("a 15-minute gap with the machine crashes outside it passed: %s", r)
	}
	now := sched.Epoch.Add(time.Hour)
	if r := checkRetention("vm", good, now, pol, madeOf(good), false); r.Verdict != OK {
		t.Fatalf("retention on good points: %s", r)
	}
	// Negative controls: each breaks one property.
	bad := []struct {
		name  string
		check func() Result
	}{
		{"time goes back", func() Result {
			return checkMonotonic("vm", []azuresvc.Point{pt("c1", "crash", 10, 10), pt("c2", "crash", 5, 20)})
		}},
		{"duplicate id", func() Result {
			return checkMonotonic("vm", []azuresvc.Point{pt("c1", "crash", 5, 10), pt("c1", "crash", 10, 20)})
		}},
		{"same log position twice", func() Result {
			return checkMonotonic("vm", []azuresvc.Point{pt("c1", "crash", 5, 10), pt("c2", "crash", 10, 10)})
		}},
		{"a 12-minute gap", func() Result {
			return checkSchedule("vm", []azuresvc.Point{pt("c1", "crash", 155, 10), pt("c2", "crash", 167, 20)}, pol, schedNow)
		}},
		{"no app point in 2 hours", func() Result {
			var ps []azuresvc.Point
			for i := 0; i <= 24; i++ {
				ps = append(ps, pt("c"+string(rune('a'+i)), "crash", 150+5*i, uint64(i+1)))
			}
			return checkSchedule("vm", ps, pol, schedNow)
		}},
		{"no points at all", func() Result { return checkSchedule("vm", nil, pol, schedNow) }},
		{"no point in the newest two hours", func() Result {
			return checkSchedule("vm", []azuresvc.Point{pt("c1", "crash", 5, 1)}, pol, schedNow)
		}},
		{"a gap inside the newest two hours", func() Result {
			return checkSchedule("vm", []azuresvc.Point{pt("a0", "app", 0, 1), pt("c1", "crash", 200, 2), pt("a1", "app", 230, 3), pt("c2", "crash", 240, 4), pt("c3", "crash", 255, 5)}, pol, schedNow)
		}},
		{"older than the window", func() Result {
			return checkRetention("vm", []azuresvc.Point{pt("c1", "crash", 0, 1), pt("c2", "crash", 60*30, 2)}, sched.Epoch.Add(30*time.Hour), proto.DefaultPolicy(), nil, false)
		}},
		{"not thinned beyond two hours", func() Result {
			return checkRetention("vm", []azuresvc.Point{pt("c1", "crash", 5, 1), pt("c2", "crash", 10, 2), pt("c3", "crash", 6*60, 3)}, sched.Epoch.Add(6*time.Hour), proto.DefaultPolicy(), nil, false)
		}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.check()
			if r.Verdict != Illegal || r.Evidence == "" {
				t.Fatalf("broken points passed: %s", r)
			}
		})
	}
}

// madeOf is a record of making exactly these points.
func madeOf(pts []azuresvc.Point) []madePoint {
	var out []madePoint
	for _, p := range pts {
		out = append(out, madePoint{ID: p.ID, Kind: p.Kind, Time: p.Time})
	}
	return out
}

// thinnedRun is 3 h 20 min of points every 5 minutes, as made, and as a
// correct retention keeps them at its end: every point of the newest two
// hours, the earliest of each older hour.
func thinnedRun() (made, kept []azuresvc.Point, now time.Time) {
	now = sched.Epoch.Add(3*time.Hour + 20*time.Minute)
	hourKept := map[int64]bool{}
	for i := 1; i <= 40; i++ {
		p := pt(fmt.Sprintf("c%02d", i), "crash", 5*i, uint64(i))
		made = append(made, p)
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			kept = append(kept, p)
			continue
		}
		if h := p.Time.Unix() / 3600; !hourKept[h] {
			hourKept[h] = true
			kept = append(kept, p)
		}
	}
	return made, kept, now
}

// TestRetentionBothWays: the retention check compares the catalog with the
// record of every point made, so a retention that deletes too much is
// caught, not only one that keeps too much.
func TestRetentionBothWays(t *testing.T) {
	pol := proto.DefaultPolicy()
	made, kept, now := thinnedRun()
	if r := checkRetention("vm", kept, now, pol, madeOf(made), false); r.Verdict != OK {
		t.Fatalf("correct thinning: %s", r)
	}
	if r := checkRetention("vm", kept, now, pol, madeOf(made), true); r.Verdict != OK {
		t.Fatalf("correct thinning of a group member: %s", r)
	}
	// A revoked point is not owed.
	gone := madeOf(append(made, pt("r1", "crash", 197, 41)))
	gone[len(gone)-1].Gone = "revoked"
	if r := checkRetention("vm", kept, now, pol, gone, false); r.Verdict != OK {
		t.Fatalf("a revoked point was owed: %s", r)
	}
	var recentOnly []azuresvc.Point // the planted bug: nothing older than 2 h kept
	for _, p := range kept {
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			recentOnly = append(recentOnly, p)
		}
	}
	bad := []struct {
		name  string
		pts   []azuresvc.Point
		group bool
	}{
		{"thinning keeps nothing older than 2 h", recentOnly, false},
		{"thinning keeps nothing older than 2 h (group member)", recentOnly, true},
		{"a point of the newest two hours deleted", append(append([]azuresvc.Point(nil), kept[:len(kept)-3]...), kept[len(kept)-2:]...), false},
		{"an hour's earliest point deleted", kept[1:], false},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := checkRetention("vm", tt.pts, now, pol, madeOf(made), tt.group)
			if r.Verdict != Illegal || r.Evidence == "" {
				t.Fatalf("points wrongly deleted passed: %s", r)
			}
		})
	}
}

// TestRetentionAfterCommit: a failover's commit deletes every point but
// the committed one (Gone "commit"). An hour whose kept point went that
// way had its other points pruned by retention before: it is not owed one
// any more (swarm seed 141, a failback seed committing after 3 hours of
// points). The same catalog with those points deleted unrecorded fails.
func TestRetentionAfterCommit(t *testing.T) {
	pol := proto.DefaultPolicy()
	made, kept, now := thinnedRun()
	last := kept[len(kept)-1]
	committed := []azuresvc.Point{last}
	record := madeOf(made)
	keptID := map[string]bool{}
	for _, p := range kept {
		keptID[p.ID] = true
	}
	for i := range record {
		if keptID[record[i].ID] && record[i].ID != last.ID {
			record[i].Gone, record[i].Removed = "commit", "commit"
		}
	}
	for _, group := range []bool{false, true} {
		if r := checkRetention("vm", committed, now, pol, record, group); r.Verdict != OK {
			t.Errorf("after a commit (group %v): %s", group, r)
		}
		if r := checkRetention("vm", committed, now, pol, madeOf(made), group); r.Verdict != Illegal {
			t.Errorf("points deleted with no record of why passed (group %v): %s", group, r)
		}
	}
}

// TestNothingToJudgeFails: a machine or group that should have points and
// has none fails; too early to judge is unknown; never ok.
func TestNothingToJudgeFails(t *testing.T) {
	pol := proto.DefaultPolicy()
	since := sched.Epoch
	cases := []struct {
		name      string
		protected bool
		now       time.Time
		want      Verdict
	}{
		{"protected an hour, no points", true, since.Add(time.Hour), Illegal},
		{"protected one crash interval and the slack, no points", true, since.Add(pol.CrashInterval + scheduleSlack + time.Second), Illegal},
		{"protected a minute ago", true, since.Add(time.Minute), Unknown},
		{"not protected", false, since.Add(time.Hour), Unknown},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			r := noPointsVerdict("points", "vm", "recovery points", tt.protected, since, tt.now, pol)
			if r.Verdict != tt.want || r.Evidence == "" {
				t.Fatalf("got %s, want %s with evidence", r, tt.want)
			}
		})
	}
}

// dropWrite is a blob store that silently loses one page write to the
// replica: the kind of bug the point checks exist to catch.
type dropWrite struct {
	blob.Store
	mu      sync.Mutex
	n, drop int
	dropped bool
}

func (s *dropWrite) WritePages(ctx context.Context, c, name string, off int64, data []byte, o blob.WriteOptions) (string, error) {
	s.mu.Lock()
	s.n++
	skip := strings.HasSuffix(c, "replica") && s.n >= s.drop && !s.dropped
	if skip {
		s.dropped = true
	}
	s.mu.Unlock()
	if skip {
		return "etag-of-a-lost-write", nil
	}
	return s.Store.WritePages(ctx, c, name, off, data, o)
}

// TestPointChecksCatchALostWrite runs replication end to end (vcsim and
// Azurite in the loop) twice: as it is, every point passes; with one
// replica page write lost on the way, a point check says ILLEGAL.
func TestPointChecksCatchALostWrite(t *testing.T) {
	run := func(t *testing.T, wrap func(blob.Store) blob.Store) (bad []Result, total int) {
		e, err := New(context.Background(), Options{Seed: 3, Machines: []string{"db01"}, AllocatedMiB: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if err := e.StartWorkload("db01", workloadSpecFor("bank")); err != nil {
			t.Fatal(err)
		}
		d, err := e.Deploy(DeployOptions{WrapStore: wrap})
		if err != nil {
			t.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		if err := d.Request(&proto.EnableReplication{Machine: "db01", Policy: "default"}); err != nil {
			t.Fatal(err)
		}
		e.Sim.RunFor(16 * time.Minute)
		rs := d.CheckPoints([]string{"db01"}, PointChecks{})
		for _, r := range rs {
			if r.Verdict != OK {
				bad = append(bad, r)
			}
		}
		return bad, len(rs)
	}
	t.Run("healthy", func(t *testing.T) {
		bad, total := run(t, nil)
		if total < 6 || len(bad) > 0 {
			t.Fatalf("%d checks, failures: %v", total, bad)
		}
	})
	t.Run("a replica write lost", func(t *testing.T) {
		// The first replica write is initial-sync data that the workload
		// never rewrites, so the loss stays in every point.
		bad, _ := run(t, func(s blob.Store) blob.Store { return &dropWrite{Store: s, drop: 1} })
		if len(bad) == 0 {
			t.Fatal("a lost replica write went unnoticed by every point check")
		}
		t.Logf("caught: %s", bad[0])
	})
}

// TestRPOCheck shows the RPO check both ways: a healthy world keeps RPO
// within the bound; with the site cut off from Azure for half an hour the
// check fails with the newest point's time as evidence.
func TestRPOCheck(t *testing.T) {
	run := func(t *testing.T, cut bool) []Result {
		e, err := New(context.Background(), Options{Seed: 4, Machines: []string{"db01"}, MemoryStorage: true, AllocatedMiB: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		e.StartWorkload("db01", workloadSpecFor("bank"))
		d, err := e.Deploy(DeployOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		d.Request(&proto.EnableReplication{Machine: "db01", Policy: "default"})
		e.Sim.RunFor(12 * time.Minute)
		if cut {
			e.Net.Partition("onprem", "azure")
		}
		e.Sim.RunFor(30 * time.Minute)
		return d.CheckRPO([]string{"db01"}, 10*time.Minute)
	}
	if rs := run(t, false); len(rs) != 1 || rs[0].Verdict != OK {
		t.Fatalf("healthy: %v", rs)
	}
	rs := run(t, true)
	if len(rs) != 1 || rs[0].Verdict != Illegal || rs[0].Evidence == "" {
		t.Fatalf("cut off from Azure for 30 min, the RPO check said %v", rs)
	}
	t.Log(rs[0])
}

// TestRetentionShorterThanKeepAll: a retention window under the 2 hours
// in which every point is kept (policy retention=1h) prunes points older
// than the window; the check once owed every point of the newest 2 hours
// whatever the window, and failed a service that did what the policy
// says. The points of the window are still all owed.
func TestRetentionShorterThanKeepAll(t *testing.T) {
	pol := proto.DefaultPolicy()
	pol.Retention = time.Hour
	now := sched.Epoch.Add(3*time.Hour + 2*time.Minute)
	var made, kept []azuresvc.Point
	for i := 1; i <= 36; i++ {
		p := pt(fmt.Sprintf("c%02d", i), "crash", 5*i, uint64(i))
		made = append(made, p)
		if !p.Time.Before(now.Add(-pol.Retention)) {
			kept = append(kept, p)
		}
	}
	r := checkRetention("vm", kept, now, pol, madeOf(made), false)
	if r.Verdict != OK || !strings.Contains(r.Detail, "made in the newest 1h0m0s all kept") {
		t.Fatalf("a 1 h window kept as the policy says: %s", r)
	}
	short := append(append([]azuresvc.Point(nil), kept[:3]...), kept[4:]...)
	if r := checkRetention("vm", short, now, pol, madeOf(made), false); r.Verdict != Illegal {
		t.Fatalf("a point of the 1 h window deleted passed: %s", r)
	}
}

// cdpRun is 3 hours of points every 5 s with an app point every hour at
// the same instant as a crash point, as made, and as the three-tier rule
// keeps them at now (the newest point's time): every point of the newest
// 15 minutes, one per clock minute to 2 hours (the app point first, then
// the earliest), the earliest of those per clock hour.
func cdpRun() (made, kept []azuresvc.Point, now time.Time, pol proto.Policy) {
	pol = proto.DefaultPolicy()
	pol.CrashInterval = 5 * time.Second
	start := sched.Epoch.Add(7*time.Minute + 3*time.Second)
	seq := uint64(0)
	for i := 0; i <= 3*720; i++ {
		at := start.Add(time.Duration(i) * 5 * time.Second)
		seq++
		made = append(made, azuresvc.Point{ID: fmt.Sprintf("c%04d", i), Kind: proto.Crash, Time: at, Seq: seq})
		if i > 0 && i%720 == 0 {
			seq++
			made = append(made, azuresvc.Point{ID: fmt.Sprintf("a%04d", i), Kind: proto.App, Time: at, Seq: seq})
		}
	}
	now = made[len(made)-1].Time
	minute := map[int64]int{}
	hour := map[int64]int{}
	for i, p := range made {
		if p.Time.Before(now.Add(-azuresvc.KeepAllFor)) || !p.Time.Before(now.Add(-azuresvc.KeepEveryFor)) {
			continue
		}
		m := p.Time.Unix() / 60
		if j, ok := minute[m]; !ok || (p.Kind == proto.App && made[j].Kind != proto.App) {
			minute[m] = i
		}
	}
	for i, p := range made {
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			continue
		}
		// Older points went through the minute tier first.
		m := p.Time.Unix() / 60
		if j, ok := minute[-m-1]; !ok || (p.Kind == proto.App && made[j].Kind != proto.App) {
			minute[-m-1] = i
		}
	}
	for i, p := range made {
		if p.Time.Before(now.Add(-azuresvc.KeepAllFor)) && minute[-p.Time.Unix()/60-1] == i {
			if _, ok := hour[p.Time.Unix()/3600]; !ok {
				hour[p.Time.Unix()/3600] = i
			}
		}
	}
	for i, p := range made {
		switch {
		case !p.Time.Before(now.Add(-azuresvc.KeepEveryFor)):
			kept = append(kept, p)
		case !p.Time.Before(now.Add(-azuresvc.KeepAllFor)):
			if minute[p.Time.Unix()/60] == i {
				kept = append(kept, p)
			}
		case hour[p.Time.Unix()/3600] == i:
			kept = append(kept, p)
		}
	}
	return made, kept, now, pol
}

// TestRetentionContinuous: under a 5-s interval the check holds the
// catalog to the three-tier rule both ways; each negative control breaks
// the rule one way.
func TestRetentionContinuous(t *testing.T) {
	made, kept, now, pol := cdpRun()
	r := checkRetention("vm", kept, now, pol, madeOf(made), false)
	if r.Verdict != OK || !strings.Contains(r.Detail, "minutes each with its point") {
		t.Fatalf("the rule's points: %s", r)
	}
	if n := len(kept); n < 180+100 || n > 180+105+6 {
		t.Fatalf("the rule keeps %d points of %d", n, len(made))
	}
	// The app point at +2h07m03s shares its minute with the crash point
	// made at the same instant: the rule keeps the app point.
	appAt := -1
	for i, p := range kept {
		if p.ID == "a1440" {
			appAt = i
		}
	}
	if appAt < 0 {
		t.Fatal("the minute tier's app point is not in the rule's points")
	}
	without := func(i int) []azuresvc.Point {
		return append(append([]azuresvc.Point(nil), kept[:i]...), kept[i+1:]...)
	}
	var unthinned []azuresvc.Point // the minute tier not applied
	for _, p := range made {
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			unthinned = append(unthinned, p)
		}
	}
	unthinned = append(append([]azuresvc.Point(nil), kept[:3]...), unthinned...)
	swapped := without(appAt) // the crash point of the minute kept instead
	for _, p := range made {
		if p.ID == "c1440" {
			swapped = append(swapped, p)
		}
	}
	sort.Slice(swapped, func(i, j int) bool { return swapped[i].Seq < swapped[j].Seq })
	bad := []struct {
		name string
		pts  []azuresvc.Point
	}{
		{"a point of the newest 15 minutes deleted", without(len(kept) - 10)},
		{"the minute tier not thinned", unthinned},
		{"a minute's point deleted", without(appAt + 20)},
		{"the crash point kept instead of its minute's app point", swapped},
		{"an hour's point deleted", without(1)},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := checkRetention("vm", tt.pts, now, pol, madeOf(made), false)
			if r.Verdict != Illegal || r.Evidence == "" {
				t.Fatalf("passed: %s", r)
			}
			t.Log(r.Evidence)
		})
	}
}

// TestScheduleContinuous: under a 5-s interval the newest 15 minutes must
// have a point every 5 s ± continuousSlack; the thinned minute tier before
// them is no gap; each negative control breaks the cadence one way.
func TestScheduleContinuous(t *testing.T) {
	_, kept, now, pol := cdpRun()
	r := checkSchedule("vm", kept, pol, now)
	if r.Verdict != OK || !strings.Contains(r.Detail, "crash intervals of 5s to 5s") {
		t.Fatalf("the rule's points: %s", r)
	}
	at := len(kept) - 20
	without := append(append([]azuresvc.Point(nil), kept[:at]...), kept[at+1:]...)
	doubled := append([]azuresvc.Point(nil), kept...)
	extra := kept[at]
	extra.ID, extra.Time, extra.Seq = "extra", extra.Time.Add(2*time.Second), extra.Seq+1
	doubled = append(doubled[:at+1], append([]azuresvc.Point{extra}, doubled[at+1:]...)...)
	var minuteGap []azuresvc.Point // a minute of the minute tier missing, and the next
	for _, p := range kept {
		if m := p.Time.Sub(sched.Epoch); m >= 2*time.Hour+10*time.Minute && m < 2*time.Hour+12*time.Minute+30*time.Second {
			continue
		}
		minuteGap = append(minuteGap, p)
	}
	for _, tt := range []struct {
		name string
		pts  []azuresvc.Point
	}{{"a missed 5-s point", without}, {"a point 2 s after another", doubled}, {"a gap in the minute tier", minuteGap}} {
		t.Run(tt.name, func(t *testing.T) {
			r := checkSchedule("vm", tt.pts, pol, now)
			if r.Verdict != Illegal || r.Evidence == "" {
				t.Fatalf("passed: %s", r)
			}
			t.Log(r.Evidence)
		})
	}
}
