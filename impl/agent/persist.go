package agent

import (
	"context"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// stateWriter persists agent.state through ops, never in Handle, one op at
// a time (two writers of the same temporary file must not overlap), always
// the newest state: a save asked for while one runs is written when that
// one completes, and saves asked for meanwhile are folded into it.
//
// The ordering rule: what must not happen before the state is durable
// waits for it. The stream sends nothing while a save is pending or in
// flight (transmit), and a group round's tag number is used only once the
// state holding it is durable (tagMaster.startRound), so that a restart
// can neither send items under a phase or stream floor it does not know,
// nor reuse a tag number. A save that fails is reported (lastErr) and does
// not block what waits for it, as the synchronous save never did.
type stateWriter struct {
	inFlight bool
	// pending: a state (or its removal) waits to be written after the op
	// in flight; next is its encoding, remove says it is a removal.
	pending bool
	remove  bool
	next    []byte
	// waiting run once the pending state is durable; running once the
	// state in flight is.
	waiting, running []func(runtime.Context)
	saves            int64 // ops completed
}

// busy reports whether a state is pending or being written.
func (w *stateWriter) busy() bool { return w.inFlight || w.pending }

// save persists the agent's current state through the state writer.
func (a *Agent) save(ctx runtime.Context) { a.saveThen(ctx, nil) }

// saveThen persists the agent's current state and runs then (if not nil)
// once it is durable.
func (a *Agent) saveThen(ctx runtime.Context, then func(runtime.Context)) {
	a.st.Group = a.group
	b, err := encodeState(a.st)
	if err != nil {
		a.fail(ctx, "save state", err)
		if then != nil {
			then(ctx)
		}
		return
	}
	a.queueState(ctx, b, false, then)
}

// forgetState removes agent.state through the state writer (Unprotect).
func (a *Agent) forgetState(ctx runtime.Context) { a.queueState(ctx, nil, true, nil) }

func (a *Agent) queueState(ctx runtime.Context, b []byte, remove bool, then func(runtime.Context)) {
	w := &a.persist
	w.pending, w.remove, w.next = true, remove, b
	if then != nil {
		w.waiting = append(w.waiting, then)
	}
	a.writeState(ctx)
}

// writeState starts the op writing the pending state, unless one runs.
func (a *Agent) writeState(ctx runtime.Context) {
	w := &a.persist
	if w.inFlight || !w.pending {
		return
	}
	b, remove := w.next, w.remove
	w.pending, w.next = false, nil
	w.running, w.waiting = w.waiting, nil
	w.inFlight = true
	fsy, dir := a.cfg.FS, a.cfg.StateDir
	op := runtime.Op{Name: "save-state", Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Bytes: int64(len(b)), Syncs: 2},
		Run: func(context.Context) (any, error) { return nil, saveStateBytes(fsy, dir, b) }}
	if remove {
		op = runtime.Op{Name: "remove-state", Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Syncs: 1},
			Run: func(context.Context) (any, error) { return nil, removeState(fsy, dir) }}
	}
	// Durable: the file was written whatever the agent decided since.
	a.ops.GoDurable(ctx, op, func(ctx runtime.Context, d runtime.Done) {
		w.inFlight = false
		w.saves++
		if d.Err != nil {
			a.fail(ctx, "save state", d.Err)
		}
		done := w.running
		w.running = nil
		a.writeState(ctx)
		for _, fn := range done {
			fn(ctx)
		}
	})
}
