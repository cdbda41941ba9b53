// Package blockdev is the block-device port: what the Mobility agent reads
// for the initial copy and for metadata-mode drains, and what the master
// target writes during failback. The real adapter is an *os.File opened on a
// raw device or disk image; the simulator hands its -flat.vmdk files in the
// same way.
package blockdev

import (
	"bytes"
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
// the initial copy skips). It compares against zeros with bytes.Equal,
// which the runtime vectorises: disks of many GiB are scanned with it.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeros [64 << 10]byte

// Extent is the byte range [Off, Off+Len) of a device.
type Extent struct {
	Off, Len int64
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Off + e.Len }

// Sparse is a device that can tell where its data is: outside the extents
// DataExtents returns, it reads as zeros (the holes of a sparse file, the
// unwritten pages of a page blob). An answer may be conservative — an
// extent may hold zeros — but never misses a byte that is not zero, so a
// reader may skip the rest and take it as zeros: that gives exactly what
// reading it would.
type Sparse interface {
	// DataExtents returns, in order and disjoint, the extents of
	// [off, off+n) that may hold data, clipped to it.
	DataExtents(off, n int64) ([]Extent, error)
}

// DataExtents implements Sparse with the file system's SEEK_DATA and
// SEEK_HOLE where it has them (tmpfs, ext4, xfs, btrfs); elsewhere, and on
// a raw device, the whole range is data.
func (d *File) DataExtents(off, n int64) ([]Extent, error) {
	if err := checkRange(d.size, off, n); err != nil {
		return nil, err
	}
	return dataExtents(d.f, off, min(off+n, d.size))
}

func checkRange(size, off, n int64) error {
	if off < 0 || n < 0 || off > size {
		return fmt.Errorf("%w: extents of %d bytes at %d on a %d-byte device", ErrRange, n, off, size)
	}
	return nil
}

// AllData is the whole of [off, end) as one extent (none when empty): the
// answer of a device that cannot tell where its data is.
func AllData(off, end int64) []Extent {
	if end <= off {
		return nil
	}
	return []Extent{{Off: off, Len: end - off}}
}
