package agent

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// syncState is a running sync (or resync) of generation gen.
//
// The order is: Reset the log (records from logFrom on are the writes made
// while the disks are read) → SyncStart item → the replica's Checksums
// (all of them, Final last) → read each disk in ItemBytes regions, keep the
// 4 KiB blocks whose checksum differs (Fresh replica: the non-zero blocks)
// → Chunk items → SyncEnd(logFrom) → once SyncEnd is acknowledged,
// replicating from logFrom.
type syncState struct {
	gen     uint64
	logFrom uint64
	devs    []blockdev.Device
	sizes   []int64

	started   bool // SyncStart queued
	startItem uint64
	final     bool // the last Checksums message came
	replica   []replicaSums

	disk    int   // next region to read: disk index and offset
	off     int64 //
	reading bool
	blocked bool // a read failed: wait for tSyncRetry

	chunk      *batch.Item // chunk being filled
	chunkBytes int
	chunks     uint64
	done       bool // SyncEnd queued
	endItem    uint64

	readBytes, totalBytes, chunkData int64
	startedAt                        time.Time
}

// replicaSums is what the Azure side said about one replica disk.
type replicaSums struct {
	fresh bool   // just created: all zero
	sums  []byte // proto.ChecksumSize bytes per block
	known []bool // which blocks' sums arrived
}

// SyncStatus is the progress of the current (or last) sync.
type SyncStatus struct {
	Gen            uint64 // the sync generation
	Active         bool   // still running
	ChecksumsFinal bool   // every replica checksum arrived
	FreshDisks     int    // disks the Azure side reported as freshly created (all zero)
	BytesRead      int64  // source bytes read and compared so far
	TotalBytes     int64  // source bytes to read (all disks)
	Chunks         uint64 // Chunk items built
	ChunkBytes     int64  // data bytes in them (the blocks that differed)
	LogFrom        uint64 // the first change-log record replayed after the chunks
}

// beginSync starts generation gen over from scratch: the log is reset, so
// the chunks read from now on cover everything logged before.
func (a *Agent) beginSync(ctx runtime.Context, gen uint64) {
	a.ops.Reset()
	a.draining = false
	a.cancel(ctx, tChecksums)
	a.cancel(ctx, tSyncRetry)
	logFrom, err := a.filter.Reset()
	if err != nil {
		a.fail(ctx, "sync", err)
		a.sync = nil
		a.phase = PhaseSyncing // so that requireResync acts
		a.requireResync(ctx, err.Error())
		return
	}
	a.lastMode = ModeData
	s := &syncState{gen: gen, logFrom: logFrom, devs: a.cfg.Guest.Disks(), startedAt: ctx.Now()}
	for _, d := range s.devs {
		s.sizes = append(s.sizes, d.Size())
		s.totalBytes += d.Size()
	}
	s.replica = make([]replicaSums, len(s.devs))
	a.sync = s
	a.phase = PhaseSyncing
	a.st.Gen, a.st.Phase, a.st.Reason = gen, PhaseSyncing, ""
	a.save(ctx)
	a.drainFrom, a.drainDue = logFrom, false
	a.redrainUpTo, a.redrainMeta = 0, false
	a.cancel(ctx, tDrain)
	a.lastSync = SyncStatus{Gen: gen, Active: true, TotalBytes: s.totalBytes, LogFrom: logFrom}
	ctx.Log().Info("agent: sync begins", "machine", a.cfg.Machine, "gen", gen, "log_from", logFrom,
		"disks", len(s.devs), "bytes", s.totalBytes)
}

// pumpSync moves the sync on as far as the stream allows.
func (a *Agent) pumpSync(ctx runtime.Context) {
	s := a.sync
	if !a.streamOpen {
		return
	}
	if !s.started {
		s.started = true
		s.startItem = a.enqueue(&batch.Item{Kind: batch.KindSyncStart, Gen: s.gen, DiskSizes: s.sizes}, 0)
	}
	if !s.final || s.reading || s.blocked || s.done || len(a.queue) >= a.cfg.Window {
		return
	}
	for s.disk < len(s.devs) && s.off >= s.sizes[s.disk] {
		a.flushChunk()
		s.disk, s.off = s.disk+1, 0
	}
	if s.disk >= len(s.devs) {
		a.flushChunk()
		s.done = true
		s.endItem = a.enqueue(&batch.Item{Kind: batch.KindSyncEnd, Gen: s.gen, LogFrom: s.logFrom, Chunks: s.chunks}, 0)
		ctx.Log().Info("agent: sync read done", "machine", a.cfg.Machine, "gen", s.gen, "chunks", s.chunks,
			"chunk_bytes", s.chunkData, "read_bytes", s.readBytes)
		return
	}
	dev, disk, off := s.devs[s.disk], s.disk, s.off
	n := min(int64(a.cfg.ItemBytes), s.sizes[disk]-off)
	rs := s.replica[disk]
	fresh := rs.fresh
	var sums []byte
	var known []bool
	if !fresh && rs.sums != nil {
		b0, b1 := off/proto.ChecksumBlockSize, (off+n+proto.ChecksumBlockSize-1)/proto.ChecksumBlockSize
		b1 = min(b1, int64(len(rs.known)))
		sums = append([]byte(nil), rs.sums[b0*proto.ChecksumSize:b1*proto.ChecksumSize]...)
		known = append([]bool(nil), rs.known[b0:b1]...)
	}
	s.reading = true
	a.startOp(ctx, runtime.Op{Name: "sync-read", Bytes: n, Run: func(context.Context) (any, error) {
		return compareRegion(dev, off, n, fresh, sums, known)
	}}, func(ctx runtime.Context, d runtime.Done) {
		if a.sync != s {
			return
		}
		s.reading = false
		if d.Err != nil {
			a.fail(ctx, "sync read", d.Err)
			s.blocked = true
			a.set(ctx, tSyncRetry, a.cfg.RetransmitTimeout)
			return
		}
		for _, r := range d.Value.([]batch.Run) {
			if s.chunk != nil && s.chunkBytes+len(r.Data) > a.cfg.ItemBytes {
				a.flushChunk()
			}
			if s.chunk == nil {
				s.chunk = &batch.Item{Kind: batch.KindChunk, Gen: s.gen, Disk: uint16(disk)}
			}
			s.chunk.Runs = append(s.chunk.Runs, r)
			s.chunkBytes += len(r.Data)
		}
		s.off += n
		s.readBytes += n
		a.lastSync.BytesRead = s.readBytes
	})
}

// flushChunk queues the chunk being filled.
func (a *Agent) flushChunk() {
	s := a.sync
	if s.chunk == nil {
		return
	}
	a.enqueue(s.chunk, 0)
	s.chunks++
	s.chunkData += int64(s.chunkBytes)
	a.lastSync.Chunks, a.lastSync.ChunkBytes = s.chunks, s.chunkData
	s.chunk, s.chunkBytes = nil, 0
}

// finishSync: SyncEnd (so every chunk) is acknowledged; the log is drained
// from logFrom on.
func (a *Agent) finishSync(ctx runtime.Context) {
	s := a.sync
	a.sync = nil
	a.lastSync.Active = false
	a.phase = PhaseReplicating
	a.st.Phase = PhaseReplicating
	a.save(ctx)
	a.drainFrom, a.drainDue = s.logFrom, true
	a.set(ctx, tDrain, a.cfg.DrainInterval)
	ctx.Log().Info("agent: sync complete", "machine", a.cfg.Machine, "gen", s.gen, "chunks", s.chunks,
		"chunk_bytes", s.chunkData, "took", ctx.Now().Sub(s.startedAt).String())
}

func (a *Agent) onChecksums(ctx runtime.Context, m *proto.Checksums) {
	s := a.sync
	if s == nil || m.Gen != s.gen || !s.started || s.final {
		return // not for this sync, or late
	}
	if int(m.Disk) >= len(s.replica) {
		ctx.Log().Warn("agent: checksums for an unknown disk", "machine", a.cfg.Machine, "disk", m.Disk)
		return
	}
	rs := &s.replica[m.Disk]
	switch {
	case m.Fresh:
		if !rs.fresh {
			a.lastSync.FreshDisks++
		}
		rs.fresh = true
	case m.BlockSize != proto.ChecksumBlockSize || m.Off < 0 || m.Off%proto.ChecksumBlockSize != 0 || len(m.Sums)%proto.ChecksumSize != 0:
		// Unusable: those blocks stay unknown, and unknown blocks are sent.
		ctx.Log().Warn("agent: malformed checksums", "machine", a.cfg.Machine, "disk", m.Disk, "off", m.Off,
			"block_size", m.BlockSize, "sum_bytes", len(m.Sums))
	default:
		nb := (s.sizes[m.Disk] + proto.ChecksumBlockSize - 1) / proto.ChecksumBlockSize
		if rs.sums == nil {
			rs.sums = make([]byte, nb*proto.ChecksumSize)
			rs.known = make([]bool, nb)
		}
		b0 := m.Off / proto.ChecksumBlockSize
		for i := int64(0); i < int64(len(m.Sums)/proto.ChecksumSize) && b0+i < nb; i++ {
			copy(rs.sums[(b0+i)*proto.ChecksumSize:], m.Sums[i*proto.ChecksumSize:(i+1)*proto.ChecksumSize])
			rs.known[b0+i] = true
		}
	}
	if m.Final {
		s.final = true
		a.lastSync.ChecksumsFinal = true
		a.cancel(ctx, tChecksums)
		ctx.Log().Info("agent: replica checksums received", "machine", a.cfg.Machine, "gen", s.gen,
			"fresh_disks", a.lastSync.FreshDisks)
	}
}

// compareRegion reads n bytes at off and returns the runs of checksum
// blocks (proto.ChecksumBlockSize) the replica lacks: against a fresh
// replica the non-zero blocks, otherwise the blocks whose checksum
// (proto.BlockSum, the Azure side's) differs or is unknown (a lost
// Checksums message costs bandwidth, never correctness). sums and known
// cover the region's blocks. off is block-aligned and n a whole number of
// blocks except at a disk's end, where the short last block is compared
// zero-padded, as the Azure side sums it. A device that can tell where its
// data is (blockdev.Sparse) is read there only: the rest is zeros, judged
// as a zero block read would be, without reading or scanning it. It runs
// outside the actor.
func compareRegion(dev blockdev.Device, off, n int64, fresh bool, sums []byte, known []bool) ([]batch.Run, error) {
	// buf holds the region as read; nil when the region is all holes.
	var buf []byte
	// data[b]: block b may hold data (read it); the others are zeros.
	var data []bool
	if sp, ok := dev.(blockdev.Sparse); ok {
		ext, err := sp.DataExtents(off, n)
		if err != nil {
			return nil, fmt.Errorf("agent: sync read of %d bytes at %d: %w", n, off, err)
		}
		data = make([]bool, (n+proto.ChecksumBlockSize-1)/proto.ChecksumBlockSize)
		if len(ext) > 0 {
			buf = make([]byte, n)
		}
		for _, e := range ext {
			// Whole blocks: the device reads whole sectors, and an
			// extent may start or end within a block.
			b0, b1 := (e.Off-off)/proto.ChecksumBlockSize, (e.End()-off+proto.ChecksumBlockSize-1)/proto.ChecksumBlockSize
			for b := b0; b < b1; b++ {
				data[b] = true
			}
			lo, hi := b0*proto.ChecksumBlockSize, min(b1*proto.ChecksumBlockSize, n)
			if _, err := dev.ReadAt(buf[lo:hi], off+lo); err != nil {
				return nil, fmt.Errorf("agent: sync read of %d bytes at %d: %w", hi-lo, off+lo, err)
			}
		}
	} else {
		buf = make([]byte, n)
		if _, err := dev.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("agent: sync read of %d bytes at %d: %w", n, off, err)
		}
	}
	// bytes [lo, hi) of the region: zeros made for the run when nothing
	// was read.
	region := func(lo, hi int64) []byte {
		if buf == nil {
			return make([]byte, hi-lo)
		}
		return buf[lo:hi]
	}
	var runs []batch.Run
	start := int64(-1)
	for b := int64(0); b*proto.ChecksumBlockSize < n; b++ {
		lo, hi := b*proto.ChecksumBlockSize, min((b+1)*proto.ChecksumBlockSize, n)
		var blk []byte
		if buf != nil {
			blk = buf[lo:hi]
		}
		zero := (data != nil && !data[b]) || blockdev.IsZero(blk)
		if blockDiffers(blk, zero, b, fresh, sums, known) {
			if start < 0 {
				start = lo
			}
			continue
		}
		if start >= 0 {
			runs = append(runs, batch.Run{Off: off + start, Data: region(start, lo)})
			start = -1
		}
	}
	if start >= 0 {
		runs = append(runs, batch.Run{Off: off + start, Data: region(start, n)})
	}
	return runs, nil
}

// blockDiffers says whether the replica lacks blk, block b of the region;
// zero says blk is all zeros.
func blockDiffers(blk []byte, zero bool, b int64, fresh bool, sums []byte, known []bool) bool {
	if fresh {
		return !zero
	}
	if b >= int64(len(known)) || !known[b] {
		return true
	}
	want := sums[b*proto.ChecksumSize : (b+1)*proto.ChecksumSize]
	if zero {
		return !bytes.Equal(want, proto.ZeroBlockSum[:])
	}
	sum := proto.BlockSum(blk)
	return !bytes.Equal(sum[:], want)
}
