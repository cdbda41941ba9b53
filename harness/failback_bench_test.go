package harness

import (
	"context"
	"strings"
	"testing"
	"time"
)

// BenchmarkReprotect1Percent is a reprotect to the original location of a
// 64 MiB disk of which about 1 % changed in Azure: what crossed the VPN
// against the changed blocks, the simulated time the sync took, and the
// wall time of the whole world (failover, an hour's change in Azure, the
// reprotect). The issue asks for a 64 GiB disk: the vSphere port moves
// whole datastore files, so the master target holds whole disks in
// memory, and 64 GiB is out of reach until the port has ranged I/O.
func BenchmarkReprotect1Percent(b *testing.B) {
	script := `world seed=11 machines=(db01) workload=bank
----

deploy
----

protect vms=(db01)
----

wait state=protected timeout=1h
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

azure-workload vms=(db01) churn=100
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
`
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
				b.Fatalf("%s %s: %s", d.Pos, d.Cmd, out)
			}
		}
		fb := r.Env.Deployment.fb
		fb.observe()
		rec := fb.reprotects["db01"]
		if rec == nil || !rec.synced {
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
