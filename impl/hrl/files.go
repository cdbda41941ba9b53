package hrl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// Files of a log named N in its directory:
//
//	N.<first seq, 16 hex digits>.hrl  a segment: records from that seq on
//	N.trim                            the trim point, replaced atomically
//	N.trim.tmp                        a trim file being written (removed on Open)
const (
	segmentSuffix = ".hrl"
	trimSuffix    = ".trim"
	tmpSuffix     = ".tmp"
	trimMagic     = "HRLT"
	trimFileLen   = 4 + 8 + 4 // magic, seq, CRC-32C of the first 12 bytes
)

// segment is one segment file as the log knows it.
type segment struct {
	first uint64 // seq of its first record, from its name
	size  int64  // bytes on disk (for the active segment: flushed bytes)
}

func segmentName(name string, first uint64) string {
	return fmt.Sprintf("%s.%016x%s", name, first, segmentSuffix)
}

func (l *Log) segPath(first uint64) string {
	return filepath.Join(l.dir, segmentName(l.name, first))
}

func (l *Log) trimPath() string { return filepath.Join(l.dir, l.name+trimSuffix) }

// listSegments returns the log's segments sorted by first seq, with their
// sizes.
func listSegments(fsy fsys.FS, dir, name string) ([]segment, error) {
	ents, err := fsy.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hrl: list %s: %w", dir, err)
	}
	prefix := name + "."
	var segs []segment
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, segmentSuffix) {
			continue
		}
		hex := n[len(prefix) : len(n)-len(segmentSuffix)]
		if len(hex) != 16 {
			continue
		}
		first, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("hrl: stat %s: %w", n, err)
		}
		segs = append(segs, segment{first: first, size: info.Size()})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// readTrim returns the persisted trim point: 0 when there is no trim file,
// and a problem description when the file is damaged.
func readTrim(fsy fsys.FS, path string) (uint64, string, error) {
	b, err := fsy.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("hrl: read trim file: %w", err)
	}
	if len(b) != trimFileLen || string(b[:4]) != trimMagic ||
		binary.LittleEndian.Uint32(b[12:]) != crc32.Checksum(b[:12], castagnoli) {
		return 0, fmt.Sprintf("trim file %s is damaged (%d bytes)", path, len(b)), nil
	}
	return binary.LittleEndian.Uint64(b[4:]), "", nil
}

// writeTrim persists seq as the trim point: temp file, fsync, rename over the
// old one, fsync the directory — so that after a crash the trim file holds
// either the old point or the new one, never a mix.
func (l *Log) writeTrim(seq uint64) error {
	b := make([]byte, 0, trimFileLen)
	b = append(b, trimMagic...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := l.trimPath() + tmpSuffix
	f, err := l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("hrl: write trim file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fs.Rename(tmp, l.trimPath())
	}
	if err == nil {
		err = fsys.SyncDir(l.fs, l.dir)
	}
	if err != nil {
		return fmt.Errorf("hrl: write trim file: %w", err)
	}
	return nil
}

// removeSegment deletes a segment file; one already gone is not an error
// (a crash may have interrupted an earlier removal).
func (l *Log) removeSegment(first uint64) error {
	if err := l.fs.Remove(l.segPath(first)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hrl: remove segment: %w", err)
	}
	return nil
}
