package azuresvc

import (
	"context"
	"fmt"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// MaxSumsPerMessage bounds the blocks one Checksums message covers.
const MaxSumsPerMessage = 16384

// BlockSize is the unit of replica checksums (proto's).
const BlockSize = proto.ChecksumBlockSize

// sumReadBytes is the most one Get reads while checksumming (a multiple of
// BlockSize), to bound memory.
const sumReadBytes = 4 << 20

// diskRanges are a replica disk's allocated page ranges, as read before
// checksumming.
type diskRanges struct {
	Disk   Disk
	Ranges []blob.Range
}

// blockRuns turns allocated byte ranges into sorted, merged runs of whole
// blocks [first, end) that cover them: only those blocks are read; every
// other block is zero.
func blockRuns(ranges []blob.Range, size int64) [][2]int64 {
	nblocks := (size + BlockSize - 1) / BlockSize
	var runs [][2]int64
	for _, r := range ranges {
		if r.Length <= 0 {
			continue
		}
		first := r.Offset / BlockSize
		end := min((r.End()+BlockSize-1)/BlockSize, nblocks)
		if first >= end {
			continue
		}
		if n := len(runs); n > 0 && first <= runs[n-1][1] {
			runs[n-1][1] = max(runs[n-1][1], end)
			continue
		}
		runs = append(runs, [2]int64{first, end})
	}
	return runs
}

// readBytes is what checksumming d reads from storage.
func (d diskRanges) readBytes() int64 {
	var n int64
	for _, r := range blockRuns(d.Ranges, d.Disk.Size) {
		n += min(r[1]*BlockSize, d.Disk.Size) - r[0]*BlockSize
	}
	return n
}

// diskSums computes every block checksum of one replica disk, reading only
// the blocks that hold allocated pages.
func diskSums(ctx context.Context, store blob.Store, container string, d diskRanges) ([]byte, error) {
	nblocks := (d.Disk.Size + BlockSize - 1) / BlockSize
	sums := make([]byte, nblocks*proto.ChecksumSize)
	for i := int64(0); i < nblocks; i++ {
		copy(sums[i*proto.ChecksumSize:], proto.ZeroBlockSum[:])
	}
	for _, run := range blockRuns(d.Ranges, d.Disk.Size) {
		for off := run[0] * BlockSize; off < min(run[1]*BlockSize, d.Disk.Size); off += sumReadBytes {
			n := min(int64(sumReadBytes), min(run[1]*BlockSize, d.Disk.Size)-off)
			data, _, err := store.Get(ctx, container, d.Disk.Blob, blob.ReadOptions{Offset: off, Length: n})
			if err != nil {
				return nil, fmt.Errorf("azuresvc: checksum %s: %w", d.Disk.Blob, err)
			}
			if int64(len(data)) != n {
				return nil, fmt.Errorf("azuresvc: checksum %s: read %d bytes at %d, want %d", d.Disk.Blob, len(data), off, n)
			}
			for b := int64(0); b < n; b += BlockSize {
				s := proto.BlockSum(data[b:min(b+BlockSize, n)])
				copy(sums[(off+b)/BlockSize*proto.ChecksumSize:], s[:])
			}
		}
	}
	return sums, nil
}

// checksumMessages computes the Checksums messages of a machine's replica
// for gen. A disk with no allocated page (just created, or never written)
// reads as all zero: it gets one Fresh message without sums. Final marks the
// last message of the last disk.
func checksumMessages(ctx context.Context, store blob.Store, container, machine string, gen uint64, disks []diskRanges) ([]*proto.Checksums, error) {
	var out []*proto.Checksums
	for _, d := range disks {
		if len(d.Ranges) == 0 {
			out = append(out, &proto.Checksums{Machine: machine, Gen: gen, Fresh: true, Disk: uint16(d.Disk.Index), BlockSize: BlockSize})
			continue
		}
		sums, err := diskSums(ctx, store, container, d)
		if err != nil {
			return nil, err
		}
		per := MaxSumsPerMessage * proto.ChecksumSize
		for i := 0; i < len(sums); i += per {
			out = append(out, &proto.Checksums{Machine: machine, Gen: gen, Disk: uint16(d.Disk.Index),
				Off: int64(i/proto.ChecksumSize) * BlockSize, BlockSize: BlockSize, Sums: sums[i:min(i+per, len(sums))]})
		}
	}
	if len(out) > 0 {
		out[len(out)-1].Final = true
	}
	return out, nil
}
