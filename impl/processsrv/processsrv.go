// Package processsrv is the process server: it receives machines'
// replication streams from their agents (port 9443), spools every item to
// its cache disk before acknowledging it, then seals each item (compress and
// encrypt with the vault's key, batch.Sealer) and uploads it to the cache
// container, from where the Azure side applies it.
//
// The order of things, per item, is the contract the agents and the Azure
// side rely on:
//
//  1. ItemMsg with Seq == Received+1 arrives (Received is the highest item
//     received, Acked the highest made durable; Received >= Acked): it is
//     checked (batch.Unmarshal; its machine and sequence number must match
//     the message) and kept in memory for the group commit; it is not
//     acknowledged yet.
//  2. Group commit, GroupCommit after the first item received since the
//     last one: an op (no file I/O happens in Handle) writes every item
//     received meanwhile to <CacheDir>/<machine>/<seq %020d>.item under a
//     temporary name, fsyncs and renames each to its final name, fsyncs
//     each machine directory touched — and only when that op completes are
//     the items acknowledged (ItemAck, cumulative, one per machine). Group
//     commits never overlap: one that falls due while another runs starts
//     when it completes, so acknowledgements stay in order. The
//     agent may trim its change log from there: from this point the process
//     server alone holds the data. A crash before the group commit's op
//     completes loses the items received since the last one; they were
//     never acknowledged, so the agent still has them and resends them
//     (go-back-N). An item that arrives again while received but not
//     committed is not answered: the group commit answers it.
//  3. The pipeline seals the item under its blob name,
//     proto.CacheBlobName (an Op): from the bytes as received when the
//     server still holds them (see Config.RetainBytes), otherwise from the
//     cached file, read back and checked against its CRC-32C (always so
//     after a restart). It uploads it to the cache container,
//     ContainerPrefix + proto.ContainerCache (a second Op, Peer
//     StoragePeer, Bytes the sealed size), deletes the cached file (or
//     keeps it, renamed, for a later item to be written over: see
//     Config.RecycleFiles) and tells the Azure side with an Uploaded hint.
//     Items of one machine are started in sequence order; at most
//     MaxUploads items are uploading at once, at most MaxUploads +
//     SealAhead are in the pipeline (sealing, sealed or uploading), and
//     at most RetainBytes of items are kept as received: the backlog lives
//     on the cache disk.
//  4. A stream the cache holds no record of (a new machine, or a cache disk
//     lost and replaced: a new epoch, see proto.ItemAck) starts at item 1,
//     or at a SyncStart item of any seq: an agent whose acknowledged items
//     were lost resyncs, numbering on from where it was, so that the Azure
//     side's numbering never goes back.
//  5. A restart (a new Server on the same CacheDir) rebuilds everything from
//     the cache disk: every acknowledged item not yet uploaded is uploaded,
//     and the highest acknowledged sequence number of each machine survives
//     even when all its files were uploaded and deleted (a small state file
//     written before the highest file is deleted).
//
// When an item would not fit in CacheCapBytes, or the disk itself is full
// (ENOSPC), the item is answered with ItemAck{Status: cache-full} and the
// agent retries later: nothing acknowledged is ever dropped to make room.
package processsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Defaults of Config's zero fields.
const (
	DefaultCacheCapBytes = 2 << 30
	DefaultMaxUploads    = 4
	DefaultHealthEvery   = time.Minute
	DefaultGroupCommit   = 2 * time.Millisecond
	DefaultRetainBytes   = 64 << 20
	DefaultRecycleFiles  = 16
)

// Errors. Each is wrapped with the machine and item it concerns.
var (
	ErrCacheFull   = errors.New("processsrv: cache full")
	ErrCorrupt     = errors.New("processsrv: corrupt cache file")
	ErrMachineName = errors.New("processsrv: unusable machine name")
)

// Config configures a process server. Zero fields take the defaults above.
type Config struct {
	// Name is the server's name in PSHealth; "" means the host of its own
	// address.
	Name string
	// CacheDir is the cache disk's directory. It must survive restarts: it
	// is where acknowledged items live until they are uploaded.
	CacheDir string
	// FS is the file system holding CacheDir. Default fsys.OS{}.
	FS fsys.FS
	// GroupCommit is how long items written to the cache wait for the
	// fsync that makes them durable (and lets them be acknowledged): one
	// fsync per machine directory per period instead of per item.
	GroupCommit time.Duration
	// CacheCapBytes is the cache space the server may use (item files,
	// headers included). An item that would not fit is answered cache-full.
	CacheCapBytes int64
	// Store is the storage account holding the cache container.
	Store blob.Store
	// StoragePeer is the Peer of storage Ops (the network model's host).
	StoragePeer string
	// ContainerPrefix prefixes the container names (never logged).
	ContainerPrefix string
	// Key is the vault's data key (vault.Keys.Data).
	Key [32]byte
	// Codec is the compression of sealed items. The zero value,
	// batch.CodecNone, means the default batch.CodecS2: compressing is
	// never worse on a WAN link, so "none" is not offered.
	Codec batch.Codec
	// Azure is where Uploaded hints go; ConfigServer where PSHealth goes.
	Azure        runtime.Addr
	ConfigServer runtime.Addr
	// MaxUploads bounds the uploads at once, and with SealAhead the items
	// in the pipeline (sealing, sealed, uploading).
	MaxUploads int
	// SealAhead is how many items may be sealed, or sealing, beyond the
	// MaxUploads slots: an upload that ends then starts the next one at
	// once, with an item sealed meanwhile, instead of leaving its slot
	// empty while the next item is sealed. Their sealed bytes are held
	// until their upload ends. Default 0: none (a seal takes an upload
	// slot).
	SealAhead int
	// HealthEvery is the PSHealth period.
	HealthEvery time.Duration
	// RetainBytes is the memory budget, in item bytes, for items kept as
	// received from the moment their group commit made them durable until
	// their upload is confirmed, so that sealing them need not read the
	// cache file back. An item that would take the retained bytes past it
	// is not kept: it is sealed from its cache file, as every item is after
	// a restart. The cache file is written and fsynced before the
	// acknowledgement either way: durability does not depend on it.
	// Default DefaultRetainBytes; negative: keep none (always read back).
	RetainBytes int64
	// RecycleFiles is how many uploaded items' files the server keeps to
	// write later items of the same machine into, instead of deleting them
	// and creating new ones: allocating and freeing a file's pages (tmpfs,
	// most file systems) costs more than writing over them. They take disk
	// space beyond CacheCapBytes, at most RecycleFiles times the largest
	// item, and are removed by a restart's scan. Default
	// DefaultRecycleFiles; negative: none (every uploaded file is deleted).
	RecycleFiles int
}

func (c Config) withDefaults() Config {
	if c.CacheCapBytes <= 0 {
		c.CacheCapBytes = DefaultCacheCapBytes
	}
	if c.StoragePeer == "" {
		c.StoragePeer = proto.HostStorage
	}
	if c.Codec == batch.CodecNone {
		c.Codec = batch.CodecS2
	}
	if c.Azure == "" {
		c.Azure = runtime.MakeAddr(proto.HostService, runtime.PortConfig)
	}
	if c.ConfigServer == "" {
		c.ConfigServer = runtime.MakeAddr(proto.HostConfigServer, runtime.PortConfig)
	}
	if c.MaxUploads <= 0 {
		c.MaxUploads = DefaultMaxUploads
	}
	c.SealAhead = max(c.SealAhead, 0)
	if c.HealthEvery <= 0 {
		c.HealthEvery = DefaultHealthEvery
	}
	if c.FS == nil {
		c.FS = fsys.OS{}
	}
	if c.GroupCommit <= 0 {
		c.GroupCommit = DefaultGroupCommit
	}
	if c.RetainBytes == 0 {
		c.RetainBytes = DefaultRetainBytes
	}
	if c.RecycleFiles == 0 {
		c.RecycleFiles = DefaultRecycleFiles
	}
	return c
}

// Server is the process server actor. Build it with New; a restart is a new
// Server on the same CacheDir.
type Server struct {
	cfg Config

	// Everything below is owned by the runtime's goroutine: Status is read
	// through the runtime's Inspect, between events, never concurrently.

	name      string
	disk      *cacheDisk
	epoch     uint64 // the cache disk's epoch, in every ItemAck
	machines  map[string]*machine
	order     []string // machine names, sorted: the round-robin order
	rr        int      // next machine to look at for an item to start
	usedBytes int64    // bytes of item files on the cache disk
	full      bool     // the last item was refused for lack of space

	// pending are the items received since the last group commit started,
	// in the order they came; the group-commit timer is pending while any
	// are. committing: a group commit's op runs; commitDue: the timer
	// fired meanwhile, so the next one starts when it completes.
	pending    []*pendingItem
	committing bool
	commitDue  bool

	containerReady bool
	containerTries int
	cleanupTries   int // failed attempts in a row to delete uploaded files

	ops       runtime.Ops[*opInfo]
	inFlight  int          // items sealing, sealed or uploading
	uploading int          // of them, uploading
	sealedQ   []sealedItem // of them, sealed and waiting for an upload slot, in the order they were sealed
	workers   []*worker    // idle sealers
	// spare are sealed items' buffers whose uploads returned, at most
	// MaxUploads+SealAhead, reused by the next seals: a 1 MiB allocation (and its
	// zeroing and collection) less per item.
	spare [][]byte

	timers  runtime.Timers
	retryAt time.Time // when the retry timer fires; zero: none pending

	memBytes     int64 // item and sealed bytes held by the pipeline
	peakMemBytes int64
	// retainedBytes are the item bytes of entries that keep their data
	// (entry.data), at most Config.RetainBytes.
	retainedBytes int64
	// freeFiles counts the recycled files (machine.free) and those a
	// cleanup op in flight may recycle, at most Config.RecycleFiles.
	freeFiles     int
	recycledItems int64 // items committed over a recycled file since start

	startedAt time.Time
	lastNow   time.Time // the clock at the latest event, for Status
	rate      uploadRate

	lastErr string
	errs    int64
}

// New builds a process server. Nothing happens until Started.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	return &Server{cfg: cfg, disk: newCacheDisk(cfg.FS, cfg.CacheDir)}
}

var _ runtime.Actor = (*Server)(nil)

// Timer names.
const (
	timerHealth = "health"
	timerRetry  = "retry"
	timerCommit = "group-commit"
)

// Handle implements runtime.Actor.
func (s *Server) Handle(ctx runtime.Context, ev runtime.Event) {
	s.lastNow = ctx.Now()
	switch ev := ev.(type) {
	case runtime.Started:
		s.start(ctx)
	case runtime.Message:
		s.message(ctx, ev)
	case runtime.Timer:
		if !s.timers.Fired(ev) {
			return
		}
		switch ev.Name {
		case timerHealth:
			s.sendHealth(ctx)
			s.timers.Set(ctx, timerHealth, s.cfg.HealthEvery)
		case timerRetry:
			s.retryAt = time.Time{}
			s.retry(ctx)
		case timerCommit:
			s.groupCommit(ctx)
		}
	case runtime.Done:
		s.done(ctx, ev)
	}
}

// start rebuilds the server's state from the cache disk and creates the
// cache container.
func (s *Server) start(ctx runtime.Context) {
	s.name = s.cfg.Name
	if s.name == "" {
		s.name = ctx.Self().Host()
	}
	s.machines = map[string]*machine{}
	s.order = nil
	s.ops = runtime.Ops[*opInfo]{}
	s.spare = nil // an op of the previous life may still hold them
	s.inFlight, s.uploading, s.sealedQ = 0, 0, nil
	s.usedBytes, s.memBytes, s.retainedBytes, s.freeFiles = 0, 0, 0, 0
	s.containerReady = false
	s.startedAt = ctx.Now()
	s.retryAt = time.Time{}
	s.pending = nil
	s.committing, s.commitDue = false, false

	var err error
	if s.epoch, err = s.disk.epoch(ctx.Rand().Uint64); err != nil {
		s.fail(ctx, "cache disk epoch", err, slog.String("err", describe(err)))
	}
	found, err := s.disk.scan()
	if err != nil {
		s.fail(ctx, "cache disk scan failed", err, slog.String("err", describe(err)))
	}
	for _, f := range found {
		s.disk.dirsMade[f.name] = true
		m := s.machine(f.name)
		m.acked, m.persisted, m.received = f.acked, f.persisted, f.acked
		m.hinted = f.acked
		for _, e := range f.items {
			m.items = append(m.items, &entry{seq: e.seq, fileBytes: e.fileBytes, rawBytes: e.fileBytes - recordHeaderLen})
			s.usedBytes += e.fileBytes
		}
		if len(m.items) > 0 {
			m.hinted = m.items[0].seq - 1
		}
	}
	var backlogItems, backlogBytes int64
	for _, name := range s.order {
		n, b := s.machines[name].backlog()
		backlogItems += n
		backlogBytes += b
	}
	ctx.Log().Info("processsrv: process server started", "machines", len(s.order), "backlog_items", backlogItems,
		"backlog_bytes", backlogBytes, "cache_used_bytes", s.usedBytes, "cache_cap_bytes", s.cfg.CacheCapBytes)
	s.createContainer(ctx)
	s.timers.Set(ctx, timerHealth, s.cfg.HealthEvery)
}

// message handles one frame from a peer.
func (s *Server) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := ev.Decode() // the CRC checked once: by the runtime, else here
	if err != nil {
		ctx.Log().Warn("processsrv: dropped undecodable frame", "from", string(ev.From), "err", err.Error())
		return
	}
	switch m := msg.(type) {
	case *proto.StreamHello:
		if err := checkMachineName(m.Machine); err != nil {
			s.ack(ctx, ev.From, m.Machine, 0, proto.AckRefused, err.Error())
			return
		}
		var acked uint64
		if mc, ok := s.machines[m.Machine]; ok {
			acked = mc.acked
		}
		ctx.Log().Info("processsrv: stream hello", "machine", m.Machine, "acked", acked)
		s.ack(ctx, ev.From, m.Machine, acked, proto.AckOK, "")
	case *proto.ItemMsg:
		s.item(ctx, ev.From, m, ev.Data)
	default:
		ctx.Log().Warn("processsrv: dropped unexpected message", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

func (s *Server) ack(ctx runtime.Context, to runtime.Addr, machine string, acked uint64, status, reason string) {
	ctx.Send(to, wire.Encode(&proto.ItemAck{Machine: machine, Acked: acked, Status: status, Reason: reason, Epoch: s.epoch}))
}

// item accepts the next item of a machine's stream, or says why not. frame
// is the frame msg was decoded from, its CRC checked (by the runtime or by
// Decode).
func (s *Server) item(ctx runtime.Context, from runtime.Addr, msg *proto.ItemMsg, frame []byte) {
	if err := checkMachineName(msg.Machine); err != nil {
		ctx.Log().Warn("processsrv: refused item", "seq", msg.Seq, "err", err.Error())
		s.ack(ctx, from, msg.Machine, 0, proto.AckRefused, err.Error())
		return
	}
	var acked, received uint64
	m, known := s.machines[msg.Machine]
	if known {
		acked, received = m.acked, m.received
	}
	switch {
	case msg.Seq <= acked: // a duplicate (a retransmission or a lost ack): say again how far we are
		s.ack(ctx, from, msg.Machine, acked, proto.AckOK, "")
		return
	case msg.Seq <= received: // written, not yet durable: the group commit answers
		return
	case msg.Seq > received+1 && !known && isSyncStart(msg.Data):
		ctx.Log().Info("processsrv: stream starts at a sync: the cache holds no record of this machine", "machine", msg.Machine, "seq", msg.Seq)
		acked = msg.Seq - 1
	case msg.Seq > received+1:
		ctx.Log().Debug("processsrv: item ahead of the stream", "machine", msg.Machine, "seq", msg.Seq, "acked", acked)
		s.ack(ctx, from, msg.Machine, acked, proto.AckGap, fmt.Sprintf("expected item %d", received+1))
		return
	}
	if err := checkItem(msg); err != nil {
		s.errs++
		s.lastErr = fmt.Sprintf("refused item %d of %s: %v", msg.Seq, msg.Machine, err)
		ctx.Log().Warn("processsrv: refused malformed item", "machine", msg.Machine, "seq", msg.Seq, "err", err.Error())
		s.ack(ctx, from, msg.Machine, acked, proto.AckRefused, err.Error())
		return
	}

	codec, err := s.itemCodec(msg)
	if err != nil {
		s.errs++
		s.lastErr = fmt.Sprintf("refused item %d of %s: %v", msg.Seq, msg.Machine, err)
		ctx.Log().Warn("processsrv: refused item with an unknown codec", "machine", msg.Machine, "seq", msg.Seq, "err", err.Error())
		s.ack(ctx, from, msg.Machine, acked, proto.AckRefused, err.Error())
		return
	}

	fileBytes := recordHeaderLen + int64(len(msg.Data))
	// An item larger than the whole cache is taken when the cache is
	// empty: refusing it would stall its stream forever (the agent cannot
	// split an item it already numbered), and the disk itself still has the
	// last word (ENOSPC below).
	if s.usedBytes+fileBytes > s.cfg.CacheCapBytes && s.usedBytes > 0 {
		err := fmt.Errorf("%w: %d of %d bytes used, item %d of %s needs %d", ErrCacheFull,
			s.usedBytes, s.cfg.CacheCapBytes, msg.Seq, msg.Machine, fileBytes)
		s.cacheFull(ctx, msg.Machine, msg.Seq, err.Error())
		s.ack(ctx, from, msg.Machine, acked, proto.AckCacheFull, err.Error())
		return
	}
	if s.full {
		s.full = false
		ctx.Log().Info("processsrv: cache accepting items again", "cache_used_bytes", s.usedBytes+fileBytes, "cache_cap_bytes", s.cfg.CacheCapBytes)
	}
	if !known {
		m = s.machine(msg.Machine)
		m.acked, m.hinted = acked, acked
	}
	m.received, m.from = msg.Seq, from
	// The cache record's CRC-32C of the item, from the frame's (checked
	// already): a megabyte less to checksum per item.
	crc, crcKnown := wire.SpanCRC(frame, msg.Data)
	s.pending = append(s.pending, &pendingItem{m: m, seq: msg.Seq, data: msg.Data, codec: codec,
		fileBytes: fileBytes, rawBytes: int64(len(msg.Data)), crc: crc, crcKnown: crcKnown})
	s.usedBytes += fileBytes
	s.timers.Arm(ctx, timerCommit, s.cfg.GroupCommit)
}

// pendingItem is an item received and not yet durable: it waits in memory
// for the group commit, which writes it to the cache disk and fsyncs it.
type pendingItem struct {
	m                   *machine
	seq                 uint64
	data                []byte // the item as received (the message's, kept as is)
	codec               batch.Codec
	crc                 uint32 // data's CRC-32C, when crcKnown
	crcKnown            bool
	fileBytes, rawBytes int64
	reused              bool // its group commit writes it over a recycled file
}

// groupCommit starts the group commit of the items received since the last
// one, unless one is running (then it starts when that one is done: two
// commits never overlap, so acknowledgements stay in order). The disk work
// — write each item, fsync and rename it, fsync each machine directory
// touched — runs in an op (cacheFiles.commitBatch), and only its
// completion acknowledges the items (commitDone): never before the fsync.
func (s *Server) groupCommit(ctx runtime.Context) {
	if s.committing {
		s.commitDue = true
		return
	}
	s.commitDue = false
	if len(s.pending) == 0 {
		return
	}
	batch := s.pending
	s.pending = nil
	items := make([]stagedItem, len(batch))
	var bytes int64
	dirs := 0
	seen := map[*machine]bool{}
	for i, p := range batch {
		items[i] = stagedItem{machine: p.m.name, seq: p.seq, data: p.data, codec: p.codec, crc: p.crc, crcKnown: p.crcKnown,
			dirKnown: s.disk.dirsMade[p.m.name]}
		if n := len(p.m.free); n > 0 { // the commit uses the file up, whatever happens
			items[i].reuse, p.m.free = p.m.free[n-1], p.m.free[:n-1]
			s.freeFiles--
			p.reused = true
		}
		bytes += p.fileBytes
		if !seen[p.m] {
			seen[p.m] = true
			dirs++
			if !items[i].dirKnown {
				dirs++ // the new directory's entry in the cache directory
			}
		}
	}
	files := s.disk.cacheFiles
	s.committing = true
	s.ops.StartDurable(ctx, runtime.Op{Name: "cache-commit",
		Disk: &runtime.DiskIO{Device: runtime.DeviceCache, Bytes: bytes, Syncs: len(items) + dirs},
		Run:  func(context.Context) (any, error) { return files.commitBatch(items), nil }},
		&opInfo{kind: opCommit, batch: batch})
}

// commitDone applies a group commit's outcome: the items made durable are
// acknowledged (one cumulative ItemAck per machine); a machine whose items
// could not all be made durable forgets the rest and is answered like a
// full cache: the agent keeps them and retries later.
func (s *Server) commitDone(ctx runtime.Context, batch []*pendingItem, res []committed) {
	s.committing = false
	out := map[string]committed{}
	for _, c := range res {
		out[c.machine] = c
		if c.dirMade {
			s.disk.dirsMade[c.machine] = true
		}
	}
	var touched []*machine
	for _, p := range batch {
		m := p.m
		if !slices.Contains(touched, m) {
			touched = append(touched, m)
		}
		if p.seq > out[m.name].upTo {
			s.usedBytes -= p.fileBytes // not durable: forgotten
			continue
		}
		m.acked = p.seq
		if p.reused {
			s.recycledItems++
		}
		e := &entry{seq: p.seq, fileBytes: p.fileBytes, rawBytes: p.rawBytes}
		if s.retainedBytes+p.rawBytes <= s.cfg.RetainBytes {
			e.data, e.codec = p.data, p.codec
			s.retainedBytes += p.rawBytes
		}
		m.items = append(m.items, e)
	}
	for _, m := range touched {
		c := out[m.name]
		if c.upTo != 0 {
			s.ack(ctx, m.from, m.name, m.acked, proto.AckOK, "")
		}
		if c.err == nil {
			continue
		}
		// Items received after this batch are not durable either, and
		// must come again after the ones that failed.
		m.received = m.acked
		s.dropPending(m)
		var err error
		switch {
		case isNoSpace(c.err):
			err = fmt.Errorf("%w: disk full: %w", ErrCacheFull, c.err)
			s.dropFree(ctx)
		case c.stage:
			err = fmt.Errorf("processsrv: cache disk write failed: %w", c.err)
		default:
			err = fmt.Errorf("processsrv: cache disk commit failed: %w", c.err)
		}
		s.errs++
		s.lastErr = describe(err)
		s.cacheFull(ctx, m.name, m.acked+1, describe(err))
		s.ack(ctx, m.from, m.name, m.acked, proto.AckCacheFull, describe(err))
	}
	if s.commitDue {
		s.groupCommit(ctx)
	}
	s.pump(ctx)
}

// dropPending forgets m's items waiting for the next group commit.
func (s *Server) dropPending(m *machine) {
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.m == m {
			s.usedBytes -= p.fileBytes
			continue
		}
		keep = append(keep, p)
	}
	clear(s.pending[len(keep):])
	s.pending = keep
}

// isSyncStart says whether data is a SyncStart item.
func isSyncStart(data []byte) bool {
	it, err := batch.Unmarshal(data)
	return err == nil && it.Kind == batch.KindSyncStart
}

// ErrCodec refuses an item whose message names a compression the process
// server does not seal with.
var ErrCodec = errors.New("processsrv: unknown compression")

// itemCodec is the codec an item is to be sealed with: the one its message
// names (the machine's policy), or the server's own when it names none.
func (s *Server) itemCodec(msg *proto.ItemMsg) (batch.Codec, error) {
	if msg.Codec == "" {
		return s.cfg.Codec, nil
	}
	c, err := batch.ParseCodec(msg.Codec)
	if err != nil || c == batch.CodecNone {
		return 0, fmt.Errorf("%w %q (want s2 or zstd)", ErrCodec, msg.Codec)
	}
	return c, nil
}

// checkItem checks that an item message carries a well-formed item (what
// batch.Unmarshal accepts) of the machine and sequence number it says.
func checkItem(msg *proto.ItemMsg) error {
	it, err := batch.Unmarshal(msg.Data)
	if err != nil {
		return err
	}
	if it.Machine != msg.Machine || it.Seq != msg.Seq {
		return fmt.Errorf("%w: item is %s/%d, message says %s/%d", batch.ErrFormat, it.Machine, it.Seq, msg.Machine, msg.Seq)
	}
	return nil
}

// cacheFull records that an item was refused for lack of space, logging the
// first refusal of an episode only (agents retry every few seconds).
func (s *Server) cacheFull(ctx runtime.Context, machine string, seq uint64, reason string) {
	if s.full {
		return
	}
	s.full = true
	ctx.Log().Warn("processsrv: cache full: refusing new items until uploads free space; nothing acknowledged is dropped",
		"machine", machine, "seq", seq, "reason", reason)
}

// machine returns a machine's state, creating it.
func (s *Server) machine(name string) *machine {
	if m, ok := s.machines[name]; ok {
		return m
	}
	m := &machine{name: name}
	s.machines[name] = m
	i, _ := slices.BinarySearch(s.order, name)
	s.order = slices.Insert(s.order, i, name)
	return m
}

// fail records an error for Status and logs it.
func (s *Server) fail(ctx runtime.Context, what string, err error, attrs ...any) {
	s.errs++
	s.lastErr = what + ": " + describe(err)
	ctx.Log().Error("processsrv: "+what, attrs...)
}

// describe renders an error for the log and Status. Cache disk errors
// carry no file paths (see clean): paths differ between runs and would make
// the trace nondeterministic.
func describe(err error) string { return err.Error() }
