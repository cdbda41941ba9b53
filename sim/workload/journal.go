package workload

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// journaled is the write path the journaled stores (Bank, FS) share: a
// superblock in block 0, two checkpoint markers in blocks 1 and 2 written
// in turn, a circular journal, and a set of blocks ("homes": account pages,
// inode-table blocks) written back lazily. A transaction commits with its
// journal writes; a checkpoint writes every home block changed since the
// last one, in block order, then the next marker naming the newest
// transaction those blocks hold, and only then may the journal reuse the
// older transactions' slots.
//
// The store owning it says what a transaction writes and how a home block
// is rendered; journaled keeps the counters, the writes pending, and the
// one-write-at-a-time submission with its Blocker contract.
type journaled struct {
	w           Writer
	spec        Spec
	magicMarker uint32
	home        int64                // first home block
	render      func(i int64) []byte // home block i as it is now
	dirty       map[int64]bool       // home blocks changed since the checkpoint
	txid        uint64               // the newest transaction issued
	ckptTx      uint64               // the newest checkpoint marker issued
	ckptSeq     uint64               // checkpoints issued
	pending     []blockWrite
	frozen      bool
	gap         time.Duration
	blocked     bool
	unblock     func()
	err         error
}

type blockWrite struct {
	off  int64
	data []byte
}

// journalWriteSpacing is the time between two writes of one transaction
// or checkpoint.
const journalWriteSpacing = time.Millisecond

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Blocked implements Blocker: a write of the store is held.
func (j *journaled) Blocked() bool { return j.blocked }

// SetUnblock implements Blocker.
func (j *journaled) SetUnblock(f func()) { j.unblock = f }

// submit issues one write; the store waits for its acknowledgement.
func (j *journaled) submit(w blockWrite) error {
	j.blocked = true
	j.w.Submit(j.spec.Disk, w.off, w.data, func(_ uint64, err error) {
		j.blocked = false
		if err != nil && j.err == nil {
			j.err = err
		}
		if j.unblock != nil {
			j.unblock()
		}
	})
	return j.err
}

func (j *journaled) blockOff(i int64) int64 { return j.spec.RegionStart + i*blockdev.BlockSize }

// format is the formatting writes: the first marker, then the superblock
// sb, sealed here. The superblock goes last: a store is formatted once it
// is there.
func (j *journaled) format(sb []byte) []blockWrite {
	sealBlock(sb)
	return []blockWrite{{j.blockOff(1), j.marker()}, {j.blockOff(0), sb}}
}

// marker is the next checkpoint marker: the home blocks hold every
// transaction up to j.txid.
func (j *journaled) marker() []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], j.magicMarker)
	binary.BigEndian.PutUint64(buf[4:], j.ckptSeq)
	binary.BigEndian.PutUint64(buf[12:], j.txid)
	sealBlock(buf)
	return buf
}

// step issues the next pending write. With none pending and not frozen it
// asks next for a new transaction's writes (none: nothing to do this
// step), followed by a checkpoint once ckptAfter transactions have passed
// since the last marker.
func (j *journaled) step(r *rand.Rand, next func(*rand.Rand) []blockWrite, ckptAfter int64) (time.Duration, error) {
	if len(j.pending) == 0 {
		if j.frozen {
			return j.gap, nil
		}
		j.pending = next(r)
		if len(j.pending) == 0 {
			return j.gap, nil
		}
		if int64(j.txid-j.ckptTx) >= ckptAfter {
			j.pending = append(j.pending, j.checkpoint()...)
		}
	}
	w := j.pending[0]
	j.pending = j.pending[1:]
	if err := j.submit(w); err != nil {
		return 0, err
	}
	if len(j.pending) > 0 {
		return journalWriteSpacing, nil
	}
	return j.gap, nil
}

// checkpoint writes every dirty home block, in block order, then the
// marker.
func (j *journaled) checkpoint() []blockWrite {
	blocks := make([]int64, 0, len(j.dirty))
	for b := range j.dirty {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	ws := make([]blockWrite, 0, len(blocks)+1)
	for _, b := range blocks {
		ws = append(ws, blockWrite{j.blockOff(j.home + b), j.render(b)})
	}
	clear(j.dirty)
	j.ckptSeq++
	j.ckptTx = j.txid
	return append(ws, blockWrite{j.blockOff(1 + int64(j.ckptSeq%2)), j.marker()})
}

// Freeze implements Workload: what is in flight is finished at once and a
// checkpoint makes the home blocks hold every transaction (the VSS
// writer's flush, fsfreeze); nothing new starts until Thaw.
func (j *journaled) Freeze() error {
	ws := j.pending
	if j.ckptTx != j.txid || len(j.dirty) > 0 {
		ws = append(ws, j.checkpoint()...)
	}
	j.pending = nil
	for _, w := range ws {
		if err := j.submit(w); err != nil {
			return err
		}
	}
	j.frozen = true
	return nil
}

// Thaw implements Workload.
func (j *journaled) Thaw() { j.frozen = false }

// image is the image of the store's disk among images.
func (j *journaled) image(images []io.ReaderAt, what string) (io.ReaderAt, error) {
	if j.spec.Disk >= len(images) {
		return nil, fmt.Errorf("workload: %s: no image for disk %d", what, j.spec.Disk)
	}
	return images[j.spec.Disk], nil
}

// sealBlock puts the CRC-32C of a block's first 4092 bytes in its last 4.
func sealBlock(blk []byte) {
	n := len(blk) - 4
	binary.BigEndian.PutUint32(blk[n:], crc32.Checksum(blk[:n], crcTable))
}

func blockSealed(blk []byte) bool {
	n := len(blk) - 4
	return crc32.Checksum(blk[:n], crcTable) == binary.BigEndian.Uint32(blk[n:])
}

// readBlocks reads n blocks from block i of the region at start.
func readBlocks(img io.ReaderAt, start, i, n int64, what string) ([]byte, error) {
	buf := make([]byte, n*blockdev.BlockSize)
	if _, err := img.ReadAt(buf, start+i*blockdev.BlockSize); err != nil && err != io.EOF {
		return nil, fmt.Errorf("workload: %s: read blocks %d..%d: %w", what, i, i+n-1, err)
	}
	return buf, nil
}

// readJournalHead is recovery's first read of a journaled store at start:
// its superblock (nil, with no error: not formatted yet) and the newest
// transaction a valid checkpoint marker says the home blocks hold.
// errInvariant is the store's invariant error, wrapped when the superblock
// is torn.
func readJournalHead(img io.ReaderAt, start int64, what string, magicSuper, magicMarker uint32, errInvariant error) (sb []byte, ckpt uint64, err error) {
	const bs = blockdev.BlockSize
	head, err := readBlocks(img, start, 0, 3, what)
	if err != nil {
		return nil, 0, err
	}
	sb = head[:bs]
	if binary.BigEndian.Uint32(sb) != magicSuper {
		return nil, 0, nil
	}
	if !blockSealed(sb) {
		return nil, 0, fmt.Errorf("%w: superblock checksum", errInvariant)
	}
	for _, m := range [][]byte{head[bs : 2*bs], head[2*bs:]} {
		if binary.BigEndian.Uint32(m) == magicMarker && blockSealed(m) {
			ckpt = max(ckpt, binary.BigEndian.Uint64(m[12:]))
		}
	}
	return sb, ckpt, nil
}

// sortByTx puts journal records in transaction order for replay.
func sortByTx[T any](recs []T, txid func(T) uint64) {
	slices.SortFunc(recs, func(a, b T) int { return cmpU64(txid(a), txid(b)) })
}

// follows checks that transaction txid, the i-th record (from 0) replayed
// after the checkpoint at ckpt, is the one that comes next: the records
// after the marker follow it without a hole, since one record is one write
// and a later write on the image without an earlier one is a write lost or
// reordered. what is how the journal holds a transaction ("holds",
// "commits"), for the error.
func follows(errInvariant error, what string, ckpt uint64, i int, txid uint64) error {
	if want := ckpt + uint64(i) + 1; txid != want {
		return fmt.Errorf("%w: journal %s transaction %d but not %d (checkpoint at %d)", errInvariant, what, txid, want, ckpt)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
