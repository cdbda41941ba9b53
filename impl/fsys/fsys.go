// Package fsys is v2a's port to the local file system: the small interface
// FS that the components which keep files (the .hrl change log, the agent's
// state, the process server's cache disk) are written against.
//
// Two implementations exist: OS, the real one (a thin wrapper over package
// os), and sim/simfs, an in-memory file system with the crash semantics of
// a real disk (unsynced writes and directory entries are lost on a crash).
// impl/fsys/fsystest is the conformance suite both must pass; when they
// disagree, what POSIX says (and Linux does) is the reference.
//
// The durability contract components rely on, and which simfs enforces:
//
//   - data written to a File survives a crash only once File.Sync returns;
//   - a created, renamed or removed name survives a crash only once the
//     directory holding it is synced: open the directory with Open and call
//     Sync on it (SyncDir does just that).
//
// Errors are *fs.PathError (or *os.LinkError for Rename) wrapping the
// usual fs.ErrNotExist, fs.ErrExist and syscall errnos, so errors.Is works
// the same on both implementations.
package fsys

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// FS is a file system. Names are OS paths (filepath.Join them).
type FS interface {
	// OpenFile opens name with os.O_* flags (O_RDONLY, O_WRONLY, O_RDWR,
	// O_APPEND, O_CREATE, O_EXCL, O_TRUNC), creating it with perm.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Open opens a file or a directory for reading. A directory's File
	// supports only Sync, Stat and Close: Sync makes its entries durable.
	Open(name string) (File, error)
	ReadFile(name string) ([]byte, error)
	// ReadDir lists a directory sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	Mkdir(name string, perm fs.FileMode) error
	MkdirAll(name string, perm fs.FileMode) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Rename replaces newpath with oldpath atomically.
	Rename(oldpath, newpath string) error
	Stat(name string) (fs.FileInfo, error)
	Truncate(name string, size int64) error
}

// File is an open file. Read and Write use the file's offset (Write always
// appends with O_APPEND); ReadAt and WriteAt do not move it.
type File interface {
	io.Reader
	io.Writer
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data (or a directory's entries) durable.
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	// Name is the name the file was opened with.
	Name() string
}

// SyncDir makes the creations, renames and removals of names in dir
// durable.
func SyncDir(fsys FS, dir string) error {
	d, err := fsys.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// IsNotExist reports whether err says a file does not exist.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// OS is the real file system.
type OS struct{}

var _ FS = OS{}

func (OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (OS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (OS) ReadFile(name string) ([]byte, error)         { return os.ReadFile(name) }
func (OS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (OS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (OS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (OS) Remove(name string) error                     { return os.Remove(name) }
func (OS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (OS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (OS) Truncate(name string, size int64) error       { return os.Truncate(name, size) }
