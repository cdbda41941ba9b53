package sched_test

import (
	"context"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/sim/sched"
)

// An endless run (a ticker that always reschedules itself, as a deployed
// replication does) returns promptly once its context is cancelled from
// another goroutine, as Ctrl-C does; and the clock stays where the last
// event left it.
func TestInterruptStopsEndlessRun(t *testing.T) {
	s := sched.New(1, nil, nil)
	ticks := 0
	var tick func()
	tick = func() {
		ticks++
		s.After(time.Millisecond, "tick", tick)
	}
	s.After(0, "tick", tick)
	ctx, cancel := context.WithCancel(context.Background())
	defer s.StopOn(ctx)()
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		s.RunFor(10000 * time.Hour) // 3.6e10 ticks: never ends by itself
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("RunFor did not return within 20 s of the interrupt")
	}
	if !s.Interrupted() {
		t.Fatal("Interrupted() = false after the context was cancelled")
	}
	if ticks == 0 {
		t.Fatal("no event ran before the interrupt: the test judged nothing")
	}
	if s.Elapsed() >= 10000*time.Hour {
		t.Fatalf("clock moved to the deadline (%s) although the run was interrupted", s.Elapsed())
	}
	t.Logf("interrupted after %d ticks, %s of virtual time, %s of wall time", ticks, s.Elapsed(), time.Since(start))
	// Later runs return at once.
	n := ticks
	s.RunFor(time.Hour)
	if s.RunWhile(s.Now().Add(time.Hour), func() bool { return true }) || ticks != n {
		t.Fatalf("a run after the interrupt still stepped (%d ticks, was %d)", ticks, n)
	}
}
