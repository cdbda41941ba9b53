package agent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// The agent's file I/O runs in ops, and what depends on it waits for the
// op's completion. These tests hold completions (AutoDeliverOps false) and
// look at what the agent did before and after each.

func opsNamed(e *env, name string) []runtime.Op {
	var out []runtime.Op
	for _, op := range e.d.Ops() {
		if op.Name == name {
			out = append(out, op)
		}
	}
	return out
}

func deliver(e *env, name string) {
	e.t.Helper()
	e.d.DeliverOpsWhere(func(d runtime.Done) bool { return d.Name == name })
}

// TestNothingSentBeforeStateSaved: while agent.state is being saved, the
// stream sends nothing; the save's completion lets it go.
func TestNothingSentBeforeStateSaved(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto, e.d.AutoDeliverOps = false, false
	pol := proto.DefaultPolicy()
	pol.Name = "changed" // a resent Protect with a new policy: saved
	e.d.Receive(csAddr, &proto.Protect{Machine: machine, Policy: pol, ProcessServer: string(psAddr), Gen: 1})
	if n := len(opsNamed(e, "save-state")); n != 1 {
		t.Fatalf("%d save-state ops, want 1", n)
	}
	if op := opsNamed(e, "save-state")[0]; op.Disk == nil || op.Disk.Device != runtime.DeviceOS || op.Disk.Syncs != 2 || op.Disk.Bytes == 0 {
		t.Errorf("save-state declares %+v: want the os device, the file's bytes, two fsyncs (file, directory)", op.Disk)
	}
	sentBefore := len(e.d.SentTo(psAddr))
	g.write(0, 0, fill(4096, 7))
	e.d.Advance(e.a.cfg.DrainInterval)
	deliver(e, "drain") // the item is built and queued...
	if got := len(e.d.SentTo(psAddr)) - sentBefore; got != 0 {
		t.Fatalf("%d items sent while the state was being saved", got)
	}
	if e.a.Status().Queued == 0 {
		t.Fatal("no item queued: the test shows nothing")
	}
	deliver(e, "save-state") // ...and goes out once the state is durable
	if got := len(e.d.SentTo(psAddr)) - sentBefore; got == 0 {
		t.Fatal("nothing sent after the save completed")
	}
}

// TestSavesDoNotOverlap: a save asked for while one runs waits for it, and
// saves asked for meanwhile fold into one.
func TestSavesDoNotOverlap(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto, e.d.AutoDeliverOps = false, false
	before := e.a.persist.saves
	for _, name := range []string{"p1", "p2", "p3"} {
		pol := proto.DefaultPolicy()
		pol.Name = name
		e.d.Receive(csAddr, &proto.Protect{Machine: machine, Policy: pol, ProcessServer: string(psAddr), Gen: 1})
	}
	if n := len(opsNamed(e, "save-state")); n != 1 {
		t.Fatalf("%d save-state ops in flight, want 1", n)
	}
	deliver(e, "save-state") // the first, then one more with the newest state
	if n := e.a.persist.saves - before; n != 2 || e.a.persist.busy() {
		t.Errorf("%d saves done, busy=%v; want 2 (the first, then p3's), idle", n, e.a.persist.busy())
	}
	st, ok, err := loadState(e.a.cfg.FS, e.a.cfg.StateDir)
	if err != nil || !ok || st.Policy.Name != "p3" {
		t.Errorf("agent.state holds policy %q (ok=%v err=%v), want p3", st.Policy.Name, ok, err)
	}
}

// TestDrainReadsInAnOp: the change log's fsync and read run in a drain op
// that declares the fsync; the item is built only when it completes.
func TestDrainReadsInAnOp(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto, e.d.AutoDeliverOps = false, false
	g.write(0, 0, fill(4096, 1))
	queued := e.a.Status().Queued
	e.d.Advance(e.a.cfg.DrainInterval)
	ops := opsNamed(e, "drain")
	if len(ops) != 1 {
		t.Fatalf("%d drain ops, want 1", len(ops))
	}
	if ops[0].Disk == nil || ops[0].Disk.Syncs != 1 || ops[0].Disk.Bytes < 4096 {
		t.Errorf("drain op declares %+v: want one fsync of the 4 KiB captured", ops[0].Disk)
	}
	if got := e.a.Status().Queued; got != queued {
		t.Fatalf("an item was queued (%d → %d) before the drain op completed", queued, got)
	}
	deliver(e, "drain")
	if got := e.a.Status().Queued; got != queued+1 {
		t.Errorf("items queued %d after the drain op, want %d", got, queued+1)
	}
}

// TestTrimInAnOp: an acknowledgement trims the log through an op, one at
// a time, the newest target folded in.
func TestTrimInAnOp(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto = false
	for i := range 2 {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
		e.drain()
	}
	sent := e.sentSeqs()
	if len(sent) < 2 {
		t.Fatalf("items sent %v, want two log items", sent)
	}
	e.d.AutoDeliverOps = false
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: sent[len(sent)-2], Status: proto.AckOK})
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: sent[len(sent)-1], Status: proto.AckOK})
	ops := opsNamed(e, "trim")
	if len(ops) != 1 || ops[0].Disk == nil || ops[0].Disk.Syncs != 2 {
		t.Fatalf("trim ops %+v: want one, declaring the trim point's two fsyncs", ops)
	}
	first := e.a.Status().LogTrimSeq
	deliver(e, "trim") // the second trim starts when the first completes
	if got := e.a.Status().LogTrimSeq; got <= first {
		t.Errorf("trim seq %d after the second trim, want past %d", got, first)
	}
	if e.a.trimming || e.a.trimDone != e.a.trimWant {
		t.Errorf("trimming=%v done %d want %d", e.a.trimming, e.a.trimDone, e.a.trimWant)
	}
}

// TestAppBookmarkAfterFreeze: an app-consistent bookmark is inserted only
// when the freeze op completed, and the guest is thawed right after.
func TestAppBookmarkAfterFreeze(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto, e.d.AutoDeliverOps = false, false
	e.d.Advance(proto.DefaultPolicy().AppInterval)
	if n := len(opsNamed(e, "freeze")); n != 1 {
		t.Fatalf("%d freeze ops, want 1", n)
	}
	appInserted := func() int64 {
		for _, b := range e.a.Status().BookmarksInserted {
			if b.Kind == "app" {
				return b.Count
			}
		}
		return 0
	}
	if appInserted() != 0 || g.thaws != 0 {
		t.Fatalf("before the freeze completed: %d app bookmarks, %d thaws", appInserted(), g.thaws)
	}
	deliver(e, "freeze")
	if diff := cmp.Diff([2]int64{1, 1}, [2]int64{appInserted(), int64(g.thaws)}); diff != "" {
		t.Errorf("app bookmarks, thaws after the freeze (-want +got):\n%s", diff)
	}
}

// TestFreezeThawedAfterResync: a freeze whose op completes after a resync
// began (ops of the old epoch are void) is still thawed.
func TestFreezeThawedAfterResync(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto, e.d.AutoDeliverOps = false, false
	e.d.Advance(proto.DefaultPolicy().AppInterval)
	e.d.Receive(csAddr, &proto.Protect{Machine: machine, Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 2})
	deliver(e, "freeze")
	if g.freezes != 1 || g.thaws != 1 {
		t.Errorf("freezes %d, thaws %d: a freeze must always be thawed", g.freezes, g.thaws)
	}
}

// TestTagNumberDurableBeforeBegin: the master sends a round's begin only
// once agent.state holds the round's number, so that a restart can never
// number a round the same again.
func TestTagNumberDurableBeforeBegin(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	gc := testGroup("vm01", "vm02")
	e.receive(csAddr, &gc)
	e.auto, e.d.AutoDeliverOps = false, false
	const peer runtime.Addr = "vm02:20004"
	tags := func() []*proto.Tag {
		var out []*proto.Tag
		for _, m := range e.d.SentTo(peer) {
			if tg, ok := m.(*proto.Tag); ok {
				out = append(out, tg)
			}
		}
		return out
	}
	for i := 0; i < 1000 && len(opsNamed(e, "save-state")) == 0; i++ {
		e.d.Advance(time.Second)
		if len(tags()) > 0 {
			t.Fatalf("a tag was sent before any state save: %+v", tags())
		}
	}
	if e.a.master.round == nil {
		t.Fatal("no round started: the test shows nothing")
	}
	if len(tags()) != 0 {
		t.Fatalf("tag sent before its number was durable: %+v", tags())
	}
	deliver(e, "save-state")
	sent := tags()
	if len(sent) == 0 || sent[0].Phase != proto.PhaseBegin {
		t.Fatalf("after the save: tags %+v, want a begin", sent)
	}
	st, _, err := loadState(e.a.cfg.FS, e.a.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := proto.ParseTagID(sent[0].TagID); st.LastTagN != id.N {
		t.Errorf("agent.state has LastTagN %d, the begin numbers %d", st.LastTagN, id.N)
	}
}
