package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// Bank is a small transactional store laid out like a real database, the
// canonical crash-consistency test application. Each transaction moves
// money between two accounts and is committed by one write: its record,
// appended to a circular write-ahead journal. Account pages are written
// back lazily, as a database's buffer pool does: a checkpoint writes every
// dirty page, then a checkpoint marker naming the newest transaction the
// pages hold, and only then may the journal reuse the slots of older
// transactions. Recovery reads the newest marker and replays, in order,
// every journal record after it; the invariant is that the total balance
// never changes, no balance is negative, and the journal after the marker
// has no hole (a transaction missing while a later one is there means a
// write was lost or reordered).
//
// The layout spreads the store over its whole region, so that a lost write
// stays visible: the journal's head moves through thousands of blocks and a
// journal block is rewritten only after the journal wraps; a page is
// rewritten at most once per checkpoint, and a checkpoint comes only when
// half the journal is used (at the fixtures' 2 transactions a second, every
// 17 minutes). Accounts are chosen with a hot set and a cold tail, as real
// customers are.
//
// On-disk layout (4 KiB blocks from the region's start): superblock, two
// checkpoint markers (written in turn), the journal (half the region), then
// the account pages (16 rows each) to the region's end. A page never written
// (all zeros) holds every one of its accounts at the initial balance.
//
// The write path (journal, checkpoints, markers, Freeze and Thaw, Blocker)
// is journaled's; the account pages are its home blocks.
type Bank struct {
	journaled
	lay    bankLayout
	bal    []int64  // balance per account
	lastTx []uint64 // the transaction that last changed each account (0: none)
	total  int64
}

// Bank layout parameters.
const (
	bankRowsPerPage = 16
	bankRowLen      = 254 // 32-byte page header + 16 rows = 4096
	bankPageHeader  = 32
	bankInitial     = 100_000
	bankMagicSuper  = 0x42414e4b // "BANK"
	bankMagicLog    = 0x424c4f47 // "BLOG"
	bankMagicPage   = 0x42504147 // "BPAG"
	bankMagicMarker = 0x42434b50 // "BCKP"
	bankHotPercent  = 2          // the hot set: 2% of the accounts...
	bankHotChance   = 95         // ...take 95% of the transfers
	bankMinBlocks   = 3 + 2*8
)

// ErrInvariant is returned by Check when a recovered image breaks the
// bank's invariant.
var ErrInvariant = errors.New("workload: bank invariant violated")

// bankLayout is where things are, in blocks from the region's start.
type bankLayout struct {
	journal  int64 // first journal block
	slots    int64 // journal blocks
	pages    int64 // first page block
	npages   int64
	accounts int
}

func newBankLayout(regionBlocks int64) bankLayout {
	slots := (regionBlocks - 3) / 2
	np := regionBlocks - 3 - slots
	return bankLayout{journal: 3, slots: slots, pages: 3 + slots, npages: np, accounts: int(np) * bankRowsPerPage}
}

// NewBank builds a bank on spec's region. The store is formatted by the
// first steps, through the guest's write path like everything else.
func NewBank(w Writer, spec Spec) (*Bank, error) {
	blocks := spec.RegionLen / blockdev.BlockSize
	if blocks < bankMinBlocks {
		return nil, fmt.Errorf("workload: bank needs %d bytes, region has %d", bankMinBlocks*blockdev.BlockSize, spec.RegionLen)
	}
	lay := newBankLayout(blocks)
	b := &Bank{lay: lay, bal: make([]int64, lay.accounts), lastTx: make([]uint64, lay.accounts)}
	b.journaled = journaled{w: w, spec: spec, magicMarker: bankMagicMarker, home: lay.pages,
		render: func(p int64) []byte { return b.page(int(p)) }, dirty: map[int64]bool{},
		gap: time.Duration(float64(time.Second) / spec.TxPerSec)}
	for i := range b.bal {
		b.bal[i] = bankInitial
		b.total += bankInitial
	}
	b.pending = b.formatWrites()
	return b, nil
}

// Name implements Workload.
func (*Bank) Name() string { return "bank" }

func (b *Bank) formatWrites() []blockWrite {
	sb := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(sb[0:], bankMagicSuper)
	binary.BigEndian.PutUint64(sb[4:], uint64(b.lay.slots))
	binary.BigEndian.PutUint64(sb[12:], uint64(b.lay.npages))
	binary.BigEndian.PutUint64(sb[20:], uint64(b.total))
	binary.BigEndian.PutUint32(sb[28:], bankInitial)
	copy(sb[64:], "v2a bank store: superblock, 2 checkpoint markers, circular journal, account pages of 16 rows\n")
	// The pages need no formatting: a page of zeros holds initial balances.
	return b.format(sb)
}

// page renders account page p: a header, then 16 rows of a binary part
// (account, balance, last transaction) and the customer's record as text.
func (b *Bank) page(p int) []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], bankMagicPage)
	binary.BigEndian.PutUint32(buf[4:], uint32(p))
	binary.BigEndian.PutUint64(buf[8:], b.txid)
	var line []byte
	for i := 0; i < bankRowsPerPage; i++ {
		a := p*bankRowsPerPage + i
		row := buf[bankPageHeader+i*bankRowLen : bankPageHeader+(i+1)*bankRowLen]
		binary.BigEndian.PutUint32(row[0:], uint32(a))
		binary.BigEndian.PutUint64(row[4:], uint64(b.bal[a]))
		binary.BigEndian.PutUint64(row[12:], b.lastTx[a])
		// The row's text is the customer's record as of its last change:
		// a function of the account and that transaction.
		line = appendRowText(line[:0], rand.New(rand.NewPCG(uint64(a), b.lastTx[a])))
		copy(row[20:], line)
	}
	// The last row's tail holds the page's CRC.
	sealBlock(buf)
	return buf
}

type entry struct {
	acct    uint32
	balance int64
}

// logRecord is a transaction's journal record: its changes, then its
// audit trail (the remittance text a real transfer carries), filling the
// block.
func logRecord(r *rand.Rand, txid uint64, es []entry) []byte {
	buf := make([]byte, blockdev.BlockSize)
	binary.BigEndian.PutUint32(buf[0:], bankMagicLog)
	binary.BigEndian.PutUint64(buf[4:], txid)
	binary.BigEndian.PutUint16(buf[12:], uint16(len(es)))
	for i, e := range es {
		binary.BigEndian.PutUint32(buf[14+12*i:], e.acct)
		binary.BigEndian.PutUint64(buf[18+12*i:], uint64(e.balance))
	}
	fillRecords(r, buf[64:blockdev.BlockSize-4])
	sealBlock(buf)
	return buf
}

// account picks an account: one of the hot set most of the time, else any.
// The hot set is the newest accounts, on the last pages (as a table grows
// at its end): a checkpoint writes those pages as one run, and only the
// cold tail's pages one by one.
func (b *Bank) account(r *rand.Rand) int {
	if hot := max(1, b.lay.accounts*bankHotPercent/100); r.IntN(100) < bankHotChance {
		return b.lay.accounts - 1 - r.IntN(hot)
	}
	return r.IntN(b.lay.accounts)
}

// Step implements Workload: it issues the next write of the checkpoint in
// flight, or commits a new transaction; a checkpoint follows once half the
// journal is used.
func (b *Bank) Step(r *rand.Rand) (time.Duration, error) {
	return b.step(r, b.transaction, b.lay.slots/2)
}

func (b *Bank) transaction(r *rand.Rand) []blockWrite {
	from := b.account(r)
	to := b.account(r)
	if to == from {
		to = (from + 1 + r.IntN(b.lay.accounts-1)) % b.lay.accounts
	}
	amount := int64(0)
	if b.bal[from] > 0 {
		amount = 1 + r.Int64N(min(b.bal[from], 5*bankInitial))
	}
	b.txid++
	b.bal[from] -= amount
	b.bal[to] += amount
	b.lastTx[from], b.lastTx[to] = b.txid, b.txid
	b.dirty[int64(from/bankRowsPerPage)] = true
	b.dirty[int64(to/bankRowsPerPage)] = true
	rec := logRecord(r, b.txid, []entry{{uint32(from), b.bal[from]}, {uint32(to), b.bal[to]}})
	slot := int64((b.txid - 1) % uint64(b.lay.slots))
	return []blockWrite{{b.blockOff(b.lay.journal + slot), rec}}
}

// Check implements Workload.
func (b *Bank) Check(images []io.ReaderAt, clean bool) (Report, error) {
	img, err := b.image(images, "bank")
	if err != nil {
		return Report{}, err
	}
	return CheckBank(img, b.spec.RegionStart, clean)
}

// CheckBank recovers a bank store from img (in memory: img is not changed)
// and checks its invariant. With clean set, recovery must have nothing to
// replay: the pages hold every committed transaction.
func CheckBank(img io.ReaderAt, start int64, clean bool) (Report, error) {
	const bs = blockdev.BlockSize
	// The newest valid marker says what the pages hold.
	sb, ckpt, err := readJournalHead(img, start, "bank", bankMagicSuper, bankMagicMarker, ErrInvariant)
	if err != nil {
		return Report{}, err
	}
	if sb == nil {
		return Report{Formatted: false, Summary: "not formatted yet"}, nil
	}
	slots, npages := int64(binary.BigEndian.Uint64(sb[4:])), int64(binary.BigEndian.Uint64(sb[12:]))
	total, initial := int64(binary.BigEndian.Uint64(sb[20:])), int64(binary.BigEndian.Uint32(sb[28:]))
	lay := bankLayout{journal: 3, slots: slots, pages: 3 + slots, npages: npages, accounts: int(npages) * bankRowsPerPage}
	pages, err := readBlocks(img, start, lay.pages, lay.npages, "bank")
	if err != nil {
		return Report{}, err
	}
	bal := make([]int64, lay.accounts)
	for p := int64(0); p < lay.npages; p++ {
		pg := pages[p*bs : (p+1)*bs]
		if blockdev.IsZero(pg) {
			for i := 0; i < bankRowsPerPage; i++ {
				bal[int(p)*bankRowsPerPage+i] = initial
			}
			continue
		}
		if binary.BigEndian.Uint32(pg) != bankMagicPage || !blockSealed(pg) || int64(binary.BigEndian.Uint32(pg[4:])) != p {
			return Report{}, fmt.Errorf("%w: account page %d is torn or misplaced", ErrInvariant, p)
		}
		for i := 0; i < bankRowsPerPage; i++ {
			row := pg[bankPageHeader+i*bankRowLen:]
			bal[int(p)*bankRowsPerPage+i] = int64(binary.BigEndian.Uint64(row[4:]))
		}
	}
	journal, err := readBlocks(img, start, lay.journal, lay.slots, "bank")
	if err != nil {
		return Report{}, err
	}
	type rec struct {
		txid uint64
		es   []entry
	}
	var recs []rec
	for s := int64(0); s < lay.slots; s++ {
		lb := journal[s*bs : (s+1)*bs]
		if binary.BigEndian.Uint32(lb) != bankMagicLog || !blockSealed(lb) {
			continue
		}
		r := rec{txid: binary.BigEndian.Uint64(lb[4:])}
		if r.txid <= ckpt {
			continue // the pages hold it already (or a stale slot)
		}
		for i := 0; i < int(binary.BigEndian.Uint16(lb[12:])); i++ {
			r.es = append(r.es, entry{binary.BigEndian.Uint32(lb[14+12*i:]), int64(binary.BigEndian.Uint64(lb[18+12*i:]))})
		}
		recs = append(recs, r)
	}
	sortByTx(recs, func(r rec) uint64 { return r.txid })
	// Redo, in order: each record sets the new balances it carries. The
	// records after the marker must follow it without a hole.
	for i, r := range recs {
		if err := follows(ErrInvariant, "holds", ckpt, i, r.txid); err != nil {
			return Report{Formatted: true}, err
		}
		for _, e := range r.es {
			if int(e.acct) >= lay.accounts {
				return Report{}, fmt.Errorf("%w: journal record %d names account %d", ErrInvariant, r.txid, e.acct)
			}
			bal[e.acct] = e.balance
		}
	}
	rep := Report{Formatted: true, Replayed: len(recs)}
	var sum int64
	for i, a := range bal {
		if a < 0 {
			return rep, fmt.Errorf("%w: account %d has balance %d", ErrInvariant, i, a)
		}
		sum += a
	}
	rep.Summary = fmt.Sprintf("accounts=%d total=%d replayed=%d", lay.accounts, sum, len(recs))
	if sum != total {
		return rep, fmt.Errorf("%w: total %d after recovery, want %d", ErrInvariant, sum, total)
	}
	if clean && len(recs) > 0 {
		return rep, fmt.Errorf("%w: app-consistent image needed %d journal records replayed", ErrInvariant, len(recs))
	}
	return rep, nil
}
