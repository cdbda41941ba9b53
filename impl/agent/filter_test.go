package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/proto"
)

func openTestFilter(t testing.TB, dir string, opts FilterOptions) *Filter {
	t.Helper()
	f, rec, err := OpenFilter(dir, "vm01", opts)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ResyncRequired {
		t.Fatalf("fresh log needs a resync: %s", rec.Reason)
	}
	return f
}

func block(b byte) []byte {
	d := make([]byte, 4096)
	for i := range d {
		d[i] = b
	}
	return d
}

// TestFilterModes walks the filter through data → metadata → bitmap and
// back, with the hysteresis: data mode again only under half the budget and
// once no metadata record waits to be re-read.
func TestFilterModes(t *testing.T) {
	// 4 KiB writes cost 4128 log bytes: 7 fit in 32 KiB.
	f := openTestFilter(t, t.TempDir(), FilterOptions{DataBudget: 32 << 10, MetaBudget: 12})
	defer f.Close()
	type step struct {
		name       string
		do         func() error
		wantMode   Mode
		wantUndrai bool
	}
	var lastSeq uint64
	write := func(n int) func() error {
		return func() error {
			for i := 0; i < n; i++ {
				if seq := f.Capture(0, int64(i)*4096, block(byte(i+1))); seq != 0 {
					lastSeq = seq
				}
			}
			return nil
		}
	}
	steps := []step{
		{"within the data budget", write(7), ModeData, false},
		{"over the data budget", write(1), ModeMetadata, true},
		{"more writes stay metadata", write(2), ModeMetadata, true},
		{"trimmed under half but not drained", func() error {
			if err := f.Sync(); err != nil {
				return err
			}
			return f.Trim(6)
		}, ModeMetadata, true},
		{"drained: back to data", func() error { f.MarkDrained(lastSeq); return nil }, ModeData, false},
		{"over again", write(8), ModeMetadata, true},
		{"metadata budget exhausted", write(6), ModeBitmap, true},
		{"reset", func() error { _, err := f.Reset(); return err }, ModeData, false},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		st := f.Stats()
		if st.Mode != s.wantMode || st.UndrainedMeta != s.wantUndrai {
			t.Fatalf("%s: mode %s undrained %v, want %s %v (stats %+v)", s.name, st.Mode, st.UndrainedMeta,
				s.wantMode, s.wantUndrai, st)
		}
	}
	st := f.Stats()
	got := []int64{st.EnteredData, st.EnteredMetadata, st.EnteredBitmap}
	if diff := cmp.Diff([]int64{2, 2, 1}, got); diff != "" {
		t.Errorf("mode entries (data, metadata, bitmap) -want +got:\n%s", diff)
	}
	if st.StopReason != "" {
		t.Errorf("stop reason after reset = %q", st.StopReason)
	}
}

func TestFilterBookmarkRefusal(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(f *Filter)
		wantErr error
	}{
		{"data mode", func(f *Filter) { f.Capture(0, 0, block(1)) }, nil},
		{"metadata mode", func(f *Filter) {
			for i := 0; i < 10; i++ {
				f.Capture(0, 0, block(1))
			}
		}, ErrNotConsistent},
		{"bitmap mode", func(f *Filter) {
			for i := 0; i < 40; i++ {
				f.Capture(0, 0, block(1))
			}
		}, ErrNotConsistent},
		{"closed", func(f *Filter) { f.CrashClose() }, ErrFilterClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openTestFilter(t, t.TempDir(), FilterOptions{DataBudget: 16 << 10, MetaBudget: 20})
			defer f.Close()
			tt.prepare(f)
			seq, err := f.InsertBookmark(proto.Crash, "b", 1)
			if !errors.Is(err, tt.wantErr) || (err == nil && seq == 0) {
				t.Fatalf("InsertBookmark = %d, %v; want error %v", seq, err, tt.wantErr)
			}
		})
	}
}

// TestFilterRead: Read returns at most maxBytes of data per call (at least
// one record), and the next call continues where it stopped.
func TestFilterRead(t *testing.T) {
	f := openTestFilter(t, t.TempDir(), FilterOptions{})
	defer f.Close()
	for i := 0; i < 5; i++ {
		f.Capture(0, int64(i)*4096, block(byte(i)))
	}
	big := make([]byte, 12288)
	f.Capture(1, 0, big)
	if _, err := f.InsertBookmark(proto.App, "vm01-a-7", 42); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	var got [][]uint64
	for from := uint64(1); ; {
		recs, err := f.Read(from, 8192)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		var seqs []uint64
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		got = append(got, seqs)
		from = recs[len(recs)-1].Seq + 1
	}
	want := [][]uint64{{1, 2}, {3, 4}, {5}, {6, 7}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("batches -want +got:\n%s", diff)
	}
}

// TestFilterDamagedLog: a log damaged in the middle stops the filter until
// Reset; CrashClose keeps what Capture acknowledged.
func TestFilterDamagedLog(t *testing.T) {
	dir := t.TempDir()
	f := openTestFilter(t, dir, FilterOptions{})
	for i := 0; i < 4; i++ {
		f.Capture(0, int64(i)*4096, block(byte(i+1)))
	}
	f.CrashClose()
	if seq := f.Capture(0, 0, block(9)); seq != 0 {
		t.Fatalf("Capture after CrashClose = %d", seq)
	}
	f2, rec, err := OpenFilter(dir, "vm01", FilterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Records != 4 || rec.ResyncRequired {
		t.Fatalf("after crash: %+v, want 4 records recovered", rec)
	}
	f2.Close()

	corruptLog(t, dir)
	f3, rec, err := OpenFilter(dir, "vm01", FilterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if !rec.ResyncRequired || f3.Mode() != ModeBitmap || f3.StopReason() == "" {
		t.Fatalf("damaged log: recovery %+v, mode %s, reason %q", rec, f3.Mode(), f3.StopReason())
	}
	if seq := f3.Capture(0, 0, block(1)); seq != 0 {
		t.Fatalf("Capture on a damaged log = %d", seq)
	}
	next, err := f3.Reset()
	if err != nil {
		t.Fatal(err)
	}
	if seq := f3.Capture(0, 0, block(1)); seq != next {
		t.Fatalf("Capture after Reset = %d, want %d", seq, next)
	}
}

// corruptLog flips a byte in the body of the first record of the first
// segment in dir, so the records after it make it mid-log damage.
func corruptLog(t testing.TB, dir string) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.hrl"))
	if len(segs) == 0 {
		t.Fatal("no segment to corrupt")
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 100 {
		t.Fatalf("segment of %d bytes", len(b))
	}
	b[40] ^= 0xff
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCapture4K is the cost the filter adds to a 4 KiB guest write in
// data mode: append, flush to the page cache, budget check. The log is
// synced and trimmed every 4096 writes, as the agent would once items are
// acknowledged. Target: under 5 µs and 0 allocations.
func BenchmarkCapture4K(b *testing.B) {
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "agent-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	f := openTestFilter(b, dir, FilterOptions{})
	defer f.Close()
	data := block(7)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 1; b.Loop(); i++ {
		seq := f.Capture(i&1, int64(i%1024)*4096, data)
		if seq == 0 {
			b.Fatal("write not logged")
		}
		if i%4096 == 0 {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Trim(seq); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkWriteSyscall4K is BenchmarkCapture4K's floor, reported in the
// same run: the bare write(2) of 4 KiB that Capture's Flush costs, on the
// same kind of file, restarted every 4096 writes as the trimmed log is.
func BenchmarkWriteSyscall4K(b *testing.B) {
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "agent-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	data := block(7)
	var f *os.File
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		if i%4096 == 0 {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
			var err error
			if f, err = os.Create(filepath.Join(dir, "seg")); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
}

// TestFilterConcurrentUse: the guest's write path and the agent use the
// filter from different threads (run with -race). Every write captured is
// read back once, in order, whatever the interleaving with drains, trims
// and bookmarks.
func TestFilterConcurrentUse(t *testing.T) {
	f := openTestFilter(t, t.TempDir(), FilterOptions{})
	defer f.Close()
	const writes = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		data := block(1)
		for i := 0; i < writes; i++ {
			f.Capture(0, int64(i%64)*4096, data)
		}
	}()
	var got, bookmarks int
	next := uint64(1)
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		if _, err := f.InsertBookmark(proto.Crash, "b", 0); err == nil {
			bookmarks++
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		for {
			recs, err := f.Read(next, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Seq != next {
					t.Fatalf("record %d where %d was expected", r.Seq, next)
				}
				next++
				if r.Type == hrl.TypeWrite {
					got++
				}
			}
			f.MarkDrained(next - 1)
			if err := f.Trim(next - 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got != writes || bookmarks == 0 {
		t.Fatalf("read %d writes and %d bookmarks, want %d writes and some bookmarks", got, bookmarks, writes)
	}
}
