package workload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// memDisk is a guest disk in memory that keeps every write, so a test can
// rebuild the image after any prefix of the history.
type memDisk struct {
	clock  *int  // shared by disks whose writes have one global order
	at     []int // the global clock of each write
	size   int64
	writes []struct {
		off  int64
		data []byte
	}
}

func (m *memDisk) Write(_ int, off int64, data []byte) error {
	if m.clock != nil {
		*m.clock++
		m.at = append(m.at, *m.clock)
	}
	m.writes = append(m.writes, struct {
		off  int64
		data []byte
	}{off, append([]byte(nil), data...)})
	return nil
}
func (m *memDisk) Submit(d int, off int64, data []byte, done func(uint64, error)) {
	err := m.Write(d, off, data)
	if done != nil {
		done(uint64(len(m.writes)), err)
	}
}
func (m *memDisk) Size(int) int64 { return m.size }
func (m *memDisk) Disks() int     { return 1 }

func (m *memDisk) image(skip map[int]bool, k int) []io.ReaderAt {
	return []io.ReaderAt{bytes.NewReader(m.imageBytes(skip, k))}
}

func (m *memDisk) imageBytes(skip map[int]bool, k int) []byte {
	b := make([]byte, m.size)
	for i, w := range m.writes[:k] {
		if !skip[i] {
			copy(b[w.off:], w.data)
		}
	}
	return b
}

func runBank(t *testing.T, steps int) (*memDisk, Workload) {
	t.Helper()
	return runKind(t, "bank", steps)
}

func runKind(t *testing.T, kind string, steps int) (*memDisk, Workload) {
	t.Helper()
	d := &memDisk{size: 1 << 20}
	wl, err := New(Spec{Kind: kind, TxPerSec: 10, RegionStart: 64 * 1024}, d)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(4, 4))
	for i := 0; i < steps; i++ {
		if _, err := wl.Step(r); err != nil {
			t.Fatal(err)
		}
	}
	return d, wl
}

// TestEveryPrefixRecovers cuts the disk after every write (a crash at any
// moment): each image recovers and passes the invariant, through several
// checkpoints and journal wraps.
func TestEveryPrefixRecovers(t *testing.T) {
	for _, kind := range []string{"bank", "fs"} {
		t.Run(kind, func(t *testing.T) {
			d, wl := runKind(t, kind, 600)
			formatted, replayed := 0, 0
			for k := 0; k <= len(d.writes); k++ {
				rep, err := wl.Check(d.image(nil, k), false)
				if err != nil {
					t.Fatalf("crash image after %d writes: %v", k, err)
				}
				if rep.Formatted {
					formatted++
				}
				replayed = max(replayed, rep.Replayed)
			}
			if formatted < 500 || replayed == 0 {
				t.Fatalf("%d of %d prefixes formatted, at most %d records replayed: the check saw little", formatted, len(d.writes)+1, replayed)
			}
		})
	}
}

func TestFrozenImageIsClean(t *testing.T) {
	for _, kind := range []string{"bank", "fs"} {
		t.Run(kind, func(t *testing.T) {
			d, wl := runKind(t, kind, 203)
			if err := wl.Freeze(); err != nil {
				t.Fatal(err)
			}
			rep, err := wl.Check(d.image(nil, len(d.writes)), true)
			if err != nil {
				t.Fatalf("frozen image: %v", err)
			}
			if !strings.Contains(rep.Summary, "replayed=0") {
				t.Fatalf("summary %q", rep.Summary)
			}
			// Without the freeze the same image needs replay, and the clean
			// check says so.
			d2, wl2 := runKind(t, kind, 203)
			if _, err := wl2.Check(d2.image(nil, len(d2.writes)), true); !errors.Is(err, ErrInvariant) && !errors.Is(err, ErrFS) {
				t.Fatalf("an image that needs replay passed the clean check: %v", err)
			}
		})
	}
}

// TestBankNegativeControl drops writes one at a time — what a broken
// replication pipeline does — and shows the invariant catches it.
func TestBankNegativeControl(t *testing.T) {
	d, wl := runBank(t, 800)
	b := wl.(*Bank)
	journalEnd := b.blockOff(b.lay.pages)
	var journal, pages []int
	for i, w := range d.writes {
		switch {
		case w.off >= b.blockOff(b.lay.journal) && w.off < journalEnd:
			journal = append(journal, i)
		case w.off >= journalEnd:
			pages = append(pages, i)
		}
	}
	if len(journal) < 100 || len(pages) < 10 {
		t.Fatalf("%d journal writes, %d page writes", len(journal), len(pages))
	}
	// A journal record lost while a later one is there.
	lost := journal[len(journal)/2]
	if _, err := wl.Check(d.image(map[int]bool{lost: true}, lost+3), false); !errors.Is(err, ErrInvariant) {
		t.Fatalf("image missing journal record (write %d) passed: %v", lost, err)
	}
	// A checkpoint's page write lost, its marker there: the journal no
	// longer replays what the page missed (the image ends at the marker:
	// a later checkpoint may rewrite the page).
	caught, judged := 0, 0
	for _, p := range pages {
		end := p + 1
		for end <= len(d.writes) && d.writes[end-1].off != b.blockOff(1) && d.writes[end-1].off != b.blockOff(2) {
			end++
		}
		if end > len(d.writes) {
			continue // its checkpoint is not finished: the journal still covers it
		}
		judged++
		if _, err := wl.Check(d.image(map[int]bool{p: true}, end), false); errors.Is(err, ErrInvariant) {
			caught++
		}
	}
	if judged < 50 || caught < judged*9/10 {
		t.Fatalf("only %d of %d lost page writes broke the invariant", caught, judged)
	}
	t.Logf("%d of %d lost page writes broke the invariant (the others' transfers cancel out within the page)", caught, judged)
}

// TestFSNegativeControl loses a file's data write, a journal copy, and two
// files sharing a block, and shows each breaks the invariant.
func TestFSNegativeControl(t *testing.T) {
	d, wl := runKind(t, "fs", 400)
	f := wl.(*FS)
	var data, copies []int
	for i, w := range d.writes {
		switch {
		case w.off >= f.blockOff(f.lay.data) && i+3 <= len(d.writes): // its commit is there too
			data = append(data, i)
		case w.off >= f.blockOff(f.lay.journal) && w.off < f.blockOff(f.lay.itable) && (w.off-f.blockOff(f.lay.journal))/blockdev.BlockSize%2 == 0:
			copies = append(copies, i)
		}
	}
	if len(data) < 20 || len(copies) < 50 {
		t.Fatalf("%d data writes, %d journal copies", len(data), len(copies))
	}
	caught := 0
	for _, w := range data {
		// The file's data lost, its transaction committed right after.
		if _, err := wl.Check(d.image(map[int]bool{w: true}, w+3), false); errors.Is(err, ErrFS) {
			caught++
		}
	}
	if caught != len(data) {
		t.Fatalf("only %d of %d lost data writes broke the invariant", caught, len(data))
	}
	c := copies[len(copies)/2]
	if _, err := wl.Check(d.image(map[int]bool{c: true}, c+2), false); !errors.Is(err, ErrFS) {
		t.Fatalf("a commit without its journal copy passed: %v", err)
	}
	// Two live files pointing at one block.
	if err := wl.Freeze(); err != nil {
		t.Fatal(err)
	}
	buf := d.imageBytes(nil, len(d.writes))
	var recs []int64
	for b := int64(0); b < f.lay.nitab; b++ {
		off := f.blockOff(f.lay.itable+b) + fsBlockHeader
		for i := int64(0); i < fsInodesPerBlock; i++ {
			if binary.BigEndian.Uint32(buf[off+i*fsInodeLen:]) != 0 {
				recs = append(recs, off+i*fsInodeLen)
			}
		}
	}
	if len(recs) < 2 {
		t.Fatalf("%d live files", len(recs))
	}
	copy(buf[recs[1]+4:recs[1]+16], buf[recs[0]+4:recs[0]+16]) // the same extent and checksum
	blk := f.blockOff(f.lay.itable) + (recs[1]-f.blockOff(f.lay.itable))/blockdev.BlockSize*blockdev.BlockSize
	sealBlock(buf[blk : blk+blockdev.BlockSize])
	if _, err := CheckFS(bytes.NewReader(buf), 64*1024, false); !errors.Is(err, ErrFS) || !strings.Contains(err.Error(), "belongs to inodes") {
		t.Fatalf("two files sharing blocks passed: %v", err)
	}
}

func TestNewRejectsBadSpecs(t *testing.T) {
	d := &memDisk{size: 1 << 20}
	for _, s := range []Spec{
		{Kind: "bank", RegionStart: 1 << 20},
		{Kind: "bank", RegionStart: 1000},
		{Kind: "random"},
		{Kind: "tpcc", ChurnBps: 1},
		{Kind: "random", ChurnBps: 1, Disk: 3},
		{Kind: "bank", RegionStart: (1 << 20) - 4096},
	} {
		if _, err := New(s, d); err == nil {
			t.Errorf("New(%+v) accepted", s)
		}
	}
}

func TestRandomChurn(t *testing.T) {
	d := &memDisk{size: 1 << 20}
	wl, err := New(Spec{Kind: "random", ChurnBps: 100_000}, d)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	var elapsed float64
	var bytes int64
	for i := 0; i < 2000; i++ {
		next, err := wl.Step(r)
		if err != nil {
			t.Fatal(err)
		}
		elapsed += next.Seconds()
		bytes += int64(len(d.writes[i].data))
	}
	if rate := float64(bytes) / elapsed; rate < 99_000 || rate > 101_000 {
		t.Fatalf("churn %.0f B/s, want 100000", rate)
	}
}

func TestDriverPauseResume(t *testing.T) {
	type ev struct {
		at time.Duration
		fn func()
	}
	var q []ev
	var now time.Duration
	d := NewDriver(func(dl time.Duration, _ string, fn func()) { q = append(q, ev{now + dl, fn}) })
	disk := &memDisk{size: 1 << 20}
	wl, _ := New(Spec{Kind: "random", ChurnBps: 4096}, disk) // a 4-64 KiB write every 1-16 s
	d.Start("vm", wl, rand.New(rand.NewPCG(1, 1)), 0)
	runUntil := func(end time.Duration) {
		for {
			sort.Slice(q, func(i, j int) bool { return q[i].at < q[j].at })
			if len(q) == 0 || q[0].at > end {
				now = end
				return
			}
			e := q[0]
			q = q[1:]
			now = e.at
			e.fn()
		}
	}
	runUntil(time.Minute)
	before := len(disk.writes)
	d.Pause("vm")
	runUntil(10 * time.Minute)
	if len(disk.writes) > before+1 {
		t.Fatalf("paused workload wrote %d times", len(disk.writes)-before)
	}
	paused := len(disk.writes)
	d.Resume("vm")
	runUntil(20 * time.Minute)
	if len(disk.writes) <= paused {
		t.Fatal("resumed workload did not write")
	}
}

// TestDriverRunning: Running gives a started workload, paused too (its
// machine crashed and comes back), and nil once it is stopped (its machine
// powered off: a guest's freeze has no application to quiesce), while
// Workload still gives it (the checks read its images).
func TestDriverRunning(t *testing.T) {
	d := NewDriver(func(time.Duration, string, func()) {})
	wl, err := New(Spec{Kind: "random", ChurnBps: 4096}, &memDisk{size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if d.Running("vm") != nil {
		t.Fatal("Running gives a workload never started")
	}
	d.Start("vm", wl, rand.New(rand.NewPCG(1, 1)), 0)
	for _, step := range []struct {
		do      func()
		name    string
		running bool
	}{
		{func() {}, "started", true},
		{func() { d.Pause("vm") }, "paused", true},
		{func() { d.Resume("vm") }, "resumed", true},
		{func() { d.Stop("vm") }, "stopped", false},
	} {
		step.do()
		if got := d.Running("vm") != nil; got != step.running {
			t.Errorf("%s: running %v, want %v", step.name, got, step.running)
		}
		if d.Workload("vm") != wl {
			t.Errorf("%s: Workload does not give the workload", step.name)
		}
	}
}

// TestInodeTextCache: every inode-table block the file system renders
// with its text cache equals the block rendered afresh (an empty cache),
// after creates and deletes that reuse inode numbers.
func TestInodeTextCache(t *testing.T) {
	_, wl := runKind(t, "fs", 400)
	f := wl.(*FS)
	if f.live == 0 {
		t.Fatal("no live inode: nothing to judge")
	}
	fresh := *f
	fresh.texts = make([]inodeText, len(f.texts))
	cached := 0
	for _, c := range f.texts {
		if c.txid != 0 {
			cached++
		}
	}
	if cached == 0 {
		t.Fatal("the cache holds nothing: nothing to judge")
	}
	for b := int64(0); b < f.lay.nitab; b++ {
		if got, want := f.inodeBlock(b), fresh.inodeBlock(b); !bytes.Equal(got, want) {
			t.Fatalf("inode-table block %d differs from a fresh rendering", b)
		}
	}
}
