package agent

import (
	"context"
	"fmt"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// pumpDrain builds Log items from the change log while the window has room:
// every DrainInterval, or as soon as DrainBytes were captured since the last
// drain. The change log is read in an op ("drain"), one item's worth at a
// time: the op fsyncs the log first when records were appended since the
// last fsync (only durable records are read), then reads; metadata records
// are completed by reading their ranges from the disks in a second op.
// Items are queued strictly in log order: one drain op or re-read runs at
// a time (draining), and Handle pumps again after each completes.
func (a *Agent) pumpDrain(ctx runtime.Context) {
	if a.phase != PhaseReplicating || !a.streamOpen || a.draining {
		return
	}
	fs := a.filter.Stats()
	if !a.drainDue && fs.CapturedBytes-a.capturedAtDrain < a.cfg.DrainBytes {
		return
	}
	if len(a.queue) >= a.cfg.Window {
		a.drainDue = true // go on when acknowledgements make room
		return
	}
	if fs.LastSeq < a.drainFrom {
		a.drainDue = false
		return
	}
	io := &runtime.DiskIO{Device: runtime.DeviceOS}
	needSync := fs.DurableSeq < fs.LastSeq
	if needSync {
		// The drain moves what the guest captured since the last drain
		// from the filter's memory to the log and fsyncs it; the records
		// read after it were just written and are in the page cache, so
		// the read itself costs no throughput.
		io.Bytes, io.Syncs = max(fs.CapturedBytes-a.capturedAtDrain, 0), 1
	}
	a.capturedAtDrain = fs.CapturedBytes
	a.drainDue = true
	f, from, maxBytes := a.filter, a.drainFrom, int64(a.cfg.ItemBytes)
	a.draining = true
	a.startOp(ctx, runtime.Op{Name: "drain", Disk: io, Run: func(context.Context) (any, error) {
		if needSync {
			if err := f.Sync(); err != nil {
				return nil, err // the filter stopped: observe asks for a resync
			}
		}
		return f.Read(from, maxBytes)
	}}, func(ctx runtime.Context, d runtime.Done) {
		a.draining = false
		if d.Err != nil {
			a.fail(ctx, "drain", d.Err)
			return
		}
		recs := d.Value.([]hrl.Record)
		if len(recs) == 0 || from != a.drainFrom {
			a.drainDue = false
			return
		}
		a.buildLogItem(ctx, recs)
	})
}

// metaRead is a metadata record's range to read back from a disk.
type metaRead struct {
	idx  int // index in the item's records
	disk uint16
	off  int64
	n    uint32
}

// buildLogItem turns records into a Log item and queues it, after reading
// the data of its metadata records from the disks if it has any.
func (a *Agent) buildLogItem(ctx runtime.Context, recs []hrl.Record) {
	first, last := recs[0].Seq, recs[len(recs)-1].Seq
	it := &batch.Item{Kind: batch.KindLog, First: first, Last: last}
	var metas []metaRead
	for _, r := range recs {
		switch r.Type {
		case hrl.TypeWrite:
			it.Records = append(it.Records, batch.Record{Seq: r.Seq, Type: batch.RecWrite, Disk: r.Disk, Off: r.Off, Data: r.Data})
		case hrl.TypeWriteMeta:
			if r.Seq <= a.redrainUpTo {
				a.redrainMeta = true
			}
			metas = append(metas, metaRead{idx: len(it.Records), disk: r.Disk, off: r.Off, n: r.Len})
			it.Records = append(it.Records, batch.Record{Seq: r.Seq, Type: batch.RecWrite, Disk: r.Disk, Off: r.Off})
		case hrl.TypeBookmark:
			if r.Seq <= a.redrainUpTo && a.redrainMeta {
				// Inserted before this restart, when the metadata records
				// before it had been read; they were just read again, later.
				// Retried once the re-reads are done, as a skip for
				// undrained metadata is (unless a tick came since).
				a.bookmarks.skip(r.BookmarkKind.String(), "metadata-reread")
				if r.BookmarkKind.Valid() {
					a.retry[r.BookmarkKind] = true
				}
				ctx.Log().Info("agent: bookmark dropped", "machine", a.cfg.Machine, "id", r.BookmarkID,
					"reason", "metadata-reread", "retry", "when-drained")
				continue
			}
			it.Records = append(it.Records, batch.Record{Seq: r.Seq, Type: batch.RecBookmark,
				BookmarkKind: r.BookmarkKind, BookmarkID: r.BookmarkID, UnixNano: r.UnixNano})
		case hrl.TypeRevoke:
			it.Records = append(it.Records, batch.Record{Seq: r.Seq, Type: batch.RecRevoke, BookmarkID: r.BookmarkID})
		case hrl.TypeBitmap:
			// Nothing to apply: the resync it calls for covers it.
		}
	}
	a.drainFrom = last + 1
	if len(metas) == 0 {
		a.filter.MarkDrained(last)
		a.enqueue(it, last)
		return
	}
	devs := a.cfg.Guest.Disks()
	var total int64
	for _, m := range metas {
		total += int64(m.n)
	}
	a.draining = true
	a.startOp(ctx, runtime.Op{Name: "drain-read", Bytes: total, Run: func(context.Context) (any, error) {
		return readMetas(devs, metas)
	}}, func(ctx runtime.Context, d runtime.Done) {
		a.draining = false
		if d.Err != nil {
			a.fail(ctx, "drain", d.Err)
			a.drainFrom = first // read again at the next drain
			return
		}
		for i, data := range d.Value.([][]byte) {
			it.Records[metas[i].idx].Data = data
		}
		a.filter.MarkDrained(last)
		a.enqueue(it, last)
	})
}

// readMetas reads the ranges of metadata records. It runs outside the actor.
func readMetas(devs []blockdev.Device, metas []metaRead) ([][]byte, error) {
	out := make([][]byte, len(metas))
	for i, m := range metas {
		if int(m.disk) >= len(devs) {
			return nil, fmt.Errorf("agent: metadata record for disk %d of %d", m.disk, len(devs))
		}
		out[i] = make([]byte, m.n)
		if _, err := devs[m.disk].ReadAt(out[i], m.off); err != nil {
			return nil, fmt.Errorf("agent: re-read %d bytes at %d of disk %d: %w", m.n, m.off, m.disk, err)
		}
	}
	return out, nil
}
