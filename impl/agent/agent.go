// Package agent is the Mobility agent: the write filter that tracks every
// guest write in the machine's change log (Filter, over an hrl.Log), and the
// actor (Agent) that registers with the configuration server, synchronises
// the disks against the replica's checksums, and streams the change log to
// the process server as ordered items.
//
// The stream a machine's agent produces (see impl/batch) is
//
//	SyncStart(gen) Chunk(gen)* SyncEnd(gen, LogFrom) Log* [SyncStart(gen+1) ...]
//
// with items numbered from the process server's acknowledged position on,
// without gaps. The agent holds the invariants the Azure side relies on:
// Log items of a generation are built only once its SyncEnd is acknowledged
// (so every chunk lands before any record logged since the sync began), no
// bookmark is inserted while syncing or while the log cannot honour one
// (metadata or bitmap mode, metadata records not yet re-read), and the log
// is trimmed only up to the records of acknowledged Log items.
//
// Handle does no blocking file I/O (impl/archtest checks it): agent.state
// is written by a state writer in ops (persist.go; nothing goes out on the
// stream, and no tag number is used, before the state holding it is
// durable), the change log's fsync and read for a drain, its trims and the
// guest's freezes are ops too, each declaring its disk work (runtime.Op's
// Disk) for the simulator's disk model. What stays in Handle: opening the
// change log and reading agent.state at Started, emptying the log when a
// sync begins, and appending bookmark records (into the filter's memory, as
// the guest's own captures are; the drain moves them to the log and fsyncs).
package agent

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Phases of an agent (the Heartbeat's Phase).
const (
	PhaseIdle           = "idle"            // not protected (or not registered)
	PhaseSyncing        = "syncing"         // a sync or resync of Status.Gen runs
	PhaseReplicating    = "replicating"     // draining the change log
	PhaseResyncRequired = "resync-required" // tracking broke: waiting for a Protect with a higher gen
)

// Config configures an agent. Zero durations and sizes take the defaults
// given in each field's comment.
type Config struct {
	Machine      string // the machine's name; also the change log's name
	InstanceUUID string
	Physical     bool
	Version      string // reported at registration; default "v2a-agent/1"

	// VaultID and Passphrase are what the installer was given: the
	// registration proof is derived from them.
	VaultID    string
	Passphrase string
	// ConfigServer is the configuration server; default proto.HostConfigServer:443.
	ConfigServer runtime.Addr

	// StateDir holds the change log and agent.state.
	StateDir string
	// FS is the file system holding StateDir (and, unless LogOptions.FS
	// says otherwise, the change log). Default fsys.OS{}.
	FS fsys.FS
	// Guest is the machine: its disks, filter driver and VSS.
	Guest Guest

	// Capture budgets of a filter the agent installs (see FilterOptions).
	DataBudget int64
	MetaBudget int64
	LogOptions hrl.Options
	// FilterWriteThrough: the filter the agent installs lives in the
	// agent's own process (no kernel driver, as in the daemons), so each
	// record goes to the log before the guest's write is acknowledged
	// (FilterOptions.WriteThrough).
	FilterWriteThrough bool

	DrainInterval     time.Duration // drain the log this often; 2 s
	DrainBytes        int64         // ... or as soon as this much was captured; 1 MiB
	ItemBytes         int           // data per Chunk or Log item, and sync read size; 1 MiB
	Window            int           // items in flight to the process server; 8
	RetransmitTimeout time.Duration // resend unacknowledged items after; 10 s
	CacheFullBackoff  time.Duration // first back-off on cache-full, doubled up to 64x; 5 s
	RegisterRetry     time.Duration // until a RegisterReply comes; 30 s
	RefusedRetry      time.Duration // after a refusal; 5 min
	HeartbeatEvery    time.Duration // 30 s
	ResyncRetry       time.Duration // ResyncNeeded repeated until a new gen; 30 s
	ChecksumTimeout   time.Duration // SyncStart acked but no final Checksums: sync over; 15 min
	// ProbeFirst: at a retransmission timeout, send only StreamHello and
	// resend from the position its answer gives (the receiver's durable
	// one), not every unacknowledged item at once. For a costly path (the
	// failback VPN): after a drop that lost only the acknowledgements,
	// nothing that arrived is sent again. The hello is repeated every
	// RetransmitTimeout until answered.
	ProbeFirst bool
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.FS == nil {
		c.FS = fsys.OS{}
	}
	if c.LogOptions.FS == nil {
		c.LogOptions.FS = c.FS
	}
	if c.ConfigServer == "" {
		c.ConfigServer = runtime.MakeAddr(proto.HostConfigServer, runtime.PortConfig)
	}
	if c.Version == "" {
		c.Version = "v2a-agent/1"
	}
	def(&c.DrainInterval, 2*time.Second)
	def(&c.RetransmitTimeout, 10*time.Second)
	def(&c.CacheFullBackoff, 5*time.Second)
	def(&c.RegisterRetry, 30*time.Second)
	def(&c.RefusedRetry, 5*time.Minute)
	def(&c.HeartbeatEvery, 30*time.Second)
	def(&c.ResyncRetry, 30*time.Second)
	def(&c.ChecksumTimeout, 15*time.Minute)
	if c.DrainBytes <= 0 {
		c.DrainBytes = 1 << 20
	}
	if c.ItemBytes <= 0 {
		c.ItemBytes = 1 << 20
	}
	c.ItemBytes = max(blockdev.BlockSize, c.ItemBytes/blockdev.BlockSize*blockdev.BlockSize)
	if c.Window <= 0 {
		c.Window = 8
	}
}

// Timer names.
const (
	tRegister  = "register"
	tHeartbeat = "heartbeat"
	tHello     = "stream-hello"
	tRetx      = "retransmit"
	tBackoff   = "backoff"
	tDrain     = "drain"
	tCrash     = "crash-bookmark"
	tApp       = "app-bookmark"
	tResync    = "resync-needed"
	tChecksums = "checksums-timeout"
	tSyncRetry = "sync-read-retry"
	// The multi-VM tag protocol: the master's round schedule, its phase
	// timeout and resend (tagMaster's timers); a member's hold deadline
	// (tagMember's).
	tGroupRound  = "group-round"
	tGroupRetry  = "group-round-retry"
	tTagPhase    = "tag-phase-timeout"
	tTagResend   = "tag-phase-resend"
	tTagDeadline = "tag-hold-deadline"
)

// Agent is the Mobility agent actor of one machine. Build it with New; it
// must only be driven through Handle (and inspected with Status between
// events).
type Agent struct {
	cfg    Config
	keys   vault.Keys
	filter *Filter

	st      persisted   // what agent.state holds (or will, once persist has written it)
	persist stateWriter // writes agent.state in ops
	phase   string

	registered    bool
	refusedReason string

	timers runtime.Timers
	// ops are the reads in flight; ops.Reset voids the results of those
	// started before a sync began, protection stopped or the queue was
	// rebuilt.
	ops runtime.Callbacks

	stream
	sync     *syncState
	lastSync SyncStatus

	// Trim: the highest record the process server has (trimWant), the
	// highest trimmed (trimDone), and whether a trim op runs.
	trimWant, trimDone uint64
	trimming           bool

	// Drain.
	draining        bool   // a drain op or a metadata re-read is in flight
	drainDue        bool   // durable records may wait beyond drainFrom
	drainFrom       uint64 // next record to put in a Log item
	capturedAtDrain int64
	// After a restart the records up to redrainUpTo are read again; once a
	// metadata record among them is re-read (now, later than the bookmarks
	// after it were inserted), those bookmarks cannot be honoured.
	redrainUpTo uint64
	redrainMeta bool

	lastMode Mode
	// bitmapResyncs is the filter's bitmap resync count last observed.
	bitmapResyncs int64
	bookmarks     bookmarkStats
	freezing      bool // an app-consistent bookmark's freeze op runs
	// retry, by kind: a bookmark skipped for a retryable reason since
	// that kind's last tick waits for retryBookmarks.
	retry   [proto.App + 1]bool
	lastErr string

	// Multi-VM consistency: the group (nil: in none), and the tag
	// protocol's two sides, each with its own state and timers: the
	// master's (used when this machine is the group's master) and the
	// member's (every member, the master included).
	group     *proto.GroupConfig
	master    tagMaster
	member    tagMember
	startedAt time.Time // when this incarnation started: names it in TagRound reports
}

// New builds an agent. It does nothing until it handles Started.
func New(cfg Config) *Agent {
	cfg.defaults()
	a := &Agent{cfg: cfg, phase: PhaseIdle, bookmarks: newBookmarkStats()}
	a.master = tagMaster{a: a, stats: roundStats{revokedBy: map[string]int64{}, skipped: map[string]int64{}}}
	a.member = tagMember{a: a, remembered: map[string]*memberRound{}, newest: map[string]uint64{},
		stats: memberStats{refused: map[string]int64{}}}
	return a
}

// Handle implements runtime.Actor.
func (a *Agent) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		a.startedAt = ctx.Now()
		a.start(ctx)
	case runtime.Message:
		a.message(ctx, ev)
	case runtime.Timer:
		// Each timer belongs to the agent or to one side of the tag
		// protocol; a firing none of them owns was cancelled or replaced.
		switch {
		case a.timers.Fired(ev):
			a.timer(ctx, ev.Name)
		case a.master.timers.Fired(ev):
			a.master.timer(ctx, ev.Name)
		case a.member.timers.Fired(ev):
			a.member.deadline(ctx)
		default:
			return
		}
	case runtime.Done:
		a.ops.Dispatch(ctx, ev)
	}
	if a.filter == nil {
		return
	}
	a.observe(ctx)
	a.retryBookmarks(ctx)
	if a.sync != nil {
		a.pumpSync(ctx)
	} else {
		a.pumpDrain(ctx)
	}
	a.transmit(ctx)
}

// start opens (or reattaches) the filter, reloads agent.state and resumes.
func (a *Agent) start(ctx runtime.Context) {
	keys, err := vault.Derive(a.cfg.VaultID, a.cfg.Passphrase)
	if err != nil {
		a.fail(ctx, "derive vault keys", err) // the registration will be refused
	}
	a.keys = keys
	if a.cfg.Guest == nil {
		a.fail(ctx, "start", fmt.Errorf("agent: no guest configured"))
		return
	}
	if f := a.cfg.Guest.Filter(); f != nil {
		a.filter = f
	} else {
		var sizes []int64
		for _, d := range a.cfg.Guest.Disks() {
			sizes = append(sizes, d.Size())
		}
		f, rec, err := OpenFilter(a.cfg.StateDir, a.cfg.Machine, FilterOptions{
			DataBudget: a.cfg.DataBudget, MetaBudget: a.cfg.MetaBudget, Log: a.cfg.LogOptions,
			DiskSizes: sizes, WriteThrough: a.cfg.FilterWriteThrough})
		if err != nil {
			a.fail(ctx, "install filter", err)
			a.set(ctx, tRegister, a.cfg.RegisterRetry) // try again then
			return
		}
		a.cfg.Guest.Attach(f)
		a.filter = f
		ctx.Log().Info("agent: filter installed", "machine", a.cfg.Machine, "records", rec.Records,
			"torn_bytes", rec.TornBytes, "resync_required", rec.ResyncRequired)
		if fs := f.Stats(); fs.CrashResync {
			ctx.Log().Info("agent: bitmap resync", "machine", a.cfg.Machine, "why", "machine-crash",
				"blocks", fs.LastResyncBlocks, "records", fs.PendingRecords)
		}
	}
	a.lastMode = a.filter.Mode()
	st, ok, err := loadState(a.cfg.FS, a.cfg.StateDir)
	if err != nil {
		a.fail(ctx, "load state", err)
	}
	if ok {
		a.group = st.Group
	}
	a.member.recoverHold(ctx)
	a.register(ctx)
	if !ok || st.Gen == 0 {
		return
	}
	a.st = st
	a.psEpoch, a.resumed = st.PSEpoch, true
	a.master.scheduleGroup(ctx)
	a.phase = st.Phase
	ctx.Log().Info("agent: resuming", "machine", a.cfg.Machine, "phase", st.Phase, "gen", st.Gen)
	a.armBookmarkTimers(ctx)
	a.set(ctx, tHeartbeat, a.cfg.HeartbeatEvery)
	a.openStream(ctx)
	switch {
	case a.filter.StopReason() != "" && st.Phase != PhaseResyncRequired:
		a.requireResync(ctx, a.filter.StopReason())
	case st.Phase == PhaseSyncing:
		a.beginSync(ctx, st.Gen) // over: same gen, a new SyncStart item
	case st.Phase == PhaseReplicating:
		fs := a.filter.Stats()
		a.drainFrom, a.drainDue = fs.TrimSeq+1, true
		a.redrainUpTo = fs.LastSeq
		a.filter.requireRedrain()
		a.set(ctx, tDrain, a.cfg.DrainInterval)
	case st.Phase == PhaseResyncRequired:
		a.sendResyncNeeded(ctx)
	}
}

func (a *Agent) register(ctx runtime.Context) {
	var sizes []int64
	for _, d := range a.cfg.Guest.Disks() {
		sizes = append(sizes, d.Size())
	}
	// With keys that could not be derived the proof is wrong, and the
	// configuration server says so.
	proof := a.keys.Proof(a.cfg.Machine)
	ctx.Send(a.cfg.ConfigServer, wire.Encode(&proto.Register{Machine: a.cfg.Machine, InstanceUUID: a.cfg.InstanceUUID,
		Physical: a.cfg.Physical, DiskSizes: sizes, Proof: proof, AgentVersion: a.cfg.Version}))
	retry := a.cfg.RegisterRetry
	if a.refusedReason != "" {
		retry = a.cfg.RefusedRetry
	}
	a.set(ctx, tRegister, retry)
}

func (a *Agent) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := wire.Decode(ev.Data)
	if err != nil {
		ctx.Log().Warn("agent: dropped undecodable frame", "from", string(ev.From), "err", err)
		return
	}
	if a.filter == nil {
		return // not started properly: nothing to act with
	}
	switch m := msg.(type) {
	case *proto.RegisterReply:
		if m.Machine == a.cfg.Machine {
			a.onRegisterReply(ctx, m)
		}
	case *proto.Protect:
		if m.Machine == a.cfg.Machine {
			a.onProtect(ctx, m)
		}
	case *proto.Unprotect:
		if m.Machine == a.cfg.Machine {
			a.onUnprotect(ctx)
		}
	case *proto.Checksums:
		if m.Machine == a.cfg.Machine {
			a.onChecksums(ctx, m)
		}
	case *proto.ItemAck:
		if m.Machine == a.cfg.Machine {
			a.onAck(ctx, m)
		}
	case *proto.GroupConfig:
		a.onGroupConfig(ctx, m)
	case *proto.Tag:
		a.member.onTag(ctx, ev.From, m)
	case *proto.TagAck:
		a.master.roundAck(ctx, m)
	default:
		ctx.Log().Warn("agent: unexpected message", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

func (a *Agent) onRegisterReply(ctx runtime.Context, m *proto.RegisterReply) {
	if waiting := a.timers.Pending(tRegister); !waiting && (m.OK == a.registered) {
		return // a duplicate
	}
	a.cancel(ctx, tRegister)
	if !m.OK {
		a.registered = false
		a.refusedReason = m.Reason
		a.lastErr = "registration refused: " + m.Reason
		ctx.Log().Error("agent: registration refused; not replicating", "machine", a.cfg.Machine, "reason", m.Reason)
		a.set(ctx, tRegister, a.cfg.RefusedRetry)
		return
	}
	a.registered, a.refusedReason = true, ""
	ctx.Log().Info("agent: registered", "machine", a.cfg.Machine, "vault", m.VaultID)
	a.heartbeat(ctx)
}

func (a *Agent) onProtect(ctx runtime.Context, m *proto.Protect) {
	if a.refusedReason != "" {
		ctx.Log().Warn("agent: ignoring Protect: registration was refused", "machine", a.cfg.Machine)
		return
	}
	a.registered = true // the configuration server accepted us, whatever became of its reply
	a.cancel(ctx, tRegister)
	switch {
	case m.Gen < a.st.Gen || (m.Gen == a.st.Gen && a.phase == PhaseResyncRequired):
		return // stale, or not the resync we asked for
	case m.Gen == a.st.Gen && a.phase != PhaseIdle:
		// A resent Protect: keep going, taking the new policy and server.
		if m.Policy != a.st.Policy {
			a.st.Policy = m.Policy
			a.save(ctx)
			a.armBookmarkTimers(ctx)
		}
		if m.ProcessServer != a.st.ProcessServer {
			a.switchProcessServer(ctx, m.ProcessServer)
		}
		return
	}
	ctx.Log().Info("agent: protect", "machine", a.cfg.Machine, "gen", m.Gen, "policy", m.Policy.Name,
		"process_server", m.ProcessServer)
	psChanged := m.ProcessServer != a.st.ProcessServer
	// A resync (a new gen, same policy) keeps the bookmark schedule going:
	// restarting it would leave a gap of up to two intervals between points.
	scheduled := a.timers.Pending(tCrash)
	keepSchedule := scheduled && m.Policy == a.st.Policy
	// The process server's numbering and cache epoch, unless it is another one.
	floor, epoch, ceil := a.st.StreamFloor, a.st.PSEpoch, a.st.StreamCeil
	if psChanged {
		floor, epoch = 0, 0
	}
	// The schedule's origin is persisted from the start (not only from
	// the first bookmark): a restart before the first bookmark then keeps
	// the cadence too, instead of starting a full interval over — an agent
	// or machine restarting more often than the interval never made a
	// point (swarm seeds 18, 23, 46, 59). A kept schedule keeps its times.
	crashFrom, appFrom := ctx.Now().UnixNano(), ctx.Now().UnixNano()
	if keepSchedule {
		crashFrom, appFrom = a.st.LastCrashBookmark, a.st.LastAppBookmark
	}
	a.st = persisted{Machine: a.cfg.Machine, Gen: m.Gen, Policy: m.Policy, ProcessServer: m.ProcessServer, Phase: PhaseSyncing,
		LastTagN: a.st.LastTagN, StreamFloor: floor, PSEpoch: epoch, StreamCeil: ceil,
		LastCrashBookmark: crashFrom, LastAppBookmark: appFrom}
	a.cancel(ctx, tResync)
	if !a.timers.Pending(tHeartbeat) {
		a.heartbeat(ctx)
	}
	if !keepSchedule {
		a.armBookmarkTimers(ctx)
	}
	if psChanged {
		a.psEpoch, a.pastEpochs, a.ackedLogs = 0, nil, nil
	}
	if psChanged || !a.streamOpen {
		a.dropStream()
		a.openStream(ctx)
	}
	a.beginSync(ctx, m.Gen)
}

// switchProcessServer moves the stream to another process server: its
// numbering is its own, so what was queued is dropped and rebuilt.
func (a *Agent) switchProcessServer(ctx runtime.Context, ps string) {
	ctx.Log().Info("agent: process server changed", "machine", a.cfg.Machine, "process_server", ps)
	a.st.ProcessServer, a.st.StreamFloor, a.st.PSEpoch = ps, 0, 0
	a.psEpoch, a.pastEpochs, a.ackedLogs = 0, nil, nil
	a.save(ctx)
	a.dropStream()
	a.openStream(ctx)
	switch a.phase {
	case PhaseSyncing:
		a.beginSync(ctx, a.st.Gen)
	case PhaseReplicating:
		a.ops.Reset()
		a.draining = false
		a.drainFrom, a.drainDue = a.filter.Stats().TrimSeq+1, true
	}
}

func (a *Agent) onUnprotect(ctx runtime.Context) {
	if a.st.Gen == 0 && a.phase == PhaseIdle {
		return
	}
	ctx.Log().Info("agent: unprotect", "machine", a.cfg.Machine)
	a.ops.Reset()
	a.sync = nil
	a.draining = false
	a.dropStream()
	for _, name := range []string{tHello, tRetx, tBackoff, tDrain, tCrash, tApp, tResync, tChecksums, tSyncRetry} {
		a.cancel(ctx, name)
	}
	a.leaveGroup(ctx)
	a.phase = PhaseIdle
	a.st = persisted{LastTagN: a.st.LastTagN} // tag numbers never repeat
	a.forgetState(ctx)
}

func (a *Agent) timer(ctx runtime.Context, name string) {
	switch name {
	case tRegister:
		if a.filter == nil {
			a.start(ctx) // the filter could not be installed: try again
			return
		}
		a.register(ctx)
	case tHeartbeat:
		a.heartbeat(ctx)
	case tHello:
		if !a.streamOpen {
			a.openStream(ctx)
		}
	case tRetx:
		a.retransmit(ctx)
	case tBackoff:
		a.backingOff = false
		a.sentUpTo = a.acked
	case tDrain:
		a.drainDue = true
		a.set(ctx, tDrain, a.cfg.DrainInterval)
	case tCrash:
		a.bookmarkTick(ctx, proto.Crash)
	case tApp:
		a.bookmarkTick(ctx, proto.App)
	case tResync:
		if a.phase == PhaseResyncRequired {
			a.sendResyncNeeded(ctx)
		}
	case tChecksums:
		if a.sync != nil && !a.sync.final {
			ctx.Log().Warn("agent: replica checksums did not arrive; starting the sync over",
				"machine", a.cfg.Machine, "gen", a.sync.gen)
			a.beginSync(ctx, a.sync.gen)
		}
	case tSyncRetry:
		if a.sync != nil {
			a.sync.blocked = false
		}
	}
}

func (a *Agent) heartbeat(ctx runtime.Context) {
	s := a.Status()
	ctx.Send(a.cfg.ConfigServer, wire.Encode(&proto.Heartbeat{Machine: a.cfg.Machine, Phase: s.Phase, Mode: s.Mode,
		PendingBytes: s.PendingBytes, PendingRecords: int64(s.PendingRecords), AckedItems: s.ItemsAcked,
		SyncedBytes: s.Sync.BytesRead, SyncTotalBytes: s.Sync.TotalBytes, SentBytes: s.PayloadBytesSent,
		Gen: s.Gen, Group: s.Group, GroupVersion: s.GroupVersion}))
	a.set(ctx, tHeartbeat, a.cfg.HeartbeatEvery)
}

// observe follows the filter: it logs mode changes, and turns a filter that
// stopped tracking into a resync request.
func (a *Agent) observe(ctx runtime.Context) {
	fs := a.filter.Stats()
	if fs.BitmapResyncs > a.bitmapResyncs {
		if a.lastMode == ModeBitmap {
			ctx.Log().Info("agent: bitmap resync", "machine", a.cfg.Machine, "why", "drained",
				"blocks", fs.LastResyncBlocks, "records", fs.PendingRecords)
		}
		a.bitmapResyncs = fs.BitmapResyncs
	}
	if fs.Mode != a.lastMode {
		ctx.Log().Info("agent: capture mode", "machine", a.cfg.Machine, "from", a.lastMode.String(),
			"to", fs.Mode.String(), "pending_bytes", fs.PendingBytes, "pending_records", fs.PendingRecords)
		a.lastMode = fs.Mode
	}
	if fs.StopReason != "" && (a.phase == PhaseSyncing || a.phase == PhaseReplicating) {
		a.requireResync(ctx, fs.StopReason)
	}
}

// requireResync stops the sync or replication and asks the configuration
// server for a resync until a Protect with a higher gen comes.
func (a *Agent) requireResync(ctx runtime.Context, reason string) {
	if a.phase == PhaseResyncRequired {
		return
	}
	ctx.Log().Warn("agent: resync required", "machine", a.cfg.Machine, "gen", a.st.Gen, "reason", reason)
	a.lastErr = "resync required: " + reason
	if a.sync != nil {
		a.ops.Reset() // the sync's pending reads are void
		a.sync = nil
	}
	a.phase = PhaseResyncRequired
	a.st.Phase, a.st.Reason = PhaseResyncRequired, reason
	a.save(ctx)
	a.sendResyncNeeded(ctx)
}

func (a *Agent) sendResyncNeeded(ctx runtime.Context) {
	ctx.Send(a.cfg.ConfigServer, wire.Encode(&proto.ResyncNeeded{Machine: a.cfg.Machine, Reason: a.st.Reason}))
	a.set(ctx, tResync, a.cfg.ResyncRetry)
}

// fail records an error a person should see.
func (a *Agent) fail(ctx runtime.Context, what string, err error) {
	a.lastErr = what + ": " + err.Error()
	ctx.Log().Error("agent: "+what, "machine", a.cfg.Machine, "err", err)
}

// set (re)arms the timer called name.
func (a *Agent) set(ctx runtime.Context, name string, d time.Duration) {
	a.timers.Set(ctx, name, d)
}

// arm sets the timer called name unless it is pending.
func (a *Agent) arm(ctx runtime.Context, name string, d time.Duration) {
	a.timers.Arm(ctx, name, d)
}

func (a *Agent) cancel(ctx runtime.Context, name string) {
	a.timers.Cancel(ctx, name)
}

// startOp starts op in the current epoch; then handles its completion
// unless an ops.Reset came first.
func (a *Agent) startOp(ctx runtime.Context, op runtime.Op, then func(runtime.Context, runtime.Done)) {
	a.ops.Go(ctx, op, then)
}
