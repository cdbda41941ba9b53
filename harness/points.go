package harness

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
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
		img, err := ReadImage(d.e.ctx, store, prefix+"replica", dk.Blob, p.Snapshots[i])
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
				rep, err := wl.Check(imgs, p.Kind == "app")
				r := Result{Check: "invariant", Subject: subj, Verdict: OK, Detail: p.Kind + " " + rep.Summary}
				if err != nil {
					r.Verdict, r.Evidence = Illegal, err.Error()
				}
				out = append(out, r)
			}
		}
	}
	out = append(out, checkMonotonic(m, pts), checkRetention(m, pts, d.e.Sim.Now(), pc.Policy.Retention))
	return out
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

func checkRetention(m string, pts []azuresvc.Point, now time.Time, retention time.Duration) Result {
	r := Result{Check: "retention", Subject: m, Verdict: OK, Detail: fmt.Sprintf("window %s", retention)}
	if len(pts) == 0 {
		return r
	}
	newest := pts[0].Time
	for _, p := range pts {
		if p.Time.After(newest) {
			newest = p.Time
		}
	}
	perHour := map[int64]string{}
	for _, p := range pts {
		// A point is pruned when a newer one arrives, so allow one crash
		// interval of slack past the window.
		if p.Time.Before(now.Add(-retention - 10*time.Minute)) {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("point %s at %s is older than the %s window", p.ID, p.Time.Format(time.DateTime), retention)
			return r
		}
		if p.Time.Before(newest.Add(-2*time.Hour - 10*time.Minute)) {
			h := p.Time.Unix() / 3600
			if other, ok := perHour[h]; ok {
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("points %s and %s share an hour beyond the newest two hours (not thinned)", other, p.ID)
				return r
			}
			perHour[h] = p.ID
		}
	}
	return r
}

// CheckSchedule checks that points follow the policy: no gap between
// consecutive points longer than the crash-consistent interval (plus a
// minute's slack for drain and apply), and no gap between app-consistent
// points longer than the app-consistent interval, from the first point to
// the newest. A gap names the two points around it.
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
	apps := 0
	var lastApp *azuresvc.Point
	for i := range pts {
		if i > 0 {
			gap := pts[i].Time.Sub(pts[i-1].Time)
			maxGap = max(maxGap, gap)
			if gap > p.CrashInterval+scheduleSlack {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("a %s gap between %s and %s (policy: a point every %s)", fmtDur(gap), pts[i-1].ID, pts[i].ID, p.CrashInterval)
				return r
			}
		}
		if pts[i].Kind == "app" {
			if lastApp != nil {
				gap := pts[i].Time.Sub(lastApp.Time)
				maxAppGap = max(maxAppGap, gap)
				if p.AppInterval > 0 && gap > p.AppInterval+scheduleSlack {
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
	return r
}
