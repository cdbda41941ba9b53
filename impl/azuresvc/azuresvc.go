// Package azuresvc is what Site Recovery does inside Azure for VMware and
// physical machines: it applies each machine's replication stream, uploaded
// by the process server as sealed items to `<prefix>cache/<machine>/<seq>`,
// to the machine's replica disks (page blobs in `<prefix>replica`), turns
// bookmarks into recovery points (blob snapshots), prunes them by the
// policy's retention, and keeps all of it in a catalog per machine
// (`<prefix>catalog/<machine>.json`, updated with ETag conditions).
//
// The Service is a runtime.Actor. It learns of items from Uploaded hints and
// from listing the cache container on a timer; the listing is the truth. A
// hint names the items the process server has uploaded: the Service fetches
// them without listing (a hinted item that is not there is only forgotten
// until a listing shows it). The poll lists at PollEvery while anything is
// pending, and backs off, doubling up to PollMax, while its listings find
// nothing new: with hints flowing, listing is only the net for a lost hint,
// and a lost hint is found within PollMax. Per machine, items are applied strictly in
// stream order, one storage Op chain at a time: a missing item number means
// wait, never skip. Different machines proceed concurrently. An item that
// does not open (tampered, corrupt, another vault's key) or does not fit the
// replica is reported to the configuration server as
// ReplicaEvent{apply-error}, left in place, and retried at the next poll.
//
// A log item that holds only writes is not applied on its own: it waits
// (decoded, in memory; its blob stays in the cache) for the items after it,
// and a run of such items is applied together with the next item that
// holds anything else (a bookmark, a revoke), as one Op: the writes between
// two bookmarks are coalesced into few page writes (the replica must equal
// the source at bookmarks, not between them), and the catalog is stored
// once. A point is therefore made as soon as the item with its bookmark
// arrives, as before. A waiting run is applied on its own after DeferFor,
// when it holds DeferBytes, or when anything else needs the machine (a
// failover request, a policy change, an item that is not a log).
//
// Everything durable is in storage: a Service built after a crash reloads
// the catalogs and goes on; applying any item again changes nothing (see
// applier.bookmark for why recovery points stay right).
//
// Replication groups (multi-VM consistency): a PolicyFor names a machine's
// group and its members, kept in the machine's catalog. A tag of the group
// that is a point of every member is a group recovery point, recorded in
// `<prefix>catalog/group-<group>.json` (GroupCatalog) by its own Op after
// the members' points, and reported as ReplicaEvent{group-point}; see
// group.go for why nothing is lost across crashes, and retention.go for how
// hourly thinning keeps the same group tags on every member.
package azuresvc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Config configures a Service. Zero durations take the defaults below.
type Config struct {
	Store           blob.Store
	StoragePeer     string       // host storage Ops talk to; default proto.HostStorage
	ContainerPrefix string       // e.g. "v2a-ab12-"; containers are <prefix>cache, replica, catalog
	Key             [32]byte     // the vault's data key (vault.Keys.Data)
	ConfigServer    runtime.Addr // where ReplicaEvents and Checksums go; default proto.HostConfigServer:443
	// PollEvery is how often the cache container is listed (default 10 s)
	// while anything is pending. A failed item is retried at the next poll.
	PollEvery time.Duration
	// PollMax is the longest time between two listings: while the poll's
	// listings find nothing that hints had not already announced, the time
	// between them doubles from PollEvery up to PollMax (default 5 min;
	// PollMax <= PollEvery turns the backoff off). The announcements and
	// resends below still go every PollEvery.
	PollMax time.Duration
	// ChecksumResend is how often a sync's checksums are sent again while
	// no chunk of the sync has arrived (the agent may have missed them;
	// default 30 s).
	ChecksumResend time.Duration
	// AnnounceEvery is how often sync-complete is sent again for every
	// synced machine, so that a lost one does not leave the configuration
	// server waiting (default 1 min).
	AnnounceEvery time.Duration
	// DeferFor is the longest a log item of writes only waits to be
	// applied with the items after it (default 10 min, twice the default
	// crash interval, so that a run reaches the next bookmark; negative:
	// apply every item at once). Checked at every poll. It delays no
	// point: only how far the catalog's applied item lags a paused stream.
	DeferFor time.Duration
	// DeferBytes bounds the write data waiting per machine (default 32 MiB).
	DeferBytes int64
	// VerifyEvery is how often each machine's catalog is verified against
	// storage: a point whose snapshot is gone is dropped and reported
	// (EventPointLost) (default 15 min).
	VerifyEvery time.Duration
}

// Defaults.
const (
	DefaultPollEvery      = 10 * time.Second
	DefaultPollMax        = 5 * time.Minute
	DefaultDeferFor       = 10 * time.Minute
	DefaultDeferBytes     = 32 << 20
	DefaultChecksumResend = 30 * time.Second
	DefaultAnnounceEvery  = time.Minute
	DefaultVerifyEvery    = 15 * time.Minute
)

// Service is the Azure side. Build it with New; drive it as a runtime.Actor.
type Service struct {
	cfg      Config
	st       storage
	now      time.Time // of the event being (or last) handled
	ready    bool      // containers exist
	setup    bool      // the container set-up Op is in flight
	listing  bool      // a listing Op is in flight
	relist   bool      // list again when it is done (a hint came meanwhile)
	pollList bool      // the listing in flight was the poll's (it releases held machines)
	// listEvery is the poll's current time between listings (PollEvery
	// doubled after each quiet listing, up to PollMax); lastPollList is
	// when the poll last listed.
	listEvery    time.Duration
	lastPollList time.Time
	lastAnn      time.Time
	machines     map[string]*machine
	groups       *tracker // the replication groups: fed catalog changes, answers with actions
	ops          runtime.Ops[pending]
	timers       runtime.Timers
}

// machine is the actor's view of one replicated machine.
type machine struct {
	name     string
	cat      *Catalog // nil until loaded
	etag     string
	busy     bool // an Op chain of this machine is in flight
	held     bool // an attempt failed: wait for the next poll
	sweepDue bool // look for orphan snapshots (after a load or a failure)
	sealer   *batch.Sealer
	listed   map[uint64]int64 // item seq -> sealed size, per the last listing (0: announced by a hint, size unknown)
	// hinted is the highest item an Uploaded hint announced; hintedAtList
	// is what it was when the listing in flight started (a listing does not
	// show items hinted after it started, so those are kept).
	hinted, hintedAtList uint64
	want                 *setting           // from a PolicyFor, until the catalog holds it
	sums                 []*proto.Checksums // computed for sumsItem
	sumsItem             uint64
	sumsSent             time.Time
	applied              uint64 // items applied by this incarnation
	failures             int
	lastErr              string
	// refused is an item that did not open (corrupt in storage): it is
	// never applied. Until a SyncStart of a newer generation arrives (the
	// resync the configuration server orders), the items after it are
	// only probed for that SyncStart. The same probing looks past a gap:
	// items the process server lost with its cache never come, and the
	// agent's resync numbers its SyncStart on past them. probed is the
	// last item probed and found not to be such a SyncStart.
	refused, probed uint64
	refusedErr      string    // why refused did not open (what EventItemRefused says)
	refusedSent     time.Time // when EventItemRefused was last sent
	verified        time.Time // when the catalog was last verified against storage
	// deferred are fetched log items of writes only, Applied+1 on, waiting
	// to be applied with the next (see the package doc); deferredBytes is
	// their write data, deferredSince when the first was fetched.
	deferred      []*batch.Item
	deferredBytes int64
	deferredSince time.Time
	// fo are failover's requests (failover.go), served in arrival order;
	// the head is the one in progress.
	fo []foRequest
}

type opKind int

const (
	opSetup opKind = iota
	opList
	opLoad
	opFetch
	opApply
	opRanges
	opSums
	opRetain
	opCleanup
	opGroupLoad
	opGroupUpdate
	opVerify
	opStop       // failover.go
	opLatestList // failover.go
	opLatest     // failover.go
	opCommit     // failover.go
	opResume     // failover.go
)

type pending struct {
	kind    opKind
	machine string
	seq     uint64   // opFetch, opApply (the last item applied)
	seqs    []uint64 // opApply: the items applied, in order
	probe   bool     // opFetch: looking past a refused or missing item for a newer generation's SyncStart
	gen     uint64   // opRanges, opSums
	item    uint64   // opRanges, opSums: the SyncStart item
	stale   []uint64
	group   string      // opGroupLoad, opGroupUpdate
	change  groupChange // opGroupUpdate
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.StoragePeer == "" {
		cfg.StoragePeer = proto.HostStorage
	}
	if cfg.ConfigServer == "" {
		cfg.ConfigServer = runtime.MakeAddr(proto.HostConfigServer, runtime.PortConfig)
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = DefaultPollEvery
	}
	if cfg.ChecksumResend <= 0 {
		cfg.ChecksumResend = DefaultChecksumResend
	}
	if cfg.AnnounceEvery <= 0 {
		cfg.AnnounceEvery = DefaultAnnounceEvery
	}
	if cfg.VerifyEvery <= 0 {
		cfg.VerifyEvery = DefaultVerifyEvery
	}
	if cfg.DeferFor == 0 {
		cfg.DeferFor = DefaultDeferFor
	}
	if cfg.DeferBytes <= 0 {
		cfg.DeferBytes = DefaultDeferBytes
	}
	if cfg.PollMax == 0 {
		cfg.PollMax = DefaultPollMax
	}
	cfg.PollMax = max(cfg.PollMax, cfg.PollEvery)
	return &Service{cfg: cfg, st: storage{store: cfg.Store, prefix: cfg.ContainerPrefix},
		machines: map[string]*machine{}, groups: newTracker()}
}

// Handle implements runtime.Actor.
func (s *Service) Handle(ctx runtime.Context, ev runtime.Event) {
	s.now = ctx.Now()
	switch ev := ev.(type) {
	case runtime.Started:
		// A Service is built fresh after a crash; reset anyway so that a
		// driver delivering Started twice gets a clean restart.
		s.ready, s.setup, s.listing, s.relist = false, false, false, false
		s.machines, s.groups = map[string]*machine{}, newTracker()
		s.ops, s.timers = runtime.Ops[pending]{}, runtime.Timers{}
		s.listEvery, s.lastPollList = s.cfg.PollEvery, time.Time{}
		ctx.Log().Info("azuresvc: started", "poll_every", s.cfg.PollEvery.String())
		s.startSetup(ctx)
		s.timers.Set(ctx, timerPoll, s.cfg.PollEvery)
	case runtime.Timer:
		if s.timers.Fired(ev) && ev.Name == timerPoll {
			s.timers.Set(ctx, timerPoll, s.cfg.PollEvery)
			s.poll(ctx)
		}
	case runtime.Message:
		s.message(ctx, ev)
	case runtime.Done:
		s.done(ctx, ev)
	}
}

func (s *Service) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := wire.Decode(ev.Data)
	if err != nil {
		ctx.Log().Warn("azuresvc: undecodable frame dropped", "from", string(ev.From), "err", err.Error())
		return
	}
	switch m := msg.(type) {
	case *proto.Uploaded:
		if m.Machine == "" {
			return
		}
		s.hint(ctx, s.machine(m.Machine), m.UpTo)
	case *proto.PolicyFor:
		if m.Machine == "" {
			return
		}
		if err := m.Policy.Validate(); err != nil {
			ctx.Log().Warn("azuresvc: invalid policy ignored", "machine", m.Machine, "err", err.Error())
			return
		}
		st, ok := groupSetting(m)
		if !ok {
			ctx.Log().Warn("azuresvc: invalid group ignored", "machine", m.Machine, "group", m.Group, "members", len(m.Members))
			return
		}
		mc := s.machine(m.Machine)
		mc.want = &st
		s.groups.policy(st)
		s.kick(ctx, mc)
		if s.ready {
			s.do(ctx, s.groups.evalAll(""))
		}
	case *proto.StopReplication, *proto.MakeLatest, *proto.CommitPoint, *proto.ResumeReplication:
		s.failoverRequest(ctx, ev.From, msg)
	default:
		ctx.Log().Debug("azuresvc: message ignored", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

func (s *Service) machine(name string) *machine {
	m, ok := s.machines[name]
	if !ok {
		m = &machine{name: name, listed: map[uint64]int64{}}
		s.machines[name] = m
	}
	return m
}

// sortedMachines lists machines by name, so that Ops start in the same
// order in every run.
func (s *Service) sortedMachines() []*machine {
	names := slices.Sorted(maps.Keys(s.machines))
	out := make([]*machine, len(names))
	for i, n := range names {
		out[i] = s.machines[n]
	}
	return out
}

func (s *Service) send(ctx runtime.Context, msg wire.Msg) {
	ctx.Send(s.cfg.ConfigServer, wire.Encode(msg))
}

// scrub removes the container prefix from text that goes to logs and
// events (container names must not appear in a deterministic trace).
func (s *Service) scrub(text string) string {
	if s.cfg.ContainerPrefix == "" {
		return text
	}
	return strings.ReplaceAll(text, s.cfg.ContainerPrefix, "")
}

func (s *Service) start(ctx runtime.Context, p pending, op runtime.Op) {
	if op.Peer == "" {
		op.Peer = s.cfg.StoragePeer
	}
	s.ops.Start(ctx, op, p)
}

// adopt makes cat (nil: unknown, reload) m's catalog, stored under etag,
// and feeds it to the group tracker: every change of a machine's catalog
// goes through here.
func (s *Service) adopt(m *machine, cat *Catalog, etag string) {
	m.cat, m.etag = cat, etag
	s.groups.observe(m.name, cat)
}

// groupName is the group m belongs to: the one a pending PolicyFor sets,
// else its catalog's; "" for none.
func (s *Service) groupName(m *machine) string {
	switch {
	case m.want != nil:
		return m.want.Group
	case m.cat != nil:
		return m.cat.Group
	}
	return ""
}

// thinningFor is how m's points are thinned now (see tracker.thinning).
func (s *Service) thinningFor(m *machine) thinning {
	return s.groups.thinning(s.groupName(m))
}

// do executes the group tracker's actions, in order.
func (s *Service) do(ctx runtime.Context, acts []action) {
	for _, a := range acts {
		switch a.kind {
		case actLoadMember:
			if m := s.machine(a.machine); m.cat == nil && !m.busy && !m.held {
				s.startLoad(ctx, m)
			}
		case actLoadGroup:
			st, name := s.st, a.group
			s.start(ctx, pending{kind: opGroupLoad, group: name}, runtime.Op{Name: "azuresvc-group-load", Run: func(ctx context.Context) (any, error) {
				c, etag, rebuilt, err := loadGroupOrNew(ctx, st.store, st.prefix, name)
				return groupResult{cat: c, etag: etag, rebuilt: rebuilt}, err
			}})
		case actUpdateGroup:
			st, cat, etag, ch := s.st, a.cat, a.etag, a.change
			s.start(ctx, pending{kind: opGroupUpdate, group: a.group, change: ch}, runtime.Op{Name: "azuresvc-group-update", Run: func(ctx context.Context) (any, error) {
				return updateGroup(ctx, st, cat, etag, ch)
			}})
		case actKickMembers:
			for _, m := range s.sortedMachines() {
				if s.groupName(m) == a.group {
					s.kick(ctx, m)
				}
			}
		case actLog:
			runtime.LogAt(ctx.Log(), a.note.level, a.note.msg, a.note.args...)
		case actSend:
			s.send(ctx, a.event)
		default:
			panic(fmt.Sprintf("azuresvc: unknown group action %d", a.kind))
		}
	}
}

// hint records that the process server has uploaded m's items up to upTo
// and fetches the next one if m is idle. An announced item that turns out
// missing (NotFound when fetched) is forgotten until a listing or another
// hint names it again. A hint more than hintWindow items ahead is not
// enumerated: it lists the cache instead (after a lost cache the stream
// goes on far past a gap of items that never come).
func (s *Service) hint(ctx runtime.Context, m *machine, upTo uint64) {
	if m.cat != nil && upTo > m.cat.Applied {
		if upTo-m.cat.Applied > hintWindow {
			s.startList(ctx, false)
			return
		}
		m.announce(m.cat.Applied+1, upTo)
	} // else the catalog's load announces them (Applied unknown until then)
	m.hinted = max(m.hinted, upTo)
	s.kick(ctx, m)
}

// hintWindow is how far ahead of the applied item a hint is trusted to
// name items one by one.
const hintWindow = 64

// gapAfter says whether item seq+1 is not listed while a later one is:
// the stream cannot go on past seq until the missing item comes, if ever.
func (m *machine) gapAfter(seq uint64) bool {
	if _, ok := m.listed[seq+1]; ok {
		return false
	}
	for s := range m.listed {
		if s > seq {
			return true
		}
	}
	return false
}

// announce adds the items from..to to m's listed items, size unknown.
func (m *machine) announce(from, to uint64) {
	for seq := from; seq <= to; seq++ {
		if _, ok := m.listed[seq]; !ok {
			m.listed[seq] = 0
		}
	}
}

// timerPoll is the period of the poll: listings (backed off while quiet),
// announcements and resends.
const timerPoll = "poll"

func (s *Service) poll(ctx runtime.Context) {
	if !s.ready {
		s.startSetup(ctx)
		return
	}
	if !s.quiet() {
		s.listEvery = s.cfg.PollEvery
	}
	if s.lastPollList.IsZero() || s.now.Sub(s.lastPollList) >= s.listEvery {
		s.lastPollList = s.now
		s.startList(ctx, true)
	} else {
		// Housekeeping that time makes due (retention, verification)
		// starts from kick; a listing's end kicks every machine too.
		for _, m := range s.sortedMachines() {
			s.kick(ctx, m)
		}
	}
	announce := s.now.Sub(s.lastAnn) >= s.cfg.AnnounceEvery
	if announce {
		s.lastAnn = s.now
	}
	for _, m := range s.sortedMachines() {
		if m.cat == nil {
			continue
		}
		if announce && m.cat.Synced {
			s.send(ctx, &proto.ReplicaEvent{Machine: m.name, Event: proto.EventSyncComplete, Gen: m.cat.Gen,
				Applied: m.cat.Applied, Detail: "announce"})
		}
		if m.waitsForResync() && s.now.Sub(m.refusedSent) >= s.cfg.AnnounceEvery {
			m.refusedSent = s.now
			ctx.Log().Info("azuresvc: refused item reported again", "machine", m.name, "item", m.refused)
			s.send(ctx, m.refusedEvent())
		}
		if m.sums != nil && s.sumsValid(m) && s.now.Sub(m.sumsSent) >= s.cfg.ChecksumResend {
			ctx.Log().Info("azuresvc: checksums sent again", "machine", m.name, "gen", m.cat.Gen, "messages", len(m.sums))
			s.sendSums(ctx, m)
		}
	}
}

// quiet says whether nothing is pending that a listing at PollEvery could
// help: every machine loaded and idle or applying what it knows of, none
// held after a failure, stuck at a refused item or missing its next item
// while later ones wait, no group held, no failover request waiting.
func (s *Service) quiet() bool {
	if s.groups.anyHeld() {
		return false
	}
	for _, m := range s.machines {
		if m.cat == nil || m.held || m.refused != 0 || len(m.fo) > 0 {
			return false
		}
		if m.gapAfter(m.cat.Applied) {
			return false // the listing is the truth
		}
	}
	return true
}

// sumsValid says whether the replica still is what its SyncStart
// checksums describe: no chunk of the sync was applied yet.
func (s *Service) sumsValid(m *machine) bool {
	return m.cat.SyncItem != 0 && m.cat.Applied == m.cat.SyncItem && !m.cat.Synced
}

func (s *Service) sendSums(ctx runtime.Context, m *machine) {
	for _, c := range m.sums {
		s.send(ctx, c)
	}
	m.sumsSent = s.now
}

func (s *Service) startSetup(ctx runtime.Context) {
	if s.setup {
		return
	}
	s.setup = true
	st := s.st
	s.start(ctx, pending{kind: opSetup}, runtime.Op{Name: "azuresvc-setup", Run: func(ctx context.Context) (any, error) {
		for _, c := range []string{cacheContainer(st.prefix), replicaContainer(st.prefix), catalogContainer(st.prefix)} {
			if err := st.store.CreateContainer(ctx, c); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}})
}

// listed is one cache listing: sealed item sizes by machine and item, and
// the machines that have a catalog.
type listed struct {
	items    map[string]map[uint64]int64
	catalogs []string
	groups   []string // groups that have a group catalog
	foreign  int      // blobs whose names are not <machine>/<seq>
}

func (s *Service) startList(ctx runtime.Context, poll bool) {
	if !s.ready {
		return
	}
	if s.listing {
		s.relist = true
		s.pollList = s.pollList || poll
		return
	}
	s.listing, s.pollList = true, poll
	for _, m := range s.machines {
		m.hintedAtList = m.hinted
	}
	st := s.st
	s.start(ctx, pending{kind: opList}, runtime.Op{Name: "azuresvc-list", Run: func(ctx context.Context) (any, error) {
		out := listed{items: map[string]map[uint64]int64{}}
		items, err := st.store.List(ctx, cacheContainer(st.prefix), "")
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return nil, err
		}
		for _, it := range items {
			// A blob of another shape, or item 0 (streams count from 1),
			// is not ours: counted, never applied.
			m, seq, err := proto.ParseCacheBlobName(it.Name)
			if err != nil || seq == 0 {
				out.foreign++
				continue
			}
			if out.items[m] == nil {
				out.items[m] = map[uint64]int64{}
			}
			out.items[m][seq] = it.Size
		}
		cats, err := st.store.List(ctx, catalogContainer(st.prefix), "")
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return nil, err
		}
		for _, c := range cats {
			if g, ok := isGroupCatalog(c.Name); ok {
				out.groups = append(out.groups, g)
			} else if m, ok := strings.CutSuffix(c.Name, ".json"); ok && m != "" {
				out.catalogs = append(out.catalogs, m)
			}
		}
		return out, nil
	}})
}

// kick starts the next piece of work for m, if m is idle. Order matters:
// state first (load, orphan sweep, policy), then the checksums a sync
// waits for, then the next item, then housekeeping.
func (s *Service) kick(ctx runtime.Context, m *machine) {
	if m.busy || !s.ready {
		return
	}
	if m.cat == nil {
		s.startLoad(ctx, m)
		return
	}
	if len(m.deferred) > 0 {
		// Fetch the next item while the run may grow; apply the run when
		// it may not, or when anything else needs the machine.
		next := m.deferred[len(m.deferred)-1].Seq + 1
		size, listed := m.listed[next]
		other := len(m.fo) > 0 || m.want != nil || m.sweepDue || m.refused != 0
		if m.gapAfter(next - 1) {
			// Items after a missing one: the run cannot grow until the
			// gap fills, if ever (a lost cache): apply it, so that the
			// probing past the gap starts now.
			other = true
		}
		switch {
		case other || m.deferredBytes >= s.cfg.DeferBytes || s.now.Sub(m.deferredSince) >= s.cfg.DeferFor:
			s.startApply(ctx, m, nil, false)
		case listed && !m.held:
			s.startFetch(ctx, m, next, size, false)
		case s.verifyDue(m):
			// Waiting for the run's next item must not starve the
			// verification: with a steady stream a run is nearly always
			// waiting, and a point whose snapshot is gone would stay in
			// the catalog (the deferred items do not depend on it).
			s.startVerify(ctx, m)
		}
		return
	}
	if s.serveFailover(ctx, m) {
		return
	}
	if m.held {
		return
	}
	policyChange := m.want != nil && !m.want.in(m.cat)
	if !policyChange {
		m.want = nil
	}
	if name := s.groupName(m); name != "" {
		// Thinning a member's points needs its group's points: wait for
		// the group catalog (the tracker has it loaded; its end kicks m).
		acts, wait := s.groups.await(name)
		s.do(ctx, acts)
		if wait {
			return
		}
	}
	if m.sweepDue || policyChange {
		s.startRetain(ctx, m, m.want, m.sweepDue)
		return
	}
	if s.sumsValid(m) && (m.sums == nil || m.sumsItem != m.cat.SyncItem) {
		s.startRanges(ctx, m)
		return
	}
	next := m.cat.Applied + 1
	if m.refused != 0 && m.refused != next {
		m.refused = 0 // the resync's SyncStart was applied
	}
	if m.probed < next && m.refused == 0 {
		m.probed = 0
	}
	if m.refused == 0 {
		if size, ok := m.listed[next]; ok {
			s.startFetch(ctx, m, next, size, false)
			return
		}
	}
	// The next item is refused, or not listed yet (still uploading, or
	// lost with the process server's cache): look past it, each item
	// once, for a newer sync's SyncStart.
	if seq, size, ok := m.nextProbe(next); ok {
		s.startFetch(ctx, m, seq, size, true)
		return
	}
	if s.finishLatest(ctx, m) {
		return
	}
	var stale []uint64
	for seq := range m.listed {
		if seq <= m.cat.Applied {
			stale = append(stale, seq)
		}
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		s.startCleanup(ctx, m, stale)
		return
	}
	if s.verifyDue(m) {
		s.startVerify(ctx, m)
		return
	}
	if _, drop := prune(m.cat.Points, s.now, m.cat.Policy.Retention, m.cat.Policy.CrashInterval, s.thinningFor(m)); len(drop) > 0 {
		s.startRetain(ctx, m, nil, false)
	}
}

// nextProbe is the first listed item after next (the refused or missing
// one) and after those already probed.
func (m *machine) nextProbe(next uint64) (seq uint64, size int64, ok bool) {
	from := max(next, m.probed)
	for q, sz := range m.listed {
		if q > from && (!ok || q < seq) {
			seq, size, ok = q, sz, true
		}
	}
	return seq, size, ok
}

// startVerify checks that every point's snapshots are still in storage.
// verifyDue says whether m's catalog is due to be verified against storage.
func (s *Service) verifyDue(m *machine) bool {
	return len(m.cat.Points) > 0 && s.now.Sub(m.verified) >= s.cfg.VerifyEvery
}

func (s *Service) startVerify(ctx runtime.Context, m *machine) {
	m.busy, m.verified = true, s.now
	st, now, cat, etag, th := s.st, s.now, m.cat.Clone(), m.etag, s.thinningFor(m)
	s.start(ctx, pending{kind: opVerify, machine: m.name}, runtime.Op{Name: "azuresvc-verify", Run: func(ctx context.Context) (any, error) {
		a := &applier{ctx: ctx, st: st, now: now, cat: cat, etag: etag, th: th}
		err := a.verify()
		return a.result(), err
	}})
}

// refusable says whether err means the item's blob does not open: it
// failed AES-GCM authentication, is not a sealed item, or does not
// decode. Such an item is corrupt in storage; trying again cannot help.
func refusable(err error) bool {
	return errors.Is(err, batch.ErrTamper) || errors.Is(err, batch.ErrSealed) || errors.Is(err, batch.ErrDecoded) || errors.Is(err, batch.ErrFormat)
}

// refuse records that item seq of m does not open: it is never applied.
// The configuration server is told (EventItemRefused): it raises an alert
// and orders a resync, whose SyncStart, numbered after every item the
// agent had sent, the service then skips ahead to (see kick and apply).
// Nothing is lost: the resync's checksums are computed against the
// replica as it is, so the writes of the refused item and of the items
// skipped after it are sent again as blocks that differ.
func (s *Service) refuse(ctx runtime.Context, m *machine, seq uint64, err error) {
	text := s.scrub(err.Error())
	m.refused, m.probed, m.lastErr, m.refusedErr, m.refusedSent = seq, seq, text, text, s.now
	ctx.Log().Error("azuresvc: item refused, never applied: waiting for a resync", "machine", m.name, "item", seq, "err", text)
	s.send(ctx, m.refusedEvent())
}

// refusedEvent is the EventItemRefused of m's refused item. poll sends it
// again AnnounceEvery after it was last sent, while the item still blocks the stream: a
// configuration server that was down when it was first sent would
// otherwise never order the resync, and the machine would wait for it
// forever (swarm seed 110: cs-crash and corrupt-blob together). The
// configuration server ignores a refused item it has already seen.
func (m *machine) refusedEvent() *proto.ReplicaEvent {
	ev := &proto.ReplicaEvent{Machine: m.name, Event: proto.EventItemRefused, Seq: m.refused, Detail: m.refusedErr}
	if m.cat != nil {
		ev.Gen, ev.Applied = m.cat.Gen, m.cat.Applied
	}
	return ev
}

// waitsForResync says whether m's stream is stuck at a refused item.
func (m *machine) waitsForResync() bool {
	return m.refused != 0 && m.cat != nil && m.refused == m.cat.Applied+1
}

func (s *Service) startLoad(ctx runtime.Context, m *machine) {
	m.busy = true
	st, name := s.st, m.name
	s.start(ctx, pending{kind: opLoad, machine: name}, runtime.Op{Name: "azuresvc-load", Run: func(ctx context.Context) (any, error) {
		c, etag, err := loadOrNew(ctx, st.store, st.prefix, name)
		return applyResult{cat: c, etag: etag}, err
	}})
}

// fetched is a downloaded, opened and decoded item.
type fetched struct{ item *batch.Item }

func (s *Service) startFetch(ctx runtime.Context, m *machine, seq uint64, size int64, probe bool) {
	if m.sealer == nil {
		sl, err := batch.NewSealer(s.cfg.Key, batch.CodecS2)
		if err != nil {
			s.failed(ctx, m, seq, err)
			return
		}
		m.sealer = sl
	}
	m.busy = true
	st, sealer, name, machineName := s.st, m.sealer, proto.CacheBlobName(m.name, seq), m.name
	s.start(ctx, pending{kind: opFetch, machine: m.name, seq: seq, probe: probe}, runtime.Op{Name: "azuresvc-get", Bytes: size, Run: func(ctx context.Context) (any, error) {
		sealed, _, err := st.store.Get(ctx, cacheContainer(st.prefix), name, blob.ReadOptions{})
		if err != nil {
			return nil, err
		}
		plain, err := sealer.Open(nil, name, sealed)
		if err != nil {
			return nil, err
		}
		it, err := batch.Unmarshal(plain)
		if err != nil {
			return nil, err
		}
		if it.Machine != machineName || it.Seq != seq {
			return nil, fmt.Errorf("%w: %s holds item %d of %s", ErrApply, name, it.Seq, it.Machine)
		}
		return fetched{it}, nil
	}})
}

// deferrable says whether it may wait to be applied with the items after
// it: a log item of writes only, the next of m's stream.
func (s *Service) deferrable(m *machine, it *batch.Item) bool {
	if s.cfg.DeferFor < 0 || it.Kind != batch.KindLog || it.Seq != m.cat.Applied+1+uint64(len(m.deferred)) {
		return false
	}
	for _, r := range it.Records {
		if r.Type != batch.RecWrite {
			return false
		}
	}
	return true
}

// startApply applies m's deferred items and then it (nil: the deferred
// items alone); resync says it is the SyncStart of a newer generation found
// past a refused item, which may skip ahead. A run of log items is applied
// as one merged item (mergeLogs); an item of another kind after deferred
// ones is applied after them in the same Op.
func (s *Service) startApply(ctx runtime.Context, m *machine, it *batch.Item, resync bool) {
	items := m.deferred
	m.deferred, m.deferredBytes, m.deferredSince = nil, 0, time.Time{}
	if it != nil {
		items = append(items, it)
	}
	m.busy = true
	var size int64
	seqs := make([]uint64, len(items))
	names := make([]string, len(items))
	for i, x := range items {
		size += x.Size()
		seqs[i], names[i] = x.Seq, proto.CacheBlobName(m.name, x.Seq)
	}
	// The runs to apply in order: consecutive log items merged into one.
	var runs [][]*batch.Item
	for _, x := range items {
		if n := len(runs); n > 0 && x.Kind == batch.KindLog && runs[n-1][0].Kind == batch.KindLog {
			runs[n-1] = append(runs[n-1], x)
		} else {
			runs = append(runs, []*batch.Item{x})
		}
	}
	lastItem := items[len(items)-1]
	st, now, cat, etag, th := s.st, s.now, m.cat.Clone(), m.etag, s.thinningFor(m)
	s.start(ctx, pending{kind: opApply, machine: m.name, seq: lastItem.Seq, seqs: seqs}, runtime.Op{Name: "azuresvc-apply-" + lastItem.Kind.String(), Bytes: size, Run: func(ctx context.Context) (any, error) {
		a := &applier{ctx: ctx, st: st, now: now, cat: cat, etag: etag, th: th, resync: resync}
		err := a.run(runs, names)
		return a.result(), err
	}})
}

func (s *Service) startRetain(ctx runtime.Context, m *machine, want *setting, sweep bool) {
	m.busy = true
	var set *setting
	if want != nil {
		c := want.clone()
		set = &c
	}
	st, now, cat, etag, th := s.st, s.now, m.cat.Clone(), m.etag, s.thinningFor(m)
	s.start(ctx, pending{kind: opRetain, machine: m.name}, runtime.Op{Name: "azuresvc-retain", Run: func(ctx context.Context) (any, error) {
		a := &applier{ctx: ctx, st: st, now: now, cat: cat, etag: etag, th: th}
		err := a.retain(set, sweep)
		return a.result(), err
	}})
}

func (s *Service) startRanges(ctx runtime.Context, m *machine) {
	m.busy = true
	st, disks := s.st, slices.Clone(m.cat.Disks)
	p := pending{kind: opRanges, machine: m.name, gen: m.cat.Gen, item: m.cat.SyncItem}
	s.start(ctx, p, runtime.Op{Name: "azuresvc-page-ranges", Run: func(ctx context.Context) (any, error) {
		var out []diskRanges
		for _, d := range disks {
			rs, err := st.store.PageRanges(ctx, replicaContainer(st.prefix), d.Blob, "")
			if err != nil {
				return nil, err
			}
			out = append(out, diskRanges{Disk: d, Ranges: rs})
		}
		return out, nil
	}})
}

func (s *Service) startSums(ctx runtime.Context, m *machine, p pending, disks []diskRanges) {
	var n int64
	for _, d := range disks {
		n += d.readBytes()
	}
	st, name := s.st, m.name
	p.kind = opSums
	s.start(ctx, p, runtime.Op{Name: "azuresvc-checksums", Bytes: n, Run: func(ctx context.Context) (any, error) {
		return checksumMessages(ctx, st.store, replicaContainer(st.prefix), name, p.gen, disks)
	}})
}

func (s *Service) startCleanup(ctx runtime.Context, m *machine, stale []uint64) {
	m.busy = true
	st, name := s.st, m.name
	s.start(ctx, pending{kind: opCleanup, machine: m.name, stale: stale}, runtime.Op{Name: "azuresvc-delete-applied", Run: func(ctx context.Context) (any, error) {
		names := make([]string, len(stale))
		for i, seq := range stale {
			names[i] = proto.CacheBlobName(name, seq)
		}
		for _, err := range st.store.DeleteBatch(ctx, cacheContainer(st.prefix), names) {
			if err != nil && !errors.Is(err, blob.ErrNotFound) {
				return nil, err
			}
		}
		return nil, nil
	}})
}

func (s *Service) done(ctx runtime.Context, ev runtime.Done) {
	p, ok := s.ops.Complete(ev)
	if !ok {
		return // from before a restart
	}
	switch p.kind {
	case opSetup:
		s.setup = false
		if ev.Err != nil {
			ctx.Log().Warn("azuresvc: container set-up failed, retrying at the next poll", "err", s.scrub(ev.Err.Error()))
			return
		}
		s.ready = true
		s.startList(ctx, true)
		return
	case opList:
		s.listDone(ctx, ev)
		return
	case opGroupLoad, opGroupUpdate:
		end := groupEnd{group: p.group, update: p.kind == opGroupUpdate, change: p.change, failed: ev.Err != nil}
		end.result, _ = ev.Value.(groupResult)
		if ev.Err != nil {
			end.err = s.scrub(ev.Err.Error())
		}
		s.do(ctx, s.groups.opDone(end))
		return
	case opStop, opLatestList, opLatest, opCommit, opResume:
		s.failoverDone(ctx, p, ev)
		return
	}
	m := s.machines[p.machine]
	// Whatever the outcome, the catalog may have changed (a point made
	// before a later step failed): see what the groups make of it.
	defer func() { s.do(ctx, s.groups.memberDone(m.name)) }()
	switch p.kind {
	case opLoad:
		m.busy = false
		if ev.Err != nil {
			s.failed(ctx, m, 0, ev.Err)
			return
		}
		r := ev.Value.(applyResult)
		s.adopt(m, r.cat, r.etag)
		if m.hinted > m.cat.Applied {
			if m.hinted-m.cat.Applied <= hintWindow {
				m.announce(m.cat.Applied+1, m.hinted)
			} else {
				s.startList(ctx, false)
			}
		}
		m.sweepDue = true
		ctx.Log().Info("azuresvc: catalog loaded", "machine", m.name, "applied", m.cat.Applied,
			"applied_log_seq", m.cat.AppliedLogSeq, "gen", m.cat.Gen, "synced", m.cat.Synced, "points", len(m.cat.Points))
	case opFetch:
		if ev.Err != nil {
			m.busy = false
			if errors.Is(ev.Err, blob.ErrNotFound) {
				// Listed but gone: the listing was older than the blob's
				// deletion, or storage lags. Wait for the next listing.
				delete(m.listed, p.seq)
				break
			}
			if refusable(ev.Err) {
				if p.probe {
					// Past the stuck position: skipped with it by the resync.
					m.probed = p.seq
					ctx.Log().Warn("azuresvc: a probed item does not open either", "machine", m.name, "item", p.seq)
				} else {
					s.refuse(ctx, m, p.seq, ev.Err)
				}
				break
			}
			s.failed(ctx, m, p.seq, ev.Err)
			return
		}
		it := ev.Value.(fetched).item
		if p.probe {
			if it.Kind != batch.KindSyncStart || it.Gen <= m.cat.Gen {
				// Not a newer sync: not applied now. Past a gap it is
				// fetched again in order once the gap fills; past a
				// refused item the resync sends its writes again.
				m.busy, m.probed = false, p.seq
				break
			}
		}
		if !p.probe && s.deferrable(m, it) {
			if len(m.deferred) == 0 {
				m.deferredSince = s.now
			}
			m.deferred = append(m.deferred, it)
			m.deferredBytes += it.Size()
			m.busy = false
			break
		}
		// Still busy: the apply Op follows at once, so no other work of
		// this machine can come between.
		s.startApply(ctx, m, it, p.probe)
		return
	case opApply, opRetain, opVerify:
		m.busy = false
		r, ok := ev.Value.(applyResult)
		if ok && r.cat != nil {
			before := m.cat.Applied
			s.adopt(m, r.cat, r.etag)
			s.report(ctx, r)
			if m.cat.Applied > before {
				m.applied += m.cat.Applied - before
			}
			if p.kind == opApply && ev.Err == nil {
				// The Op deleted these items' blobs; any other listed item
				// at or below Applied is deleted by a cleanup Op.
				for _, seq := range p.seqs {
					delete(m.listed, seq)
				}
			}
		} else {
			s.adopt(m, nil, m.etag) // unknown outcome (the Op panicked): reload
		}
		if ev.Err != nil {
			m.sweepDue = true
			s.failed(ctx, m, p.seq, ev.Err)
			return
		}
		if p.kind == opRetain {
			m.sweepDue = false
		}
		if p.kind == opApply {
			ctx.Log().Info("azuresvc: item applied", "machine", m.name, "item", p.seq, "items", len(p.seqs), "applied_log_seq", m.cat.AppliedLogSeq)
		}
	case opRanges:
		if ev.Err != nil {
			m.busy = false
			s.failed(ctx, m, p.item, ev.Err)
			return
		}
		s.startSums(ctx, m, p, ev.Value.([]diskRanges))
		return
	case opSums:
		m.busy = false
		if ev.Err != nil {
			s.failed(ctx, m, p.item, ev.Err)
			return
		}
		m.sums, m.sumsItem = ev.Value.([]*proto.Checksums), p.item
		if s.sumsValid(m) && m.cat.SyncItem == p.item {
			fresh := 0
			for _, c := range m.sums {
				if c.Fresh {
					fresh++
				}
			}
			ctx.Log().Info("azuresvc: checksums sent", "machine", m.name, "gen", p.gen, "messages", len(m.sums), "fresh_disks", fresh)
			s.sendSums(ctx, m)
		}
	case opCleanup:
		m.busy = false
		if ev.Err != nil {
			s.failed(ctx, m, 0, ev.Err)
			return
		}
		for _, seq := range p.stale {
			delete(m.listed, seq)
		}
		ctx.Log().Info("azuresvc: applied items deleted from the cache", "machine", m.name, "items", len(p.stale))
	}
	s.kick(ctx, m)
}

func (s *Service) listDone(ctx runtime.Context, ev runtime.Done) {
	s.listing = false
	poll := s.pollList
	s.pollList = false
	if poll {
		s.groups.release()
	}
	found := false
	if ev.Err != nil {
		ctx.Log().Warn("azuresvc: cache listing failed", "err", s.scrub(ev.Err.Error()))
	} else {
		l := ev.Value.(listed)
		for _, name := range l.catalogs {
			s.machine(name)
		}
		s.groups.listed(l.groups)
		for name := range l.items {
			s.machine(name)
		}
		for _, m := range s.sortedMachines() {
			next := l.items[m.name]
			if next == nil {
				next = map[uint64]int64{}
			}
			for seq := range next {
				if _, known := m.listed[seq]; !known && (m.cat == nil || seq > m.cat.Applied) {
					found = true // a hint was lost, or never sent
				}
			}
			// Items hinted while the listing ran may be newer than it.
			for seq, size := range m.listed {
				if _, ok := next[seq]; !ok && seq > m.hintedAtList && seq <= m.hinted {
					next[seq] = size
				}
			}
			m.listed = next
		}
		if l.foreign > 0 {
			ctx.Log().Warn("azuresvc: cache blobs with foreign names ignored", "count", l.foreign)
		}
	}
	switch {
	case found:
		s.listEvery = s.cfg.PollEvery // hints are being lost
	case poll && ev.Err == nil && s.quiet():
		// Nothing the hints had not announced: list less often.
		s.listEvery = min(2*s.listEvery, s.cfg.PollMax)
	}
	for _, m := range s.sortedMachines() {
		if poll {
			m.held = false
		}
		s.kick(ctx, m)
	}
	s.do(ctx, s.groups.evalAll(""))
	if s.relist {
		s.relist = false
		s.startList(ctx, false)
	}
}

// report logs an Op's notes and sends its events.
func (s *Service) report(ctx runtime.Context, r applyResult) {
	for _, n := range r.notes {
		args := slices.Clone(n.args)
		for i, a := range args {
			if str, ok := a.(string); ok {
				args[i] = s.scrub(str)
			}
		}
		runtime.LogAt(ctx.Log(), n.level, n.msg, args...)
	}
	for _, e := range r.events {
		s.send(ctx, e)
	}
}

// failed reports a failed attempt: an apply-error event to the
// configuration server, a log line, and the machine held until the next
// poll (the item stays in the cache and is tried again then).
func (s *Service) failed(ctx runtime.Context, m *machine, seq uint64, err error) {
	text := s.scrub(err.Error())
	m.held, m.failures, m.lastErr = true, m.failures+1, text
	ctx.Log().Error("azuresvc: apply failed, retrying at the next poll", "machine", m.name, "item", seq, "err", text)
	ev := &proto.ReplicaEvent{Machine: m.name, Event: proto.EventApplyError, Seq: seq, Detail: text}
	if m.cat != nil {
		ev.Gen, ev.Applied = m.cat.Gen, m.cat.Applied
	}
	s.send(ctx, ev)
}

// Status is a snapshot of the Service for inspection.
type Status struct {
	// Now is the time of the last event the Service handled; RPOs are
	// computed at it.
	Now      time.Time
	Machines []MachineStatus // sorted by machine name
	Groups   []GroupStatus   // sorted by group name
}

// MachineStatus is one machine's replica state.
type MachineStatus struct {
	Machine       string
	Loaded        bool   // the catalog was read (the other fields are zero until then)
	Group         string // the replication group the catalog names, "" for none
	Gen           uint64 // sync generation
	Synced        bool   // SyncEnd of Gen applied: bookmarks become points
	Applied       uint64 // last stream item applied
	AppliedLogSeq uint64 // last change-log record applied
	Waiting       int    // items in the cache listing not applied yet
	// Gap is true when items after the next one are in the cache but the
	// next one is not: the Service waits for it.
	Gap          bool
	Points       int
	NewestPoint  time.Time     // zero without points
	RPO          time.Duration // Now − NewestPoint; 0 without points
	ItemsApplied uint64        // items this incarnation applied
	Failures     int           // failed attempts (apply-error events) of this incarnation
	LastError    string        // the last failure, "" if none
}

// Status returns a deep copy of the Service's state.
func (s *Service) Status() Status {
	st := Status{Now: s.now}
	for _, m := range s.sortedMachines() {
		ms := MachineStatus{Machine: m.name, Loaded: m.cat != nil, ItemsApplied: m.applied,
			Failures: m.failures, LastError: m.lastErr}
		if m.cat != nil {
			ms.Gen, ms.Synced, ms.Applied, ms.AppliedLogSeq = m.cat.Gen, m.cat.Synced, m.cat.Applied, m.cat.AppliedLogSeq
			ms.Group = m.cat.Group
			ms.Points, ms.NewestPoint = len(m.cat.Points), m.cat.Newest()
			if !ms.NewestPoint.IsZero() {
				ms.RPO = s.now.Sub(ms.NewestPoint)
			}
			for seq := range m.listed {
				if seq > m.cat.Applied {
					ms.Waiting++
				}
			}
			ms.Gap = m.gapAfter(m.cat.Applied)
		}
		st.Machines = append(st.Machines, ms)
	}
	slices.SortFunc(st.Machines, func(a, b MachineStatus) int { return cmp.Compare(a.Machine, b.Machine) })
	st.Groups = s.groups.status(s.now)
	return st
}
