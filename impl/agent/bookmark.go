package agent

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// BookmarkCount counts bookmarks of one kind ("crash" or "app").
type BookmarkCount struct {
	Kind  string
	Count int64
}

// SkipCount counts bookmarks of one kind not inserted (or dropped) for one
// reason: "syncing", "resync-required", "idle", "metadata-mode", "group-round"
// (the writes were held for a multi-VM tag round),
// "bitmap-mode", "undrained-metadata", "freeze-failed", "log-error", or
// "metadata-reread" (inserted before a restart, dropped from the stream
// because metadata records before it were read again after it).
type SkipCount struct {
	Kind   string
	Reason string
	Count  int64
}

type bookmarkStats struct {
	inserted map[string]int64
	skipped  map[[2]string]int64
	retried  map[string]int64 // inserted late, by retryBookmarks (counted in inserted too)
	last     string           // id of the last bookmark inserted
}

func newBookmarkStats() bookmarkStats {
	return bookmarkStats{inserted: map[string]int64{}, skipped: map[[2]string]int64{}, retried: map[string]int64{}}
}

func (b *bookmarkStats) skip(kind, reason string) { b.skipped[[2]string{kind, reason}]++ }

// sortedCounts lists the counts of m sorted by key, each made by mk.
func sortedCounts[T any](m map[string]int64, mk func(key string, n int64) T) []T {
	var out []T
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, mk(k, m[k]))
	}
	return out
}

// counts lists the counts of m sorted by kind.
func counts(m map[string]int64) []BookmarkCount {
	return sortedCounts(m, func(k string, n int64) BookmarkCount { return BookmarkCount{Kind: k, Count: n} })
}

// lists returns the inserted, skipped and retried counts, sorted.
func (b *bookmarkStats) lists() ([]BookmarkCount, []SkipCount, []BookmarkCount) {
	ins := counts(b.inserted)
	var sk []SkipCount
	for k, n := range b.skipped {
		sk = append(sk, SkipCount{Kind: k[0], Reason: k[1], Count: n})
	}
	sort.Slice(sk, func(i, j int) bool {
		if sk[i].Kind != sk[j].Kind {
			return sk[i].Kind < sk[j].Kind
		}
		return sk[i].Reason < sk[j].Reason
	})
	return ins, sk, counts(b.retried)
}

// armBookmarkTimers (re)starts the policy's bookmark schedule. The next
// bookmark of each kind is due an interval after the last one (persisted,
// so a restarted agent or a rebooted machine keeps the cadence the policy
// promises: a restart 3 minutes after a crash bookmark makes the next one 2
// minutes later, not 5), at once if that is past, and an interval from now
// under a new protection.
func (a *Agent) armBookmarkTimers(ctx runtime.Context) {
	a.cancel(ctx, tCrash)
	a.cancel(ctx, tApp)
	if every := a.st.Policy.CrashInterval; every > 0 {
		a.set(ctx, tCrash, bookmarkDue(ctx.Now(), a.st.LastCrashBookmark, every))
	}
	if every := a.st.Policy.AppInterval; every > 0 {
		a.set(ctx, tApp, bookmarkDue(ctx.Now(), a.st.LastAppBookmark, every))
	}
}

// bookmarkDue is how long from now the next bookmark is due when the last
// was at lastNano (0: none yet): never more than every (a clock stepped
// back does not stretch the schedule), never less than zero (overdue: now).
func bookmarkDue(now time.Time, lastNano int64, every time.Duration) time.Duration {
	if lastNano == 0 {
		return every
	}
	return min(max(time.Unix(0, lastNano).Add(every).Sub(now), 0), every)
}

// bookmarkTick runs a bookmark timer: the next is set an interval on, the
// time of this one persisted (for armBookmarkTimers after a restart), then
// the bookmark inserted or its skip counted. A retry still waiting from the
// previous tick is dropped: this bookmark takes its place.
func (a *Agent) bookmarkTick(ctx runtime.Context, kind proto.Consistency) {
	a.retry[kind] = false
	if kind == proto.App {
		a.set(ctx, tApp, a.st.Policy.AppInterval)
		a.st.LastAppBookmark = ctx.Now().UnixNano()
	} else {
		a.set(ctx, tCrash, a.st.Policy.CrashInterval)
		a.st.LastCrashBookmark = ctx.Now().UnixNano()
	}
	a.save(ctx)
	a.bookmark(ctx, kind, false)
}

// retryable says whether a bookmark skipped (or dropped) for reason is
// retried before the next regular one: the log could not honour it only
// because metadata records waited to be re-read from the disks (after an
// agent restart every untrimmed record is read again as one), which the
// drain does on its own, soon. Otherwise the next point would come a whole
// interval later: two intervals without a point (swarm seeds 23 and 59).
func retryable(reason string) bool {
	return reason == "undrained-metadata" || reason == "metadata-reread"
}

// retryBookmarks inserts the bookmarks waiting for a retry (skipped for a
// retryable reason since their kind's last tick) once the log can honour
// one: every metadata record re-read from the disks, so the bookmark's cut
// comes after those re-reads and the point is the disks' image at its
// insertion, as a regular bookmark's. The schedule is not moved: the next
// regular bookmark is due when it was (its timer is untouched). A retry is
// dropped when the agent leaves replication (a sync makes its own point).
func (a *Agent) retryBookmarks(ctx runtime.Context) {
	for _, kind := range []proto.Consistency{proto.Crash, proto.App} {
		if !a.retry[kind] {
			continue
		}
		if a.phase != PhaseReplicating {
			a.retry[kind] = false
			continue
		}
		if a.bookmarkReason(kind) != "" {
			continue // not yet
		}
		a.retry[kind] = false
		a.bookmark(ctx, kind, true)
	}
}

// bookmark inserts a bookmark of kind if the log can honour one now, and
// otherwise counts and logs the skip. An app-consistent bookmark quiesces
// the guest first: Freeze runs in an op ("freeze", durable, so that a
// successful freeze is always thawed whatever happened meanwhile), and the
// bookmark is inserted when it completes — if the log can still honour
// one — then the guest thawed. retry says it is a retry (retryBookmarks):
// its skip was counted already, and a new skip is not.
func (a *Agent) bookmark(ctx runtime.Context, kind proto.Consistency, retry bool) {
	if reason := a.bookmarkReason(kind); reason != "" {
		a.skipBookmark(ctx, kind, reason, retry)
		return
	}
	if kind != proto.App {
		a.insertBookmark(ctx, kind, retry)
		return
	}
	g := a.cfg.Guest
	a.freezing = true
	a.ops.GoDurable(ctx, runtime.Op{Name: "freeze", Disk: &runtime.DiskIO{Device: runtime.DeviceOS, Syncs: 1},
		Run: func(context.Context) (any, error) { return nil, g.Freeze() }}, func(ctx runtime.Context, d runtime.Done) {
		a.freezing = false
		if d.Err != nil {
			a.lastErr = "freeze: " + d.Err.Error()
			a.skipBookmark(ctx, kind, "freeze-failed", retry)
			return
		}
		defer g.Thaw()
		if reason := a.bookmarkReason(kind); reason != "" {
			a.skipBookmark(ctx, kind, reason, retry)
			return
		}
		a.insertBookmark(ctx, kind, retry)
	})
}

// insertBookmark appends a bookmark of kind to the change log (a record
// kept in the filter's memory like a guest write's: the drain moves it to
// the log and fsyncs it before it is read).
func (a *Agent) insertBookmark(ctx runtime.Context, kind proto.Consistency, retry bool) {
	name := kind.String()
	id := proto.BookmarkID(a.cfg.Machine, kind, a.filter.NextSeq())
	seq, err := a.filter.InsertBookmark(kind, id, ctx.Now().UnixNano())
	reason := ""
	switch {
	case errors.Is(err, ErrNotConsistent):
		reason = "undrained-metadata"
	case err != nil:
		reason = "log-error"
		a.lastErr = err.Error()
	default:
		a.bookmarks.inserted[name]++
		a.bookmarks.last = id
		a.drainBookmark()
		if retry {
			a.bookmarks.retried[name]++
			ctx.Log().Info("agent: bookmark", "machine", a.cfg.Machine, "kind", name, "id", id, "seq", seq, "retry", true)
			return
		}
		ctx.Log().Info("agent: bookmark", "machine", a.cfg.Machine, "kind", name, "id", id, "seq", seq)
		return
	}
	a.skipBookmark(ctx, kind, reason, retry)
}

// drainBookmark makes the drain after a bookmark come at once when the
// policy asks for crash points more often than the log is drained
// (continuous protection: a point every few seconds). Otherwise the drain
// cadence, not the policy, would set the RPO: a point only counts once it
// is applied in Azure, and it waits in the log until the next drain. Under
// the default 5-minute interval the bookmark waits for the regular drain,
// as before.
func (a *Agent) drainBookmark() {
	if every := a.st.Policy.CrashInterval; every > 0 && every < a.cfg.DrainInterval {
		a.drainDue = true
	}
}

// skipBookmark counts and logs a bookmark of kind not inserted (a retry's
// skip is not counted again: its first was), and arms its retry if the
// reason is retryable.
func (a *Agent) skipBookmark(ctx runtime.Context, kind proto.Consistency, reason string, retry bool) {
	if !retry {
		a.bookmarks.skip(kind.String(), reason)
	}
	if retryable(reason) {
		a.retry[kind] = true
		ctx.Log().Info("agent: bookmark skipped", "machine", a.cfg.Machine, "kind", kind.String(), "reason", reason,
			"retry", "when-drained")
		return
	}
	ctx.Log().Info("agent: bookmark skipped", "machine", a.cfg.Machine, "kind", kind.String(), "reason", reason)
}

// bookmarkReason says why a bookmark of kind cannot be inserted now, or
// "": the log cannot honour one (bookmarkBlocker), the writes are held
// for a group tag ("group-round": the tag is the point), or an app
// bookmark's freeze is already running ("freeze-in-progress").
func (a *Agent) bookmarkReason(kind proto.Consistency) string {
	switch {
	case a.bookmarkBlocker() != "":
		return a.bookmarkBlocker()
	case a.filter.Holding():
		return "group-round"
	case kind == proto.App && a.freezing:
		return "freeze-in-progress"
	}
	return ""
}

// bookmarkBlocker says why no bookmark can be honoured now, or "".
func (a *Agent) bookmarkBlocker() string {
	if a.phase != PhaseReplicating {
		return a.phase
	}
	fs := a.filter.Stats()
	switch {
	case fs.Mode == ModeMetadata:
		return "metadata-mode"
	case fs.Mode == ModeBitmap:
		return "bitmap-mode"
	case fs.UndrainedMeta:
		return "undrained-metadata"
	}
	return ""
}
