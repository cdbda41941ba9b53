package harness

import (
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// madePoint is a recovery point the Azure side reported making.
type madePoint struct {
	ID   string
	Kind proto.Consistency
	Time time.Time
	// Gone says why the Azure side took it away for a reason retention
	// does not decide ("revoked": a group round was revoked after the
	// member's point; "snapshot-lost": its snapshot disappeared from
	// storage). Retention does not owe such a point.
	Gone string
	// Removed is why the Azure side last took it away, retention
	// included ("retention", "revoked", "snapshot-lost"); "" while it is
	// live. The portal views answer with it for a point that is gone.
	Removed string
}

// pointRecord is the harness's own record of every recovery point the
// Azure side made, taken from the ReplicaEvents it sends the configuration
// server. The retention check compares the catalog with it in both
// directions, so that a catalog that lost points it should keep is caught:
// judging the catalog by itself cannot tell a point wrongly deleted from
// one never made. Events lost on the network only make the record smaller
// (the check then owes fewer points), never wrong.
type pointRecord struct {
	byMachine map[string]map[string]*madePoint
}

func newPointRecord() *pointRecord {
	return &pointRecord{byMachine: map[string]map[string]*madePoint{}}
}

func (r *pointRecord) observe(ev *proto.ReplicaEvent) {
	if ev.Machine == "" || ev.PointID == "" {
		return
	}
	ps := r.byMachine[ev.Machine]
	if ps == nil {
		ps = map[string]*madePoint{}
		r.byMachine[ev.Machine] = ps
	}
	switch ev.Event {
	case proto.EventPoint:
		if p, ok := ps[ev.PointID]; ok {
			p.Gone, p.Removed = "", "" // made again (a revoked tag is never made again; a re-made point is owed)
			return
		}
		ps[ev.PointID] = &madePoint{ID: ev.PointID, Kind: ev.Kind, Time: ev.PointTime}
	case proto.EventPointLost:
		if p, ok := ps[ev.PointID]; ok {
			p.Gone, p.Removed = "snapshot-lost", "snapshot-lost"
		}
	case proto.EventPruned:
		p, ok := ps[ev.PointID]
		if !ok {
			p = &madePoint{ID: ev.PointID, Kind: ev.Kind, Time: ev.PointTime}
			ps[ev.PointID] = p
		}
		p.Removed = ev.Detail
		if ev.Detail != "retention" {
			// Anything but retention (revoked, snapshot lost) is a
			// decision retention is not judged on.
			p.Gone = ev.Detail
		}
	}
}

// find is one recorded point of a machine.
func (r *pointRecord) find(machine, id string) (madePoint, bool) {
	p, ok := r.byMachine[machine][id]
	if !ok {
		return madePoint{}, false
	}
	return *p, true
}

// made lists a machine's recorded points, oldest first.
func (r *pointRecord) made(machine string) []madePoint {
	var out []madePoint
	for _, p := range r.byMachine[machine] {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// csTap is the configuration server with the point record listening in on
// the ReplicaEvents the Azure side (azure) sends it. It changes nothing the
// server sees. The master target's ReplicaEvents (failback points, made on
// premises and pruned by the failback policy) are no Azure recovery
// points: recording them would make retention owe the Azure catalog
// points it never held (swarm: every failback seed failed retention).
type csTap struct {
	*configsrv.Server
	rec   *pointRecord
	azure runtime.Addr
}

func (t *csTap) Handle(ctx runtime.Context, ev runtime.Event) {
	t.listen(ev)
	t.Server.Handle(ctx, ev)
}

// listen records a ReplicaEvent the Azure side sent.
func (t *csTap) listen(ev runtime.Event) {
	if m, ok := ev.(runtime.Message); ok && m.From == t.azure {
		if msg, err := wire.Decode(m.Data); err == nil {
			if re, ok := msg.(*proto.ReplicaEvent); ok {
				t.rec.observe(re)
			}
		}
	}
}
