package sched_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
	"github.com/v2a-dr/v2a/sim/net"
	"github.com/v2a-dr/v2a/sim/sched"
)

const kindPing wire.Kind = 0xfe01

type ping struct{ N uint64 }

func (*ping) WireKind() wire.Kind           { return kindPing }
func (p *ping) MarshalWire(e *wire.Encoder) { e.Uint(p.N) }
func (p *ping) UnmarshalWire(d *wire.Decoder) error {
	p.N = d.Uint()
	return d.Err()
}

func init() { wire.Register(kindPing, "test.ping", func() wire.Msg { return &ping{} }) }

// pinger sends a ping to its peer after a random delay and answers every
// ping with the next number, up to a limit. It records what it saw.
type pinger struct {
	peer  runtime.Addr
	limit uint64
	seen  *[]string
}

func (p *pinger) Handle(ctx runtime.Context, ev runtime.Event) {
	switch e := ev.(type) {
	case runtime.Started:
		ctx.After(time.Duration(ctx.Rand().IntN(1000))*time.Millisecond, "kick")
	case runtime.Timer:
		ctx.Send(p.peer, wire.Encode(&ping{N: 1}))
	case runtime.Message:
		m, err := wire.Decode(e.Data)
		if err != nil {
			*p.seen = append(*p.seen, "bad:"+err.Error())
			return
		}
		n := m.(*ping).N
		*p.seen = append(*p.seen, fmt.Sprintf("%s@%s:%d", ctx.Self(), sched.FormatElapsed(ctx.Now().Sub(sched.Epoch)), n))
		if n < p.limit {
			ctx.Send(e.From, wire.Encode(&ping{N: n + 1}))
		}
	}
}

func newWorld(t *testing.T, seed uint64) (*sched.Sim, *[]string) {
	t.Helper()
	n := net.New()
	for _, h := range []net.Host{{Name: "a", Site: net.OnPrem}, {Name: "b", Site: net.Azure, Public: true}} {
		if err := n.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}
	s := sched.New(seed, n, nil)
	var seen []string
	a, b := runtime.MakeAddr("a", 1), runtime.MakeAddr("b", 2)
	must(t, s.Spawn(a, func() runtime.Actor { return &pinger{peer: b, limit: 6, seen: &seen} }))
	must(t, s.Spawn(b, func() runtime.Actor { return &pinger{peer: a, limit: 6, seen: &seen} }))
	return s, &seen
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSameSeedSameTrace(t *testing.T) {
	run := func(seed uint64) (string, []string) {
		s, seen := newWorld(t, seed)
		s.RunFor(10 * time.Second)
		return s.Trace().Sum(), *seen
	}
	h1, seen1 := run(1)
	h2, seen2 := run(1)
	h3, _ := run(2)
	if h1 != h2 {
		t.Fatalf("same seed, different traces: %s vs %s", h1, h2)
	}
	if diff := cmp.Diff(seen1, seen2); diff != "" {
		t.Fatalf("same seed, different histories:\n%s", diff)
	}
	if h1 == h3 {
		t.Fatalf("seeds 1 and 2 gave the same trace %s: the seed does not reach the actors", h1)
	}
	if len(seen1) != 12 {
		t.Fatalf("saw %d pings, want 12 (two chains of 6): %v", len(seen1), seen1)
	}
}

type timerActor struct{ fired *[]string }

func (a *timerActor) Handle(ctx runtime.Context, ev runtime.Event) {
	switch e := ev.(type) {
	case runtime.Started:
		ctx.After(time.Second, "keep")
		id := ctx.After(2*time.Second, "cancelled")
		ctx.After(3*time.Second, "late")
		ctx.Cancel(id)
	case runtime.Timer:
		*a.fired = append(*a.fired, fmt.Sprintf("%s@%v", e.Name, ctx.Now().Sub(sched.Epoch)))
	}
}

func TestTimers(t *testing.T) {
	s := sched.New(1, nil, nil)
	var fired []string
	must(t, s.Spawn("h:1", func() runtime.Actor { return &timerActor{fired: &fired} }))
	s.RunFor(10 * time.Second)
	want := []string{"keep@1s", "late@3s"}
	if diff := cmp.Diff(want, fired); diff != "" {
		t.Fatalf("timers (-want +got):\n%s", diff)
	}
	if got := s.Elapsed(); got != 10*time.Second {
		t.Fatalf("clock at %v after RunFor(10s)", got)
	}
}

func TestCrashDropsPendingAndRestartRebuilds(t *testing.T) {
	s := sched.New(1, nil, nil)
	var fired []string
	starts := 0
	must(t, s.Spawn("h:1", func() runtime.Actor { starts++; return &timerActor{fired: &fired} }))
	s.RunFor(1500 * time.Millisecond) // "keep" fired
	s.Crash("h")
	s.RunFor(5 * time.Second) // "late" belonged to the crashed incarnation
	s.Restart("h")
	s.RunFor(5 * time.Second)
	want := []string{"keep@1s", "keep@7.5s", "late@9.5s"}
	if diff := cmp.Diff(want, fired); diff != "" {
		t.Fatalf("timers across a crash (-want +got):\n%s", diff)
	}
	if starts != 2 {
		t.Fatalf("factory called %d times, want 2", starts)
	}
}

type ioActor struct {
	peer string
	done *[]string
}

func (a *ioActor) Handle(ctx runtime.Context, ev runtime.Event) {
	switch e := ev.(type) {
	case runtime.Started:
		ctx.Start(runtime.Op{Name: "upload", Peer: a.peer, Bytes: 12_500_000, Run: func(context.Context) (any, error) { return 42, nil }})
		ctx.Start(runtime.Op{Name: "fail", Run: func(context.Context) (any, error) { return nil, errors.New("boom") }})
		ctx.Start(runtime.Op{Name: "panic", Run: func(context.Context) (any, error) { panic("oops") }})
	case runtime.Done:
		*a.done = append(*a.done, fmt.Sprintf("%s %v %v @%v", e.Name, e.Value, e.Err, ctx.Now().Sub(sched.Epoch)))
	}
}

func TestOpsCompleteAfterNetworkTime(t *testing.T) {
	n := net.New()
	must(t, n.AddHost(net.Host{Name: "ps", Site: net.OnPrem}))
	must(t, n.AddHost(net.Host{Name: "blob", Site: net.Azure, Public: true}))
	s := sched.New(1, n, nil)
	var done []string
	must(t, s.Spawn("ps:9443", func() runtime.Actor { return &ioActor{peer: "blob", done: &done} }))
	s.RunFor(time.Minute)
	want := []string{
		"fail <nil> boom @200µs",
		"panic <nil> sched: op panic panicked: oops @200µs",
		// 12.5 MB over 12.5 MB/s, plus 20 ms there and 20 ms back.
		"upload 42 <nil> @1.04s",
	}
	if diff := cmp.Diff(want, done); diff != "" {
		t.Fatalf("op completions (-want +got):\n%s", diff)
	}
}

// TestOnAdvance: an observer sees every forward move of the clock, before
// the events due then run (the timer that fires at 1s has not fired when
// the observer hears of 1s), up to the deadline; and observing leaves the
// trace as it was.
func TestOnAdvance(t *testing.T) {
	s := sched.New(1, nil, nil)
	var fired []string
	must(t, s.Spawn("h:1", func() runtime.Actor { return &timerActor{fired: &fired} }))
	var moves []string
	s.OnAdvance(func(to time.Time) {
		moves = append(moves, fmt.Sprintf("%v fired=%d now=%v", to.Sub(sched.Epoch), len(fired), s.Elapsed()))
	})
	s.RunFor(10 * time.Second)
	// 2s: the cancelled timer's turn moves the clock though it fires not.
	want := []string{"1s fired=0 now=0s", "2s fired=1 now=1s", "3s fired=1 now=2s", "10s fired=2 now=3s"}
	if diff := cmp.Diff(want, moves); diff != "" {
		t.Fatalf("advances (-want +got):\n%s", diff)
	}

	plain, _ := newWorld(t, 1)
	plain.RunFor(10 * time.Second)
	watched, _ := newWorld(t, 1)
	n := 0
	watched.OnAdvance(func(time.Time) { n++ })
	watched.RunFor(10 * time.Second)
	if n == 0 {
		t.Fatal("the observer never ran")
	}
	if plain.Trace().Sum() != watched.Trace().Sum() {
		t.Fatal("an observer changed the trace")
	}
}

// TestRunForStopsAtItsDeadline: an event dropped at the head of the queue
// (a cancelled timer) does not let the run go on to the event after it,
// past the deadline. (Before the fix, RunFor(2.5s) ran "late" at 3 s, and
// the clock stood at 3 s, not 2.5 s.)
func TestRunForStopsAtItsDeadline(t *testing.T) {
	s := sched.New(1, nil, nil)
	var fired []string
	must(t, s.Spawn("h:1", func() runtime.Actor { return &timerActor{fired: &fired} }))
	s.RunFor(2500 * time.Millisecond)
	if diff := cmp.Diff([]string{"keep@1s"}, fired); diff != "" {
		t.Fatalf("timers by 2.5 s (-want +got):\n%s", diff)
	}
	if got := s.Elapsed(); got != 2500*time.Millisecond {
		t.Fatalf("clock at %v after RunFor(2.5s)", got)
	}
	if s.RunWhile(sched.Epoch.Add(2900*time.Millisecond), func() bool { return len(fired) < 2 }) || len(fired) != 1 {
		t.Fatalf("RunWhile to 2.9 s: fired %v", fired)
	}
	s.RunFor(time.Second)
	if diff := cmp.Diff([]string{"keep@1s", "late@3s"}, fired); diff != "" {
		t.Fatalf("timers by 3.9 s (-want +got):\n%s", diff)
	}
}
