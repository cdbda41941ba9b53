package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// incarnation is one life of an actor, from start to crash: everything that
// a crash discards.
type incarnation struct {
	r   *Real
	e   *entry
	ln  net.Listener
	log *slog.Logger
	mb  mailbox

	ctx    context.Context // done once killed; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // loop, accept, readers, writers

	mu    sync.Mutex // guards conns and peers
	conns map[net.Conn]struct{}
	peers map[Addr]*peer

	// Owned by the loop goroutine.
	actor  Actor
	timers map[TimerID]*time.Timer
}

func newIncarnation(r *Real, e *entry, ln net.Listener) *incarnation {
	ctx, cancel := context.WithCancel(context.Background())
	inc := &incarnation{
		r: r, e: e, ln: ln,
		log:    r.log.With("actor", string(e.addr)),
		ctx:    ctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
		peers:  map[Addr]*peer{},
		timers: map[TimerID]*time.Timer{},
	}
	inc.mb.init(r.opts.MailboxLimit)
	inc.mb.put(Started{}, false)
	return inc
}

// run starts the actor's loop and its listener's accept loop.
func (inc *incarnation) run() {
	inc.wg.Add(2)
	go inc.loop()
	go inc.accept()
}

func (inc *incarnation) dead() bool { return inc.ctx.Err() != nil }

// kill ends the incarnation without waiting; it is idempotent and safe from
// any goroutine, including the actor's own.
func (inc *incarnation) kill() {
	inc.cancel()
	inc.mb.close()
	inc.ln.Close()
	inc.mu.Lock()
	for c := range inc.conns {
		c.Close()
	}
	inc.mu.Unlock()
}

// track registers c to be closed by kill; false means the incarnation is
// already dead and c was closed.
func (inc *incarnation) track(c net.Conn) bool {
	inc.mu.Lock()
	defer inc.mu.Unlock()
	if inc.dead() {
		c.Close()
		return false
	}
	inc.conns[c] = struct{}{}
	return true
}

func (inc *incarnation) untrack(c net.Conn) {
	c.Close()
	inc.mu.Lock()
	delete(inc.conns, c)
	inc.mu.Unlock()
}

// loop is the actor's goroutine: it builds the actor and hands it one event
// at a time. A panic in the factory or in Handle kills this incarnation
// (as it would kill the process) and is reported by Stop.
func (inc *incarnation) loop() {
	defer inc.wg.Done()
	defer func() {
		for _, t := range inc.timers {
			t.Stop()
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:goruntime.Stack(buf, false)]
			err := fmt.Errorf("%w: %s: %v", ErrActorPanic, inc.e.addr, p)
			inc.log.Error("runtime: actor panicked; it is dead until restarted", "err", err, "stack", string(buf))
			inc.r.fail(err)
			inc.kill()
		}
	}()
	inc.actor = inc.e.factory()
	ctx := &realContext{inc: inc}
	for {
		evs, ok := inc.mb.take(inc.ctx.Done())
		if !ok {
			return
		}
		for i, ev := range evs {
			evs[i] = nil
			if inc.dead() {
				return
			}
			if req, ok := ev.(inspectReq); ok {
				runInspect(inc.actor, req)
				continue
			}
			if t, ok := ev.(Timer); ok {
				// A timer cancelled after it fired but before it was handled
				// is still in the queue: only pending ids are delivered.
				if _, pending := inc.timers[t.ID]; !pending {
					continue
				}
				delete(inc.timers, t.ID)
			}
			inc.actor.Handle(ctx, ev)
		}
	}
}

// post queues ev for the actor; a Message beyond MailboxLimit is dropped.
func (inc *incarnation) post(ev Event) {
	_, droppable := ev.(Message)
	if !inc.mb.put(ev, droppable) {
		if m, ok := ev.(Message); ok && !inc.dead() {
			inc.log.Warn("runtime: mailbox full, message dropped", "from", string(m.From), "bytes", len(m.Data))
		}
	}
}

// mailbox is an unbounded (or Message-bounded) FIFO of events. put never
// blocks, so neither connection readers nor timers wait for a slow actor.
type mailbox struct {
	mu     sync.Mutex
	q      []Event
	msgs   int // Messages in q
	limit  int // max msgs; 0 = unbounded
	closed bool
	ready  chan struct{} // one token when q is non-empty
}

func (m *mailbox) init(limit int) {
	m.limit = limit
	m.ready = make(chan struct{}, 1)
}

// put appends ev; false means it was dropped (mailbox closed, or full and
// droppable).
func (m *mailbox) put(ev Event, droppable bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	if droppable {
		if m.limit > 0 && m.msgs >= m.limit {
			return false
		}
		m.msgs++
	}
	m.q = append(m.q, ev)
	select {
	case m.ready <- struct{}{}:
	default:
	}
	return true
}

// take waits for events and returns all that are queued; false once done
// is closed or the mailbox is.
func (m *mailbox) take(done <-chan struct{}) ([]Event, bool) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, false
		}
		if len(m.q) > 0 {
			q := m.q
			m.q, m.msgs = nil, 0
			m.mu.Unlock()
			return q, true
		}
		m.mu.Unlock()
		select {
		case <-m.ready:
		case <-done:
			return nil, false
		}
	}
}

func (m *mailbox) close() {
	m.mu.Lock()
	m.closed = true
	m.q = nil
	m.mu.Unlock()
}

func (m *mailbox) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.q)
}

// realContext is the Context the Real gives an actor. Its methods run on the
// actor's goroutine (Handle's caller), which owns the timer map and counters.
type realContext struct{ inc *incarnation }

func (c *realContext) Self() Addr        { return c.inc.e.addr }
func (c *realContext) Now() time.Time    { return time.Now() }
func (c *realContext) Rand() *rand.Rand  { return c.inc.e.rand }
func (c *realContext) Log() *slog.Logger { return c.inc.log }

func (c *realContext) After(d time.Duration, name string) TimerID {
	inc := c.inc
	inc.e.nextTimer++
	id := inc.e.nextTimer
	inc.timers[id] = time.AfterFunc(d, func() { inc.mb.put(Timer{ID: id, Name: name}, false) })
	return id
}

func (c *realContext) Cancel(id TimerID) {
	if t, ok := c.inc.timers[id]; ok {
		t.Stop()
		delete(c.inc.timers, id)
	}
}

// Send copies data, so the caller may reuse its buffer at once. A frame that
// wire.Open refuses is dropped here with a logged error: sent on, it would
// make the receiver close the connection and lose the frames behind it.
func (c *realContext) Send(to Addr, data []byte) {
	inc := c.inc
	// The frame's structure only: its CRC is the receiver's to check
	// (readFrame), and a megabyte's CRC per item is not free.
	if _, err := wire.Peek(data); err != nil {
		inc.log.Error("runtime: send dropped", "to", string(to), "err", fmt.Errorf("%w: %w", ErrNotFrame, err))
		return
	}
	p := inc.peer(to)
	if p == nil {
		return
	}
	select {
	case p.q <- data: // not copied: Send's contract forbids the caller to modify it
	default:
		inc.log.Warn("runtime: send queue full, frame dropped", "to", string(to), "queue", cap(p.q))
	}
}

// Start runs op on a goroutine of its own with the incarnation's context:
// a crash (and so Stop) cancels it, and its Done, if it still comes, is
// dropped by the closed mailbox.
func (c *realContext) Start(op Op) OpID {
	inc := c.inc
	inc.e.nextOp++
	id := inc.e.nextOp
	inc.r.ops.Add(1)
	go func() {
		defer inc.r.ops.Done()
		v, err := runOp(inc.ctx, op)
		inc.mb.put(Done{ID: id, Name: op.Name, Value: v, Err: err}, false)
	}()
	return id
}

// runOp runs op.Run, turning a panic into an error wrapping ErrOpPanic.
func runOp(ctx context.Context, op Op) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("%w: %s: %v", ErrOpPanic, op.Name, p)
		}
	}()
	return op.Run(ctx)
}
