package mastertarget

import (
	"context"
	"fmt"
	"slices"

	"github.com/v2a-dr/v2a/impl/batch"
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

// touched is the sorted indexes of the disks items write.
func touched(items []*batch.Item) []uint16 {
	var out []uint16
	add := func(d uint16) {
		if i, found := slices.BinarySearch(out, d); !found {
			out = slices.Insert(out, i, d)
		}
	}
	for _, it := range items {
		switch it.Kind {
		case batch.KindChunk:
			if len(it.Runs) > 0 {
				add(it.Disk)
			}
		case batch.KindLog:
			for _, r := range it.Records {
				if r.Type == batch.RecWrite {
					add(r.Disk)
				}
			}
		}
	}
	return out
}

// writeAt writes data at off of img, growing it with zeros as needed: a
// flat extent shorter than its disk reads as zeros past its end.
func writeAt(img []byte, off int64, data []byte) []byte {
	if end := off + int64(len(data)); end > int64(len(img)) {
		img = append(img, make([]byte, end-int64(len(img)))...)
	}
	copy(img[off:], data)
	return img
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

// run applies the job: read each disk the items touch, apply the items in
// stream order in memory, noting the bytes each journaled write overwrites;
// append those to the undo journal and fsync it; write each disk back (in
// disk order); write the new state to the retention volume and fsync it;
// then trim the journal to what the kept points need. If any step fails,
// the position stays where it was: a retry applies the same items again,
// which puts the same bytes at the same offsets, so a disk written before
// the failure is neither harmed nor left behind; and a write the journal
// already holds (its position is not after the journal's last) is not
// journaled again: the disk may hold the new bytes by then.
func (j applyJob) run(ctx context.Context, vc vsphere.Client, ret retention) (applyResult, error) {
	res := applyResult{jour: j.jour}
	machine := j.plan.next.Machine
	idx := touched(j.items)
	imgs := make([][]byte, len(idx))
	at := func(d uint16) int { i, _ := slices.BinarySearch(idx, d); return i }
	for i, di := range idx {
		img, err := vc.ReadFile(ctx, j.disks[di].Path)
		if err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, di, err)
		}
		res.bytesRead += int64(len(img))
		imgs[i] = img
	}
	var undo []jentry
	write := func(p pos, disk uint16, off int64, data []byte) {
		i := at(disk)
		if j.plan.journal && p.cmp(j.plan.from) >= 0 && (j.jour.Bytes == 0 || p.cmp(j.jour.Last) > 0) {
			old := make([]byte, len(data))
			if off < int64(len(imgs[i])) {
				copy(old, imgs[i][off:])
			}
			undo = append(undo, jentry{At: p, Disk: disk, Off: off, Data: old})
		}
		imgs[i] = writeAt(imgs[i], off, data)
	}
	for _, it := range j.items {
		switch it.Kind {
		case batch.KindChunk:
			for ri, r := range it.Runs {
				write(pos{Item: it.Seq, Rec: uint32(ri)}, it.Disk, r.Off, r.Data)
			}
		case batch.KindLog:
			for ri, r := range it.Records {
				if r.Type == batch.RecWrite {
					write(pos{Item: it.Seq, Rec: uint32(ri)}, r.Disk, r.Off, r.Data)
				}
			}
		}
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
	for i, di := range idx {
		if err := vc.WriteFile(ctx, j.disks[di].Path, imgs[i]); err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, di, err)
		}
		res.bytesWritten += int64(len(imgs[i]))
	}
	if err := ret.write(j.plan.next); err != nil {
		return res, fmt.Errorf("%w: %w", ErrRetention, err)
	}
	if len(j.plan.next.Points) > 0 {
		res.jour, res.trimErr = ret.trimJournal(machine, res.jour, j.plan.reach)
	}
	return res, nil
}

// blockSums reads a disk and sums blocks [first, first+n) of it by the one
// rule (proto.BlockSum); a block past the file's end is zeros.
func blockSums(ctx context.Context, vc vsphere.Client, disk proto.TargetDisk, off, blocks int64) ([]byte, error) {
	img, err := vc.ReadFile(ctx, disk.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatastore, err)
	}
	out := make([]byte, 0, blocks*proto.ChecksumSize)
	for b := int64(0); b < blocks; b++ {
		start := off + b*proto.ChecksumBlockSize
		end := min(start+proto.ChecksumBlockSize, disk.CapacityBytes)
		var block []byte
		if start < int64(len(img)) {
			block = img[start:min(end, int64(len(img)))]
		}
		sum := proto.BlockSum(block)
		out = append(out, sum[:]...)
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
