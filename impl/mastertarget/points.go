package mastertarget

import (
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
)

// What the journal reaches: the newest hour of points at the failback
// policy's crash interval (twelve), and the two newest app-consistent ones
// (so that the members of a group whose newest app-consistent points
// differ by one round can still fall back to a common one), each with one
// to spare, because the newest bookmark may yet be revoked (a multi-VM
// round that failed) and the one before must then still be there. The
// hour matters: a failback job chooses every machine's point first and
// reaches a plan's later boot groups minutes later, while their Azure VMs
// still replicate.
const (
	DefaultReachPoints = 12 + 1
	reachApps          = 2 + 1
)

// keepPoints splits points (oldest first) into those the journal keeps
// reaching and those it gives up, and returns reach, the position of the
// oldest kept point: the journal must hold every write after it. It reaches
// the reachPoints newest points and the reachApps newest app-consistent
// ones no older than proto.FailbackRetention before the newest point
// (older ones would let the journal grow without bound when app-consistent
// bookmarks stop), and so every point in between.
func keepPoints(points []point, reachPoints int) (keep, drop []point, reach pos) {
	if reachPoints <= 0 {
		reachPoints = DefaultReachPoints
	}
	if len(points) == 0 {
		return nil, nil, pos{}
	}
	newest := points[len(points)-1]
	reach = points[max(0, len(points)-reachPoints)].At
	horizon := newest.UnixNano - int64(proto.FailbackRetention)
	apps := 0
	for i := len(points) - 1; i >= 0 && apps < reachApps; i-- {
		if p := points[i]; p.Kind == proto.App && p.UnixNano >= horizon {
			if p.At.cmp(reach) < 0 {
				reach = p.At
			}
			apps++
		}
	}
	for _, p := range points {
		if p.At.cmp(reach) < 0 {
			drop = append(drop, p)
		} else {
			keep = append(keep, p)
		}
	}
	return keep, drop, reach
}

// plan is what applying items to a machine in state st does, decided on
// the actor's turn before the op runs: the next state, the events to send
// once it is durable, and from which position writes are journaled.
type plan struct {
	next   state
	events []*proto.ReplicaEvent
	// journal says writes at or after from are journaled (a point exists
	// before them); always false before the first point.
	journal bool
	from    pos
	// reach is the oldest kept point's position: journal entries at or
	// before it may go.
	reach   pos
	sumsDue bool // the items end with a SyncStart: checksums are owed
}

// planItems computes the plan of items applied on top of st. The rules:
// SyncStart begins a generation (not synced); its SyncEnd completes it;
// a bookmark record applied while synced, not seen before and not revoked
// becomes a point; a revoke removes its point; any write means the disks
// are no longer fresh; then keepPoints drops what the journal gives up.
func planItems(st state, items []*batch.Item, reachPoints int) plan {
	p := plan{next: st.clone()}
	n := &p.next
	if len(n.Points) > 0 {
		p.journal, p.from = true, pos{Item: items[0].Seq}
	}
	ev := func(e proto.ReplicaEvent) {
		e.Machine = n.Machine
		p.events = append(p.events, &e)
	}
	for _, it := range items {
		n.Applied = it.Seq
		switch it.Kind {
		case batch.KindSyncStart:
			n.Gen, n.SyncItem, n.SyncSizes, n.Synced = it.Gen, it.Seq, slices.Clone(it.DiskSizes), false
			ev(proto.ReplicaEvent{Event: proto.EventSyncStarted, Gen: it.Gen, Applied: it.Seq})
			p.sumsDue = true
		case batch.KindChunk:
			if len(it.Runs) > 0 {
				n.Fresh = false
			}
			p.sumsDue = false
		case batch.KindSyncEnd:
			p.sumsDue = false
			if it.Gen == n.Gen && n.SyncItem != 0 && !n.Synced {
				n.Synced = true
				ev(proto.ReplicaEvent{Event: proto.EventSyncComplete, Gen: it.Gen, Applied: it.Seq})
			}
		case batch.KindLog:
			p.sumsDue = false
			for ri, r := range it.Records {
				at := pos{Item: it.Seq, Rec: uint32(ri)}
				switch r.Type {
				case batch.RecWrite:
					n.Fresh = false
				case batch.RecBookmark:
					n.LastBookmark = r.BookmarkID
					if !n.Synced || slices.ContainsFunc(n.Points, func(q point) bool { return q.ID == r.BookmarkID }) {
						continue
					}
					pt := point{ID: r.BookmarkID, Kind: r.BookmarkKind, UnixNano: r.UnixNano, Seq: r.Seq, At: at}
					n.Points = append(n.Points, pt)
					if !p.journal {
						p.journal, p.from = true, at
					}
					ev(proto.ReplicaEvent{Event: proto.EventPoint, Gen: n.Gen, PointID: pt.ID, Kind: pt.Kind,
						PointTime: time.Unix(0, pt.UnixNano).UTC(), Seq: pt.Seq, Applied: it.Seq})
				case batch.RecRevoke:
					n.Points = slices.DeleteFunc(n.Points, func(q point) bool {
						if q.ID != r.BookmarkID {
							return false
						}
						ev(proto.ReplicaEvent{Event: proto.EventPruned, Gen: n.Gen, PointID: q.ID, Kind: q.Kind,
							PointTime: time.Unix(0, q.UnixNano).UTC(), Seq: q.Seq, Applied: it.Seq, Detail: "revoked"})
						return true
					})
				}
			}
		}
	}
	keep, drop, reach := keepPoints(n.Points, reachPoints)
	n.Points, p.reach = keep, reach
	for _, q := range drop {
		ev(proto.ReplicaEvent{Event: proto.EventPruned, Gen: n.Gen, PointID: q.ID, Kind: q.Kind,
			PointTime: time.Unix(0, q.UnixNano).UTC(), Seq: q.Seq, Applied: n.Applied, Detail: "beyond the undo journal's reach"})
	}
	return p
}

// resolve finds the point choice names among points: proto.PointLatest,
// proto.PointLatestApp or a point's id.
func resolve(points []point, choice string) (point, bool) {
	for i := len(points) - 1; i >= 0; i-- {
		p := points[i]
		switch choice {
		case proto.PointLatest:
			return p, true
		case proto.PointLatestApp:
			if p.Kind == proto.App {
				return p, true
			}
		default:
			if p.ID == choice {
				return p, true
			}
		}
	}
	return point{}, false
}
