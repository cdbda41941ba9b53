package hrl

import (
	"io"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/proto"
)

// logModel is what the log must hold: records known durable (and not
// trimmed), then records appended but not yet durable, which a crash may
// take back (a prefix of them may survive).
type logModel struct {
	durable, pending []Record
	trim, last       uint64
}

// absorb moves the records the log now reports durable from pending to
// durable.
func (m *logModel) absorb(durableSeq uint64) {
	for len(m.pending) > 0 && m.pending[0].Seq <= durableSeq {
		m.durable = append(m.durable, m.pending[0])
		m.pending = m.pending[1:]
	}
}

func drawOp(t *rapid.T) op {
	data := func(label string) string {
		return string(rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, label))
	}
	switch rapid.IntRange(0, 9).Draw(t, "type") {
	case 0:
		return meta(rapid.Uint16Range(0, 3).Draw(t, "disk"), rapid.Int64Range(0, 1<<40).Draw(t, "off"), rapid.Uint32Range(0, 1<<20).Draw(t, "len"))
	case 1:
		return bookmark(rapid.SampledFrom([]proto.Consistency{proto.Crash, proto.App}).Draw(t, "kind"), data("id"), rapid.Int64().Draw(t, "nano"))
	case 2:
		return revoke(data("id"))
	case 3:
		return bitmap(rapid.Uint16Range(0, 3).Draw(t, "disk"), data("note"))
	default:
		return op{typ: TypeWrite, disk: rapid.Uint16Range(0, 3).Draw(t, "disk"), off: rapid.Int64Range(0, 1<<40).Draw(t, "off"),
			data: rapid.SliceOfN(rapid.Byte(), 0, 600).Draw(t, "data")}
	}
}

// TestPropertyDurableRecordsSurvive runs random appends, syncs, trims,
// reads, clean reopens and crashes (buffer lost, the last segment cut
// anywhere after its durable part) against a model: every record made
// durable and not trimmed reads back exactly, in order, numbered without
// gaps, and no record that was not appended ever appears.
func TestPropertyDurableRecordsSurvive(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dir, err := os.MkdirTemp(fastTempDirRoot(), "hrl-rapid-")
		if err != nil {
			rt.Fatal(err)
		}
		defer os.RemoveAll(dir)
		opts := Options{
			SegmentBytes:    rapid.Int64Range(64, 4096).Draw(rt, "segmentBytes"),
			BufferBytes:     rapid.IntRange(16, 2048).Draw(rt, "bufferBytes"),
			SyncEveryAppend: rapid.IntRange(0, 9).Draw(rt, "syncEvery") == 0,
		}
		open := func() *Log {
			l, rec, err := Open(dir, "vm", opts)
			if err != nil {
				rt.Fatalf("Open: %v", err)
			}
			if rec.ResyncRequired {
				rt.Fatalf("Open after a crash the log must survive: %s", rec.Reason)
			}
			return l
		}
		l := open()
		defer func() { l.Close() }()
		var m logModel

		// A long-lived reader, as the agent's drainer keeps one: it must
		// go on from where it was, past trims and segment switches.
		var rd *Reader
		var rdLast uint64 // the last seq rd yielded
		newReader := func() {
			var err error
			if rd, err = l.NewReader(0); err != nil {
				rt.Fatalf("NewReader: %v", err)
			}
			rdLast = 0
		}
		newReader()
		drain := func(n int) {
			for range n {
				got, err := rd.Next()
				if err == io.EOF {
					return
				}
				if err != nil {
					rt.Fatalf("reader: %v", err)
				}
				want := max(rdLast, m.trim) + 1
				i := slices.IndexFunc(m.durable, func(r Record) bool { return r.Seq == want })
				if i < 0 {
					rt.Fatalf("reader yielded seq %d, want %d which the model lacks", got.Seq, want)
				}
				if diff := cmp.Diff(m.durable[i], got, cmpRecords...); diff != "" {
					rt.Fatalf("reader record (-want +got):\n%s", diff)
				}
				rdLast = got.Seq
			}
		}

		// check reads everything from seq from on and compares with the
		// model's durable records.
		check := func(from uint64) {
			got, err := readAll(rt, l, from)
			if err != nil {
				rt.Fatalf("read: %v", err)
			}
			var want []Record
			for _, r := range m.durable {
				if r.Seq >= from {
					want = append(want, r)
				}
			}
			if diff := cmp.Diff(want, got, cmpRecords...); diff != "" {
				rt.Fatalf("records from %d (-want +got):\n%s", from, diff)
			}
			s := l.Stats()
			wantStats := Stats{FirstSeq: m.trim + 1, LastSeq: max(m.last, m.trim), DurableSeq: s.DurableSeq, TrimSeq: m.trim,
				PendingRecords: max(m.last, m.trim) - m.trim, PendingBytes: s.PendingBytes, Segments: s.Segments}
			if diff := cmp.Diff(wantStats, s); diff != "" {
				rt.Fatalf("stats (-want +got):\n%s", diff)
			}
			var bytes int64
			for _, r := range append(append([]Record(nil), m.durable...), m.pending...) {
				bytes += int64(len(AppendRecord(nil, r)))
			}
			if s.PendingBytes != bytes {
				rt.Fatalf("PendingBytes %d, model %d", s.PendingBytes, bytes)
			}
		}

		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			switch action := rapid.IntRange(0, 19).Draw(rt, "action"); {
			case action < 10:
				o := drawOp(rt)
				seq, err := o.apply(l)
				if err != nil {
					rt.Fatalf("append: %v", err)
				}
				if want := max(m.last, m.trim) + 1; seq != want {
					rt.Fatalf("append got seq %d, want %d", seq, want)
				}
				m.last = seq
				m.pending = append(m.pending, o.record(seq))
			case action < 12:
				if err := l.Sync(); err != nil {
					rt.Fatalf("Sync: %v", err)
				}
				if l.Stats().DurableSeq != max(m.last, m.trim) {
					rt.Fatalf("after Sync durable %d, last %d", l.Stats().DurableSeq, m.last)
				}
			case action < 14:
				durable := l.Stats().DurableSeq
				if durable <= m.trim {
					continue
				}
				upto := rapid.Uint64Range(m.trim, durable).Draw(rt, "trim")
				if err := l.Trim(upto); err != nil {
					rt.Fatalf("Trim(%d): %v", upto, err)
				}
				m.trim = max(m.trim, upto)
				for len(m.durable) > 0 && m.durable[0].Seq <= m.trim {
					m.durable = m.durable[1:]
				}
			case action < 15:
				check(rapid.Uint64Range(0, m.last+2).Draw(rt, "from"))
			case action < 16:
				drain(rapid.IntRange(1, 20).Draw(rt, "drain"))
			case action < 18:
				if err := l.Close(); err != nil {
					rt.Fatalf("Close: %v", err)
				}
				m.durable, m.pending = append(m.durable, m.pending...), nil
				l = open()
				newReader()
			default:
				path, synced := l.active()
				l.crash()
				info, err := os.Stat(path)
				if err != nil {
					rt.Fatal(err)
				}
				if rapid.Bool().Draw(rt, "cut") {
					cut := rapid.Int64Range(synced, info.Size()).Draw(rt, "cutAt")
					if err := os.Truncate(path, cut); err != nil {
						rt.Fatal(err)
					}
				}
				l = open()
				newReader()
				got, err := readAll(rt, l, 0)
				if err != nil {
					rt.Fatalf("read after crash: %v", err)
				}
				if len(got) < len(m.durable) {
					rt.Fatalf("after crash %d records, %d were durable", len(got), len(m.durable))
				}
				survivors := got[len(m.durable):]
				if len(survivors) > len(m.pending) {
					rt.Fatalf("after crash %d records, only %d were appended", len(got), len(m.durable)+len(m.pending))
				}
				if diff := cmp.Diff(append(append([]Record(nil), m.durable...), m.pending[:len(survivors)]...), got, cmpRecords...); diff != "" {
					rt.Fatalf("after crash (-want +got):\n%s", diff)
				}
				m.durable, m.pending = got, nil
				m.last = m.trim
				if len(got) > 0 {
					m.last = got[len(got)-1].Seq
				}
			}
			m.absorb(l.Stats().DurableSeq)
		}
		check(0)
		drain(1 << 30)
		if len(m.durable) > 0 && rdLast != lastDurable(m) {
			rt.Fatalf("reader stopped at %d, durable records end at %d", rdLast, lastDurable(m))
		}
	})
}

func lastDurable(m logModel) uint64 {
	if len(m.durable) == 0 {
		return m.trim
	}
	return m.durable[len(m.durable)-1].Seq
}

// fastTempDirRoot is where property tests make their directories: tmpfs if
// the machine has one (each Open fsyncs), else the default.
func fastTempDirRoot() string {
	if info, err := os.Stat("/dev/shm"); err == nil && info.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// TestModelCatchesLoss is the negative control for the property test's
// crash check: a log that loses a durable record must fail it.
func TestModelCatchesLoss(t *testing.T) {
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, Options{})
	want := appendAll(t, l, []op{write(0, 0, "a"), write(0, 1, "b"), write(0, 2, "c")})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	path, _ := l.active()
	l.crash()
	// Cut into the durable part: what a buggy log (or disk) would do.
	info, _ := os.Stat(path)
	if err := os.Truncate(path, info.Size()-3); err != nil {
		t.Fatal(err)
	}
	l, _ = mustOpen(t, dir, Options{})
	defer l.Close()
	got, err := readAll(t, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpRecords...); diff == "" {
		t.Fatal("losing a durable record went unnoticed")
	}
}
