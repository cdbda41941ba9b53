// Package runtimetest drives an actor by hand in unit tests: a Context that
// records what the actor sends, keeps its timers, and runs its I/O at once,
// so a test can step a component through a protocol event by event and
// assert on every message. (The deterministic simulator in sim/sched is the
// driver for whole-system tests; impl must not import it.)
package runtimetest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Epoch is where the fake clock starts.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Sent is one message the actor sent.
type Sent struct {
	To  runtime.Addr
	Msg wire.Msg // decoded; a frame that does not decode fails the test
}

// Timer is a pending timer.
type Timer struct {
	ID   runtime.TimerID
	Name string
	At   time.Time
}

// Driver owns one actor and its fake Context.
type Driver struct {
	t      testing.TB
	Addr   runtime.Addr
	Actor  runtime.Actor
	now    time.Time
	rnd    *rand.Rand
	log    *slog.Logger
	nextID uint64
	timers map[runtime.TimerID]Timer
	sent   []Sent
	done   []runtime.Done // completions not delivered yet
	ops    map[runtime.OpID]runtime.Op
	// AutoDeliverOps delivers each Done right after the event that started
	// the op (default true). Set false to hold completions and deliver
	// them with DeliverOps, e.g. to test what happens while I/O is pending.
	AutoDeliverOps bool
}

// New starts the actor at addr: it delivers Started and whatever ops that
// started complete.
func New(t testing.TB, addr runtime.Addr, a runtime.Actor) *Driver {
	return NewAt(t, addr, a, Epoch)
}

// NewAt is New with the fake clock at now: a restarted actor sees the time
// go on from where its previous incarnation's driver left it.
func NewAt(t testing.TB, addr runtime.Addr, a runtime.Actor, now time.Time) *Driver {
	return newDriver(t, addr, a, now, 1)
}

// NewSeeded is New with the actor's random source seeded from seed (New
// uses 1): a restarted actor in the simulator draws from a new source too.
func NewSeeded(t testing.TB, addr runtime.Addr, a runtime.Actor, seed uint64) *Driver {
	return newDriver(t, addr, a, Epoch, seed)
}

func newDriver(t testing.TB, addr runtime.Addr, a runtime.Actor, now time.Time, seed uint64) *Driver {
	d := &Driver{t: t, Addr: addr, Actor: a, now: now, rnd: rand.New(rand.NewPCG(seed, seed+1)),
		log: slog.New(slog.DiscardHandler), timers: map[runtime.TimerID]Timer{}, AutoDeliverOps: true}
	d.Deliver(runtime.Started{})
	return d
}

// SetLogger replaces the discard logger (e.g. with one writing to t.Log).
func (d *Driver) SetLogger(l *slog.Logger) { d.log = l }

// Now is the fake clock.
func (d *Driver) Now() time.Time { return d.now }

// Deliver hands one event to the actor, then (with AutoDeliverOps) the
// completions of the ops it started, until none are left.
func (d *Driver) Deliver(ev runtime.Event) {
	d.t.Helper()
	if dn, ok := ev.(runtime.Done); ok {
		delete(d.ops, dn.ID) // Ops lists held ones only; and the op may hold much
	}
	d.Actor.Handle(&ctx{d: d}, ev)
	for d.AutoDeliverOps && len(d.done) > 0 {
		dn := d.done[0]
		d.done = d.done[1:]
		delete(d.ops, dn.ID)
		d.Actor.Handle(&ctx{d: d}, dn)
	}
}

// DeliverOps delivers held op completions, oldest first.
func (d *Driver) DeliverOps() {
	d.t.Helper()
	for len(d.done) > 0 {
		dn := d.done[0]
		d.done = d.done[1:]
		d.Deliver(dn)
	}
}

// DeliverOpsWhere delivers the held op completions that match, oldest
// first, and keeps holding the others: a test lets one kind of I/O (a
// group commit's fsync) finish while another (an upload) stays stalled.
func (d *Driver) DeliverOpsWhere(match func(runtime.Done) bool) {
	d.t.Helper()
	for {
		i := slices.IndexFunc(d.done, match)
		if i < 0 {
			return
		}
		dn := d.done[i]
		d.done = slices.Delete(d.done, i, i+1)
		d.Deliver(dn)
	}
}

// Ops are the ops whose completions are held, oldest first: a test checks
// what an actor started (its name, its declared disk work) before letting
// it complete.
func (d *Driver) Ops() []runtime.Op {
	out := make([]runtime.Op, 0, len(d.done))
	for _, dn := range d.done {
		out = append(out, d.ops[dn.ID])
	}
	return out
}

// PendingOps is the number of held op completions.
func (d *Driver) PendingOps() int { return len(d.done) }

// Receive delivers msg as if from sender.
func (d *Driver) Receive(from runtime.Addr, msg wire.Msg) {
	d.t.Helper()
	d.Deliver(runtime.Message{From: from, Data: wire.Encode(msg)})
}

// ReceiveFrame delivers raw bytes (e.g. a corrupt frame) as a message.
func (d *Driver) ReceiveFrame(from runtime.Addr, data []byte) {
	d.t.Helper()
	d.Deliver(runtime.Message{From: from, Data: data})
}

// Advance moves the clock by dur, firing due timers in time order.
func (d *Driver) Advance(dur time.Duration) {
	d.t.Helper()
	end := d.now.Add(dur)
	for {
		next, ok := d.nextTimer(end)
		if !ok {
			break
		}
		delete(d.timers, next.ID)
		if next.At.After(d.now) {
			d.now = next.At
		}
		d.Deliver(runtime.Timer{ID: next.ID, Name: next.Name})
	}
	d.now = end
}

func (d *Driver) nextTimer(end time.Time) (Timer, bool) {
	var best Timer
	found := false
	for _, tm := range d.timers {
		if tm.At.After(end) {
			continue
		}
		if !found || tm.At.Before(best.At) || (tm.At.Equal(best.At) && tm.ID < best.ID) {
			best, found = tm, true
		}
	}
	return best, found
}

// Timers lists pending timers by time.
func (d *Driver) Timers() []Timer {
	out := make([]Timer, 0, len(d.timers))
	for _, tm := range d.timers {
		out = append(out, tm)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Sent returns and forgets the messages sent since the last call.
func (d *Driver) Sent() []Sent {
	s := d.sent
	d.sent = nil
	return s
}

// SentTo returns and forgets the messages sent to addr, keeping the rest.
func (d *Driver) SentTo(addr runtime.Addr) []wire.Msg {
	var out []wire.Msg
	var keep []Sent
	for _, s := range d.sent {
		if s.To == addr {
			out = append(out, s.Msg)
		} else {
			keep = append(keep, s)
		}
	}
	d.sent = keep
	return out
}

type ctx struct{ d *Driver }

func (c *ctx) Self() runtime.Addr        { return c.d.Addr }
func (c *ctx) Now() time.Time            { return c.d.now }
func (c *ctx) Rand() *rand.Rand          { return c.d.rnd }
func (c *ctx) Log() *slog.Logger         { return c.d.log }
func (c *ctx) Cancel(id runtime.TimerID) { delete(c.d.timers, id) }
func (c *ctx) After(dur time.Duration, name string) runtime.TimerID {
	c.d.nextID++
	id := runtime.TimerID(c.d.nextID)
	c.d.timers[id] = Timer{ID: id, Name: name, At: c.d.now.Add(dur)}
	return id
}

func (c *ctx) Send(to runtime.Addr, data []byte) {
	m, err := wire.Decode(data)
	if err != nil {
		c.d.t.Errorf("runtimetest: %s sent an undecodable frame to %s: %v", c.d.Addr, to, err)
		return
	}
	c.d.sent = append(c.d.sent, Sent{To: to, Msg: m})
}

func (c *ctx) Start(op runtime.Op) runtime.OpID {
	c.d.nextID++
	id := runtime.OpID(c.d.nextID)
	v, err := run(op)
	if c.d.ops == nil {
		c.d.ops = map[runtime.OpID]runtime.Op{}
	}
	c.d.ops[id] = op
	c.d.done = append(c.d.done, runtime.Done{ID: id, Name: op.Name, Value: v, Err: err})
	return id
}

func run(op runtime.Op) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("runtimetest: op %s panicked: %v", op.Name, r)
		}
	}()
	// Ops run synchronously, in queue order: nothing can cancel one.
	return op.Run(context.Background())
}

// Inspect implements runtime.Inspector for the driven actor: fn runs at
// once (the test is between events). Another addr is ErrNoActor.
func (d *Driver) Inspect(_ context.Context, addr runtime.Addr, fn func(runtime.Actor) any) (v any, err error) {
	if addr != d.Addr {
		return nil, fmt.Errorf("runtimetest: inspect %s: %w", addr, runtime.ErrNoActor)
	}
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("%w: %v", runtime.ErrInspectPanic, p)
		}
	}()
	return fn(d.Actor), nil
}
