package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// reprotectWorld is a world for the reprotect benchmarks: db01 protected,
// failed over, changing data in Azure for an hour (random writes to
// [churnAt, +churnLen) of its disk at churn bytes a second), then
// reprotected over the VPN to the original location. inventory and extra
// world arguments pick the disk.
func reprotectWorld(inventory, worldArgs string, churn, churnAt, churnLen int64) string {
	return fmt.Sprintf(`world seed=11 inventory=%s machines=(db01) workload=bank %s
----

deploy
----

protect vms=(db01)
----

wait state=protected timeout=6h
----

run for=6m
----

azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production
----

target vm=db01 subnet=app
----

failover vms=(db01) point=latest-processed shutdown
----

commit vms=(db01)
----

azure-workload vms=(db01) churn=%d at=%d len=%d
----

run for=1h
----

azure-workload vms=(db01) stop
----

vpn state=up
----

failback-infra
----

run for=1m
----

reprotect vms=(db01)
----
`, inventory, worldArgs, churn, churnAt, churnLen)
}

// benchReprotect runs script b.N times and reports, from the last run,
// what crossed the VPN against the blocks changed in Azure since the
// failover, and the simulated time the reprotect's sync took; ns/op is
// the wall time of the whole world (build, initial sync, failover, an
// hour in Azure, the reprotect).
func benchReprotect(b *testing.B, script string) {
	var vpn, changed, disk int64
	var simSync time.Duration
	for b.Loop() {
		s, err := NewScript("bench-reprotect.scn", []byte(script))
		if err != nil {
			b.Fatal(err)
		}
		r := &Runner{Ctx: context.Background()}
		var start time.Time
		for _, d := range s.Directives {
			if d.Cmd == "reprotect" {
				start = r.Env.Sim.Now()
			}
			if out := r.Step(d); strings.Contains(out, "error:") {
				r.Close()
				b.Fatalf("%s %s: %s", d.Pos, d.Cmd, out)
			}
		}
		fb := r.Env.Deployment.fb
		fb.observe()
		rec := fb.reprotects["db01"]
		if rec == nil || !rec.synced {
			r.Close()
			b.Fatal("the reprotect did not complete")
		}
		vpn, changed, disk = rec.vpnBytes(), rec.changed, rec.diskBytes
		simSync = r.Env.Sim.Now().Sub(start)
		r.Close()
	}
	b.ReportMetric(float64(vpn)/(1<<20), "MiB-over-VPN")
	b.ReportMetric(float64(changed)/(1<<20), "MiB-changed")
	b.ReportMetric(100*float64(changed)/float64(disk), "%-of-disk-changed")
	b.ReportMetric(float64(vpn)/float64(changed), "VPN/changed")
	b.ReportMetric(simSync.Seconds(), "sim-s-reprotect")
}

// BenchmarkReprotect1Percent is a reprotect to the original location of a
// 64 MiB disk (the lab's db01) of which about 1 % changed in Azure.
func BenchmarkReprotect1Percent(b *testing.B) {
	benchReprotect(b, reprotectWorld("lab", "", 100, azureChurnStart, azureChurnLen))
}

// BenchmarkReprotect64GiB1Percent is issue 10's benchmark: a reprotect to
// the original location of a 64 GiB disk of which about 1 % changed in
// Azure — an hour of random writes over 1 GiB of it, which touch about
// 63 % of that GiB's blocks. The disk is sparse, as a real one mostly is:
// 32 MiB of the guest's data, the bank's 32 MiB above it, then what Azure
// wrote.
// Both sides still compare the whole 64 GiB: the master target sums every
// block of its disk (ranged reads, zero blocks summed by the constant),
// the agent in Azure reads its disk where it holds data. Set
// V2A_BENCH_SKIP_64GIB=1 to leave it out of a quick `go test -bench .`.
func BenchmarkReprotect64GiB1Percent(b *testing.B) {
	if os.Getenv("V2A_BENCH_SKIP_64GIB") != "" {
		b.Skip("V2A_BENCH_SKIP_64GIB is set")
	}
	const gib = 1 << 30
	inv := bigDiskInventory(b, 64<<10)
	benchReprotect(b, reprotectWorld(inv, "allocated=32 region=33554432", gib/3600, gib, gib))
}

// bigDiskInventory is the lab inventory with db01's disk made mib MiB,
// written in a temporary directory.
func bigDiskInventory(b *testing.B, mib int) string {
	src, err := Resolve(filepath.Join("fixtures", "inventory", "lab.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	// db01 is the first VM, its disk the first capacity.
	text := strings.Replace(string(raw), "capacityMiB: 64", fmt.Sprintf("capacityMiB: %d", mib), 1)
	if text == string(raw) || !strings.Contains(text[:strings.Index(text, "name: web01")], fmt.Sprintf("capacityMiB: %d", mib)) {
		b.Fatal("lab.yaml: db01's disk not found where expected")
	}
	p := filepath.Join(b.TempDir(), "lab-big.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}
