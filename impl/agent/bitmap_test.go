package agent

import (
	"os"
	"testing"

	"pgregory.net/rapid"
)

// TestDirtyMapProperty: whatever the writes and drains, the bitmap (cur|prev)
// holds exactly the blocks of the writes captured since sinceWrites, which
// include every write whose record is not trimmed; the file holds at least
// those; and a bitmap read back from the file after a crash names them.
func TestDirtyMapProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		// Every newly dirty block fsyncs the bitmap file: on tmpfs when
		// there is one, to keep the 100 cases quick.
		dir := t.TempDir()
		if shm, err := os.MkdirTemp("/dev/shm", "agent-prop-"); err == nil {
			defer os.RemoveAll(shm)
			dir = shm
		}
		sizes := []int64{64 * DirtyBlockBytes, 200 * DirtyBlockBytes}
		f, _, err := OpenFilter(dir, "vm", FilterOptions{DiskSizes: sizes})
		if err != nil {
			rt.Fatal(err)
		}
		type write struct {
			disk   int
			b0, b1 int64 // blocks, inclusive
			seq    uint64
		}
		var ws []write
		var trimmed uint64
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			if rapid.IntRange(0, 4).Draw(rt, "op") == 0 {
				// A drain: some of the log acknowledged.
				if err := f.Sync(); err != nil {
					rt.Fatal(err)
				}
				st := f.Stats()
				upto := rapid.Uint64Range(st.TrimSeq, st.LastSeq).Draw(rt, "trim")
				f.MarkDrained(upto)
				if err := f.Trim(upto); err != nil {
					rt.Fatal(err)
				}
				trimmed = upto
				continue
			}
			d := rapid.IntRange(0, 1).Draw(rt, "disk")
			nb := sizes[d] / DirtyBlockBytes
			b0 := rapid.Int64Range(0, nb-1).Draw(rt, "block")
			n := rapid.Int64Range(1, min(16, nb-b0)).Draw(rt, "blocks")
			seq := f.Capture(d, b0*DirtyBlockBytes, make([]byte, n*DirtyBlockBytes))
			if seq == 0 {
				rt.Fatalf("write not logged: %+v", f.Stats())
			}
			ws = append(ws, write{d, b0, b0 + n - 1, seq})
		}
		st := f.Stats()
		since := map[[2]int64]bool{}
		for k, w := range ws {
			for b := w.b0; b <= w.b1; b++ {
				if int64(k) >= st.DirtySinceWrite {
					since[[2]int64{int64(w.disk), b}] = true
				} else if w.seq > trimmed {
					rt.Fatalf("write %d (seq %d) not trimmed (%d) but before the bitmap's writes (%d)", k, w.seq, trimmed, st.DirtySinceWrite)
				}
			}
		}
		if st.DirtyBlocks != int64(len(since)) {
			rt.Fatalf("dirty blocks %d, the writes since %d cover %d", st.DirtyBlocks, st.DirtySinceWrite, len(since))
		}
		f.CrashClose()
		f2, _, err := OpenFilter(dir, "vm", FilterOptions{DiskSizes: sizes})
		if err != nil {
			rt.Fatal(err)
		}
		defer f2.Close()
		if got := f2.Stats().LastResyncBlocks; got != int64(len(since)) {
			rt.Fatalf("resync after a crash: %d blocks, want %d", got, len(since))
		}
	})
}
