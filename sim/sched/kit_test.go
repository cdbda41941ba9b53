package sched_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/sim/sched"
)

// kitUser sets a named timer, replaces it while the old firing is already
// queued in the simulator, and runs ops across an epoch change.
type kitUser struct {
	timers runtime.Timers
	ops    runtime.Ops[string]
	log    *[]string
}

func (a *kitUser) Handle(ctx runtime.Context, ev runtime.Event) {
	stamp := func(s string) { *a.log = append(*a.log, s+"@"+ctx.Now().Sub(sched.Epoch).String()) }
	switch ev := ev.(type) {
	case runtime.Started:
		a.timers.Set(ctx, "poll", time.Second)
		a.timers.Set(ctx, "replace", 500*time.Millisecond)
		a.ops.Start(ctx, runtime.Op{Name: "stale", Run: func(context.Context) (any, error) { return nil, nil }}, "stale")
		a.ops.Reset()
		a.ops.Start(ctx, runtime.Op{Name: "fresh", Run: func(ctx context.Context) (any, error) { return nil, ctx.Err() }}, "fresh")
	case runtime.Timer:
		if !a.timers.Fired(ev) {
			stamp("stale-timer " + ev.Name)
			return
		}
		stamp("timer " + ev.Name)
		if ev.Name == "replace" {
			a.timers.Set(ctx, "poll", 2*time.Second) // the 1 s firing is void
		}
	case runtime.Done:
		if tag, ok := a.ops.Complete(ev); ok {
			stamp("done " + tag)
		}
	}
}

// TestKitInSim: the kit behaves in the simulator as under the other
// drivers — a replaced timer fires once, at its new time; a completion
// of the previous epoch is dropped; an op's context is never cancelled.
func TestKitInSim(t *testing.T) {
	s := sched.New(1, nil, nil)
	var log []string
	must(t, s.Spawn("a:1", func() runtime.Actor { return &kitUser{log: &log} }))
	s.RunFor(time.Minute)
	want := []string{"done fresh@200µs", "timer replace@500ms", "timer poll@2.5s"}
	if diff := cmp.Diff(want, log); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

// TestSimInspect: Inspect runs at once between events, takes no virtual
// time, and tells an unknown actor from a crashed one.
func TestSimInspect(t *testing.T) {
	s := sched.New(1, nil, nil)
	var log []string
	must(t, s.Spawn("a:1", func() runtime.Actor { return &kitUser{log: &log} }))
	// 600 ms: before the void 1 s firing of poll. (Step skips a stale item
	// and runs the next event even past RunUntil's deadline — a known quirk
	// left alone here because fixing it moves events in every trace.)
	s.RunFor(600 * time.Millisecond)
	ctx := context.Background()
	n, err := runtime.InspectAs(ctx, s, "a:1", func(a runtime.Actor) int { return a.(*kitUser).ops.InFlight() })
	if err != nil || n != 0 {
		t.Errorf("Inspect = %d, %v; want 0 ops in flight, nil", n, err)
	}
	if s.Elapsed() != 600*time.Millisecond {
		t.Errorf("Inspect moved the clock to %s", s.Elapsed())
	}
	if _, err := s.Inspect(ctx, "a:1", func(runtime.Actor) any { panic("reader bug") }); !errors.Is(err, runtime.ErrInspectPanic) {
		t.Errorf("panicking reader: %v, want ErrInspectPanic", err)
	}
	if _, err := s.Inspect(ctx, "b:1", func(runtime.Actor) any { return nil }); !errors.Is(err, runtime.ErrNoActor) {
		t.Errorf("unknown actor: %v, want ErrNoActor", err)
	}
	s.Crash("a")
	if _, err := s.Inspect(ctx, "a:1", func(runtime.Actor) any { return nil }); !errors.Is(err, runtime.ErrActorDown) {
		t.Errorf("crashed actor: %v, want ErrActorDown", err)
	}
}
