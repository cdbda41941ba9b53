package simfs_test

// Crash tests of the components that keep files, on the crash-model disk:
// what each one acknowledges must survive a crash, and what it loses must
// be something it never acknowledged. (impl may not import sim, so these
// live here.)

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/sim/simfs"
)

const (
	psAddr    = runtime.Addr("ps01:9443")
	agentAddr = runtime.Addr("db01:20004")
	cacheDir  = "/cache"
)

// psWorld is a process server on a crash-model disk with a store kept
// across its restarts.
type psWorld struct {
	t     *testing.T
	disk  *simfs.FS
	store blob.Store
	d     *runtimetest.Driver
}

func newPSWorld(t *testing.T) *psWorld {
	w := &psWorld{t: t, disk: simfs.New(), store: memblob.New()}
	if err := w.disk.Wipe(cacheDir); err != nil {
		t.Fatal(err)
	}
	w.start()
	return w
}

func (w *psWorld) start() {
	srv := processsrv.New(processsrv.Config{Name: "ps01", CacheDir: cacheDir, FS: w.disk, Store: w.store,
		ContainerPrefix: "t-", Key: [32]byte{7}, GroupCommit: 2 * time.Millisecond})
	w.d = runtimetest.New(w.t, psAddr, srv)
	w.d.AutoDeliverOps = false // uploads never finish: items stay in the cache
}

// advance moves the clock and lets the group commits it starts complete
// (their op does the writes and fsyncs; only its completion acknowledges).
func (w *psWorld) advance(d time.Duration) {
	w.d.Advance(d)
	w.d.DeliverOpsWhere(func(d runtime.Done) bool { return d.Name == "cache-commit" })
}

func item(seq uint64) *proto.ItemMsg {
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(seq)
	}
	it := &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: int64(seq) * 4096, Data: data}}}
	return &proto.ItemMsg{Machine: "db01", Seq: seq, Data: it.Marshal()}
}

// acks returns the Acked of every ItemAck the agent got since the last call.
func (w *psWorld) acks() []string {
	var out []string
	for _, m := range w.d.SentTo(agentAddr) {
		a := m.(*proto.ItemAck)
		out = append(out, fmt.Sprintf("%d %s", a.Acked, a.Status))
	}
	return out
}

func (w *psWorld) hello() string {
	w.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	a := w.acks()
	if len(a) != 1 {
		w.t.Fatalf("hello answered with %v", a)
	}
	return a[0]
}

func (w *psWorld) crash(seed uint64) {
	w.disk.Crash(rand.New(rand.NewPCG(seed, 1)))
	w.start()
}

// TestPSCrashBeforeGroupCommit: items written but not yet committed are
// neither acknowledged nor kept by a crash; the agent resends them and
// they are taken again.
func TestPSCrashBeforeGroupCommit(t *testing.T) {
	for seed := uint64(0); seed < 8; seed++ {
		w := newPSWorld(t)
		for s := uint64(1); s <= 3; s++ {
			w.d.Receive(agentAddr, item(s))
		}
		w.advance(2 * time.Millisecond)
		if diff := cmp.Diff([]string{"3 ok"}, w.acks()); diff != "" {
			t.Fatalf("group commit acks (-want +got):\n%s", diff)
		}
		w.d.Receive(agentAddr, item(4))
		w.d.Receive(agentAddr, item(5))
		if a := w.acks(); len(a) != 0 {
			t.Fatalf("items acknowledged before their group commit: %v", a)
		}
		w.crash(seed)
		if got := w.hello(); got != "3 ok" {
			t.Fatalf("seed %d: hello after the crash: %s, want 3 ok (only what was acknowledged)", seed, got)
		}
		w.d.Receive(agentAddr, item(4)) // the agent's go-back-N resends
		w.d.Receive(agentAddr, item(5))
		w.advance(2 * time.Millisecond)
		if diff := cmp.Diff([]string{"5 ok"}, w.acks()); diff != "" {
			t.Fatalf("seed %d: resent items (-want +got):\n%s", seed, diff)
		}
	}
}

// TestPSCrashAfterGroupCommit: every acknowledged item survives a crash,
// and is uploaded after the restart.
func TestPSCrashAfterGroupCommit(t *testing.T) {
	w := newPSWorld(t)
	for s := uint64(1); s <= 5; s++ {
		w.d.Receive(agentAddr, item(s))
		w.advance(time.Millisecond)
	}
	w.advance(2 * time.Millisecond)
	got := w.acks()
	if len(got) == 0 || got[len(got)-1] != "5 ok" {
		t.Fatalf("acks %v, want the last to be 5 ok", got)
	}
	w.crash(1)
	if got := w.hello(); got != "5 ok" {
		t.Fatalf("hello after the crash: %s, want 5 ok", got)
	}
	w.d.AutoDeliverOps = true
	w.d.DeliverOps()
	w.advance(time.Minute)
	list, err := w.store.List(context.Background(), "t-"+proto.ContainerCache, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range list {
		names = append(names, b.Name)
	}
	var want []string
	for s := uint64(1); s <= 5; s++ {
		want = append(want, proto.CacheBlobName("db01", s))
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("uploaded after the restart (-want +got):\n%s", diff)
	}
}

// TestHRLCrash: records are durable once Sync returns; a crash loses the
// unsynced tail (a torn record is cut) and nothing synced.
func TestHRLCrash(t *testing.T) {
	for seed := uint64(0); seed < 16; seed++ {
		disk := simfs.New()
		if err := disk.Wipe("/agent"); err != nil {
			t.Fatal(err)
		}
		opts := hrl.Options{FS: disk}
		l, _, err := hrl.Open("/agent", "db01", opts)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 3000)
		for i := 0; i < 5; i++ {
			if _, err := l.AppendWrite(0, int64(i)*4096, data); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := 5; i < 9; i++ {
			if _, err := l.AppendWrite(0, int64(i)*4096, data); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Flush(); err != nil { // in the page cache: survives a process crash, not this
			t.Fatal(err)
		}
		disk.Crash(rand.New(rand.NewPCG(seed, 3)))
		l2, rec, err := hrl.Open("/agent", "db01", opts)
		if err != nil {
			t.Fatal(err)
		}
		if rec.ResyncRequired || rec.LastSeq != 5 {
			t.Fatalf("seed %d: recovery %+v, want the 5 synced records and no resync", seed, rec)
		}
		l2.Close()
	}
}

// TestPSCrashDuringGroupCommitOp: a crash after the group commit's op did
// its fsyncs but before its completion was handled: nothing was
// acknowledged, and the restarted server, finding the items durable,
// acknowledges them (the agent still holds them; a higher ack is news it
// can take).
func TestPSCrashDuringGroupCommitOp(t *testing.T) {
	for seed := uint64(0); seed < 4; seed++ {
		w := newPSWorld(t)
		for s := uint64(1); s <= 3; s++ {
			w.d.Receive(agentAddr, item(s))
		}
		w.d.Advance(2 * time.Millisecond) // the commit op ran; its completion is held
		if a := w.acks(); len(a) != 0 {
			t.Fatalf("acks before the commit op completed: %v", a)
		}
		w.crash(seed)
		if got := w.hello(); got != "3 ok" {
			t.Fatalf("seed %d: hello after the crash: %s, want 3 ok (the op's fsyncs made them durable)", seed, got)
		}
	}
}
