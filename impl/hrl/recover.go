package hrl

import (
	"encoding/binary"
	"fmt"
	"os"
)

// recover rebuilds the log's state from its files. It returns an error only
// for I/O failures; damage puts the log in the resync-required state.
//
// Torn tail versus corruption: appends only ever extend the last segment
// (earlier segments were fsynced whole before the next one was created), so
// a crash can only damage the end of the last segment, after its last
// durable record. A bad spot there with no valid record anywhere after it is
// such a torn tail and is cut off. Anything else — a bad spot in an earlier
// segment, or one followed by a valid record, a record numbered out of
// sequence, a segment missing from the sequence — means records the agent
// may have acknowledged are lost, so the log requires a resync.
func (l *Log) recover() (Recovery, error) {
	trim, bad, err := readTrim(l.fs, l.trimPath())
	if err != nil {
		return Recovery{}, err
	}
	segs, err := listSegments(l.fs, l.dir, l.name)
	if err != nil {
		return Recovery{}, err
	}
	l.segs, l.trim, l.maxSeen = segs, trim, trim
	for _, s := range segs {
		l.maxSeen = max(l.maxSeen, seqBound(s))
	}
	resync := func(format string, args ...any) (Recovery, error) {
		l.enterResync(fmt.Sprintf(format, args...))
		return Recovery{TrimSeq: trim, LastSeq: trim, ResyncRequired: true, Reason: l.resyncErr.Error()}, nil
	}
	if bad != "" {
		return resync("%s", bad)
	}
	if len(segs) == 0 {
		l.nextSeq, l.durableSeq = trim+1, trim
		l.segs = l.segs[:0]
		if err := l.startSegment(trim+1, false); err != nil {
			return Recovery{}, err
		}
		return Recovery{TrimSeq: trim, LastSeq: trim}, nil
	}
	// Segments wholly below the trim point: a crash interrupted the Trim
	// or Reset that was deleting them. Their content no longer matters.
	for len(segs) >= 2 && segs[1].first <= trim+1 {
		if err := l.removeSegment(segs[0].first); err != nil {
			return Recovery{}, err
		}
		segs = segs[1:]
	}
	l.segs = segs
	if segs[0].first > trim+1 {
		return resync("records %d to %d are missing: the first segment %s starts at %d (trim point %d)",
			trim+1, segs[0].first-1, segmentName(l.name, segs[0].first), segs[0].first, trim)
	}

	var rec Recovery
	expect := segs[0].first
	for i := range segs {
		s := &segs[i]
		name := segmentName(l.name, s.first)
		if s.first != expect {
			return resync("segment %s starts at seq %d, expected %d: a segment is missing", name, s.first, expect)
		}
		b, err := l.fs.ReadFile(l.segPath(s.first))
		if err != nil {
			return Recovery{}, fmt.Errorf("hrl: read %s: %w", name, err)
		}
		s.size = int64(len(b))
		last := i == len(segs)-1
		if !last && len(b) == 0 {
			return resync("segment %s is empty but is not the last one", name)
		}
		off := 0
		for off < len(b) {
			if i == 0 && expect == trim+1 {
				l.firstPendingOff = int64(off)
			}
			size, problem, tornOK := checkRecord(b[off:], expect)
			if problem == "" {
				off += size
				expect++
				continue
			}
			if !last || !tornOK {
				return resync("%s at byte %d: %s", name, off, problem)
			}
			if at, seq, ok := findValid(b, off+1, expect-1); ok {
				return resync("%s at byte %d: %s, yet a valid record (seq %d) follows at byte %d",
					name, off, problem, seq, at)
			}
			rec.TornBytes = int64(len(b) - off)
			if err := l.fs.Truncate(l.segPath(s.first), int64(off)); err != nil {
				return Recovery{}, fmt.Errorf("hrl: cut torn tail of %s: %w", name, err)
			}
			s.size = int64(off)
			break
		}
		if i == 0 && expect == trim+1 {
			l.firstPendingOff = int64(off)
		}
	}
	lastSeq := expect - 1

	l.trim, l.nextSeq, l.durableSeq = trim, lastSeq+1, lastSeq
	active := segs[len(segs)-1]
	if lastSeq <= trim && (active.size > 0 || active.first != trim+1) {
		// Every record is trimmed (possibly the trim point is past a
		// torn tail): start a segment at trim+1 so numbering goes on
		// from there without a gap, and drop the rest.
		l.nextSeq, l.durableSeq, l.firstPendingOff = trim+1, trim, 0
		if err := l.startSegment(trim+1, false); err != nil {
			return Recovery{}, err
		}
		for len(l.segs) > 1 {
			if err := l.removeSegment(l.segs[0].first); err != nil {
				return Recovery{}, err
			}
			l.segs = append(l.segs[:0], l.segs[1:]...)
		}
	} else {
		f, err := l.fs.OpenFile(l.segPath(active.first), os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			return Recovery{}, fmt.Errorf("hrl: open %s: %w", segmentName(l.name, active.first), err)
		}
		l.f, l.syncedOff = f, active.size
		// What Open recovered may still be only in the page cache (the
		// process, not the machine, restarted): make it durable, since
		// it is reported durable from now on.
		if err := f.Sync(); err != nil {
			return Recovery{}, fmt.Errorf("hrl: sync %s: %w", segmentName(l.name, active.first), err)
		}
	}
	l.maxSeen = max(l.maxSeen, lastSeq)
	rec.TrimSeq = trim
	rec.LastSeq = max(lastSeq, trim)
	rec.Records = rec.LastSeq - trim
	return rec, nil
}

// checkRecord checks the record at the start of b, which should be number
// expect. It returns the record's size, or a problem and whether the
// problem is one a crash mid-append can leave (anything but a well-formed
// record with the wrong number).
func checkRecord(b []byte, expect uint64) (size int, problem string, tornOK bool) {
	if len(b) < headerLen {
		return 0, fmt.Sprintf("short header (%d of %d bytes)", len(b), headerLen), true
	}
	n := headerSize(b)
	if n == 0 {
		return 0, fmt.Sprintf("impossible header (size %d, version %d)", binary.LittleEndian.Uint32(b[4:]), b[16]), true
	}
	if int(n) > len(b) {
		return 0, fmt.Sprintf("short record (%d of %d bytes)", len(b), n), true
	}
	r, problem := parseRecord(b[:n])
	if problem != "" {
		return 0, problem, true
	}
	if r.Seq != expect {
		return 0, fmt.Sprintf("sequence gap: record %d where %d was expected", r.Seq, expect), false
	}
	return int(n), "", false
}

// findValid looks for a well-formed record numbered above after at any byte
// offset of b from from on. Its existence proves that a bad spot before it
// is not a torn tail. (A write whose data happens to hold such a record can
// make a torn tail look like corruption: that errs on the safe side, a
// resync, never on losing a write.)
func findValid(b []byte, from int, after uint64) (at int, seq uint64, ok bool) {
	for p := from; p+headerLen <= len(b); p++ {
		n := headerSize(b[p:])
		if n == 0 || p+int(n) > len(b) {
			continue
		}
		if r, problem := parseRecord(b[p : p+int(n)]); problem == "" && r.Seq > after {
			return p, r.Seq, true
		}
	}
	return 0, 0, false
}
