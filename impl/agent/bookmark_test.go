package agent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
)

// crashTicks counts the crash-bookmark timer's firings in this agent
// process: inserted and skipped alike.
func crashTicks(e *env) int64 {
	s := e.a.Status()
	var n int64
	for _, c := range s.BookmarksInserted {
		if c.Kind == "crash" {
			n += c.Count
		}
	}
	for _, c := range s.BookmarksSkipped {
		if c.Kind == "crash" {
			n += c.Count
		}
	}
	return n
}

// TestBookmarkScheduleSurvivesRestart: the crash-bookmark schedule keeps
// its cadence across an agent restart and a machine crash: a restart 3
// minutes after a bookmark makes the next one due 2 minutes later (the
// policy's 5 minutes from the last), not 5 minutes after the restart,
// which left a 7-minute gap between crash points. A restart after the
// interval has passed bookmarks at once.
func TestBookmarkScheduleSurvivesRestart(t *testing.T) {
	for _, tt := range []struct {
		name         string
		machineCrash bool
		down         time.Duration // from the last bookmark to the restart
		wantWithin   time.Duration // after the restart, the next bookmark
	}{
		{"agent restart", false, 3 * time.Minute, 2 * time.Minute},
		{"machine crash", true, 3 * time.Minute, 2 * time.Minute},
		{"overdue", false, 7 * time.Minute, 0},
		{"machine crash, overdue", true, 26 * time.Minute, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			e := newEnv(t, g, nil)
			e.replicating()
			// Up to just after the first crash bookmark (5 min after protect).
			for crashTicks(e) == 0 {
				g.write(0, 0, fill(4096, 1))
				e.advance(time.Second, time.Second)
				if e.d.Now().Sub(runtimetest.Epoch) > time.Hour {
					t.Fatal("no crash bookmark in an hour")
				}
			}
			// The agent (or the whole machine) dies right after it, and
			// comes back tt.down later: nothing ran in between.
			if tt.machineCrash {
				g.crash()
			}
			e.a = New(e.cfg)
			e.d = runtimetest.NewAt(t, e.addr, e.a, e.d.Now().Add(tt.down))
			e.run()
			// The restarted process has counted nothing yet.
			if n := crashTicks(e); n != 0 {
				t.Fatalf("a new agent process counts %d crash bookmarks at once", n)
			}
			// Just before it is due: none. Within 10 s after: one.
			if tt.wantWithin > 0 {
				e.advance(tt.wantWithin-10*time.Second, 10*time.Second)
				if n := crashTicks(e); n != 0 {
					t.Fatalf("%d crash bookmarks %s after the restart, want 0 before %s", n, tt.wantWithin-10*time.Second, tt.wantWithin)
				}
			}
			e.advance(20*time.Second, 10*time.Second)
			if n := crashTicks(e); n != 1 {
				t.Fatalf("%d crash bookmarks %s after the restart, want 1: the schedule started again from zero", n, tt.wantWithin+10*time.Second)
			}
			// And the cadence goes on from there.
			e.advance(5*time.Minute, 10*time.Second)
			if n := crashTicks(e); n != 2 {
				t.Fatalf("%d crash bookmarks 5 min later, want 2", n)
			}
		})
	}
}

// TestBookmarkScheduleBeforeTheFirst: a restart before the first crash
// bookmark keeps the schedule's origin (the Protect): the first bookmark is
// due an interval after the protection began, not after the restart. Swarm
// seeds 18, 23, 46, 59: an agent or a machine restarting more often than
// the interval never made a point. The same for a restart that comes
// during a resync (a new gen keeps the schedule).
func TestBookmarkScheduleBeforeTheFirst(t *testing.T) {
	for _, tt := range []struct {
		name         string
		machineCrash bool
		resync       bool
	}{
		{"agent restart", false, false},
		{"machine crash", true, false},
		{"agent restart after a resync", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			e := newEnv(t, g, nil)
			e.replicating()
			every := proto.DefaultPolicy().CrashInterval
			if tt.resync {
				e.advance(time.Minute, 10*time.Second)
				e.protect(2)
			}
			// 3 minutes after the protection, before any bookmark, the
			// agent (or the machine) dies and is back at once.
			for e.d.Now().Sub(runtimetest.Epoch) < 3*time.Minute {
				g.write(0, 0, fill(4096, 1))
				e.advance(10*time.Second, 10*time.Second)
			}
			if n := crashTicks(e); n != 0 {
				t.Fatalf("%d crash bookmarks before the restart, want 0 (interval %s)", n, every)
			}
			if tt.machineCrash {
				g.crash()
			}
			e.start()
			e.run()
			// Due an interval after the protection: 10 s past that, one.
			e.advance(runtimetest.Epoch.Add(every+10*time.Second).Sub(e.d.Now()), 10*time.Second)
			if n := crashTicks(e); n != 1 {
				t.Fatalf("%d crash bookmarks %s after the protection, want 1: the schedule started over at the restart", n, every+10*time.Second)
			}
		})
	}
}

func TestBookmarkDue(t *testing.T) {
	now := runtimetest.Epoch.Add(time.Hour)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	for _, c := range []struct {
		name string
		last int64
		want time.Duration
	}{
		{"none yet", 0, 5 * time.Minute},
		{"3 min ago", at(-3 * time.Minute), 2 * time.Minute},
		{"just now", at(0), 5 * time.Minute},
		{"overdue", at(-26 * time.Minute), 0},
		{"clock stepped back", at(time.Hour), 5 * time.Minute},
	} {
		if got := bookmarkDue(now, c.last, 5*time.Minute); got != c.want {
			t.Errorf("%s: due in %s, want %s", c.name, got, c.want)
		}
	}
}

// crashInserted counts the crash bookmarks this agent process inserted,
// and how many of them were retries.
func crashInserted(e *env) (n, retried int64) {
	s := e.a.Status()
	for _, c := range s.BookmarksInserted {
		if c.Kind == "crash" {
			n += c.Count
		}
	}
	for _, c := range s.BookmarksRetried {
		if c.Kind == "crash" {
			retried += c.Count
		}
	}
	return n, retried
}

// TestBookmarkRetriedWhenDrained: a crash bookmark skipped because a
// restarted agent's records wait to be re-read as metadata is inserted as
// soon as the re-read is done, after every re-read record (so the point is
// the disks' image at its insertion), and the schedule is not moved: the
// next regular bookmark is due an interval after the skipped one. Swarm
// seeds 23 and 59: the agent died before its first crash bookmark and came
// back just after it was due; the overdue bookmark was skipped and the
// next came a whole interval later, 2 intervals after protection without
// a point.
func TestBookmarkRetriedWhenDrained(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	every := proto.DefaultPolicy().CrashInterval
	for e.d.Now().Sub(runtimetest.Epoch) < every-time.Minute {
		g.write(0, 0, fill(4096, 1))
		e.advance(10*time.Second, 10*time.Second)
	}
	// Writes the agent has not drained when it dies (the filter keeps them:
	// a restarted agent reads them again, as metadata).
	for i := range 8 {
		g.write(0, int64(i)*4096, fill(4096, byte(2+i)))
	}
	if n := crashTicks(e); n != 0 {
		t.Fatalf("%d crash bookmarks before the agent died, want 0", n)
	}
	lastBefore := g.filter.Stats().LastSeq
	// Back 11 s after the first bookmark was due: it is overdue.
	// The overdue bookmark fires before the process server has answered
	// the restarted stream's hello, so before any re-read.
	restart := runtimetest.Epoch.Add(every + 11*time.Second)
	e.a = New(e.cfg)
	e.auto = false
	e.d = runtimetest.NewAt(t, e.addr, e.a, restart)
	e.advance(time.Second, time.Second)
	e.auto = true
	e.run()
	s := e.a.Status()
	if diff := cmp.Diff([]SkipCount{{Kind: "crash", Reason: "undrained-metadata", Count: 1}}, s.BookmarksSkipped); diff != "" {
		t.Fatalf("the overdue bookmark at the restart (-want +got):\n%s", diff)
	}
	// The re-read takes a drain or two: then the bookmark is inserted.
	e.advance(30*time.Second, time.Second)
	if n, r := crashInserted(e); n != 1 || r != 1 {
		t.Fatalf("30 s after the restart: %d crash bookmarks inserted (%d retried), want 1 retried: the skipped one waits an interval", n, r)
	}
	var got []mark
	for _, m := range e.az.marks {
		if m.Kind == proto.Crash {
			got = append(got, m)
		}
	}
	if len(got) != 1 || got[0].Seq <= lastBefore {
		t.Fatalf("crash marks applied %+v, want one after record %d (the last re-read): its cut must follow the re-reads", got, lastBefore)
	}
	// The schedule is the skipped bookmark's: the next is due an interval
	// after it, not after the retry.
	e.advance(every-time.Minute, 10*time.Second)
	if n, _ := crashInserted(e); n != 1 {
		t.Fatalf("%d crash bookmarks %s after the restart, want 1 (the next is due at %s)", n, e.d.Now().Sub(restart), every)
	}
	e.advance(time.Minute, 10*time.Second)
	if n, r := crashInserted(e); n != 2 || r != 1 {
		t.Fatalf("%d crash bookmarks (%d retried) an interval after the restart, want 2 (1)", n, r)
	}
	e.checkReplica()
}
