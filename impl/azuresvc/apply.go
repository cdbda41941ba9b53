package azuresvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// ErrApply is an item that cannot be applied as it is (it does not fit the
// replica or the stream). It is reported and retried, never skipped.
var ErrApply = errors.New("azuresvc: item cannot be applied")

// maxConflicts bounds the reload-and-retry rounds of one item after catalog
// ETag conflicts.
const maxConflicts = 5

// Snapshot metadata keys (lower case: Azure's keys are case-insensitive).
const (
	mdPoint = "pointid"
	mdKind  = "kind"
	mdTime  = "unixnano"
	mdGen   = "gen"
)

// note is a log line an Op wants written; Ops cannot log themselves, the
// actor writes them when the Op is done.
type note struct {
	level slog.Level
	msg   string
	args  []any
}

// storage is what an Op needs to reach blob storage. It holds only
// immutable values and the concurrency-safe Store.
type storage struct {
	store  blob.Store
	prefix string
}

// applier applies one stream item to a machine's replica inside an Op. cat
// is always what the store holds under etag: every change is made on a
// clone and adopted only once its put succeeded, so a failure leaves cat and
// etag describing the stored state exactly.
type applier struct {
	ctx    context.Context
	st     storage
	now    time.Time
	cat    *Catalog
	etag   string
	events []*proto.ReplicaEvent
	notes  []note
	// reloaded: the catalog was reloaded after a conflict, so this attempt
	// may meet snapshots an earlier round took for points it did not record.
	reloaded bool
	// pending holds log writes not yet sent to the replica; see flush.
	pending []pendingWrite
	// th is how hourly thinning chooses (group tags first for a member of
	// a replication group).
	th thinning
	// resync allows a SyncStart of a newer generation to skip the items
	// between Applied and it: the service found it past a refused item.
	resync bool
	// first is the first item a merged log item holds (see mergeLogs); 0
	// for an item applied alone.
	first uint64
}

type pendingWrite struct {
	disk uint16
	off  int64
	data []byte
}

// applyResult is what an apply Op returns (as its Value, also on error).
type applyResult struct {
	cat    *Catalog
	etag   string
	events []*proto.ReplicaEvent
	notes  []note
}

func (a *applier) note(level slog.Level, msg string, args ...any) {
	a.notes = append(a.notes, note{level, msg, append([]any{"machine", a.cat.Machine}, args...)})
}

func (a *applier) event(ev *proto.ReplicaEvent) {
	ev.Machine, ev.Applied = a.cat.Machine, a.cat.Applied
	if ev.Gen == 0 {
		ev.Gen = a.cat.Gen
	}
	a.events = append(a.events, ev)
}

// persist stores next as the catalog and adopts it.
func (a *applier) persist(next *Catalog) error {
	etag, err := putCatalog(a.ctx, a.st.store, a.st.prefix, next, a.etag)
	if err != nil {
		return err
	}
	a.cat, a.etag = next, etag
	return nil
}

// reload adopts the stored catalog and its ETag (after an ETag conflict).
// On error a.cat and a.etag are left as they were.
func (a *applier) reload() error {
	c, etag, err := loadOrNew(a.ctx, a.st.store, a.st.prefix, a.cat.Machine)
	if err != nil {
		return err
	}
	a.cat, a.etag = c, etag
	return nil
}

// update is the optimistic-concurrency loop of a change to the catalog
// alone. It calls change on a clone of a.cat; when change reports the clone
// changed, update persists it under a.etag and adopts it. When that put
// loses an ETag race, update reloads the catalog and calls change again on
// a clone of the reloaded one, for at most maxConflicts reloads; after the
// last, the conflict is returned.
//
// change may therefore run more than once, each time on a fresh clone: it
// must compute everything from next, and whatever it records for the
// caller must be reset by each call, so that what the caller reads after
// update returns nil is what the last call saw — the change now stored. An
// error from change is returned at once, with nothing persisted; unchanged
// (false) ends update with nil and nothing persisted. On any error a.cat
// and a.etag still describe the stored state (or the state before a failed
// reload).
func (a *applier) update(change func(next *Catalog) (changed bool, err error)) error {
	for round := 0; ; round++ {
		next := a.cat.Clone()
		changed, err := change(next)
		if err != nil || !changed {
			return err
		}
		err = a.persist(next)
		if errors.Is(err, errConflict) && round < maxConflicts {
			if err := a.reload(); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

func (a *applier) result() applyResult {
	return applyResult{cat: a.cat, etag: a.etag, events: a.events, notes: a.notes}
}

// run applies runs in order, each a single item or consecutive log items
// applied as one (mergeLogs), reloading the catalog and starting a run over
// when a put loses an ETag race. Starting over is safe for the same reasons
// a restart is (see bookmark). The cache blobs (cacheNames) are deleted once
// the catalog records every item.
func (a *applier) run(runs [][]*batch.Item, cacheNames []string) error {
	for _, items := range runs {
		it := mergeLogs(items)
		a.first = 0
		if len(items) > 1 {
			a.first = items[0].Seq
		}
		for round := 0; ; round++ {
			err := a.apply(it)
			if errors.Is(err, errConflict) && round < maxConflicts {
				a.note(slog.LevelWarn, "azuresvc: catalog changed underneath, reloading", "item", it.Seq)
				if err := a.reload(); err != nil {
					return err
				}
				a.reloaded = true
				continue
			}
			if err != nil {
				return err
			}
			break
		}
	}
	// One request for the run's items (a blob batch), not one each.
	for i, err := range a.st.store.DeleteBatch(a.ctx, cacheContainer(a.st.prefix), cacheNames) {
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			// Applied and recorded: a later listing finds the blob again
			// and deletes it then.
			a.note(slog.LevelWarn, "azuresvc: delete applied item failed", "blob", cacheNames[i], "err", err.Error())
		}
	}
	return nil
}

// mergeLogs makes one log item of consecutive log items: the last's number
// and header, the records of all in order. Applying it is applying them one
// by one, except that the catalog is stored once, at the end, and writes
// are coalesced across the items' boundaries — neither seen from a point:
// the records between two bookmarks are applied in order and flushed before
// the second's snapshot either way, and a crash before the end leaves every
// item in the cache to be applied again from the catalog's position.
func mergeLogs(items []*batch.Item) *batch.Item {
	if len(items) == 1 {
		return items[0]
	}
	m := *items[len(items)-1]
	m.First = items[0].First
	m.Records = nil
	for _, it := range items {
		m.Records = append(m.Records, it.Records...)
	}
	return &m
}

func (a *applier) apply(it *batch.Item) error {
	if it.Seq <= a.cat.Applied {
		return nil // a duplicate: already applied and recorded
	}
	skip := a.resync && it.Kind == batch.KindSyncStart && it.Gen > a.cat.Gen
	first := it.Seq
	if a.first != 0 {
		first = a.first // a merged item: the catalog may be anywhere in it (a reload)
	}
	if next := a.cat.Applied + 1; next < first || next > it.Seq {
		if !skip {
			return fmt.Errorf("%w: item %d of %s, expected %d", ErrApply, it.Seq, it.Machine, a.cat.Applied+1)
		}
		// Items before it were refused or lost (the process server's
		// cache): the new sync covers whatever they held.
		a.note(slog.LevelWarn, "azuresvc: a resync starts past items never applied", "from", a.cat.Applied+1,
			"to", it.Seq-1, "gen", it.Gen)
	}
	switch it.Kind {
	case batch.KindSyncStart:
		return a.syncStart(it)
	case batch.KindChunk:
		return a.chunk(it)
	case batch.KindSyncEnd:
		return a.syncEnd(it)
	case batch.KindLog:
		return a.log(it)
	}
	return fmt.Errorf("%w: item %d of %s has kind %s", ErrApply, it.Seq, it.Machine, it.Kind)
}

// done records the item applied.
func (a *applier) done(it *batch.Item, mutate func(*Catalog)) error {
	if err := a.flush(); err != nil {
		return err
	}
	next := a.cat.Clone()
	next.Applied = it.Seq
	if mutate != nil {
		mutate(next)
	}
	return a.persist(next)
}

func diskBlob(machine string, i int) string { return fmt.Sprintf("%s/disk%d", machine, i) }

func (a *applier) syncStart(it *batch.Item) error {
	rc := replicaContainer(a.st.prefix)
	var disks []Disk
	for i, size := range it.DiskSizes {
		d := Disk{Index: i, Size: size, Blob: diskBlob(it.Machine, i)}
		props, err := a.st.store.Properties(a.ctx, rc, d.Blob)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			if _, err := a.st.store.CreatePageBlob(a.ctx, rc, d.Blob, size, blob.WriteOptions{}); err != nil {
				return fmt.Errorf("azuresvc: create replica disk %d of %s (%d bytes): %w", i, it.Machine, size, err)
			}
			a.note(slog.LevelInfo, "azuresvc: replica disk created", "disk", i, "bytes", size)
		case err != nil:
			return fmt.Errorf("azuresvc: replica disk %d of %s: %w", i, it.Machine, err)
		case props.Size != size:
			if _, err := a.st.store.Resize(a.ctx, rc, d.Blob, size, blob.WriteOptions{}); err != nil {
				return fmt.Errorf("azuresvc: resize replica disk %d of %s to %d: %w", i, it.Machine, size, err)
			}
			a.note(slog.LevelInfo, "azuresvc: replica disk resized", "disk", i, "from", props.Size, "bytes", size)
		}
		disks = append(disks, d)
	}
	if err := a.done(it, func(c *Catalog) {
		c.Gen, c.Synced, c.SyncItem, c.Disks = it.Gen, false, it.Seq, disks
	}); err != nil {
		return err
	}
	a.note(slog.LevelInfo, "azuresvc: sync started", "gen", it.Gen, "item", it.Seq, "disks", len(disks))
	a.event(&proto.ReplicaEvent{Event: proto.EventSyncStarted, Gen: it.Gen})
	return nil
}

// staleGen says whether a sync item belongs to a generation a later
// SyncStart superseded (it is then recorded applied without effect). An
// item of a generation whose SyncStart was never applied cannot come in a
// well-ordered stream: it is an error, never skipped.
func (a *applier) staleGen(it *batch.Item) (bool, error) {
	switch {
	case it.Gen < a.cat.Gen:
		a.note(slog.LevelWarn, "azuresvc: item of a superseded sync generation ignored", "item", it.Seq, "gen", it.Gen, "current", a.cat.Gen)
		return true, nil
	case it.Gen > a.cat.Gen || a.cat.SyncItem == 0:
		return false, fmt.Errorf("%w: %s item %d of %s is of gen %d, but the replica is at gen %d", ErrApply, it.Kind, it.Seq, it.Machine, it.Gen, a.cat.Gen)
	}
	return false, nil
}

func (a *applier) write(disk uint16, off int64, data []byte) error {
	if int(disk) >= len(a.cat.Disks) {
		return fmt.Errorf("%w: %s has no disk %d", ErrApply, a.cat.Machine, disk)
	}
	d := a.cat.Disks[disk]
	if off < 0 || off+int64(len(data)) > d.Size {
		return fmt.Errorf("%w: write of %d bytes at %d is outside disk %d of %s (%d bytes)", ErrApply, len(data), off, disk, a.cat.Machine, d.Size)
	}
	if len(data) == 0 {
		return nil
	}
	for len(data) > 0 {
		n := min(len(data), blob.MaxPageWrite)
		var err error
		for try := 1; try <= pageWriteTries; try++ {
			if _, err = blob.WritePagesSplit(a.ctx, a.st.store, replicaContainer(a.st.prefix), d.Blob, off, data[:n], blob.WriteOptions{}); err == nil {
				break
			}
			if errors.Is(err, blob.ErrInvalidRange) || errors.Is(err, blob.ErrInvalid) || errors.Is(err, blob.ErrNotFound) {
				break // not transient: another try would fail the same way
			}
		}
		if err != nil {
			return fmt.Errorf("azuresvc: write disk %d of %s: %w", disk, a.cat.Machine, err)
		}
		off += int64(n)
		data = data[n:]
	}
	return nil
}

// pageWriteTries bounds the attempts of one page write. An item makes a
// page write per run of changed sectors — hundreds when the guest writes
// all over its disk, as databases and file systems do — and a failed item
// is retried whole at the next poll: if any one of its writes meeting a
// transient error (a 503) failed the item, an item with many runs would
// almost never apply. Page writes are idempotent, so a failed one (of at
// most blob.MaxPageWrite bytes) is retried at once first.
const pageWriteTries = 3

// queue buffers a log write. The replica must equal the source at every
// bookmark, not between them, so the writes between two bookmarks can be
// coalesced: flush sends, for every sector, only the last data written to
// it, in few large page writes instead of one per guest write. Everything
// that depends on the replica's content (a snapshot, persisting the
// catalog's applied position) flushes first, so what the crash reasoning
// in bookmark says of writes holds of flushed writes.
func (a *applier) queue(disk uint16, off int64, data []byte) error {
	if int(disk) >= len(a.cat.Disks) {
		return fmt.Errorf("%w: %s has no disk %d", ErrApply, a.cat.Machine, disk)
	}
	d := a.cat.Disks[disk]
	if off < 0 || off+int64(len(data)) > d.Size || off%blob.PageSize != 0 || len(data)%blob.PageSize != 0 {
		return fmt.Errorf("%w: write of %d bytes at %d is outside disk %d of %s (%d bytes) or not sector-aligned", ErrApply, len(data), off, disk, a.cat.Machine, d.Size)
	}
	if len(data) > 0 {
		a.pending = append(a.pending, pendingWrite{disk, off, data})
	}
	return nil
}

// flush writes the queued log writes to the replica, coalesced.
func (a *applier) flush() error {
	if len(a.pending) == 0 {
		return nil
	}
	const sector = blob.PageSize
	latest := map[uint16]map[int64][]byte{} // disk -> sector -> its last data
	for _, w := range a.pending {
		m := latest[w.disk]
		if m == nil {
			m = map[int64][]byte{}
			latest[w.disk] = m
		}
		for i := 0; i < len(w.data); i += sector {
			m[(w.off+int64(i))/sector] = w.data[i : i+sector]
		}
	}
	a.pending = a.pending[:0]
	disks := make([]uint16, 0, len(latest))
	for d := range latest {
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i] < disks[j] })
	for _, d := range disks {
		m := latest[d]
		secs := make([]int64, 0, len(m))
		for s := range m {
			secs = append(secs, s)
		}
		sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
		for i := 0; i < len(secs); {
			j := i + 1
			for j < len(secs) && secs[j] == secs[j-1]+1 && (j-i)*sector < blob.MaxPageWrite {
				j++
			}
			run := make([]byte, 0, (j-i)*sector)
			for _, s := range secs[i:j] {
				run = append(run, m[s]...)
			}
			if err := a.write(d, secs[i]*sector, run); err != nil {
				return err
			}
			i = j
		}
	}
	return nil
}

func (a *applier) chunk(it *batch.Item) error {
	stale, err := a.staleGen(it)
	if err != nil {
		return err
	}
	if !stale {
		for _, r := range it.Runs {
			if err := a.write(it.Disk, r.Off, r.Data); err != nil {
				return err
			}
		}
	}
	return a.done(it, nil)
}

func (a *applier) syncEnd(it *batch.Item) error {
	stale, err := a.staleGen(it)
	if err != nil {
		return err
	}
	if stale {
		return a.done(it, nil)
	}
	if err := a.done(it, func(c *Catalog) {
		c.Synced = true
		if it.LogFrom > 0 {
			// Set, not raised: after a resync the agent's log may number
			// from anywhere, and records from LogFrom on come next.
			c.AppliedLogSeq = it.LogFrom - 1
		}
	}); err != nil {
		return err
	}
	a.note(slog.LevelInfo, "azuresvc: sync complete", "gen", it.Gen, "item", it.Seq, "log_from", it.LogFrom, "chunks", it.Chunks)
	a.event(&proto.ReplicaEvent{Event: proto.EventSyncComplete, Gen: it.Gen})
	return nil
}

func (a *applier) log(it *batch.Item) error {
	for _, r := range it.Records {
		if r.Seq <= a.cat.AppliedLogSeq {
			continue // applied before (a duplicate or a restart)
		}
		var err error
		switch r.Type {
		case batch.RecWrite:
			err = a.queue(r.Disk, r.Off, r.Data)
		case batch.RecBookmark:
			if err = a.flush(); err == nil {
				err = a.bookmark(r)
			}
		case batch.RecRevoke:
			err = a.revoke(r)
		default:
			err = fmt.Errorf("%w: record %d of item %d of %s has unknown type %d", ErrApply, r.Seq, it.Seq, it.Machine, r.Type)
		}
		if err != nil {
			return err
		}
	}
	return a.done(it, func(c *Catalog) { c.AppliedLogSeq = max(c.AppliedLogSeq, it.Last) })
}

// bookmark makes the recovery point of bookmark record r.
//
// Why a point made here is right even after a crash or an ETag retry: the
// catalog is persisted, with AppliedLogSeq = r.Seq, right after the
// snapshots and BEFORE any later record is written to the replica. So when
// an item is applied again from a persisted AppliedLogSeq p (restart,
// reload), the replica holds state(p) plus possibly some writes p+1..q that
// the interrupted attempt made, and q < r.Seq for the first bookmark r
// after p that the attempt snapshotted or would snapshot: an attempt only
// writes past a bookmark after persisting it, or when it made no point for
// it — and the decision (synced, revoked, already a point) depends only on
// the catalog at p and the records p+1..r, so the new attempt decides the
// same and does not snapshot either. Re-applying writes p+1..r on top of a
// prefix of themselves gives exactly state(r): the replica is right at the
// moment of the snapshot. A snapshot left by an interrupted attempt (taken,
// catalog not updated) is not a point: after a reload it is found by its
// metadata and deleted before the new one is taken; after a restart or a
// failed attempt the service sweeps such orphans before applying anything.
func (a *applier) bookmark(r batch.Record) error {
	id := r.BookmarkID
	skip := ""
	switch {
	case a.cat.IsRevoked(id):
		skip = "revoked"
	case !a.cat.Synced:
		skip = "replica not synced"
	default:
		if _, ok := a.cat.FindPoint(id); ok {
			skip = "already a point"
		}
	}
	if skip != "" {
		// Persisted with the item; nothing to snapshot.
		a.note(slog.LevelInfo, "azuresvc: bookmark makes no point", "point", id, "seq", r.Seq, "reason", skip)
		return nil
	}
	rc := replicaContainer(a.st.prefix)
	if a.reloaded {
		if err := a.deleteOrphans(id); err != nil {
			return err
		}
	}
	pt := Point{ID: id, Kind: r.BookmarkKind, Time: time.Unix(0, r.UnixNano).UTC(), Seq: r.Seq, Gen: a.cat.Gen}
	md := map[string]string{mdPoint: id, mdKind: pt.Kind.String(), mdTime: strconv.FormatInt(r.UnixNano, 10), mdGen: strconv.FormatUint(a.cat.Gen, 10)}
	for _, d := range a.cat.Disks {
		snap, err := a.st.store.Snapshot(a.ctx, rc, d.Blob, md)
		if err != nil {
			return fmt.Errorf("azuresvc: snapshot disk %d of %s for %s: %w", d.Index, a.cat.Machine, id, err)
		}
		pt.Snapshots = append(pt.Snapshots, snap)
	}
	next := a.cat.Clone()
	next.Points = append(next.Points, pt)
	next.AppliedLogSeq = r.Seq
	keep, drop := prune(next.Points, a.now, next.Policy.Retention, next.Policy.CrashInterval, a.th)
	next.Points = keep
	if err := a.persist(next); err != nil {
		return err
	}
	a.note(slog.LevelInfo, "azuresvc: recovery point", "point", id, "kind", pt.Kind, "seq", r.Seq, "gen", pt.Gen)
	a.event(&proto.ReplicaEvent{Event: proto.EventPoint, PointID: id, Kind: pt.Kind, PointTime: pt.Time, Seq: r.Seq})
	a.dropped(drop, "retention")
	return nil
}

// deleteOrphans deletes snapshots of the machine's disks made for point id
// that the catalog does not hold (left by an interrupted attempt).
func (a *applier) deleteOrphans(id string) error {
	return a.sweep(func(md map[string]string) bool { return md[mdPoint] == id })
}

// sweep deletes the snapshots of the machine's replica disks that carry a
// point id matching match and that no point of the catalog references.
func (a *applier) sweep(match func(md map[string]string) bool) error {
	rc := replicaContainer(a.st.prefix)
	used := map[string]bool{}
	for _, p := range a.cat.Points {
		for _, s := range p.Snapshots {
			used[s] = true
		}
	}
	for _, d := range a.cat.Disks {
		snaps, err := a.st.store.Snapshots(a.ctx, rc, d.Blob)
		if errors.Is(err, blob.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("azuresvc: list snapshots of disk %d of %s: %w", d.Index, a.cat.Machine, err)
		}
		for _, s := range snaps {
			if used[s.ID] || s.Metadata[mdPoint] == "" || !match(s.Metadata) {
				continue
			}
			if err := a.st.store.DeleteSnapshot(a.ctx, rc, d.Blob, s.ID); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return fmt.Errorf("azuresvc: delete orphan snapshot of disk %d of %s: %w", d.Index, a.cat.Machine, err)
			}
			a.note(slog.LevelInfo, "azuresvc: orphan snapshot deleted", "point", s.Metadata[mdPoint], "disk", d.Index)
		}
	}
	return nil
}

// dropped deletes the snapshots of points the (already persisted) catalog
// no longer holds and reports them. A failed delete leaves an orphan the
// next sweep removes; the point is gone either way.
func (a *applier) dropped(points []Point, reason string) {
	rc := replicaContainer(a.st.prefix)
	for _, p := range points {
		for i, s := range p.Snapshots {
			if i >= len(a.cat.Disks) {
				break
			}
			err := a.st.store.DeleteSnapshot(a.ctx, rc, a.cat.Disks[i].Blob, s)
			if err != nil && !errors.Is(err, blob.ErrNotFound) {
				a.note(slog.LevelWarn, "azuresvc: delete snapshot failed", "point", p.ID, "disk", i, "err", err.Error())
			}
		}
		a.note(slog.LevelInfo, "azuresvc: recovery point pruned", "point", p.ID, "reason", reason)
		a.event(&proto.ReplicaEvent{Event: proto.EventPruned, PointID: p.ID, Kind: p.Kind, PointTime: p.Time, Seq: p.Seq, Gen: p.Gen, Detail: reason})
	}
}

func (a *applier) revoke(r batch.Record) error {
	id := r.BookmarkID
	next := a.cat.Clone()
	next.AppliedLogSeq = r.Seq
	if !next.IsRevoked(id) {
		next.Revoked = append(next.Revoked, id)
	}
	var drop []Point
	next.Points = slices.DeleteFunc(next.Points, func(p Point) bool {
		if p.ID == id {
			drop = append(drop, p)
			return true
		}
		return false
	})
	if err := a.persist(next); err != nil {
		return err
	}
	a.note(slog.LevelInfo, "azuresvc: bookmark revoked", "point", id, "seq", r.Seq, "had_point", len(drop) > 0)
	a.dropped(drop, "revoked")
	return nil
}

// retain prunes the catalog's points at a.now (a policy change or time
// passing), records a PolicyFor's setting (policy, group, members) when
// set is not nil, and sweeps orphans when asked.
func (a *applier) retain(set *setting, sweep bool) error {
	var drop []Point
	err := a.update(func(next *Catalog) (bool, error) {
		if set != nil {
			next.Policy, next.Group, next.Members = set.Policy, set.Group, slices.Clone(set.Members)
		}
		next.Points, drop = prune(next.Points, a.now, next.Policy.Retention, next.Policy.CrashInterval, a.th)
		return set != nil || len(drop) > 0, nil
	})
	if err != nil {
		return err
	}
	if set != nil {
		a.note(slog.LevelInfo, "azuresvc: policy set", "policy", set.Policy.Name, "retention", set.Policy.Retention.String(),
			"group", set.Group, "members", len(set.Members))
	}
	a.dropped(drop, "retention")
	if sweep {
		return a.sweep(func(map[string]string) bool { return true })
	}
	return nil
}

// verify checks that every point's snapshots are still in storage. A
// point whose snapshot of some disk is gone (deleted outside the service)
// can no longer be recovered: it is dropped from the catalog, its other
// snapshots deleted, and it is reported as EventPointLost.
func (a *applier) verify() error {
	rc := replicaContainer(a.st.prefix)
	have := make([]map[string]bool, len(a.cat.Disks))
	for i, d := range a.cat.Disks {
		snaps, err := a.st.store.Snapshots(a.ctx, rc, d.Blob)
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("azuresvc: list snapshots of disk %d of %s: %w", d.Index, a.cat.Machine, err)
		}
		have[i] = map[string]bool{}
		for _, s := range snaps {
			have[i][s.ID] = true
		}
	}
	missing := func(p Point) int {
		for i, s := range p.Snapshots {
			if i < len(have) && !have[i][s] {
				return i
			}
		}
		return -1
	}
	var lost []Point
	err := a.update(func(next *Catalog) (bool, error) {
		lost = nil
		next.Points = slices.DeleteFunc(next.Points, func(p Point) bool {
			if missing(p) >= 0 {
				lost = append(lost, p)
				return true
			}
			return false
		})
		return len(lost) > 0, nil
	})
	if err != nil {
		return err
	}
	for _, p := range lost {
		disk := missing(p)
		for i, s := range p.Snapshots {
			if i < len(a.cat.Disks) && have[i][s] {
				if err := a.st.store.DeleteSnapshot(a.ctx, rc, a.cat.Disks[i].Blob, s); err != nil && !errors.Is(err, blob.ErrNotFound) {
					a.note(slog.LevelWarn, "azuresvc: delete snapshot failed", "point", p.ID, "disk", i, "err", err.Error())
				}
			}
		}
		detail := fmt.Sprintf("snapshot of disk %d gone from storage", disk)
		a.note(slog.LevelError, "azuresvc: recovery point lost", "point", p.ID, "reason", detail)
		a.event(&proto.ReplicaEvent{Event: proto.EventPointLost, PointID: p.ID, Kind: p.Kind, PointTime: p.Time, Seq: p.Seq, Gen: p.Gen, Detail: detail})
	}
	return nil
}
