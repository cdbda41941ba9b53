package sched_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/sim/sched"
)

func TestOnAdvanceEvery(t *testing.T) {
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
			s.OnAdvanceEvery(tc.every, func(now time.Time) { got = append(got, now.Sub(sched.Epoch)) })
			s.RunFor(tc.run)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("calls at (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOnAdvanceEveryLeavesTheTrace: an observed run makes the trace an
// unobserved one makes; the observer is called (the comparison is not
// vacuous).
func TestOnAdvanceEveryLeavesTheTrace(t *testing.T) {
	run := func(observe bool) (string, int) {
		s, _ := newWorld(t, 3)
		calls := 0
		if observe {
			s.OnAdvanceEvery(100*time.Millisecond, func(time.Time) { calls++ })
		}
		s.RunFor(10 * time.Second)
		return s.Trace().Sum(), calls
	}
	plain, _ := run(false)
	observed, calls := run(true)
	if calls == 0 {
		t.Fatal("the observer was never called")
	}
	if plain != observed {
		t.Fatalf("trace %s observed, %s not", observed, plain)
	}
}
