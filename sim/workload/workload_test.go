package workload

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
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
	b := make([]byte, m.size)
	for i, w := range m.writes[:k] {
		if !skip[i] {
			copy(b[w.off:], w.data)
		}
	}
	return []io.ReaderAt{bytes.NewReader(b)}
}

func runBank(t *testing.T, steps int) (*memDisk, Workload) {
	t.Helper()
	d := &memDisk{size: 1 << 20}
	wl, err := New(Spec{Kind: "bank", TxPerSec: 10, RegionStart: 64 * 1024}, d)
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

func TestBankEveryPrefixRecovers(t *testing.T) {
	d, wl := runBank(t, 400)
	formatted := 0
	for k := 0; k <= len(d.writes); k++ {
		rep, err := wl.Check(d.image(nil, k), false)
		if err != nil {
			t.Fatalf("crash image after %d writes: %v", k, err)
		}
		if rep.Formatted {
			formatted++
		}
	}
	if formatted < 300 {
		t.Fatalf("only %d of %d prefixes were formatted: the check saw little", formatted, len(d.writes)+1)
	}
}

func TestBankFrozenImageIsClean(t *testing.T) {
	d, wl := runBank(t, 203) // stop mid-transaction
	if err := wl.Freeze(); err != nil {
		t.Fatal(err)
	}
	rep, err := wl.Check(d.image(nil, len(d.writes)), true)
	if err != nil {
		t.Fatalf("frozen image: %v", err)
	}
	if !strings.Contains(rep.Summary, "total=204800000") {
		t.Fatalf("summary %q", rep.Summary)
	}
	// Without the freeze the same cut mid-transaction needs replay, and the
	// clean check says so.
	d2, wl2 := runBank(t, 203)
	if _, err := wl2.Check(d2.image(nil, len(d2.writes)), true); !errors.Is(err, ErrInvariant) {
		t.Fatalf("mid-transaction image passed the clean check: %v", err)
	}
}

// TestBankNegativeControl drops the write-ahead log record of one
// transaction while keeping its page writes — the reordering a broken
// replication pipeline would cause — and shows the invariant catches it.
func TestBankNegativeControl(t *testing.T) {
	d, wl := runBank(t, 40)
	// Writes 0-5 format the store; each transaction is log, page, page, commit.
	logWrite := 6 + 4*3
	img := d.image(map[int]bool{logWrite: true}, logWrite+2) // log dropped, first page kept
	if _, err := wl.Check(img, false); !errors.Is(err, ErrInvariant) {
		t.Fatalf("image with a page write but no log record passed: %v", err)
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
