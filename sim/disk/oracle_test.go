package disk

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// recorder keeps every write with its data, so tests can build the image
// after any prefix (or any reordering) of the history.
type recorder struct {
	initial [][]byte
	writes  []rec
}

type rec struct {
	disk int
	off  int64
	data []byte
}

func (r *recorder) image(order []int) []io.ReaderAt {
	imgs := make([][]byte, len(r.initial))
	for i, b := range r.initial {
		imgs[i] = append([]byte(nil), b...)
	}
	for _, k := range order {
		w := r.writes[k]
		copy(imgs[w.disk][w.off:], w.data)
	}
	out := make([]io.ReaderAt, len(imgs))
	for i, b := range imgs {
		out[i] = bytes.NewReader(b)
	}
	return out
}

func prefix(k int) []int {
	o := make([]int, k)
	for i := range o {
		o[i] = i
	}
	return o
}

func newMachine(t *testing.T, sizes ...int64) (*Machine, *recorder) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	rc := &recorder{}
	r := rand.New(rand.NewPCG(1, 1))
	for i, sz := range sizes {
		p := filepath.Join(dir, "disk"+string(rune('0'+i))+"-flat.vmdk")
		init := make([]byte, sz)
		// The first quarter holds data before tracking starts.
		for j := 0; j < len(init)/4; j++ {
			init[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(p, init, 0o644); err != nil {
			t.Fatal(err)
		}
		rc.initial = append(rc.initial, init)
		paths = append(paths, p)
	}
	m, err := Open("vm1", paths, func() time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, rc
}

func writeRandom(t *testing.T, m *Machine, rc *recorder, r *rand.Rand, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		d := r.IntN(m.Disks())
		blocks := m.Size(d) / bs
		nb := 1 + r.Int64N(3)
		off := r.Int64N(blocks-nb+1) * bs
		// Writes of 512 bytes too: sub-block writes must be judged right.
		ln := int(nb * bs)
		if r.IntN(4) == 0 {
			ln = 512 * (1 + r.IntN(7))
			off += 512 * r.Int64N(8-int64(ln/512)+1)
			if off+int64(ln) > m.Size(d) {
				off = m.Size(d) - int64(ln)
			}
		}
		data := make([]byte, ln)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if err := m.Write(d, off, data); err != nil {
			t.Fatal(err)
		}
		rc.writes = append(rc.writes, rec{d, off, data})
	}
}

func TestOracleFindsEveryPrefix(t *testing.T) {
	m, rc := newMachine(t, 64*1024, 32*1024)
	writeRandom(t, m, rc, rand.New(rand.NewPCG(2, 2)), 60)
	for k := 0; k <= len(rc.writes); k++ {
		v, err := m.Oracle().Match(rc.image(prefix(k)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK() || !v.Ks.Contains(uint64(k)) {
			t.Fatalf("image after %d writes: verdict %v %q, want a set containing %d", k, v.Ks, v.Evidence, k)
		}
	}
}

// TestOracleNegativeControl breaks the history on purpose — two writes
// swapped, one write dropped, a block of garbage — and shows the oracle
// says so, with evidence.
func TestOracleNegativeControl(t *testing.T) {
	m, rc := newMachine(t, 64*1024)
	// Two writes to the same block, then one elsewhere: applying the second
	// without the first, or the first after the second, is no prefix.
	for _, w := range []rec{{0, 0, bytes.Repeat([]byte{1}, bs)}, {0, 0, bytes.Repeat([]byte{2}, 512)}, {0, 8 * bs, bytes.Repeat([]byte{3}, bs)}} {
		if err := m.Write(w.disk, w.off, w.data); err != nil {
			t.Fatal(err)
		}
		rc.writes = append(rc.writes, w)
	}
	tests := []struct {
		name  string
		order []int
	}{
		{"reordered", []int{1, 0, 2}},
		{"write 0 dropped", []int{1, 2}},
		{"write 2 without 1", []int{0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := m.Oracle().Match(rc.image(tt.order), nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK() {
				t.Fatalf("oracle accepted a broken history: k in %v", v.Ks)
			}
			if v.Evidence == "" {
				t.Fatal("no evidence")
			}
			t.Log(v.Evidence)
		})
	}
	t.Run("garbage block", func(t *testing.T) {
		img := rc.image(prefix(3))
		b := make([]byte, 64*1024)
		img[0].ReadAt(b, 0)
		b[12*bs+7] ^= 1
		v, _ := m.Oracle().Match([]io.ReaderAt{bytes.NewReader(b)}, nil)
		if v.OK() {
			t.Fatalf("oracle accepted a flipped bit: %v", v.Ks)
		}
	})
}

func TestOracleAllocatedRanges(t *testing.T) {
	m, rc := newMachine(t, 64*1024)
	writeRandom(t, m, rc, rand.New(rand.NewPCG(3, 3)), 10)
	// An image that lists only some ranges as allocated reads zeros
	// elsewhere: the quarter of initial data then goes missing.
	v, _ := m.Oracle().Match(rc.image(prefix(10)), [][]ByteRange{{{Off: 32 * 1024, Len: 32 * 1024}}})
	if v.OK() {
		t.Fatal("an image missing its initial data was accepted")
	}
	v, _ = m.Oracle().Match(rc.image(prefix(10)), [][]ByteRange{{{Off: 0, Len: 64 * 1024}}})
	if !v.OK() || !v.Ks.Contains(10) {
		t.Fatalf("full allocation: %v %s", v.Ks, v.Evidence)
	}
}

func TestKForSeq(t *testing.T) {
	m, _ := newMachine(t, 64*1024)
	// Two untracked writes before tracking, then 5 and 6, an untracked
	// write while tracking was broken, then 9 after a reset.
	seqs := []uint64{0, 0, 5, 6, 0, 9}
	fs := &seqFilter{seqs: seqs}
	m.SetFilter(fs)
	for range seqs {
		if err := m.Write(0, 0, make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ seq, k uint64 }{{1, 2}, {5, 2}, {6, 3}, {7, 5}, {9, 5}, {10, 6}} {
		if got := m.Oracle().KForSeq(tt.seq); got != tt.k {
			t.Errorf("KForSeq(%d) = %d, want %d", tt.seq, got, tt.k)
		}
	}
}

func TestSeqMustGrow(t *testing.T) {
	m, _ := newMachine(t, 64*1024)
	m.SetFilter(&seqFilter{seqs: []uint64{7, 7}})
	if err := m.Write(0, 0, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	if err := m.Write(0, 0, make([]byte, 512)); err == nil {
		t.Fatal("a repeated log sequence number was accepted")
	}
}

type seqFilter struct {
	seqs []uint64
	i    int
}

func (f *seqFilter) Capture(int, int64, []byte) uint64 { s := f.seqs[f.i]; f.i++; return s }

func TestWriteErrors(t *testing.T) {
	m, _ := newMachine(t, 64*1024)
	for _, tt := range []struct {
		disk int
		off  int64
		n    int
	}{{1, 0, 512}, {0, 100, 512}, {0, 0, 100}, {0, 64 * 1024, 512}} {
		if err := m.Write(tt.disk, tt.off, make([]byte, tt.n)); err == nil {
			t.Errorf("Write(%d, %d, %d bytes) accepted", tt.disk, tt.off, tt.n)
		}
	}
	if m.Oracle().K() != 0 {
		t.Fatalf("failed writes were recorded: K=%d", m.Oracle().K())
	}
}

// gateFilter holds writes while closed.
type gateFilter struct {
	seqFilter
	closed  bool
	release func()
}

func (g *gateFilter) Admit() bool             { return !g.closed }
func (g *gateFilter) SetReleaseHook(f func()) { g.release = f }

func TestSubmitHeldWritesWaitInOrder(t *testing.T) {
	m, _ := newMachine(t, 64*1024)
	g := &gateFilter{seqFilter: seqFilter{seqs: []uint64{1, 2, 3, 4}}}
	m.SetFilter(g)
	var acked []string
	ack := func(name string) func(uint64, error) {
		return func(k uint64, err error) { acked = append(acked, fmt.Sprintf("%s@k%d", name, k)) }
	}
	m.Submit(0, 0, make([]byte, 512), ack("a"))
	g.closed = true
	m.Submit(0, 512, make([]byte, 512), ack("b"))
	m.Submit(0, 1024, make([]byte, 512), ack("c"))
	if m.Held() != 2 || len(acked) != 1 {
		t.Fatalf("held %d, acked %v", m.Held(), acked)
	}
	// A freeze completes the application's held writes, then its flush
	// goes through the hold.
	idle := false
	m.OnIdle(func() { idle = true })
	m.Flushing(func() error { m.Submit(0, 2048, make([]byte, 512), ack("flush")); return nil })
	if m.Waits().Held != 2 {
		t.Fatalf("waits: %+v", m.Waits())
	}
	g.closed = false
	g.release()
	want := []string{"a@k1", "b@k2", "c@k3", "flush@k4"}
	if fmt.Sprint(acked) != fmt.Sprint(want) || !idle || m.Held() != 0 {
		t.Fatalf("acked %v (want %v), idle %v, held %d", acked, want, idle, m.Held())
	}
}

// TestMatchRangesProperty: judging an image with allocated ranges (read in
// runs, with a cursor over sorted ranges, or a scan over unsorted ones) is
// judging, with no ranges, the image whose blocks outside every range are
// zero; and the cursor answers as a scan of the ranges does.
func TestMatchRangesProperty(t *testing.T) {
	m, rc := newMachine(t, 64*1024, 32*1024)
	writeRandom(t, m, rc, rand.New(rand.NewPCG(4, 4)), 40)
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(0, len(rc.writes)).Draw(t, "k")
		imgs := rc.image(prefix(k))
		var ranges [][]ByteRange
		var masked []io.ReaderAt
		for d := range imgs {
			size := m.Size(d)
			var rs []ByteRange
			off := int64(0)
			for n := rapid.IntRange(0, 6).Draw(t, "n"); n > 0 && off < size; n-- {
				// Sub-block offsets and lengths, adjacent ranges (gap 0).
				off += 512 * rapid.Int64Range(0, 16).Draw(t, "gap")
				ln := 512 * rapid.Int64Range(1, 24).Draw(t, "len")
				if off >= size {
					break
				}
				ln = min(ln, size-off)
				rs = append(rs, ByteRange{Off: off, Len: ln})
				off += ln
			}
			if rapid.Bool().Draw(t, "shuffle") && len(rs) > 1 {
				rs[0], rs[len(rs)-1] = rs[len(rs)-1], rs[0]
			}
			ranges = append(ranges, rs)
			full := make([]byte, size)
			imgs[d].ReadAt(full, 0)
			// A disk with nil ranges is read whole, as Match has always
			// done (an image that lists no ranges is all zeros anyway).
			for b := int64(0); b < size/bs; b++ {
				if rs != nil && !overlaps(rs, b*bs, bs) {
					clear(full[b*bs : (b+1)*bs])
				}
			}
			masked = append(masked, bytes.NewReader(full))
			c := newAllocCursor(rs)
			for b := int64(0); b < size/bs; b++ {
				if _, ok := c.at(b*bs, bs); ok != (rs == nil || overlaps(rs, b*bs, bs)) {
					t.Fatalf("disk %d block %d: cursor says %v over %v", d, b, ok, rs)
				}
			}
		}
		got, err := m.Oracle().Match(imgs, ranges)
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.Oracle().Match(masked, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Ks.String() != want.Ks.String() || got.Evidence != want.Evidence {
			t.Fatalf("with ranges %v: %v %q; masked: %v %q", ranges, got.Ks, got.Evidence, want.Ks, want.Evidence)
		}
	})
}
