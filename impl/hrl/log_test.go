package hrl

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/proto"
)

func TestAppendReadBack(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 3000)
	many := func(n int) []op {
		var ops []op
		for i := range n {
			ops = append(ops, write(uint16(i%3), int64(i)*4096, strings.Repeat(string(rune('a'+i%26)), 100+i)))
			if i%7 == 0 {
				ops = append(ops, bookmark(proto.Crash, "tag", int64(i)))
			}
		}
		return ops
	}
	tests := []struct {
		name string
		opts Options
		ops  []op
	}{
		{"one write", Options{}, []op{write(0, 512, "hello")}},
		{"every type", Options{}, []op{
			write(1, 0, "data"),
			meta(2, 8192, 4096),
			bookmark(proto.Crash, "cc-1", 1_700_000_000_000_000_000),
			bookmark(proto.App, "app-1", -5),
			revoke("cc-1"),
			bitmap(3, "memory budget exceeded"),
			write(0, 0, ""),
		}},
		{"record larger than the buffer", Options{BufferBytes: 256}, []op{
			write(0, 0, "small"), {typ: TypeWrite, disk: 1, off: 4096, data: big}, bookmark(proto.App, strings.Repeat("x", 600), 9), write(0, 1, "after"),
		}},
		{"many segments", Options{SegmentBytes: 1000, BufferBytes: 300}, many(60)},
		{"sync every append", Options{SyncEveryAppend: true, SegmentBytes: 2000}, many(20)},
		{"maximal write", Options{}, []op{{typ: TypeWrite, data: make([]byte, MaxDataBytes)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, rec := mustOpen(t, dir, tc.opts)
			if diff := cmp.Diff(Recovery{}, rec); diff != "" {
				t.Errorf("fresh log recovery (-want +got):\n%s", diff)
			}
			want := appendAll(t, l, tc.ops)
			for i, r := range want {
				if r.Seq != uint64(i+1) {
					t.Fatalf("record %d got seq %d", i, r.Seq)
				}
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := readAll(t, l, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, rec = mustOpen(t, dir, tc.opts)
			defer l.Close()
			wantRec := Recovery{Records: uint64(len(want)), LastSeq: uint64(len(want))}
			if diff := cmp.Diff(wantRec, rec); diff != "" {
				t.Errorf("reopen recovery (-want +got):\n%s", diff)
			}
			got, err = readAll(t, l, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
				t.Errorf("read back after reopen (-want +got):\n%s", diff)
			}
			seq, err := l.AppendMeta(0, 0, 1)
			if err != nil || seq != uint64(len(want)+1) {
				t.Errorf("append after reopen = %d, %v; want %d", seq, err, len(want)+1)
			}
		})
	}
}

// TestDurability checks that a Reader yields exactly the records made
// durable, and that Close makes the rest durable.
func TestDurability(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, Options{})
	appendAll(t, l, []op{write(0, 0, "a"), write(0, 1, "b")})
	got, err := readAll(t, l, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("before Sync read %d records, err %v; want none", len(got), err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, []op{write(0, 2, "c")})
	if got, _ := readAll(t, l, 0); len(got) != 2 {
		t.Errorf("after Sync read %d records, want 2", len(got))
	}
	if s := l.Stats(); s.DurableSeq != 2 || s.LastSeq != 3 {
		t.Errorf("stats %+v, want durable 2 last 3", s)
	}
	l.crash()
	l, rec := mustOpen(t, dir, Options{})
	defer l.Close()
	if rec.Records != 2 {
		t.Errorf("after crash recovered %d records, want the 2 synced", rec.Records)
	}
}

func TestTrim(t *testing.T) {
	const n = 40
	var ops []op
	for i := range n {
		ops = append(ops, write(0, int64(i), strings.Repeat("d", 50)))
	}
	tests := []struct {
		name     string
		trims    []uint64
		wantSegs int // segment files after the trims
	}{
		{"nothing", nil, 5},
		{"inside the first segment", []uint64{3}, 5},
		{"segment boundary", []uint64{8}, 4},
		{"several segments", []uint64{5, 20}, 3},
		{"lower trim is a no-op", []uint64{20, 10}, 3},
		{"everything", []uint64{n}, 1},
		{"everything in steps", []uint64{1, 17, 39, n}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// 82-byte records, 8 to a 600-byte segment.
			opts := Options{SegmentBytes: 600, BufferBytes: 200}
			l, _ := mustOpen(t, dir, opts)
			want := appendAll(t, l, ops)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			var trim uint64
			for _, tr := range tc.trims {
				if err := l.Trim(tr); err != nil {
					t.Fatalf("Trim(%d): %v", tr, err)
				}
				trim = max(trim, tr)
			}
			want = want[trim:]
			check := func(l *Log, when string) {
				t.Helper()
				got, err := readAll(t, l, 0)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
					t.Errorf("%s: records (-want +got):\n%s", when, diff)
				}
				wantStats := Stats{FirstSeq: trim + 1, LastSeq: n, DurableSeq: n, TrimSeq: trim,
					PendingRecords: n - trim, PendingBytes: int64(n-trim) * 82, Segments: tc.wantSegs}
				if diff := cmp.Diff(wantStats, l.Stats()); diff != "" {
					t.Errorf("%s: stats (-want +got):\n%s", when, diff)
				}
				if got := len(segmentFiles(t, dir)); got != tc.wantSegs {
					t.Errorf("%s: %d segment files, want %d", when, got, tc.wantSegs)
				}
			}
			check(l, "after trim")
			l.Close()
			l, rec := mustOpen(t, dir, opts)
			defer l.Close()
			if rec.TrimSeq != trim || rec.Records != n-trim {
				t.Errorf("reopen recovery %+v, want trim %d, %d records", rec, trim, n-trim)
			}
			check(l, "after reopen")
			seq, err := l.AppendWrite(0, 0, []byte("x"))
			if err != nil || seq != n+1 {
				t.Errorf("append after trim = %d, %v; want %d", seq, err, n+1)
			}
		})
	}
}

func TestReaderFrom(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, Options{SegmentBytes: 300, BufferBytes: 100})
	defer l.Close()
	var ops []op
	for i := range 30 {
		ops = append(ops, write(1, int64(i), "0123456789"))
	}
	want := appendAll(t, l, ops)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(4); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from      uint64
		wantFirst int // index into want
	}{{0, 4}, {1, 4}, {5, 4}, {6, 5}, {17, 16}, {30, 29}, {31, 30}, {100, 30}}
	for _, tc := range tests {
		got, err := readAll(t, l, tc.from)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want[tc.wantFirst:], got, cmpRecords...); diff != "" {
			t.Errorf("from %d (-want +got):\n%s", tc.from, diff)
		}
	}
}

// TestReaderFollowsTrimAndAppends drives one Reader the way the agent does:
// read a batch, trim it, append more, read on.
func TestReaderFollowsTrimAndAppends(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, Options{SegmentBytes: 200, BufferBytes: 64})
	defer l.Close()
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var seqs []uint64
	for round := range 10 {
		for i := range 5 {
			if _, err := l.AppendWrite(0, int64(round*5+i), []byte("abcdefgh")); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		var last uint64
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, rec.Seq)
			last = rec.Seq
		}
		if round%3 != 2 { // leave some rounds untrimmed
			if err := l.Trim(last); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want []uint64
	for i := range 50 {
		want = append(want, uint64(i+1))
	}
	if diff := cmp.Diff(want, seqs); diff != "" {
		t.Errorf("seqs read (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		do   func(l *Log) error
		want error
	}{
		{"write too large", func(l *Log) error { _, err := l.AppendWrite(0, 0, make([]byte, MaxDataBytes+1)); return err }, ErrTooLarge},
		{"meta too large", func(l *Log) error { _, err := l.AppendMeta(0, 0, MaxDataBytes+1); return err }, ErrTooLarge},
		{"bookmark id too large", func(l *Log) error {
			_, err := l.AppendBookmark(proto.Crash, strings.Repeat("i", MaxDataBytes+1), 0)
			return err
		}, ErrTooLarge},
		{"note too large", func(l *Log) error { _, err := l.AppendBitmap(0, strings.Repeat("n", MaxDataBytes+1)); return err }, ErrTooLarge},
		{"revoke id too large", func(l *Log) error { _, err := l.AppendRevoke(strings.Repeat("n", MaxDataBytes+1)); return err }, ErrTooLarge},
		{"negative offset", func(l *Log) error { _, err := l.AppendWrite(0, -1, nil); return err }, ErrInvalid},
		{"negative meta offset", func(l *Log) error { _, err := l.AppendMeta(0, -1, 1); return err }, ErrInvalid},
		{"bad bookmark kind", func(l *Log) error { _, err := l.AppendBookmark(7, "x", 0); return err }, ErrInvalid},
		{"trim beyond durable", func(l *Log) error {
			if _, err := l.AppendWrite(0, 0, nil); err != nil {
				return err
			}
			return l.Trim(1)
		}, ErrInvalid},
		{"append after close", func(l *Log) error { l.Close(); _, err := l.AppendWrite(0, 0, nil); return err }, ErrClosed},
		{"sync after close", func(l *Log) error { l.Close(); return l.Sync() }, ErrClosed},
		{"trim after close", func(l *Log) error { l.Close(); return l.Trim(1) }, ErrClosed},
		{"close twice", func(l *Log) error { l.Close(); return l.Close() }, ErrClosed},
		{"reader after close", func(l *Log) error { l.Close(); _, err := l.NewReader(0); return err }, ErrClosed},
		{"reset after close", func(l *Log) error { l.Close(); return l.Reset() }, ErrClosed},
		{"reader next after close", func(l *Log) error {
			r, err := l.NewReader(0)
			if err != nil {
				return err
			}
			l.Close()
			_, err = r.Next()
			return err
		}, ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := mustOpen(t, t.TempDir(), Options{})
			defer l.Close()
			err := tc.do(l)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "hrl: ") {
				t.Errorf("message %q lacks the hrl: prefix", err)
			}
		})
	}
}

func TestOpenBadName(t *testing.T) {
	for _, name := range []string{"", "a/b", `a\b`, ".hidden"} {
		if _, _, err := Open(t.TempDir(), name, Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", name, err)
		}
	}
}

// TestLogsShareDirectory checks that two logs in one directory keep to
// their own files.
func TestLogsShareDirectory(t *testing.T) {
	dir := t.TempDir()
	a, _, err := Open(dir, "vm", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := Open(dir, "vm2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, a, []op{write(0, 0, "a")})
	want := appendAll(t, b, []op{write(0, 0, "b1"), write(0, 1, "b2")})
	a.Close()
	b.Close()
	b, rec, err := Open(dir, "vm2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if rec.Records != 2 {
		t.Errorf("vm2 recovered %d records, want 2", rec.Records)
	}
	got, err := readAll(t, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
		t.Errorf("vm2 records (-want +got):\n%s", diff)
	}
}

func TestRecordTypeStrings(t *testing.T) {
	got := []string{TypeWrite.String(), TypeWriteMeta.String(), TypeBookmark.String(), TypeBitmap.String(),
		TypeRevoke.String(), RecordType(9).String()}
	want := []string{"write", "write-meta", "bookmark", "dirty-bitmap", "revoke", "type(9)"}
	if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestAppendRecordMatchesLog checks that AppendRecord produces the bytes the
// log writes, so tools built on it produce logs that Open accepts.
func TestAppendRecordMatchesLog(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, Options{})
	want := appendAll(t, l, []op{write(1, 4096, "abc"), meta(2, 0, 512), bookmark(proto.App, "t1", 42), revoke("t1"), bitmap(1, "why")})
	l.Close()
	var enc []byte
	for _, r := range want {
		enc = AppendRecord(enc, r)
	}
	got, err := os.ReadFile(segmentFiles(t, dir)[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, got) {
		t.Errorf("AppendRecord bytes differ from the log's:\n%x\n%x", enc, got)
	}
}
