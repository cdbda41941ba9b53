package agent

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/proto"
)

// Mode is the filter's capture mode, as in the real filter driver.
type Mode uint8

// The capture modes, in the order the filter degrades through them.
const (
	// ModeData logs every write with its data.
	ModeData Mode = iota
	// ModeMetadata logs only offset and length; the drainer re-reads the
	// data from the disk, so no bookmark can be honoured meanwhile.
	ModeMetadata
	// ModeBitmap stopped logging: the machine needs a resync.
	ModeBitmap
)

// String names m as the Heartbeat and Status report it.
func (m Mode) String() string {
	switch m {
	case ModeData:
		return "data"
	case ModeMetadata:
		return "metadata"
	case ModeBitmap:
		return "bitmap"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Filter errors.
var (
	// ErrFilterClosed: the filter was closed (machine shutdown or crash).
	ErrFilterClosed = errors.New("agent: filter closed")
	// ErrNotConsistent: a bookmark was refused because the log cannot
	// honour it now (not in data mode, or metadata records not yet re-read).
	ErrNotConsistent = errors.New("agent: bookmark cannot be honoured")
	// ErrTracking: the filter stopped tracking (bitmap mode or a damaged log).
	ErrTracking = errors.New("agent: change tracking stopped")
)

// Defaults of the capture budgets.
const (
	DefaultDataBudget = 64 << 20
	DefaultMetaBudget = 1 << 20
)

// FilterOptions tune a Filter. The zero value gives the defaults.
type FilterOptions struct {
	// DataBudget is the pending (unacknowledged) log bytes up to which
	// writes are logged with their data. Default DefaultDataBudget.
	DataBudget int64
	// MetaBudget is the pending records up to which metadata records are
	// logged; past it the filter falls back to bitmap mode. Default
	// DefaultMetaBudget.
	MetaBudget int64
	// Log tunes the hrl.Log.
	Log hrl.Options
}

// Filter is the machine's write filter: it owns the change log (hrl.Log)
// and the capture mode. It is "kernel" state: it outlives agent restarts
// (the guest keeps it, see Guest) and is used from two sides:
//
//   - the guest's write path calls Capture for every write, before the
//     write reaches the disk and is acknowledged (another thread in the real
//     world, the simulator's goroutine in the sim);
//   - the agent inserts bookmarks and resets from its Handle, and fsyncs,
//     reads and trims from its ops (under runtime.Real, on an op's
//     goroutine: the agent runs one drain and one trim at a time).
//
// Every method takes the filter's mutex, so both sides may call at any
// time. Each method that appends leaves the log's user-space buffer empty
// (it Flushes before unlocking), which is what makes a record "seen by the
// operating system" by the time a guest write is acknowledged: that
// survives an agent crash, not a machine crash. Where the guest's disks are
// write-through (a hypervisor honouring FUA, as the simulator's are), a
// machine crash would then keep a write whose record it lost: run the log
// with hrl.Options.SyncEveryAppend, so that the record is durable first.
//
// Metadata records carry no data: the drainer re-reads the range from the
// disk after the record was logged. Capture runs before the guest's write
// reaches the disk, so a drainer on another thread could read the old data
// of the very last write; the simulator serialises the two, and a real
// driver must complete the write before the range is read.
type Filter struct {
	mu         sync.Mutex
	log        *hrl.Log
	mode       Mode
	dataBudget int64
	metaBudget int64
	closed     bool

	// metaLast is the newest record whose data must be re-read from the
	// disk (a metadata record, or any record recovered at open, whose type
	// the filter did not look at); drained is the newest record the drainer
	// has read, re-reads included. metaLast > drained: no bookmark.
	metaLast, drained uint64
	// stopReason says why tracking stopped ("" while tracking).
	stopReason string

	capturedBytes, capturedWrites int64
	transitions                   [3]int64 // entries into each mode

	// The drainer's reader and a record it read but could not use yet.
	rd     *hrl.Reader
	rdNext uint64
	held   *hrl.Record

	// Gate is the write gate of the multi-VM tag protocol (gate.go): its
	// methods are the Filter's, so the guest's write path sees one driver.
	Gate
}

// FilterStats is a snapshot of a Filter.
type FilterStats struct {
	Mode           Mode
	PendingBytes   int64  // log bytes not trimmed
	PendingRecords uint64 // records not trimmed
	LastSeq        uint64 // newest record appended
	DurableSeq     uint64 // newest record fsynced
	TrimSeq        uint64
	CapturedBytes  int64 // bytes the guest wrote through the filter
	CapturedWrites int64
	// UndrainedMeta says records exist whose data must still be re-read
	// from the disk: no bookmark can be honoured.
	UndrainedMeta bool
	// StopReason says why tracking stopped (bitmap or damaged log); "" while
	// tracking.
	StopReason string
	// EnteredMetadata and EnteredBitmap count mode degradations;
	// EnteredData counts returns to data mode.
	EnteredData, EnteredMetadata, EnteredBitmap int64
}

// OpenFilter opens (creating if needed) the change log of machine in dir
// and returns the filter, in data mode, with what the log's recovery found.
// When the recovery says ResyncRequired the filter is stopped (Capture logs
// nothing) until Reset. Records recovered from an earlier run are treated as
// possibly metadata records: no bookmark is honoured until the drainer has
// read past them.
func OpenFilter(dir, machine string, opts FilterOptions) (*Filter, hrl.Recovery, error) {
	if opts.DataBudget <= 0 {
		opts.DataBudget = DefaultDataBudget
	}
	if opts.MetaBudget <= 0 {
		opts.MetaBudget = DefaultMetaBudget
	}
	l, rec, err := hrl.Open(dir, machine, opts.Log)
	if err != nil {
		return nil, rec, fmt.Errorf("agent: open filter of %s: %w", machine, err)
	}
	f := &Filter{log: l, dataBudget: opts.DataBudget, metaBudget: opts.MetaBudget}
	f.revoke = f.RevokeBookmark
	f.metaLast = rec.LastSeq
	f.drained = rec.TrimSeq
	if rec.ResyncRequired {
		f.mode = ModeBitmap
		f.stopReason = "change log damaged: " + rec.Reason
	}
	return f, rec, nil
}

// Capture logs a guest write of data at byte offset off of disk and returns
// its log sequence number (the last one when the write was split into
// several records), or 0 when nothing was logged (bitmap mode, a stopped or
// closed filter). It never fails the guest's write: a log error stops
// tracking, which makes the machine need a resync. It keeps nothing of data
// past the call and allocates nothing in data mode.
func (f *Filter) Capture(disk int, off int64, data []byte) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0
	}
	f.capturedBytes += int64(len(data))
	f.capturedWrites++
	if f.mode == ModeBitmap {
		return 0
	}
	if disk < 0 || disk > math.MaxUint16 {
		f.stop("write to disk index out of range")
		return 0
	}
	var last uint64
	for rest := data; ; {
		n := min(len(rest), hrl.MaxDataBytes)
		seq, err := f.captureOne(uint16(disk), off, rest[:n])
		if err != nil {
			f.stop("change log: " + err.Error())
			return 0
		}
		if seq == 0 { // fell back to bitmap mode
			return 0
		}
		last = seq
		off += int64(n)
		if rest = rest[n:]; len(rest) == 0 {
			break
		}
	}
	if err := f.log.Flush(); err != nil {
		f.stop("change log: " + err.Error())
		return 0
	}
	return last
}

// recordOverhead approximates a write record's header bytes in the log.
const recordOverhead = 32

// captureOne logs one record of at most hrl.MaxDataBytes in the current
// mode, degrading it first if the budget says so. It returns 0 and no error
// when it fell back to bitmap mode.
func (f *Filter) captureOne(disk uint16, off int64, data []byte) (uint64, error) {
	st := f.log.Stats()
	f.reconsider(st)
	if f.mode == ModeData {
		if st.PendingBytes+int64(len(data))+recordOverhead <= f.dataBudget {
			return f.log.AppendWrite(disk, off, data)
		}
		f.enter(ModeMetadata)
	}
	if int64(st.PendingRecords) >= f.metaBudget {
		note := fmt.Sprintf("metadata budget of %d pending records exceeded", f.metaBudget)
		if _, err := f.log.AppendBitmap(disk, note); err != nil {
			return 0, err
		}
		f.stopReason = note
		f.enter(ModeBitmap)
		return 0, nil
	}
	seq, err := f.log.AppendMeta(disk, off, uint32(len(data)))
	if err == nil {
		f.metaLast = seq
	}
	return seq, err
}

// reconsider returns to data mode from metadata mode once the pending bytes
// fell under half the data budget and every metadata record was re-read
// (hysteresis: the mode does not flap at the budget's edge).
func (f *Filter) reconsider(st hrl.Stats) {
	if f.mode == ModeMetadata && st.PendingBytes < f.dataBudget/2 && f.metaLast <= f.drained {
		f.enter(ModeData)
	}
}

func (f *Filter) enter(m Mode) {
	if f.mode != m {
		f.mode = m
		f.transitions[m]++
	}
}

// stop makes the filter stop tracking: bitmap mode, resync needed.
func (f *Filter) stop(reason string) {
	if f.stopReason == "" {
		f.stopReason = reason
	}
	f.enter(ModeBitmap)
}

// InsertBookmark appends a bookmark of kind, ordered with the writes around
// it, and returns its sequence number. It refuses (ErrNotConsistent) when
// the log cannot honour a bookmark: outside data mode, or while metadata
// records wait to be re-read.
func (f *Filter) InsertBookmark(kind proto.Consistency, id string, unixNano int64) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, ErrFilterClosed
	}
	f.reconsider(f.log.Stats())
	switch {
	case f.mode != ModeData:
		return 0, fmt.Errorf("%w: %s mode", ErrNotConsistent, f.mode)
	case f.metaLast > f.drained:
		return 0, fmt.Errorf("%w: metadata records up to %d not re-read yet", ErrNotConsistent, f.metaLast)
	}
	seq, err := f.log.AppendBookmark(kind, id, unixNano)
	if err == nil {
		err = f.log.Flush()
	}
	if err != nil {
		f.stop("change log: " + err.Error())
		return 0, fmt.Errorf("agent: bookmark %s: %w", id, err)
	}
	f.tagged(id)
	return seq, nil
}

// RevokeBookmark appends a revoke of bookmark id (the multi-VM tag protocol
// withdrew it).
func (f *Filter) RevokeBookmark(id string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, ErrFilterClosed
	}
	seq, err := f.log.AppendRevoke(id)
	if err == nil {
		err = f.log.Flush()
	}
	if err != nil {
		return 0, fmt.Errorf("agent: revoke %s: %w", id, err)
	}
	return seq, nil
}

// NextSeq is the sequence number the next record will get (unless another
// is appended first).
func (f *Filter) NextSeq() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.Stats().LastSeq + 1
}

// Mode is the current capture mode.
func (f *Filter) Mode() Mode {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.reconsider(f.log.Stats())
	}
	return f.mode
}

// StopReason says why tracking stopped — bitmap mode, a damaged log, an I/O
// error — or "" while the filter tracks. A stopped filter needs Reset.
func (f *Filter) StopReason() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopReason
}

// Stats returns a snapshot of the filter.
func (f *Filter) Stats() FilterStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.log.Stats()
	if !f.closed {
		f.reconsider(st)
	}
	return FilterStats{
		Mode: f.mode, PendingBytes: st.PendingBytes, PendingRecords: st.PendingRecords,
		LastSeq: st.LastSeq, DurableSeq: st.DurableSeq, TrimSeq: st.TrimSeq,
		CapturedBytes: f.capturedBytes, CapturedWrites: f.capturedWrites,
		UndrainedMeta: f.metaLast > f.drained, StopReason: f.stopReason,
		EnteredData: f.transitions[ModeData], EnteredMetadata: f.transitions[ModeMetadata],
		EnteredBitmap: f.transitions[ModeBitmap],
	}
}

// Sync makes every record appended so far durable (fsync); the drainer
// reads only durable records.
func (f *Filter) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrFilterClosed
	}
	if err := f.log.Sync(); err != nil {
		f.stop("change log: " + err.Error())
		return fmt.Errorf("agent: sync change log: %w", err)
	}
	return nil
}

// Read returns durable records from seq from on, copied: as many as fit in
// maxBytes of write data (metadata records count their length, since the
// drainer will read it), and at least one when any is available. It returns
// no records and no error when none is durable yet.
func (f *Filter) Read(from uint64, maxBytes int64) ([]hrl.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrFilterClosed
	}
	if f.held != nil && f.held.Seq != from {
		f.held = nil
	}
	if f.rd == nil || (f.held == nil && f.rdNext != from) {
		f.dropReader()
		rd, err := f.log.NewReader(from)
		if err != nil {
			return nil, fmt.Errorf("agent: read change log: %w", err)
		}
		f.rd, f.rdNext = rd, from
	}
	var out []hrl.Record
	var size int64
	for {
		var r hrl.Record
		if f.held != nil {
			r, f.held = *f.held, nil
		} else {
			next, err := f.rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				f.dropReader()
				f.stop("change log: " + err.Error())
				return nil, fmt.Errorf("agent: read change log: %w", err)
			}
			r = next
			r.Data = append([]byte(nil), next.Data...)
			f.rdNext = r.Seq + 1
		}
		n := int64(len(r.Data))
		if r.Type == hrl.TypeWriteMeta {
			n = int64(r.Len)
		}
		if len(out) > 0 && n > 0 && size+n > maxBytes {
			f.held = &r
			break
		}
		out = append(out, r)
		size += n
	}
	return out, nil
}

func (f *Filter) dropReader() {
	if f.rd != nil {
		f.rd.Close()
		f.rd = nil
	}
	f.held = nil
}

// MarkDrained tells the filter the drainer has read every record up to seq,
// metadata records re-read from the disk: bookmarks become possible again
// once no metadata record remains unread.
func (f *Filter) MarkDrained(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drained = max(f.drained, seq)
	if !f.closed {
		f.reconsider(f.log.Stats())
	}
}

// Trim discards records up to upto: the process server has them.
func (f *Filter) Trim(upto uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrFilterClosed
	}
	if err := f.log.Trim(upto); err != nil {
		return fmt.Errorf("agent: trim change log to %d: %w", upto, err)
	}
	f.reconsider(f.log.Stats())
	return nil
}

// Reset drops every record and restarts tracking in data mode, because a
// (re)synchronisation starts: the disks are about to be read whole. It
// returns the sequence number of the first record logged after it.
func (f *Filter) Reset() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, ErrFilterClosed
	}
	f.dropReader()
	if err := f.log.Reset(); err != nil {
		f.stop("change log: " + err.Error())
		return 0, fmt.Errorf("agent: reset change log: %w", err)
	}
	f.stopReason = ""
	f.enter(ModeData)
	st := f.log.Stats()
	f.metaLast, f.drained = st.LastSeq, st.LastSeq
	return st.LastSeq + 1, nil
}

// Close flushes, fsyncs and closes the log (an orderly shutdown). Capture
// logs nothing afterwards.
func (f *Filter) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrFilterClosed
	}
	f.closed = true
	f.dropReader()
	if err := f.log.Close(); err != nil {
		return fmt.Errorf("agent: close filter: %w", err)
	}
	return nil
}

// CrashClose closes the log's files as a machine crash would: without
// flushing the log's user-space buffer. Every Filter method leaves that
// buffer empty (records reach the operating system before the guest's
// write is acknowledged), so nothing acknowledged is lost; hrl.Log offers
// no close that skips its final fsync, which a crash may or may not have
// done anyway. Capture logs nothing afterwards.
func (f *Filter) CrashClose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	f.dropReader()
	f.log.Close()
}

// requireRedrain makes the filter refuse bookmarks until the drainer has
// read every record logged so far again: a restarted agent re-reads the
// untrimmed records, metadata ones from the disk, and a bookmark inserted
// before such a re-read could not be honoured.
func (f *Filter) requireRedrain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.log.Stats()
	f.metaLast = max(f.metaLast, st.LastSeq)
	f.drained = st.TrimSeq
}

func (f *Filter) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}
