package agent

import (
	"context"
	"fmt"
	"slices"
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
//
// A process server that loses its cache disk loses items it had
// acknowledged: its answers then come from a new cache epoch
// (proto.ItemAck.Epoch) with a lower Acked. The agent resends the lost
// items from its change log if the log still holds their records, and
// otherwise — the usual case: records are trimmed as soon as their items
// are acknowledged — asks for a resync, whose SyncStart it numbers on from
// its own position so that the Azure side's numbering never goes back. (A
// lower Acked in the same epoch is a stale answer, overtaken by a later
// one, and is ignored.)
//
// A cache lost while the agent was down too (a machine crash, say) is
// caught the same way: the agent persists the epoch it last heard
// (persisted.PSEpoch) and a ceiling above every item number it sends
// (persisted.StreamCeil, reserved streamReserve items at a time, durably
// before any item past the old ceiling goes out). A restarted agent whose
// first answer comes from another epoch knows the process server lost
// what it had acknowledged, though not how much: it requires a resync,
// numbered on from the ceiling.
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
	probing    bool          // ProbeFirst: a hello is out, nothing is sent until an answer
	probeHigh  uint64        // the highest item sent before the probe

	itemsSent, retransmits, goBacks, backoffs uint64
	payloadSent                               int64

	psEpoch uint64 // the process server's cache epoch (0: not known yet)
	// resumed: the agent restarted and has not had an answer since, so
	// it does not know how far the process server's stream went.
	resumed    bool
	pastEpochs []uint64 // earlier epochs of it: their answers are stale
	// ackedLogs remembers the last record of recently acknowledged Log
	// items, oldest first: where a resend after a lost cache would start.
	ackedLogs []ackedLog
	psLosses  uint64 // times the process server lost acknowledged items
}

// streamReserve is how many item numbers the agent reserves at a time
// above the stream's position (persisted.StreamCeil): one state save per
// that many items.
const streamReserve = 1 << 20

// ackedLog is an acknowledged Log item and the last record it carried.
type ackedLog struct{ seq, last uint64 }

// maxAckedLogs bounds ackedLogs.
const maxAckedLogs = 64

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
	a.probing = false
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
	if !a.streamOpen || a.backingOff || a.probing || a.persist.busy() {
		return // (a state being saved: nothing goes out before it is durable)
	}
	if a.sentUpTo+1 < a.nextItem && a.nextItem-1 >= a.st.StreamCeil {
		// An item at or past the ceiling waits for a new one to be durable.
		a.st.StreamCeil = a.nextItem - 1 + streamReserve
		a.save(ctx)
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
//
// With ProbeFirst only the hello goes out (again every timeout until
// answered): its answer says where the receiver stands, and transmission
// resumes after that (see onAck).
func (a *Agent) retransmit(ctx runtime.Context) {
	if a.sentUpTo <= a.acked && !a.probing {
		return
	}
	if a.cfg.ProbeFirst {
		if !a.probing {
			a.probeHigh = a.sentUpTo
		}
		ctx.Log().Info("agent: probing before retransmitting", "machine", a.cfg.Machine, "acked", a.acked, "sent", a.probeHigh)
		a.probing = true
		a.set(ctx, tRetx, a.cfg.RetransmitTimeout)
	} else {
		ctx.Log().Info("agent: retransmitting", "machine", a.cfg.Machine, "from", a.acked+1, "to", a.sentUpTo)
	}
	a.sentUpTo = a.acked
	ctx.Send(runtime.Addr(a.st.ProcessServer), wire.Encode(&proto.StreamHello{Machine: a.cfg.Machine}))
}

func (a *Agent) onAck(ctx runtime.Context, m *proto.ItemAck) {
	if a.st.ProcessServer == "" {
		return
	}
	lost, blind := a.newEpoch(ctx, m), a.resumed
	a.resumed = false
	if lost && blind {
		// Restarted, and the process server's cache is not the one the
		// agent last heard: what it had acknowledged is gone, up to an
		// item number at most the ceiling.
		a.acked = max(a.acked, a.st.StreamCeil)
	}
	if lost && m.Acked < a.acked {
		a.cancel(ctx, tHello)
		a.streamOpen = true
		a.psLost(ctx, m.Acked, blind)
		return
	}
	if !a.streamOpen {
		// The answer to StreamHello: the stream continues after m.Acked —
		// or after the agent's own position, if it is numbering on past a
		// cache the process server lost (see psLost).
		pos := max(m.Acked, a.st.StreamFloor)
		a.cancel(ctx, tHello)
		a.streamOpen = true
		a.acked, a.nextItem, a.sentUpTo, a.maxSent = pos, pos+1, pos, pos
		a.queue = nil
		ctx.Log().Info("agent: stream open", "machine", a.cfg.Machine, "acked", m.Acked)
	}
	if a.probing && (m.Acked >= a.probeHigh || m.Acked <= a.acked && m.Status != proto.AckGap) {
		// The path works again and nothing sent before the probe is still
		// landing (an answer that moves nothing is the hello's; one that
		// reaches everything sent ends it too): resume after what the
		// receiver has. An ack that moves the position short of that is an
		// item that was in flight: the probe goes on. So does a gap: the
		// answer to an item sent before the probe that landed after a lost
		// one, not the hello's (a master target's crash lost the items
		// before it; ending the probe at every late item's gap resent the
		// whole window each time, a storm over a slow VPN: swarm seed 13).
		a.probing = false
		a.cancel(ctx, tRetx)
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
			if len(a.ackedLogs) == maxAckedLogs {
				a.ackedLogs = append(a.ackedLogs[:0], a.ackedLogs[1:]...)
			}
			a.ackedLogs = append(a.ackedLogs, ackedLog{it.seq, it.last})
		case batch.KindSyncStart:
			startAcked = startAcked || (a.sync != nil && a.sync.startItem == it.seq)
		case batch.KindSyncEnd:
			endAcked = endAcked || (a.sync != nil && a.sync.endItem == it.seq)
		}
	}
	a.acked = acked
	a.sentUpTo = max(a.sentUpTo, acked)
	a.backoff = 0
	if a.st.StreamFloor != 0 && acked > a.st.StreamFloor {
		a.st.StreamFloor = 0 // the process server has the stream past it now
		a.save(ctx)
	}
	if !a.probing {
		// transmit re-arms it for what is still in flight. While probing
		// transmit sends nothing and arms nothing: the timer is the
		// probe's, and an in-flight item's ack leaves it running, or a
		// lost answer to the hello would stall the stream for good.
		a.cancel(ctx, tRetx)
	}
	if trimTo > 0 {
		a.trimLog(ctx, trimTo)
	}
	if startAcked && !a.sync.final {
		a.set(ctx, tChecksums, a.cfg.ChecksumTimeout)
	}
	if endAcked {
		a.finishSync(ctx)
	}
}

// trimLog discards the change log's records up to upto (the process
// server has them) in an op: one trim at a time, the latest target
// folded in while one runs. The trim happens whatever the agent decides
// meanwhile (a durable op): acknowledged records are the process server's.
func (a *Agent) trimLog(ctx runtime.Context, upto uint64) {
	a.trimWant = max(a.trimWant, upto)
	if a.trimming || a.trimWant <= a.trimDone {
		return
	}
	f, to := a.filter, a.trimWant
	a.trimming = true
	// The trim point is written to a file of its own: temporary file,
	// fsync, rename, directory fsync.
	a.ops.GoDurable(ctx, runtime.Op{Name: "trim", Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Bytes: 8, Syncs: 2},
		Run: func(context.Context) (any, error) { return nil, f.Trim(to) }}, func(ctx runtime.Context, d runtime.Done) {
		a.trimming = false
		if d.Err != nil {
			a.fail(ctx, "trim", d.Err)
		} else {
			a.trimDone = max(a.trimDone, to)
		}
		if a.trimWant > to && d.Err == nil {
			a.trimLog(ctx, a.trimWant)
		}
	})
}

// newEpoch reports whether m comes from a cache epoch of the process server
// newer than the one the agent knew, and makes it the known one.
func (a *Agent) newEpoch(ctx runtime.Context, m *proto.ItemAck) bool {
	if m.Epoch == 0 || m.Epoch == a.psEpoch || slices.Contains(a.pastEpochs, m.Epoch) {
		return false
	}
	// Durable before any item goes out under it (transmit waits for the
	// save), so that a restart can tell a lost cache (see stream).
	a.st.PSEpoch = m.Epoch
	a.save(ctx)
	known := a.psEpoch != 0
	if known {
		if len(a.pastEpochs) == 8 {
			a.pastEpochs = append(a.pastEpochs[:0], a.pastEpochs[1:]...)
		}
		a.pastEpochs = append(a.pastEpochs, a.psEpoch)
	}
	a.psEpoch = m.Epoch
	return known
}

// psLost handles a process server that lost the items after acked which it
// had acknowledged (see stream): resend them from the change log if it
// still holds their records, else resync.
//
// blind says the agent restarted since: a.acked is then its ceiling, not
// a position the process server acknowledged, and the change log is not
// consulted (the agent no longer knows which records the lost items held).
func (a *Agent) psLost(ctx runtime.Context, acked uint64, blind bool) {
	a.psLosses++
	if blind {
		ctx.Log().Warn("agent: process server lost items it had acknowledged while the agent was down", "machine", a.cfg.Machine,
			"from", acked+1, "ceiling", a.acked)
	} else {
		ctx.Log().Warn("agent: process server lost items it had acknowledged", "machine", a.cfg.Machine,
			"from", acked+1, "to", a.acked)
	}
	a.queue, a.goBackAt, a.backingOff, a.probing = nil, 0, false, false
	a.cancel(ctx, tRetx)
	a.cancel(ctx, tBackoff)
	if from, ok := a.heldFrom(acked); ok && !blind && a.phase == PhaseReplicating {
		ctx.Log().Info("agent: resending lost items from the change log", "machine", a.cfg.Machine, "from_record", from)
		a.acked, a.nextItem, a.sentUpTo = acked, acked+1, acked
		a.ops.Reset() // a metadata re-read in flight is for an item no longer queued
		a.draining = false
		a.drainFrom, a.drainDue = from, true
		return
	}
	// Number on from our own position: the process server takes a
	// SyncStart at any seq on a stream it has no record of, and the Azure
	// side applies a resync's SyncStart after a gap.
	a.sentUpTo, a.nextItem = a.acked, a.acked+1
	a.st.StreamFloor = a.acked
	if a.phase == PhaseIdle {
		a.save(ctx)
		return
	}
	reason := fmt.Sprintf("the process server no longer has items %d to %d it had acknowledged (its cache was lost), and the change log no longer holds their records", acked+1, a.acked)
	if blind {
		reason = fmt.Sprintf("the process server lost its cache while the agent was down (cache epoch %d, was %d): items it had acknowledged may never have reached Azure", a.psEpoch, a.pastEpochs[len(a.pastEpochs)-1])
	}
	if a.phase == PhaseResyncRequired {
		a.save(ctx)
		return
	}
	if a.phase == PhaseSyncing && a.sync != nil {
		a.ops.Reset()
		a.sync = nil
	}
	a.phase = PhaseReplicating // so that requireResync acts whatever the phase was
	a.requireResync(ctx, reason)
}

// heldFrom returns the first record of the items after item acked, if the
// change log still holds every record from there on.
func (a *Agent) heldFrom(acked uint64) (uint64, bool) {
	var last uint64
	found := false
	for _, l := range a.ackedLogs {
		if l.seq <= acked {
			last, found = l.last, true
		}
	}
	// A trim in flight counts as done: its records are about to go.
	if !found || max(a.filter.Stats().TrimSeq, a.trimWant) > last {
		return 0, false
	}
	return last + 1, true
}
