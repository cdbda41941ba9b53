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
	end := off + int64(len(p))
	i := sort.Search(len(im.Ranges), func(i int) bool { return im.Ranges[i].Off+im.Ranges[i].Len > off })
	at := off // p is filled up to here
	for ; i < len(im.Ranges) && im.Ranges[i].Off < end; i++ {
		r := im.Ranges[i]
		lo, hi := max(off, r.Off), min(end, r.Off+r.Len)
		if lo > at {
			clear(p[at-off : lo-off]) // the hole before the range
		}
		copy(p[lo-off:hi-off], im.data[i][lo-r.Off:hi-r.Off])
		at = max(at, hi)
	}
	clear(p[at-off:])
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
	sort.Slice(pts, func(i, j int) bool { return pointBefore(pts[i], pts[j]) })
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
			out = append(out, judgePoint(d.oracleAt(m, p.Time), subj, p.Seq, imgs, ranges))
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
	out = append(out, checkMonotonic(m, pts), checkRetention(m, pts, d.e.Sim.Now(), pc.Policy, d.made.made(m), d.inGroup(m)))
	return out
}

// pointBefore orders points as the failover does (failover.newer): by
// sync generation, then change-log position. A log position alone does
// not order them across a new agent's log: a physical server that failed
// back to a new VM, whose fresh agent counts from 1 again.
func pointBefore(a, b azuresvc.Point) bool {
	if a.Gen != b.Gen {
		return a.Gen < b.Gen
	}
	return a.Seq < b.Seq
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
