// Package simfs is an in-memory fsys.FS with the crash semantics of a real
// disk, as FoundationDB's simulator models them: each file keeps its
// durable content apart from the writes made since its last Sync, and each
// directory keeps its durable entries apart from the names created, renamed
// or removed since its last Sync. Crash drops everything not durable — and,
// drawing from the random source it is given, may keep a random prefix of
// the unsynced append in the last partly written 4 KiB sector of a file (a
// torn write: the disk wrote part of a sector when the power went).
//
// One FS is one host's disk. Open handles from before a Crash are stale:
// every call on them fails (the process that held them is gone). The
// package is for simulations only: it does no real I/O, and data sizes are
// the tens of MiB a scenario keeps.
package simfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// SectorBytes is the unit a crash may tear.
const SectorBytes = 4096

// ErrStale: a handle opened before a crash was used after it.
var ErrStale = errors.New("simfs: stale file handle (opened before a crash)")

// node is an inode: a file or a directory.
type node struct {
	dir bool
	// A file's content now, and what survives a crash. dirtyFrom is the
	// lowest offset changed since the last Sync (-1: none), so that a
	// Sync after appends copies only the appended bytes.
	data, durable []byte
	dirtyFrom     int
	// A directory's entries now, and what survives a crash.
	ents, durEnts map[string]*node
}

func newDir() *node { return &node{dir: true, ents: map[string]*node{}, durEnts: map[string]*node{}} }

// FS is one host's simulated disk. The zero value is not usable: use New.
// It is safe for concurrent use (the real runtime's Ops may read files).
type FS struct {
	mu    sync.Mutex
	root  *node
	gen   uint64 // bumped by Crash and Wipe: older handles are stale
	stats Stats
}

// Stats counts what crashes did.
type Stats struct {
	Crashes   int
	LostBytes int64 // bytes of file content gone after crashes (unsynced writes, files whose names were not durable)
	TornBytes int64 // unsynced bytes a torn sector kept
}

var _ fsys.FS = (*FS)(nil)

// New returns an empty disk holding only the root directory "/".
func New() *FS { return &FS{root: newDir()} }

// Stats reports what crashes did so far.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Crash is a power loss: every file returns to its durable content and
// every directory to its durable entries. rnd decides torn sectors: for a
// file whose unsynced change is a pure append, a random prefix of the
// appended bytes within the sector where the durable content ends may
// survive. Handles opened before are stale afterwards.
func (f *FS) Crash(rnd *rand.Rand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	f.stats.Crashes++
	before := f.fileSizes()
	defer func() {
		after := f.fileSizes()
		for n, size := range before {
			f.stats.LostBytes += max(0, size-after[n])
		}
	}()
	seen := map[*node]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if seen[n] {
			return
		}
		seen[n] = true
		if !n.dir {
			f.crashFile(n, rnd)
			return
		}
		n.ents = maps(n.durEnts)
		for _, name := range sortedNames(n.ents) {
			walk(n.ents[name])
		}
	}
	walk(f.root)
}

func (f *FS) crashFile(n *node, rnd *rand.Rand) {
	d := len(n.durable)
	keep := n.durable
	if len(n.data) > d && bytes.Equal(n.data[:d], n.durable) && rnd != nil && rnd.IntN(2) == 0 {
		end := min(len(n.data), (d/SectorBytes+1)*SectorBytes)
		if k := rnd.IntN(end - d + 1); k > 0 {
			keep = n.data[:d+k]
			f.stats.TornBytes += int64(k)
		}
	}
	n.data = slices.Clone(keep)
	n.durable = slices.Clone(keep)
	n.dirtyFrom = -1
}

// fileSizes maps the files reachable now to their sizes; the caller holds
// mu.
func (f *FS) fileSizes() map[*node]int64 {
	sizes := map[*node]int64{}
	seen := map[*node]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if seen[n] {
			return
		}
		seen[n] = true
		if !n.dir {
			sizes[n] = int64(len(n.data))
			return
		}
		for _, c := range n.ents {
			walk(c)
		}
	}
	walk(f.root)
	return sizes
}

// Wipe replaces the disk by an empty one (a lost disk, a new one mounted in
// its place) and makes the directory dir exist on it durably. Handles
// opened before are stale.
func (f *FS) Wipe(dir string) error {
	f.mu.Lock()
	f.root = newDir()
	f.gen++
	f.mu.Unlock()
	if err := f.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return f.SyncAll()
}

// SyncAll makes everything durable, as a clean shutdown would (the harness
// uses it to set up a disk before the run).
func (f *FS) SyncAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var walk func(n *node)
	walk = func(n *node) {
		if !n.dir {
			n.sync()
			return
		}
		n.durEnts = maps(n.ents)
		for _, c := range n.ents {
			walk(c)
		}
	}
	walk(f.root)
	return nil
}

func maps(m map[string]*node) map[string]*node {
	out := make(map[string]*node, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedNames(m map[string]*node) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// split cleans name into its path elements.
func split(name string) []string {
	c := filepath.ToSlash(filepath.Clean("/" + name))
	if c == "/" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(c, "/"), "/")
}

// lookup finds name's node (nil if missing); the caller holds mu.
func (f *FS) lookup(name string) (*node, error) {
	n := f.root
	for _, el := range split(name) {
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		c, ok := n.ents[el]
		if !ok {
			return nil, fs.ErrNotExist
		}
		n = c
	}
	return n, nil
}

// parent finds the directory holding name and name's last element.
func (f *FS) parent(name string) (*node, string, error) {
	els := split(name)
	if len(els) == 0 {
		return nil, "", fs.ErrInvalid
	}
	p, err := f.lookup("/" + strings.Join(els[:len(els)-1], "/"))
	if err != nil {
		return nil, "", err
	}
	if !p.dir {
		return nil, "", syscall.ENOTDIR
	}
	return p, els[len(els)-1], nil
}

func perr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// OpenFile implements fsys.FS.
func (f *FS) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, base, err := f.parent(name)
	if err != nil {
		return nil, perr("open", name, err)
	}
	n, ok := p.ents[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, perr("open", name, fs.ErrExist)
	case !ok && flag&os.O_CREATE == 0:
		return nil, perr("open", name, fs.ErrNotExist)
	case !ok:
		n = &node{dirtyFrom: -1}
		p.ents[base] = n
	}
	if n.dir && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, perr("open", name, syscall.EISDIR)
	}
	if flag&os.O_TRUNC != 0 && !n.dir {
		n.data = nil
		n.dirty(0)
	}
	return &file{fs: f, n: n, name: name, gen: f.gen, flag: flag}, nil
}

// Open implements fsys.FS.
func (f *FS) Open(name string) (fsys.File, error) { return f.OpenFile(name, os.O_RDONLY, 0) }

// ReadFile implements fsys.FS.
func (f *FS) ReadFile(name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name)
	if err != nil {
		return nil, perr("open", name, err)
	}
	if n.dir {
		return nil, perr("read", name, syscall.EISDIR)
	}
	return slices.Clone(n.data), nil
}

// ReadDir implements fsys.FS.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name)
	if err != nil {
		return nil, perr("open", name, err)
	}
	if !n.dir {
		return nil, perr("readdirent", name, syscall.ENOTDIR)
	}
	var out []fs.DirEntry
	for _, el := range sortedNames(n.ents) {
		out = append(out, fs.FileInfoToDirEntry(info(el, n.ents[el])))
	}
	return out, nil
}

// Mkdir implements fsys.FS.
func (f *FS) Mkdir(name string, perm fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, base, err := f.parent(name)
	if err != nil {
		return perr("mkdir", name, err)
	}
	if _, ok := p.ents[base]; ok {
		return perr("mkdir", name, fs.ErrExist)
	}
	p.ents[base] = newDir()
	return nil
}

// MkdirAll implements fsys.FS. Like every new name, a new directory is
// durable only once its parent is synced.
func (f *FS) MkdirAll(name string, perm fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.root
	for _, el := range split(name) {
		c, ok := n.ents[el]
		if !ok {
			c = newDir()
			n.ents[el] = c
		}
		if !c.dir {
			return perr("mkdir", name, syscall.ENOTDIR)
		}
		n = c
	}
	return nil
}

// Remove implements fsys.FS.
func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, base, err := f.parent(name)
	if err != nil {
		return perr("remove", name, err)
	}
	n, ok := p.ents[base]
	if !ok {
		return perr("remove", name, fs.ErrNotExist)
	}
	if n.dir && len(n.ents) > 0 {
		return perr("remove", name, syscall.ENOTEMPTY)
	}
	delete(p.ents, base)
	return nil
}

// Rename implements fsys.FS.
func (f *FS) Rename(oldpath, newpath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	op, ob, err := f.parent(oldpath)
	if err == nil {
		if _, ok := op.ents[ob]; !ok {
			err = fs.ErrNotExist
		}
	}
	var np *node
	var nb string
	if err == nil {
		np, nb, err = f.parent(newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	if dst, ok := np.ents[nb]; ok && dst.dir {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EISDIR}
	}
	n := op.ents[ob]
	delete(op.ents, ob)
	np.ents[nb] = n
	return nil
}

// Stat implements fsys.FS.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name)
	if err != nil {
		return nil, perr("stat", name, err)
	}
	return info(filepath.Base(name), n), nil
}

// Truncate implements fsys.FS.
func (f *FS) Truncate(name string, size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(name)
	if err != nil {
		return perr("truncate", name, err)
	}
	if n.dir {
		return perr("truncate", name, syscall.EISDIR)
	}
	n.unshare(len(n.data))
	n.data = resize(n.data, size)
	n.dirty(int(size))
	return nil
}

// dirty notes a change at off.
func (n *node) dirty(off int) {
	if n.dirtyFrom < 0 || off < n.dirtyFrom {
		n.dirtyFrom = off
	}
}

// sync makes a file's content durable. It copies nothing: durable
// becomes a view of data's bytes, and the first write below its end
// afterwards copies it (unshare), so a file only ever appended to is never
// copied, and one rewritten in place is copied once per Sync, as before.
func (n *node) sync() {
	if n.dirtyFrom >= 0 {
		n.durable = n.data[:len(n.data):len(n.data)]
	}
	n.dirtyFrom = -1
}

// unshare gives durable bytes of its own before data is changed from
// offset from on, if durable is a view of data's bytes that the change
// would overwrite.
func (n *node) unshare(from int) {
	if from < len(n.durable) && cap(n.data) > 0 && &n.data[:1][0] == &n.durable[:1][0] {
		n.durable = slices.Clone(n.durable)
	}
}

func resize(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b[:size:size]
	}
	return append(grow(b, int(size)), make([]byte, int(size)-len(b))...)
}

// grow gives b room for size bytes, doubling its capacity when it must
// grow: append alone grows a large slice by a quarter, so a file appended
// to in small writes up to 64 MiB was copied about 20 times over.
func grow(b []byte, size int) []byte {
	if size <= cap(b) {
		return b
	}
	return slices.Grow(b, max(size, 2*cap(b))-len(b))
}

// fileInfo is a node's fs.FileInfo.
type fileInfo struct {
	name string
	size int64
	dir  bool
}

func info(name string, n *node) fileInfo {
	return fileInfo{name: name, size: int64(len(n.data)), dir: n.dir}
}

func (i fileInfo) Name() string { return i.name }
func (i fileInfo) Size() int64  { return i.size }
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (i fileInfo) ModTime() time.Time { return time.Time{} } // no clock: it would not be deterministic
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }

// file is an open handle.
type file struct {
	fs     *FS
	n      *node
	name   string
	gen    uint64
	flag   int
	off    int64
	closed bool
}

// check is called with mu held.
func (h *file) check(op string, write bool) error {
	switch {
	case h.closed:
		return perr(op, h.name, fs.ErrClosed)
	case h.gen != h.fs.gen:
		return perr(op, h.name, ErrStale)
	case write && h.flag&(os.O_WRONLY|os.O_RDWR) == 0:
		return perr(op, h.name, syscall.EBADF)
	case !write && h.flag&os.O_WRONLY != 0:
		return perr(op, h.name, syscall.EBADF)
	case h.n.dir && op != "sync" && op != "stat" && op != "close":
		return perr(op, h.name, syscall.EISDIR)
	}
	return nil
}

func (h *file) Read(p []byte) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("read", false); err != nil {
		return 0, err
	}
	if h.off >= int64(len(h.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.n.data[h.off:])
	h.off += int64(n)
	return n, nil
}

func (h *file) ReadAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, perr("read", h.name, fs.ErrInvalid)
	}
	if off >= int64(len(h.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *file) Write(p []byte) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("write", true); err != nil {
		return 0, err
	}
	if h.flag&os.O_APPEND != 0 {
		h.off = int64(len(h.n.data))
	}
	h.writeAt(p, h.off)
	h.off += int64(len(p))
	return len(p), nil
}

func (h *file) WriteAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("write", true); err != nil {
		return 0, err
	}
	if off < 0 || h.flag&os.O_APPEND != 0 {
		return 0, perr("write", h.name, fs.ErrInvalid) // as os: WriteAt on an O_APPEND file is refused
	}
	h.writeAt(p, off)
	return len(p), nil
}

func (h *file) writeAt(p []byte, off int64) {
	n := h.n
	n.dirty(int(off))
	n.unshare(int(min(off, int64(len(n.data)))))
	end := off + int64(len(p))
	if off == int64(len(n.data)) && end > int64(cap(n.data)) && end >= 2*int64(cap(n.data)) {
		// An append at least as large as the file so far (a new file's
		// first write): append copies it in without zeroing first.
		n.data = append(n.data, p...)
		return
	}
	if end > int64(len(n.data)) {
		n.data = resize(n.data, end)
	}
	copy(n.data[off:], p)
}

// Sync makes a file's content, or a directory's entries, durable.
func (h *file) Sync() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("sync", false); err != nil && !errors.Is(err, syscall.EBADF) {
		return err
	}
	if h.n.dir {
		h.n.durEnts = maps(h.n.ents)
	} else {
		h.n.sync()
	}
	return nil
}

func (h *file) Truncate(size int64) error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return perr("truncate", h.name, fs.ErrInvalid)
	}
	h.n.unshare(len(h.n.data))
	h.n.data = resize(h.n.data, size)
	h.n.dirty(int(size))
	return nil
}

func (h *file) Stat() (fs.FileInfo, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("stat", false); err != nil && !errors.Is(err, syscall.EBADF) {
		return nil, err
	}
	return info(filepath.Base(h.name), h.n), nil
}

func (h *file) Name() string { return h.name }

func (h *file) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return perr("close", h.name, fs.ErrClosed)
	}
	h.closed = true
	return nil
}

// String describes the FS for debugging.
func (f *FS) String() string { return fmt.Sprintf("simfs(gen %d)", f.gen) }
