package mastertarget

import (
	"context"
	"fmt"
	"io"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vsphere"
)

// checkItem refuses an item that does not fit the machine's disks: a disk
// index out of range, a write past a disk's capacity, a sync whose disks are
// not the attached ones. Such an item is corrupt or meant for another
// target, and applying any of it would damage a disk.
func checkItem(it *batch.Item, disks []proto.TargetDisk) error {
	fits := func(disk uint16, off int64, n int) error {
		if int(disk) >= len(disks) {
			return fmt.Errorf("%w: %s %s item %d writes disk %d of %d", ErrForeign, it.Machine, it.Kind, it.Seq, disk, len(disks))
		}
		if end := off + int64(n); off < 0 || end > disks[disk].CapacityBytes {
			return fmt.Errorf("%w: %s %s item %d writes %d bytes at %d, past disk %d's %d bytes",
				ErrForeign, it.Machine, it.Kind, it.Seq, n, off, disk, disks[disk].CapacityBytes)
		}
		return nil
	}
	switch it.Kind {
	case batch.KindSyncStart:
		if len(it.DiskSizes) != len(disks) {
			return fmt.Errorf("%w: %s sync of %d disks, %d attached", ErrForeign, it.Machine, len(it.DiskSizes), len(disks))
		}
		for i, sz := range it.DiskSizes {
			if sz > disks[i].CapacityBytes {
				return fmt.Errorf("%w: %s sync disk %d of %d bytes, target holds %d", ErrForeign, it.Machine, i, sz, disks[i].CapacityBytes)
			}
		}
	case batch.KindChunk:
		for _, r := range it.Runs {
			if err := fits(it.Disk, r.Off, len(r.Data)); err != nil {
				return err
			}
		}
	case batch.KindLog:
		for _, r := range it.Records {
			if r.Type == batch.RecWrite {
				if err := fits(r.Disk, r.Off, len(r.Data)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// applyJob is one apply op's work: consecutive items of one machine, the
// first right after the durable position, and the state to make durable
// once their writes are in the datastore. It holds copies: the op runs
// outside the actor's turn.
type applyJob struct {
	disks []proto.TargetDisk
	items []*batch.Item
	plan  plan
	jour  jinfo // the journal as the actor knows it
}

// applyResult is an apply op's outcome; its journal is right even when the
// op fails (an append that succeeded stays).
type applyResult struct {
	bytesRead, bytesWritten int64
	journaled               int // entries appended
	jour                    jinfo
	trimErr                 error // the journal could not be trimmed (it stays longer, no harm)
}

// diskWrite is one write of an apply job, in stream order; journal says
// that the bytes it overwrites go to the undo journal first.
type diskWrite struct {
	at      pos
	disk    uint16
	off     int64
	data    []byte
	journal bool
}

// writes lists the job's writes in stream order. A write is journaled
// when the plan journals from a position at or before it and the journal
// does not hold it already (its position is not after the journal's
// last: a re-apply after a failure finds the disk may hold the new bytes).
func (j applyJob) writes() []diskWrite {
	var out []diskWrite
	add := func(p pos, disk uint16, off int64, data []byte) {
		jr := j.plan.journal && p.cmp(j.plan.from) >= 0 && (j.jour.Bytes == 0 || p.cmp(j.jour.Last) > 0)
		out = append(out, diskWrite{at: p, disk: disk, off: off, data: data, journal: jr})
	}
	for _, it := range j.items {
		switch it.Kind {
		case batch.KindChunk:
			for ri, r := range it.Runs {
				add(pos{Item: it.Seq, Rec: uint32(ri)}, it.Disk, r.Off, r.Data)
			}
		case batch.KindLog:
			for ri, r := range it.Records {
				if r.Type == batch.RecWrite {
					add(pos{Item: it.Seq, Rec: uint32(ri)}, r.Disk, r.Off, r.Data)
				}
			}
		}
	}
	return out
}

// datastoreBytes is what an apply of the job moves to and from the
// datastore: every write, and the bytes read first for the journal.
func (j applyJob) datastoreBytes() int64 {
	var n int64
	for _, w := range j.writes() {
		n += int64(len(w.data))
		if w.journal {
			n += int64(len(w.data))
		}
	}
	return n
}

// run applies the job, touching only the bytes the items write (ranged
// datastore I/O: a disk of any size costs what changes, never the whole
// disk): for each journaled write, read the bytes it overwrites — as the
// disk holds them, with the job's earlier writes over them — and append
// them to the undo journal and fsync it; then write each write in stream
// order; write the new state to the retention volume and fsync it; then
// trim the journal to what the kept points need. If any step fails, the
// position stays where it was: a retry applies the same items again,
// which puts the same bytes at the same offsets, so a disk written before
// the failure is neither harmed nor left behind; and a write the journal
// already holds is not journaled again (see writes). A flat extent shorter
// than its disk reads as zeros past its end, and a write past its end
// grows it.
func (j applyJob) run(ctx context.Context, vc vsphere.Client, ret retention) (applyResult, error) {
	res := applyResult{jour: j.jour}
	machine := j.plan.next.Machine
	ws := j.writes()
	var undo []jentry
	for i, w := range ws {
		if !w.journal {
			continue
		}
		old := make([]byte, len(w.data))
		n, err := vc.ReadAt(ctx, j.disks[w.disk].Path, old, w.off)
		if err != nil && err != io.EOF {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, w.disk, err)
		}
		res.bytesRead += int64(n)
		// The job's earlier writes are not on the disk yet.
		for _, e := range ws[:i] {
			if e.disk != w.disk || e.off >= w.off+int64(len(old)) || w.off >= e.off+int64(len(e.data)) {
				continue
			}
			lo, hi := max(e.off, w.off), min(e.off+int64(len(e.data)), w.off+int64(len(old)))
			copy(old[lo-w.off:hi-w.off], e.data[lo-e.off:hi-e.off])
		}
		undo = append(undo, jentry{At: w.at, Disk: w.disk, Off: w.off, Data: old})
	}
	if len(undo) > 0 {
		n, err := ret.appendJournal(machine, j.jour.Bytes, undo)
		if err != nil {
			return res, fmt.Errorf("%w: %w", ErrRetention, err)
		}
		if res.jour.Bytes == 0 {
			res.jour.First = undo[0].At
		}
		res.jour.Bytes, res.jour.Last, res.journaled = n, undo[len(undo)-1].At, len(undo)
	}
	for _, w := range ws {
		if err := vc.WriteAt(ctx, j.disks[w.disk].Path, w.data, w.off); err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, w.disk, err)
		}
		res.bytesWritten += int64(len(w.data))
	}
	if err := ret.write(j.plan.next); err != nil {
		return res, fmt.Errorf("%w: %w", ErrRetention, err)
	}
	if len(j.plan.next.Points) > 0 {
		res.jour, res.trimErr = ret.trimJournal(machine, res.jour, j.plan.reach)
	}
	return res, nil
}

// sumChunk is how much of a disk blockSums reads at a time: whole
// checksum blocks, so that a disk of any size is summed in bounded memory.
const sumChunk = 1 << 20

// blockSums sums blocks [off/ChecksumBlockSize, +blocks) of a disk by the
// one rule (proto.BlockSum), reading it sumChunk at a time; a block past
// the file's end is zeros, and so is a block past the disk's capacity. A
// block of zeros has the constant proto.ZeroBlockSum, which is what
// BlockSum gives it: it is not hashed again.
func blockSums(ctx context.Context, vc vsphere.Client, disk proto.TargetDisk, off, blocks int64) ([]byte, error) {
	out := make([]byte, 0, blocks*proto.ChecksumSize)
	buf := make([]byte, sumChunk)
	for b := int64(0); b < blocks; {
		start := off + b*proto.ChecksumBlockSize
		n := min(int64(len(buf))/proto.ChecksumBlockSize, blocks-b)
		end := min(start+n*proto.ChecksumBlockSize, disk.CapacityBytes)
		chunk := buf[:max(end-start, 0)]
		got, err := vc.ReadAt(ctx, disk.Path, chunk, start)
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("%w: %w", ErrDatastore, err)
		}
		clear(chunk[got:]) // past the file's end: zeros
		for i := int64(0); i < n; i++ {
			lo := min(i*proto.ChecksumBlockSize, int64(len(chunk)))
			block := chunk[lo:min(lo+proto.ChecksumBlockSize, int64(len(chunk)))]
			sum := proto.ZeroBlockSum
			if !blockdev.IsZero(block) {
				sum = proto.BlockSum(block)
			}
			out = append(out, sum[:]...)
		}
		b += n
	}
	return out, nil
}

// checksumMessages computes the Checksums messages a SyncStart owes, in
// azuresvc's shape: per disk, in disk order, one Fresh message when the
// disks are as created (nothing written since the attach said Fresh), else
// the sums of every block of the disk's synced size by the one rule
// (proto.BlockSum, a block past the file's end is zeros), at most
// MaxSumsPerMessage blocks a message. Final marks the last message.
func checksumMessages(ctx context.Context, vc vsphere.Client, st state) ([]*proto.Checksums, error) {
	var out []*proto.Checksums
	for i, d := range st.Disks {
		if st.Fresh {
			out = append(out, &proto.Checksums{Machine: st.Machine, Gen: st.Gen, Fresh: true, Disk: uint16(i), BlockSize: proto.ChecksumBlockSize})
			continue
		}
		size := d.CapacityBytes
		if i < len(st.SyncSizes) {
			size = st.SyncSizes[i]
		}
		blocks := (size + proto.ChecksumBlockSize - 1) / proto.ChecksumBlockSize
		sums, err := blockSums(ctx, vc, proto.TargetDisk{Path: d.Path, CapacityBytes: size}, 0, blocks)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		per := MaxSumsPerMessage * proto.ChecksumSize
		for off := 0; off < len(sums); off += per {
			out = append(out, &proto.Checksums{Machine: st.Machine, Gen: st.Gen, Disk: uint16(i),
				Off: int64(off/proto.ChecksumSize) * proto.ChecksumBlockSize, BlockSize: proto.ChecksumBlockSize,
				Sums: sums[off:min(off+per, len(sums))]})
		}
	}
	if len(out) > 0 {
		out[len(out)-1].Final = true
	}
	return out, nil
}
