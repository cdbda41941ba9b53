package sched_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/sim/sched"
)

// every is an observer that keeps its own due time, as progress on a
// terminal does: it records the first move that reaches each due time.
func every(s *sched.Sim, d time.Duration, got *[]time.Duration) {
	next := s.Now().Add(d)
	s.OnAdvance(func(to time.Time) {
		if to.Before(next) {
			return
		}
		next = to.Add(d)
		*got = append(*got, to.Sub(sched.Epoch))
	})
}

// TestOnAdvanceDue: an observer computing its own due time over
// OnAdvance is called once per due time reached, at the move that
// reaches it.
func TestOnAdvanceDue(t *testing.T) {
	tests := []struct {
		name  string
		ticks time.Duration // a harness callback every ticks (0: none)
		every time.Duration
		run   time.Duration
		want  []time.Duration
	}{
		{name: "an empty queue jumps to the deadline: one call", every: 3 * time.Second, run: 10 * time.Second, want: []time.Duration{10 * time.Second}},
		{name: "events every second, called every 3s", ticks: time.Second, every: 3 * time.Second, run: 10 * time.Second,
			want: []time.Duration{3 * time.Second, 6 * time.Second, 9 * time.Second}},
		{name: "events sparser than every", ticks: 5 * time.Second, every: time.Second, run: 12 * time.Second,
			want: []time.Duration{5 * time.Second, 10 * time.Second, 12 * time.Second}},
		{name: "not due before every", ticks: time.Second, every: time.Hour, run: 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sched.New(1, nil, nil)
			if tc.ticks > 0 {
				var tick func()
				tick = func() { s.After(tc.ticks, "tick", tick) }
				tick()
			}
			var got []time.Duration
			every(s, tc.every, &got)
			s.RunFor(tc.run)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("calls at (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOnAdvanceOrder: every observer is called once per move of the
// clock, in the order they were added, each before the clock moves (Now
// is still the old time); a move to the same time calls none (two events
// at one time), and neither does a deadline already reached.
func TestOnAdvanceOrder(t *testing.T) {
	s := sched.New(1, nil, nil)
	s.After(time.Second, "a", func() {})
	s.After(time.Second, "b", func() {})
	s.After(3*time.Second, "c", func() {})
	var calls []string
	for _, name := range []string{"first", "second", "third"} {
		s.OnAdvance(func(to time.Time) {
			calls = append(calls, fmt.Sprintf("%s %v→%v", name, s.Elapsed(), to.Sub(sched.Epoch)))
		})
	}
	s.RunFor(5 * time.Second)
	s.RunUntil(s.Now()) // nowhere to move
	want := []string{
		"first 0s→1s", "second 0s→1s", "third 0s→1s",
		"first 1s→3s", "second 1s→3s", "third 1s→3s",
		"first 3s→5s", "second 3s→5s", "third 3s→5s",
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Fatalf("calls (-want +got):\n%s", diff)
	}
}

// TestOnAdvanceLeavesTheTrace: a run observed by several observers (one
// reading the world at every move, one keeping a due time) makes the trace
// an unobserved one makes; the observers are called (the comparison is
// not vacuous).
func TestOnAdvanceLeavesTheTrace(t *testing.T) {
	run := func(observe bool) (string, int) {
		s, _ := newWorld(t, 3)
		calls := 0
		var due []time.Duration
		if observe {
			s.OnAdvance(func(time.Time) { _ = s.Pending(); calls++ })
			every(s, 100*time.Millisecond, &due)
		}
		s.RunFor(10 * time.Second)
		return s.Trace().Sum(), calls + len(due)
	}
	plain, _ := run(false)
	observed, calls := run(true)
	if calls == 0 {
		t.Fatal("the observers were never called")
	}
	if plain != observed {
		t.Fatalf("trace %s observed, %s not", observed, plain)
	}
}
