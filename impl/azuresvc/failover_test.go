package azuresvc

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const foAddr = runtime.Addr("failover.azure:443")

// replies are the Replies the service sent to the orchestrator, as
// "req ok result reason".
func replies(t *testing.T, d *runtimetest.Driver) []*proto.Reply {
	t.Helper()
	var out []*proto.Reply
	for _, m := range d.SentTo(foAddr) {
		r, ok := m.(*proto.Reply)
		if !ok {
			t.Fatalf("unexpected %s to the orchestrator", wire.KindName(m.WireKind()))
		}
		out = append(out, r)
	}
	return out
}

// replicated is a service that applied the standard stream of db01.
func replicated(t *testing.T) (*runtimetest.Driver, *model, blobStore) {
	t.Helper()
	store := memStore()
	d := start(t, store)
	d.SetLogger(warnLogger(t))
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	if c := loadCatalog(t, store, "db01"); c.Applied != last(items) || len(c.Points) != 4 {
		t.Fatalf("stream not applied: applied %d, %d points", c.Applied, len(c.Points))
	}
	return d, m, store
}

type blobStore = *memblob.Store

func TestStopReplication(t *testing.T) {
	d, m, store := replicated(t)
	d.Receive(foAddr, &proto.StopReplication{Req: "r1", Machine: "db01"})
	d.Receive(foAddr, &proto.StopReplication{Req: "r2", Machine: "db01"}) // again: not an error
	d.Receive(foAddr, &proto.StopReplication{Req: "r3", Machine: "nosuch"})
	got := replies(t, d)
	want := []*proto.Reply{
		{Request: "stop-replication", Subject: "db01", OK: true, Req: "r1"},
		{Request: "stop-replication", Subject: "db01", OK: true, Req: "r2"},
		{Request: "stop-replication", Subject: "nosuch", Reason: "azuresvc: failover request refused: nosuch has no replica (no catalog)", Req: "r3"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	for _, ms := range service(d).Status().Machines {
		if ms.Machine == "nosuch" {
			t.Errorf("a refused request added machine nosuch to the status")
		}
	}
	c := loadCatalog(t, store, "db01")
	if !c.Stopped {
		t.Fatalf("catalog not stopped")
	}
	// What arrives afterwards is consumed and dropped: no apply, no point.
	before := c.Applied
	it := m.log(m.write(0, 0, m.data(4096)), m.bookmark(proto.Crash, "db01-c-99", runtimetest.Epoch))
	delete(m.points, "db01-c-99")
	upload(t, store, it)
	hint(d, "db01", it.Seq)
	d.Advance(DefaultPollEvery)
	c = loadCatalog(t, store, "db01")
	if c.Applied != before || len(c.Points) != 4 {
		t.Errorf("after stop: applied %d (was %d), %d points (want 4)", c.Applied, before, len(c.Points))
	}
	if got := cacheBlobs(t, store); len(got) != 0 {
		t.Errorf("stopped machine's items left in the cache: %v", got)
	}
	checkPoints(t, store, m)
}

func TestMakeLatest(t *testing.T) {
	d, m, store := replicated(t)
	// Nothing pending: the stream ends on a bookmark.
	d.Receive(foAddr, &proto.MakeLatest{Req: "r1", Machine: "db01"})
	// Data in the cache that no hint announced: MakeLatest finds it.
	it := m.log(m.write(0, 0, m.data(8192)), m.write(1, 1024, m.data(512)))
	upload(t, store, it)
	d.Receive(foAddr, &proto.MakeLatest{Req: "r2", Machine: "db01"})
	// The point stands right after the last record applied, as a bookmark
	// stands after the writes it covers.
	id := proto.LatestPointID("db01", m.logSeq+1)
	m.points[id] = m.snapshotImages()
	// Applied and pointed: nothing pending again.
	d.Receive(foAddr, &proto.MakeLatest{Req: "r3", Machine: "db01"})
	want := []*proto.Reply{
		{Request: "make-latest", Subject: "db01", OK: true, Req: "r1"},
		{Request: "make-latest", Subject: "db01", OK: true, Req: "r2", Result: id},
		{Request: "make-latest", Subject: "db01", OK: true, Req: "r3"},
	}
	if diff := cmp.Diff(want, replies(t, d)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
	c := loadCatalog(t, store, "db01")
	if p, ok := c.FindPoint(id); !ok || p.Kind != proto.Crash || p.Seq != m.logSeq+1 {
		t.Errorf("latest point %+v (found %v), want crash at seq %d", p, ok, m.logSeq+1)
	}
	evs, _ := toCS(t, d)
	if names := eventNames(evs); names[len(names)-1] != "point:"+id {
		t.Errorf("last event %v, want point:%s", names[len(names)-1], id)
	}
}

func TestMakeLatestRefused(t *testing.T) {
	d, _, store := replicated(t)
	// A machine that never synced.
	m2 := newModel("web01")
	upload(t, store, m2.syncStart(64<<10))
	hint(d, "web01", 1)
	d.Receive(foAddr, &proto.MakeLatest{Req: "r1", Machine: "web01"})
	d.Receive(foAddr, &proto.StopReplication{Req: "r2", Machine: "db01"})
	d.Receive(foAddr, &proto.MakeLatest{Req: "r3", Machine: "db01"})
	var got []string
	for _, r := range replies(t, d) {
		got = append(got, r.Req+" "+r.Reason)
	}
	want := []string{
		"r1 azuresvc: failover request refused: latest of web01: the replica is not synced",
		"r2 ",
		"r3 azuresvc: failover request refused: latest of db01: its replication is stopped",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func TestCommitPoint(t *testing.T) {
	d, m, store := replicated(t)
	d.Receive(foAddr, &proto.CommitPoint{Req: "r1", Machine: "db01", Point: "db01-a-5"})
	d.Receive(foAddr, &proto.StopReplication{Req: "r2", Machine: "db01"})
	d.Receive(foAddr, &proto.CommitPoint{Req: "r3", Machine: "db01", Point: "gone"})
	if c := loadCatalog(t, store, "db01"); len(c.Points) != 4 {
		t.Fatalf("a refused commit changed the points: %d", len(c.Points))
	}
	d.Receive(foAddr, &proto.CommitPoint{Req: "r4", Machine: "db01", Point: "db01-a-5"})
	var got []string
	for _, r := range replies(t, d) {
		got = append(got, r.Req+" "+r.Result+" "+r.Reason)
	}
	want := []string{
		"r1  azuresvc: failover request refused: commit of db01: its replication was not stopped by a failover",
		"r2  ",
		`r3  azuresvc: failover request refused: commit of db01: no point "gone"`,
		"r4 db01-a-5 ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	for id := range m.points {
		if id != "db01-a-5" {
			delete(m.points, id)
		}
	}
	checkPoints(t, store, m) // the kept point's images, and no other snapshot
	evs, _ := toCS(t, d)
	pruned := 0
	for _, e := range evs {
		if e.Event == proto.EventPruned && e.Detail == "commit" {
			pruned++
		}
	}
	if pruned != 3 {
		t.Errorf("%d pruned-by-commit events, want 3", pruned)
	}
}
