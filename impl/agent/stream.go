package agent

import (
	"strconv"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// stream is the agent's side of the replication stream to the process
// server: a go-back-N sender over a window of items.
//
// Items are numbered when they are built, from the process server's
// acknowledged position on (learnt from its answer to StreamHello, so
// nothing is built before the stream is open), and kept in queue until
// acknowledged. At most Window items past the acknowledged one are sent;
// a gap answer or the retransmission timer resends from acked+1, a
// cache-full answer stops sending for a growing back-off.
type stream struct {
	streamOpen bool
	acked      uint64     // highest item the process server acknowledged
	nextItem   uint64     // the seq of the next item built
	sentUpTo   uint64     // items up to this were sent (since the last go-back)
	maxSent    uint64     // highest item ever sent: resending below it is a retransmission
	queue      []*outItem // items acked+1 .. nextItem-1
	goBackAt   uint64     // a gap answer already made us resend from this item
	backingOff bool
	backoff    time.Duration // the next cache-full back-off

	itemsSent, retransmits, goBacks, backoffs uint64
	payloadSent                               int64
}

// outItem is a built item waiting for its acknowledgement.
type outItem struct {
	seq     uint64
	kind    batch.Kind
	last    uint64 // Log items: the last record seq they cover
	data    []byte // the marshalled item
	payload int64  // data bytes it carries
}

// openStream (re)announces the stream; the answer gives the numbering.
func (a *Agent) openStream(ctx runtime.Context) {
	if a.st.ProcessServer == "" {
		return
	}
	ctx.Send(runtime.Addr(a.st.ProcessServer), wire.Encode(&proto.StreamHello{Machine: a.cfg.Machine}))
	a.set(ctx, tHello, a.cfg.RetransmitTimeout)
}

// dropStream forgets the stream's position and everything queued.
func (a *Agent) dropStream() {
	a.streamOpen = false
	a.queue = nil
	a.backingOff = false
	a.goBackAt = 0
}

// enqueue numbers it and queues it for sending. The stream must be open.
func (a *Agent) enqueue(it *batch.Item, last uint64) uint64 {
	it.Machine = a.cfg.Machine
	it.Seq = a.nextItem
	a.nextItem++
	a.queue = append(a.queue, &outItem{seq: it.Seq, kind: it.Kind, last: last, data: it.Marshal(), payload: it.Size()})
	return it.Seq
}

// transmit sends what the window allows.
func (a *Agent) transmit(ctx runtime.Context) {
	if !a.streamOpen || a.backingOff {
		return
	}
	ps := runtime.Addr(a.st.ProcessServer)
	for a.sentUpTo+1 < a.nextItem && a.sentUpTo < a.acked+uint64(a.cfg.Window) {
		it := a.queue[a.sentUpTo-a.acked]
		ctx.Send(ps, wire.Encode(&proto.ItemMsg{Machine: a.cfg.Machine, Seq: it.seq, Data: it.data, Codec: a.st.Policy.Compression}))
		a.sentUpTo = it.seq
		a.itemsSent++
		if it.seq <= a.maxSent {
			a.retransmits++
		} else {
			a.maxSent = it.seq
			a.payloadSent += it.payload
		}
	}
	if a.sentUpTo > a.acked {
		a.arm(ctx, tRetx, a.cfg.RetransmitTimeout)
	}
}

// retransmit is the retransmission timeout: go back to acked+1, and say
// hello again in case the process server restarted.
func (a *Agent) retransmit(ctx runtime.Context) {
	if a.sentUpTo <= a.acked {
		return
	}
	ctx.Log().Info("agent: retransmitting", "machine", a.cfg.Machine, "from", a.acked+1, "to", a.sentUpTo)
	a.sentUpTo = a.acked
	ctx.Send(runtime.Addr(a.st.ProcessServer), wire.Encode(&proto.StreamHello{Machine: a.cfg.Machine}))
}

func (a *Agent) onAck(ctx runtime.Context, m *proto.ItemAck) {
	if a.st.ProcessServer == "" {
		return
	}
	if !a.streamOpen {
		// The answer to StreamHello: the stream continues after m.Acked.
		a.cancel(ctx, tHello)
		a.streamOpen = true
		a.acked, a.nextItem, a.sentUpTo, a.maxSent = m.Acked, m.Acked+1, m.Acked, m.Acked
		a.queue = nil
		ctx.Log().Info("agent: stream open", "machine", a.cfg.Machine, "acked", m.Acked)
	}
	if m.Acked < a.acked {
		return // stale: overtaken by a later answer
	}
	if m.Acked >= a.nextItem {
		ctx.Log().Warn("agent: process server acknowledged items never built", "machine", a.cfg.Machine,
			"acked", m.Acked, "built", a.nextItem-1)
		return
	}
	if m.Acked > a.acked {
		a.advance(ctx, m.Acked)
	}
	switch m.Status {
	case proto.AckOK:
	case proto.AckGap:
		if a.goBackAt != a.acked+1 && a.sentUpTo > a.acked {
			a.goBackAt = a.acked + 1
			a.goBacks++
			a.sentUpTo = a.acked
		}
	case proto.AckCacheFull, proto.AckRefused:
		if m.Status == proto.AckRefused {
			a.lastErr = "process server refused item " + strconv.FormatUint(a.acked+1, 10) + ": " + m.Reason
			ctx.Log().Error("agent: item refused", "machine", a.cfg.Machine, "item", a.acked+1, "reason", m.Reason)
		}
		if a.backingOff {
			return
		}
		if a.backoff <= 0 {
			a.backoff = a.cfg.CacheFullBackoff
		}
		ctx.Log().Info("agent: backing off", "machine", a.cfg.Machine, "status", m.Status, "for", a.backoff.String())
		a.backingOff = true
		a.backoffs++
		a.sentUpTo = a.acked
		a.cancel(ctx, tRetx)
		a.set(ctx, tBackoff, a.backoff)
		a.backoff = min(2*a.backoff, 64*a.cfg.CacheFullBackoff)
	default:
		ctx.Log().Warn("agent: unknown ack status", "machine", a.cfg.Machine, "status", m.Status)
	}
}

// advance handles the cumulative acknowledgement of every item up to acked:
// it trims the log up to the records of acknowledged Log items, and moves
// the sync on when its SyncStart or SyncEnd is acknowledged.
func (a *Agent) advance(ctx runtime.Context, acked uint64) {
	var trimTo uint64
	var startAcked, endAcked bool
	for len(a.queue) > 0 && a.queue[0].seq <= acked {
		it := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		switch it.kind {
		case batch.KindLog:
			trimTo = max(trimTo, it.last)
		case batch.KindSyncStart:
			startAcked = startAcked || (a.sync != nil && a.sync.startItem == it.seq)
		case batch.KindSyncEnd:
			endAcked = endAcked || (a.sync != nil && a.sync.endItem == it.seq)
		}
	}
	a.acked = acked
	a.sentUpTo = max(a.sentUpTo, acked)
	a.backoff = 0
	a.cancel(ctx, tRetx) // transmit re-arms it for what is still in flight
	if trimTo > 0 {
		if err := a.filter.Trim(trimTo); err != nil {
			a.fail(ctx, "trim", err)
		}
	}
	if startAcked && !a.sync.final {
		a.set(ctx, tChecksums, a.cfg.ChecksumTimeout)
	}
	if endAcked {
		a.finishSync(ctx)
	}
}
