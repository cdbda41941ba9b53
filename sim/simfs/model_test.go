package simfs

import (
	"bytes"
	"os"
	"testing"

	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// TestCrashKeepsLastSync is a model check of one file's crash semantics
// through writes in place, appends, writes past the end, truncations and
// syncs: after a crash (no torn sector) the file holds exactly what it
// held at its last Sync. Sync shares its bytes with the live content until
// the next write below its end, so a write that forgot to copy them first
// would show here as a crash keeping an unsynced change.
func TestCrashKeepsLastSync(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		f := New()
		if err := f.Wipe("/d"); err != nil {
			rt.Fatal(err)
		}
		h, err := f.OpenFile("/d/a", os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			rt.Fatal(err)
		}
		if err := fsys.SyncDir(f, "/d"); err != nil {
			rt.Fatal(err)
		}
		var live, synced []byte
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			switch op := rapid.IntRange(0, 4).Draw(rt, "op"); op {
			case 0, 1: // write at an offset, maybe past the end
				off := rapid.IntRange(0, len(live)+8).Draw(rt, "off")
				p := rapid.SliceOfN(rapid.Byte(), 1, 64).Draw(rt, "p")
				if _, err := h.WriteAt(p, int64(off)); err != nil {
					rt.Fatal(err)
				}
				if end := off + len(p); end > len(live) {
					live = append(live, make([]byte, end-len(live))...)
				}
				copy(live[off:], p)
			case 2: // a large append (a new file's first write is one)
				p := rapid.SliceOfN(rapid.Byte(), 1, 300).Draw(rt, "big")
				if _, err := h.WriteAt(p, int64(len(live))); err != nil {
					rt.Fatal(err)
				}
				live = append(live, p...)
			case 3:
				size := rapid.IntRange(0, len(live)+8).Draw(rt, "size")
				if err := h.Truncate(int64(size)); err != nil {
					rt.Fatal(err)
				}
				if size <= len(live) {
					live = live[:size:size]
				} else {
					live = append(live, make([]byte, size-len(live))...)
				}
			case 4:
				if err := h.Sync(); err != nil {
					rt.Fatal(err)
				}
				synced = bytes.Clone(live)
			}
		}
		f.Crash(nil)
		got, err := f.ReadFile("/d/a")
		if err != nil {
			rt.Fatal(err)
		}
		if !bytes.Equal(got, synced) {
			rt.Fatalf("after the crash the file holds %x, want what was synced: %x", got, synced)
		}
	})
}
