package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestFailbackProperties: whatever the guest changed in Azure, however
// the VPN dropped during the reprotect, to the original location or an
// alternate one (the original VM deleted), the failback brings back the
// Azure disks at the failback point byte for byte, the application
// recovers on them, the VPN carried it all, and the reprotect's sync sent
// only the changed blocks (round-trip, path, vpn-bytes).
func TestFailbackProperties(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole worlds")
	}
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64Range(1, 1<<40).Draw(rt, "seed")
		churn := rapid.SampledFrom([]int{1024, 4096, 16384}).Draw(rt, "churnBytesPerSec")
		inAzure := rapid.IntRange(5, 30).Draw(rt, "minutesInAzure")
		alternate := rapid.Bool().Draw(rt, "alternate")
		drops := rapid.IntRange(0, 2).Draw(rt, "vpnDrops")
		script := failbackPropScript(seed, churn, inAzure, alternate, drops)
		s, err := NewScript("failback-prop.scn", []byte(script))
		if err != nil {
			rt.Fatal(err)
		}
		r := &Runner{Ctx: context.Background()}
		defer r.Close()
		for _, d := range s.Directives {
			if out := r.Step(d); hasError(out) {
				rt.Fatalf("%s %s: %s\nscript:\n%s", d.Pos, d.Cmd, out, script)
			}
		}
		if err := r.Verdict(s); err != nil {
			rt.Fatalf("%v\nscript:\n%s", err, script)
		}
		// Judged, not vacuous: the three checks gave verdicts on db01.
		trace := strings.Join(r.Env.Trace.Lines(0), "\n")
		for _, want := range []string{"check round-trip db01@", "check path failback ok", "check vpn-bytes db01 ok"} {
			if !strings.Contains(trace, want) {
				rt.Fatalf("no %q in the trace", want)
			}
		}
	})
}

// failbackPropScript is one machine failed over, changing data in Azure,
// reprotected over a slow VPN that drops `drops` times mid-sync, failed
// back and judged.
func failbackPropScript(seed uint64, churn, minutesInAzure int, alternate bool, drops int) string {
	var b strings.Builder
	step := func(cmd string) { fmt.Fprintf(&b, "%s\n----\n\n", cmd) }
	step(fmt.Sprintf("world seed=%d machines=(db01) workload=bank", seed))
	step("deploy")
	step("policy name=prod crash=5m app=20m")
	step("protect vms=(db01) policy=prod")
	step("wait state=protected timeout=1h")
	step("run for=7m")
	step("azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production")
	step("target vm=db01 subnet=app")
	step("failover vms=(db01) point=latest-processed shutdown")
	step("commit vms=(db01)")
	step(fmt.Sprintf("azure-workload vms=(db01) churn=%d", churn))
	step(fmt.Sprintf("run for=%dm", minutesInAzure))
	step("azure-workload vms=(db01) stop")
	step("vpn state=up")
	step("failback-infra")
	step("run for=1m")
	step("fault clog path=vpn from=azure to=onprem factor=50 for=1h")
	loc := "original"
	if alternate {
		step("delete-vm vm=db01")
		loc = "alternate"
	}
	step("reprotect vms=(db01) location=" + loc + " wait=0")
	for range drops {
		step("run for=5s")
		step("vpn state=down")
		step("run for=20s")
		step("vpn state=up")
	}
	step("wait state=protected vms=(db01) timeout=2h")
	// The guest goes on writing until the failback shuts its VM down: the
	// master target has applied writes past the newest point, which the
	// failback must undo.
	step(fmt.Sprintf("azure-workload vms=(db01) churn=%d", churn))
	step("run for=8m")
	step("failback vms=(db01) point=latest")
	step("check what=(round-trip,vpn-bytes,path) vms=(db01)")
	return b.String()
}
