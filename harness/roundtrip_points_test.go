package harness

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
	"github.com/v2a-dr/v2a/sim/sched"
)

// TestMonotonicAcrossANewAgent: a physical server that failed back to a
// new VM has a fresh agent whose change log counts from 1 again, so its
// points after the reprotect to Azure (a later generation) have lower log
// positions than the failover's committed point. In pointBefore order
// (generation, then position: the failover's) the catalog is monotonic;
// ordered by position alone it was not (swarm seed 18 with the failback
// kind). Negative controls: time going back, or one position twice,
// inside one generation.
func TestMonotonicAcrossANewAgent(t *testing.T) {
	old := pt("px03-c-888", "crash", 60, 888)
	old.Gen = 1
	n1, n2 := pt("px03-c-3", "crash", 150, 3), pt("px03-c-4", "crash", 155, 4)
	n1.Gen, n2.Gen = 4, 4
	pts := []azuresvc.Point{n2, old, n1}
	sort.Slice(pts, func(i, j int) bool { return pointBefore(pts[i], pts[j]) })
	if want := []string{"px03-c-888", "px03-c-3", "px03-c-4"}; !slices.Equal(ids(pts), want) {
		t.Fatalf("pointBefore order %v, want %v", ids(pts), want)
	}
	if r := checkMonotonic("px03", pts); r.Verdict != OK {
		t.Fatalf("points across a new agent's log: %s", r)
	}
	// The same position in two generations is no repeat.
	again := n1
	again.ID, again.Seq, again.Time, again.Gen = "px03-c-888b", 888, again.Time.Add(time.Minute), 5
	if r := checkMonotonic("px03", []azuresvc.Point{old, again}); r.Verdict != OK {
		t.Fatalf("one position in two generations: %s", r)
	}
	back := n2
	back.Time = old.Time.Add(-time.Minute)
	if r := checkMonotonic("px03", []azuresvc.Point{old, n1, back}); r.Verdict != Illegal {
		t.Fatalf("time going back inside a generation passed: %s", r)
	}
	twice := n2
	twice.Seq = n1.Seq
	if r := checkMonotonic("px03", []azuresvc.Point{old, n1, twice}); r.Verdict != Illegal {
		t.Fatalf("one position twice inside a generation passed: %s", r)
	}
}

func ids(pts []azuresvc.Point) []string {
	var out []string
	for _, p := range pts {
		out = append(out, p.ID)
	}
	return out
}

// TestPointRecordOnlyAzure: the point record takes the Azure side's
// ReplicaEvents and not the master target's (failback points are no Azure
// recovery points: recorded, retention owed the Azure catalog every
// failback point, and every failback seed of the swarm failed it).
func TestPointRecordOnlyAzure(t *testing.T) {
	rec := newPointRecord()
	tap := &csTap{rec: rec, azure: AddrAzure}
	at := sched.Epoch.Add(time.Hour)
	send := func(from runtime.Addr, id string) {
		ev := &proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: id, Kind: proto.Crash, PointTime: at}
		tap.listen(runtime.Message{From: from, Data: wire.Encode(ev)})
	}
	send(AddrAzure, "db01-c-10")
	send(runtime.MakeAddr(HostConfigServer, runtime.PortTarget), "db01-c-189")
	if got := ids2(rec.made("db01")); !slices.Equal(got, []string{"db01-c-10"}) {
		t.Fatalf("recorded %v, want only the Azure side's db01-c-10", got)
	}
}

func ids2(ps []madePoint) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}
