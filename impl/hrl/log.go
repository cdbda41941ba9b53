// Package hrl is the Mobility agent's change-tracking log (the ".hrl" file):
// the filter sees every write to a protected machine's disks, in order, and
// appends it here before the write is acknowledged; the agent drains the log
// in batches to the process server and trims it once the process server has
// acknowledged a batch.
//
// One Log per protected machine keeps the write order across its disks. It is
// a sequence of records numbered 1, 2, 3, … (numbers are never reused, across
// reopens, trims and resets) stored in segment files in one directory. Every
// record carries a CRC-32C. On Open a torn tail — the last record cut short
// by a crash, never acknowledged — is cut off; any other damage (a bad record
// in the middle, a sequence gap, a missing segment) puts the Log in the
// resync-required state: tracking stops until the caller starts a resync and
// calls Reset, because silently skipping a record would lose a write that the
// guest was told is safe.
//
// A Log is not safe for concurrent use: it belongs to one actor, and does no
// I/O other than on its own files in the directory it is given. It never
// reads a clock and starts no goroutines.
//
// The caller's order of operations is:
//
//  1. Append records as writes arrive (they are buffered in memory).
//  2. Sync before acknowledging the writes appended so far (or set
//     Options.SyncEveryAppend): a record is durable only once Sync returns.
//  3. Read durable records with a Reader and send them; Trim once the
//     process server acknowledges them.
package hrl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
)

// Errors. Every error the package returns wraps one of these or an I/O error,
// and its message starts with "hrl:".
var (
	// ErrResyncRequired: the log lost track of some writes (it was damaged,
	// or a Reader met a damaged record); tracking is stopped until Reset.
	ErrResyncRequired = errors.New("hrl: resync required")
	// ErrCorrupt: a record or file failed its checks. It comes wrapped
	// together with ErrResyncRequired.
	ErrCorrupt = errors.New("hrl: corrupt log")
	// ErrClosed: the Log (or the Reader's Log) was closed.
	ErrClosed = errors.New("hrl: log closed")
	// ErrTooLarge: a record's data, length, id or note exceeds MaxDataBytes.
	ErrTooLarge = errors.New("hrl: record too large")
	// ErrInvalid: an argument is out of range (a negative offset, an unknown
	// bookmark kind, a trim beyond the durable records, a bad log name).
	ErrInvalid = errors.New("hrl: invalid argument")
)

// Options tune a Log. The zero value gives the defaults.
type Options struct {
	// SegmentBytes: a new segment file starts at the first append after
	// the current one reaches this size, so that Trim can reclaim space
	// by deleting whole files. That append fsyncs the finished segment
	// (sealed segments are always whole, which is what lets Open tell a
	// torn tail from corruption), so it is slower than the others by
	// whatever the last Sync left unwritten. Default 64 MiB.
	SegmentBytes int64
	// BufferBytes is the size of the write buffer, allocated once at Open.
	// A record larger than the buffer is written straight to the file.
	// Default 1 MiB.
	BufferBytes int
	// SyncEveryAppend makes every Append flush and fsync before it returns,
	// so that every returned sequence number is durable. It costs an fsync
	// per record; the agent normally calls Sync once per batch instead.
	SyncEveryAppend bool
	// FS is the file system holding the log's directory. Default
	// fsys.OS{}; simulations give each machine its own crash-model disk.
	FS fsys.FS
}

const (
	defaultSegmentBytes = 64 << 20
	defaultBufferBytes  = 1 << 20
)

// Recovery reports what Open found.
type Recovery struct {
	// Records is the number of records recovered and not yet trimmed.
	Records uint64
	// TornBytes is how many bytes were cut from the end of the last segment
	// (a record a crash left half-written; it was never acknowledged).
	TornBytes int64
	// TrimSeq is the persisted trim point: records up to it are gone.
	TrimSeq uint64
	// LastSeq is the sequence number of the last recovered record (TrimSeq
	// when none is pending).
	LastSeq uint64
	// ResyncRequired says the log is damaged beyond a torn tail; Reason
	// names the file and byte offset of the damage. The Log returned with
	// it refuses appends and reads until Reset.
	ResyncRequired bool
	Reason         string
}

// Stats describes the records pending in the log.
type Stats struct {
	// FirstSeq is the oldest record not trimmed (TrimSeq+1); it may not be
	// appended yet.
	FirstSeq uint64
	// LastSeq is the newest record appended (0 if none ever was).
	LastSeq uint64
	// DurableSeq is the newest record made durable (by Sync, a segment
	// switch, or Open); a Reader yields records up to it.
	DurableSeq uint64
	// TrimSeq is the trim point: records up to it are gone.
	TrimSeq uint64
	// PendingRecords and PendingBytes count the records after TrimSeq
	// (bytes as stored, headers included, buffered ones too).
	PendingRecords uint64
	PendingBytes   int64
	// Segments is the number of segment files.
	Segments int
}

// Log is one protected machine's change log. See the package comment for
// the contract; methods after Close return ErrClosed.
type Log struct {
	dir, name string
	opts      Options

	segs []segment // sorted by first seq; the last one is the active one
	fs   fsys.FS
	f    fsys.File // the active segment, opened for append; nil when not writable
	wbuf []byte    // buffered records not yet written to f; cap is BufferBytes
	hdr  [headerLen + bookmarkFixed]byte

	nextSeq    uint64
	durableSeq uint64
	syncedOff  int64 // bytes of the active segment known durable
	trim       uint64
	// firstPendingOff is the byte offset of record trim+1 in segs[0] (its
	// size when that record is not written yet).
	firstPendingOff int64
	// maxSeen bounds every sequence number the log's files ever held, so
	// that Reset can continue above them.
	maxSeen uint64

	resyncErr error // non-nil: resync required
	err       error // sticky I/O error: the file state is unknown until reopen
	closed    bool
	gen       uint64 // bumped by Reset: Readers of the old log stop
}

// Open opens the log called name in dir, creating both if needed, and
// recovers it (see Recovery). An error means an I/O failure, not a damaged
// log: damage is reported in Recovery and by the Log's methods returning
// ErrResyncRequired. Open reads one segment at a time into memory, so it
// needs about SegmentBytes of memory. Only one Log may have a log open.
func Open(dir, name string, opts Options) (*Log, Recovery, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, Recovery{}, fmt.Errorf("%w: log name %q", ErrInvalid, name)
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = defaultBufferBytes
	}
	if opts.FS == nil {
		opts.FS = fsys.OS{}
	}
	if err := opts.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, Recovery{}, fmt.Errorf("hrl: open %s: %w", dir, err)
	}
	l := &Log{dir: dir, name: name, opts: opts, fs: opts.FS, wbuf: make([]byte, 0, opts.BufferBytes)}
	if err := l.fs.Remove(l.trimPath() + tmpSuffix); err != nil && !os.IsNotExist(err) {
		return nil, Recovery{}, fmt.Errorf("hrl: open: %w", err)
	}
	rec, err := l.recover()
	if err != nil {
		if l.f != nil {
			l.f.Close()
		}
		return nil, Recovery{}, err
	}
	return l, rec, nil
}

// ResyncRequired is nil while the log is tracking, and otherwise an error
// wrapping ErrResyncRequired that says why.
func (l *Log) ResyncRequired() error { return l.resyncErr }

func (l *Log) enterResync(reason string) {
	if l.resyncErr == nil {
		l.resyncErr = fmt.Errorf("%w: %w: %s", ErrResyncRequired, ErrCorrupt, reason)
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.wbuf = l.wbuf[:0]
}

// writable is the error an operation that changes the log must return, if any.
func (l *Log) writable() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.resyncErr != nil:
		return l.resyncErr
	}
	return l.err
}

// AppendWrite logs a write of data at byte offset off of disk, and returns
// its sequence number. The record is durable only after the next Sync. data
// is copied; the call allocates nothing unless the record is larger than the
// write buffer or starts a new segment.
func (l *Log) AppendWrite(disk uint16, off int64, data []byte) (uint64, error) {
	if err := l.writable(); err != nil {
		return 0, err
	}
	if len(data) > MaxDataBytes {
		return 0, fmt.Errorf("%w: write of %d bytes (max %d)", ErrTooLarge, len(data), MaxDataBytes)
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: write at offset %d", ErrInvalid, off)
	}
	return l.append(TypeWrite, disk, uint32(len(data)), off, nil, data, "")
}

// AppendMeta logs a write of length bytes at off on disk without its data
// (metadata capture mode): the drainer must re-read the range from the disk.
func (l *Log) AppendMeta(disk uint16, off int64, length uint32) (uint64, error) {
	if err := l.writable(); err != nil {
		return 0, err
	}
	if length > MaxDataBytes {
		return 0, fmt.Errorf("%w: write-meta of %d bytes (max %d)", ErrTooLarge, length, MaxDataBytes)
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: write-meta at offset %d", ErrInvalid, off)
	}
	return l.append(TypeWriteMeta, disk, length, off, nil, nil, "")
}

// AppendBookmark logs a bookmark (tag) of the given kind. unixNano is the
// caller's clock reading: the log never reads a clock.
func (l *Log) AppendBookmark(kind proto.Consistency, id string, unixNano int64) (uint64, error) {
	if err := l.writable(); err != nil {
		return 0, err
	}
	if !kind.Valid() {
		return 0, fmt.Errorf("%w: bookmark kind %d", ErrInvalid, kind)
	}
	if len(id) > MaxDataBytes {
		return 0, fmt.Errorf("%w: bookmark id of %d bytes", ErrTooLarge, len(id))
	}
	fixed := l.hdr[headerLen : headerLen+bookmarkFixed]
	binary.LittleEndian.PutUint64(fixed, uint64(unixNano))
	fixed[8] = byte(kind)
	return l.append(TypeBookmark, 0, 0, 0, fixed, nil, id)
}

// AppendRevoke logs that the bookmark id, appended earlier, must be ignored
// (the multi-VM tag protocol revoked it after insertion).
func (l *Log) AppendRevoke(id string) (uint64, error) {
	if err := l.writable(); err != nil {
		return 0, err
	}
	if len(id) > MaxDataBytes {
		return 0, fmt.Errorf("%w: revoke id of %d bytes", ErrTooLarge, len(id))
	}
	return l.append(TypeRevoke, 0, 0, 0, nil, nil, id)
}

// AppendBitmap logs that the filter fell back to bitmap mode for disk: the
// disk needs a resync. note says why, for the operator.
func (l *Log) AppendBitmap(disk uint16, note string) (uint64, error) {
	if err := l.writable(); err != nil {
		return 0, err
	}
	if len(note) > MaxDataBytes {
		return 0, fmt.Errorf("%w: bitmap note of %d bytes", ErrTooLarge, len(note))
	}
	return l.append(TypeBitmap, disk, 0, 0, nil, nil, note)
}

// append encodes one record whose body is fixed, then data, then s.
func (l *Log) append(t RecordType, disk uint16, length uint32, off int64, fixed, data []byte, s string) (uint64, error) {
	seq := l.nextSeq
	size := headerLen + len(fixed) + len(data) + len(s)
	if active := l.segs[len(l.segs)-1]; active.size+int64(len(l.wbuf)) >= l.opts.SegmentBytes {
		if err := l.startSegment(seq, true); err != nil {
			return 0, err
		}
	}
	if size > cap(l.wbuf)-len(l.wbuf) {
		if err := l.flush(); err != nil {
			return 0, err
		}
	}
	if size <= cap(l.wbuf) {
		start := len(l.wbuf)
		l.wbuf = l.wbuf[:start+size]
		rec := l.wbuf[start:]
		putHeader(rec, uint32(size), seq, t, disk, length, off)
		n := headerLen + copy(rec[headerLen:], fixed)
		n += copy(rec[n:], data)
		copy(rec[n:], s)
		binary.LittleEndian.PutUint32(rec, crc32.Checksum(rec[4:], castagnoli))
	} else if err := l.writeDirect(size, seq, t, disk, length, off, fixed, data, s); err != nil {
		return 0, err
	}
	l.nextSeq++
	if l.opts.SyncEveryAppend {
		if err := l.sync(); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// writeDirect writes a record too large for the buffer (which is empty)
// straight to the active segment.
func (l *Log) writeDirect(size int, seq uint64, t RecordType, disk uint16, length uint32, off int64, fixed, data []byte, s string) error {
	h := make([]byte, headerLen, headerLen+len(fixed))
	putHeader(h, uint32(size), seq, t, disk, length, off)
	h = append(h, fixed...)
	sb := []byte(s)
	crc := crc32.Checksum(h[4:], castagnoli)
	crc = crc32.Update(crc, castagnoli, data)
	crc = crc32.Update(crc, castagnoli, sb)
	binary.LittleEndian.PutUint32(h, crc)
	for _, p := range [][]byte{h, data, sb} {
		if _, err := l.f.Write(p); err != nil {
			return l.fail("write", err)
		}
	}
	l.segs[len(l.segs)-1].size += int64(size)
	return nil
}

// fail records a write-path I/O error: after it the file's contents are
// unknown, so the log refuses further appends until it is reopened (whose
// recovery cuts any half-written record).
func (l *Log) fail(op string, err error) error {
	if l.err == nil {
		l.err = fmt.Errorf("hrl: %s %s: %w", op, segmentName(l.name, l.segs[len(l.segs)-1].first), err)
	}
	return l.err
}

// flush writes the buffer to the active segment (no fsync).
func (l *Log) flush() error {
	if len(l.wbuf) == 0 {
		return nil
	}
	if _, err := l.f.Write(l.wbuf); err != nil {
		return l.fail("write", err)
	}
	l.segs[len(l.segs)-1].size += int64(len(l.wbuf))
	l.wbuf = l.wbuf[:0]
	return nil
}

func (l *Log) sync() error {
	if err := l.flush(); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		return l.fail("sync", err)
	}
	l.durableSeq = l.nextSeq - 1
	l.syncedOff = l.segs[len(l.segs)-1].size
	return nil
}

// Flush hands buffered records to the operating system (a write, no
// fsync). A record flushed survives the crash of the process that appended
// it, though not a power loss; the filter flushes before it acknowledges a
// guest write, and Syncs before the agent drains.
func (l *Log) Flush() error {
	if err := l.writable(); err != nil {
		return err
	}
	return l.flush()
}

// Sync writes the buffered records and fsyncs them: when it returns, every
// record appended so far survives a crash. The agent calls it before
// acknowledging the writes it logged.
func (l *Log) Sync() error {
	if err := l.writable(); err != nil {
		return err
	}
	return l.sync()
}

// startSegment makes a new, empty segment whose first record will be first
// the active one. keep says whether the current active segment's records
// matter: if so it is flushed and fsynced first (sealed segments are always
// complete and durable); if not (Trim just discarded all of it) its
// buffered records are dropped.
func (l *Log) startSegment(first uint64, keep bool) error {
	if keep {
		if err := l.sync(); err != nil {
			return err
		}
	}
	l.wbuf = l.wbuf[:0]
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, err := l.fs.OpenFile(l.segPath(first), os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err == nil {
		if err = fsys.SyncDir(l.fs, l.dir); err != nil {
			f.Close()
		}
	}
	if err != nil {
		err = fmt.Errorf("hrl: create %s: %w", segmentName(l.name, first), err)
		if l.err == nil {
			l.err = err
		}
		return err
	}
	l.f = f
	l.segs = append(l.segs, segment{first: first})
	l.syncedOff = 0
	return nil
}

// Trim discards every record up to and including upto: the process server
// acknowledged them. upto must not exceed Stats().DurableSeq (nothing else
// can have been read); a trim at or below the current trim point does
// nothing. The trim point is persisted before Trim returns, trimmed records
// are never yielded again, and segment files holding only trimmed records
// are deleted.
func (l *Log) Trim(upto uint64) error {
	if err := l.writable(); err != nil {
		return err
	}
	if upto <= l.trim {
		return nil
	}
	if upto > l.durableSeq {
		return fmt.Errorf("%w: trim to %d beyond the durable records (up to %d)", ErrInvalid, upto, l.durableSeq)
	}
	if err := l.writeTrim(upto); err != nil {
		return err
	}
	oldFirst, fromSeq, fromOff := l.segs[0].first, l.trim+1, l.firstPendingOff
	l.trim = upto
	active := l.segs[len(l.segs)-1]
	if upto == l.nextSeq-1 && active.size+int64(len(l.wbuf)) > 0 {
		// Everything is trimmed: start afresh so the active segment's
		// space is reclaimed too.
		if err := l.startSegment(upto+1, false); err != nil {
			return err
		}
	}
	for len(l.segs) >= 2 && l.segs[1].first <= upto+1 {
		if err := l.removeSegment(l.segs[0].first); err != nil {
			return err
		}
		l.segs = append(l.segs[:0], l.segs[1:]...)
	}
	if l.segs[0].first != oldFirst {
		fromSeq, fromOff = l.segs[0].first, 0
	}
	off, err := l.skip(fromSeq, fromOff, upto+1)
	if err != nil {
		return err
	}
	l.firstPendingOff = off
	return nil
}

// skip walks the headers of segs[0] from record seq at byte off to record
// target, and returns target's offset. The records walked are durable, so
// they are in the file.
func (l *Log) skip(seq uint64, off int64, target uint64) (int64, error) {
	if seq >= target {
		return off, nil
	}
	f := l.f
	if len(l.segs) > 1 {
		var err error
		if f, err = l.fs.Open(l.segPath(l.segs[0].first)); err != nil {
			return 0, fmt.Errorf("hrl: trim: %w", err)
		}
		defer f.Close()
	}
	h := l.hdr[:headerLen]
	for ; seq < target; seq++ {
		if _, err := f.ReadAt(h, off); err != nil {
			return 0, fmt.Errorf("hrl: trim: read %s at byte %d: %w", segmentName(l.name, l.segs[0].first), off, err)
		}
		size := headerSize(h)
		if got := binary.LittleEndian.Uint64(h[8:]); size == 0 || got != seq {
			l.enterResync(fmt.Sprintf("%s at byte %d: expected record %d, found header of seq %d size %d",
				segmentName(l.name, l.segs[0].first), off, seq, got, size))
			return 0, l.resyncErr
		}
		off += int64(size)
	}
	return off, nil
}

// ResetAfter is Reset with every sequence number up to floor counted as
// used: the next record gets one above floor at least. A caller that gave
// out sequence numbers for records the log never held (kept in its memory,
// then dropped or lost in a crash) keeps its numbering increasing.
func (l *Log) ResetAfter(floor uint64) error {
	if l.closed {
		return ErrClosed
	}
	l.maxSeen = max(l.maxSeen, floor)
	return l.Reset()
}

// Reset starts a fresh, empty log after the caller has started a resync of
// the machine's disks: every record is dropped, the resync-required state is
// cleared, and the next sequence number is above every one the old log
// files held. Readers opened before Reset return ErrResyncRequired. Reset
// may be called in any state but closed.
func (l *Log) Reset() error {
	if l.closed {
		return ErrClosed
	}
	segs, err := listSegments(l.fs, l.dir, l.name)
	if err != nil {
		return err
	}
	base := max(l.maxSeen, l.trim)
	if l.nextSeq > 0 { // 0 when Open found damage
		base = max(base, l.nextSeq-1)
	}
	for _, s := range segs {
		base = max(base, seqBound(s))
	}
	if base >= 1<<63 {
		return fmt.Errorf("%w: sequence numbers exhausted (%d)", ErrCorrupt, base)
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.wbuf = l.wbuf[:0]
	l.segs = l.segs[:0]
	l.err = nil
	// Order matters for a crash in between: the new segment first (so its
	// name marks everything before it trimmed), then the trim point, then
	// the removals, which a later Open finishes if need be.
	if err := l.startSegment(base+1, false); err != nil {
		return err
	}
	if err := l.writeTrim(base); err != nil {
		l.err = err
		return err
	}
	for _, s := range segs {
		if err := l.removeSegment(s.first); err != nil {
			l.err = err
			return err
		}
	}
	l.nextSeq, l.durableSeq, l.trim, l.maxSeen = base+1, base, base, base
	l.firstPendingOff = 0
	l.resyncErr = nil
	l.gen++
	return nil
}

// seqBound bounds the sequence numbers a segment can hold (its name's
// included, so that no new segment reuses a name): its records are numbered
// from its first on and each takes at least headerLen bytes.
func seqBound(s segment) uint64 {
	return max(s.first, s.first-1+uint64(s.size/headerLen))
}

// Stats reports the pending records.
func (l *Log) Stats() Stats {
	var bytes int64
	for _, s := range l.segs {
		bytes += s.size
	}
	bytes += int64(len(l.wbuf)) - l.firstPendingOff
	last := l.nextSeq - 1
	if l.resyncErr != nil || last < l.trim {
		last, bytes = l.trim, 0
	}
	return Stats{
		FirstSeq:       l.trim + 1,
		LastSeq:        last,
		DurableSeq:     l.durableSeq,
		TrimSeq:        l.trim,
		PendingRecords: last - l.trim,
		PendingBytes:   bytes,
		Segments:       len(l.segs),
	}
}

// Close flushes and fsyncs the buffered records (unless the log is in an
// error or resync state) and closes the files.
func (l *Log) Close() error {
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	var err error
	if l.resyncErr == nil && l.err == nil && l.f != nil {
		err = l.sync()
	}
	if l.f != nil {
		if cerr := l.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("hrl: close: %w", cerr)
		}
		l.f = nil
	}
	return err
}
