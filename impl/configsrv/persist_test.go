package configsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/wire"
)

// flaky is a store whose next loads or applies fail.
type flaky struct {
	csstore.Store
	failLoad, failApply int
	applies             int
}

var errDisk = errors.New("disk on fire")

func (f *flaky) Load(ctx context.Context) ([]csstore.Record, error) {
	if f.failLoad > 0 {
		f.failLoad--
		return nil, errDisk
	}
	return f.Store.Load(ctx)
}

func (f *flaky) Apply(ctx context.Context, b csstore.Batch) error {
	f.applies++
	if f.failApply > 0 {
		f.failApply--
		return errDisk
	}
	return f.Store.Apply(ctx, b)
}

func openDB(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// durable is the part of a Status a restart must keep: everything but
// what comes again from outside (discovery, process servers' reports).
func durable(st Status) Status {
	st.LastDiscovery, st.DiscoveredVMs, st.DiscoveryError, st.ProcessServers = time.Time{}, 0, "", nil
	return st
}

// busyWorld takes a server through enough to fill every kind of record:
// a policy, a protected machine with points, a refused registration (an
// alert), a group enabled (web01 and a physical server), and a failover.
func busyWorld(t *testing.T, r *rig) {
	t.Helper()
	r.mustOK(&proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: 30 * time.Minute, Retention: 2 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour, Compression: "zstd"}})
	r.protect("db01")
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "db01-c-1", Kind: proto.Crash, PointTime: r.d.Now()})
	wrong, err := vault.Derive(vaultID, "not the passphrase")
	if err != nil {
		t.Fatal(err)
	}
	r.register("phys01", wrong, true)
	r.register("phys01", r.keys, true)
	r.mustOK(&proto.EnableGroup{Group: "orders", Machines: []string{"web01", "phys01"}, Policy: "gold"})
	r.register("web01", r.keys, false)
	r.d.Receive(agentAddr("web01"), &proto.TagRound{Group: "orders", TagID: "t1", Kind: proto.Crash, Outcome: proto.RoundCommitted,
		Holds: []proto.MemberHold{{Machine: "phys01", Held: time.Millisecond}, {Machine: "web01", Held: 2 * time.Millisecond}},
		Phases: []proto.RoundPhase{{Name: proto.PhaseBegin, Start: r.d.Now(), End: r.d.Now().Add(time.Millisecond), OK: true},
			{Name: proto.PhasePrepare, Start: r.d.Now().Add(time.Millisecond), End: r.d.Now().Add(3 * time.Millisecond), OK: true}}})
	r.d.Advance(3 * time.Minute)
	r.d.Receive(portal, &proto.FailedOver{Req: "fo-1", Machine: "db01", AzureVM: "db01-test"})
	r.d.Sent()
}

// TestRestartKeepsState: a server restarted on its store shows the same
// machines, policies, groups, jobs and alerts at once, before any agent
// registers again; without a store (the control) it does not.
func TestRestartKeepsState(t *testing.T) {
	for _, withStore := range []bool{true, false} {
		name := "memory-only"
		if withStore {
			name = "store"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cs.db")
			var st *sqlite.Store
			mod := func(c *Config) {
				if withStore {
					st = openDB(t, path)
					c.Store = st
				}
			}
			r := newRig(t, mod)
			busyWorld(t, r)
			before := durable(r.s.Status())
			if len(before.Jobs) < 3 || len(before.Alerts) == 0 || len(before.Groups) != 1 {
				t.Fatalf("the world is not busy enough to judge: %d jobs, %d alerts, %d groups", len(before.Jobs), len(before.Alerts), len(before.Groups))
			}
			// Crash: the actor goes, the database is closed and reopened.
			now := r.d.Now()
			if st != nil {
				st.Close()
			}
			cfg := r.s.cfg
			mod(&cfg)
			s2 := New(cfg)
			runtimetest.NewAt(t, csAddr, s2, now.Add(time.Minute))
			after := durable(s2.Status())
			d := cmp.Diff(before, after, cmpopts.EquateEmpty())
			if withStore && d != "" {
				t.Fatalf("status after the restart (-before +after):\n%s", d)
			}
			if !withStore && d == "" {
				t.Fatal("without a store the restart kept everything: the comparison cannot fail")
			}
		})
	}
}

// restart is r's server crashed and started again on store, dur later.
func restart(t *testing.T, r *rig, store csstore.Store, dur time.Duration) *rig {
	t.Helper()
	cfg := r.s.cfg
	cfg.Store = store
	r2 := &rig{t: t, s: New(cfg), vc: r.vc, keys: r.keys, held: map[string][]wire.Msg{}}
	r2.d = runtimetest.NewAt(t, csAddr, r2.s, r.d.Now().Add(dur))
	return r2
}

// TestRestartContinues: after a restart on the store, replication goes
// on: a new point counts, a new job gets the next id, and an agent silent
// since before the crash is given HeartbeatLost from the restart.
func TestRestartContinues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	st := openDB(t, path)
	r := newRig(t, func(c *Config) { c.Store = st })
	r.protect("db01")
	st.Close()
	r = restart(t, r, openDB(t, path), 20*time.Minute) // down for longer than HeartbeatLost
	if m := r.machine("db01"); m.State != StateProtected || !m.Registered || m.Gen != 1 {
		t.Fatalf("db01 after the restart: %s registered=%v gen %d", m.State, m.Registered, m.Gen)
	}
	r.d.Advance(CheckEvery)
	if a := r.alerts(); len(a) != 0 {
		t.Fatalf("alerts a minute after the restart: %v (the agent has HeartbeatLost from the restart)", a)
	}
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "db01-c-9", Kind: proto.Crash, PointTime: r.d.Now()})
	if m := r.machine("db01"); m.Points != 1 {
		t.Fatalf("points after the restart: %d", m.Points)
	}
	r.mustOK(&proto.EnableReplication{Machine: "web01"})
	jobs := r.s.Status().Jobs
	if got := jobs[len(jobs)-1]; got.ID != 2 || got.Machine != "web01" {
		t.Fatalf("the job after the restart: %+v, want id 2 for web01", got)
	}
	r.d.Advance(15 * time.Minute)
	diff(t, "alerts once the agent stayed silent", []string{AlertHeartbeatLost + "/db01 active"}, r.alerts())
}

// TestRepliesWaitForCommit: a Reply (and the Protect of a new generation)
// goes out only once the change is committed; a failed write holds them
// and is retried.
func TestRepliesWaitForCommit(t *testing.T) {
	f := &flaky{Store: openDB(t, filepath.Join(t.TempDir(), "cs.db"))}
	r := newRig(t, func(c *Config) { c.Store = f })
	r.d.AutoDeliverOps = false
	f.failApply = 1 // ops run when started: the first write fails
	r.d.Receive(portal, &proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: time.Hour, Retention: time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour}})
	if got := r.d.SentTo(portal); len(got) != 0 {
		t.Fatalf("replied before the commit: %v", got)
	}
	r.d.DeliverOps()
	if got := r.d.SentTo(portal); len(got) != 0 {
		t.Fatalf("replied after a failed commit: %v", got)
	}
	r.d.AutoDeliverOps = true
	r.d.Advance(storeRetry)
	got := r.d.SentTo(portal)
	if len(got) != 1 || !got[0].(*proto.Reply).OK {
		t.Fatalf("after the retried commit: %v", got)
	}
	if f.applies < 2 {
		t.Fatalf("%d applies: the write was not retried", f.applies)
	}
}

// TestLoadFirst: requests that come while the store loads wait for it
// (here: a load that fails once and is retried), then are answered in
// order; a store whose records do not decode is not served nor
// overwritten.
func TestLoadFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	f := &flaky{Store: openDB(t, path), failLoad: 1}
	r := newRig(t, func(c *Config) { c.Store = f })
	r.d.Receive(portal, &proto.EnableReplication{Machine: "nosuch"})
	r.d.Receive(portal, &proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: time.Hour, Retention: time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour}})
	if got := r.d.SentTo(portal); len(got) != 0 {
		t.Fatalf("answered before the load: %v", got)
	}
	r.d.Advance(storeRetry)
	got := r.d.SentTo(portal)
	if len(got) != 2 || got[0].(*proto.Reply).OK || !got[1].(*proto.Reply).OK {
		t.Fatalf("after the load: %v, want the refusal then the policy", got)
	}

	bad := openDB(t, filepath.Join(t.TempDir(), "bad.db"))
	junk := csstore.Record{Kind: csstore.KindMachine, Key: "db01", Data: []byte("{not json")}
	if err := bad.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{junk}}); err != nil {
		t.Fatal(err)
	}
	fb := &flaky{Store: bad}
	r = newRig(t, func(c *Config) { c.Store = fb })
	r.d.Receive(portal, &proto.EnableReplication{Machine: "db01"})
	r.d.Advance(time.Hour)
	if got := r.d.SentTo(portal); len(got) != 0 || fb.applies != 0 {
		t.Fatalf("served (%v) or wrote (%d) on an unreadable store", got, fb.applies)
	}
	recs, err := bad.Load(context.Background())
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "{not json" {
		t.Fatalf("the unreadable record after an hour: %v, %v", recs, err)
	}
	if err := r.s.restore(recs); !errors.Is(err, ErrStoreRecord) || !strings.Contains(err.Error(), "machine db01") {
		t.Fatalf("restore = %v, want ErrStoreRecord naming the record", err)
	}
}

// TestRestartResumesInstall: a push install in flight when the server
// crashed is started again by the restarted server (its Done died with
// the crash), and the enablement completes.
func TestRestartResumesInstall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	st := openDB(t, path)
	r := newRig(t, func(c *Config) { c.Store = st })
	r.d.AutoDeliverOps = false
	r.d.Receive(portal, &proto.EnableReplication{Machine: "db01"})
	// The enablement's write commits; the install's Done never comes.
	r.d.DeliverOpsWhere(func(d runtime.Done) bool { return strings.HasPrefix(d.Name, "store") })
	if got := r.d.SentTo(portal); len(got) != 1 {
		t.Fatalf("replies before the crash: %v", got)
	}
	if n := len(r.vc.calls()); n != 1 {
		t.Fatalf("%d installs before the crash", n)
	}
	st.Close()
	r = restart(t, r, openDB(t, path), time.Minute)
	if n := len(r.vc.calls()); n != 2 {
		t.Fatalf("%d installs after the restart, want the interrupted one started again", n)
	}
	if rr := r.register("db01", r.keys, false); !rr.OK {
		t.Fatal(rr.Reason)
	}
	if m := r.machine("db01"); m.State != StateInitialSync || m.Gen != 1 {
		t.Fatalf("db01 after its agent registered: %s gen %d", m.State, m.Gen)
	}
	jobs := r.s.Status().Jobs
	if len(jobs) != 1 || jobs[0].Status != JobRunning {
		t.Fatalf("jobs: %+v, want the one enablement, running", jobs)
	}
}

// TestHeartbeatFiguresKeptPerCheck: heartbeat figures are volatile — a
// heartbeat alone writes nothing — and the periodic check writes them.
func TestHeartbeatFiguresKeptPerCheck(t *testing.T) {
	for _, check := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "cs.db")
		f := &flaky{Store: openDB(t, path)}
		r := newRig(t, func(c *Config) { c.Store = f })
		r.protect("db01")
		r.d.Advance(CheckEvery) // a first check writes what protect left volatile
		before := f.applies
		r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseReplicating, Mode: "data", SentBytes: 4242, Gen: 1})
		if f.applies != before {
			t.Fatalf("a heartbeat wrote %d times", f.applies-before)
		}
		if check {
			r.d.Advance(CheckEvery)
		}
		f.Store.Close()
		r2 := restart(t, r, openDB(t, path), time.Second)
		got := r2.machine("db01").SentBytes
		if want := map[bool]int64{false: 0, true: 4242}[check]; got != want {
			t.Errorf("check=%v: SentBytes after the restart %d, want %d", check, got, want)
		}
	}
}

// TestHeldBounded: behind a write that keeps failing, messages are held
// in order up to maxHeld; the oldest past it are dropped, and the rest go
// out, in order, once a write succeeds.
func TestHeldBounded(t *testing.T) {
	f := &flaky{Store: openDB(t, filepath.Join(t.TempDir(), "cs.db"))}
	r := newRig(t, func(c *Config) { c.Store = f })
	f.failApply = 1 << 30
	r.d.Receive(portal, &proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: time.Hour, Retention: time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour}})
	for i := range maxHeld + 10 {
		r.d.Receive(portal, &proto.EnableReplication{Machine: fmt.Sprintf("nosuch%05d", i)})
	}
	if got := r.d.SentTo(portal); len(got) != 0 {
		t.Fatalf("%d replies while the store fails", len(got))
	}
	f.failApply = 0
	r.d.Advance(storeRetry)
	got := r.d.SentTo(portal)
	if len(got) != maxHeld {
		t.Fatalf("%d replies once the store works, want %d", len(got), maxHeld)
	}
	// The policy's reply and the first ten refusals were the oldest.
	first, last := got[0].(*proto.Reply), got[len(got)-1].(*proto.Reply)
	if first.Subject != "nosuch00010" || last.Subject != fmt.Sprintf("nosuch%05d", maxHeld+9) {
		t.Fatalf("replies from %s to %s", first.Subject, last.Subject)
	}
	if pols := r.s.Status().Policies; !slices.ContainsFunc(pols, func(p proto.Policy) bool { return p.Name == "gold" }) {
		t.Fatalf("the state lost the policy whose reply was dropped: %v", pols)
	}
}

// TestRestartDuringReprotect: a reprotect job waiting for the master
// target's Reply survives a restart (its AttachTarget is resent and the
// Reply taken); one whose VM preparation was in flight fails with the
// reason, leaving the machine failed over for the orchestrator to retry.
func TestRestartDuringReprotect(t *testing.T) {
	t.Run("awaiting the master target", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cs.db")
		st := openDB(t, path)
		r := failedOverRigWith(t, func(c *Config) { c.Store = st })
		if rep := r.request(toOnPrem("db01")); !rep.OK {
			t.Fatalf("reprotect: %s", rep.Reason)
		}
		attach := r.d.SentTo(mtAddr)
		if len(attach) != 1 {
			t.Fatalf("to the master target: %v", attach)
		}
		st.Close()
		r = restart(t, r, openDB(t, path), time.Second)
		r.d.Advance(CheckEvery)
		diff(t, "resent after the restart", attach, r.d.SentTo(mtAddr))
		r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: "db01", OK: true, Req: "cs-job-3"})
		if m := r.machine("db01"); m.State != StateInitialSync || m.Direction != DirectionFailback || m.Gen != 2 {
			t.Fatalf("after the master target's reply: %s %s gen %d", m.State, m.Direction, m.Gen)
		}
	})
	t.Run("preparing the VM", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cs.db")
		st := openDB(t, path)
		r := failedOverRigWith(t, func(c *Config) { c.Store = st })
		r.d.AutoDeliverOps = false
		r.d.Receive(portal, toOnPrem("db01"))
		r.d.DeliverOpsWhere(func(d runtime.Done) bool { return !strings.HasPrefix(d.Name, "reprotect power off") })
		if got := r.d.SentTo(portal); len(got) != 1 || !got[0].(*proto.Reply).OK {
			t.Fatalf("reprotect reply: %v", got)
		}
		st.Close()
		r = restart(t, r, openDB(t, path), time.Second)
		jobs := r.s.Status().Jobs
		j := jobs[len(jobs)-1]
		if j.Kind != JobReprotect || j.Status != JobFailed || !strings.Contains(j.Reason, "restarted while it prepared the VM") {
			t.Fatalf("the interrupted reprotect job: %+v", j)
		}
		if m := r.machine("db01"); m.State != StateFailedOver {
			t.Fatalf("db01 is %s, want failed-over", m.State)
		}
		r.psReport() // process servers' health is not kept: it comes again every 30 s
		if rep := r.request(toOnPrem("db01")); !rep.OK {
			t.Fatalf("a new reprotect after the restart: %s", rep.Reason)
		}
	})
}

// TestUnchangedSkipsOnlyUnchanged: after every step of a busy world, the
// records the write path leaves unencoded (equal to their committed
// snapshot) are exactly ones whose durable bytes equal the committed
// ones, so no durable change is missed; and the fast path is used (a
// snapshot for every machine, policy and group committed), so the check
// has something to judge.
func TestUnchangedSkipsOnlyUnchanged(t *testing.T) {
	st := openDB(t, filepath.Join(t.TempDir(), "cs.db"))
	r := newRig(t, func(c *Config) { c.Store = st })
	judge := func(step string) {
		t.Helper()
		p := r.s.persist
		kept := map[csstore.Ref]bool{}
		for _, e := range r.s.records(p.final, p.unchanged) {
			kept[e.ref] = true
		}
		for _, e := range r.s.records(p.final, nil) {
			if !bytes.Equal(p.committed[e.ref], e.durable) && !kept[e.ref] {
				t.Errorf("%s: %v changed (durable %s, committed %s) but the fast path skipped it", step, e.ref, e.durable, p.committed[e.ref])
			}
		}
	}
	judge("start")
	r.mustOK(&proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: 30 * time.Minute, Retention: 2 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour, Compression: "zstd"}})
	judge("policy")
	r.protect("db01")
	judge("protect")
	for i := 1; i <= 3; i++ {
		r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: fmt.Sprintf("db01-c-%d", i), Kind: proto.Crash, PointTime: r.d.Now()})
		judge(fmt.Sprintf("point %d", i))
		r.d.Advance(time.Minute)
		judge(fmt.Sprintf("minute %d", i))
	}
	r.register("phys01", r.keys, true)
	judge("physical")
	r.mustOK(&proto.EnableGroup{Group: "orders", Machines: []string{"web01", "phys01"}, Policy: "gold"})
	judge("group")
	r.register("web01", r.keys, false)
	judge("register")
	// Tamper with a live record without an event: the fast path must see
	// it (a snapshot shares nothing with the live state).
	m := r.s.machines["db01"]
	m.points["db01-c-planted"] = r.d.Now()
	p := r.s.persist
	found := false
	for _, e := range r.s.records(p.final, p.unchanged) {
		found = found || e.ref == (csstore.Ref{Kind: csstore.KindMachine, Key: "db01"})
	}
	if !found {
		t.Fatal("a point added to db01 in place was not seen as a change")
	}
	delete(m.points, "db01-c-planted")
	engaged := 0
	for ref, snap := range p.snaps {
		if snap == nil && ref.Kind != csstore.KindJob && ref.Kind != csstore.KindAlert {
			t.Errorf("%v has no snapshot: every event encodes it", ref)
		}
		if snap != nil {
			engaged++
		}
	}
	if engaged < 3 {
		t.Fatalf("only %d snapshots: the fast path is not exercised", engaged)
	}
}
