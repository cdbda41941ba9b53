package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// dropFreeTolerance is how much more a reprotect whose VPN dropped may
// send than the same reprotect without the drops (issue 10: within 10 %).
const dropFreeTolerance = 0.10

// withinDropFree judges the VPN bytes of a reprotect that lived through
// VPN drops against the drop-free run of the same seed: a sync that
// resumes where it was sends about the same; one that starts again from
// zero sends about twice as much.
func withinDropFree(withDrops, dropFree int64) error {
	if dropFree <= 0 {
		return fmt.Errorf("the drop-free run sent nothing over the VPN: nothing to compare with")
	}
	limit := int64(float64(dropFree) * (1 + dropFreeTolerance))
	if withDrops > limit {
		return fmt.Errorf("%s over the VPN with the drops, %s without (×%.3f): over the %.0f%% allowance (%s)",
			fmtBytes(withDrops), fmtBytes(dropFree), float64(withDrops)/float64(dropFree), dropFreeTolerance*100, fmtBytes(limit))
	}
	return nil
}

func TestWithinDropFree(t *testing.T) {
	cases := []struct {
		drops, free int64
		ok          bool
	}{
		{100, 100, true},
		{110, 100, true},
		{111, 100, false},
		{200, 100, false}, // a sync that started again from zero
		{0, 0, false},     // nothing to judge
	}
	for _, c := range cases {
		if err := withinDropFree(c.drops, c.free); (err == nil) != c.ok {
			t.Errorf("withinDropFree(%d, %d) = %v, want ok=%v", c.drops, c.free, err, c.ok)
		}
	}
}

// failbackDropScript is one machine failed over, changing data in Azure,
// and reprotected over a slow VPN (so that the sync takes a minute);
// drops, when given, are the steps between the reprotect and the wait.
func failbackDropScript(drops string) string {
	return `world seed=47 machines=(db01) workload=bank
----

deploy
----

policy name=prod crash=5m app=20m
----

protect vms=(db01) policy=prod
----

wait state=protected timeout=1h
----

run for=5m
----

azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production
----

target vm=db01 subnet=app
----

failover vms=(db01) point=latest-processed shutdown
----

commit vms=(db01)
----

azure-workload vms=(db01) churn=16384
----

run for=10m
----

azure-workload vms=(db01) stop
----

vpn state=up
----

failback-infra
----

run for=1m
----

fault clog path=vpn from=azure to=onprem factor=50 for=1h
----

reprotect vms=(db01) wait=0
----

` + drops + `wait state=protected vms=(db01) timeout=1h
----
`
}

// twoDrops: the VPN drops twice for 20 s while the sync runs.
const twoDrops = `run for=10s
----

vpn state=down
----

run for=20s
----

vpn state=up
----

run for=10s
----

vpn state=down
----

run for=20s
----

vpn state=up
----

`

// runDropScript runs a failback drop script and returns db01's reprotect:
// the VPN bytes of its sync (everything the tunnel carried from Azure:
// db01 is the only machine) and the bound the vpn-bytes check puts on it.
// Every `vpn state=down` must come while the sync still runs.
func runDropScript(t *testing.T, script string, blind bool) (tunnel, relay int64) {
	t.Helper()
	s, err := NewScript("drops.scn", []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Ctx: context.Background()}
	defer r.Close()
	for _, d := range s.Directives {
		if d.Cmd == "vpn" && len(d.Args) > 0 && d.Args[0].String() == "state=down" {
			ms, _ := r.Env.Deployment.MachineStatus("db01")
			if string(ms.State) == "protected" {
				t.Fatalf("%s: the sync was over before the drop", d.Pos)
			}
		}
		out := r.Step(d)
		if hasError(out) {
			t.Fatalf("%s %s: %s", d.Pos, d.Cmd, out)
		}
		if d.Cmd == "deploy" {
			r.Env.Deployment.opts.BlindRetransmit = blind
		}
	}
	if err := r.Verdict(s); err != nil {
		t.Fatal(err)
	}
	fb := r.Env.Deployment.fb
	fb.observe()
	rec := fb.reprotects["db01"]
	if rec == nil || !rec.synced {
		t.Fatalf("no completed reprotect of db01: %+v", rec)
	}
	return rec.vpnAll - rec.vpnAllStart, rec.vpnSynced - rec.vpnStart
}

// TestReprotectResumesAfterVPNDrops: a reprotect whose VPN drops twice
// while its sync runs sends within 10 % of what the same reprotect sends
// without the drops (same seed), by the tunnel's own count — it resumes
// where it was. The negative control is the agent that resends every
// unacknowledged item blindly after the drop: it sends the in-flight
// window again and the comparison fails.
func TestReprotectResumesAfterVPNDrops(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three worlds")
	}
	free, _ := runDropScript(t, failbackDropScript(""), false)
	drops, relay := runDropScript(t, failbackDropScript(twoDrops), false)
	t.Logf("VPN bytes: drop-free %s, two drops %s (relay %s)", fmtBytes(free), fmtBytes(drops), fmtBytes(relay))
	if err := withinDropFree(drops, free); err != nil {
		t.Error(err)
	}
	blind, _ := runDropScript(t, failbackDropScript(twoDrops), true)
	t.Logf("VPN bytes, blind retransmission: %s", fmtBytes(blind))
	if err := withinDropFree(blind, free); err == nil {
		t.Errorf("negative control: a blind resend after the drops sent %s, %s without drops: the comparison should fail", fmtBytes(blind), fmtBytes(free))
	} else if !strings.Contains(err.Error(), "allowance") {
		t.Errorf("negative control: %v", err)
	}
}
