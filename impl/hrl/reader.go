package hrl

import (
	"fmt"
	"io"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// readChunk is how much a Reader reads from a segment at a time.
const readChunk = 256 << 10

// Reader iterates over a Log's durable, untrimmed records in order. It reads
// the segment files with its own handles, so it sees records once they are
// durable (Sync), and skips records trimmed meanwhile. Like the Log, it is
// not safe for concurrent use, nor for use concurrently with its Log.
type Reader struct {
	l    *Log
	gen  uint64
	next uint64 // the seq Next yields next

	f      fsys.File
	idx    int    // index of the open segment in l.segs, checked before use
	seg    uint64 // first seq of the open segment
	off    int64  // byte offset of record segSeq in the open segment
	segSeq uint64

	buf    []byte // segment bytes [bufOff, bufOff+len(buf))
	bufOff int64
	closed bool
}

// NewReader returns a Reader that starts at record from, or at the oldest
// untrimmed record if from is below it. A Reader from a given seq is how the
// agent re-sends batches that a restarted process server lost.
func (l *Log) NewReader(from uint64) (*Reader, error) {
	if l.closed {
		return nil, ErrClosed
	}
	if l.resyncErr != nil {
		return nil, l.resyncErr
	}
	return &Reader{l: l, gen: l.gen, next: max(from, l.trim+1), buf: make([]byte, 0, readChunk)}, nil
}

// Next returns the next record, or io.EOF when every durable record has been
// returned (more may come after the next Sync: call Next again then). The
// record's Data aliases the Reader's buffer and is valid only until the next
// call to Next or Close. A damaged record puts the Log in the
// resync-required state, and Next returns ErrResyncRequired from then on, as
// it does after the Log is Reset.
func (r *Reader) Next() (Record, error) {
	l := r.l
	switch {
	case r.closed || l.closed:
		return Record{}, ErrClosed
	case l.resyncErr != nil:
		return Record{}, l.resyncErr
	case r.gen != l.gen:
		return Record{}, fmt.Errorf("%w: the log was reset under this reader", ErrResyncRequired)
	}
	if r.next <= l.trim {
		r.next = l.trim + 1
		r.drop()
	}
	for {
		if r.next > l.durableSeq {
			return Record{}, io.EOF
		}
		if r.f != nil && (r.idx >= len(l.segs) || l.segs[r.idx].first != r.seg) {
			r.idx = -1
			for i, s := range l.segs {
				if s.first == r.seg {
					r.idx = i
				}
			}
			if r.idx < 0 {
				r.drop()
			}
		}
		if r.f == nil {
			if err := r.locate(); err != nil {
				return Record{}, err
			}
		}
		end := l.segs[r.idx].size
		if r.off >= end {
			if r.idx+1 >= len(l.segs) {
				return Record{}, r.corrupt("segment ends at byte %d before durable record %d", r.off, r.segSeq)
			}
			nxt := l.segs[r.idx+1].first
			if nxt != r.segSeq {
				return Record{}, r.corrupt("segment ends with record %d, the next starts at %d", r.segSeq-1, nxt)
			}
			if err := r.open(r.idx+1, nxt, 0); err != nil {
				return Record{}, err
			}
			continue
		}
		h, err := r.window(headerLen, end)
		if err != nil {
			return Record{}, err
		}
		size := headerSize(h)
		if size == 0 {
			return Record{}, r.corrupt("impossible header")
		}
		b, err := r.window(int(size), end)
		if err != nil {
			return Record{}, err
		}
		rec, problem := parseRecord(b)
		if problem != "" {
			return Record{}, r.corrupt("%s", problem)
		}
		if rec.Seq != r.segSeq {
			return Record{}, r.corrupt("record %d where %d was expected", rec.Seq, r.segSeq)
		}
		r.off += int64(size)
		r.segSeq++
		if rec.Seq < r.next {
			continue
		}
		r.next++
		return rec, nil
	}
}

// locate opens the segment holding record r.next.
func (r *Reader) locate() error {
	l := r.l
	i := 0
	for j, s := range l.segs {
		if s.first <= r.next {
			i = j
		}
	}
	if i == 0 && r.next >= l.trim+1 {
		return r.open(0, l.trim+1, l.firstPendingOff)
	}
	return r.open(i, l.segs[i].first, 0)
}

// open makes segment l.segs[i] the current one, positioned at record seq,
// which starts at byte off.
func (r *Reader) open(i int, seq uint64, off int64) error {
	r.drop()
	first := r.l.segs[i].first
	f, err := r.l.fs.Open(r.l.segPath(first))
	if err != nil {
		return fmt.Errorf("hrl: read %s: %w", segmentName(r.l.name, first), err)
	}
	r.f, r.idx, r.seg, r.segSeq, r.off = f, i, first, seq, off
	return nil
}

// drop forgets the current segment.
func (r *Reader) drop() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	r.buf = r.buf[:0]
	r.bufOff = 0
}

// window returns the n bytes at r.off, reading from the file when the
// buffer does not hold them. end is the segment's size.
func (r *Reader) window(n int, end int64) ([]byte, error) {
	if r.off >= r.bufOff && r.off+int64(n) <= r.bufOff+int64(len(r.buf)) {
		start := r.off - r.bufOff
		return r.buf[start : start+int64(n)], nil
	}
	if r.off+int64(n) > end {
		return nil, r.corrupt("record of %d bytes at byte %d runs past the segment's end (%d)", n, r.off, end)
	}
	want := int64(max(n, readChunk))
	want = max(int64(n), min(want, end-r.off))
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	got, err := r.f.ReadAt(r.buf, r.off)
	if got < n {
		r.buf = r.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("hrl: read %s at byte %d: %w", segmentName(r.l.name, r.seg), r.off, err)
	}
	r.buf, r.bufOff = r.buf[:got], r.off
	return r.buf[:n], nil
}

// corrupt puts the log in the resync-required state for damage found at the
// reader's position, and returns the error that says so.
func (r *Reader) corrupt(format string, args ...any) error {
	r.l.enterResync(fmt.Sprintf("%s at byte %d: %s", segmentName(r.l.name, r.seg), r.off, fmt.Sprintf(format, args...)))
	r.drop()
	return r.l.resyncErr
}

// Close releases the Reader's file. The Reader must not be used after it.
func (r *Reader) Close() error {
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	r.drop()
	return nil
}
