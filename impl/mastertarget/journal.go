package mastertarget

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The undo journal, <RetentionDir>/<machine>.journal, holds the bytes the
// applies overwrote after the oldest failback point, so that the disks can
// be brought back to a point: undoing, newest first, every entry after the
// point puts each byte back as it was at the point (see rollback).
//
// It is a sequence of records, each a 4-byte big-endian body length, the
// body (the entry, wire-encoded) and the body's CRC-32C. Entries are in
// stream position order, each position at most once. Appends go at the
// length the target knows to be good (a torn tail a failed append left is
// cut first) and are fsynced before the disks are written. A record cut
// short, or whose CRC fails, at the end of the file is such a torn tail,
// dropped at load; one that fails before other good records is damage, and
// the machine's state is reported broken, never guessed.

// maxJournalRecord bounds one record's body: an entry holds at most one
// write record's or chunk run's data.
const maxJournalRecord = 64 << 20

// pos is a place in a machine's stream: a record (or chunk run) Rec of item
// Item. Positions order the stream.
type pos struct {
	Item uint64
	Rec  uint32
}

func (a pos) cmp(b pos) int {
	switch {
	case a.Item != b.Item:
		if a.Item < b.Item {
			return -1
		}
		return 1
	case a.Rec != b.Rec:
		if a.Rec < b.Rec {
			return -1
		}
		return 1
	}
	return 0
}

func (a pos) String() string { return fmt.Sprintf("%d.%d", a.Item, a.Rec) }

// jentry is one undo record: the bytes Data at Off of disk Disk held before
// the write at At.
type jentry struct {
	At   pos
	Disk uint16
	Off  int64
	Data []byte
}

func (e jentry) appendTo(b []byte) []byte {
	var enc wire.Encoder
	enc.Uint(e.At.Item)
	enc.Uint(uint64(e.At.Rec))
	enc.Uint(uint64(e.Disk))
	enc.Int(e.Off)
	enc.Bytes(e.Data)
	body := enc.Encoded()
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(body, castagnoli))
}

// jinfo is what the actor knows of a journal: its good length and the
// positions of its first and last entries (meaningless when Bytes is 0).
type jinfo struct {
	Bytes       int64
	First, Last pos
}

// parseJournal reads records from b. It returns the entries, the length of
// the good prefix, and an error when a bad record is followed by more
// bytes than a torn tail could leave (damage, not an interrupted append).
func parseJournal(b []byte) ([]jentry, int64, error) {
	var out []jentry
	off := 0
	for off < len(b) {
		rest := b[off:]
		if len(rest) < 4 {
			return out, int64(off), nil // torn length
		}
		n := int(binary.BigEndian.Uint32(rest))
		if n > maxJournalRecord {
			return out, int64(off), fmt.Errorf("%w: journal record of %d bytes at %d", ErrStateCorrupt, n, off)
		}
		if len(rest) < 4+n+4 {
			return out, int64(off), nil // torn record
		}
		body := rest[4 : 4+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(rest[4+n:]) {
			if off+8+n == len(b) {
				return out, int64(off), nil // a torn last record
			}
			return out, int64(off), fmt.Errorf("%w: journal record at %d: checksum mismatch", ErrStateCorrupt, off)
		}
		d := wire.NewDecoder(body)
		e := jentry{At: pos{Item: d.Uint(), Rec: uint32(d.Uint())}, Disk: uint16(d.Uint()), Off: d.Int(), Data: d.Bytes()}
		if err := d.Err(); err != nil || d.Remaining() != 0 {
			return out, int64(off), fmt.Errorf("%w: journal record at %d does not decode", ErrStateCorrupt, off)
		}
		if len(out) > 0 && e.At.cmp(out[len(out)-1].At) <= 0 {
			return out, int64(off), fmt.Errorf("%w: journal entry %s after %s", ErrStateCorrupt, e.At, out[len(out)-1].At)
		}
		out = append(out, e)
		off += 8 + n
	}
	return out, int64(off), nil
}

func infoOf(entries []jentry, bytes int64) jinfo {
	if len(entries) == 0 {
		return jinfo{}
	}
	return jinfo{Bytes: bytes, First: entries[0].At, Last: entries[len(entries)-1].At}
}

func journalName(machine string) string { return url.PathEscape(machine) + journalSuffix }

func (r retention) journalPath(machine string) string {
	return filepath.Join(r.dir, journalName(machine))
}

// readJournal reads the first good bytes of machine's journal.
func (r retention) readJournal(machine string, good int64) ([]jentry, error) {
	if good == 0 {
		return nil, nil
	}
	b, err := r.fs.ReadFile(r.journalPath(machine))
	if err != nil {
		return nil, clean("read journal", err)
	}
	if int64(len(b)) < good {
		return nil, fmt.Errorf("%w: journal of %d bytes, %d known good", ErrStateCorrupt, len(b), good)
	}
	entries, n, err := parseJournal(b[:good])
	if err == nil && n != good {
		err = fmt.Errorf("%w: journal good to %d bytes, %d expected", ErrStateCorrupt, n, good)
	}
	return entries, err
}

// loadJournal reads machine's journal at load: a missing file is empty; a
// torn tail is cut off (it was never fsynced whole, so no disk write
// followed it).
func (r retention) loadJournal(machine string) ([]jentry, jinfo, error) {
	b, err := r.fs.ReadFile(r.journalPath(machine))
	if fsys.IsNotExist(err) {
		return nil, jinfo{}, nil
	}
	if err != nil {
		return nil, jinfo{}, clean("read journal", err)
	}
	entries, good, err := parseJournal(b)
	if err != nil {
		return nil, jinfo{}, err
	}
	if good != int64(len(b)) {
		if err := r.fs.Truncate(r.journalPath(machine), good); err != nil {
			return nil, jinfo{}, clean("cut torn journal tail", err)
		}
	}
	return entries, infoOf(entries, good), nil
}

// appendJournal appends entries at the good length of machine's journal
// (cutting whatever a failed append left past it) and fsyncs it. It
// returns the new good length.
func (r retention) appendJournal(machine string, good int64, entries []jentry) (int64, error) {
	if len(entries) == 0 {
		return good, nil
	}
	if err := r.ensureDir(); err != nil {
		return good, err
	}
	var buf []byte
	for _, e := range entries {
		buf = e.appendTo(buf)
	}
	f, err := r.fs.OpenFile(r.journalPath(machine), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return good, clean("open journal", err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return good, clean("cut journal", err)
	}
	if n, err := f.WriteAt(buf, good); err != nil || n != len(buf) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
		}
		return good, clean("append journal", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return good, clean("fsync journal", err)
	}
	if err := f.Close(); err != nil {
		return good, clean("close journal", err)
	}
	if good == 0 {
		if err := fsys.SyncDir(r.fs, r.dir); err != nil {
			return good, clean("fsync retention directory", err)
		}
	}
	return good + int64(len(buf)), nil
}

// rewriteJournal replaces machine's journal with entries, atomically
// (temporary file, fsync, rename, fsync the directory); no entries remove
// it. It returns what the actor knows of the new journal.
func (r retention) rewriteJournal(machine string, entries []jentry) (jinfo, error) {
	path := r.journalPath(machine)
	if len(entries) == 0 {
		if err := r.fs.Remove(path); fsys.IsNotExist(err) {
			return jinfo{}, nil // nothing to make durable
		} else if err != nil {
			return jinfo{}, clean("remove journal", err)
		}
		if err := fsys.SyncDir(r.fs, r.dir); err != nil {
			return jinfo{}, clean("fsync retention directory", err)
		}
		return jinfo{}, nil
	}
	var buf []byte
	for _, e := range entries {
		buf = e.appendTo(buf)
	}
	tmp := path + tmpSuffix
	f, err := r.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return jinfo{}, clean("create journal", err)
	}
	if n, err := f.Write(buf); err != nil || n != len(buf) {
		f.Close()
		_ = r.fs.Remove(tmp)
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
		}
		return jinfo{}, clean("write journal", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		_ = r.fs.Remove(tmp)
		return jinfo{}, clean("fsync journal", err)
	}
	if err := f.Close(); err != nil {
		_ = r.fs.Remove(tmp)
		return jinfo{}, clean("close journal", err)
	}
	if err := r.fs.Rename(tmp, path); err != nil {
		_ = r.fs.Remove(tmp)
		return jinfo{}, clean("rename journal", err)
	}
	if err := fsys.SyncDir(r.fs, r.dir); err != nil {
		return jinfo{}, clean("fsync retention directory", err)
	}
	return infoOf(entries, int64(len(buf))), nil
}

// trimJournal drops the entries at or before reach: no kept point needs
// them. It reads the good bytes of the journal and rewrites the rest.
func (r retention) trimJournal(machine string, j jinfo, reach pos) (jinfo, error) {
	if j.Bytes == 0 || j.First.cmp(reach) > 0 {
		return j, nil
	}
	entries, err := r.readJournal(machine, j.Bytes)
	if err != nil {
		return j, err
	}
	i, _ := slices.BinarySearchFunc(entries, reach, func(e jentry, p pos) int { return e.At.cmp(p) })
	for i < len(entries) && entries[i].At.cmp(reach) <= 0 {
		i++
	}
	return r.rewriteJournal(machine, entries[i:])
}
