package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// FS is a file-system-like writer with a physical metadata journal, as
// ext4/jbd2 in ordered mode writes: each operation (create or delete a
// file) writes, in this order,
//
//  1. the file's data blocks, at an extent the allocator picks (create);
//  2. a copy of the inode-table block it changed, into the journal;
//  3. a commit record naming the transaction, the block the copy is for and
//     the copy's checksum — the transaction exists once this is on disk. It
//     is one 512-byte sector (as XFS's log and database logs write their
//     commit records), in the journal block after the copy;
//
// and, lazily, a checkpoint writes every changed inode-table block into
// place and then a checkpoint marker, after which the journal may reuse the
// older transactions' slots. Recovery replays, in order, every committed
// transaction after the newest marker (the copy goes over its inode-table
// block). The invariant: the committed transactions after the marker
// follow it without a hole, each commit's copy is there with its checksum,
// every file's data matches the checksum in its inode, and no block belongs
// to two files.
//
// The allocator is next-fit over the data area, so freed blocks are reused
// only after it wraps; the journal is circular; inode-table blocks are
// rewritten only at checkpoints. A lost write therefore stays visible for
// many minutes, as on a real file system.
//
// On-disk layout (4 KiB blocks from the region's start): superblock, two
// checkpoint markers (in turn), the journal (3/8 of the region), the inode
// table (fsInodeBlocks blocks of fsInodesPerBlock inodes), the data area.
//
// The write path (journal slots, checkpoints, markers, Freeze and Thaw,
// Blocker) is journaled's; the inode-table blocks are its home blocks.
type FS struct {
	journaled
	lay    fsLayout
	inodes []fsInode
	used   []bool // data blocks in use
	cursor int64  // next-fit allocator position in the data area
	live   int
	// texts caches each inode's text, which depends only on the inode's
	// number and transaction: a block is re-rendered after every change
	// to one of its inodes, and drawing the other texts again was most
	// of the cost of a simulated file system.
	texts []inodeText
}

type inodeText struct {
	txid uint64 // the inode's transaction the text is for; 0: none
	text []byte
}

type fsInode struct {
	gen     uint32 // 0: free
	start   int64  // first data block (index in the data area)
	nblocks int64
	crc     uint32 // CRC-32C of the file's data
	txid    uint64 // the transaction that created it
}

// FS layout parameters.
const (
	fsInodesPerBlock = 15
	fsInodeLen       = 270
	fsBlockHeader    = 16
	fsMaxFileBlocks  = 8
	fsMagicSuper     = 0x46535342 // "FSSB"
	fsMagicInodes    = 0x46534942 // "FSIB"
	fsMagicCommit    = 0x46534354 // "FSCT"
	fsMagicMarker    = 0x46534d4b // "FSMK"
	fsCommitLen      = 512
	fsMinBlocks      = 128
)

// ErrFS is returned by Check when a recovered image breaks the file
// system's invariant.
var ErrFS = errors.New("workload: fs invariant violated")

type fsLayout struct {
	journal, slots int64 // journal: first block, blocks
	itable, nitab  int64 // inode table: first block, blocks
	data, ndata    int64 // data area: first block, blocks
}

// newFSLayout sizes a file system for a region: 3/8 of it journal, an
// inode-table block per 256 blocks (a file per ~17 blocks), the rest data.
func newFSLayout(regionBlocks int64) fsLayout {
	slots := (regionBlocks * 3 / 8) &^ 1 // an even number: 2 slots a transaction
	it := 3 + slots
	nit := max(1, regionBlocks/256)
	return fsLayout{journal: 3, slots: slots, itable: it, nitab: nit, data: it + nit, ndata: regionBlocks - it - nit}
}

// NewFS builds the file system on spec's region, formatted by its first
// steps. spec.TxPerSec is its operations per second.
func NewFS(w Writer, spec Spec) (*FS, error) {
	blocks := spec.RegionLen / blockdev.BlockSize
	if blocks < fsMinBlocks {
		return nil, fmt.Errorf("workload: fs needs %d bytes, region has %d", fsMinBlocks*blockdev.BlockSize, spec.RegionLen)
	}
	lay := newFSLayout(blocks)
	f := &FS{lay: lay, inodes: make([]fsInode, lay.nitab*fsInodesPerBlock),
		texts: make([]inodeText, lay.nitab*fsInodesPerBlock), used: make([]bool, lay.ndata)}
	f.journaled = journaled{w: w, spec: spec, magicMarker: fsMagicMarker, home: lay.itable, render: f.inodeBlock,
		dirty: map[int64]bool{}, gap: time.Duration(float64(time.Second) / spec.TxPerSec)}
	f.pending = f.formatWrites()
	return f, nil
}

// Name implements Workload.
func (*FS) Name() string { return "fs" }

func (f *FS) formatWrites() []blockWrite {
	sb := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(sb[0:], fsMagicSuper)
	binary.BigEndian.PutUint64(sb[4:], uint64(f.lay.slots))
	binary.BigEndian.PutUint64(sb[12:], uint64(f.lay.ndata))
	binary.BigEndian.PutUint64(sb[20:], uint64(f.lay.nitab))
	copy(sb[64:], "v2a fs: superblock, 2 checkpoint markers, physical metadata journal, inode table, data\n")
	// An inode-table block of zeros holds free inodes: nothing to format
	// but the marker and, last, the superblock.
	return f.format(sb)
}

// inodeBlock renders inode-table block b: a header, then its inodes, each
// a binary part and the file's path and attributes as text.
func (f *FS) inodeBlock(b int64) []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], fsMagicInodes)
	binary.BigEndian.PutUint32(buf[4:], uint32(b))
	binary.BigEndian.PutUint64(buf[8:], f.txid)
	for i := 0; i < fsInodesPerBlock; i++ {
		ino := int(b)*fsInodesPerBlock + i
		in := f.inodes[ino]
		if in.gen == 0 {
			continue
		}
		rec := buf[fsBlockHeader+i*fsInodeLen : fsBlockHeader+(i+1)*fsInodeLen]
		binary.BigEndian.PutUint32(rec[0:], in.gen)
		binary.BigEndian.PutUint32(rec[4:], uint32(in.start))
		binary.BigEndian.PutUint32(rec[8:], uint32(in.nblocks))
		binary.BigEndian.PutUint32(rec[12:], in.crc)
		binary.BigEndian.PutUint64(rec[16:], in.txid)
		copy(rec[24:], f.inodeText(ino, in.txid))
	}
	sealBlock(buf)
	return buf
}

// inodeText is the path and attributes of inode ino as created by
// transaction txid: drawn from a source seeded by both, so the same
// inode and transaction always give the same text.
func (f *FS) inodeText(ino int, txid uint64) []byte {
	c := &f.texts[ino]
	if c.txid == txid && c.text != nil {
		return c.text
	}
	r := rand.New(rand.NewPCG(uint64(ino), txid))
	text := append(c.text[:0], "/srv/data/"...)
	text = append(append(text, pick(r, memoWords)...), '/')
	text = appendDate(text, r)
	text = append(text, ".json|"...)
	text = appendRowText(text, r)
	c.txid, c.text = txid, text
	return text
}

// Step implements Workload: the next write of the operation or checkpoint
// in flight, or a new operation (none when there is no room to create a
// file and nothing to delete). A checkpoint follows once half the journal
// is used (2 slots a transaction).
func (f *FS) Step(r *rand.Rand) (time.Duration, error) {
	return f.step(r, f.operation, f.lay.slots/4)
}

// operation creates or deletes a file, keeping 80–95% of the inodes in
// use (a full file system, whose inode-table blocks are dense).
func (f *FS) operation(r *rand.Rand) []blockWrite {
	n := len(f.inodes)
	create := f.live < n*80/100 || (f.live < n*95/100 && r.IntN(2) == 0)
	var ws []blockWrite
	var ino int
	if create {
		size := 1 + r.Int64N(fsMaxFileBlocks)
		start, ok := f.allocate(size)
		if !ok {
			create = false
		} else {
			ino = r.IntN(n)
			for f.inodes[ino].gen != 0 {
				ino = (ino + 1) % n
			}
			data := make([]byte, size*blockdev.BlockSize)
			if r.IntN(4) == 0 {
				// A quarter of the files are already compressed (media,
				// archives): no codec gains anything on them.
				appendBinary(data[:0], r, len(data))
			} else {
				fillRecords(r, data)
			}
			f.txid++
			f.inodes[ino] = fsInode{gen: uint32(f.txid), start: start, nblocks: size, crc: crc32.Checksum(data, crcTable), txid: f.txid}
			f.live++
			ws = append(ws, blockWrite{f.blockOff(f.lay.data + start), data})
		}
	}
	if !create {
		if f.live == 0 {
			return nil
		}
		ino = r.IntN(n)
		for f.inodes[ino].gen == 0 {
			ino = (ino + 1) % n
		}
		in := f.inodes[ino]
		for b := in.start; b < in.start+in.nblocks; b++ {
			f.used[b] = false
		}
		f.inodes[ino] = fsInode{}
		f.live--
		f.txid++
	}
	ib := int64(ino / fsInodesPerBlock)
	f.dirty[ib] = true
	cp := f.inodeBlock(ib)
	slot := int64(2*(f.txid-1)) % f.lay.slots
	cm := make([]byte, fsCommitLen)
	binary.BigEndian.PutUint32(cm[0:], fsMagicCommit)
	binary.BigEndian.PutUint64(cm[4:], f.txid)
	binary.BigEndian.PutUint32(cm[12:], uint32(ib))
	binary.BigEndian.PutUint32(cm[16:], crc32.Checksum(cp, crcTable))
	text := appendDate(append([]byte("jbd2 commit "), ' '), r)
	copy(cm[32:], appendToken(text, r, 32))
	sealBlock(cm)
	return append(ws, blockWrite{f.blockOff(f.lay.journal + slot), cp}, blockWrite{f.blockOff(f.lay.journal + slot + 1), cm})
}

// allocate finds n free contiguous data blocks, next-fit from the cursor.
func (f *FS) allocate(n int64) (int64, bool) {
	for tried := int64(0); tried < f.lay.ndata; {
		s := f.cursor
		if s+n > f.lay.ndata {
			tried += f.lay.ndata - s
			f.cursor = 0
			continue
		}
		free := true
		for b := s; b < s+n; b++ {
			if f.used[b] {
				tried += b - s + 1
				f.cursor = b + 1
				free = false
				break
			}
		}
		if free {
			for b := s; b < s+n; b++ {
				f.used[b] = true
			}
			f.cursor = (s + n) % f.lay.ndata
			return s, true
		}
	}
	return 0, false
}

// Check implements Workload.
func (f *FS) Check(images []io.ReaderAt, clean bool) (Report, error) {
	img, err := f.image(images, "fs")
	if err != nil {
		return Report{}, err
	}
	return CheckFS(img, f.spec.RegionStart, clean)
}

// CheckFS recovers the file system on img (in memory) and checks its
// invariant. With clean set, recovery must have nothing to replay.
func CheckFS(img io.ReaderAt, start int64, clean bool) (Report, error) {
	const bs = blockdev.BlockSize
	sb, ckpt, err := readJournalHead(img, start, "fs", fsMagicSuper, fsMagicMarker, ErrFS)
	if err != nil {
		return Report{}, err
	}
	if sb == nil {
		return Report{Formatted: false, Summary: "not formatted yet"}, nil
	}
	slots, ndata, nitab := int64(binary.BigEndian.Uint64(sb[4:])), int64(binary.BigEndian.Uint64(sb[12:])), int64(binary.BigEndian.Uint64(sb[20:]))
	lay := fsLayout{journal: 3, slots: slots, itable: 3 + slots, nitab: nitab, data: 3 + slots + nitab, ndata: ndata}
	itable, err := readBlocks(img, start, lay.itable, lay.nitab, "fs")
	if err != nil {
		return Report{}, err
	}
	journal, err := readBlocks(img, start, lay.journal, lay.slots, "fs")
	if err != nil {
		return Report{}, err
	}
	// Committed transactions after the marker, in order, without a hole.
	type commit struct {
		txid  uint64
		slot  int64
		block int64
		crc   uint32
	}
	var commits []commit
	for s := int64(1); s < lay.slots; s += 2 {
		cm := journal[s*bs : s*bs+fsCommitLen]
		if binary.BigEndian.Uint32(cm) != fsMagicCommit || !blockSealed(cm) {
			continue
		}
		c := commit{txid: binary.BigEndian.Uint64(cm[4:]), slot: s - 1, block: int64(binary.BigEndian.Uint32(cm[12:])), crc: binary.BigEndian.Uint32(cm[16:])}
		if c.txid > ckpt {
			commits = append(commits, c)
		}
	}
	sortByTx(commits, func(c commit) uint64 { return c.txid })
	for i, c := range commits {
		if err := follows(ErrFS, "commits", ckpt, i, c.txid); err != nil {
			return Report{Formatted: true}, err
		}
		cp := journal[c.slot*bs : (c.slot+1)*bs]
		if c.block >= lay.nitab || crc32.Checksum(cp, crcTable) != c.crc {
			return Report{Formatted: true}, fmt.Errorf("%w: transaction %d is committed but its journal copy of inode block %d is not there", ErrFS, c.txid, c.block)
		}
		copy(itable[c.block*bs:], cp)
	}
	rep := Report{Formatted: true, Replayed: len(commits)}
	// Every file: its extent in the data area, owned by it alone, its data
	// matching its checksum.
	owner := make([]int, ndata)
	files, blocks := 0, int64(0)
	for b := int64(0); b < lay.nitab; b++ {
		blk := itable[b*bs : (b+1)*bs]
		if blockdev.IsZero(blk) {
			continue
		}
		if binary.BigEndian.Uint32(blk) != fsMagicInodes || !blockSealed(blk) || int64(binary.BigEndian.Uint32(blk[4:])) != b {
			return rep, fmt.Errorf("%w: inode block %d is torn or misplaced", ErrFS, b)
		}
		for i := 0; i < fsInodesPerBlock; i++ {
			rec := blk[fsBlockHeader+i*fsInodeLen:]
			gen := binary.BigEndian.Uint32(rec)
			if gen == 0 {
				continue
			}
			ino := int(b)*fsInodesPerBlock + i
			st, n, crc := int64(binary.BigEndian.Uint32(rec[4:])), int64(binary.BigEndian.Uint32(rec[8:])), binary.BigEndian.Uint32(rec[12:])
			if n <= 0 || st+n > ndata {
				return rep, fmt.Errorf("%w: inode %d has extent %d+%d outside the data area of %d blocks", ErrFS, ino, st, n, ndata)
			}
			for d := st; d < st+n; d++ {
				if owner[d] != 0 {
					return rep, fmt.Errorf("%w: data block %d belongs to inodes %d and %d", ErrFS, d, owner[d]-1, ino)
				}
				owner[d] = ino + 1
			}
			data, err := readBlocks(img, start, lay.data+st, n, "fs")
			if err != nil {
				return rep, err
			}
			if crc32.Checksum(data, crcTable) != crc {
				return rep, fmt.Errorf("%w: file of inode %d (generation %d): data does not match its checksum", ErrFS, ino, gen)
			}
			files++
			blocks += n
		}
	}
	rep.Summary = fmt.Sprintf("files=%d blocks=%d replayed=%d", files, blocks, len(commits))
	if clean && len(commits) > 0 {
		return rep, fmt.Errorf("%w: app-consistent image needed %d transactions replayed", ErrFS, len(commits))
	}
	return rep, nil
}
