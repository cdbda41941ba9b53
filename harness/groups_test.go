package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

func TestCausalityViolation(t *testing.T) {
	var c causality
	c.add("web", 5, "db", 10) // web's 5th write needs db's 10th
	c.add("rep", 2, "web", 5)
	tests := []struct {
		cut  map[string]uint64
		want bool
	}{
		{map[string]uint64{"db": 10, "web": 5, "rep": 2}, false},
		{map[string]uint64{"db": 9, "web": 4, "rep": 1}, false}, // the effects are out too
		{map[string]uint64{"db": 9, "web": 5, "rep": 1}, true},  // web has it, db does not
		{map[string]uint64{"db": 10, "web": 4, "rep": 2}, true}, // the report is ahead of the web
		{map[string]uint64{"web": 5}, false},                    // db is not in the cut
	}
	for _, tt := range tests {
		if got := c.violation(tt.cut) != ""; got != tt.want {
			t.Errorf("cut %v: violation %v, want %v", tt.cut, got, tt.want)
		}
	}
}

// TestCutCheckCatchesANoOpPrepare runs a replication group with the
// order flow twice: with the tag protocol's prepare phase holding writes,
// every group point is a consistent cut; with the guests writing through
// the hold (a prepare that holds nothing), writes acknowledged between two
// members' tags make cuts where the web log has orders the database lacks —
// and the consistent-cut check says so.
func TestCutCheckCatchesANoOpPrepare(t *testing.T) {
	run := func(t *testing.T, ignoreHold bool) (bad []Result, points int) {
		e, err := New(context.Background(), Options{Seed: 8, Machines: []string{"ord-db", "ord-web", "ord-report"}, MemoryStorage: true, AllocatedMiB: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		lp, _ := e.Net.Link(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem)
		lp.Jitter = 2 * time.Millisecond
		e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, lp)
		if err := e.StartOrders("orders", [3]string{"ord-db", "ord-web", "ord-report"}, 100); err != nil {
			t.Fatal(err)
		}
		d, err := e.Deploy(DeployOptions{IgnoreHold: ignoreHold, AgentDrain: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range e.VMs {
			if vm.Name == "ord-report" {
				e.VC.PowerOn(e.ctx, vm.Ref)
			}
		}
		e.Sim.RunFor(time.Second)
		pol := proto.DefaultPolicy()
		pol.Name, pol.CrashInterval, pol.AppInterval = "fast", time.Minute, 10*time.Minute
		d.Request(&proto.CreatePolicy{Policy: pol})
		e.Sim.RunFor(time.Second)
		d.Request(&proto.EnableGroup{Group: "orders", Machines: []string{"ord-db", "ord-web", "ord-report"}, Policy: "fast"})
		e.Sim.RunFor(25 * time.Minute)
		// The member-reported round holds, both ways: within two round
		// trips of this jittery LAN (2 × 2 × (0.2 + 2) ms) plus 1 ms, and
		// not within an impossible 10 µs.
		if !ignoreHold {
			if rs := d.CheckRoundHolds(10 * time.Millisecond); len(rs) != 1 || rs[0].Verdict != OK {
				t.Errorf("round holds within 10 ms: %v", rs)
			}
			if rs := d.CheckRoundHolds(10 * time.Microsecond); len(rs) != 1 || rs[0].Verdict != Illegal {
				t.Errorf("round holds over 10 µs passed: %v", rs)
			}
		}
		for _, r := range d.CheckGroupPoints("orders") {
			if r.Check == "cut" {
				points++
			}
			if r.Verdict != OK {
				bad = append(bad, r)
			}
		}
		return bad, points
	}
	t.Run("prepare holds writes", func(t *testing.T) {
		bad, points := run(t, false)
		if points < 15 || len(bad) > 0 {
			t.Fatalf("%d group points, failures: %v", points, bad)
		}
	})
	t.Run("prepare holds nothing", func(t *testing.T) {
		bad, points := run(t, true)
		if points < 15 {
			t.Fatalf("only %d group points", points)
		}
		if len(bad) == 0 {
			t.Fatal("no group point was flagged, although writes went through every hold")
		}
		t.Logf("%d of %d group points flagged; first: %s", len(bad), points, bad[0])
	})
}

// holdingGate holds every write while closed.
type holdingGate struct {
	closed  bool
	release func()
}

func (g *holdingGate) Capture(int, int64, []byte) uint64 { return 0 }
func (g *holdingGate) Admit() bool                       { return !g.closed }
func (g *holdingGate) SetReleaseHook(f func())           { g.release = f }

// TestHoldCheck shows the guest-side hold check both ways: a write held
// 2 ms passes a 600 ms limit and fails a 1 ms one, with evidence.
func TestHoldCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d-flat.vmdk")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Duration(0)
	m, err := disk.Open("vm", []string{p}, func() time.Duration { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g := &holdingGate{closed: true}
	m.SetFilter(g)
	m.Submit(0, 0, make([]byte, 512), nil)
	now += 2 * time.Millisecond
	g.closed = false
	g.release()
	e := &Env{names: []string{"vm"}, Machines: map[string]*disk.Machine{"vm": m}}
	if r := e.CheckHolds(600 * time.Millisecond); r[0].Verdict != OK {
		t.Fatalf("2 ms hold under a 600 ms limit: %s", r[0])
	}
	if r := e.CheckHolds(time.Millisecond); r[0].Verdict != Illegal || r[0].Evidence == "" {
		t.Fatalf("2 ms hold over a 1 ms limit passed: %s", r[0])
	}
}
