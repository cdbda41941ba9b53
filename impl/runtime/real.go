package runtime

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Errors returned by the Real runtime's calls, besides ErrStopped.
var (
	ErrActorExists  = errors.New("runtime: actor already spawned")
	ErrNoActor      = errors.New("runtime: no such actor")
	ErrActorPanic   = errors.New("runtime: actor panicked")
	ErrOpPanic      = errors.New("runtime: op panicked")
	ErrNotFrame     = errors.New("runtime: send of bytes that are not a wire frame (wire.Peek)")
	ErrHelloMissing = errors.New("runtime: connection did not start with a hello frame")
	ErrStopTimeout  = errors.New("runtime: ops still running after the stop timeout")
)

// RealOptions configures a Real. The zero value is usable: actors listen on
// their own Addr, peers are dialled at their Addr, plain TCP, logs discarded.
type RealOptions struct {
	// Seed seeds every actor's Rand: actor a draws from a PCG seeded with
	// (Seed, FNV-1a(a)), so its draws repeat from run to run as far as the
	// order of events does. A restarted actor continues the same source
	// rather than replaying it.
	Seed uint64
	// Logger receives the runtime's records and is the parent of every
	// actor's Log. Default: discard.
	Logger *slog.Logger
	// Resolve maps the Addr of a destination (a logical "host:port" such as
	// "ps01:9443") to the TCP address dialled. Default: the bound address of
	// an actor spawned in this Real at that Addr, else the Addr itself.
	// It runs on the sender's writer goroutine, never on the actor's, and
	// must return promptly: Crash and Stop wait for it.
	Resolve func(Addr) (string, error)
	// Listen maps an actor's Addr to the TCP address it listens on. Default:
	// the Addr itself. A port of 0 picks a free port; BoundAddr reports it.
	Listen func(Addr) string
	// ServerTLS, when set, makes every listener speak TLS with it. When it
	// verifies client certificates, a connection whose certificate does not
	// name the host of the sender its hello claims is refused (ErrImpostor).
	ServerTLS *tls.Config
	// Admit, when set with ServerTLS, judges the verified certificate of an
	// inbound connection's peer after its hello and again before each frame
	// is delivered, so that a peer whose certificate is revoked while it
	// is connected is cut off at its next frame rather than at its next
	// connection. An error closes the connection, logged with it. It is
	// called on connection goroutines: it must be safe for concurrent use
	// and cheap (pki.Keeper.Check is a binary search).
	Admit func(peer *x509.Certificate) error
	// ClientTLS, when set, makes every outbound connection speak TLS with it.
	// An empty ServerName is filled with the destination Addr's host, so
	// certificates name the logical hosts (ps01, cs01), not IP addresses.
	ClientTLS *tls.Config
	// DialTimeout bounds a dial plus its TLS handshake. Default 5 s.
	DialTimeout time.Duration
	// WriteTimeout bounds one frame's write; a peer that stops reading for
	// longer loses its connection (and the frame). Default 30 s.
	WriteTimeout time.Duration
	// HelloTimeout bounds how long an inbound connection may take to
	// complete its TLS handshake and name its sender. Default 10 s.
	HelloTimeout time.Duration
	// SendQueue is how many frames may wait for each destination's writer;
	// Send drops (and logs) a frame that finds the queue full, so a slow or
	// unreachable peer never blocks the sending actor. Default 1024.
	SendQueue int
	// MailboxLimit bounds the Messages waiting in an actor's mailbox; an
	// inbound Message that finds it full is dropped and logged (at-most-once
	// delivery allows it). Timers, Done and Started are never dropped. 0
	// (the default) means unbounded: a connection reader never waits for a
	// slow actor, at the cost of memory growing with its backlog — up to
	// what peers send in the time the actor falls behind.
	MailboxLimit int
	// StopTimeout bounds how long Stop waits for Ops that are still running
	// after their actors were stopped (and their contexts cancelled). An Op
	// that ignores its context and never returns is abandoned after it: its
	// goroutine leaks, its Done is dropped, and Stop reports ErrStopTimeout.
	// Default 10 s.
	StopTimeout time.Duration
}

// Real is the runtime of the wire and real worlds: one goroutine and
// mailbox per actor, the real clock, TCP (optionally TLS) between actors.
//
// Every actor listens on its Addr (as mapped by RealOptions.Listen). Each
// actor keeps one outbound connection per destination, dialled lazily and
// re-dialled after a failure; the first frame on a connection is a hello
// naming the sender's Addr, so Message.From is the logical address, not an
// ephemeral port. Frames are checked with wire.Open on arrival: a bad frame
// closes its connection with a logged error and is never delivered.
//
// Use: NewReal, Spawn each actor, and Stop at the end. Crash and Restart
// kill an actor's in-memory state and rebuild it from its Factory.
type Real struct {
	opts RealOptions
	log  *slog.Logger

	ctl sync.Mutex // serialises Spawn, Crash, Restart and Stop

	mu       sync.Mutex // guards the fields below
	stopped  bool
	actors   map[Addr]*entry
	failures []error // actor panics, returned by Stop

	ops sync.WaitGroup // Op goroutines; Stop waits for them
}

// entry is one spawned Addr across its incarnations.
type entry struct {
	addr    Addr
	factory Factory
	rand    *rand.Rand

	// Owned by the running incarnation's loop; a new incarnation starts only
	// after the previous one's goroutines have all returned.
	nextTimer TimerID
	nextOp    OpID

	cur *incarnation // guarded by Real.mu; nil before the first start
}

// NewReal makes a Real with opts, filling in defaults.
func NewReal(opts RealOptions) *Real {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Listen == nil {
		opts.Listen = func(a Addr) string { return string(a) }
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.SendQueue <= 0 {
		opts.SendQueue = 1024
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	return &Real{opts: opts, log: opts.Logger, actors: map[Addr]*entry{}}
}

// Spawn starts an actor at addr: it listens, calls f on the actor's own
// goroutine and delivers Started before anything else. It fails if addr is
// taken in this Real, if the listen fails, or after Stop.
func (r *Real) Spawn(addr Addr, f Factory) error {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return ErrStopped
	}
	if _, dup := r.actors[addr]; dup {
		r.mu.Unlock()
		return fmt.Errorf("runtime: spawn %s: %w", addr, ErrActorExists)
	}
	h := fnv.New64a()
	h.Write([]byte(addr))
	e := &entry{addr: addr, factory: f, rand: rand.New(rand.NewPCG(r.opts.Seed, h.Sum64()))}
	// Registered before it starts: its first Started may send to a peer
	// that answers at once, and the answer must resolve (BoundAddr).
	r.actors[addr] = e
	r.mu.Unlock()

	if err := r.start(e); err != nil {
		r.mu.Lock()
		delete(r.actors, addr)
		r.mu.Unlock()
		return err
	}
	return nil
}

// start begins a new incarnation of e. The caller holds r.ctl.
func (r *Real) start(e *entry) error {
	ln, err := net.Listen("tcp", r.opts.Listen(e.addr))
	if err != nil {
		return fmt.Errorf("runtime: spawn %s: listen: %w", e.addr, err)
	}
	inc := newIncarnation(r, e, ln)
	r.mu.Lock()
	e.cur = inc
	r.mu.Unlock()
	inc.run()
	return nil
}

// Crash kills the actor at addr as a process crash would: the event being
// handled finishes, then its mailbox, timers, connections and listener are
// discarded, and Done events of its Ops still running are dropped when they
// arrive. Frames sent to it meanwhile are lost. Crash returns once the
// actor's goroutines (not its Ops) have ended. Crashing a crashed actor does
// nothing.
func (r *Real) Crash(addr Addr) error {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	e, err := r.lookup(addr)
	if err != nil {
		return err
	}
	r.crash(e)
	return nil
}

func (r *Real) crash(e *entry) {
	r.mu.Lock()
	inc := e.cur
	r.mu.Unlock()
	if inc != nil {
		inc.kill()
		inc.wg.Wait()
	}
}

// Restart crashes the actor at addr if it is running, then starts it again
// from its Factory: it listens again and sees Started first.
func (r *Real) Restart(addr Addr) error {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	e, err := r.lookup(addr)
	if err != nil {
		return err
	}
	r.crash(e)
	return r.start(e)
}

func (r *Real) lookup(addr Addr) (*entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, ErrStopped
	}
	e, ok := r.actors[addr]
	if !ok {
		return nil, fmt.Errorf("runtime: %s: %w", addr, ErrNoActor)
	}
	return e, nil
}

// BoundAddr is the TCP address the actor at addr listens on, or "" when it
// is not running. It differs from addr when RealOptions.Listen maps it (to
// port 0, say); a Resolve of another Real can use it to reach the actor.
func (r *Real) BoundAddr(addr Addr) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.actors[addr]
	if !ok || e.cur == nil || e.cur.dead() {
		return ""
	}
	return e.cur.ln.Addr().String()
}

// Stop stops every actor (which cancels the contexts of their running
// Ops), then waits for all the goroutines the Real started. It waits for
// Ops at most RealOptions.StopTimeout: an Op still running then is
// abandoned and Stop's error includes ErrStopTimeout. It returns the panics
// of actors that died of one and that timeout, joined, or nil. Calls after
// Stop return ErrStopped.
func (r *Real) Stop() error {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	r.stopped = true
	es := make([]*entry, 0, len(r.actors))
	for _, e := range r.actors {
		es = append(es, e)
	}
	r.mu.Unlock()
	for _, e := range es {
		r.crash(e)
	}
	// Every loop has returned, so no Start can add to r.ops any more.
	opsDone := make(chan struct{})
	go func() {
		r.ops.Wait()
		close(opsDone)
	}()
	var hung error
	select {
	case <-opsDone:
	case <-time.After(r.opts.StopTimeout):
		hung = fmt.Errorf("%w (%s)", ErrStopTimeout, r.opts.StopTimeout)
		r.log.Error("runtime: stop abandons ops that ignore their context", "timeout", r.opts.StopTimeout)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(append(append([]error(nil), r.failures...), hung)...)
}

func (r *Real) fail(err error) {
	r.mu.Lock()
	r.failures = append(r.failures, err)
	r.mu.Unlock()
}

// resolve is where a frame to addr is dialled.
func (r *Real) resolve(addr Addr) (string, error) {
	if r.opts.Resolve != nil {
		return r.opts.Resolve(addr)
	}
	if b := r.BoundAddr(addr); b != "" {
		return b, nil
	}
	return string(addr), nil
}
