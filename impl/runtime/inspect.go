package runtime

import (
	"context"
	"errors"
	"fmt"
)

// ErrActorDown is returned by Inspect when the actor is crashed or dies
// before it gets to the call.
var ErrActorDown = errors.New("runtime: actor is down")

// ErrInspectPanic wraps a panic of an Inspect function. The actor lives on:
// a reader's bug must not kill the component it reads.
var ErrInspectPanic = errors.New("runtime: inspect function panicked")

// Inspector runs a function on an actor's own turn: between two of its
// events, never during one, on the goroutine that runs its Handle. That is
// how a harness, a CLI or a daemon's status page reads a component's state
// without the component guarding it with a mutex. Both drivers (sched.Sim
// and Real) implement it.
//
// fn gets the live actor (as its Factory built it) and must only read it:
// it returns a copy of what the caller needs, never a pointer into the
// actor's state, because the caller uses the result on its own goroutine.
// fn must not block and must not keep the actor.
type Inspector interface {
	Inspect(ctx context.Context, addr Addr, fn func(Actor) any) (any, error)
}

// InspectAs is Inspect with a typed result.
func InspectAs[R any](ctx context.Context, in Inspector, addr Addr, fn func(Actor) R) (R, error) {
	v, err := in.Inspect(ctx, addr, func(a Actor) any { return fn(a) })
	if err != nil {
		var zero R
		return zero, err
	}
	return v.(R), nil
}

// inspectReq is an Inspect call waiting in an actor's mailbox. It is an
// Event only so that it queues behind the events posted before it; the
// loop runs it and never hands it to Handle.
type inspectReq struct {
	fn   func(Actor) any
	done chan inspectResult // buffered: the loop never waits for the caller
}

type inspectResult struct {
	v   any
	err error
}

func (inspectReq) isEvent() {}

// Inspect implements Inspector: fn runs on the actor's goroutine after the
// events already in its mailbox. It fails with ErrNoActor for an unknown
// addr, ErrActorDown when the actor is crashed or crashes first, and ctx's
// error when ctx ends first (fn may then still run, its result unread).
func (r *Real) Inspect(ctx context.Context, addr Addr, fn func(Actor) any) (any, error) {
	e, err := r.lookup(addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	inc := e.cur
	r.mu.Unlock()
	if inc == nil || inc.dead() {
		return nil, fmt.Errorf("runtime: inspect %s: %w", addr, ErrActorDown)
	}
	req := inspectReq{fn: fn, done: make(chan inspectResult, 1)}
	if !inc.mb.put(req, false) {
		return nil, fmt.Errorf("runtime: inspect %s: %w", addr, ErrActorDown)
	}
	select {
	case res := <-req.done:
		return res.v, res.err
	case <-inc.ctx.Done():
		return nil, fmt.Errorf("runtime: inspect %s: %w", addr, ErrActorDown)
	case <-ctx.Done():
		return nil, fmt.Errorf("runtime: inspect %s: %w", addr, ctx.Err())
	}
}

// runInspect runs req on the loop goroutine, turning a panic into an error.
func runInspect(a Actor, req inspectReq) {
	var res inspectResult
	func() {
		defer func() {
			if p := recover(); p != nil {
				res = inspectResult{err: fmt.Errorf("%w: %v", ErrInspectPanic, p)}
			}
		}()
		res.v = req.fn(a)
	}()
	req.done <- res
}
