package runtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRealTimersKit: on the real clock, a name set again fires once, at its
// new time, and a cancelled name never acts.
func TestRealTimersKit(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	var tm Timers
	fired := make(chan string, 10)
	f, _, _ := newRecorder(func(ctx Context, ev Event) {
		switch ev := ev.(type) {
		case Started:
			tm.Set(ctx, "poll", time.Hour)
			tm.Set(ctx, "poll", 10*time.Millisecond)
			tm.Set(ctx, "gone", 5*time.Millisecond)
			tm.Cancel(ctx, "gone")
			tm.Set(ctx, "last", 50*time.Millisecond)
		case Timer:
			if tm.Fired(ev) {
				fired <- ev.Name
			}
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		select {
		case n := <-fired:
			got = append(got, n)
		case <-time.After(20 * time.Second):
			t.Fatalf("gave up waiting for timers; got %q", got)
		}
	}
	stop(t, r)
	if len(got) != 2 || got[0] != "poll" || got[1] != "last" {
		t.Errorf("fired %q, want [poll last]", got)
	}
}

// TestRealInspect: Inspect reads the actor on its own goroutine (-race
// checks that the recorder's unguarded events are safe to read so); an
// unknown or crashed actor is an error; a panicking reader does not kill it.
func TestRealInspect(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	f, _, seen := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.After(0, "tick")
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seen, "timer tick")
	ctx := context.Background()
	n, err := InspectAs(ctx, r, addrA, func(a Actor) int { return len(a.(*recorder).events) })
	if err != nil || n != 2 {
		t.Errorf("Inspect = %d, %v; want 2 events, nil", n, err)
	}
	if _, err := r.Inspect(ctx, addrA, func(Actor) any { panic("reader bug") }); !errors.Is(err, ErrInspectPanic) {
		t.Errorf("panicking reader: %v, want ErrInspectPanic", err)
	}
	if _, err := r.Inspect(ctx, addrA, func(Actor) any { return nil }); err != nil {
		t.Errorf("Inspect after a panicking reader: %v, want the actor alive", err)
	}
	if _, err := r.Inspect(ctx, "nobody:1", func(Actor) any { return nil }); !errors.Is(err, ErrNoActor) {
		t.Errorf("Inspect of an unknown actor: %v, want ErrNoActor", err)
	}
	if err := r.Crash(addrA); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Inspect(ctx, addrA, func(Actor) any { return nil }); !errors.Is(err, ErrActorDown) {
		t.Errorf("Inspect of a crashed actor: %v, want ErrActorDown", err)
	}
	stop(t, r)
}

// TestStopCancelsOps: Stop cancels a running Op's context, and waits for it
// to return.
func TestStopCancelsOps(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	running := make(chan struct{})
	var sawCancel bool // written by the Op, read after Stop: -race checks Stop waited
	f, _, _ := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Start(Op{Name: "hang-until-cancelled", Run: func(ctx context.Context) (any, error) {
				close(running)
				<-ctx.Done()
				sawCancel = true
				return nil, ctx.Err()
			}})
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	<-running
	stop(t, r)
	if !sawCancel {
		t.Error("Stop returned before the Op saw its context cancelled")
	}
}

// TestStopBounded: an Op that ignores its context no longer blocks Stop
// forever: Stop gives up after StopTimeout with ErrStopTimeout.
func TestStopBounded(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback, StopTimeout: 50 * time.Millisecond})
	hung := make(chan struct{})
	defer close(hung) // let the abandoned goroutine end with the test
	running := make(chan struct{})
	f, _, _ := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Start(Op{Name: "hung", Run: func(context.Context) (any, error) {
				close(running)
				<-hung
				return nil, nil
			}})
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	<-running
	start := time.Now()
	err := r.Stop()
	if !errors.Is(err, ErrStopTimeout) {
		t.Errorf("Stop with a hung Op: %v, want ErrStopTimeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Stop took %s with a 50ms StopTimeout", took)
	}
}

// TestRealOpsEpoch: on the real runtime too, a completion of an epoch that
// Reset ended is dropped and a live one comes back with its tag.
func TestRealOpsEpoch(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	var ops Ops[string]
	got := make(chan string, 10)
	f, _, _ := newRecorder(func(ctx Context, ev Event) {
		switch ev := ev.(type) {
		case Started:
			ops.Start(ctx, Op{Name: "stale", Run: func(context.Context) (any, error) { return nil, nil }}, "stale")
			ops.Reset()
			ops.Start(ctx, Op{Name: "fresh", Run: func(context.Context) (any, error) { return nil, nil }}, "fresh")
		case Done:
			if tag, ok := ops.Complete(ev); ok {
				got <- tag
			} else {
				got <- "dropped " + ev.Name
			}
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("gave up waiting for completions; got %v", seen)
		}
	}
	stop(t, r)
	if !seen["fresh"] || !seen["dropped stale"] {
		t.Errorf("completions %v, want fresh and dropped stale", seen)
	}
}
