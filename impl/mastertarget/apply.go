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
	next  state // the state once items are applied
}

// applyResult is an apply op's outcome.
type applyResult struct {
	bytesRead, bytesWritten int64
}

// run applies the job: read each disk the items touch, apply the items in
// stream order, write each disk back (in disk order), then write the new
// position to the retention volume and fsync it. If any step fails, the
// position stays where it was: a retry applies the same items again, which
// puts the same bytes at the same offsets, so a disk written before the
// failure is neither harmed nor left behind.
func (j applyJob) run(ctx context.Context, vc vsphere.Client, ret retention) (applyResult, error) {
	var res applyResult
	for _, di := range touched(j.items) {
		path := j.disks[di].Path
		img, err := vc.ReadFile(ctx, path)
		if err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, di, err)
		}
		res.bytesRead += int64(len(img))
		for _, it := range j.items {
			switch it.Kind {
			case batch.KindChunk:
				if it.Disk == di {
					for _, r := range it.Runs {
						img = writeAt(img, r.Off, r.Data)
					}
				}
			case batch.KindLog:
				for _, r := range it.Records {
					if r.Type == batch.RecWrite && r.Disk == di {
						img = writeAt(img, r.Off, r.Data)
					}
				}
			}
		}
		if err := vc.WriteFile(ctx, path, img); err != nil {
			return res, fmt.Errorf("%w: disk %d: %w", ErrDatastore, di, err)
		}
		res.bytesWritten += int64(len(img))
	}
	if err := ret.write(j.next); err != nil {
		return res, fmt.Errorf("%w: %w", ErrRetention, err)
	}
	return res, nil
}

// lastBookmark is the id of the last bookmark record in items, or prev.
func lastBookmark(items []*batch.Item, prev string) string {
	for _, it := range items {
		for _, r := range it.Records {
			if r.Type == batch.RecBookmark {
				prev = r.BookmarkID
			}
		}
	}
	return prev
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
