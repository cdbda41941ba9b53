package runtime

import (
	"context"
	"log/slog"
	"time"
)

// The actor kit: the two pieces of bookkeeping every component needs, written
// once. An actor embeds a Timers and an Ops table, routes its Timer and Done
// events through them, and handles only the live ones. The drivers stay
// minimal (After, Cancel, Start); these types add names, replacement and the
// epoch rule on top, identically under every driver.

// Timers is an actor's set of named timers: at most one pending timer per
// name. Setting a name again cancels the old timer, and Fired drops a firing
// that is no longer the name's pending timer (cancelled or replaced after the
// driver queued it), so an actor never acts on a stale timer. The zero value
// is ready to use; it belongs to one incarnation of one actor (a restarted
// actor starts with none pending).
type Timers struct {
	ids map[string]TimerID
}

// Set (re)arms the timer called name to fire after d, cancelling the
// pending one of that name, if any.
func (t *Timers) Set(ctx Context, name string, d time.Duration) {
	t.Cancel(ctx, name)
	if t.ids == nil {
		t.ids = map[string]TimerID{}
	}
	t.ids[name] = ctx.After(d, name)
}

// Arm sets the timer called name unless one of that name is pending: a
// deadline that repeated events must not push back.
func (t *Timers) Arm(ctx Context, name string, d time.Duration) {
	if !t.Pending(name) {
		t.Set(ctx, name, d)
	}
}

// Cancel stops the pending timer called name; without one it does nothing.
func (t *Timers) Cancel(ctx Context, name string) {
	if id, ok := t.ids[name]; ok {
		ctx.Cancel(id)
		delete(t.ids, name)
	}
}

// Pending reports whether a timer called name is set and has not fired.
func (t *Timers) Pending(name string) bool {
	_, ok := t.ids[name]
	return ok
}

// Fired reports whether ev is the live firing of its name's timer, and if
// so forgets it (the name is free to be set again). A false answer means ev
// is stale, or was not set through t: the actor must ignore it.
func (t *Timers) Fired(ev Timer) bool {
	if id, ok := t.ids[ev.Name]; !ok || id != ev.ID {
		return false
	}
	delete(t.ids, ev.Name)
	return true
}

// Ops is an actor's table of the Ops it started and has not seen complete,
// each with a tag of type T: what the actor needs to apply the result (a
// kind and a machine, a completion function). Start records the tag under
// the op's id; Complete gives it back once, when the Done arrives.
//
// The epoch rule: Reset begins a new epoch (a resync began, protection
// stopped, the cache was lost) and the completions of ops started before it
// are dropped — their results describe a world the actor has left. Ops
// started with StartDurable survive a Reset: their effect (a file written, a
// blob uploaded) happened whatever the actor decided since, and their
// completion must be seen.
//
// The zero value is ready to use.
type Ops[T any] struct {
	pending map[OpID]opEntry[T]
	epoch   uint64
}

type opEntry[T any] struct {
	tag     T
	epoch   uint64
	durable bool
}

// Start begins op in the current epoch and records tag for its Done.
func (o *Ops[T]) Start(ctx Context, op Op, tag T) OpID {
	return o.start(ctx, op, tag, false)
}

// StartDurable begins op and records tag; its Done is delivered whatever
// Resets happen meanwhile.
func (o *Ops[T]) StartDurable(ctx Context, op Op, tag T) OpID {
	return o.start(ctx, op, tag, true)
}

func (o *Ops[T]) start(ctx Context, op Op, tag T, durable bool) OpID {
	if o.pending == nil {
		o.pending = map[OpID]opEntry[T]{}
	}
	id := ctx.Start(op)
	o.pending[id] = opEntry[T]{tag: tag, epoch: o.epoch, durable: durable}
	return id
}

// Complete takes d's op out of the table and returns its tag. ok is false
// when d is not one of the table's ops (already completed, or started by
// someone else) or belongs to an epoch that Reset ended: the actor must
// ignore d then.
func (o *Ops[T]) Complete(d Done) (tag T, ok bool) {
	e, found := o.pending[d.ID]
	if !found {
		return tag, false
	}
	delete(o.pending, d.ID)
	if !e.durable && e.epoch != o.epoch {
		return tag, false
	}
	return e.tag, true
}

// Reset begins a new epoch: the ops in flight stay in the table (so
// InFlight counts what still runs) but their completions will be dropped,
// except those started with StartDurable.
func (o *Ops[T]) Reset() { o.epoch++ }

// Epoch is the current epoch, counting Resets.
func (o *Ops[T]) Epoch() uint64 { return o.epoch }

// Any reports whether the tag of a live op (not yet completed, and not
// made stale by a Reset) satisfies pred. It visits the ops in no fixed
// order, so pred must not have effects.
func (o *Ops[T]) Any(pred func(T) bool) bool {
	for _, e := range o.pending {
		if (e.durable || e.epoch == o.epoch) && pred(e.tag) {
			return true
		}
	}
	return false
}

// InFlight is the number of ops started and not completed, stale ones
// included: what still occupies the driver.
func (o *Ops[T]) InFlight() int { return len(o.pending) }

// Callbacks is the agent's idiom: an op table whose tag is the function
// that applies the op's result. Dispatch calls it for a live completion.
type Callbacks struct {
	Ops[func(Context, Done)]
}

// Go starts op in the current epoch; then runs when its Done arrives,
// unless a Reset came first.
func (c *Callbacks) Go(ctx Context, op Op, then func(Context, Done)) OpID {
	return c.Start(ctx, op, then)
}

// GoDurable starts op; then runs when its Done arrives, Resets or not.
func (c *Callbacks) GoDurable(ctx Context, op Op, then func(Context, Done)) OpID {
	return c.StartDurable(ctx, op, then)
}

// Dispatch runs the completion function of d's op if d is live, and
// reports whether it did.
func (c *Callbacks) Dispatch(ctx Context, d Done) bool {
	then, ok := c.Complete(d)
	if ok {
		then(ctx, d)
	}
	return ok
}

// LogAt logs msg at level on l: for a record whose level is data (an Op's
// note), since slog's Log wants a context.Context and component code never
// makes one of its own.
func LogAt(l *slog.Logger, level slog.Level, msg string, args ...any) {
	l.Log(context.Background(), level, msg, args...)
}
