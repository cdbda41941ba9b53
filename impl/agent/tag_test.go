package agent

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
)

// testGroup is group g1 of members (sorted), the first its master, a crash
// round every second, the product's timeouts.
func testGroup(members ...string) proto.GroupConfig {
	return proto.GroupConfig{Group: "g1", Version: 1, Members: members, Master: members[0],
		CrashInterval: time.Second, Crash: proto.CrashTagTimeouts, App: proto.AppTagTimeouts}
}

var three = []string{"vm01", "vm02", "vm03"}

// unequal gives the links different latencies, so that members reach each
// phase at different times.
func unequal(from, to string) time.Duration {
	lat := map[string]time.Duration{"vm01vm02": time.Millisecond, "vm01vm03": 3 * time.Millisecond,
		"vm02vm03": 2 * time.Millisecond}
	if from > to {
		from, to = to, from
	}
	return lat[from+to]
}

func outcomes(rs []*proto.TagRound) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Outcome+" "+r.Reason)
	}
	return out
}

func committedTags(rs []*proto.TagRound) []string {
	var out []string
	for _, r := range rs {
		if r.Outcome == proto.RoundCommitted {
			out = append(out, r.TagID)
		}
	}
	sort.Strings(out)
	return out
}

// TestFilterGate: Hold closes the gate, Release opens it and then calls the
// hook outside the filter's mutex (the hook writes through the filter);
// releasing an open gate calls nothing; a bookmark inserted while holding
// is the hold's tag until the release.
func TestFilterGate(t *testing.T) {
	f := openTestFilter(t, t.TempDir(), FilterOptions{})
	defer f.Close()
	var hookRuns []bool // Admit as the hook saw it
	f.SetReleaseHook(func() {
		hookRuns = append(hookRuns, f.Admit())
		f.Capture(0, 0, block(9)) // would deadlock under the mutex
	})
	var got []string
	note := func(what string) {
		got = append(got, fmt.Sprintf("%s: admit=%v holding=%v tag=%q", what, f.Admit(), f.Holding(), f.HoldTag()))
	}
	note("open")
	f.Hold()
	f.Hold()
	note("hold")
	if _, err := f.InsertBookmark(proto.Crash, "g1:c:1", 0); err != nil {
		t.Fatal(err)
	}
	note("tagged")
	f.Release()
	note("released")
	f.Release()
	note("released again")
	want := []string{
		`open: admit=true holding=false tag=""`,
		`hold: admit=false holding=true tag=""`,
		`tagged: admit=false holding=true tag="g1:c:1"`,
		`released: admit=true holding=false tag=""`,
		`released again: admit=true holding=false tag=""`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gate -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]bool{true}, hookRuns); diff != "" {
		t.Errorf("hook runs (admit inside) -want +got:\n%s", diff)
	}
	if s := f.Stats(); s.CapturedWrites != 1 {
		t.Errorf("hook's write not captured: %+v", s)
	}
}

// TestFilterGateConcurrent: a guest thread admitting and capturing while
// the agent holds and releases (run with -race). Every queued write is
// issued by the hook, none is lost.
func TestFilterGateConcurrent(t *testing.T) {
	f := openTestFilter(t, t.TempDir(), FilterOptions{})
	defer f.Close()
	var mu sync.Mutex
	queued, issued := 0, 0
	f.SetReleaseHook(func() {
		mu.Lock()
		n := queued
		queued = 0
		mu.Unlock()
		for i := 0; i < n; i++ {
			f.Capture(0, 0, block(1))
		}
		mu.Lock()
		issued += n
		mu.Unlock()
	})
	const writes = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < writes; i++ {
			mu.Lock()
			// Asked under the writer's own lock, as a driver checks the gate
			// and queues the IRP in one step.
			if f.Admit() {
				mu.Unlock()
				f.Capture(0, 0, block(1))
				mu.Lock()
				issued++
			} else {
				queued++
			}
			mu.Unlock()
		}
	}()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		f.Hold()
		f.Release()
	}
	mu.Lock()
	defer mu.Unlock()
	if issued+queued != writes || queued != 0 {
		t.Errorf("issued %d, still queued %d, want %d issued", issued, queued, writes)
	}
	if s := f.Stats(); s.CapturedWrites != int64(issued) {
		t.Errorf("captured %d, issued %d", s.CapturedWrites, issued)
	}
}

// TestCrashRoundConsistentCut: three members on links of different
// latencies, a guest writing every millisecond on each. A committed crash
// round is a consistent cut, every member's tag lies after every write it
// acknowledged before its prepare, and writes held by the gate are issued
// only at resume, after the tag. The negative control: a guest that ignores
// the gate (as if Hold were a no-op) makes the cut inconsistent, and the
// check says so.
func TestCrashRoundConsistentCut(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("ignoreGate=%v", ignore), func(t *testing.T) {
			gc := testGroup(three...)
			n := newTagNet(t, 1, three, gc)
			n.latency, n.writeEvery = unequal, time.Millisecond
			for _, nd := range n.nodes {
				nd.w.ignoreGate = ignore
			}
			n.run(1500 * time.Millisecond)
			n.settle()
			rs := n.rounds()
			if len(rs) == 0 || rs[0].Outcome != proto.RoundCommitted || !strings.HasPrefix(rs[0].TagID, "g1:c:") {
				t.Fatalf("rounds %v, want the first committed", outcomes(rs))
			}
			id := rs[0].TagID
			if diff := cmp.Diff(committedTags(rs), n.groupPoints("g1")); diff != "" {
				t.Errorf("group points -committed +got:\n%s", diff)
			}
			err := n.checkCut(id)
			if ignore {
				if err == nil {
					t.Fatalf("negative control: writes not held, yet tag %s passes the cut check", id)
				}
				t.Logf("negative control caught: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			queued := 0
			for _, nd := range n.nodes {
				seq, _, _ := nd.tagPos(id)
				if len(nd.spans) == 0 {
					t.Fatalf("%s never held", nd.name)
				}
				hold := nd.spans[0]
				for i, w := range nd.w.writes {
					if w.AckedAt.Before(hold.From) && w.Seq > seq {
						t.Errorf("%s: write %d acknowledged before prepare lies after the tag (%d > %d)", nd.name, i, w.Seq, seq)
					}
					if !w.Queued {
						continue
					}
					// Only one round ran while the guests wrote.
					queued++
					if !w.AckedAt.Equal(hold.To) || w.Seq < seq {
						t.Errorf("%s: held write %d acknowledged at %v (release at %v), log position %d (tag %d)",
							nd.name, i, w.AckedAt, hold.To, w.Seq, seq)
					}
				}
			}
			if queued == 0 {
				t.Fatal("no write was held: the test exercises nothing")
			}
			n.checkHolds(gc)
			n.checkWrites()
		})
	}
}

// phasesErr says what is wrong with a round's reported phases: they must
// follow the protocol's order end to end (each starts when the one before
// ended), a committed round's all acknowledged; a revoked round's end with
// revoke, after the phase its reason names, which was not acknowledged.
func phasesErr(r *proto.TagRound) error {
	ps := r.Phases
	if len(ps) == 0 {
		return fmt.Errorf("round %s: no phases", r.TagID)
	}
	order := []string{proto.PhaseBegin, proto.PhasePrepare, proto.PhaseQuiesce, proto.PhaseCommit, proto.PhaseResume, proto.PhaseRevoke}
	last := -1
	for i, p := range ps {
		at := slices.Index(order, p.Name)
		if at <= last || p.End.Before(p.Start) || p.End.IsZero() || (i > 0 && !p.Start.Equal(ps[i-1].End)) {
			return fmt.Errorf("round %s: phase %d %+v out of order or not end to end: %+v", r.TagID, i, p, ps)
		}
		last = at
	}
	if r.Outcome == proto.RoundCommitted {
		for _, p := range ps {
			if !p.OK || p.Name == proto.PhaseRevoke {
				return fmt.Errorf("round %s committed with phase %+v", r.TagID, p)
			}
		}
		return nil
	}
	n := len(ps)
	if n < 2 || ps[n-1].Name != proto.PhaseRevoke || ps[n-2].OK || !strings.HasPrefix(r.Reason, ps[n-2].Name+":") {
		return fmt.Errorf("round %s revoked (%s) with phases %+v", r.TagID, r.Reason, ps)
	}
	return nil
}

// TestCrashRoundHoldsTwoRoundTrips: with no faults and a 1 ms link, every
// member (the master included) holds its writes for two round trips:
// prepare's ack out, commit out and back, resume in.
func TestCrashRoundHoldsTwoRoundTrips(t *testing.T) {
	gc := testGroup(three...)
	n := newTagNet(t, 1, three, gc)
	n.run(1500 * time.Millisecond)
	rs := n.rounds()
	if len(rs) != 1 || rs[0].Outcome != proto.RoundCommitted {
		t.Fatalf("rounds %v", outcomes(rs))
	}
	const rtt = 2 * time.Millisecond
	want := []proto.MemberHold{{Machine: "vm01", Held: 2 * rtt}, {Machine: "vm02", Held: 2 * rtt}, {Machine: "vm03", Held: 2 * rtt}}
	if diff := cmp.Diff(want, rs[0].Holds); diff != "" {
		t.Errorf("reported holds -want +got:\n%s", diff)
	}
	for _, nd := range n.nodes {
		s := nd.e.a.Status()
		if diff := cmp.Diff([]time.Duration{2 * rtt}, s.Holds.Recent); diff != "" {
			t.Errorf("%s: holds -want +got:\n%s", nd.name, diff)
		}
		if s.Member.Resumed != 1 || s.Member.Begun != 1 || s.Holding {
			t.Errorf("%s: member %+v holding %v", nd.name, s.Member, s.Holding)
		}
	}
	// The master's phases, each one link round trip (the master's own
	// acknowledgement is at once), end to end.
	t0 := rs[0].Phases[0].Start
	var wantPhases []proto.RoundPhase
	for i, name := range []string{proto.PhaseBegin, proto.PhasePrepare, proto.PhaseCommit, proto.PhaseResume} {
		wantPhases = append(wantPhases, proto.RoundPhase{Name: name, Start: t0.Add(time.Duration(i) * rtt), End: t0.Add(time.Duration(i+1) * rtt), OK: true})
	}
	if diff := cmp.Diff(wantPhases, rs[0].Phases); diff != "" || t0.Before(rs[0].Started) {
		t.Errorf("reported phases (round started %v) -want +got:\n%s", rs[0].Started, diff)
	}
	s := n.node("vm01").e.a.Status()
	wantRounds := RoundStats{Started: 1, Committed: 1, LastTag: rs[0].TagID, LastOutcome: proto.RoundCommitted}
	if diff := cmp.Diff(wantRounds, s.Rounds); diff != "" || !s.IsMaster || s.Group != "g1" {
		t.Errorf("master status (master %v, group %q) -want +got:\n%s", s.IsMaster, s.Group, diff)
	}
}

// TestAppRound: when the crash and app schedules are both due, one app
// round runs; it freezes and thaws every member once, around the tag.
func TestAppRound(t *testing.T) {
	gc := testGroup(three...)
	gc.AppInterval = 2 * time.Second
	n := newTagNet(t, 1, three, gc)
	n.run(2500 * time.Millisecond)
	n.settle()
	rs := n.rounds()
	var kinds []string
	for _, r := range rs[:2] {
		kinds = append(kinds, r.Kind.String()+" "+r.Outcome)
	}
	if diff := cmp.Diff([]string{"crash committed", "app committed"}, kinds); diff != "" {
		t.Fatalf("first rounds -want +got:\n%s", diff)
	}
	if !strings.HasPrefix(rs[1].TagID, "g1:a:") || rs[2].Started.Sub(rs[1].Started) != time.Second {
		t.Errorf("app round %s at %v, next at %v", rs[1].TagID, rs[1].Started, rs[2].Started)
	}
	for i, want := range [][]string{{"begin", "prepare", "commit", "resume"}, {"begin", "prepare", "quiesce", "commit", "resume"}} {
		var got []string
		for _, p := range rs[i].Phases {
			got = append(got, p.Name)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s round's phases -want +got:\n%s", rs[i].Kind, diff)
		}
		if err := phasesErr(rs[i]); err != nil {
			t.Error(err)
		}
	}
	apps := 0
	for _, r := range rs {
		if r.Kind == proto.App {
			apps++
		}
	}
	for _, nd := range n.nodes {
		if nd.e.g.freezes != apps || nd.e.g.thaws != apps {
			t.Errorf("%s: %d freezes, %d thaws; want %d each", nd.name, nd.e.g.freezes, nd.e.g.thaws, apps)
		}
		var got []proto.Consistency
		for _, m := range nd.tagMarks("g1")[:2] {
			got = append(got, kindOfMark(m))
		}
		if diff := cmp.Diff([]proto.Consistency{proto.Crash, proto.App}, got); diff != "" {
			t.Errorf("%s: tag kinds -want +got:\n%s", nd.name, diff)
		}
	}
}

// TestRoundRevokedEverywhere: a missing acknowledgement revokes the round
// on every member; members that inserted the tag log a revoke, so it never
// becomes a group point; the report names the phase and the member.
func TestRoundRevokedEverywhere(t *testing.T) {
	tests := []struct {
		name       string
		drop       func(m netMsg) bool
		wantReason string
		wantTagged bool // every member inserted the tag (and revoked it)
	}{
		{"member does not answer prepare",
			func(m netMsg) bool { return m.to.Host() == "vm03" && m.phase() == proto.PhasePrepare },
			"prepare: vm03 did not answer", false},
		{"member's commit ack lost",
			func(m netMsg) bool {
				_, ack := m.msg.(*proto.TagAck)
				return ack && m.from.Host() == "vm03" && m.phase() == proto.PhaseCommit
			},
			"commit: vm03 did not answer", true},
		{"resume ack lost",
			func(m netMsg) bool {
				_, ack := m.msg.(*proto.TagAck)
				return ack && m.from.Host() == "vm02" && m.phase() == proto.PhaseResume
			},
			"resume: vm02 did not answer", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gc := testGroup(three...)
			n := newTagNet(t, 1, three, gc)
			n.latency, n.writeEvery, n.drop = unequal, time.Millisecond, tt.drop
			n.run(1900 * time.Millisecond)
			n.settle()
			rs := n.rounds()
			if len(rs) == 0 || rs[0].Outcome != proto.RoundRevoked || rs[0].Reason != tt.wantReason {
				t.Fatalf("rounds %v, want the first revoked: %s", outcomes(rs), tt.wantReason)
			}
			id := rs[0].TagID
			for _, nd := range n.nodes {
				_, present, revoked := nd.tagPos(id)
				if present != tt.wantTagged || revoked != tt.wantTagged {
					t.Errorf("%s: tag present %v revoked %v, want %v", nd.name, present, revoked, tt.wantTagged)
				}
				if s := nd.e.a.Status(); s.Holding {
					t.Errorf("%s still holds", nd.name)
				}
			}
			for _, h := range rs[0].Holds {
				if h.Held < 0 || h.Held > gc.Crash.Hold() {
					t.Errorf("reported hold %+v", h)
				}
			}
			if err := phasesErr(rs[0]); err != nil {
				t.Error(err)
			}
			if diff := cmp.Diff(committedTags(rs), n.groupPoints("g1")); diff != "" {
				t.Errorf("group points -committed +got:\n%s", diff)
			}
			s := n.node("vm01").e.a.Status()
			if got := s.Rounds.RevokedBy; len(got) == 0 || got[0].Reason != tt.wantReason {
				t.Errorf("revoked by %v", got)
			}
			n.checkHolds(gc)
			n.checkWrites()
		})
	}
}

// TestMasterCrashMidRound: the master's agent dies mid-round. Followers
// release at their own hold deadline, exactly TagTimeouts.Hold() after
// prepare, revoking the tag if they inserted it. A master that died holding
// revokes its tag and releases when it restarts; it starts fresh, with a
// tag number above the last.
func TestMasterCrashMidRound(t *testing.T) {
	tests := []struct {
		name          string
		crashIn       string // the master's round phase at the crash
		followersTag  bool   // followers inserted the tag
		masterRevokes bool   // the master's log has a revoke
	}{
		{"during commit", proto.PhaseCommit, false, true},
		{"during resume", proto.PhaseResume, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gc := testGroup(three...)
			n := newTagNet(t, 1, three, gc)
			n.writeEvery = time.Millisecond
			master := n.node("vm01")
			var crashed string
			n.afterStep = func() {
				if s := master.e.a.Status(); crashed == "" && !master.down && s.Rounds.Phase == tt.crashIn {
					crashed = s.Rounds.Tag
					n.crash(master)
				}
			}
			n.run(1100 * time.Millisecond)
			if crashed == "" {
				t.Fatal("the master never reached the phase")
			}
			n.afterStep = nil
			n.restart(master)
			n.run(1500 * time.Millisecond)
			n.settle()
			for _, nd := range n.nodes[1:] {
				s := nd.e.a.Status()
				if s.Holds.Deadline != 1 || len(nd.spans) == 0 || nd.spans[0].To.Sub(nd.spans[0].From) != gc.Crash.Hold() {
					t.Errorf("%s: deadline releases %d, first hold %v; want 1, %v", nd.name, s.Holds.Deadline, nd.spans, gc.Crash.Hold())
				}
				_, present, revoked := nd.tagPos(crashed)
				if present != tt.followersTag || revoked != tt.followersTag {
					t.Errorf("%s: tag present %v revoked %v, want %v", nd.name, present, revoked, tt.followersTag)
				}
			}
			if _, present, revoked := master.tagPos(crashed); !present || revoked != tt.masterRevokes {
				t.Errorf("master: tag present %v revoked %v, want revoked %v", present, revoked, tt.masterRevokes)
			}
			rs := n.rounds()
			if len(rs) == 0 || rs[0].Outcome != proto.RoundCommitted || tagNumber(rs[0].TagID) <= tagNumber(crashed) {
				t.Errorf("after the restart: rounds %v (crashed in %s)", outcomes(rs), crashed)
			}
			for _, r := range rs {
				if r.TagID == crashed {
					t.Errorf("the crashed round %s was reported", crashed)
				}
			}
			if diff := cmp.Diff(committedTags(rs), n.groupPoints("g1")); diff != "" {
				t.Errorf("group points -committed +got:\n%s", diff)
			}
			n.checkHolds(gc)
			n.checkWrites()
		})
	}
}

// TestDuplicatedAndLateMessages: every message arrives twice, the copy up
// to 300 ms late (after its round ended). Rounds commit, each member
// inserts each tag once and holds once per round.
func TestDuplicatedAndLateMessages(t *testing.T) {
	gc := testGroup(three...)
	n := newTagNet(t, 3, three, gc)
	n.dup, n.dupDelay, n.writeEvery = 1, 300*time.Millisecond, time.Millisecond
	n.run(3500 * time.Millisecond)
	n.settle()
	rs := n.rounds()
	if len(rs) < 3 {
		t.Fatalf("rounds %v", outcomes(rs))
	}
	for _, r := range rs {
		if r.Outcome != proto.RoundCommitted {
			t.Errorf("round %s: %s %s", r.TagID, r.Outcome, r.Reason)
		}
	}
	for _, nd := range n.nodes {
		var ids []string
		for _, m := range nd.tagMarks("g1") {
			ids = append(ids, fmt.Sprintf("%s revoke=%v", m.ID, m.Revoke))
		}
		var want []string
		for _, r := range rs {
			want = append(want, r.TagID+" revoke=false")
		}
		if diff := cmp.Diff(want, ids); diff != "" {
			t.Errorf("%s: tags -want +got:\n%s", nd.name, diff)
		}
		if s := nd.e.a.Status(); s.Holds.Count != int64(len(rs)) || len(nd.spans) != len(rs) {
			t.Errorf("%s: %d holds (%d seen), want %d", nd.name, s.Holds.Count, len(nd.spans), len(rs))
		}
	}
	for _, id := range n.groupPoints("g1") {
		if err := n.checkCut(id); err != nil {
			t.Error(err)
		}
	}
	n.checkHolds(gc)
}

// TestMemberRefusesBegin: a member that cannot honour a tag refuses begin,
// so the round is revoked before anyone holds a write.
func TestMemberRefusesBegin(t *testing.T) {
	tests := []struct {
		name   string
		prep   func(e *env)
		reason string
	}{
		{"syncing", func(e *env) { e.holdChecksums = true; e.register(); e.protect(1) }, "syncing"},
		{"not registered", func(e *env) {}, "not registered"},
		{"resync required", func(e *env) {
			e.replicating()
			f := e.g.filter
			f.mu.Lock()
			f.stop("injected")
			f.mu.Unlock()
		}, "resync-required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gc := testGroup("vm01", "vm02")
			n := &tagNet{t: t, now: runtimetest.Epoch, by: map[runtime.Addr]*node{}, rnd: rand.New(rand.NewPCG(1, 7))}
			n.add("vm01", nil)
			n.add("vm02", tt.prep)
			n.configure(gc)
			n.writeEvery = time.Millisecond
			n.run(2500 * time.Millisecond)
			rs := n.rounds()
			want := "begin: vm02 refused: " + tt.reason
			if len(rs) != 2 || rs[0].Outcome != proto.RoundRevoked || rs[0].Reason != want {
				t.Fatalf("rounds %v, want 2 revoked: %s", outcomes(rs), want)
			}
			for _, nd := range n.nodes {
				if len(nd.spans) != 0 {
					t.Errorf("%s held writes: %v", nd.name, nd.spans)
				}
			}
			s := n.node("vm02").e.a.Status()
			if diff := cmp.Diff([]ReasonCount{{tt.reason, 2}}, s.Member.Refused); diff != "" {
				t.Errorf("refused -want +got:\n%s", diff)
			}
		})
	}
}

// TestRandomFaultsNeverHoldTooLong: seeded swarm runs — 2 to 5 members,
// random latencies, jitter, loss, duplication and late copies, crash and
// app rounds. Whatever happens, no member holds its writes longer than
// TagTimeouts.Hold() of the round's kind; a tag is a group point exactly
// when its round was reported committed, and every group point is a
// consistent cut. After the faults heal, rounds commit again.
func TestRandomFaultsNeverHoldTooLong(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 3
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 99))
			names := []string{"vm01", "vm02", "vm03", "vm04", "vm05"}[:2+rnd.IntN(4)]
			gc := testGroup(names...)
			gc.Master = names[rnd.IntN(len(names))]
			gc.CrashInterval = 300 * time.Millisecond
			gc.AppInterval = 1200 * time.Millisecond
			gc.App = proto.TagTimeouts{Prepare: 200 * time.Millisecond, Quiesce: 50 * time.Millisecond,
				Commit: 50 * time.Millisecond, Resume: 100 * time.Millisecond}
			n := newTagNet(t, seed, names, gc)
			lat := map[string]time.Duration{}
			for _, a := range names {
				for _, b := range names {
					lat[a+b] = time.Duration(200+rnd.IntN(4000)) * time.Microsecond
				}
			}
			n.latency = func(from, to string) time.Duration { return lat[from+to] }
			n.jitter = time.Duration(rnd.IntN(3000)) * time.Microsecond
			n.loss, n.dup = rnd.Float64()*0.25, rnd.Float64()*0.25
			n.dupDelay = time.Duration(rnd.IntN(300)) * time.Millisecond
			n.writeEvery = 2 * time.Millisecond
			// Half the seeds cut the master off for a while, from a moment
			// a follower holds writes: it must end its hold by itself.
			var cutAfter, cutFor time.Duration
			var cutFrom time.Time
			if rnd.IntN(2) == 0 {
				cutAfter = time.Duration(1000+rnd.IntN(2000)) * time.Millisecond
				cutFor = time.Duration(100+rnd.IntN(900)) * time.Millisecond
				n.afterStep = func() {
					if !cutFrom.IsZero() || n.now.Before(runtimetest.Epoch.Add(cutAfter)) {
						return
					}
					for _, nd := range n.nodes {
						if nd.name != gc.Master && nd.e.g.filter.Holding() {
							cutFrom = n.now
						}
					}
				}
			}
			n.drop = func(m netMsg) bool {
				return !cutFrom.IsZero() && n.now.Before(cutFrom.Add(cutFor)) &&
					(m.from.Host() == gc.Master || m.to.Host() == gc.Master)
			}
			t.Logf("members %v master %s jitter %v loss %.2f dup %.2f dupDelay %v master cut off after %v for %v",
				names, gc.Master, n.jitter, n.loss, n.dup, n.dupDelay, cutAfter, cutFor)
			n.run(4 * time.Second)
			before := len(committedTags(n.rounds()))
			n.settle()
			rs := n.rounds()
			if len(committedTags(rs)) == before {
				t.Errorf("no round committed after the faults healed: %v", outcomes(rs[before:]))
			}
			n.checkHolds(gc)
			n.checkWrites()
			if diff := cmp.Diff(committedTags(rs), n.groupPoints("g1")); diff != "" {
				t.Errorf("group points -committed +got:\n%s", diff)
			}
			for _, id := range n.groupPoints("g1") {
				if err := n.checkCut(id); err != nil {
					t.Error(err)
				}
			}
			for _, r := range rs {
				if err := phasesErr(r); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestGroupConfig: applied when newer, persisted in agent.state, reported
// in Heartbeat, kept across a restart; an older version, or one that does
// not list this machine, changes nothing.
func TestGroupConfig(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	gc := testGroup("vm01", "vm02")
	gc.Version = 3
	e.receive(csAddr, &gc)
	old := gc
	old.Version, old.Master = 2, "vm02"
	e.receive(csAddr, &old)
	other := testGroup("vm02", "vm03")
	other.Group = "g2"
	e.receive(csAddr, &other)
	if s := e.a.Status(); !strings.Contains(s.LastError, "not a member") {
		t.Errorf("last error %q, want the refused g2 config", s.LastError)
	}
	var beats []string
	for _, m := range e.sentToCS() {
		if hb, ok := m.(*proto.Heartbeat); ok {
			beats = append(beats, fmt.Sprintf("gen %d group %s v%d", hb.Gen, hb.Group, hb.GroupVersion))
		}
	}
	if diff := cmp.Diff([]string{"gen 0 group  v0", "gen 1 group g1 v3"}, beats); diff != "" {
		t.Errorf("heartbeats -want +got:\n%s", diff)
	}
	b, err := os.ReadFile(filepath.Join(e.cfg.StateDir, StateFile))
	if err != nil || !strings.Contains(string(b), `"Group": "g1"`) {
		t.Fatalf("state file %s (%v) lacks the group", b, err)
	}
	e.start()
	s := e.a.Status()
	if s.Group != "g1" || s.GroupVersion != 3 || s.GroupMaster != "vm01" || !s.IsMaster {
		t.Errorf("after restart: group %q v%d master %q (is master %v)", s.Group, s.GroupVersion, s.GroupMaster, s.IsMaster)
	}
}

// TestMemberAnswers drives one member by hand: every phase's answer, for
// duplicates, late and out-of-order messages, unknown and stale tags, the
// hold deadline and a newer round superseding an abandoned one.
func TestMemberAnswers(t *testing.T) {
	const master runtime.Addr = "vm01:20004"
	type step struct {
		phase, id string
		mod       func(*proto.Tag)
		wait      time.Duration // instead of a message: let the clock run
	}
	tag := func(phase, id string) step { return step{phase: phase, id: id} }
	crash := func(id string) []step {
		return []step{tag("begin", id), tag("prepare", id), tag("commit", id), tag("resume", id)}
	}
	tests := []struct {
		name    string
		steps   []step
		want    []string
		marks   []string // group tags in the log: id, or "revoke id"
		holding bool
	}{
		{"crash round", crash("g1:c:100"),
			[]string{"begin g1:c:100 ok", "prepare g1:c:100 ok", "commit g1:c:100 ok seq", "resume g1:c:100 ok held 0s"},
			[]string{"g1:c:100"}, false},
		{"duplicates and a late prepare get the same answers, hold once",
			[]step{tag("begin", "g1:c:100"), tag("begin", "g1:c:100"), tag("prepare", "g1:c:100"), {phase: "", wait: 5 * time.Millisecond},
				tag("prepare", "g1:c:100"), tag("commit", "g1:c:100"), tag("commit", "g1:c:100"), {phase: "", wait: 5 * time.Millisecond},
				tag("resume", "g1:c:100"), tag("resume", "g1:c:100"), tag("prepare", "g1:c:100")},
			[]string{"begin g1:c:100 ok", "begin g1:c:100 ok", "prepare g1:c:100 ok", "prepare g1:c:100 ok",
				"commit g1:c:100 ok seq", "commit g1:c:100 ok seq", "resume g1:c:100 ok held 10ms",
				"resume g1:c:100 ok held 10ms", "prepare g1:c:100 ok"},
			[]string{"g1:c:100"}, false},
		{"out of order",
			[]step{tag("begin", "g1:c:100"), tag("commit", "g1:c:100"), tag("quiesce", "g1:c:100"), tag("resume", "g1:c:100")},
			[]string{"begin g1:c:100 ok", "commit g1:c:100 refused: out of order: commit after begin",
				"quiesce g1:c:100 refused: out of order: quiesce after begin",
				"resume g1:c:100 refused: out of order: resume after begin held 0s"},
			nil, false},
		{"unknown tag, then its late begin",
			[]step{tag("prepare", "g1:c:100"), tag("begin", "g1:c:100")},
			[]string{"prepare g1:c:100 refused: unknown tag", "begin g1:c:100 refused: round over after prepare"},
			nil, false},
		{"revoke after resume logs one revoke",
			append(crash("g1:c:100"), tag("revoke", "g1:c:100"), tag("revoke", "g1:c:100")),
			[]string{"begin g1:c:100 ok", "prepare g1:c:100 ok", "commit g1:c:100 ok seq", "resume g1:c:100 ok held 0s",
				"revoke g1:c:100 ok held 0s", "revoke g1:c:100 ok held 0s"},
			[]string{"g1:c:100", "revoke g1:c:100"}, false},
		{"hold deadline",
			[]step{tag("begin", "g1:c:100"), tag("prepare", "g1:c:100"), tag("commit", "g1:c:100"),
				{wait: proto.CrashTagTimeouts.Hold()}, tag("resume", "g1:c:100"), tag("revoke", "g1:c:100")},
			[]string{"begin g1:c:100 ok", "prepare g1:c:100 ok", "commit g1:c:100 ok seq",
				"revoke g1:c:100 refused: hold deadline held 600ms", "resume g1:c:100 refused: round over after commit held 600ms",
				"revoke g1:c:100 refused: hold deadline held 600ms"},
			[]string{"g1:c:100", "revoke g1:c:100"}, false},
		{"a newer round supersedes an abandoned one; an older begin is stale",
			[]step{tag("begin", "g1:c:100"), tag("prepare", "g1:c:100"), tag("commit", "g1:c:100"),
				tag("begin", "g1:c:200"), tag("revoke", "g1:c:100"), tag("begin", "g1:c:150"), tag("prepare", "g1:c:200")},
			[]string{"begin g1:c:100 ok", "prepare g1:c:100 ok", "commit g1:c:100 ok seq", "begin g1:c:200 ok",
				"revoke g1:c:100 refused: superseded by g1:c:200 held 0s", "begin g1:c:150 refused: stale tag", "prepare g1:c:200 ok"},
			[]string{"g1:c:100", "revoke g1:c:100"}, true},
		{"not from the master, not the group, not a kind",
			[]step{{phase: "begin", id: "g1:c:1", mod: func(t *proto.Tag) { t.Master = "vm03" }},
				{phase: "begin", id: "g2:c:1", mod: func(t *proto.Tag) { t.Group = "g2" }},
				// No kind; a kind the wire does not know never decodes (proto.ParseConsistency).
				{phase: "begin", id: "g1-x-1", mod: func(t *proto.Tag) { t.Kind = 0 }}},
			[]string{"begin g1:c:1 refused: not the group's master: vm03", "begin g2:c:1 refused: not a member of group g2",
				`begin g1-x-1 refused: unknown kind ""`},
			nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			e := newEnvFor(t, g, "vm02", nil)
			e.replicating()
			e.receive(csAddr, &proto.GroupConfig{Group: "g1", Version: 1, Members: []string{"vm01", "vm02"}, Master: "vm01",
				Crash: proto.CrashTagTimeouts, App: proto.AppTagTimeouts})
			var got []string
			collect := func() {
				for _, m := range e.d.SentTo(master) {
					a := m.(*proto.TagAck)
					line := a.Phase + " " + a.TagID + " ok"
					if !a.OK {
						line = a.Phase + " " + a.TagID + " refused: " + a.Reason
					}
					if a.Seq != 0 {
						line += " seq"
					}
					if a.Phase == proto.PhaseResume || a.Phase == proto.PhaseRevoke {
						line += " held " + a.Held.String()
					}
					got = append(got, line)
				}
			}
			for _, s := range tt.steps {
				if s.phase == "" {
					e.d.Advance(s.wait)
					collect()
					continue
				}
				m := &proto.Tag{Group: "g1", TagID: s.id, Kind: proto.Crash, Phase: s.phase, Master: "vm01"}
				if s.mod != nil {
					s.mod(m)
				}
				e.d.Receive(master, m)
				collect()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answers -want +got:\n%s", diff)
			}
			if h := g.filter.Holding(); h != tt.holding {
				t.Errorf("holding %v, want %v", h, tt.holding)
			}
			g.filter.Release()
			e.drain()
			var marks []string
			for _, m := range e.az.marks {
				if m.Revoke {
					marks = append(marks, "revoke "+m.ID)
				} else {
					marks = append(marks, m.ID)
				}
			}
			if diff := cmp.Diff(tt.marks, marks); diff != "" {
				t.Errorf("log marks -want +got:\n%s", diff)
			}
		})
	}
}

// TestPerVMBookmarkSkippedWhileHolding: the machine's own schedule goes on
// beside group rounds, but no per-VM bookmark is inserted while the writes
// are held for a group tag.
func TestPerVMBookmarkSkippedWhileHolding(t *testing.T) {
	const master runtime.Addr = "vm01:20004"
	g := newGuest(t, 1<<20)
	e := newEnvFor(t, g, "vm02", nil)
	e.replicating()
	long := proto.TagTimeouts{Prepare: 10 * time.Minute, Quiesce: time.Minute, Commit: time.Minute, Resume: time.Minute}
	e.receive(csAddr, &proto.GroupConfig{Group: "g1", Version: 1, Members: []string{"vm01", "vm02"}, Master: "vm01",
		Crash: proto.CrashTagTimeouts, App: long})
	for _, ph := range []string{proto.PhaseBegin, proto.PhasePrepare} {
		e.d.Receive(master, &proto.Tag{Group: "g1", TagID: "g1:a:1", Kind: proto.App, Phase: ph, Master: "vm01"})
	}
	e.advance(6*time.Minute, 30*time.Second) // the 5-minute crash bookmark comes due
	s := e.a.Status()
	if diff := cmp.Diff([]SkipCount{{"crash", "group-round", 1}}, s.BookmarksSkipped); diff != "" {
		t.Errorf("skipped -want +got:\n%s", diff)
	}
	if !s.Holding || s.Member.Tag != "g1:a:1" || s.Member.Phase != proto.PhasePrepare {
		t.Errorf("member %+v holding %v", s.Member, s.Holding)
	}
	e.advance(10*time.Minute, 30*time.Second) // past the app hold deadline (13 min), then 15 min
	s = e.a.Status()
	if s.Holding || s.Holds.Deadline != 1 || s.Holds.Max != long.Hold() {
		t.Errorf("after the deadline: holding %v, holds %+v", s.Holding, s.Holds)
	}
	if diff := cmp.Diff([]SkipCount{{"crash", "group-round", 2}}, s.BookmarksSkipped); diff != "" {
		t.Errorf("skipped -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]BookmarkCount{{"crash", 1}}, s.BookmarksInserted); diff != "" {
		t.Errorf("inserted -want +got:\n%s", diff)
	}
}

// TestPhasesErr is phasesErr's control: good phases pass, each kind of
// wrong ones is caught.
func TestPhasesErr(t *testing.T) {
	t0 := runtimetest.Epoch
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	good := []proto.RoundPhase{{Name: proto.PhaseBegin, Start: ms(0), End: ms(1), OK: true}, {Name: proto.PhasePrepare, Start: ms(1), End: ms(3), OK: true},
		{Name: proto.PhaseCommit, Start: ms(3), End: ms(4), OK: true}, {Name: proto.PhaseResume, Start: ms(4), End: ms(6), OK: true}}
	revoked := []proto.RoundPhase{{Name: proto.PhaseBegin, Start: ms(0), End: ms(1), OK: true}, {Name: proto.PhasePrepare, Start: ms(1), End: ms(9), OK: false},
		{Name: proto.PhaseRevoke, Start: ms(9), End: ms(10), OK: true}}
	edit := func(ps []proto.RoundPhase, f func([]proto.RoundPhase)) []proto.RoundPhase {
		ps = slices.Clone(ps)
		f(ps)
		return ps
	}
	for _, c := range []struct {
		name    string
		outcome string
		phases  []proto.RoundPhase
		ok      bool
	}{
		{"committed", proto.RoundCommitted, good, true},
		{"revoked", proto.RoundRevoked, revoked, true},
		{"none", proto.RoundCommitted, nil, false},
		{"a gap", proto.RoundCommitted, edit(good, func(ps []proto.RoundPhase) { ps[2].Start = ms(2) }), false},
		{"out of order", proto.RoundCommitted, edit(good, func(ps []proto.RoundPhase) { ps[1].Name, ps[2].Name = ps[2].Name, ps[1].Name }), false},
		{"not acknowledged", proto.RoundCommitted, edit(good, func(ps []proto.RoundPhase) { ps[3].OK = false }), false},
		{"open", proto.RoundCommitted, edit(good, func(ps []proto.RoundPhase) { ps[3].End = time.Time{} }), false},
		{"revoked, failed phase acknowledged", proto.RoundRevoked, edit(revoked, func(ps []proto.RoundPhase) { ps[1].OK = true }), false},
		{"revoked without revoke", proto.RoundRevoked, good, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := phasesErr(&proto.TagRound{TagID: "g1:c:1", Outcome: c.outcome, Reason: "prepare: vm02 did not answer", Phases: c.phases})
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok %v", err, c.ok)
			}
		})
	}
}

// TestRevokedRoundRetried: a round revoked because a member did not answer
// is tried again GroupRetry later, again while the member stays silent,
// and commits once it answers; after that the schedule goes on as before
// (the next regular round at its time, no retry in between). Without the
// retry the group would wait a whole interval for its first point (swarm
// seed 59).
func TestRevokedRoundRetried(t *testing.T) {
	gc := testGroup("vm01", "vm02")
	gc.CrashInterval = 10 * time.Minute
	n := newTagNet(t, 1, gc.Members, gc)
	n.writeEvery = time.Second
	silent := true
	n.drop = func(m netMsg) bool { return silent && m.to.Host() == "vm02" && m.phase() == proto.PhaseBegin }
	start := n.now
	type want struct {
		at       time.Duration // since start, when the rounds are looked at
		outcomes []string
		retried  int64
	}
	const noAnswer = proto.RoundRevoked + " begin: vm02 did not answer"
	for _, w := range []want{
		{10*time.Minute + 30*time.Second, []string{noAnswer}, 0},
		{11*time.Minute + 30*time.Second, []string{noAnswer, noAnswer}, 1},
		{12*time.Minute + 30*time.Second, []string{noAnswer, noAnswer, proto.RoundCommitted + " "}, 2},
		{19*time.Minute + 50*time.Second, []string{noAnswer, noAnswer, proto.RoundCommitted + " "}, 2},
		{20*time.Minute + 30*time.Second, []string{noAnswer, noAnswer, proto.RoundCommitted + " ", proto.RoundCommitted + " "}, 2},
	} {
		n.run(start.Add(w.at).Sub(n.now))
		rs := n.rounds()
		if diff := cmp.Diff(w.outcomes, outcomes(rs)); diff != "" {
			t.Fatalf("at +%v: rounds -want +got:\n%s", w.at, diff)
		}
		if got := n.node("vm01").e.a.Status().Rounds.Retried; got != w.retried {
			t.Errorf("at +%v: %d retried, want %d", w.at, got, w.retried)
		}
		silent = len(rs) < 2 // vm02 answers from the second retry on
	}
	n.settle()
	if diff := cmp.Diff(committedTags(n.rounds()), n.groupPoints("g1")); diff != "" {
		t.Errorf("group points -committed +got:\n%s", diff)
	}
	n.checkHolds(gc)
	n.checkWrites()
}
