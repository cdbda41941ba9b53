package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/fsys"
)

// DirtyBlockBytes is the dirty-block bitmap's granularity: one bit per
// 4 KiB block of a protected disk.
const DirtyBlockBytes = blockdev.BlockSize

// ErrBitmap: the dirty-block bitmap file is unusable (wrong layout, I/O
// error); the filter then needs a full resync.
var ErrBitmap = errors.New("agent: dirty-block bitmap")

// The bitmap file: a 24-byte header — magic (8 bytes), the clean flag (1
// byte: 1 after an orderly Close, 0 while the filter runs), 3 bytes of
// padding, the number of 64-bit words (uint32), the sequence-number
// reservation (uint64: no record was given a higher one), little endian —
// then the words, the disks' blocks one after the other, bit b%64 of word
// b/64 for block b.
const (
	bitmapMagic  = "V2ABMAP2"
	bitmapHeader = 24
	// seqReserve is how many sequence numbers one reservation covers: the
	// filter writes the header once per that many records.
	seqReserve = 1 << 20
)

// dirtyMap is the filter's dirty-block bitmap, as a driver keeps one: the
// blocks written since the oldest change the process server may still lack.
//
// It is kept in two epochs: cur, the blocks written since sequence number
// curFrom, and prev, those written before it since the epoch before. When
// the trim point passes curFrom the records of prev are all acknowledged:
// prev is dropped, cur becomes prev and a new cur begins (rotate). So the
// union cur|prev covers every block whose record is not trimmed, and every
// block written while no record was kept (bitmap mode).
//
// The union is also on disk, as a write-intent bitmap: a block's bit is
// made durable in the file before the guest's write to it is acknowledged
// (only the first write to a block after a rotation costs a write and an
// fsync), and the file is shrunk lazily, at rotations. A machine crash loses
// the filter's memory; the file then names every block that may differ on
// the replica.
type dirtyMap struct {
	fs   fsys.FS
	name string
	f    fsys.File

	base   []int64 // first word of each disk
	blocks []int64 // blocks of each disk

	cur, prev, onDisk []uint64
	curFrom           uint64 // first sequence number of cur's epoch
	// ceiling is the durable sequence-number reservation: records get
	// numbers up to it before it is raised (reserve). After a crash the log
	// goes on above it, so that numbers never go back.
	ceiling uint64
	// sinceWrites is the filter's captured-write count when the oldest live
	// epoch began: the union covers the writes captured since.
	sinceWrites, curWrites int64

	wbuf [8]byte
}

// openDirtyMap opens (creating if needed) the bitmap file name in dir for
// disks of the given sizes. It returns the bits the file held and whether
// the file said the last shutdown was orderly (a file just created is).
// The file is left marked not clean.
func openDirtyMap(fsy fsys.FS, dir, name string, sizes []int64) (*dirtyMap, []uint64, bool, error) {
	m := &dirtyMap{fs: fsy, name: path.Join(dir, name)}
	var words int64
	for _, s := range sizes {
		if s <= 0 {
			return nil, nil, false, fmt.Errorf("%w: disk of %d bytes", ErrBitmap, s)
		}
		nb := (s + DirtyBlockBytes - 1) / DirtyBlockBytes
		m.base = append(m.base, words)
		m.blocks = append(m.blocks, nb)
		words += (nb + 63) / 64
	}
	m.cur, m.prev, m.onDisk = make([]uint64, words), make([]uint64, words), make([]uint64, words)
	old, clean, ceiling, err := m.load(words)
	if err != nil {
		return nil, nil, false, err
	}
	if err := fsy.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, false, fmt.Errorf("%w: %w", ErrBitmap, err)
	}
	f, err := fsy.OpenFile(m.name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w: %w", ErrBitmap, err)
	}
	m.f = f
	if old != nil {
		copy(m.onDisk, old)
	}
	m.ceiling = ceiling
	if err := m.writeAll(false); err != nil {
		f.Close()
		return nil, nil, false, err
	}
	return m, old, clean, nil
}

// load reads the file: nil bits and clean when there is none; the
// sequence-number reservation.
func (m *dirtyMap) load(words int64) ([]uint64, bool, uint64, error) {
	b, err := m.fs.ReadFile(m.name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, 0, nil
	}
	if err != nil {
		return nil, false, 0, fmt.Errorf("%w: read %s: %w", ErrBitmap, m.name, err)
	}
	if len(b) < bitmapHeader || string(b[:8]) != bitmapMagic {
		return nil, false, 0, fmt.Errorf("%w: %s is not a bitmap file", ErrBitmap, m.name)
	}
	n := int64(binary.LittleEndian.Uint32(b[12:16]))
	if n != words || int64(len(b)) < bitmapHeader+8*n {
		return nil, false, 0, fmt.Errorf("%w: %s holds %d words in %d bytes, the disks need %d", ErrBitmap, m.name, n, len(b), words)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[bitmapHeader+8*i:])
	}
	return out, b[8] == 1, binary.LittleEndian.Uint64(b[16:24]), nil
}

// reserve makes sure seq is within the durable reservation, raising it
// (a header write and an fsync) when it is not.
func (m *dirtyMap) reserve(seq uint64) error {
	if seq <= m.ceiling {
		return nil
	}
	c := seq + seqReserve
	binary.LittleEndian.PutUint64(m.wbuf[:], c)
	if _, err := m.f.WriteAt(m.wbuf[:], 16); err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrBitmap, m.name, err)
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrBitmap, m.name, err)
	}
	m.ceiling = c
	return nil
}

// writeAll rewrites the whole file from onDisk, with the clean flag, and
// fsyncs it.
func (m *dirtyMap) writeAll(clean bool) error {
	b := make([]byte, bitmapHeader+8*len(m.onDisk))
	copy(b, bitmapMagic)
	if clean {
		b[8] = 1
	}
	binary.LittleEndian.PutUint32(b[12:16], uint32(len(m.onDisk)))
	binary.LittleEndian.PutUint64(b[16:24], m.ceiling)
	for i, w := range m.onDisk {
		binary.LittleEndian.PutUint64(b[bitmapHeader+8*i:], w)
	}
	if _, err := m.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrBitmap, m.name, err)
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrBitmap, m.name, err)
	}
	return nil
}

// mark sets the bits of the blocks n bytes at off of disk cover, making any
// bit the file lacks durable first.
func (m *dirtyMap) mark(disk int, off int64, n int) error {
	if disk < 0 || disk >= len(m.base) || off < 0 || n <= 0 {
		if n == 0 && disk >= 0 && disk < len(m.base) {
			return nil
		}
		return fmt.Errorf("%w: write of %d bytes at %d of disk %d is outside the disks", ErrBitmap, n, off, disk)
	}
	b0, b1 := off/DirtyBlockBytes, (off+int64(n)-1)/DirtyBlockBytes
	if b1 >= m.blocks[disk] {
		return fmt.Errorf("%w: write of %d bytes at %d of disk %d is outside the disks", ErrBitmap, n, off, disk)
	}
	for b := b0; b <= b1; {
		w := m.base[disk] + b/64
		lo := b % 64
		hi := min(int64(63), lo+(b1-b))
		mask := (^uint64(0) >> (63 - hi)) &^ (uint64(1)<<lo - 1)
		m.cur[w] |= mask
		if m.onDisk[w]&mask != mask {
			m.onDisk[w] |= mask
			binary.LittleEndian.PutUint64(m.wbuf[:], m.onDisk[w])
			if _, err := m.f.WriteAt(m.wbuf[:], bitmapHeader+8*w); err != nil {
				return fmt.Errorf("%w: write %s: %w", ErrBitmap, m.name, err)
			}
			if err := m.f.Sync(); err != nil {
				return fmt.Errorf("%w: sync %s: %w", ErrBitmap, m.name, err)
			}
		}
		b += hi - lo + 1
	}
	return nil
}

// rotate drops prev when every record before curFrom is trimmed: cur
// becomes prev and a new epoch begins at nextSeq. It shrinks the file to
// the union when that cleared bits.
func (m *dirtyMap) rotate(trimSeq, nextSeq uint64, writes int64) error {
	if trimSeq+1 < m.curFrom {
		return nil
	}
	m.prev, m.cur = m.cur, m.prev
	clear(m.cur)
	m.curFrom = nextSeq
	m.sinceWrites, m.curWrites = m.curWrites, writes
	shrunk := false
	for i, w := range m.prev {
		if m.onDisk[i] != w {
			m.onDisk[i] = w
			shrunk = true
		}
	}
	if !shrunk {
		return nil
	}
	return m.writeAll(false)
}

// merge folds prev into cur: the bits of both now wait for the records
// appended from now on (a bitmap resync's metadata records).
func (m *dirtyMap) merge() {
	for i, w := range m.prev {
		m.cur[i] |= w
	}
	clear(m.prev)
	m.curWrites = m.sinceWrites
}

// reset clears every bit (a full sync starts), in memory and in the file.
func (m *dirtyMap) reset(nextSeq uint64, writes int64) error {
	clear(m.cur)
	clear(m.prev)
	clear(m.onDisk)
	m.curFrom = nextSeq
	m.sinceWrites, m.curWrites = writes, writes
	return m.writeAll(false)
}

// blockRun is a run of dirty blocks of one disk, in bytes.
type blockRun struct {
	disk int
	off  int64
	n    int64
}

// runs lists the runs of set bits of words (the union's layout), each at
// most maxBytes long, and the number of blocks they cover.
func (m *dirtyMap) runs(words []uint64, maxBytes int64) ([]blockRun, int64) {
	var out []blockRun
	var count int64
	maxBlocks := max(1, maxBytes/DirtyBlockBytes)
	for d := range m.base {
		start := int64(-1)
		flush := func(end int64) {
			for s := start; s < end; s += maxBlocks {
				e := min(end, s+maxBlocks)
				out = append(out, blockRun{disk: d, off: s * DirtyBlockBytes, n: (e - s) * DirtyBlockBytes})
			}
			start = -1
		}
		for b := int64(0); b < m.blocks[d]; b++ {
			w := words[m.base[d]+b/64]
			if w == 0 && b%64 == 0 {
				if start >= 0 {
					flush(b)
				}
				b += 63
				continue
			}
			if w&(1<<(b%64)) != 0 {
				count++
				if start < 0 {
					start = b
				}
			} else if start >= 0 {
				flush(b)
			}
		}
		if start >= 0 {
			flush(m.blocks[d])
		}
	}
	return out, count
}

// union is cur|prev, a new slice.
func (m *dirtyMap) union() []uint64 {
	out := make([]uint64, len(m.cur))
	for i := range out {
		out[i] = m.cur[i] | m.prev[i]
	}
	return out
}

// count is the number of dirty blocks (cur|prev).
func (m *dirtyMap) count() int64 {
	var n int
	for i := range m.cur {
		n += bits.OnesCount64(m.cur[i] | m.prev[i])
	}
	return int64(n)
}

// close marks the file clean (an orderly shutdown: the log holds every
// change) when clean, and closes it.
func (m *dirtyMap) close(clean bool) error {
	var err error
	if clean {
		err = m.writeAll(true)
	}
	if cerr := m.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: close %s: %w", ErrBitmap, m.name, cerr)
	}
	return err
}
