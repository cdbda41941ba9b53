package mastertarget

import (
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/fsys/fsystest"
)

// crashFS is an in-memory fsys.FS with a disk's crash semantics, for the
// crash tests (impl/ may not import sim/simfs, even in tests): a file's
// data survives Crash only as of its last Sync, and a name created,
// renamed or removed only once its directory was synced. Directories
// themselves are made durable at once (the deployment makes the retention
// directory). It is not safe for concurrent use; the tests drive one
// actor.
type crashFS struct {
	dirs    map[string]bool
	names   map[string]*cfile // path -> file, as seen now
	durable map[string]*cfile // as a crash leaves them
}

type cfile struct {
	data, synced []byte
	mod          time.Time
}

func newCrashFS() *crashFS {
	return &crashFS{dirs: map[string]bool{"/": true}, names: map[string]*cfile{}, durable: map[string]*cfile{}}
}

func cpath(name string) string { return path.Clean("/" + strings.ReplaceAll(name, "\\", "/")) }

func perr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// Crash is a power loss.
func (c *crashFS) Crash() {
	c.names = map[string]*cfile{}
	for p, f := range c.durable {
		f.data = slices.Clone(f.synced)
		c.names[p] = f
	}
}

func (c *crashFS) parentOK(op, name string) error {
	if !c.dirs[path.Dir(cpath(name))] {
		return perr(op, name, fs.ErrNotExist)
	}
	return nil
}

func (c *crashFS) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	p := cpath(name)
	if c.dirs[p] {
		if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
			return nil, perr("open", name, syscall.EISDIR)
		}
		return &chandle{fs: c, name: name, dir: p}, nil
	}
	f, ok := c.names[p]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, perr("open", name, fs.ErrExist)
	case !ok && flag&os.O_CREATE == 0:
		return nil, perr("open", name, fs.ErrNotExist)
	case !ok:
		if err := c.parentOK("open", name); err != nil {
			return nil, err
		}
		f = &cfile{}
		c.names[p] = f
	}
	if flag&os.O_TRUNC != 0 {
		f.data = nil
	}
	return &chandle{fs: c, name: name, f: f, flag: flag}, nil
}

func (c *crashFS) Open(name string) (fsys.File, error) { return c.OpenFile(name, os.O_RDONLY, 0) }

func (c *crashFS) ReadFile(name string) ([]byte, error) {
	f, ok := c.names[cpath(name)]
	if !ok {
		return nil, perr("open", name, fs.ErrNotExist)
	}
	return slices.Clone(f.data), nil
}

func (c *crashFS) ReadDir(name string) ([]fs.DirEntry, error) {
	p := cpath(name)
	if !c.dirs[p] {
		return nil, perr("open", name, fs.ErrNotExist)
	}
	var out []fs.DirEntry
	for q, f := range c.names {
		if path.Dir(q) == p {
			out = append(out, fs.FileInfoToDirEntry(cinfo{name: path.Base(q), size: int64(len(f.data))}))
		}
	}
	for q := range c.dirs {
		if q != "/" && path.Dir(q) == p {
			out = append(out, fs.FileInfoToDirEntry(cinfo{name: path.Base(q), dir: true}))
		}
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (c *crashFS) Mkdir(name string, perm fs.FileMode) error {
	p := cpath(name)
	if c.dirs[p] || c.names[p] != nil {
		return perr("mkdir", name, fs.ErrExist)
	}
	if err := c.parentOK("mkdir", name); err != nil {
		return err
	}
	c.dirs[p] = true
	return nil
}

func (c *crashFS) MkdirAll(name string, perm fs.FileMode) error {
	p := cpath(name)
	if c.names[p] != nil {
		return perr("mkdir", name, syscall.ENOTDIR)
	}
	for q := p; !c.dirs[q]; q = path.Dir(q) {
		c.dirs[q] = true
	}
	return nil
}

func (c *crashFS) Remove(name string) error {
	p := cpath(name)
	if c.dirs[p] {
		for q := range c.names {
			if path.Dir(q) == p {
				return perr("remove", name, syscall.ENOTEMPTY)
			}
		}
		for q := range c.dirs {
			if q != p && path.Dir(q) == p {
				return perr("remove", name, syscall.ENOTEMPTY)
			}
		}
		delete(c.dirs, p)
		return nil
	}
	if _, ok := c.names[p]; !ok {
		return perr("remove", name, fs.ErrNotExist)
	}
	delete(c.names, p)
	return nil
}

func (c *crashFS) Rename(oldpath, newpath string) error {
	a, b := cpath(oldpath), cpath(newpath)
	f, ok := c.names[a]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	if c.dirs[b] {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EISDIR}
	}
	if !c.dirs[path.Dir(b)] {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	delete(c.names, a)
	c.names[b] = f
	return nil
}

func (c *crashFS) Stat(name string) (fs.FileInfo, error) {
	p := cpath(name)
	if c.dirs[p] {
		return cinfo{name: path.Base(p), dir: true}, nil
	}
	f, ok := c.names[p]
	if !ok {
		return nil, perr("stat", name, fs.ErrNotExist)
	}
	return cinfo{name: path.Base(p), size: int64(len(f.data))}, nil
}

func (c *crashFS) Truncate(name string, size int64) error {
	f, ok := c.names[cpath(name)]
	if !ok {
		return perr("truncate", name, fs.ErrNotExist)
	}
	f.data = resize(f.data, size)
	return nil
}

func resize(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b[:size:size]
	}
	return append(b, make([]byte, size-int64(len(b)))...)
}

// syncDir makes the names in dir durable as they are now.
func (c *crashFS) syncDir(dir string) {
	for q := range c.durable {
		if path.Dir(q) == dir {
			delete(c.durable, q)
		}
	}
	for q, f := range c.names {
		if path.Dir(q) == dir {
			c.durable[q] = f
		}
	}
}

type chandle struct {
	fs     *crashFS
	name   string
	dir    string // a directory's handle
	f      *cfile
	flag   int
	off    int64
	closed bool
}

func (h *chandle) check(op string, write bool) error {
	switch {
	case h.closed:
		return perr(op, h.name, fs.ErrClosed)
	case h.dir != "" && op != "sync" && op != "stat":
		return perr(op, h.name, syscall.EISDIR)
	case write && h.flag&(os.O_WRONLY|os.O_RDWR) == 0:
		return perr(op, h.name, syscall.EBADF)
	case !write && h.flag&os.O_WRONLY != 0:
		return perr(op, h.name, syscall.EBADF)
	}
	return nil
}

func (h *chandle) Read(b []byte) (int, error) {
	n, err := h.ReadAt(b, h.off)
	h.off += int64(n)
	return n, err
}

func (h *chandle) ReadAt(b []byte, off int64) (int, error) {
	if err := h.check("read", false); err != nil {
		return 0, err
	}
	if off >= int64(len(h.f.data)) {
		return 0, io.EOF
	}
	n := copy(b, h.f.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (h *chandle) Write(b []byte) (int, error) {
	if h.flag&os.O_APPEND != 0 && h.f != nil {
		h.off = int64(len(h.f.data))
	}
	n, err := h.WriteAt(b, h.off)
	h.off += int64(n)
	return n, err
}

func (h *chandle) WriteAt(b []byte, off int64) (int, error) {
	if err := h.check("write", true); err != nil {
		return 0, err
	}
	if end := off + int64(len(b)); end > int64(len(h.f.data)) {
		h.f.data = resize(h.f.data, end)
	}
	copy(h.f.data[off:], b)
	return len(b), nil
}

func (h *chandle) Close() error {
	if h.closed {
		return perr("close", h.name, fs.ErrClosed)
	}
	h.closed = true
	return nil
}

func (h *chandle) Sync() error {
	if h.closed {
		return perr("sync", h.name, fs.ErrClosed)
	}
	if h.dir != "" {
		h.fs.syncDir(h.dir)
		return nil
	}
	h.f.synced = slices.Clone(h.f.data)
	return nil
}

func (h *chandle) Truncate(size int64) error {
	if err := h.check("truncate", true); err != nil {
		return err
	}
	h.f.data = resize(h.f.data, size)
	return nil
}

func (h *chandle) Stat() (fs.FileInfo, error) {
	if h.dir != "" {
		return cinfo{name: path.Base(h.dir), dir: true}, nil
	}
	return cinfo{name: path.Base(cpath(h.name)), size: int64(len(h.f.data))}, nil
}

func (h *chandle) Name() string { return h.name }

type cinfo struct {
	name string
	size int64
	dir  bool
}

func (i cinfo) Name() string { return i.name }
func (i cinfo) Size() int64  { return i.size }
func (i cinfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (i cinfo) ModTime() time.Time { return time.Time{} }
func (i cinfo) IsDir() bool        { return i.dir }
func (i cinfo) Sys() any           { return nil }

// TestCrashFSConformance: the test file system behaves as the port says
// (fsys's conformance suite), and its crash keeps exactly what was synced.
func TestCrashFSConformance(t *testing.T) {
	fsystest.Run(t, func(t *testing.T) (fsys.FS, string) {
		c := newCrashFS()
		if err := c.MkdirAll("/t", 0o755); err != nil {
			t.Fatal(err)
		}
		return c, "/t"
	})
	c := newCrashFS()
	if err := c.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string, sync bool) {
		f, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
		if sync {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	write("/d/a", "synced", true)
	if err := fsys.SyncDir(c, "/d"); err != nil {
		t.Fatal(err)
	}
	write("/d/b", "name not synced", true)
	f, _ := c.OpenFile("/d/a", os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte(" and more"))
	f.Close()
	c.Crash()
	if b, err := c.ReadFile("/d/a"); err != nil || string(b) != "synced" {
		t.Errorf("after a crash, a: %q, %v", b, err)
	}
	if _, err := c.ReadFile("/d/b"); !fsys.IsNotExist(err) {
		t.Errorf("after a crash, b whose name was not synced: %v", err)
	}
}
