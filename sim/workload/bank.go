package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// Bank is a tiny transactional store, the canonical crash-consistency test
// application. Each transaction moves money between two accounts on
// different pages and writes, in this order, a write-ahead log record with
// the new balances, the two data pages, and the commit marker — one block
// each, a millisecond apart, so that a crash-consistent cut can fall inside
// a transaction. Recovery replays the log; the invariant is that the total
// balance never changes and no balance is negative.
//
// On-disk layout (4 KiB blocks from the region's start): superblock, commit
// block, BankLogSlots log slots, then the account pages.
type Bank struct {
	w        Writer
	spec     Spec
	accounts []int64
	txid     uint64
	pending  []bankWrite // the rest of the transaction in flight
	frozen   bool
	total    int64
	gap      time.Duration
	blocked  bool
	unblock  func()
	err      error
}

// Blocked implements Blocker: a write of the bank is held.
func (b *Bank) Blocked() bool { return b.blocked }

// SetUnblock implements Blocker.
func (b *Bank) SetUnblock(f func()) { b.unblock = f }

// submit issues one write; the bank waits for its acknowledgement.
func (b *Bank) submit(w bankWrite) error {
	b.blocked = true
	b.w.Submit(b.spec.Disk, w.off, w.data, func(_ uint64, err error) {
		b.blocked = false
		if err != nil && b.err == nil {
			b.err = err
		}
		if b.unblock != nil {
			b.unblock()
		}
	})
	return b.err
}

type bankWrite struct {
	off  int64
	data []byte
}

// Bank layout parameters.
const (
	BankAccounts     = 2048
	BankLogSlots     = 64
	bankPerPage      = blockdev.BlockSize / 8
	bankInitial      = 100_000
	bankMagicSuper   = 0x42414e4b // "BANK"
	bankMagicLog     = 0x424c4f47 // "BLOG"
	bankMagicCommit  = 0x42434d54 // "BCMT"
	bankWriteSpacing = time.Millisecond
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrInvariant is returned by Check when a recovered image breaks the
// bank's invariant.
var ErrInvariant = errors.New("workload: bank invariant violated")

func bankBlocks() int64 { return 2 + BankLogSlots + BankAccounts/bankPerPage }

// NewBank builds a bank on spec's region. The store is formatted by the
// first steps, through the guest's write path like everything else.
func NewBank(w Writer, spec Spec) (*Bank, error) {
	if need := bankBlocks() * blockdev.BlockSize; spec.RegionLen < need {
		return nil, fmt.Errorf("workload: bank needs %d bytes, region has %d", need, spec.RegionLen)
	}
	b := &Bank{w: w, spec: spec, accounts: make([]int64, BankAccounts),
		gap: time.Duration(float64(time.Second) / spec.TxPerSec)}
	for i := range b.accounts {
		b.accounts[i] = bankInitial
		b.total += bankInitial
	}
	b.pending = b.formatWrites()
	return b, nil
}

// Name implements Workload.
func (*Bank) Name() string { return "bank" }

func (b *Bank) blockOff(i int64) int64 { return b.spec.RegionStart + i*blockdev.BlockSize }
func (b *Bank) pageOff(p int) int64    { return b.blockOff(2 + BankLogSlots + int64(p)) }

func (b *Bank) formatWrites() []bankWrite {
	var ws []bankWrite
	for p := 0; p < BankAccounts/bankPerPage; p++ {
		ws = append(ws, bankWrite{b.pageOff(p), b.page(p)})
	}
	ws = append(ws, bankWrite{b.blockOff(1), commitBlock(0)})
	sb := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(sb[0:], bankMagicSuper)
	binary.BigEndian.PutUint32(sb[4:], BankAccounts)
	binary.BigEndian.PutUint32(sb[8:], BankLogSlots)
	binary.BigEndian.PutUint64(sb[12:], uint64(b.total))
	// The superblock goes last: a store is formatted once it is there.
	return append(ws, bankWrite{b.blockOff(0), sb})
}

func (b *Bank) page(p int) []byte {
	buf := make([]byte, blockdev.BlockSize)
	for i := 0; i < bankPerPage; i++ {
		binary.BigEndian.PutUint64(buf[8*i:], uint64(b.accounts[p*bankPerPage+i]))
	}
	return buf
}

func commitBlock(txid uint64) []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], bankMagicCommit)
	binary.BigEndian.PutUint64(buf[4:], txid)
	return buf
}

type entry struct {
	acct    uint32
	balance int64
}

func logRecord(txid uint64, es []entry) []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], bankMagicLog)
	binary.BigEndian.PutUint64(buf[4:], txid)
	binary.BigEndian.PutUint16(buf[12:], uint16(len(es)))
	for i, e := range es {
		binary.BigEndian.PutUint32(buf[14+12*i:], e.acct)
		binary.BigEndian.PutUint64(buf[18+12*i:], uint64(e.balance))
	}
	binary.BigEndian.PutUint32(buf[blockdev.BlockSize-4:], crc32.Checksum(buf[:blockdev.BlockSize-4], crcTable))
	return buf
}

// Step implements Workload: it issues the next write of the transaction in
// flight, or starts a new transaction.
func (b *Bank) Step(r *rand.Rand) (time.Duration, error) {
	if len(b.pending) == 0 {
		if b.frozen {
			return b.gap, nil
		}
		b.pending = b.transaction(r)
	}
	w := b.pending[0]
	b.pending = b.pending[1:]
	if err := b.submit(w); err != nil {
		return 0, err
	}
	if len(b.pending) > 0 {
		return bankWriteSpacing, nil
	}
	return b.gap, nil
}

func (b *Bank) transaction(r *rand.Rand) []bankWrite {
	pages := BankAccounts / bankPerPage
	pf := r.IntN(pages)
	pt := (pf + 1 + r.IntN(pages-1)) % pages
	from := pf*bankPerPage + r.IntN(bankPerPage)
	to := pt*bankPerPage + r.IntN(bankPerPage)
	amount := int64(0)
	if b.accounts[from] > 0 {
		amount = 1 + r.Int64N(b.accounts[from])
	}
	b.accounts[from] -= amount
	b.accounts[to] += amount
	b.txid++
	rec := logRecord(b.txid, []entry{{uint32(from), b.accounts[from]}, {uint32(to), b.accounts[to]}})
	slot := int64((b.txid - 1) % BankLogSlots)
	return []bankWrite{
		{b.blockOff(2 + slot), rec},
		{b.pageOff(pf), b.page(pf)},
		{b.pageOff(pt), b.page(pt)},
		{b.blockOff(1), commitBlock(b.txid)},
	}
}

// Freeze implements Workload: the transaction in flight is finished at
// once (the VSS writer's flush) and no new one starts until Thaw.
func (b *Bank) Freeze() error {
	for _, w := range b.pending {
		if err := b.submit(w); err != nil {
			return err
		}
	}
	b.pending = nil
	b.frozen = true
	return nil
}

// Thaw implements Workload.
func (b *Bank) Thaw() { b.frozen = false }

// Check implements Workload.
func (b *Bank) Check(images []io.ReaderAt, clean bool) (Report, error) {
	if b.spec.Disk >= len(images) {
		return Report{}, fmt.Errorf("workload: bank: no image for disk %d", b.spec.Disk)
	}
	return CheckBank(images[b.spec.Disk], b.spec.RegionStart, clean)
}

// CheckBank recovers a bank store from img (in memory: img is not changed)
// and checks its invariant. With clean set, recovery must have nothing to
// replay that the pages do not already hold.
func CheckBank(img io.ReaderAt, start int64, clean bool) (Report, error) {
	blk := make([]byte, blockdev.BlockSize)
	read := func(i int64) ([]byte, error) {
		if _, err := img.ReadAt(blk, start+i*blockdev.BlockSize); err != nil && err != io.EOF {
			return nil, fmt.Errorf("workload: bank: read block %d: %w", i, err)
		}
		return blk, nil
	}
	sb, err := read(0)
	if err != nil {
		return Report{}, err
	}
	if binary.BigEndian.Uint32(sb) != bankMagicSuper {
		return Report{Formatted: false, Summary: "not formatted yet"}, nil
	}
	n, slots, total := int(binary.BigEndian.Uint32(sb[4:])), int64(binary.BigEndian.Uint32(sb[8:])), int64(binary.BigEndian.Uint64(sb[12:]))
	if n != BankAccounts || slots != BankLogSlots {
		return Report{}, fmt.Errorf("%w: superblock says %d accounts and %d slots", ErrInvariant, n, slots)
	}
	acct := make([]int64, n)
	for p := 0; p < n/bankPerPage; p++ {
		pg, err := read(2 + slots + int64(p))
		if err != nil {
			return Report{}, err
		}
		for i := 0; i < bankPerPage; i++ {
			acct[p*bankPerPage+i] = int64(binary.BigEndian.Uint64(pg[8*i:]))
		}
	}
	type rec struct {
		txid uint64
		es   []entry
	}
	var recs []rec
	for s := int64(0); s < slots; s++ {
		lb, err := read(2 + s)
		if err != nil {
			return Report{}, err
		}
		if binary.BigEndian.Uint32(lb) != bankMagicLog ||
			crc32.Checksum(lb[:blockdev.BlockSize-4], crcTable) != binary.BigEndian.Uint32(lb[blockdev.BlockSize-4:]) {
			continue
		}
		r := rec{txid: binary.BigEndian.Uint64(lb[4:])}
		for i := 0; i < int(binary.BigEndian.Uint16(lb[12:])); i++ {
			r.es = append(r.es, entry{binary.BigEndian.Uint32(lb[14+12*i:]), int64(binary.BigEndian.Uint64(lb[18+12*i:]))})
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].txid < recs[j].txid })
	// Redo: each account takes the balance of the newest record naming it.
	// A record "replays" when it changes what the pages say.
	replayedTx := map[uint64]bool{}
	latest := map[uint32]uint64{}
	for _, r := range recs {
		for _, e := range r.es {
			if int(e.acct) >= n {
				return Report{}, fmt.Errorf("%w: log record %d names account %d", ErrInvariant, r.txid, e.acct)
			}
			latest[e.acct] = r.txid
		}
	}
	for _, r := range recs {
		for _, e := range r.es {
			if latest[e.acct] == r.txid && acct[e.acct] != e.balance {
				acct[e.acct] = e.balance
				replayedTx[r.txid] = true
			}
		}
	}
	replayed := len(replayedTx)
	rep := Report{Formatted: true, Replayed: replayed}
	var sum int64
	for i, a := range acct {
		if a < 0 {
			return rep, fmt.Errorf("%w: account %d has balance %d", ErrInvariant, i, a)
		}
		sum += a
	}
	rep.Summary = fmt.Sprintf("accounts=%d total=%d replayed=%d", n, sum, replayed)
	if sum != total {
		return rep, fmt.Errorf("%w: total %d after recovery, want %d", ErrInvariant, sum, total)
	}
	if clean && replayed > 0 {
		return rep, fmt.Errorf("%w: app-consistent image needed %d log records replayed", ErrInvariant, replayed)
	}
	return rep, nil
}
