// Package sched is the deterministic simulator's heart: one event queue
// ordered by (virtual time, sequence number), stepped by one goroutine, that
// drives v2a's actors through the same runtime.Context they get in
// production. Given the same seed, actors and script, a run takes the same
// steps and writes the same trace, byte for byte.
//
// The scheduler owns no network policy of its own: a Network decides when a
// message or an I/O arrives, or that it is lost. Everything random comes from
// sub-seeds of the run's seed, so adding an actor does not shift the draws of
// the others.
package sched

import (
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Epoch is virtual time zero: the wall-clock date every simulated run starts
// at, fixed so that timestamps in blobs and traces repeat.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Network carries bytes between hosts in virtual time. Transit is asked once
// per message or I/O, in queue order, and returns when the bytes arrive, or
// ok=false with a reason when they are lost.
type Network interface {
	Transit(now time.Time, fromHost, toHost string, bytes int64, r *rand.Rand) (arrive time.Time, ok bool, why string)
}

// Duplicator is a Network that may deliver a message twice.
type Duplicator interface {
	Duplicate(fromHost, toHost string, r *rand.Rand) (extra time.Duration, ok bool)
}

// LocalIOLatency is the virtual time a local I/O (an Op with no Peer) takes
// when it declares no disk work (runtime.Op.Disk); one that does is charged
// by the disk model (DiskModel).
const LocalIOLatency = 200 * time.Microsecond

// Sim is the deterministic scheduler. It is not safe for concurrent use: the
// harness drives it from one goroutine.
type Sim struct {
	seed   uint64
	now    time.Time
	seq    uint64
	queue  eventQueue
	actors map[runtime.Addr]*slot
	net    Network
	netRnd *rand.Rand
	trace  *Trace
	nextID uint64
	down   map[string]bool // crashed hosts
	// onCrash are called for every host crash (OnCrash).
	onCrash []func(host string)
	// cancelled timers, by id; an entry is removed when the timer would fire.
	cancelled map[runtime.TimerID]bool
	// stopped is set, from any goroutine (a signal handler), by Interrupt:
	// the Run methods return at the next event. It is the one field another
	// goroutine touches, hence atomic.
	stopped atomic.Bool
	// disk is the disk model; diskBusy is when each host's device
	// ("host/device") finishes the ops queued on it.
	disk     DiskModel
	diskBusy map[string]time.Time
	// advance are the observers of the clock (OnAdvance).
	advance []func(to time.Time)
	// events counts the events run (Events).
	events uint64
}

// OnAdvance calls fn each time the virtual clock is about to move forward,
// with the time it moves to, before any event due then runs: what fn reads
// (through Inspect) is the world as it stood from the old time up to, not
// including, to. Observers are called in the order they were added, each
// once per move; there is no way to remove one. fn must only observe: it
// may not send, schedule, step or trace, so that a run with observers keeps
// its trace hash. It is the one hook on the clock: an HTML report samples
// the run through it, progress on a terminal keeps its own due time and
// reports when a move reaches it.
func (s *Sim) OnAdvance(fn func(to time.Time)) { s.advance = append(s.advance, fn) }

// setNow moves the clock forward to t, telling the observers first.
func (s *Sim) setNow(t time.Time) {
	for _, fn := range s.advance {
		fn(t)
	}
	s.now = t
}

type slot struct {
	addr        runtime.Addr
	factory     runtime.Factory
	actor       runtime.Actor
	incarnation uint64
	rnd         *rand.Rand
	log         *slog.Logger
}

type item struct {
	at          time.Time
	seq         uint64
	to          runtime.Addr
	incarnation uint64 // events for an older incarnation of the actor are dropped
	ev          runtime.Event
	fn          func() // harness callbacks: no actor
	name        string
}

// New returns a scheduler at virtual time Epoch. net may be nil, in which
// case every message arrives instantly.
func New(seed uint64, net Network, trace *Trace) *Sim {
	if trace == nil {
		trace = NewTrace(nil)
	}
	s := &Sim{
		seed:      seed,
		now:       Epoch,
		actors:    map[runtime.Addr]*slot{},
		net:       net,
		trace:     trace,
		down:      map[string]bool{},
		cancelled: map[runtime.TimerID]bool{},
		disk:      DefaultDisk,
		diskBusy:  map[string]time.Time{},
	}
	s.netRnd = s.SubRand("sim/net")
	return s
}

// Seed is the run's seed.
func (s *Sim) Seed() uint64 { return s.seed }

// Now is the current virtual time.
func (s *Sim) Now() time.Time { return s.now }

// Elapsed is the virtual time since Epoch.
func (s *Sim) Elapsed() time.Duration { return s.now.Sub(Epoch) }

// Trace is the run's event trace.
func (s *Sim) Trace() *Trace { return s.trace }

// SubRand returns a random source derived from the run's seed and name. The
// same seed and name always give the same stream, whatever else the run
// draws.
func (s *Sim) SubRand(name string) *rand.Rand {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], s.seed)
	h.Write(b[:])
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(s.seed, h.Sum64()))
}

// Spawn registers an actor at addr and delivers Started to it now.
func (s *Sim) Spawn(addr runtime.Addr, f runtime.Factory) error {
	if _, dup := s.actors[addr]; dup {
		return fmt.Errorf("sched: actor %s already exists", addr)
	}
	sl := &slot{addr: addr, factory: f}
	s.actors[addr] = sl
	if s.down[addr.Host()] {
		return nil // started when its host restarts
	}
	s.start(sl)
	return nil
}

func (s *Sim) start(sl *slot) {
	sl.incarnation++
	sl.actor = sl.factory()
	sl.rnd = s.SubRand(fmt.Sprintf("actor/%s/%d", sl.addr, sl.incarnation))
	sl.log = slog.New(&traceHandler{sim: s, actor: sl.addr})
	s.trace.Add(s.Elapsed(), string(sl.addr), "start", fmt.Sprintf("incarnation=%d", sl.incarnation))
	s.push(&item{at: s.now, to: sl.addr, incarnation: sl.incarnation, ev: runtime.Started{}})
}

// Actor returns the live actor at addr, for inspection by the harness
// (tables, checks). It is nil while the actor's host is down.
func (s *Sim) Actor(addr runtime.Addr) runtime.Actor {
	sl := s.actors[addr]
	if sl == nil || s.down[addr.Host()] {
		return nil
	}
	return sl.actor
}

// Inspect implements runtime.Inspector. The simulator is driven from one
// goroutine and every event runs to completion before the next, so fn runs
// at once: between two events, on the actor's turn, as the Real runtime runs
// it. It takes no virtual time and leaves no trace. ctx is not consulted.
func (s *Sim) Inspect(_ context.Context, addr runtime.Addr, fn func(runtime.Actor) any) (v any, err error) {
	sl := s.actors[addr]
	if sl == nil {
		return nil, fmt.Errorf("sched: inspect %s: %w", addr, runtime.ErrNoActor)
	}
	if sl.actor == nil || s.down[addr.Host()] {
		return nil, fmt.Errorf("sched: inspect %s: %w", addr, runtime.ErrActorDown)
	}
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("%w: %v", runtime.ErrInspectPanic, p)
		}
	}()
	return fn(sl.actor), nil
}

// Addrs lists the registered actors in order.
func (s *Sim) Addrs() []runtime.Addr {
	out := make([]runtime.Addr, 0, len(s.actors))
	for a := range s.actors {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Crash stops every actor on host at once: their pending timers, messages
// and I/O completions are lost, as is their in-memory state. What they wrote
// to devices and storage stays.
func (s *Sim) Crash(host string) {
	if s.down[host] {
		return
	}
	s.down[host] = true
	for _, a := range s.Addrs() {
		if a.Host() == host {
			sl := s.actors[a]
			sl.incarnation++ // strands every queued event of the old one
			sl.actor = nil
		}
	}
	s.trace.Add(s.Elapsed(), host, "crash", "")
	for _, fn := range s.onCrash {
		fn(host)
	}
}

// OnCrash calls fn after every Crash, with the host: what else the crash
// takes with it (a host's disk losing its unsynced writes) hooks in here.
func (s *Sim) OnCrash(fn func(host string)) { s.onCrash = append(s.onCrash, fn) }

// Restart brings a crashed host back: each of its actors is rebuilt by its
// factory and gets Started.
func (s *Sim) Restart(host string) {
	if !s.down[host] {
		return
	}
	delete(s.down, host)
	s.trace.Add(s.Elapsed(), host, "restart", "")
	for _, a := range s.Addrs() {
		if a.Host() == host {
			s.start(s.actors[a])
		}
	}
}

// Down reports whether host is crashed.
func (s *Sim) Down(host string) bool { return s.down[host] }

// After schedules fn, a harness-side callback (a workload tick, a scripted
// fault), d from now. name appears in the trace.
func (s *Sim) After(d time.Duration, name string, fn func()) {
	s.push(&item{at: s.now.Add(d), fn: fn, name: name})
}

// Inject delivers ev to the actor at addr d from now, as if it came from
// the outside (a scripted command, a test poking a component).
func (s *Sim) Inject(d time.Duration, addr runtime.Addr, ev runtime.Event) error {
	sl := s.actors[addr]
	if sl == nil {
		return fmt.Errorf("sched: no actor %s", addr)
	}
	s.push(&item{at: s.now.Add(d), to: addr, incarnation: sl.incarnation, ev: ev})
	return nil
}

func (s *Sim) push(it *item) {
	s.seq++
	it.seq = s.seq
	heap.Push(&s.queue, it)
}

// Pending is the number of queued events.
func (s *Sim) Pending() int { return len(s.queue) }

// Events is the number of events run so far (harness callbacks and actor
// events; not those dropped for a crashed actor or a cancelled timer), for
// speed reports.
func (s *Sim) Events() uint64 { return s.events }

// Step runs the next event and reports whether there was one.
func (s *Sim) Step() bool { return s.step(time.Time{}) }

// step runs the next event due at or before limit (the zero time: any),
// dropping the dead ones before it (a crashed actor's, a cancelled
// timer's), and reports whether it ran one. It never moves the clock past
// limit: a dead event at the head must not carry a run on to the live one
// after its deadline.
func (s *Sim) step(limit time.Time) bool {
	for len(s.queue) > 0 {
		if !limit.IsZero() && s.queue[0].at.After(limit) {
			return false
		}
		it := heap.Pop(&s.queue).(*item)
		if it.at.After(s.now) {
			s.setNow(it.at)
		}
		if it.fn != nil {
			s.events++
			it.fn()
			return true
		}
		sl := s.actors[it.to]
		if sl == nil || sl.actor == nil || sl.incarnation != it.incarnation {
			continue // the actor crashed or restarted since this was queued
		}
		if t, ok := it.ev.(runtime.Timer); ok {
			if s.cancelled[t.ID] {
				delete(s.cancelled, t.ID)
				continue
			}
		}
		s.events++
		s.traceEvent(sl, it.ev)
		sl.actor.Handle(&actx{sim: s, sl: sl}, it.ev)
		return true
	}
	return false
}

// Interrupt makes the Run methods return before the next event, and every
// later call return at once: a run being interrupted (Ctrl-C) stops between
// two events, never inside one, so what it leaves is a consistent world that
// can still be judged and closed. It is safe to call from any goroutine.
func (s *Sim) Interrupt() { s.stopped.Store(true) }

// Interrupted reports whether Interrupt was called. After an interrupt the
// clock stands where the last event left it, not at the deadline asked for.
func (s *Sim) Interrupted() bool { return s.stopped.Load() }

// StopOn interrupts the simulator when ctx is done; the returned function
// undoes the link.
func (s *Sim) StopOn(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, s.Interrupt)
}

// RunFor runs every event up to d of virtual time from now, then sets the
// clock to exactly now+d (unless interrupted).
func (s *Sim) RunFor(d time.Duration) { s.RunUntil(s.now.Add(d)) }

// RunUntil runs every event due at or before t, then sets the clock to t
// (unless interrupted).
func (s *Sim) RunUntil(t time.Time) {
	for len(s.queue) > 0 && !s.queue[0].at.After(t) {
		if s.stopped.Load() {
			return
		}
		s.step(t)
	}
	if t.After(s.now) && !s.stopped.Load() {
		s.setNow(t)
	}
}

// RunWhile steps while cond holds and events remain, up to the deadline;
// it reports whether cond became false. An interrupt ends it early with the
// current answer.
func (s *Sim) RunWhile(deadline time.Time, cond func() bool) bool {
	for cond() {
		if s.stopped.Load() {
			return false
		}
		if len(s.queue) == 0 || s.queue[0].at.After(deadline) {
			if deadline.After(s.now) {
				s.setNow(deadline)
			}
			return !cond()
		}
		s.step(deadline)
	}
	return true
}

func (s *Sim) traceEvent(sl *slot, ev runtime.Event) {
	switch e := ev.(type) {
	case runtime.Started:
		// traced by start
	case runtime.Timer:
		s.trace.Add(s.Elapsed(), string(sl.addr), "timer", e.Name)
	case runtime.Message:
		s.trace.Add(s.Elapsed(), string(sl.addr), "recv", fmt.Sprintf("from=%s %s bytes=%d", e.From, frameKind(e.Data), len(e.Data)))
	case runtime.Done:
		detail := e.Name
		if e.Err != nil {
			detail += " err=" + e.Err.Error()
		}
		s.trace.Add(s.Elapsed(), string(sl.addr), "done", detail)
	}
}

func frameKind(b []byte) string {
	k, _, err := wire.Open(b)
	if err != nil {
		return "corrupt-frame"
	}
	return wire.KindName(k)
}

// actx is the Context an actor gets for one event.
type actx struct {
	sim *Sim
	sl  *slot
}

func (c *actx) Self() runtime.Addr        { return c.sl.addr }
func (c *actx) Now() time.Time            { return c.sim.now }
func (c *actx) Rand() *rand.Rand          { return c.sl.rnd }
func (c *actx) Log() *slog.Logger         { return c.sl.log }
func (c *actx) Cancel(id runtime.TimerID) { c.sim.cancelled[id] = true }

func (c *actx) After(d time.Duration, name string) runtime.TimerID {
	c.sim.nextID++
	id := runtime.TimerID(c.sim.nextID)
	c.sim.push(&item{at: c.sim.now.Add(d), to: c.sl.addr, incarnation: c.sl.incarnation,
		ev: runtime.Timer{ID: id, Name: name}})
	return id
}

func (c *actx) Send(to runtime.Addr, data []byte) {
	s := c.sim
	from := c.sl.addr
	msg := runtime.Message{From: from, Data: append([]byte(nil), data...)}
	dst := s.actors[to]
	if dst == nil {
		s.trace.Add(s.Elapsed(), string(from), "drop", fmt.Sprintf("to=%s %s why=no-such-address", to, frameKind(data)))
		return
	}
	arrive := s.now
	if s.net != nil {
		var ok bool
		var why string
		arrive, ok, why = s.net.Transit(s.now, from.Host(), to.Host(), int64(len(data)), s.netRnd)
		if !ok {
			s.trace.Add(s.Elapsed(), string(from), "drop", fmt.Sprintf("to=%s %s why=%s", to, frameKind(data), why))
			return
		}
	}
	// The receiver's incarnation is checked at delivery, not now: a message
	// in flight reaches whatever actor listens there when it lands.
	deliver := func() {
		sl := s.actors[to]
		if sl == nil || sl.actor == nil {
			s.trace.Add(s.Elapsed(), string(to), "drop", fmt.Sprintf("from=%s %s why=host-down", from, frameKind(msg.Data)))
			return
		}
		s.traceEvent(sl, msg)
		sl.actor.Handle(&actx{sim: s, sl: sl}, msg)
	}
	s.push(&item{at: arrive, fn: deliver})
	if d, ok := s.net.(Duplicator); ok {
		if extra, dup := d.Duplicate(from.Host(), to.Host(), s.netRnd); dup {
			s.push(&item{at: arrive.Add(extra), fn: func() {
				s.trace.Add(s.Elapsed(), string(to), "dup", fmt.Sprintf("from=%s %s", from, frameKind(msg.Data)))
				deliver()
			}})
		}
	}
}

func (c *actx) Start(op runtime.Op) runtime.OpID {
	s := c.sim
	s.nextID++
	id := runtime.OpID(s.nextID)
	v, err := runOp(op)
	arrive := s.now.Add(LocalIOLatency)
	if op.Disk != nil {
		// Local disk work: charged by the disk model, queued per device.
		arrive = s.diskDone(c.sl.addr.Host(), *op.Disk)
	}
	if op.Peer != "" && s.net != nil {
		// The request travels to the peer and the answer comes back; the
		// payload's bytes cross the link once (after the local disk work,
		// if the op declared any).
		from := s.now
		if op.Disk != nil {
			from = arrive
		}
		there, ok, why := s.net.Transit(from, c.sl.addr.Host(), op.Peer, op.Bytes, s.netRnd)
		if ok {
			arrive, ok, why = s.net.Transit(there, op.Peer, c.sl.addr.Host(), 0, s.netRnd)
		}
		if !ok {
			// The I/O ran (storage may have changed) but its answer is lost:
			// the actor sees a timeout, as a real client would.
			err = fmt.Errorf("sched: %s to %s: %s", op.Name, op.Peer, why)
			v = nil
			arrive = s.now.Add(OpTimeout)
		}
	}
	s.push(&item{at: arrive, to: c.sl.addr, incarnation: c.sl.incarnation,
		ev: runtime.Done{ID: id, Name: op.Name, Value: v, Err: err}})
	return id
}

// OpTimeout is how long an I/O whose answer was lost takes to fail.
const OpTimeout = 30 * time.Second

func runOp(op runtime.Op) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sched: op %s panicked: %v", op.Name, r)
		}
	}()
	// Ops run synchronously, in queue order: nothing can cancel one.
	return op.Run(context.Background())
}

type eventQueue []*item

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *eventQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
