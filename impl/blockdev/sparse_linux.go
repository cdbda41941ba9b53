package blockdev

import (
	"errors"
	"os"
	"syscall"
)

// lseek's whence values for sparse files (Linux 3.1 and later).
const (
	seekData = 3
	seekHole = 4
)

// dataExtents asks the file system where [off, end) of f holds data. The
// file offset moves, which no other call of File uses (they are pread and
// pwrite). A file system that does not know SEEK_DATA answers EINVAL:
// the whole range is then data.
func dataExtents(f *os.File, off, end int64) ([]Extent, error) {
	var out []Extent
	for off < end {
		start, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data from off to the end of the file
		}
		if errors.Is(err, syscall.EINVAL) {
			return append(out, AllData(off, end)...), nil
		}
		if err != nil {
			return nil, err
		}
		if start >= end {
			break
		}
		stop, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, err
		}
		stop = min(stop, end)
		out = append(out, Extent{Off: start, Len: stop - start})
		off = stop
	}
	return out, nil
}
