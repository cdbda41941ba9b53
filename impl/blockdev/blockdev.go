// Package blockdev is the block-device port: what the Mobility agent reads
// for the initial copy and for metadata-mode drains, and what the master
// target writes during failback. The real adapter is an *os.File opened on a
// raw device or disk image; the simulator hands its -flat.vmdk files in the
// same way.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// SectorSize is the unit of every offset and length a device accepts.
const SectorSize = 512

// BlockSize is the unit the agent tracks and compares (checksum resync).
const BlockSize = 4096

// ErrRange is returned for an access outside the device or not sector-aligned.
var ErrRange = errors.New("blockdev: access out of range or unaligned")

// Device is a fixed-size, sector-addressed block device.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Size is the device's capacity in bytes, a multiple of SectorSize.
	Size() int64
}

// File is a Device backed by a file or raw device node.
type File struct {
	f    *os.File
	size int64
}

// OpenFile opens path as a device of the file's current size.
func OpenFile(path string, writable bool) (*File, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: stat %s: %w", path, err)
	}
	if st.Size()%SectorSize != 0 {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: size %d is not a multiple of %d", path, st.Size(), SectorSize)
	}
	return &File{f: f, size: st.Size()}, nil
}

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// ReadAt implements Device; reads past the end are ErrRange.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if err := Check(d.size, off, len(p)); err != nil {
		return 0, err
	}
	return d.f.ReadAt(p, off)
}

// WriteAt implements Device.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if err := Check(d.size, off, len(p)); err != nil {
		return 0, err
	}
	return d.f.WriteAt(p, off)
}

// Sync flushes the file to stable storage.
func (d *File) Sync() error { return d.f.Sync() }

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }

// Check validates an access of n bytes at off on a device of size bytes.
func Check(size, off int64, n int) error {
	if off < 0 || off%SectorSize != 0 || n%SectorSize != 0 || off+int64(n) > size {
		return fmt.Errorf("%w: %d bytes at %d on a %d-byte device", ErrRange, n, off, size)
	}
	return nil
}

// IsZero reports whether b is all zero bytes (an unallocated block, which
// the initial copy skips).
func IsZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
