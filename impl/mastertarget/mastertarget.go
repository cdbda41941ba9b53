// Package mastertarget is the on-premises master target of failback: it
// receives a failed-over machine's replication stream coming back from
// Azure and writes it into the disks of the on-premises VM — the flat
// extents ("-flat.vmdk") in the vSphere datastore, through the vSphere port
// — keeping its applied position on a retention volume. It serves at most
// proto.MaxTargetDisks (60) disks across every VM attached to it.
//
// The stream is the forward one's (batch.Item in proto.ItemMsg, answered
// with proto.ItemAck), so an item means the same in both directions. The
// ordering rules, per machine:
//
//  1. AttachTarget names the machine's disks. The state file that records
//     them (<RetentionDir>/<machine>.state) is written and fsynced before
//     the Reply says OK; until then the machine's items are refused as not
//     attached. A request that would take the target past its disk limit
//     is refused, and nothing of it is kept.
//  2. Items are taken strictly in stream order: with Applied the last item
//     applied and Received the last one queued, only Received+1 is queued;
//     a later one is answered AckGap with the expected number, an earlier
//     one already applied is acknowledged again, an earlier one still
//     queued is not answered (its apply will be). An item that does not
//     decode, names another machine or sequence number, or writes outside
//     the attached disks is refused (AckRefused, the reason said) and not
//     queued.
//  3. Queued items are applied in order by one op at a time per machine:
//     it reads each disk the items touch, applies them, writes the disks
//     back, then writes the new Applied to the state file and fsyncs it.
//     Only when that op completes are the items acknowledged (ItemAck,
//     cumulative): the ack never runs ahead of the durable position.
//  4. When a datastore write fails (full, unreachable) or the retention
//     volume does, nothing is acknowledged: the sender is told
//     AckWriteFailed with the reason, the items stay queued and the op is
//     tried again after RetryEvery. Applying items again is harmless (the
//     same bytes at the same offsets), which is also why a crash between a
//     disk write and the state fsync loses nothing: the sender still holds
//     the items and resends them from Applied+1.
//  5. BlockSumRequest is answered between applies (never during one), with
//     the sums of the disk as it stands at Applied, by the one rule
//     proto.BlockSum: a reprotect compares them with the Azure disk's and
//     sends only the blocks that differ.
//  6. A restarted Target rebuilds every machine from the retention volume
//     before it handles a message (messages received meanwhile wait). A
//     state file that does not read is reported in Status and its machine
//     refused until an operator removes the file: its position is never
//     guessed.
//
// Failback: the master target plays the Azure side's part for the stream
// coming back (azuresvc's for the forward one). Events and checksums go to
// Config.ConfigServer, which relays the checksums to the agent:
//
//  7. When a SyncStart is applied (it always ends its apply, so the disks
//     are as it finds them), ReplicaEvent{sync-started} goes out once the
//     state is durable, then the disks' Checksums, computed in an op by
//     proto.BlockSum over proto.ChecksumBlockSize blocks of the synced size,
//     at most MaxSumsPerMessage blocks a message, Final on the last; or one
//     Fresh message per disk while the disks are as the attach said they
//     were created (Fresh, and nothing written since). A resent SyncStart
//     with nothing applied after it, and a restart in that state, send them
//     again. A SyncEnd of the current generation sends sync-complete.
//  8. A bookmark record applied after its sync completed, not already a
//     point, becomes a failback point (ReplicaEvent{point}: id, kind, time,
//     log seq, items applied); a revoke record removes its point. The
//     points live in the state file. A datastore or retention failure sends
//     apply-error once per run of failures, not at every retry.
//  9. The disks are written in place, so to bring them back to a point the
//     target keeps an undo journal on the retention volume
//     (<machine>.journal, journal.go): an apply reads, for
//     each write at a stream position after a point not already in the
//     journal (its position is not after the journal's last: a re-apply
//     after a crash finds the new bytes on disk and must not take them for
//     old ones), the bytes it overwrites (ranged: only those, never a
//     whole disk); it appends those to the
//     journal and fsyncs it, then writes the disks, then the state. The
//     journal reaches the two newest points and the three newest
//     app-consistent ones within proto.FailbackRetention of the newest —
//     the newest and the two newest app-consistent ones the failover needs
//     (a group falls back to a common one), each with one to spare in case
//     the newest bookmark is revoked — and so every point in between: the
//     points it gives up are dropped (ReplicaEvent{pruned}) and, once the
//     state saying so is durable, its entries before the oldest kept point
//     are cut (the file rewritten atomically), so it stays bounded. A
//     restart trims what a crash left untrimmed.
//  10. FailbackPoint (proto.PointLatest, proto.PointLatestApp or a point's
//     id) with no such point is refused at once, naming the points there
//     are, the disks untouched. Otherwise, between applies, the rollback
//     op writes the state saying a rollback to the point began (fsynced
//     before any disk is touched), puts back the journal's bytes after the
//     point newest first, writes the state saying the machine failed back
//     at the point (its only point from then on) and removes the journal.
//     Undoing is idempotent, so a restart that finds a rollback begun does
//     it again. The Reply (Result the point, Subject the VM) says OK once
//     the disks are at the point; asked again for that point it says OK
//     again, for any other it refuses. From the moment a rollback begins,
//     the machine's items are refused (AckRefused, ErrFailedBack).
//     TargetPointsRequest is answered at any time with the points, oldest
//     first.
//
// The vSphere port moves whole datastore files, so each apply reads and
// writes whole disks: fine for the simulated disks; a production master
// target would write extents in place (VDDK), behind the same rules.
package mastertarget

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Errors. Each is wrapped with the machine, item or disk it concerns.
var (
	ErrTooManyDisks = errors.New("mastertarget: too many disks")
	ErrNotAttached  = errors.New("mastertarget: machine not attached")
	ErrAttached     = errors.New("mastertarget: machine attached to other disks")
	ErrBadAttach    = errors.New("mastertarget: bad attach request")
	ErrGap          = errors.New("mastertarget: gap in the stream")
	ErrCorrupt      = errors.New("mastertarget: corrupt item")
	ErrForeign      = errors.New("mastertarget: item does not fit the attached disks")
	ErrQueueFull    = errors.New("mastertarget: queue full")
	ErrDatastore    = errors.New("mastertarget: datastore write failed")
	ErrRetention    = errors.New("mastertarget: retention volume write failed")
	ErrStateCorrupt = errors.New("mastertarget: retention state damaged")
	ErrBadRange     = errors.New("mastertarget: bad block range")
	ErrFailedBack   = errors.New("mastertarget: machine failed back")
	ErrNoPoint      = errors.New("mastertarget: no such failback point")
)

// Defaults of Config's zero fields.
const (
	DefaultRetryEvery    = 30 * time.Second
	DefaultMaxQueueItems = 256
	DefaultMaxApplyItems = 64
	// MaxSumsPerMessage bounds the blocks one Checksums message covers
	// (azuresvc's value: the agent takes both sides' messages alike).
	MaxSumsPerMessage = 16384
	// earlyLimit bounds the messages kept while the retention volume loads;
	// later ones are dropped (senders retry).
	earlyLimit = 1024
)

// DeviceRetention is the retention volume (runtime.DiskIO.Device).
const DeviceRetention = "retention"

// Config configures a Target. Zero fields take the defaults above.
type Config struct {
	// VC is the vSphere port holding the VMs' datastores.
	VC vsphere.Client
	// ConfigServer is where ReplicaEvents and a sync's Checksums go (the
	// configuration server relays Checksums to the agent); zero sends
	// nothing.
	ConfigServer runtime.Addr
	// VCenterPeer is the Peer of vSphere ops (the network model's host);
	// "" for a local one.
	VCenterPeer string
	// FS and RetentionDir are the retention volume. It must survive
	// restarts: it is where the applied positions, the points and the undo
	// journals live. The deployment makes RetentionDir (durably). Default
	// fsys.OS{}.
	FS           fsys.FS
	RetentionDir string
	// MaxDisks is the disks the target serves across every machine: at
	// most, and by default, proto.MaxTargetDisks.
	MaxDisks int
	// RetryEvery is how long a failed apply (or load) waits to be tried
	// again.
	RetryEvery time.Duration
	// MaxQueueItems bounds the items of a machine received and not yet
	// applied; one more is answered AckCacheFull (retry later).
	MaxQueueItems int
	// MaxApplyItems bounds the items one apply op takes.
	MaxApplyItems int
	// ReachPoints is how many of the newest points the undo journal
	// reaches back to, besides the app-consistent ones (see points.go).
	ReachPoints int
}

// Target is the master target. Build it with New; drive it as a
// runtime.Actor.
type Target struct {
	cfg Config
	ret retention

	loaded   bool
	early    []runtime.Message
	machines map[string]*machine
	broken   []string // state files that do not read, with the reason
	ops      runtime.Ops[opTag]
	timers   runtime.Timers
}

type machine struct {
	st        state         // as durable on the retention volume
	queue     []*batch.Item // received, not applied: queue[i].Seq == st.Applied+1+i
	sender    runtime.Addr  // where acks go: the last sender of an item
	busy      bool          // an apply or checksum op runs
	attaching bool          // the attach's state file is being written
	replies   []attachReply // attach requests waiting for that write
	sums      []sumReq
	retrying  bool // an apply failed; the retry timer restarts it
	lastErr   string
	errSent   bool // an apply-error event went out for this failure streak

	jour      jinfo              // the undo journal
	sumsDue   bool               // the SyncStart at st.SyncItem still owes its checksums
	syncSums  []*proto.Checksums // the checksums sent for st.SyncItem, for a resent SyncStart
	fbWaiting []fbReq            // failback requests not yet answered

	itemsApplied int64
	bytesWritten int64
}

type attachReply struct {
	to  runtime.Addr
	req string
}

type fbReq struct {
	to  runtime.Addr
	req proto.FailbackPoint
}

type sumReq struct {
	to     runtime.Addr
	req    proto.BlockSumRequest
	blocks int64
	final  bool
}

type opKind int

const (
	opLoad opKind = iota
	opAttach
	opApply
	opSums
	opSyncSums
	opRollback
)

type opTag struct {
	kind    opKind
	machine string
	job     applyJob
	sum     sumReq
	item    uint64 // opSyncSums: the SyncStart's item
	rb      rollbackJob
}

const (
	timerRetry = "retry"
	timerLoad  = "load"
)

// New returns a Target. A MaxDisks over proto.MaxTargetDisks is an error.
func New(cfg Config) (*Target, error) {
	if cfg.VC == nil || cfg.RetentionDir == "" {
		return nil, fmt.Errorf("mastertarget: config needs a vSphere client and a retention directory")
	}
	if cfg.MaxDisks > proto.MaxTargetDisks {
		return nil, fmt.Errorf("%w: a master target serves at most %d disks, not %d", ErrTooManyDisks, proto.MaxTargetDisks, cfg.MaxDisks)
	}
	if cfg.MaxDisks <= 0 {
		cfg.MaxDisks = proto.MaxTargetDisks
	}
	if cfg.FS == nil {
		cfg.FS = fsys.OS{}
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = DefaultRetryEvery
	}
	if cfg.MaxQueueItems <= 0 {
		cfg.MaxQueueItems = DefaultMaxQueueItems
	}
	if cfg.MaxApplyItems <= 0 {
		cfg.MaxApplyItems = DefaultMaxApplyItems
	}
	if cfg.ReachPoints <= 0 {
		cfg.ReachPoints = DefaultReachPoints
	}
	return &Target{cfg: cfg, ret: retention{fs: cfg.FS, dir: cfg.RetentionDir, reach: cfg.ReachPoints}}, nil
}

// Handle implements runtime.Actor.
func (t *Target) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		t.loaded, t.early, t.machines, t.broken = false, nil, map[string]*machine{}, nil
		t.ops, t.timers = runtime.Ops[opTag]{}, runtime.Timers{}
		t.load(ctx)
	case runtime.Message:
		if !t.loaded {
			if len(t.early) < earlyLimit {
				t.early = append(t.early, ev)
			} else {
				ctx.Log().Warn("mastertarget: message dropped while loading", "from", string(ev.From))
			}
			return
		}
		t.message(ctx, ev)
	case runtime.Timer:
		if !t.timers.Fired(ev) {
			return
		}
		switch ev.Name {
		case timerLoad:
			t.load(ctx)
		case timerRetry:
			for _, name := range t.names() {
				if m := t.machines[name]; m.retrying {
					m.retrying = false
					t.kick(ctx, m)
				}
			}
		}
	case runtime.Done:
		tag, ok := t.ops.Complete(ev)
		if !ok {
			return
		}
		switch tag.kind {
		case opLoad:
			t.loadDone(ctx, ev)
		case opAttach:
			t.attachDone(ctx, tag.machine, ev)
		case opApply:
			t.applyDone(ctx, tag, ev)
		case opSums:
			t.sumsDone(ctx, tag, ev)
		case opSyncSums:
			t.syncSumsDone(ctx, tag, ev)
		case opRollback:
			t.rollbackDone(ctx, tag, ev)
		}
	}
}

func (t *Target) names() []string {
	names := make([]string, 0, len(t.machines))
	for n := range t.machines {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (t *Target) load(ctx runtime.Context) {
	ret := t.ret
	t.ops.Start(ctx, runtime.Op{Name: "mastertarget load retention", Disk: &runtime.DiskIO{Device: DeviceRetention},
		Run: func(context.Context) (any, error) { return ret.load() }}, opTag{kind: opLoad})
}

func (t *Target) loadDone(ctx runtime.Context, d runtime.Done) {
	if d.Err != nil {
		ctx.Log().Error("mastertarget: retention volume unreadable", "err", d.Err.Error())
		t.timers.Set(ctx, timerLoad, t.cfg.RetryEvery)
		return
	}
	l := d.Value.(loaded)
	for i, s := range l.states {
		m := &machine{st: s, jour: l.journals[i]}
		// A SyncStart applied with nothing after it may not have had its
		// checksums sent: send them (again).
		m.sumsDue = !s.Synced && s.SyncItem != 0 && s.SyncItem == s.Applied && s.FailedBack == "" && s.Rollback == ""
		t.machines[s.Machine] = m
		ctx.Log().Info("mastertarget: machine restored", "machine", s.Machine, "disks", len(s.Disks), "applied", s.Applied,
			"points", len(s.Points), "journal_bytes", m.jour.Bytes, "rollback", s.Rollback, "failed_back", s.FailedBack)
	}
	t.broken = l.broken
	for _, b := range l.broken {
		ctx.Log().Error("mastertarget: retention state unreadable", "err", b)
	}
	t.loaded = true
	for _, name := range t.names() {
		t.kick(ctx, t.machines[name]) // an interrupted rollback, owed checksums
	}
	early := t.early
	t.early = nil
	for _, m := range early {
		t.message(ctx, m)
	}
}

func (t *Target) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := ev.Decode() // the CRC checked once: by the runtime, else here
	if err != nil {
		ctx.Log().Warn("mastertarget: frame refused", "from", string(ev.From), "err", err.Error())
		return
	}
	switch m := msg.(type) {
	case *proto.ItemMsg:
		t.item(ctx, ev.From, m)
	case *proto.StreamHello:
		t.hello(ctx, ev.From, m)
	case *proto.AttachTarget:
		t.attach(ctx, ev.From, m)
	case *proto.BlockSumRequest:
		t.blockSums(ctx, ev.From, m)
	case *proto.FailbackPoint:
		t.failbackPoint(ctx, ev.From, m)
	case *proto.TargetPointsRequest:
		t.targetPoints(ctx, ev.From, m)
	default:
		ctx.Log().Warn("mastertarget: message refused", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

// disksInUse counts the disks of every machine attached or attaching.
func (t *Target) disksInUse() int {
	n := 0
	for _, m := range t.machines {
		n += len(m.st.Disks)
	}
	return n
}

func (t *Target) attach(ctx runtime.Context, from runtime.Addr, req *proto.AttachTarget) {
	refuse := func(err error) {
		ctx.Log().Warn("mastertarget: attach refused", "machine", req.Machine, "err", err.Error())
		ctx.Send(from, wire.Encode(&proto.Reply{Request: "attach-target", Subject: req.Machine, Reason: err.Error(), Req: req.Req}))
	}
	if err := t.checkAttach(req); err != nil {
		refuse(err)
		return
	}
	if m, ok := t.machines[req.Machine]; ok {
		if !slices.Equal(m.st.Disks, req.Disks) {
			refuse(fmt.Errorf("%w: %s has %d disks here (%s…)", ErrAttached, req.Machine, len(m.st.Disks), m.st.Disks[0].Path))
			return
		}
		if m.attaching {
			m.replies = append(m.replies, attachReply{from, req.Req})
			return
		}
		ctx.Send(from, wire.Encode(&proto.Reply{Request: "attach-target", Subject: req.Machine, OK: true, Req: req.Req}))
		return
	}
	if n := t.disksInUse() + len(req.Disks); n > t.cfg.MaxDisks {
		refuse(fmt.Errorf("%w: %s's %d disks would make %d, over the %d this master target serves",
			ErrTooManyDisks, req.Machine, len(req.Disks), n, t.cfg.MaxDisks))
		return
	}
	m := &machine{st: state{Machine: req.Machine, Disks: slices.Clone(req.Disks), VM: req.VM, Fresh: req.Fresh}, attaching: true,
		replies: []attachReply{{from, req.Req}}}
	t.machines[req.Machine] = m
	ret, st := t.ret, m.st
	t.ops.Start(ctx, runtime.Op{Name: "mastertarget attach " + req.Machine,
		Disk: &runtime.DiskIO{Device: DeviceRetention, Bytes: int64(len(st.marshal())), Syncs: 3},
		Run: func(context.Context) (any, error) {
			// A journal left by an earlier attach of the name (its state
			// file removed by an operator) is not this stream's: it goes
			// before the state that would make it believed.
			if _, err := ret.rewriteJournal(st.Machine, nil); err != nil {
				return nil, err
			}
			return nil, ret.write(st)
		}},
		opTag{kind: opAttach, machine: req.Machine})
}

// checkAttach refuses a request that names no usable machine or disks, or
// a disk another machine writes.
func (t *Target) checkAttach(req *proto.AttachTarget) error {
	if err := checkMachineName(req.Machine); err != nil {
		return err
	}
	for _, b := range t.broken {
		if strings.HasPrefix(b, stateName(req.Machine)+":") {
			return fmt.Errorf("%w: %s (remove the file to start %s over)", ErrStateCorrupt, b, req.Machine)
		}
	}
	if len(req.Disks) == 0 {
		return fmt.Errorf("%w: %s names no disks", ErrBadAttach, req.Machine)
	}
	if len(req.Disks) > t.cfg.MaxDisks {
		return fmt.Errorf("%w: %s has %d disks, over the %d a master target serves", ErrTooManyDisks, req.Machine, len(req.Disks), t.cfg.MaxDisks)
	}
	inUse := map[string]string{}
	for name, m := range t.machines {
		if name == req.Machine {
			continue
		}
		for _, d := range m.st.Disks {
			inUse[d.Path] = name
		}
	}
	for i, d := range req.Disks {
		p, err := vsphere.ParseDatastorePath(d.Path)
		if err != nil || p.Path == "" {
			return fmt.Errorf("%w: %s disk %d: path %q is not \"[datastore] file\"", ErrBadAttach, req.Machine, i, d.Path)
		}
		if d.CapacityBytes <= 0 {
			return fmt.Errorf("%w: %s disk %d: capacity %d bytes", ErrBadAttach, req.Machine, i, d.CapacityBytes)
		}
		if other, ok := inUse[d.Path]; ok {
			return fmt.Errorf("%w: %s disk %d: %s is %s's", ErrBadAttach, req.Machine, i, d.Path, other)
		}
		inUse[d.Path] = req.Machine
	}
	return nil
}

func (t *Target) attachDone(ctx runtime.Context, name string, d runtime.Done) {
	m := t.machines[name]
	replies := m.replies
	m.replies, m.attaching = nil, false
	reply := proto.Reply{Request: "attach-target", Subject: name, OK: d.Err == nil}
	if d.Err != nil {
		delete(t.machines, name)
		reply.Reason = d.Err.Error()
		ctx.Log().Error("mastertarget: attach failed", "machine", name, "err", d.Err.Error())
	} else {
		ctx.Log().Info("mastertarget: machine attached", "machine", name, "disks", len(m.st.Disks))
	}
	for _, r := range replies {
		reply.Req = r.req
		ctx.Send(r.to, wire.Encode(&reply))
	}
}

// hello answers a StreamHello (an agent opening its stream, through the
// process server in Azure) with the machine's durable position: the
// stream's numbering is the master target's, as it is the process
// server's in the forward direction. A machine not attached, or failed
// back, is refused as its items would be. With items queued, the acks of
// their applies are the answer (they came before the hello, on the same
// path).
func (t *Target) hello(ctx runtime.Context, from runtime.Addr, msg *proto.StreamHello) {
	m, ok := t.machines[msg.Machine]
	switch {
	case !ok || m.attaching:
		t.ack(ctx, from, msg.Machine, 0, proto.AckRefused, fmt.Errorf("%w: %s", ErrNotAttached, msg.Machine))
	case m.st.FailedBack != "" || m.st.Rollback != "":
		t.ack(ctx, from, msg.Machine, m.st.Applied, proto.AckRefused, closedErr(m))
	case len(m.queue) > 0:
		// Items sent before the hello are here, queued, and their applies
		// answer it: an answer now, at Applied, would have a probing agent
		// send them all again — over a slow VPN, each resend queued behind
		// the last (swarm seed 13).
		m.sender = from
	default:
		m.sender = from
		t.ack(ctx, from, msg.Machine, m.st.Applied, proto.AckOK, nil)
	}
}

func (t *Target) item(ctx runtime.Context, from runtime.Addr, msg *proto.ItemMsg) {
	m, ok := t.machines[msg.Machine]
	if !ok || m.attaching {
		t.ack(ctx, from, msg.Machine, 0, proto.AckRefused, fmt.Errorf("%w: %s", ErrNotAttached, msg.Machine))
		return
	}
	if m.st.FailedBack != "" || m.st.Rollback != "" {
		t.ack(ctx, from, msg.Machine, m.st.Applied, proto.AckRefused, closedErr(m))
		return
	}
	m.sender = from
	applied := m.st.Applied
	received := applied + uint64(len(m.queue))
	switch {
	case msg.Seq <= applied:
		if msg.Seq == m.st.SyncItem && msg.Seq == applied && !m.st.Synced && m.syncSums != nil {
			// A resent SyncStart: its sender waits for the checksums.
			t.sendSums(ctx, m.syncSums)
		}
		t.ack(ctx, from, msg.Machine, applied, proto.AckOK, nil)
		return
	case msg.Seq <= received:
		return // queued: its apply answers
	case msg.Seq > received+1:
		t.ack(ctx, from, msg.Machine, applied, proto.AckGap,
			fmt.Errorf("%w: %s: expected item %d, got %d", ErrGap, msg.Machine, received+1, msg.Seq))
		return
	}
	it, err := batch.Unmarshal(msg.Data)
	if err == nil {
		err = it.Validate()
	}
	if err != nil {
		t.ack(ctx, from, msg.Machine, applied, proto.AckRefused, fmt.Errorf("%w: %s item %d: %w", ErrCorrupt, msg.Machine, msg.Seq, err))
		return
	}
	if it.Machine != msg.Machine || it.Seq != msg.Seq {
		t.ack(ctx, from, msg.Machine, applied, proto.AckRefused,
			fmt.Errorf("%w: message for %s item %d carries %s item %d", ErrForeign, msg.Machine, msg.Seq, it.Machine, it.Seq))
		return
	}
	if err := checkItem(it, m.st.Disks); err != nil {
		t.ack(ctx, from, msg.Machine, applied, proto.AckRefused, err)
		return
	}
	if len(m.queue) >= t.cfg.MaxQueueItems {
		t.ack(ctx, from, msg.Machine, applied, proto.AckCacheFull,
			fmt.Errorf("%w: %s has %d items waiting to be applied", ErrQueueFull, msg.Machine, len(m.queue)))
		return
	}
	m.queue = append(m.queue, it)
	t.kick(ctx, m)
}

func (t *Target) ack(ctx runtime.Context, to runtime.Addr, machine string, acked uint64, status string, err error) {
	a := &proto.ItemAck{Machine: machine, Acked: acked, Status: status}
	if err != nil {
		a.Reason = err.Error()
		ctx.Log().Warn("mastertarget: item not taken", "machine", machine, "status", status, "err", a.Reason)
	}
	ctx.Send(to, wire.Encode(a))
}

// kick starts a machine's next op, if it has none running: checksum
// requests first (they are small and a reprotect waits on them), then an
// unfinished rollback, the checksums a SyncStart owes, failback requests,
// and last the queued items, unless an apply failed and waits for its
// retry or the machine failed back.
func (t *Target) kick(ctx runtime.Context, m *machine) {
	if m.busy || m.attaching {
		return
	}
	vc, peer := t.cfg.VC, t.cfg.VCenterPeer
	if len(m.sums) > 0 {
		sr := m.sums[0]
		m.sums = m.sums[1:]
		disk := m.st.Disks[sr.req.Disk]
		m.busy = true
		t.ops.Start(ctx, runtime.Op{Name: "mastertarget block sums " + m.st.Machine, Peer: peer, Bytes: sr.blocks * proto.ChecksumBlockSize,
			Run: func(c context.Context) (any, error) { return blockSums(c, vc, disk, sr.req.Off, sr.blocks) }},
			opTag{kind: opSums, machine: m.st.Machine, sum: sr})
		return
	}
	if m.st.Rollback != "" {
		if m.retrying {
			return
		}
		p, ok := resolve(m.st.Points, m.st.Rollback)
		if !ok {
			ctx.Log().Error("mastertarget: rollback to a point the state does not hold", "machine", m.st.Machine, "point", m.st.Rollback)
			return
		}
		t.startRollback(ctx, m, p)
		return
	}
	if m.sumsDue && !m.retrying {
		t.startSyncSums(ctx, m)
		return
	}
	if t.answerFailbacks(ctx, m) || m.st.FailedBack != "" || len(m.queue) == 0 || m.retrying {
		return
	}
	n := min(len(m.queue), t.cfg.MaxApplyItems)
	for i, it := range m.queue[:n] {
		if it.Kind == batch.KindSyncStart {
			n = i + 1 // the checksums are of the disks as the SyncStart finds them
			break
		}
	}
	items := slices.Clone(m.queue[:n])
	pl := planItems(m.st, items, t.cfg.ReachPoints)
	job := applyJob{disks: pl.next.Disks, items: items, plan: pl, jour: m.jour}
	bytes := job.datastoreBytes() // ranged: what the items write, and what the journal keeps of the disk
	ret := t.ret
	m.busy = true
	t.ops.Start(ctx, runtime.Op{Name: "mastertarget apply " + m.st.Machine, Peer: peer, Bytes: bytes,
		Disk: &runtime.DiskIO{Device: DeviceRetention, Bytes: int64(len(pl.next.marshal())), Syncs: 3},
		Run:  func(c context.Context) (any, error) { return job.run(c, vc, ret) }},
		opTag{kind: opApply, machine: m.st.Machine, job: job})
}

func (t *Target) applyDone(ctx runtime.Context, tag opTag, d runtime.Done) {
	m := t.machines[tag.machine]
	m.busy = false
	res, ok := d.Value.(applyResult)
	if ok {
		m.jour = res.jour // an append that succeeded stays, whatever came after
	}
	if d.Err != nil {
		m.lastErr = d.Err.Error()
		m.retrying = true
		t.timers.Arm(ctx, timerRetry, t.cfg.RetryEvery)
		if m.sender != "" {
			a := &proto.ItemAck{Machine: tag.machine, Acked: m.st.Applied, Status: proto.AckWriteFailed, Reason: m.lastErr}
			ctx.Send(m.sender, wire.Encode(a))
		}
		t.applyError(ctx, m, m.st.Applied+1)
		ctx.Log().Warn("mastertarget: apply failed", "machine", tag.machine, "applied", m.st.Applied, "err", m.lastErr)
		t.kick(ctx, m) // checksum requests still get answers
		return
	}
	n := len(tag.job.items)
	m.st = tag.job.plan.next
	m.queue = m.queue[n:]
	m.lastErr, m.errSent = "", false
	m.itemsApplied += int64(n)
	m.bytesWritten += res.bytesWritten
	if tag.job.plan.sumsDue {
		m.sumsDue, m.syncSums = true, nil
	}
	if res.trimErr != nil {
		ctx.Log().Warn("mastertarget: undo journal not trimmed", "machine", tag.machine, "err", res.trimErr.Error())
	}
	ctx.Log().Info("mastertarget: items applied", "machine", tag.machine, "items", n, "applied", m.st.Applied,
		"journaled", res.journaled, "journal_bytes", m.jour.Bytes, "points", len(m.st.Points))
	if m.sender != "" {
		ctx.Send(m.sender, wire.Encode(&proto.ItemAck{Machine: tag.machine, Acked: m.st.Applied, Status: proto.AckOK}))
	}
	for _, ev := range tag.job.plan.events {
		t.event(ctx, ev)
	}
	t.kick(ctx, m)
}

// applyError sends apply-error for the first failure of a streak.
func (t *Target) applyError(ctx runtime.Context, m *machine, seq uint64) {
	if m.errSent {
		return
	}
	m.errSent = true
	t.event(ctx, &proto.ReplicaEvent{Machine: m.st.Machine, Event: proto.EventApplyError, Gen: m.st.Gen, Seq: seq,
		Applied: m.st.Applied, Detail: m.lastErr})
}

func (t *Target) event(ctx runtime.Context, ev *proto.ReplicaEvent) {
	if t.cfg.ConfigServer == "" {
		return
	}
	ctx.Send(t.cfg.ConfigServer, wire.Encode(ev))
}

func (t *Target) sendSums(ctx runtime.Context, sums []*proto.Checksums) {
	if t.cfg.ConfigServer == "" {
		return
	}
	for _, c := range sums {
		ctx.Send(t.cfg.ConfigServer, wire.Encode(c))
	}
}

// startSyncSums computes the checksums the SyncStart at st.SyncItem owes.
func (t *Target) startSyncSums(ctx runtime.Context, m *machine) {
	vc, st := t.cfg.VC, m.st.clone()
	var bytes int64
	for _, d := range st.Disks {
		bytes += d.CapacityBytes
	}
	if st.Fresh {
		bytes = 0
	}
	m.busy = true
	t.ops.Start(ctx, runtime.Op{Name: "mastertarget checksums " + st.Machine, Peer: t.cfg.VCenterPeer, Bytes: bytes,
		Run: func(c context.Context) (any, error) { return checksumMessages(c, vc, st) }},
		opTag{kind: opSyncSums, machine: st.Machine, item: st.SyncItem})
}

func (t *Target) syncSumsDone(ctx runtime.Context, tag opTag, d runtime.Done) {
	m := t.machines[tag.machine]
	m.busy = false
	if d.Err != nil {
		m.lastErr = d.Err.Error()
		m.retrying = true
		t.timers.Arm(ctx, timerRetry, t.cfg.RetryEvery)
		t.applyError(ctx, m, tag.item)
		ctx.Log().Warn("mastertarget: checksums failed", "machine", tag.machine, "err", m.lastErr)
		t.kick(ctx, m)
		return
	}
	m.sumsDue, m.lastErr, m.errSent = false, "", false
	if m.st.SyncItem == tag.item {
		m.syncSums = d.Value.([]*proto.Checksums)
		fresh := 0
		for _, c := range m.syncSums {
			if c.Fresh {
				fresh++
			}
		}
		ctx.Log().Info("mastertarget: checksums sent", "machine", tag.machine, "gen", m.st.Gen, "messages", len(m.syncSums), "fresh_disks", fresh)
		t.sendSums(ctx, m.syncSums)
	}
	t.kick(ctx, m)
}

func (t *Target) blockSums(ctx runtime.Context, from runtime.Addr, req *proto.BlockSumRequest) {
	reply := func(err error) {
		ctx.Log().Warn("mastertarget: block sums refused", "machine", req.Machine, "err", err.Error())
		ctx.Send(from, wire.Encode(&proto.BlockSumReply{Req: req.Req, Machine: req.Machine, Disk: req.Disk, Off: req.Off, Err: err.Error()}))
	}
	m, ok := t.machines[req.Machine]
	if !ok || m.attaching {
		reply(fmt.Errorf("%w: %s", ErrNotAttached, req.Machine))
		return
	}
	if int(req.Disk) >= len(m.st.Disks) {
		reply(fmt.Errorf("%w: %s disk %d of %d", ErrBadRange, req.Machine, req.Disk, len(m.st.Disks)))
		return
	}
	capBytes := m.st.Disks[req.Disk].CapacityBytes
	if req.Off < 0 || req.Off%proto.ChecksumBlockSize != 0 || req.Off >= capBytes || req.Blocks < 0 {
		reply(fmt.Errorf("%w: %s disk %d: %d blocks at %d (block-aligned, within %d bytes)", ErrBadRange, req.Machine, req.Disk, req.Blocks, req.Off, capBytes))
		return
	}
	rest := (capBytes - req.Off + proto.ChecksumBlockSize - 1) / proto.ChecksumBlockSize
	n := rest
	if req.Blocks > 0 {
		n = min(n, req.Blocks)
	}
	n = min(n, proto.MaxBlockSums)
	m.sums = append(m.sums, sumReq{to: from, req: *req, blocks: n, final: n == rest})
	t.kick(ctx, m)
}

func (t *Target) sumsDone(ctx runtime.Context, tag opTag, d runtime.Done) {
	m := t.machines[tag.machine]
	m.busy = false
	sr := tag.sum
	r := &proto.BlockSumReply{Req: sr.req.Req, Machine: sr.req.Machine, Disk: sr.req.Disk, Off: sr.req.Off,
		BlockSize: proto.ChecksumBlockSize, Applied: m.st.Applied}
	if d.Err != nil {
		r.Err = d.Err.Error()
		ctx.Log().Warn("mastertarget: block sums failed", "machine", tag.machine, "err", r.Err)
	} else {
		r.Sums, r.Final = d.Value.([]byte), sr.final
	}
	ctx.Send(sr.to, wire.Encode(r))
	t.kick(ctx, m)
}

// checkMachineName refuses names that cannot name a state file plainly.
func checkMachineName(m string) error {
	if m == "" || m == "." || m == ".." || len(m) > 200 || strings.ContainsAny(m, "/\\") {
		return fmt.Errorf("%w: machine name %q", ErrBadAttach, m)
	}
	for _, r := range m {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: machine name %q", ErrBadAttach, m)
		}
	}
	return nil
}
