package agent

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/v2a-dr/v2a/impl/fsys"
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
	// ModeBitmap logs nothing: only the dirty-block bitmap records which
	// blocks were written. Once the log is drained the filter turns the
	// bitmap into metadata records (a bitmap resync of exactly those
	// blocks) and goes back to metadata, then data mode. A filter without a
	// bitmap (no disk sizes, or write-through) stops tracking instead: the
	// machine needs a full resync.
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
	// DiskSizes are the protected disks' sizes in bytes, in the order
	// Capture numbers them: the filter keeps a dirty-block bitmap of them
	// (in memory and in a file beside the log). Without them it keeps
	// none.
	DiskSizes []int64
	// WriteThrough hands every record to the log (a write(2)) before
	// Capture returns, as a filter that lives in the agent's own process
	// must (it dies with the process); such a filter keeps no bitmap. By
	// default the filter is kernel memory: records stay in it until the
	// drainer's Sync moves them to the log.
	WriteThrough bool
}

// memRec is a record kept in the filter's memory, not yet in the log.
type memRec struct {
	typ      hrl.RecordType
	disk     uint16
	kind     proto.Consistency
	n        uint32 // write length (TypeWrite, TypeWriteMeta)
	off      int64
	at       int    // TypeWrite: where its data starts in the arena
	s        string // bookmark or revoke id, bitmap note
	unixNano int64
}

// Filter is the machine's write filter: it owns the captured changes not yet
// drained (in its own memory, then in the change log, an hrl.Log), the
// capture mode and the dirty-block bitmap (bitmap.go). It is "kernel" state: it outlives agent restarts
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
// time. In data mode Capture copies the write into the filter's memory
// (an arena reused once drained: no allocation, no system call); the
// drainer's Sync moves the records to the log and fsyncs it. The memory is
// the driver's: it survives an agent crash (the restarted agent drains it)
// and is lost in a machine crash. Against that, a filter with disk sizes
// keeps a dirty-block bitmap, a bit per 4 KiB block written since the
// oldest change not yet acknowledged, whose bits reach a file on the
// machine's disk before the guest's write is acknowledged; reopened after
// a crash (the file not marked clean), the filter drops the log and turns
// the bitmap into metadata records: a resync of exactly the dirty blocks.
// With WriteThrough each record reaches the log at once instead (and is
// durable there with hrl.Options.SyncEveryAppend).
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

	// The filter's memory: records captured and not yet moved to the log,
	// and the write data they hold; memBytes counts them as the log would.
	mem          []memRec
	arena        []byte
	memBytes     int64
	writeThrough bool

	// bm is the dirty-block bitmap (nil: none kept). resyncs and
	// resyncBlocks count bitmap resyncs and the blocks they covered;
	// lastResync is the newest one's block count.
	bm                    *dirtyMap
	resyncs, resyncBlocks int64
	lastResync            int64
	recoveredBitmap       bool

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
	// MemoryRecords and MemoryBytes are the records in the filter's memory,
	// not yet in the log (part of the pending counts).
	MemoryRecords int
	MemoryBytes   int64
	// Bitmap says the filter keeps a dirty-block bitmap; DirtyBlocks is
	// its count of set bits, DirtySinceWrite the CapturedWrites count when
	// the writes it covers began.
	Bitmap          bool
	DirtyBlocks     int64
	DirtySinceWrite int64
	// BitmapResyncs counts the bitmap resyncs (after bitmap mode, or at an
	// open after a machine crash); ResyncBlocks the blocks they covered,
	// LastResyncBlocks the newest one's.
	BitmapResyncs, ResyncBlocks, LastResyncBlocks int64
	// CrashResync says the filter was opened after a machine crash and
	// resynced its bitmap.
	CrashResync bool
}

// OpenFilter opens (creating if needed) the change log of machine in dir
// and returns the filter, in data mode, with what the log's recovery found.
// When the recovery says ResyncRequired the filter is stopped (Capture logs
// nothing) until Reset. Records recovered from an earlier run are treated as
// possibly metadata records: no bookmark is honoured until the drainer has
// read past them.
//
// With disk sizes, the dirty-block bitmap file (machine + ".bitmap" in dir)
// is opened too. If it says the filter was not closed in order (a machine
// crash), the log's records are dropped (it lost the memory's and the page
// cache's) and the bitmap's blocks are logged as metadata records: the
// filter starts in metadata mode, and Stats reports the resync.
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
	f := &Filter{log: l, dataBudget: opts.DataBudget, metaBudget: opts.MetaBudget, writeThrough: opts.WriteThrough}
	f.revoke = f.RevokeBookmark
	f.metaLast = rec.LastSeq
	f.drained = rec.TrimSeq
	if rec.ResyncRequired {
		f.mode = ModeBitmap
		f.stopReason = "change log damaged: " + rec.Reason
	}
	if len(opts.DiskSizes) == 0 || opts.WriteThrough {
		return f, rec, nil
	}
	fsy := opts.Log.FS
	if fsy == nil {
		fsy = fsys.OS{}
	}
	bm, old, clean, err := openDirtyMap(fsy, dir, machine+".bitmap", opts.DiskSizes)
	if err != nil {
		// Without a bitmap a crash could not be told from a clean stop.
		f.stop("dirty-block bitmap: " + err.Error())
		return f, rec, nil
	}
	f.bm = bm
	st := l.Stats()
	bm.curFrom = st.LastSeq + 1
	if clean || rec.ResyncRequired {
		return f, rec, nil
	}
	// A machine crash: the log may lack what the memory held; the bitmap
	// names every block written since the oldest change not acknowledged.
	// Numbering goes on above every number given out (the reservation).
	if err := l.ResetAfter(bm.ceiling); err != nil {
		f.stop("change log: " + err.Error())
		return f, rec, nil
	}
	copy(bm.cur, old)
	f.recoveredBitmap = true
	f.metaLast, f.drained = l.Stats().LastSeq, l.Stats().LastSeq
	f.resyncBitmap(old)
	return f, rec, nil
}

// resyncBitmap logs the blocks set in words as metadata records (the
// drainer re-reads them from the disks) and enters metadata mode; with no
// block set it enters data mode.
func (f *Filter) resyncBitmap(words []uint64) {
	runs, blocks := f.bm.runs(words, hrl.MaxDataBytes)
	f.resyncs++
	f.resyncBlocks += blocks
	f.lastResync = blocks
	if len(runs) == 0 {
		f.enter(ModeData)
		return
	}
	f.enter(ModeMetadata)
	for _, r := range runs {
		f.metaLast = f.queue(memRec{typ: hrl.TypeWriteMeta, disk: uint16(r.disk), off: r.off, n: uint32(r.n)})
	}
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
	if f.bm != nil && f.stopReason == "" {
		if err := f.bm.mark(disk, off, len(data)); err != nil {
			f.stop(err.Error())
		}
	}
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
	if f.writeThrough {
		if err := f.spill(); err != nil {
			f.stop("change log: " + err.Error())
			return 0
		}
	}
	return last
}

// queue keeps r in the filter's memory and returns its sequence number:
// the log's next, counting the records already in memory.
func (f *Filter) queue(r memRec) uint64 {
	f.mem = append(f.mem, r)
	f.memBytes += recordOverhead + int64(len(r.s))
	if r.typ == hrl.TypeWrite {
		f.memBytes += int64(r.n)
	}
	seq := f.log.Stats().LastSeq + uint64(len(f.mem))
	if f.bm != nil && f.stopReason == "" {
		if err := f.bm.reserve(seq); err != nil {
			f.stop(err.Error())
		}
	}
	return seq
}

// spill moves the records in memory to the log, in order, and hands them
// to the operating system (a write, no fsync). On an error the records not
// moved stay in memory.
func (f *Filter) spill() error {
	for i, r := range f.mem {
		var err error
		switch r.typ {
		case hrl.TypeWrite:
			_, err = f.log.AppendWrite(r.disk, r.off, f.arena[r.at:r.at+int(r.n)])
		case hrl.TypeWriteMeta:
			_, err = f.log.AppendMeta(r.disk, r.off, r.n)
		case hrl.TypeBookmark:
			_, err = f.log.AppendBookmark(r.kind, r.s, r.unixNano)
		case hrl.TypeRevoke:
			_, err = f.log.AppendRevoke(r.s)
		case hrl.TypeBitmap:
			_, err = f.log.AppendBitmap(r.disk, r.s)
		}
		if err != nil {
			f.mem = append(f.mem[:0], f.mem[i:]...)
			return err
		}
	}
	f.mem, f.arena, f.memBytes = f.mem[:0], f.arena[:0], 0
	return f.log.Flush()
}

// pending is the log's stats with the records in memory counted in.
func (f *Filter) pending() hrl.Stats {
	st := f.log.Stats()
	st.LastSeq += uint64(len(f.mem))
	st.PendingRecords += uint64(len(f.mem))
	st.PendingBytes += f.memBytes
	return st
}

// recordOverhead approximates a write record's header bytes in the log.
const recordOverhead = 32

// captureOne logs one record of at most hrl.MaxDataBytes in the current
// mode, degrading it first if the budget says so. It returns 0 and no error
// when it fell back to bitmap mode.
func (f *Filter) captureOne(disk uint16, off int64, data []byte) (uint64, error) {
	st := f.pending()
	f.reconsider(st)
	if f.mode == ModeData {
		if st.PendingBytes+int64(len(data))+recordOverhead <= f.dataBudget {
			at := len(f.arena)
			f.arena = append(f.arena, data...)
			return f.queue(memRec{typ: hrl.TypeWrite, disk: disk, off: off, n: uint32(len(data)), at: at}), nil
		}
		f.enter(ModeMetadata)
	}
	if f.mode == ModeBitmap {
		return 0, nil
	}
	if int64(st.PendingRecords) >= f.metaBudget {
		note := fmt.Sprintf("metadata budget of %d pending records exceeded", f.metaBudget)
		f.enter(ModeBitmap)
		if f.bm != nil {
			return 0, nil // the bitmap has the block; a resync follows the drain
		}
		f.queue(memRec{typ: hrl.TypeBitmap, disk: disk, s: note})
		f.stopReason = note
		return 0, nil
	}
	seq := f.queue(memRec{typ: hrl.TypeWriteMeta, disk: disk, off: off, n: uint32(len(data))})
	f.metaLast = seq
	return seq, nil
}

// reconsider returns to data mode from metadata mode once the pending bytes
// fell under half the data budget (hysteresis: the mode does not flap at
// the budget's edge). Metadata records may still wait to be re-read then:
// the data records after them are applied after them, and bookmarks are
// refused until the drainer has re-read them (InsertBookmark).
//
// From bitmap mode (with a bitmap, tracking not stopped) it resyncs the
// bitmap once every record was trimmed: the dirty blocks become metadata
// records, and the filter is in metadata mode.
func (f *Filter) reconsider(st hrl.Stats) {
	if f.mode == ModeBitmap && f.bm != nil && f.stopReason == "" && st.PendingRecords == 0 {
		f.bm.merge()
		f.resyncBitmap(f.bm.cur)
		return
	}
	if f.mode == ModeMetadata && st.PendingBytes < f.dataBudget/2 {
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
	f.reconsider(f.pending())
	switch {
	case f.mode != ModeData:
		return 0, fmt.Errorf("%w: %s mode", ErrNotConsistent, f.mode)
	case f.metaLast > f.drained:
		return 0, fmt.Errorf("%w: metadata records up to %d not re-read yet", ErrNotConsistent, f.metaLast)
	}
	if !kind.Valid() || len(id) > hrl.MaxDataBytes {
		return 0, fmt.Errorf("agent: bookmark %s: %w: kind %d, id of %d bytes", id, hrl.ErrInvalid, kind, len(id))
	}
	seq := f.queue(memRec{typ: hrl.TypeBookmark, kind: kind, s: id, unixNano: unixNano})
	if f.writeThrough {
		if err := f.spill(); err != nil {
			f.stop("change log: " + err.Error())
			return 0, fmt.Errorf("agent: bookmark %s: %w", id, err)
		}
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
	if len(id) > hrl.MaxDataBytes {
		return 0, fmt.Errorf("agent: revoke %s: %w: id of %d bytes", id, hrl.ErrTooLarge, len(id))
	}
	seq := f.queue(memRec{typ: hrl.TypeRevoke, s: id})
	if f.writeThrough {
		if err := f.spill(); err != nil {
			return 0, fmt.Errorf("agent: revoke %s: %w", id, err)
		}
	}
	return seq, nil
}

// NextSeq is the sequence number the next record will get (unless another
// is appended first).
func (f *Filter) NextSeq() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending().LastSeq + 1
}

// Mode is the current capture mode.
func (f *Filter) Mode() Mode {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.reconsider(f.pending())
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
	if !f.closed {
		f.reconsider(f.pending())
	}
	st := f.pending()
	fs := FilterStats{
		Mode: f.mode, PendingBytes: st.PendingBytes, PendingRecords: st.PendingRecords,
		LastSeq: st.LastSeq, DurableSeq: st.DurableSeq, TrimSeq: st.TrimSeq,
		CapturedBytes: f.capturedBytes, CapturedWrites: f.capturedWrites,
		UndrainedMeta: f.metaLast > f.drained, StopReason: f.stopReason,
		EnteredData: f.transitions[ModeData], EnteredMetadata: f.transitions[ModeMetadata],
		EnteredBitmap: f.transitions[ModeBitmap],
		MemoryRecords: len(f.mem), MemoryBytes: f.memBytes,
		BitmapResyncs: f.resyncs, ResyncBlocks: f.resyncBlocks, LastResyncBlocks: f.lastResync,
		CrashResync: f.recoveredBitmap,
	}
	if f.bm != nil {
		fs.Bitmap, fs.DirtyBlocks, fs.DirtySinceWrite = true, f.bm.count(), f.bm.sinceWrites
	}
	return fs
}

// Sync moves the records in the filter's memory to the log and makes every
// record so far durable (fsync); the drainer reads only durable records.
func (f *Filter) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrFilterClosed
	}
	err := f.spill()
	if err == nil {
		err = f.log.Sync()
	}
	if err != nil {
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
		f.reconsider(f.pending())
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
	st := f.pending()
	if f.bm != nil && f.mode != ModeBitmap && f.stopReason == "" {
		if err := f.bm.rotate(st.TrimSeq, st.LastSeq+1, f.capturedWrites); err != nil {
			f.stop(err.Error())
		}
	}
	f.reconsider(st)
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
	// Numbering goes on above the records dropped from memory too.
	floor := f.pending().LastSeq
	f.mem, f.arena, f.memBytes = f.mem[:0], f.arena[:0], 0
	if err := f.log.ResetAfter(floor); err != nil {
		f.stop("change log: " + err.Error())
		return 0, fmt.Errorf("agent: reset change log: %w", err)
	}
	st := f.log.Stats()
	if f.bm != nil {
		if err := f.bm.reset(st.LastSeq+1, f.capturedWrites); err != nil {
			f.stop(err.Error())
			return 0, fmt.Errorf("agent: reset: %w", err)
		}
	}
	f.stopReason = ""
	f.enter(ModeData)
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
	err := f.spill()
	if cerr := f.log.Close(); err == nil {
		err = cerr
	}
	if f.bm != nil {
		// Clean only when the log holds every change.
		if berr := f.bm.close(err == nil); err == nil {
			err = berr
		}
	}
	if err != nil {
		return fmt.Errorf("agent: close filter: %w", err)
	}
	return nil
}

// CrashClose is a machine crash: the filter's memory is lost, the bitmap
// file is left marked not clean, and the log's files are closed (hrl.Log
// offers no close that skips its final fsync, which a crash may or may not
// have done anyway; the reopened filter drops the log for the bitmap).
// Capture logs nothing afterwards.
func (f *Filter) CrashClose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.closed = true
	f.dropReader()
	f.mem, f.arena, f.memBytes = nil, nil, 0
	f.log.Close()
	if f.bm != nil {
		f.bm.close(false)
	}
}

// requireRedrain makes the filter refuse bookmarks until the drainer has
// read every record logged so far again: a restarted agent re-reads the
// untrimmed records, metadata ones from the disk, and a bookmark inserted
// before such a re-read could not be honoured.
func (f *Filter) requireRedrain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.pending()
	f.metaLast = max(f.metaLast, st.LastSeq)
	f.drained = st.TrimSeq
}

func (f *Filter) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}
