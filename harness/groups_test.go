package harness

import (
	"context"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
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
