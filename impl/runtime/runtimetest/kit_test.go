package runtimetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// kitActor uses the kit as a component would: named timers and an op table
// with the epoch rule. It records what it acted on.
type kitActor struct {
	timers runtime.Timers
	ops    runtime.Ops[string]
	log    []string
}

func (a *kitActor) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		a.timers.Set(ctx, "poll", time.Hour)
		a.timers.Set(ctx, "poll", time.Second) // replaces the hour
		a.timers.Set(ctx, "gone", time.Second)
		a.timers.Cancel(ctx, "gone")
		a.timers.Arm(ctx, "deadline", 3*time.Second)
		a.timers.Arm(ctx, "deadline", time.Hour) // pending: not pushed back
	case runtime.Timer:
		if !a.timers.Fired(ev) {
			a.log = append(a.log, "stale "+ev.Name)
			return
		}
		a.log = append(a.log, "timer "+ev.Name)
	case runtime.Done:
		tag, ok := a.ops.Complete(ev)
		if !ok {
			a.log = append(a.log, "dropped "+ev.Name)
			return
		}
		a.log = append(a.log, "done "+tag)
	}
}

func op(name string) runtime.Op {
	return runtime.Op{Name: name, Run: func(context.Context) (any, error) { return name, nil }}
}

// TestTimers: re-setting a name replaces its timer, a cancelled one never
// acts, Arm does not push a pending deadline back, and a firing that is no
// longer its name's pending timer is dropped.
func TestTimers(t *testing.T) {
	a := &kitActor{}
	d := New(t, "a:1", a)
	if diff := cmp.Diff([]string{"poll", "deadline"}, timerNames(d)); diff != "" {
		t.Errorf("pending timers after Started (-want +got):\n%s", diff)
	}
	d.Advance(time.Hour)
	if diff := cmp.Diff([]string{"timer poll", "timer deadline"}, a.log); diff != "" {
		t.Errorf("acted on (-want +got):\n%s", diff)
	}
	// A firing the driver queued before its name was set again is stale.
	a.log = nil
	d.Deliver(runtime.Timer{ID: 1, Name: "poll"})
	if a.timers.Pending("poll") {
		t.Error("poll pending after it fired")
	}
	if diff := cmp.Diff([]string{"stale poll"}, a.log); diff != "" {
		t.Errorf("old firing (-want +got):\n%s", diff)
	}
}

func timerNames(d *Driver) []string {
	var out []string
	for _, tm := range d.Timers() {
		out = append(out, tm.Name)
	}
	return out
}

// TestOpsEpoch: a completion comes back with its tag once; after Reset the
// completions of ops started before are dropped, except durable ones; a
// Done the table never started is not its own.
func TestOpsEpoch(t *testing.T) {
	a := &kitActor{}
	d := New(t, "a:1", a)
	d.AutoDeliverOps = false
	c := &ctx{d: d}
	a.ops.Start(c, op("old"), "old")
	a.ops.StartDurable(c, op("fsync"), "fsync")
	a.ops.Reset()
	a.ops.Start(c, op("new"), "new")
	if got := a.ops.InFlight(); got != 3 {
		t.Errorf("InFlight = %d, want 3", got)
	}
	d.DeliverOps()
	d.Deliver(runtime.Done{ID: 999, Name: "foreign"})
	want := []string{"dropped old", "done fsync", "done new", "dropped foreign"}
	if diff := cmp.Diff(want, a.log); diff != "" {
		t.Errorf("completions (-want +got):\n%s", diff)
	}
	if a.ops.InFlight() != 0 || a.ops.Epoch() != 1 {
		t.Errorf("InFlight %d epoch %d, want 0 and 1", a.ops.InFlight(), a.ops.Epoch())
	}
}

// TestCallbacks: the agent's idiom, a completion function per op.
func TestCallbacks(t *testing.T) {
	var cb runtime.Callbacks
	var got []string
	h := runtime.Actor(actorFunc(func(ctx runtime.Context, ev runtime.Event) {
		switch ev := ev.(type) {
		case runtime.Started:
			cb.Go(ctx, op("stale"), func(runtime.Context, runtime.Done) { got = append(got, "stale ran") })
			cb.Reset()
			cb.Go(ctx, op("read"), func(_ runtime.Context, d runtime.Done) { got = append(got, "read "+d.Value.(string)) })
			cb.GoDurable(ctx, runtime.Op{Name: "sync", Run: func(context.Context) (any, error) { return nil, errors.New("disk gone") }},
				func(_ runtime.Context, d runtime.Done) { got = append(got, "sync "+d.Err.Error()) })
		case runtime.Done:
			cb.Dispatch(ctx, ev)
		}
	}))
	New(t, "a:1", h)
	if diff := cmp.Diff([]string{"read read", "sync disk gone"}, got); diff != "" {
		t.Errorf("callbacks (-want +got):\n%s", diff)
	}
}

type actorFunc func(runtime.Context, runtime.Event)

func (f actorFunc) Handle(ctx runtime.Context, ev runtime.Event) { f(ctx, ev) }

// TestInspect: the driver reads the actor between events, and a panicking
// reader is an error, not a crash.
func TestInspect(t *testing.T) {
	a := &kitActor{}
	d := New(t, "a:1", a)
	d.Advance(2 * time.Second)
	n, err := runtime.InspectAs(context.Background(), d, "a:1", func(x runtime.Actor) int { return len(x.(*kitActor).log) })
	if err != nil || n != 1 {
		t.Errorf("Inspect = %d, %v; want 1, nil", n, err)
	}
	if _, err := d.Inspect(context.Background(), "b:2", func(runtime.Actor) any { return nil }); !errors.Is(err, runtime.ErrNoActor) {
		t.Errorf("Inspect of another address: %v, want ErrNoActor", err)
	}
	if _, err := d.Inspect(context.Background(), "a:1", func(runtime.Actor) any { panic("reader bug") }); !errors.Is(err, runtime.ErrInspectPanic) {
		t.Errorf("panicking Inspect: %v, want ErrInspectPanic", err)
	}
}
