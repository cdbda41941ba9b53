package azuresvc

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/batch"
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

// TestResumeReplication: a machine stopped by a failover replicates again
// after ResumeReplication. The replica is kept: the new generation's
// checksums are those of the replica as it stands (not fresh), so only the
// blocks that differ are sent, and bookmarks become points again.
func TestResumeReplication(t *testing.T) {
	d, m, store := replicated(t)
	d.Receive(foAddr, &proto.StopReplication{Req: "r1", Machine: "db01"})
	// The stream goes on while stopped: dropped, never applied. The model
	// keeps the write (the source has it), so the replica now differs from
	// the source in disk 0's first block.
	dropped := m.log(m.write(0, 0, m.data(BlockSize)))
	upload(t, store, dropped)
	hint(d, "db01", dropped.Seq)
	d.Advance(DefaultPollEvery)
	before := loadCatalog(t, store, "db01")
	if !before.Stopped || before.Applied >= dropped.Seq {
		t.Fatalf("before resume: stopped %v, applied %d (dropped item %d)", before.Stopped, before.Applied, dropped.Seq)
	}

	d.Receive(foAddr, &proto.ResumeReplication{Req: "r2", Machine: "db01"})
	d.Receive(foAddr, &proto.ResumeReplication{Req: "r3", Machine: "db01"}) // not stopped: not an error
	d.Receive(foAddr, &proto.ResumeReplication{Req: "r4", Machine: "nosuch"})
	want := []*proto.Reply{
		{Request: "stop-replication", Subject: "db01", OK: true, Req: "r1"},
		{Request: "resume-replication", Subject: "db01", OK: true, Req: "r2"},
		{Request: "resume-replication", Subject: "db01", OK: true, Req: "r3"},
		{Request: "resume-replication", Subject: "nosuch", Reason: "azuresvc: failover request refused: nosuch has no replica (no catalog)", Req: "r4"},
	}
	if diff := cmp.Diff(want, replies(t, d)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	c := loadCatalog(t, store, "db01")
	if c.Stopped || c.Gen != before.Gen || c.Applied != before.Applied || len(c.Points) != len(before.Points) {
		t.Fatalf("after resume: stopped %v gen %d applied %d points %d; want not stopped, the rest as before (%d %d %d)",
			c.Stopped, c.Gen, c.Applied, len(c.Points), before.Gen, before.Applied, len(before.Points))
	}
	toCS(t, d)

	// The new generation starts past the dropped item (a gap).
	ss := m.syncStart(disk0Size, disk1Size)
	upload(t, store, ss)
	hint(d, "db01", ss.Seq)
	evs, sums := toCS(t, d)
	if diff := cmp.Diff([]string{"sync-started"}, eventNames(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	got := map[uint16][]byte{}
	for _, s := range sums {
		if s.Fresh || s.Gen != 2 {
			t.Fatalf("checksums of disk %d: fresh %v gen %d, want those of the kept replica, gen 2", s.Disk, s.Fresh, s.Gen)
		}
		got[s.Disk] = append(got[s.Disk], s.Sums...)
	}
	c = loadCatalog(t, store, "db01")
	for i, dk := range c.Disks {
		if want := directSums(t, store, dk); !bytes.Equal(got[uint16(i)], want) {
			t.Errorf("disk %d: checksums differ from the replica's", i)
		}
	}
	// The agent sends the blocks whose sums differ: only the dropped write's.
	var chunks []*batch.Item
	var differ []string
	for i, img := range m.disks {
		for off := 0; off < len(img); off += BlockSize {
			blk := img[off:min(off+BlockSize, len(img))]
			s := proto.BlockSum(blk)
			k := off / BlockSize * proto.ChecksumSize
			if bytes.Equal(s[:], got[uint16(i)][k:k+proto.ChecksumSize]) {
				continue
			}
			differ = append(differ, fmt.Sprintf("%d:%d", i, off))
			chunks = append(chunks, m.chunk(uint16(i), batch.Run{Off: int64(off), Data: bytes.Clone(blk)}))
		}
	}
	if diff := cmp.Diff([]string{"0:0"}, differ); diff != "" {
		t.Fatalf("blocks that differ (-want +got):\n%s", diff)
	}
	rest := append(chunks, m.syncEnd(uint64(len(chunks))),
		m.log(m.write(1, 0, m.data(512)), m.bookmark(proto.Crash, "db01-c-20", runtimetest.Epoch.Add(time.Hour))))
	upload(t, store, rest...)
	hint(d, "db01", last(rest))
	evs, _ = toCS(t, d)
	if diff := cmp.Diff([]string{"sync-complete", "point:db01-c-20"}, eventNames(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
}

// TestMakeLatestAfterANewLog: a physical server that failed back to a new
// VM has a fresh agent whose change log numbers from 1 again (a resync
// sets AppliedLogSeq to its LogFrom−1). The points of the old log (the
// failover's committed point, kept in the catalog) stand at higher log
// positions than anything of the new one: they do not say what of the
// new log is in a point. Pending writes of the new log past its newest
// point are made into a latest point; before, the old log's positions
// hid them ("nothing pending") and a failover to latest lost them.
func TestMakeLatestAfterANewLog(t *testing.T) {
	d, m, store := replicated(t)
	oldNewest := loadCatalog(t, store, "db01").Points
	// The new VM's agent: a resync of generation 2 with a log from 1.
	items := []*batch.Item{m.syncStart(disk0Size, disk1Size)}
	m.logSeq = 0
	items = append(items, m.syncEnd(0))
	items = append(items, m.log(
		m.write(0, 0, m.data(4096)),
		m.bookmark(proto.Crash, "db01-c-new-2", runtimetest.Epoch.Add(time.Hour)),
		m.write(0, 4096, m.data(4096)),
	))
	upload(t, store, items...)
	hint(d, "db01", last(items))
	c := loadCatalog(t, store, "db01")
	if c.Gen != 2 || c.AppliedLogSeq != 3 || len(c.Points) != len(oldNewest)+1 {
		t.Fatalf("new log not applied: gen %d, applied log seq %d, %d points", c.Gen, c.AppliedLogSeq, len(c.Points))
	}
	d.Receive(foAddr, &proto.MakeLatest{Req: "r1", Machine: "db01"})
	id := proto.LatestPointID("db01", 4)
	m.points[id] = m.snapshotImages()
	// Made and pointed: nothing pending again (the control).
	d.Receive(foAddr, &proto.MakeLatest{Req: "r2", Machine: "db01"})
	want := []*proto.Reply{
		{Request: "make-latest", Subject: "db01", OK: true, Req: "r1", Result: id},
		{Request: "make-latest", Subject: "db01", OK: true, Req: "r2"},
	}
	if diff := cmp.Diff(want, replies(t, d)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
	checkPoints(t, store, m)
}
