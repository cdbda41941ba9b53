package harness

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
)

// Image is a replica disk image read back from blob storage: the
// allocated ranges of a page blob (or of one of its snapshots), zeros
// elsewhere. It implements io.ReaderAt.
type Image struct {
	Size   int64
	Ranges []disk.ByteRange
	data   [][]byte // one per range
}

// readGap is the largest hole between two page ranges that ReadImage
// reads through rather than making a second request.
const readGap = 1 << 20

// ReadImage downloads the allocated ranges of a page blob or snapshot.
func ReadImage(ctx context.Context, s blob.Store, container, name, snapshot string) (*Image, error) {
	rs, err := s.PageRanges(ctx, container, name, snapshot)
	if err != nil {
		return nil, err
	}
	var props blob.Props
	img := &Image{}
	// A disk written all over has thousands of small ranges: read them in
	// spans (a page blob reads zeros between its ranges), one request for
	// ranges less than readGap apart, and keep each range's own bytes.
	for i := 0; i < len(rs); {
		j := i + 1
		for j < len(rs) && rs[j].Offset-(rs[j-1].Offset+rs[j-1].Length) < readGap {
			j++
		}
		lo := rs[i].Offset
		b, p, err := s.Get(ctx, container, name, blob.ReadOptions{Snapshot: snapshot, Offset: lo, Length: rs[j-1].Offset + rs[j-1].Length - lo})
		if err != nil {
			return nil, err
		}
		props = p
		for _, r := range rs[i:j] {
			if r.Offset+r.Length-lo > int64(len(b)) {
				return nil, fmt.Errorf("harness: read %s: %d bytes from %d, range %d+%d", name, len(b), lo, r.Offset, r.Length)
			}
			img.Ranges = append(img.Ranges, disk.ByteRange{Off: r.Offset, Len: r.Length})
			img.data = append(img.data, b[r.Offset-lo:r.Offset+r.Length-lo])
		}
		i = j
	}
	if len(rs) == 0 {
		if props, err = s.Properties(ctx, container, name); err != nil {
			return nil, err
		}
	}
	img.Size = props.Size
	return img, nil
}

// ReadAt implements io.ReaderAt.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	end := off + int64(len(p))
	i := sort.Search(len(im.Ranges), func(i int) bool { return im.Ranges[i].Off+im.Ranges[i].Len > off })
	for ; i < len(im.Ranges) && im.Ranges[i].Off < end; i++ {
		r := im.Ranges[i]
		lo, hi := max(off, r.Off), min(end, r.Off+r.Len)
		copy(p[lo-off:hi-off], im.data[i][lo-r.Off:hi-r.Off])
	}
	return len(p), nil
}

// PointImages reads the disks of one recovery point.
func (d *Deployment) PointImages(cat *azuresvc.Catalog, p azuresvc.Point) ([]io.ReaderAt, [][]disk.ByteRange, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return nil, nil, err
	}
	var imgs []io.ReaderAt
	var ranges [][]disk.ByteRange
	for i, dk := range cat.Disks {
		if i >= len(p.Snapshots) {
			return nil, nil, fmt.Errorf("point %s has %d snapshots for %d disks", p.ID, len(p.Snapshots), len(cat.Disks))
		}
		img, err := ReadImage(d.e.ctx, store, prefix+proto.ContainerReplica, dk.Blob, p.Snapshots[i])
		if err != nil {
			return nil, nil, fmt.Errorf("point %s disk %d: %w", p.ID, i, err)
		}
		imgs = append(imgs, img)
		ranges = append(ranges, img.Ranges)
	}
	return imgs, ranges, nil
}

// Catalog reads a machine's catalog from storage (not from the Azure
// service's memory: the check looks at what a failover would use).
func (d *Deployment) Catalog(machine string) (*azuresvc.Catalog, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return nil, err
	}
	cat, _, err := azuresvc.LoadCatalog(d.e.ctx, store, prefix, machine)
	return cat, err
}

// PointChecks are the property checks of recovery points.
type PointChecks struct {
	// Policy gives the retention to check against; zero: the default.
	Policy proto.Policy
	// SkipImages checks only the catalog properties (fast).
	SkipImages bool
}

// CheckPoints checks every recovery point of the given machines (all
// protected ones when nil):
//
//   - write-order + durability: each point's disks are exactly the source
//     after the first k writes, where k is the number of writes logged before
//     the point's bookmark — no write missing, none reordered, none extra;
//   - invariant: the workload recovers from a crash-consistent point, and an
//     app-consistent point needs no recovery at all;
//   - monotonic: points ordered by log position have non-decreasing times
//     and distinct ids;
//   - retention: no point older than the policy allows, and one point per
//     hour at most beyond the newest two hours.
func (d *Deployment) CheckPoints(machines []string, pc PointChecks) []Result {
	if machines == nil {
		machines = d.protectedMachines()
	}
	var out []Result
	for _, m := range machines {
		pc := pc
		if pc.Policy.Name == "" {
			pc.Policy = d.PolicyOf(m)
		}
		cat, err := d.Catalog(m)
		if err != nil {
			out = append(out, Result{Check: "points", Subject: m, Verdict: Unknown, Evidence: err.Error()})
			continue
		}
		out = append(out, d.checkCatalog(m, cat, pc)...)
	}
	return out
}

func (d *Deployment) checkCatalog(m string, cat *azuresvc.Catalog, pc PointChecks) []Result {
	var out []Result
	mach := d.e.Machines[m]
	pts := append([]azuresvc.Point(nil), cat.Points...)
	sort.Slice(pts, func(i, j int) bool { return pts[i].Seq < pts[j].Seq })
	if len(pts) == 0 {
		// Nothing to judge is never a pass: monotonic and retention hold
		// trivially on no points, and that is exactly what a replica that
		// lost every point would look like.
		return []Result{d.noPoints("points", m)}
	}
	if !pc.SkipImages && mach != nil {
		wl := d.e.Workloads.Workload(m)
		for _, p := range pts {
			subj := m + "@" + p.ID
			imgs, ranges, err := d.PointImages(cat, p)
			if err != nil {
				out = append(out, Result{Check: "write-order", Subject: subj, Verdict: Unknown, Evidence: err.Error()})
				continue
			}
			out = append(out, judgePoint(mach.Oracle(), subj, p.Seq, imgs, ranges))
			if wl != nil {
				rep, err := wl.Check(imgs, p.Kind == proto.App)
				r := Result{Check: "invariant", Subject: subj, Verdict: OK, Detail: p.Kind.String() + " " + rep.Summary}
				if err != nil {
					r.Verdict, r.Evidence = Illegal, err.Error()
				}
				out = append(out, r)
			}
		}
	}
	out = append(out, checkMonotonic(m, pts), checkRetention(m, pts, d.e.Sim.Now(), pc.Policy.Retention, d.made.made(m), d.inGroup(m)))
	return out
}

// noPoints is the verdict on a machine without recovery points; see
// noPointsVerdict.
func (d *Deployment) noPoints(check, m string) Result {
	since, ok := d.protectedSince(m)
	return noPointsVerdict(check, m, "recovery points", ok, since, d.e.Sim.Now(), d.PolicyOf(m))
}

// noPointsVerdict is the verdict on a subject without recovery points:
// Illegal once it has been protected (sync complete at since) for longer
// than a crash interval and the schedule's slack, Unknown before that (too
// early to judge) or when it is not protected, never OK.
func noPointsVerdict(check, subj, what string, protected bool, since, now time.Time, p proto.Policy) Result {
	r := Result{Check: check, Subject: subj, Verdict: Unknown}
	if !protected {
		r.Evidence = fmt.Sprintf("no %s, and not protected (sync not complete): nothing to judge", what)
		return r
	}
	waited := now.Sub(since)
	if waited <= p.CrashInterval+scheduleSlack {
		r.Evidence = fmt.Sprintf("no %s yet: protected only %s ago (policy: a point every %s)", what, fmtDur(waited), p.CrashInterval)
		return r
	}
	r.Verdict = Illegal
	r.Evidence = fmt.Sprintf("no %s, %s after sync complete (policy: a point every %s)", what, fmtDur(waited), p.CrashInterval)
	return r
}

// inGroup says whether the machine is a member of a replication group.
func (d *Deployment) inGroup(m string) bool {
	ms, ok := d.MachineStatus(m)
	return ok && ms.Group != ""
}

// protectedSince is when the machine last became protected (its sync
// completed), if it is protected now.
func (d *Deployment) protectedSince(m string) (time.Time, bool) {
	ms, ok := d.MachineStatus(m)
	if !ok || ms.State != configsrv.StateProtected {
		return time.Time{}, false
	}
	for i := len(ms.History) - 1; i >= 0; i-- {
		if ms.History[i].To == configsrv.StateProtected && ms.History[i].From != configsrv.StateProtected {
			return ms.History[i].At, true
		}
	}
	return time.Time{}, false
}

// judgePoint is the write-order and durability check of one point: its
// images must be the machine's disks after exactly the writes logged before
// its bookmark.
func judgePoint(o *disk.Oracle, subj string, bookmarkSeq uint64, imgs []io.ReaderAt, ranges [][]disk.ByteRange) Result {
	r := Result{Check: "write-order", Subject: subj}
	want := o.KForSeq(bookmarkSeq)
	v, err := o.Match(imgs, ranges)
	switch {
	case err != nil:
		r.Verdict, r.Evidence = Unknown, err.Error()
	case !v.OK():
		r.Verdict, r.Evidence = Illegal, v.Evidence
	case !v.Ks.Contains(want):
		r.Verdict = Illegal
		r.Evidence = fmt.Sprintf("bookmark at log seq %d follows %d acknowledged writes, but the point's disks are the state after k in %s (durability: acknowledged writes missing or extra)", bookmarkSeq, want, v.Ks)
	default:
		r.Verdict, r.Detail = OK, fmt.Sprintf("k=%d", want)
	}
	return r
}

func checkMonotonic(m string, pts []azuresvc.Point) Result {
	r := Result{Check: "monotonic", Subject: m, Verdict: OK, Detail: fmt.Sprintf("%d points", len(pts))}
	seen := map[string]bool{}
	for i, p := range pts {
		if seen[p.ID] {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point id %s appears twice", p.ID)
			return r
		}
		seen[p.ID] = true
		if i > 0 && (p.Seq == pts[i-1].Seq || p.Time.Before(pts[i-1].Time)) {
			r.Verdict = Illegal
			r.Evidence = fmt.Sprintf("point %s (seq %d, %s) follows %s (seq %d, %s)", p.ID, p.Seq, p.Time.Format(time.TimeOnly), pts[i-1].ID, pts[i-1].Seq, pts[i-1].Time.Format(time.TimeOnly))
			return r
		}
	}
	return r
}

// retentionSlack is how late retention may act: a point is pruned when
// the next point arrives or the service next looks, so a point may outlive
// its window by about a crash interval.
const retentionSlack = 10 * time.Minute

// checkRetention checks the catalog's points against the policy both ways:
//
//   - nothing kept too long: no point older than the window (plus slack),
//     and at most one point per clock hour beyond the newest two hours;
//   - nothing dropped that the policy keeps, judged against made, the
//     record of every point the Azure side reported making (not the
//     catalog itself): every made point of the last azuresvc.KeepAllFor is
//     there, and every clock hour inside the window and beyond the newest
//     two hours in which points were made still has one.
//
// Points the Azure side took away for reasons retention does not decide
// (made[i].Gone: a revoked group round, a lost snapshot) are not owed.
func checkRetention(m string, pts []azuresvc.Point, now time.Time, retention time.Duration, made []madePoint, group bool) Result {
	if retention <= 0 {
		retention = proto.DefaultPolicy().Retention
	}
	r := Result{Check: "retention", Subject: m, Verdict: OK}
	if len(pts) == 0 {
		r.Verdict, r.Evidence = Unknown, "no points to judge"
		return r
	}
	newest := pts[0].Time
	have := map[string]bool{}
	for _, p := range pts {
		if p.Time.After(newest) {
			newest = p.Time
		}
		have[p.ID] = true
	}
	perHour := map[int64]string{}
	for _, p := range pts {
		if p.Time.Before(now.Add(-retention - retentionSlack)) {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point %s at %s is older than the %s window", p.ID, p.Time.Format(time.DateTime), retention)
			return r
		}
		if p.Time.Before(newest.Add(-azuresvc.KeepAllFor - retentionSlack)) {
			h := p.Time.Unix() / 3600
			if other, ok := perHour[h]; ok {
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("points %s and %s share an hour beyond the newest two hours (not thinned)", other, p.ID)
				return r
			}
			perHour[h] = p.ID
		}
	}
	// The other way. Every point of the newest two hours is kept: the
	// service prunes at some time <= now, keeping everything at most
	// KeepAllFor older than that. Beyond them, in each clock hour inside
	// the window, thinning keeps the hour's earliest point (for a member
	// of a replication group, the group's tags come first and are
	// bucketed by the group point's time, which may lie a little across
	// the hour from the member's own: there, some point of the hour, give
	// or take the slack, must be kept).
	recent, hours := 0, 0
	seenHour := map[int64]bool{}
	for _, p := range made {
		if p.Gone != "" {
			continue
		}
		if !p.Time.Before(now.Add(-azuresvc.KeepAllFor)) {
			recent++
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s) of the newest %s was made and is gone (the policy keeps every point that recent)", p.ID, p.Kind, p.Time.Format(time.DateTime), azuresvc.KeepAllFor)
				return r
			}
			continue
		}
		if p.Time.Before(now.Add(-retention + retentionSlack)) {
			continue // expired, or about to be
		}
		hs := p.Time.UTC().Truncate(time.Hour)
		h := hs.Unix() / 3600
		if seenHour[h] {
			continue // not the hour's earliest
		}
		seenHour[h] = true
		hours++
		if !group {
			if !have[p.ID] {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("point %s (%s, %s), the earliest of its hour, was made and is gone (the policy keeps one point an hour for %s)", p.ID, p.Kind, p.Time.Format(time.DateTime), retention)
				return r
			}
			continue
		}
		lo, hi := hs.Add(-retentionSlack), hs.Add(time.Hour+retentionSlack)
		found := false
		for _, q := range pts {
			if !q.Time.Before(lo) && q.Time.Before(hi) {
				found = true
				break
			}
		}
		if !found {
			r.Verdict = Illegal
			r.Evidence = fmt.Sprintf("no point kept for the hour from %s, which had points (e.g. %s): the policy keeps one an hour for %s", hs.Format(time.DateTime), p.ID, retention)
			return r
		}
	}
	r.Detail = fmt.Sprintf("window %s; %d points, %d made in the newest %s all kept, %d older hours each with its point", retention, len(pts), recent, azuresvc.KeepAllFor, hours)
	return r
}

// CheckSchedule checks that points follow the policy: no gap between
// consecutive points longer than the crash-consistent interval (plus a
// minute's slack for drain and apply), and no gap between app-consistent
// points longer than the app-consistent interval, from the first point to
// the newest. A gap names the two points around it. A gap between points of
// two generations (a resync in between) is not the schedule's: it is
// counted, not judged.
func (d *Deployment) CheckSchedule(machines []string) []Result {
	if machines == nil {
		machines = d.protectedMachines()
	}
	var out []Result
	for _, m := range machines {
		cat, err := d.Catalog(m)
		if err != nil {
			out = append(out, Result{Check: "schedule", Subject: m, Verdict: Unknown, Evidence: err.Error()})
			continue
		}
		out = append(out, checkSchedule(m, cat.Points, d.PolicyOf(m), d.e.Sim.Now()))
	}
	return out
}

const scheduleSlack = time.Minute

func checkSchedule(m string, pts []azuresvc.Point, p proto.Policy, now time.Time) Result {
	r := Result{Check: "schedule", Subject: m, Verdict: OK}
	pts = append([]azuresvc.Point(nil), pts...)
	sort.Slice(pts, func(i, j int) bool { return pts[i].Time.Before(pts[j].Time) })
	if len(pts) == 0 {
		r.Verdict, r.Evidence = Illegal, "no recovery points"
		return r
	}
	// Beyond the newest two hours retention thins points to one an hour
	// (checked by the retention check): judge the schedule on the points
	// the service keeps all of, from the last one before that window on.
	cut := now.Add(-azuresvc.KeepAllFor)
	first := len(pts)
	for i := len(pts) - 1; i >= 0 && pts[i].Time.After(cut); i-- {
		first = i
	}
	if first == len(pts) {
		r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no recovery point in the last %s", azuresvc.KeepAllFor)
		return r
	}
	pts = pts[first:]
	var maxGap, maxAppGap time.Duration
	apps, resyncs := 0, 0
	var lastApp *azuresvc.Point
	for i := range pts {
		if i > 0 {
			gap := pts[i].Time.Sub(pts[i-1].Time)
			maxGap = max(maxGap, gap)
			if gap > p.CrashInterval+scheduleSlack && pts[i].Gen != pts[i-1].Gen {
				// A resync (a new generation) makes no points until the
				// replica is whole again: the schedule cannot hold across
				// it, and the resync was ordered with an alert.
				resyncs++
			} else if gap > p.CrashInterval+scheduleSlack {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("a %s gap between %s and %s (policy: a point every %s)", fmtDur(gap), pts[i-1].ID, pts[i].ID, p.CrashInterval)
				return r
			}
		}
		if pts[i].Kind == proto.App {
			if lastApp != nil {
				gap := pts[i].Time.Sub(lastApp.Time)
				maxAppGap = max(maxAppGap, gap)
				if p.AppInterval > 0 && gap > p.AppInterval+scheduleSlack && pts[i].Gen == lastApp.Gen {
					r.Verdict = Illegal
					r.Evidence = fmt.Sprintf("app-consistent points %s and %s are %s apart (policy: every %s)", lastApp.ID, pts[i].ID, fmtDur(gap), p.AppInterval)
					return r
				}
			}
			apps++
			lastApp = &pts[i]
		}
	}
	span := pts[len(pts)-1].Time.Sub(pts[0].Time)
	if p.AppInterval > 0 && span >= p.AppInterval+scheduleSlack && apps == 0 {
		r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no app-consistent point in %s of points (policy: every %s)", fmtDur(span), p.AppInterval)
		return r
	}
	r.Detail = fmt.Sprintf("%d points over %s, largest gap %s; %d app-consistent", len(pts), fmtDur(span), fmtDur(maxGap), apps)
	if resyncs > 0 {
		r.Detail += fmt.Sprintf("; %d gap(s) across a resync", resyncs)
	}
	return r
}
