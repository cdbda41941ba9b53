package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/proto"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

// TestGroupProperties runs replication groups of random size (2 to 16
// members, from the farm inventory) with the order flow across three
// members and bank workloads on the rest, under random faults — members
// partitioned from the master, master and member agents crashing, lossy
// and duplicating LAN — then heals and demands new group points. In every
// case every group point is a consistent cut whose member images are
// exactly their writes before the tag, the cross-VM invariant holds, and no
// guest write waits longer than the phase timeouts allow.
func TestGroupProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64Range(1, 1<<40).Draw(rt, "seed")
		size := rapid.IntRange(2, 16).Draw(rt, "members")
		dup := rapid.SampledFrom([]float64{0, 0.1}).Draw(rt, "lanDuplicates")
		faults := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) fault {
			return fault{
				At:   time.Duration(rapid.IntRange(4, 25).Draw(t, "at")) * time.Minute,
				For:  time.Duration(rapid.IntRange(1, 5).Draw(t, "for")) * time.Minute,
				Kind: rapid.SampledFrom([]string{"member-partition", "agent-crash", "master-crash", "lan-loss"}).Draw(t, "kind"),
				Host: fmt.Sprintf("farm%02d", rapid.IntRange(2, size).Draw(t, "member")),
			}
		}), 0, 3).Draw(rt, "faults")

		var members []string
		for i := 1; i <= size; i++ {
			members = append(members, fmt.Sprintf("farm%02d", i))
		}
		inv, err := Resolve("fixtures/inventory/farm.yaml")
		if err != nil {
			rt.Fatal(err)
		}
		tgt := &Target{Name: "sim", World: "sim", Inventory: inv, VSphere: VSphereTarget{Mode: "vcsim"}, Storage: StorageTarget{Mode: "auto"}}
		if err := tgt.Validate(); err != nil {
			rt.Fatal(err)
		}
		e, err := New(context.Background(), Options{Target: tgt, Seed: seed, Machines: members, MemoryStorage: true, AllocatedMiB: 1})
		if err != nil {
			rt.Fatal(err)
		}
		defer e.Close()
		rest := members
		if size >= 3 {
			if err := e.StartOrders("g", [3]string{members[0], members[1], members[2]}, 20); err != nil {
				rt.Fatal(err)
			}
			rest = members[3:]
		}
		for _, m := range rest {
			spec := workloadSpecFor("bank")
			spec.TxPerSec = 1
			if err := e.StartWorkload(m, spec); err != nil {
				rt.Fatal(err)
			}
		}
		lp, _ := e.Net.Link(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem)
		lp.Jitter, lp.Dup = time.Millisecond, dup
		e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, lp)
		d, err := e.Deploy(DeployOptions{AgentDrain: 10 * time.Second})
		if err != nil {
			rt.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		pol := proto.DefaultPolicy()
		pol.Name, pol.CrashInterval, pol.AppInterval = "group", time.Minute, 7*time.Minute
		d.Request(&proto.CreatePolicy{Policy: pol})
		e.Sim.RunFor(time.Second)
		d.Request(&proto.EnableGroup{Group: "g", Machines: members, Policy: "group"})
		for _, f := range faults {
			switch f.Kind {
			case "member-partition":
				f.Kind = "partition-pair"
			case "master-crash":
				f.Kind, f.Host = "agent-crash", members[0]
			}
			scheduleGroupFault(e, d, f, members[0])
		}
		e.Sim.RunFor(30 * time.Minute)
		healAll(e, d)
		healedAt := e.Sim.Now()
		e.Sim.RunFor(12 * time.Minute)

		repro := fmt.Sprintf("seed=%d members=%d dup=%g faults=%v", seed, size, dup, faults)
		var bad []string
		rs := d.CheckGroupPoints("g")
		rs = append(rs, e.CheckHolds(proto.AppTagTimeouts.Hold())...)
		rs = append(rs, d.CheckPoints(members, PointChecks{SkipImages: true})...)
		points, fresh := 0, false
		for _, r := range rs {
			if r.Verdict != OK {
				bad = append(bad, r.String())
			}
		}
		if gc, err := d.GroupCatalog("g"); err == nil {
			points = len(gc.Points)
			for _, p := range gc.Points {
				fresh = fresh || p.Time.After(healedAt)
			}
		}
		if !fresh {
			bad = append(bad, fmt.Sprintf("liveness: no group point after healing at %s (%d group points in all)", fmtTime(e, healedAt), points))
		}
		if len(bad) > 0 {
			rt.Fatalf("%s\n%s", repro, strings.Join(bad, "\n"))
		}
	})
}

// scheduleGroupFault adds the group faults to scheduleFault's: a member
// partitioned from the master.
func scheduleGroupFault(e *Env, d *Deployment, f fault, master string) {
	if f.Kind != "partition-pair" {
		scheduleFault(e, d, f)
		return
	}
	e.Sim.After(f.At, "fault/"+f.String(), func() {
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", f.String())
		e.Net.Partition(f.Host, master)
	})
	e.Sim.After(f.At+f.For, "heal/"+f.String(), func() {
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", "end "+f.String())
		e.Net.Heal()
	})
}
