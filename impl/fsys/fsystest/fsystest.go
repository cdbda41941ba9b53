// Package fsystest is the conformance suite every fsys.FS passes: fsys.OS
// (on a temporary directory) and sim/simfs. It checks what a crash-free run
// sees; the crash semantics are simfs's own tests.
package fsystest

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// Run runs the suite. newFS returns a file system and an existing, empty
// directory in it to work under.
func Run(t *testing.T, newFS func(t *testing.T) (fsys.FS, string)) {
	tests := []struct {
		name string
		f    func(t *testing.T, fs fsys.FS, dir string)
	}{
		{"WriteReadBack", testWriteRead},
		{"AppendAndOffsets", testAppend},
		{"CreateFlags", testCreateFlags},
		{"Truncate", testTruncate},
		{"RenameReplaces", testRename},
		{"RemoveAndNotExist", testRemove},
		{"Directories", testDirs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, dir := newFS(t)
			tc.f(t, fs, dir)
		})
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func readAll(t *testing.T, fsy fsys.FS, name string) []byte {
	t.Helper()
	b, err := fsy.ReadFile(name)
	must(t, "read "+name, err)
	return b
}

func same(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func testWriteRead(t *testing.T, fsy fsys.FS, dir string) {
	p := filepath.Join(dir, "a")
	f, err := fsy.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	must(t, "create", err)
	n, err := f.Write([]byte("hello "))
	must(t, "write", err)
	if n != 6 {
		t.Fatalf("write: %d bytes, want 6", n)
	}
	_, err = f.Write([]byte("world"))
	must(t, "write", err)
	must(t, "sync", f.Sync())
	st, err := f.Stat()
	must(t, "stat", err)
	if st.Size() != 11 || st.IsDir() || st.Name() != "a" {
		t.Fatalf("stat: size %d dir %v name %q", st.Size(), st.IsDir(), st.Name())
	}
	buf := make([]byte, 5)
	_, err = f.ReadAt(buf, 6)
	must(t, "read at", err)
	same(t, "read at 6", buf, []byte("world"))
	if _, err := f.ReadAt(make([]byte, 4), 9); err != io.EOF {
		t.Fatalf("read past the end: %v, want io.EOF", err)
	}
	must(t, "close", f.Close())
	same(t, "read file", readAll(t, fsy, p), []byte("hello world"))
	r, err := fsy.Open(p)
	must(t, "open", err)
	got, err := io.ReadAll(r)
	must(t, "read", err)
	same(t, "read through Open", got, []byte("hello world"))
	must(t, "close", r.Close())
}

func testAppend(t *testing.T, fsy fsys.FS, dir string) {
	p := filepath.Join(dir, "log")
	f, err := fsy.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, "create", err)
	_, err = f.Write([]byte("abc"))
	must(t, "write", err)
	must(t, "close", f.Close())
	f, err = fsy.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
	must(t, "reopen", err)
	_, err = f.Write([]byte("def"))
	must(t, "append", err)
	must(t, "close", f.Close())
	same(t, "appended", readAll(t, fsy, p), []byte("abcdef"))

	w, err := fsy.OpenFile(p, os.O_WRONLY, 0)
	must(t, "open", err)
	_, err = w.WriteAt([]byte("XY"), 2)
	must(t, "write at", err)
	_, err = w.WriteAt([]byte("Z"), 8) // past the end: a hole of zeros
	must(t, "write past end", err)
	must(t, "close", w.Close())
	same(t, "written at", readAll(t, fsy, p), []byte("abXYef\x00\x00Z"))
}

func testCreateFlags(t *testing.T, fsy fsys.FS, dir string) {
	p := filepath.Join(dir, "x")
	if _, err := fsy.OpenFile(p, os.O_RDWR, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open missing without O_CREATE: %v, want ErrNotExist", err)
	}
	f, err := fsy.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	must(t, "create excl", err)
	_, err = f.Write([]byte("long content"))
	must(t, "write", err)
	must(t, "close", f.Close())
	if _, err := fsy.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on an existing file: %v, want ErrExist", err)
	}
	f, err = fsy.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	must(t, "truncating open", err)
	_, err = f.Write([]byte("s"))
	must(t, "write", err)
	must(t, "close", f.Close())
	same(t, "after O_TRUNC", readAll(t, fsy, p), []byte("s"))
}

func testTruncate(t *testing.T, fsy fsys.FS, dir string) {
	p := filepath.Join(dir, "t")
	f, err := fsy.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	must(t, "create", err)
	_, err = f.Write([]byte("0123456789"))
	must(t, "write", err)
	must(t, "truncate file", f.Truncate(4))
	must(t, "close", f.Close())
	same(t, "file truncated", readAll(t, fsy, p), []byte("0123"))
	must(t, "truncate by name", fsy.Truncate(p, 2))
	st, err := fsy.Stat(p)
	must(t, "stat", err)
	if st.Size() != 2 {
		t.Fatalf("size %d after truncate to 2", st.Size())
	}
}

func testRename(t *testing.T, fsy fsys.FS, dir string) {
	a, b := filepath.Join(dir, "a.tmp"), filepath.Join(dir, "a")
	for _, c := range []struct{ name, data string }{{b, "old"}, {a, "new"}} {
		f, err := fsy.OpenFile(c.name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		must(t, "create", err)
		_, err = f.Write([]byte(c.data))
		must(t, "write", err)
		must(t, "close", f.Close())
	}
	must(t, "rename", fsy.Rename(a, b))
	same(t, "renamed over", readAll(t, fsy, b), []byte("new"))
	if _, err := fsy.Stat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old name after rename: %v, want ErrNotExist", err)
	}
	if err := fsy.Rename(a, b); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rename of a missing file: %v, want ErrNotExist", err)
	}
	must(t, "sync dir", fsys.SyncDir(fsy, dir))
}

func testRemove(t *testing.T, fsy fsys.FS, dir string) {
	p := filepath.Join(dir, "r")
	f, err := fsy.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	must(t, "create", err)
	must(t, "close", f.Close())
	must(t, "remove", fsy.Remove(p))
	for what, err := range map[string]error{
		"remove again": fsy.Remove(p),
		"stat":         func() error { _, err := fsy.Stat(p); return err }(),
		"read file":    func() error { _, err := fsy.ReadFile(p); return err }(),
		"open":         func() error { _, err := fsy.Open(p); return err }(),
		"truncate":     fsy.Truncate(p, 0),
	} {
		if !errors.Is(err, fs.ErrNotExist) || !fsys.IsNotExist(err) {
			t.Errorf("%s of a removed file: %v, want ErrNotExist", what, err)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %T is not a *fs.PathError", what, err)
		}
	}
}

func testDirs(t *testing.T, fsy fsys.FS, dir string) {
	sub := filepath.Join(dir, "m", "n")
	must(t, "mkdir all", fsy.MkdirAll(sub, 0o755))
	must(t, "mkdir all again", fsy.MkdirAll(sub, 0o755))
	if err := fsy.Mkdir(sub, 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("mkdir of an existing directory: %v, want ErrExist", err)
	}
	if _, err := fsy.ReadDir(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read dir of a missing directory: %v, want ErrNotExist", err)
	}
	for _, n := range []string{"b", "c", "a"} {
		f, err := fsy.OpenFile(filepath.Join(sub, n), os.O_WRONLY|os.O_CREATE, 0o644)
		must(t, "create", err)
		_, err = f.Write([]byte(n + n))
		must(t, "write", err)
		must(t, "close", f.Close())
	}
	must(t, "mkdir", fsy.Mkdir(filepath.Join(sub, "d"), 0o755))
	ents, err := fsy.ReadDir(sub)
	must(t, "read dir", err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		info, err := e.Info()
		must(t, "info", err)
		if e.IsDir() != (e.Name() == "d") || info.IsDir() != e.IsDir() {
			t.Errorf("%s: IsDir %v", e.Name(), e.IsDir())
		}
		if !e.IsDir() && info.Size() != 2 {
			t.Errorf("%s: size %d, want 2", e.Name(), info.Size())
		}
	}
	if got, want := len(names), 4; got != want || names[0] != "a" || names[1] != "b" || names[2] != "c" || names[3] != "d" {
		t.Fatalf("read dir: %v, want [a b c d]", names)
	}
	st, err := fsy.Stat(sub)
	must(t, "stat dir", err)
	if !st.IsDir() {
		t.Fatal("stat of a directory: not a directory")
	}
	must(t, "sync dir", fsys.SyncDir(fsy, sub))
	if err := fsy.Remove(filepath.Join(dir, "m")); err == nil {
		t.Fatal("remove of a non-empty directory succeeded")
	}
	must(t, "remove empty dir", fsy.Remove(filepath.Join(sub, "d")))
}
