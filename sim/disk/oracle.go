package disk

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

const bs = blockdev.BlockSize

// digest identifies a block's content. The oracle judges contents that
// the simulation made, not an adversary's: a 128-bit non-cryptographic hash
// (XXH3-128) makes an accidental match between different contents as
// unlikely as 128 bits of SHA-256 did, at several times its speed (hashing
// every block of every recovery point was a fifth of a swarm seed's CPU).
// Digests never leave the process: nothing in a trace depends on them.
type digest [16]byte

func hashBlock(b []byte) digest {
	return xxh3.Hash128(b).Bytes()
}

var zeroDigest = hashBlock(make([]byte, bs))

// version is a block's content from write K on (K=0: before any write).
type version struct {
	k uint64
	d digest
}

// WriteRecord is one acknowledged guest write, as the oracle remembers it.
type WriteRecord struct {
	K   uint64 // 1-based position in the machine's write order
	Seq uint64 // the change log's sequence number for it (0: untracked)
	// pos orders the write among change-log records: 2*Seq for a tracked
	// write; 2*last+1 for an untracked one, last being the highest
	// sequence number given out before it (it falls after that record and
	// before the next).
	pos  uint64
	Disk int
	Off  int64
	Len  int
	At   time.Duration // virtual time of the acknowledgement
}

// Oracle is a machine's write history: for every block, the content it held
// after each write that touched it. It answers "is this image exactly the
// machine's disk after the first k writes, and for which k?" without keeping
// the data: a block's content is known by its digest.
type Oracle struct {
	m       *Machine
	writes  []WriteRecord
	lastSeq uint64
	// hist[disk][block] lists the versions of a block written at least once;
	// never-written blocks keep their initial digest in initial.
	hist    []map[int64][]version
	initial []initialDigests
}

// initialDigests are a disk's blocks as the oracle found them: the digests
// of those that were not zero (a disk of 64 GiB that holds a little data
// costs what it holds).
type initialDigests struct {
	blocks  int64
	nonzero map[int64]digest
}

func (d initialDigests) at(b int64) digest {
	if x, ok := d.nonzero[b]; ok {
		return x
	}
	return zeroDigest
}

func newOracle(m *Machine) (*Oracle, error) {
	o := &Oracle{m: m}
	buf := make([]byte, 256*bs)
	for i, d := range m.disks {
		init := initialDigests{blocks: d.Size() / bs, nonzero: map[int64]digest{}}
		// Only where the file holds data: its holes are zero blocks.
		ext, err := d.DataExtents(0, d.Size())
		if err != nil {
			return nil, fmt.Errorf("disk: oracle: %s disk %d: %w", m.Name, i, err)
		}
		for _, e := range ext {
			for off := e.Off / bs * bs; off < e.End(); off += int64(len(buf)) {
				chunk := buf[:min(int64(len(buf)), (e.End()+bs-1)/bs*bs-off)]
				if _, err := d.ReadAt(chunk, off); err != nil {
					return nil, fmt.Errorf("disk: oracle: read %s disk %d at %d: %w", m.Name, i, off, err)
				}
				for lo := 0; lo < len(chunk); lo += bs {
					if blk := chunk[lo : lo+bs]; !blockdev.IsZero(blk) {
						init.nonzero[(off+int64(lo))/bs] = hashBlock(blk)
					}
				}
			}
		}
		o.initial = append(o.initial, init)
		o.hist = append(o.hist, map[int64][]version{})
	}
	return o, nil
}

// K is the number of acknowledged writes so far.
func (o *Oracle) K() uint64 { return uint64(len(o.writes)) }

// Writes returns the acknowledged writes, in order.
func (o *Oracle) Writes() []WriteRecord { return o.writes }

// KForSeq is the number of acknowledged writes that precede change-log
// position seq: the k a bookmark at log position seq stands for. A write the
// filter did not log (before tracking began, or while tracking was broken)
// precedes every record numbered after the last one given out before it.
func (o *Oracle) KForSeq(seq uint64) uint64 {
	i := sort.Search(len(o.writes), func(i int) bool { return o.writes[i].pos >= 2*seq })
	return uint64(i)
}

// ack records an acknowledged write of data (already on the disk).
func (o *Oracle) ack(disk int, off int64, data []byte, seq uint64) error {
	n := len(data)
	k := uint64(len(o.writes)) + 1
	pos := 2*o.lastSeq + 1
	if seq != 0 {
		if seq <= o.lastSeq {
			return fmt.Errorf("disk: oracle: %s: write %d got log seq %d after seq %d: the filter's sequence went backwards", o.m.Name, k, seq, o.lastSeq)
		}
		o.lastSeq, pos = seq, 2*seq
	}
	o.writes = append(o.writes, WriteRecord{K: k, Seq: seq, pos: pos, Disk: disk, Off: off, Len: n, At: o.m.clock()})
	buf := o.m.scratch
	for b := off / bs; b*bs < off+int64(n); b++ {
		if lo := b*bs - off; lo >= 0 && lo+bs <= int64(n) && data != nil {
			buf = data[lo : lo+bs] // the write covers the whole block
		} else {
			buf = o.m.scratch
			if _, err := o.m.disks[disk].ReadAt(buf, b*bs); err != nil {
				return fmt.Errorf("disk: oracle: read back %s disk %d block %d: %w", o.m.Name, disk, b, err)
			}
		}
		h := o.hist[disk][b]
		if h == nil {
			h = []version{{k: 0, d: o.initial[disk].at(b)}}
		}
		o.hist[disk][b] = append(h, version{k: k, d: hashBlock(buf)})
	}
	return nil
}

// Interval is the closed range of write counts [Lo, Hi].
type Interval struct{ Lo, Hi uint64 }

// KSet is a sorted set of disjoint intervals of write counts.
type KSet []Interval

// Contains reports whether k is in the set.
func (s KSet) Contains(k uint64) bool {
	for _, iv := range s {
		if k >= iv.Lo && k <= iv.Hi {
			return true
		}
	}
	return false
}

func (s KSet) String() string {
	if len(s) == 0 {
		return "{}"
	}
	parts := make([]string, len(s))
	for i, iv := range s {
		if iv.Lo == iv.Hi {
			parts[i] = fmt.Sprint(iv.Lo)
		} else {
			parts[i] = fmt.Sprintf("%d..%d", iv.Lo, iv.Hi)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func intersect(a, b KSet) KSet {
	var out KSet
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		lo, hi := max(a[i].Lo, b[j].Lo), min(a[i].Hi, b[j].Hi)
		if lo <= hi {
			out = append(out, Interval{lo, hi})
		}
		if a[i].Hi < b[j].Hi {
			i++
		} else {
			j++
		}
	}
	return out
}

// ByteRange is a half-open byte range [Off, Off+Len).
type ByteRange struct{ Off, Len int64 }

// Verdict says which write counts k an image is consistent with, and if
// none, which block shows it.
type Verdict struct {
	Ks       KSet
	Evidence string // why Ks is empty: the first conflicting block
}

// OK reports whether some k explains the image.
func (v Verdict) OK() bool { return len(v.Ks) > 0 }

// Match judges the images of every disk of the machine (nil ranges: read
// every block) against the history: the k for which the machine's disks,
// all together, are exactly the state after the first k writes. Blocks
// outside a disk's allocated ranges are zero and are not read.
func (o *Oracle) Match(images []io.ReaderAt, allocated [][]ByteRange) (Verdict, error) {
	if len(images) != len(o.initial) {
		return Verdict{}, fmt.Errorf("disk: oracle: %d images for %d disks of %s", len(images), len(o.initial), o.m.Name)
	}
	all := KSet{{0, o.K()}}
	buf := make([]byte, matchChunk*bs)
	for disk, img := range images {
		var ranges []ByteRange
		if allocated != nil {
			ranges = allocated[disk]
		}
		n := o.initial[disk].blocks
		alloc := newAllocCursor(ranges)
		// chunk holds blocks [c0, c0+len(chunk)/bs) of the image, read
		// together: one ReadAt per run of allocated blocks, not per block.
		var chunk []byte
		c0 := int64(-1)
		for b := int64(0); b < n; b++ {
			d := zeroDigest
			if end, ok := alloc.at(b*bs, bs); ok {
				if c0 < 0 || b < c0 || b >= c0+int64(len(chunk))/bs {
					last := min(b+matchChunk, n, (end+bs-1)/bs)
					chunk, c0 = buf[:(last-b)*bs], b
					m, err := img.ReadAt(chunk, b*bs)
					if err != nil && err != io.EOF {
						return Verdict{}, fmt.Errorf("disk: oracle: read image of %s disk %d block %d: %w", o.m.Name, disk, b, err)
					}
					clear(chunk[m:]) // past the image's end: zeros
				}
				lo := (b - c0) * bs
				d = hashBlock(chunk[lo : lo+bs])
			}
			ks := o.blockKs(disk, b, d)
			next := intersect(all, ks)
			if len(next) == 0 {
				return Verdict{Evidence: o.explain(disk, b, ks, all)}, nil
			}
			all = next
		}
	}
	return Verdict{Ks: all}, nil
}

// matchChunk is how many blocks Match reads at once, at most.
const matchChunk = 256

// allocCursor answers "does [off, off+n) overlap an allocated range?" for
// increasing offsets: in one pass over ranges that are sorted and disjoint
// (as page ranges are), by a scan of them all otherwise.
type allocCursor struct {
	ranges []ByteRange // nil: everything is allocated
	sorted bool
	i      int
	// runEnd is where the run of adjacent ranges that ends with
	// ranges[runOf] ends.
	runOf  int
	runEnd int64
}

func newAllocCursor(ranges []ByteRange) *allocCursor {
	c := &allocCursor{ranges: ranges, sorted: true, runOf: -1}
	for i := 1; i < len(ranges); i++ {
		if ranges[i].Off < ranges[i-1].Off+ranges[i-1].Len {
			c.sorted = false
			break
		}
	}
	return c
}

// at reports whether [off, off+n) overlaps an allocated range, and if so
// where the allocated run it starts in ends (a bound for reading ahead).
// Calls must come with increasing off.
func (c *allocCursor) at(off, n int64) (end int64, ok bool) {
	switch {
	case c.ranges == nil:
		return off + matchChunk*bs, true
	case !c.sorted:
		return off + n, overlaps(c.ranges, off, n)
	}
	for c.i < len(c.ranges) && c.ranges[c.i].Off+c.ranges[c.i].Len <= off {
		c.i++
	}
	if c.i == len(c.ranges) || c.ranges[c.i].Off >= off+n {
		return 0, false
	}
	if c.runOf < c.i {
		// Adjacent ranges make one run, found once per run.
		j := c.i
		for j+1 < len(c.ranges) && c.ranges[j+1].Off == c.ranges[j].Off+c.ranges[j].Len {
			j++
		}
		// The ranges c.i..j share this end.
		c.runOf, c.runEnd = j, c.ranges[j].Off+c.ranges[j].Len
	}
	return c.runEnd, true
}

// blockKs is the set of k for which block b of disk held content d.
func (o *Oracle) blockKs(disk int, b int64, d digest) KSet {
	h := o.hist[disk][b]
	if h == nil {
		if d == o.initial[disk].at(b) {
			return KSet{{0, o.K()}}
		}
		return nil
	}
	var out KSet
	for i, v := range h {
		if v.d != d {
			continue
		}
		hi := o.K()
		if i+1 < len(h) {
			hi = h[i+1].k - 1
		}
		if len(out) > 0 && out[len(out)-1].Hi+1 == v.k {
			out[len(out)-1].Hi = hi
		} else {
			out = append(out, Interval{v.k, hi})
		}
	}
	return out
}

func (o *Oracle) explain(disk int, b int64, ks, others KSet) string {
	where := fmt.Sprintf("%s disk %d block %d (offset %d)", o.m.Name, disk, b, b*bs)
	if len(ks) == 0 {
		return where + " holds content that no prefix of the write history ever gave it"
	}
	return fmt.Sprintf("%s matches only k in %s, but the blocks before it need k in %s", where, ks, others)
}

func overlaps(rs []ByteRange, off, n int64) bool {
	for _, r := range rs {
		if r.Off < off+n && off < r.Off+r.Len {
			return true
		}
	}
	return false
}
