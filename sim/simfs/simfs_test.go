package simfs

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/fsys/fsystest"
)

func TestConformance(t *testing.T) {
	fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
		f := New()
		if err := f.MkdirAll("/work", 0o755); err != nil {
			t.Fatal(err)
		}
		return f, "/work"
	})
}

// setup returns a disk with a durable directory /d.
func setup(t *testing.T) *FS {
	t.Helper()
	f := New()
	if err := f.Wipe("/d"); err != nil {
		t.Fatal(err)
	}
	return f
}

func write(t *testing.T, f *FS, name string, flag int, data string, sync bool) fsys.File {
	t.Helper()
	h, err := f.OpenFile(name, flag|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func content(t *testing.T, f *FS, name string) (string, bool) {
	t.Helper()
	b, err := f.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func syncDir(t *testing.T, f *FS, dir string) {
	t.Helper()
	if err := fsys.SyncDir(f, dir); err != nil {
		t.Fatal(err)
	}
}

// TestUnsyncedWriteLost is the negative control of every fsync in the
// components: a write that was not synced is gone after a crash.
func TestUnsyncedWriteLost(t *testing.T) {
	f := setup(t)
	write(t, f, "/d/a", 0, "durable", true)
	syncDir(t, f, "/d")
	h := write(t, f, "/d/a", os.O_APPEND, " and not", false)
	f.Crash(nil)
	if got, _ := content(t, f, "/d/a"); got != "durable" {
		t.Fatalf("after crash: %q, want the synced %q only", got, "durable")
	}
	if _, err := h.Write([]byte("x")); !errors.Is(err, ErrStale) {
		t.Fatalf("write through a handle from before the crash: %v, want ErrStale", err)
	}
	if st := f.Stats(); st.Crashes != 1 || st.LostBytes != int64(len(" and not")) {
		t.Fatalf("stats %+v", st)
	}
}

func TestSyncedWriteKept(t *testing.T) {
	f := setup(t)
	write(t, f, "/d/a", 0, "one", true)
	syncDir(t, f, "/d")
	write(t, f, "/d/a", os.O_APPEND, " two", true)
	f.Crash(rand.New(rand.NewPCG(1, 2)))
	if got, _ := content(t, f, "/d/a"); got != "one two" {
		t.Fatalf("after crash: %q, want %q", got, "one two")
	}
}

// A new name needs its directory synced, not just the file.
func TestNewNameNeedsDirSync(t *testing.T) {
	f := setup(t)
	write(t, f, "/d/a", 0, "data", true) // file synced, directory not
	f.Crash(nil)
	if _, ok := content(t, f, "/d/a"); ok {
		t.Fatal("a file whose directory was never synced survived the crash")
	}
	write(t, f, "/d/b", 0, "data", false) // directory synced, file not
	syncDir(t, f, "/d")
	f.Crash(nil)
	if got, ok := content(t, f, "/d/b"); !ok || got != "" {
		t.Fatalf("b: %q %v, want an empty file (its name durable, its data not)", got, ok)
	}
	if err := f.MkdirAll("/d/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	f.Crash(nil)
	if _, err := f.Stat("/d/sub"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a new directory survived without its parent's sync: %v", err)
	}
}

func TestRenameAndRemoveNeedDirSync(t *testing.T) {
	f := setup(t)
	write(t, f, "/d/x", 0, "old", true)
	syncDir(t, f, "/d")
	write(t, f, "/d/x.tmp", 0, "new", true)
	if err := f.Rename("/d/x.tmp", "/d/x"); err != nil {
		t.Fatal(err)
	}
	f.Crash(nil)
	if got, _ := content(t, f, "/d/x"); got != "old" {
		t.Fatalf("rename without a directory sync survived: %q", got)
	}
	write(t, f, "/d/x.tmp", 0, "new", true)
	if err := f.Rename("/d/x.tmp", "/d/x"); err != nil {
		t.Fatal(err)
	}
	syncDir(t, f, "/d")
	if err := f.Remove("/d/x"); err != nil {
		t.Fatal(err)
	}
	f.Crash(nil)
	if got, _ := content(t, f, "/d/x"); got != "new" {
		t.Fatalf("after a synced rename and an unsynced remove: %q, want %q", got, "new")
	}
	if _, ok := content(t, f, "/d/x.tmp"); ok {
		t.Fatal("the renamed-away name came back")
	}
}

// A torn sector keeps a prefix of the unsynced append, never more than the
// rest of the sector where the durable content ends, and never changes the
// durable bytes.
func TestTornSector(t *testing.T) {
	durable := bytes.Repeat([]byte{'d'}, 5000) // ends 904 bytes into sector 1
	appended := bytes.Repeat([]byte{'u'}, 10000)
	torn := 0
	for seed := uint64(0); seed < 64; seed++ {
		f := setup(t)
		write(t, f, "/d/log", 0, string(durable), true)
		syncDir(t, f, "/d")
		write(t, f, "/d/log", os.O_APPEND, string(appended), false)
		f.Crash(rand.New(rand.NewPCG(seed, 7)))
		got, _ := content(t, f, "/d/log")
		if !bytes.HasPrefix([]byte(got), durable) {
			t.Fatalf("seed %d: durable bytes changed", seed)
		}
		kept := len(got) - len(durable)
		if kept > 2*SectorBytes-len(durable) {
			t.Fatalf("seed %d: kept %d unsynced bytes, past the torn sector's end", seed, kept)
		}
		if !bytes.Equal([]byte(got[len(durable):]), appended[:kept]) {
			t.Fatalf("seed %d: kept bytes are not a prefix of the append", seed)
		}
		if kept > 0 {
			torn++
		}
	}
	if torn == 0 || torn == 64 {
		t.Fatalf("%d of 64 crashes tore a sector: the draw is not random", torn)
	}
}

func TestWipe(t *testing.T) {
	f := setup(t)
	write(t, f, "/d/a", 0, "data", true)
	syncDir(t, f, "/d")
	if err := f.Wipe("/cache"); err != nil {
		t.Fatal(err)
	}
	if _, ok := content(t, f, "/d/a"); ok {
		t.Fatal("a file survived a wipe")
	}
	f.Crash(nil)
	if st, err := f.Stat("/cache"); err != nil || !st.IsDir() {
		t.Fatalf("the wiped disk's directory is not durable: %v", err)
	}
}
