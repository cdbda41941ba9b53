package hrl

import (
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// extent is where one record lies on disk.
type extent struct {
	path       string
	start, end int64
}

// buildLog writes ops to a fresh log, closes it, and returns the directory,
// the records, and where each record lies.
func buildLog(t *testing.T, opts Options, ops []op) (string, []Record, []extent) {
	t.Helper()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, opts)
	recs := appendAll(t, l, ops)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var exts []extent
	for _, p := range segmentFiles(t, dir) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < int64(len(b)); {
			n := int64(headerSize(b[off:]))
			exts = append(exts, extent{p, off, off + n})
			off += n
		}
	}
	if len(exts) != len(recs) {
		t.Fatalf("found %d records on disk, appended %d", len(exts), len(recs))
	}
	return dir, recs, exts
}

// moved is p's path in another copy of its directory.
func moved(p, dir string) string { return filepath.Join(dir, filepath.Base(p)) }

func mutate(t *testing.T, path string, f func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func someOps(n int) []op {
	var ops []op
	for i := range n {
		switch i % 4 {
		case 0, 1:
			ops = append(ops, write(uint16(i%2), int64(i)*512, fmt.Sprintf("payload-%03d-%s", i, strings.Repeat("z", i))))
		case 2:
			ops = append(ops, meta(1, int64(i)*512, 4096))
		case 3:
			ops = append(ops, bookmark(proto.Crash, fmt.Sprintf("tag-%d", i), int64(i)))
		}
	}
	return ops
}

// checkRecovered asserts that the log in dir opens without resync and holds
// exactly want, and that numbering goes on after it.
func checkRecovered(t *testing.T, dir string, opts Options, want []Record, wantRec Recovery) {
	t.Helper()
	l, rec := mustOpen(t, dir, opts)
	defer l.Close()
	if diff := cmp.Diff(wantRec, rec); diff != "" {
		t.Fatalf("recovery (-want +got):\n%s", diff)
	}
	got, err := readAll(t, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
		t.Fatalf("records (-want +got):\n%s", diff)
	}
	seq, err := l.AppendWrite(0, 0, []byte("next"))
	if err != nil || seq != wantRec.LastSeq+1 {
		t.Fatalf("append after recovery = %d, %v; want %d", seq, err, wantRec.LastSeq+1)
	}
}

// TestTornTail cuts the last record at every byte, and damages every byte
// of it: each is a torn tail, cut off without a resync.
func TestTornTail(t *testing.T) {
	layouts := []struct {
		name string
		opts Options
		n    int
	}{
		{"one segment", Options{}, 9},
		{"last of several segments", Options{SegmentBytes: 200}, 9},
		{"first record of a new segment", Options{SegmentBytes: 200}, 0}, // n set below
	}
	for _, lay := range layouts {
		t.Run(lay.name, func(t *testing.T) {
			n := lay.n
			if n == 0 {
				// Find a count whose last record opens a segment.
				for n = 2; ; n++ {
					_, _, exts := buildLog(t, lay.opts, someOps(n))
					if exts[n-1].start == 0 {
						break
					}
				}
			}
			src, recs, exts := buildLog(t, lay.opts, someOps(n))
			last := exts[n-1]
			if lay.name != "one segment" && len(segmentFiles(t, src)) < 2 {
				t.Fatal("layout has a single segment")
			}
			wantRec := Recovery{Records: uint64(n - 1), LastSeq: uint64(n - 1)}
			for cut := last.start; cut < last.end; cut++ {
				dir := copyDir(t, src)
				if err := os.Truncate(moved(last.path, dir), cut); err != nil {
					t.Fatal(err)
				}
				wantRec.TornBytes = cut - last.start
				t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
					checkRecovered(t, dir, lay.opts, recs[:n-1], wantRec)
				})
			}
			wantRec.TornBytes = last.end - last.start
			for at := last.start; at < last.end; at++ {
				dir := copyDir(t, src)
				mutate(t, moved(last.path, dir), func(b []byte) []byte { b[at] ^= 0x40; return b })
				t.Run(fmt.Sprintf("flip at %d", at), func(t *testing.T) {
					checkRecovered(t, dir, lay.opts, recs[:n-1], wantRec)
				})
			}
			// Garbage appended after the last record is a torn tail too.
			dir := copyDir(t, src)
			mutate(t, moved(last.path, dir), func(b []byte) []byte { return append(b, 1, 2, 3, 0, 0, 0, 0, 9) })
			checkRecovered(t, dir, lay.opts, recs, Recovery{Records: uint64(n), LastSeq: uint64(n), TornBytes: 8})
		})
	}
}

// resyncCase damages a log built by buildLog.
type resyncCase struct {
	name   string
	damage func(t *testing.T, dir string, exts []extent)
	reason string // a substring the reason must contain
}

func TestMidLogCorruptionRequiresResync(t *testing.T) {
	opts := Options{SegmentBytes: 300}
	const n = 24
	flip := func(rec int, delta int64) func(*testing.T, string, []extent) {
		return func(t *testing.T, dir string, exts []extent) {
			e := exts[rec]
			mutate(t, moved(e.path, dir), func(b []byte) []byte { b[e.start+delta] ^= 0x01; return b })
		}
	}
	removeSeg := func(i int) func(*testing.T, string, []extent) {
		return func(t *testing.T, dir string, _ []extent) {
			if err := os.Remove(segmentFiles(t, dir)[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []resyncCase{
		{"delete a middle segment", removeSeg(1), "a segment is missing"},
		{"delete the first segment", removeSeg(0), "are missing"},
		{"cut the end of a sealed segment", func(t *testing.T, dir string, exts []extent) {
			p := segmentFiles(t, dir)[0]
			info, _ := os.Stat(p)
			if err := os.Truncate(p, info.Size()-3); err != nil {
				t.Fatal(err)
			}
		}, "short record"},
		{"damage the last record of a sealed segment", func(t *testing.T, dir string, exts []extent) {
			for i := range exts {
				if i+1 < len(exts) && exts[i+1].start == 0 {
					flip(i, 40)(t, dir, exts)
					return
				}
			}
			t.Fatal("no sealed segment")
		}, "checksum mismatch"},
		{"damage the trim file", func(t *testing.T, dir string, _ []extent) {
			if err := os.WriteFile(filepath.Join(dir, "vm.trim"), []byte("HRLTgarbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "trim file"},
		{"sequence gap at the tail", func(t *testing.T, dir string, exts []extent) {
			e := exts[n-1]
			r := someOps(n)[n-1].record(n + 5)
			mutate(t, moved(e.path, dir), func(b []byte) []byte { return AppendRecord(b[:e.start], r) })
		}, "sequence gap"},
		{"duplicate record", func(t *testing.T, dir string, exts []extent) {
			e := exts[n-1]
			mutate(t, moved(e.path, dir), func(b []byte) []byte { return append(b, b[e.start:e.end]...) })
		}, "sequence gap"},
		{"segment name disagrees with its first record", func(t *testing.T, dir string, exts []extent) {
			segs := segmentFiles(t, dir)
			last := segs[len(segs)-1]
			if err := os.Rename(last, filepath.Join(dir, segmentName("vm", 1000))); err != nil {
				t.Fatal(err)
			}
		}, "a segment is missing"},
	}
	// Every byte of a record in the middle of the last segment, and one in
	// the middle of the first.
	src, recs, exts := buildLog(t, opts, someOps(n))
	if len(segmentFiles(t, src)) < 3 {
		t.Fatal("want at least 3 segments")
	}
	mid := n - 2
	if exts[mid].path != exts[n-1].path || exts[mid].start == 0 {
		t.Fatal("record n-1 should be inside the last segment")
	}
	for _, rec := range []int{1, mid} {
		for d := range exts[rec].end - exts[rec].start {
			cases = append(cases, resyncCase{fmt.Sprintf("flip byte %d of record %d", d, rec+1), flip(rec, d),
				fmt.Sprintf("%s at byte %d", filepath.Base(exts[rec].path), exts[rec].start)})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, src)
			tc.damage(t, dir, exts)
			l, rec := mustOpen(t, dir, opts)
			defer l.Close()
			if !rec.ResyncRequired || !strings.Contains(rec.Reason, tc.reason) {
				t.Fatalf("recovery %+v, want a resync with a reason containing %q", rec, tc.reason)
			}
			checkResyncState(t, l, rec.Reason)
			checkReset(t, l, dir, opts, n)
		})
	}
	_ = recs
}

// checkResyncState asserts that a log requiring a resync refuses everything.
func checkResyncState(t *testing.T, l *Log, reason string) {
	t.Helper()
	if err := l.ResyncRequired(); err == nil || err.Error() != reason {
		t.Errorf("ResyncRequired() = %v, want %q", err, reason)
	}
	calls := map[string]error{}
	_, calls["AppendWrite"] = l.AppendWrite(0, 0, []byte("x"))
	_, calls["AppendMeta"] = l.AppendMeta(0, 0, 1)
	_, calls["AppendBookmark"] = l.AppendBookmark(proto.Crash, "t", 0)
	_, calls["AppendRevoke"] = l.AppendRevoke("t")
	_, calls["AppendBitmap"] = l.AppendBitmap(0, "t")
	calls["Sync"] = l.Sync()
	calls["Trim"] = l.Trim(1)
	_, calls["NewReader"] = l.NewReader(0)
	for name, err := range calls {
		if !errors.Is(err, ErrResyncRequired) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s in resync state = %v, want ErrResyncRequired and ErrCorrupt", name, err)
		}
	}
	if s := l.Stats(); s.PendingRecords != 0 || s.PendingBytes != 0 {
		t.Errorf("stats in resync state %+v, want nothing pending", s)
	}
}

// checkReset resets l and checks that it is a fresh, working log numbered
// above the old one's n records.
func checkReset(t *testing.T, l *Log, dir string, opts Options, n uint64) {
	t.Helper()
	if err := l.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if err := l.ResyncRequired(); err != nil {
		t.Fatalf("after Reset: %v", err)
	}
	want := appendAll(t, l, []op{write(0, 0, "fresh"), bookmark(proto.App, "after-reset", 7)})
	if want[0].Seq <= n {
		t.Errorf("first seq after Reset %d, want above %d", want[0].Seq, n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, rec := mustOpen(t, dir, opts)
	defer l2.Close()
	if rec.ResyncRequired || rec.Records != 2 || rec.LastSeq != want[1].Seq {
		t.Fatalf("reopen after Reset: %+v", rec)
	}
	got, err := readAll(t, l2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
		t.Errorf("records after Reset (-want +got):\n%s", diff)
	}
	if files := segmentFiles(t, dir); len(files) != 1 {
		t.Errorf("segments after Reset: %v, want one", files)
	}
}

// TestResetHealthyLog: a caller may also reset a healthy log (a bitmap
// record told it to resync); numbering goes on above the old records.
func TestResetHealthyLog(t *testing.T) {
	opts := Options{SegmentBytes: 200}
	dir, _, _ := buildLog(t, opts, someOps(12))
	l, _ := mustOpen(t, dir, opts)
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	checkReset(t, l, dir, opts, 12)
	if _, err := r.Next(); !errors.Is(err, ErrResyncRequired) && !errors.Is(err, ErrClosed) {
		t.Errorf("old reader after Reset = %v, want ErrResyncRequired or ErrClosed", err)
	}
}

func TestReaderAfterResetRefuses(t *testing.T) {
	l, _ := mustOpen(t, t.TempDir(), Options{})
	defer l.Close()
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, ErrResyncRequired) {
		t.Errorf("reader across Reset = %v, want ErrResyncRequired", err)
	}
}

// TestInterruptedOperations replays the file states a crash can leave in the
// middle of Trim and Reset.
func TestInterruptedOperations(t *testing.T) {
	opts := Options{SegmentBytes: 300}
	const n = 24
	src, recs, _ := buildLog(t, opts, someOps(n))
	segs, err := listSegments(fsys.OS{}, src, "vm")
	if err != nil {
		t.Fatal(err)
	}
	writeTrim := func(t *testing.T, dir string, seq uint64) {
		l := &Log{dir: dir, name: "vm", fs: fsys.OS{}}
		if err := l.writeTrim(seq); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("trim persisted, segments not yet removed", func(t *testing.T) {
		dir := copyDir(t, src)
		trim := segs[2].first + 1
		writeTrim(t, dir, trim)
		checkRecovered(t, dir, opts, recs[trim:], Recovery{Records: n - trim, TrimSeq: trim, LastSeq: n})
		if got := len(segmentFiles(t, dir)); got != len(segs)-2 {
			t.Errorf("%d segments left, want %d", got, len(segs)-2)
		}
	})
	t.Run("trim temp file left behind", func(t *testing.T) {
		dir := copyDir(t, src)
		if err := os.WriteFile(filepath.Join(dir, "vm.trim.tmp"), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
		checkRecovered(t, dir, opts, recs, Recovery{Records: n, LastSeq: n})
		if _, err := os.Stat(filepath.Join(dir, "vm.trim.tmp")); !os.IsNotExist(err) {
			t.Errorf("temp trim file still there: %v", err)
		}
	})
	t.Run("trim point past a torn tail", func(t *testing.T) {
		dir := copyDir(t, src)
		writeTrim(t, dir, n)
		last := segmentFiles(t, dir)[len(segs)-1]
		info, _ := os.Stat(last)
		if err := os.Truncate(last, info.Size()-5); err != nil {
			t.Fatal(err)
		}
		l, rec := mustOpen(t, dir, opts)
		defer l.Close()
		if rec.ResyncRequired || rec.Records != 0 || rec.TrimSeq != n || rec.LastSeq != n {
			t.Fatalf("recovery %+v", rec)
		}
		if seq, err := l.AppendWrite(0, 0, nil); err != nil || seq != n+1 {
			t.Errorf("append = %d, %v; want %d", seq, err, n+1)
		}
	})
	t.Run("reset: new segment created, trim not written", func(t *testing.T) {
		dir := copyDir(t, src)
		mutate(t, segmentFiles(t, dir)[1], func(b []byte) []byte { b[10] ^= 1; return b })
		if err := os.WriteFile(filepath.Join(dir, segmentName("vm", 500)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, rec := mustOpen(t, dir, opts)
		if !rec.ResyncRequired {
			t.Errorf("recovery %+v, want resync still required", rec)
		}
	})
	t.Run("reset: trim written, old segments not removed", func(t *testing.T) {
		dir := copyDir(t, src)
		mutate(t, segmentFiles(t, dir)[1], func(b []byte) []byte { b[10] ^= 1; return b })
		if err := os.WriteFile(filepath.Join(dir, segmentName("vm", 500)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		writeTrim(t, dir, 499)
		checkRecovered(t, dir, opts, nil, Recovery{TrimSeq: 499, LastSeq: 499})
	})
}

// TestResetAfter: the log numbers on above the floor it is given (numbers
// its caller gave out for records the log never held), and never below its
// own; the floor survives a reopen.
func TestResetAfter(t *testing.T) {
	tests := []struct {
		name  string
		floor uint64
		want  uint64 // the next record's number
	}{
		{"floor above the log", 100, 101},
		{"floor below the log", 2, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := mustOpen(t, dir, Options{})
			for i := 0; i < 5; i++ {
				if _, err := l.AppendMeta(0, 0, 4096); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.ResetAfter(tt.floor); err != nil {
				t.Fatal(err)
			}
			seq, err := l.AppendMeta(0, 0, 4096)
			if err != nil {
				t.Fatal(err)
			}
			if seq != tt.want {
				t.Fatalf("after ResetAfter(%d): seq %d, want %d", tt.floor, seq, tt.want)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2, rec := mustOpen(t, dir, Options{})
			defer l2.Close()
			if rec.LastSeq != tt.want {
				t.Errorf("reopened: last seq %d, want %d", rec.LastSeq, tt.want)
			}
		})
	}
	l, _ := mustOpen(t, t.TempDir(), Options{})
	l.Close()
	if err := l.ResetAfter(1); !errors.Is(err, ErrClosed) {
		t.Errorf("ResetAfter on a closed log = %v, want ErrClosed", err)
	}
}
