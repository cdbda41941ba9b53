package configsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Persistence (Config.Store). The rules, in the order the server follows
// them (raft's Ready: save before you send):
//
//  1. At Started the server loads its records before it serves anything.
//     Messages that arrive meanwhile wait (up to maxEarly; past that they
//     are dropped, and their senders retry as they do for a lost frame)
//     and are handled in arrival order once the load is applied. A load
//     that fails (an I/O error, a record that does not decode) is logged
//     and tried again every storeRetry: the server never serves, nor
//     overwrites, a state it could not read.
//  2. After each event, the records the event changed (their durable
//     part, see record.go) are written in one transaction, and every
//     message the event sent — a portal Reply, a Protect with a new
//     generation — is held until that transaction commits. So nothing
//     outside learns of a change a crash could take back.
//  3. One write is in flight at a time. Events handled meanwhile have
//     their messages held behind it; when it commits, what they changed
//     goes in the next write (or, when they changed nothing durable,
//     their messages go out at once, after the earlier ones).
//  4. A write that fails is logged and tried again every storeRetry,
//     with everything changed since; the held messages wait for it (the
//     newest maxHeld of them: older ones are dropped).
//  5. Volatile fields are written with their record, and on the periodic
//     check when they alone changed.
//
// Work lost by a crash and picked up at the next start: a push install in
// progress is started again (the installer is idempotent); a reprotect's
// VM preparation fails its job (the orchestrator reprotects again); the
// reprotect requests a job waited a Reply to are resent by the periodic
// check, as always.

// ErrStoreRecord: a record in the store does not decode; the server
// refuses to start on it rather than overwrite it.
var ErrStoreRecord = errors.New("configsrv: unreadable record in the store")

const (
	// maxEarly bounds the messages kept while the store loads.
	maxEarly = 4096
	// maxHeld bounds the messages held behind a write that keeps failing;
	// past it the oldest are dropped (their senders retry, or, for a
	// Reply, the portal asks again), so a dead disk costs no unbounded
	// memory.
	maxHeld = 4096
	// storeRetry is the pause before a failed load or write is tried again.
	storeRetry = 5 * time.Second
	// timerStore is the timer of a retried load or write.
	timerStore = "store-retry"
)

// persister is the server's side of its store.
type persister struct {
	store   csstore.Store
	ops     runtime.Ops[storeOp]
	loaded  bool
	loading bool
	early   []runtime.Message
	dropped int

	committed map[csstore.Ref][]byte // durable part of each record as last committed
	written   map[csstore.Ref][]byte // whole record as last committed
	snaps     map[csstore.Ref]any    // durable part as last committed, decoded (see snapshot); nil: none
	final     map[csstore.Ref]bool   // finished jobs and cleared alerts committed: never encoded again

	inflight *storeWrite
	held     []outMsg // messages of events handled since inflight started
	volatile bool     // an event since inflight started asked for volatile fields
	failed   bool     // the last write failed; a retry is armed
}

type storeOp struct {
	load  bool
	write *storeWrite
}

// storeWrite is one transaction in flight and what waits for it.
type storeWrite struct {
	recs []encoded
	out  []outMsg
}

type outMsg struct {
	to   runtime.Addr
	data []byte
}

// heldCtx is the Context handlers see when the server has a store: Send
// holds the frame until the event's changes are committed.
type heldCtx struct {
	runtime.Context
	out []outMsg
}

func (c *heldCtx) Send(to runtime.Addr, data []byte) {
	c.out = append(c.out, outMsg{to: to, data: append([]byte(nil), data...)})
}

func flushOut(ctx runtime.Context, out []outMsg) {
	for _, o := range out {
		ctx.Send(o.to, o.data)
	}
}

// handleStored is Handle with a store: the load first, then every event
// through a heldCtx and the write that follows it.
func (s *Server) handleStored(ctx runtime.Context, ev runtime.Event) {
	p := s.persist
	switch e := ev.(type) {
	case runtime.Started:
		s.startLoad(ctx)
		return
	case runtime.Done:
		if op, ok := p.ops.Complete(e); ok {
			if op.load {
				s.loaded(ctx, e)
			} else {
				s.writeDone(ctx, op.write, e)
			}
			return
		}
	case runtime.Timer:
		if e.Name == timerStore {
			if !s.timers.Fired(e) {
				return
			}
			if !p.loaded {
				s.startLoad(ctx)
			} else if p.inflight == nil {
				held := p.held
				p.held, p.failed, p.volatile = nil, false, false
				s.afterEvent(ctx, held, true)
			}
			return
		}
	}
	if !p.loaded {
		if m, ok := ev.(runtime.Message); ok {
			if len(p.early) < maxEarly {
				p.early = append(p.early, m)
			} else {
				p.dropped++
			}
		}
		return
	}
	s.stored(ctx, ev)
}

// stored handles one event and persists what it changed.
func (s *Server) stored(ctx runtime.Context, ev runtime.Event) {
	hc := &heldCtx{Context: ctx}
	s.handle(hc, ev)
	t, isTimer := ev.(runtime.Timer)
	s.afterEvent(ctx, hc.out, isTimer && t.Name == timerCheck)
}

func (s *Server) startLoad(ctx runtime.Context) {
	p := s.persist
	p.loading = true
	st := p.store
	p.ops.Start(ctx, runtime.Op{Name: "store load", Disk: &runtime.DiskIO{Device: runtime.DeviceOS},
		Run: func(ctx context.Context) (any, error) { return st.Load(ctx) }}, storeOp{load: true})
}

// loaded applies the load, starts the server and handles the messages
// that waited.
func (s *Server) loaded(ctx runtime.Context, ev runtime.Done) {
	p := s.persist
	recs, _ := ev.Value.([]csstore.Record)
	err := ev.Err
	if err == nil {
		err = s.restore(recs)
	}
	if err != nil {
		ctx.Log().Error("configsrv: store load failed; not serving, retrying", "err", err, "waiting", len(p.early))
		s.timers.Set(ctx, timerStore, storeRetry)
		return
	}
	p.loading, p.loaded = false, true
	p.committed, p.written, p.final = map[csstore.Ref][]byte{}, map[csstore.Ref][]byte{}, map[csstore.Ref]bool{}
	p.snaps = map[csstore.Ref]any{}
	for _, r := range recs {
		p.written[r.Ref()] = r.Data
	}
	// What the store holds, as this binary encodes it: a record whose
	// encoding differs (an older binary's) is rewritten by the first write.
	for _, e := range s.records(nil, nil) {
		if bytes.Equal(p.written[e.ref], e.full) {
			p.committed[e.ref] = e.durable
			p.final[e.ref] = e.final
			p.snaps[e.ref] = snapshot(e)
		}
	}
	ctx.Log().Info("configsrv: state loaded", "machines", len(s.machines), "policies", len(s.policies), "groups", len(s.groups),
		"jobs", len(s.jobs), "alerts", len(s.alerts), "waiting", len(p.early), "dropped", p.dropped)
	hc := &heldCtx{Context: ctx}
	s.start(hc)
	s.resumeLostWork(hc)
	s.afterEvent(ctx, hc.out, false)
	early := p.early
	p.early, p.dropped = nil, 0
	for _, m := range early {
		s.stored(ctx, m)
	}
}

// resumeLostWork picks up what ops lost in a crash were doing.
func (s *Server) resumeLostWork(ctx runtime.Context) {
	for _, m := range s.sortedMachines() {
		j := m.job
		if j == nil || j.status != JobRunning {
			continue
		}
		if st := j.step(StepInstall); st != nil && st.status == JobRunning && m.state == StateEnabling && !m.registered {
			ctx.Log().Info("configsrv: push install interrupted by a restart; started again", "machine", m.name, "job", j.id)
			s.pushInstall(ctx, m)
		}
		if st := j.step(StepTargetVM); st != nil && st.status == JobRunning {
			s.reprotectFailed(ctx, m, StepTargetVM, "the configuration server restarted while it prepared the VM; reprotect again")
		}
	}
}

// afterEvent writes what changed and sends out (now, or once committed).
func (s *Server) afterEvent(ctx runtime.Context, out []outMsg, volatile bool) {
	p := s.persist
	if p.inflight != nil || p.failed {
		p.held = append(p.held, out...)
		p.volatile = p.volatile || volatile
		if n := len(p.held) - maxHeld; n > 0 {
			ctx.Log().Warn("configsrv: held messages dropped behind a failing store write", "dropped", n)
			p.held = append([]outMsg(nil), p.held[n:]...)
		}
		return
	}
	var recs []encoded
	var same unchanged
	if !volatile {
		// Only a durable change needs a write: a record equal to its
		// committed snapshot cannot have one, and is not encoded.
		same = p.unchanged
	}
	for _, e := range s.records(p.final, same) {
		if !bytes.Equal(p.committed[e.ref], e.durable) || (volatile && !bytes.Equal(p.written[e.ref], e.full)) {
			recs = append(recs, e)
		}
	}
	if len(recs) == 0 {
		flushOut(ctx, out)
		return
	}
	w := &storeWrite{recs: recs, out: out}
	p.inflight = w
	var b csstore.Batch
	size := int64(0)
	for _, e := range recs {
		b.Put = append(b.Put, csstore.Record{Kind: e.ref.Kind, Key: e.ref.Key, Data: e.full})
		size += int64(len(e.full))
	}
	st := p.store
	p.ops.Start(ctx, runtime.Op{Name: fmt.Sprintf("store write records=%d", len(recs)),
		Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Bytes: size, Syncs: 1},
		Run:  func(ctx context.Context) (any, error) { return nil, st.Apply(ctx, b) }}, storeOp{write: w})
}

// unchanged is an unchanged for the records as last committed.
func (p *persister) unchanged(ref csstore.Ref, val any) bool {
	snap := p.snaps[ref]
	return snap != nil && reflect.DeepEqual(snap, val)
}

// writeDone sends what waited for the write, then writes what changed
// since.
func (s *Server) writeDone(ctx runtime.Context, w *storeWrite, ev runtime.Done) {
	p := s.persist
	p.inflight = nil
	if ev.Err != nil {
		ctx.Log().Error("configsrv: store write failed; messages held, retrying", "err", ev.Err, "records", len(w.recs),
			"held", len(w.out)+len(p.held))
		p.held = append(w.out, p.held...)
		p.failed = true
		p.volatile = true
		s.timers.Set(ctx, timerStore, storeRetry)
		return
	}
	for _, e := range w.recs {
		p.committed[e.ref], p.written[e.ref] = e.durable, e.full
		p.snaps[e.ref] = snapshot(e)
		if e.final {
			p.final[e.ref] = true
		}
	}
	flushOut(ctx, w.out)
	held, volatile := p.held, p.volatile
	p.held, p.volatile = nil, false
	s.afterEvent(ctx, held, volatile)
}
