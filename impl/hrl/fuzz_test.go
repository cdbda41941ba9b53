package hrl

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/impl/proto"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed corpus in testdata/fuzz/FuzzOpen")

// fastTempDir is a temporary directory on tmpfs when the machine has one:
// fuzzing and property tests open thousands of logs, and each Open fsyncs.
func fastTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "hrl-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// corpusLog encodes ops as the records 1..n of one segment.
func corpusLog(ops []op) []byte {
	var b []byte
	for i, o := range ops {
		b = AppendRecord(b, o.record(uint64(i+1)))
	}
	return b
}

// seedSegments are the seed corpus: valid logs, a torn one, corrupt ones.
func seedSegments() map[string][]byte {
	valid := corpusLog(someOps(8))
	mid := corpusLog(someOps(4))
	corrupt := bytes.Clone(valid)
	corrupt[len(mid)+headerLen+2] ^= 0x10 // a data byte of record 5 of 8
	gap := corpusLog(someOps(3))
	gap = AppendRecord(gap, write(0, 0, "skipped one").record(5))
	return map[string][]byte{
		"empty":         {},
		"valid-one":     corpusLog([]op{write(0, 4096, "hello")}),
		"valid-mixed":   valid,
		"valid-types":   corpusLog([]op{write(1, 0, "d"), meta(2, 512, 4096), bookmark(proto.App, "app", 1), revoke("app"), bitmap(3, "fallback")}),
		"torn-tail":     valid[:len(valid)-5],
		"torn-header":   valid[:len(mid)+10],
		"garbage-tail":  append(bytes.Clone(valid), 0xde, 0xad, 0xbe, 0xef),
		"corrupt-mid":   corrupt,
		"sequence-gap":  gap,
		"wrong-version": func() []byte { b := corpusLog(someOps(2)); b[16] = 9; return b }(),
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("rewrites testdata only when run with -write-corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seedSegments() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzOpen feeds arbitrary bytes to Open as a log's only segment. Open must
// not panic or fail, and must either recover a prefix of the bytes — every
// record it yields re-encodes to exactly the bytes it came from, so none has
// a wrong CRC, and they are numbered 1, 2, 3, … — with the rest reported as
// torn, or require a resync that Reset clears.
func FuzzOpen(f *testing.F) {
	for _, b := range seedSegments() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := fastTempDir(t)
		seg := segmentName("vm", 1)
		if err := os.WriteFile(filepath.Join(dir, seg), data, 0o644); err != nil {
			t.Fatal(err)
		}
		l, rec, err := Open(dir, "vm", Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer l.Close()
		if rec.ResyncRequired {
			if !strings.Contains(rec.Reason, seg) || !errors.Is(l.ResyncRequired(), ErrResyncRequired) {
				t.Fatalf("resync reason %q does not name %s", rec.Reason, seg)
			}
			if _, err := l.AppendWrite(0, 0, nil); !errors.Is(err, ErrResyncRequired) {
				t.Fatalf("append in resync state: %v", err)
			}
			if err := l.Reset(); err != nil {
				t.Fatalf("Reset: %v", err)
			}
			if seq, err := l.AppendWrite(0, 0, []byte("x")); err != nil || seq < 2 {
				t.Fatalf("append after Reset = %d, %v", seq, err)
			}
			return
		}
		recs, err := readAll(t, l, 0)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		keep := int64(len(data)) - rec.TornBytes
		if rec.TornBytes < 0 || keep < 0 {
			t.Fatalf("torn %d bytes of %d", rec.TornBytes, len(data))
		}
		var enc []byte
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("record %d has seq %d", i, r.Seq)
			}
			enc = AppendRecord(enc, r)
		}
		if !bytes.Equal(enc, data[:keep]) {
			t.Fatalf("recovered records re-encode to %d bytes that differ from the %d-byte prefix kept", len(enc), keep)
		}
		if rec.Records != uint64(len(recs)) || rec.LastSeq != uint64(len(recs)) {
			t.Fatalf("recovery %+v, read %d records", rec, len(recs))
		}
		seq, err := l.AppendWrite(1, 2, []byte("after"))
		if err != nil || seq != uint64(len(recs)+1) {
			t.Fatalf("append after recovery = %d, %v", seq, err)
		}
	})
}

// FuzzDamage builds a valid segment of 1 to 8 write records from payload,
// then either cuts it at pos or flips the byte at pos, and checks that Open
// classifies the damage exactly: a cut anywhere, or a flip in the last
// record, is a torn tail that keeps the records before it; a flip in any
// other record requires a resync. (A payload that itself holds a valid
// record can make a torn tail look like corruption; the log then errs
// towards a resync, which the check allows when the reason says so.)
func FuzzDamage(f *testing.F) {
	f.Add([]byte("hello, world: a payload"), uint8(3), uint32(40), true)
	f.Add([]byte("hello, world: a payload"), uint8(3), uint32(40), false)
	f.Add(bytes.Repeat([]byte{0}, 200), uint8(7), uint32(1000), false)
	f.Fuzz(func(t *testing.T, payload []byte, nrec uint8, pos uint32, cut bool) {
		k := 1 + int(nrec%8)
		var seg []byte
		var starts []int
		for i := range k {
			lo, hi := len(payload)*i/k, len(payload)*(i+1)/k
			starts = append(starts, len(seg))
			seg = AppendRecord(seg, Record{Seq: uint64(i + 1), Type: TypeWrite, Disk: uint16(i), Off: int64(i) * 512, Data: payload[lo:hi]})
		}
		p := int(pos % uint32(len(seg)))
		j := 0 // the record holding byte p
		for i, s := range starts {
			if s <= p {
				j = i
			}
		}
		wantRecords, torn := uint64(k-1), true
		if cut {
			wantRecords = uint64(j)
			seg = seg[:p]
		} else {
			seg[p] ^= 0x80
			torn = j == k-1
		}
		dir := fastTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, segmentName("vm", 1)), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		l, rec, err := Open(dir, "vm", Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		switch {
		case !torn && !rec.ResyncRequired:
			t.Fatalf("flip in record %d of %d: recovery %+v, want a resync", j+1, k, rec)
		case torn && rec.ResyncRequired && !strings.Contains(rec.Reason, "yet a valid record"):
			t.Fatalf("torn tail at record %d of %d: unexpected resync %q", j+1, k, rec.Reason)
		case torn && !rec.ResyncRequired && (rec.Records != wantRecords || rec.TornBytes != int64(len(seg)-starts[wantRecords])):
			t.Fatalf("torn tail at record %d of %d: recovery %+v, want %d records", j+1, k, rec, wantRecords)
		}
	})
}
