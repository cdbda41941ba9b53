package harness

import (
	"context"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// cdpWorld is machines replicating under pol on in-memory storage, after
// warm of replication.
func cdpWorld(tb testing.TB, seed uint64, machines []string, pol proto.Policy, warm time.Duration) (*Env, *Deployment) {
	tb.Helper()
	e, err := New(context.Background(), Options{Seed: seed, Machines: machines, MemoryStorage: true, AllocatedMiB: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	for _, m := range machines {
		e.StartWorkload(m, workloadSpecFor("bank"))
	}
	d, err := e.Deploy(DeployOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	e.Sim.RunFor(time.Second)
	if err := d.Request(&proto.CreatePolicy{Policy: pol}); err != nil {
		tb.Fatal(err)
	}
	e.Sim.RunFor(time.Second)
	for _, m := range machines {
		if err := d.Request(&proto.EnableReplication{Machine: m, Policy: pol.Name}); err != nil {
			tb.Fatal(err)
		}
	}
	e.Sim.RunFor(warm)
	return e, d
}

// TestRetentionUnderTwoHoursEndToEnd is the known bug's regression: a
// policy with a 1-hour retention window (under the 2 hours in which every
// point is otherwise kept) made the retention check demand points the
// Azure side had rightly pruned. After 2.5 hours the catalog holds exactly
// the last hour's points and every check passes.
func TestRetentionUnderTwoHoursEndToEnd(t *testing.T) {
	pol := proto.DefaultPolicy()
	pol.Name, pol.Retention = "short", time.Hour
	_, d := cdpWorld(t, 3, []string{"db01"}, pol, 150*time.Minute)
	rs := d.CheckPoints(nil, PointChecks{SkipImages: true})
	judged := 0
	for _, r := range rs {
		if r.Verdict != OK {
			t.Errorf("%s", r)
		}
		if r.Check == "retention" {
			judged++
			t.Log(r)
		}
	}
	if judged != 1 {
		t.Fatalf("retention judged %d machines, want 1", judged)
	}
	cat, err := d.Catalog("db01")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cat.Points); n < 11 || n > 14 {
		t.Errorf("a 1-hour window of 5-minute points keeps %d points", n)
	}
}

// BenchmarkRPO5s measures the RPO achieved at the 5-s crash interval
// beside the 5-minute default's, in the same run: 4 VMs (bank workload)
// replicate for 20 minutes, then `cost` samples every machine's RPO each
// second for 30 minutes, as the rpo check measures it (now − the newest
// point the configuration server knows), and counts the blob-storage
// transactions. In-memory storage: RPO is virtual time, which the storage
// backend does not change; the transactions are the same requests Azurite
// would serve.
func BenchmarkRPO5s(b *testing.B) {
	machines := []string{"db01", "web01", "app01", "ord-db"}
	for i := 0; i < b.N; i++ {
		for _, c := range []struct {
			unit  string
			every time.Duration
		}{{"5s", 5 * time.Second}, {"5m", 5 * time.Minute}} {
			pol := proto.DefaultPolicy()
			pol.Name, pol.CrashInterval = "p"+c.unit, c.every
			start := time.Now()
			_, d := cdpWorld(b, 11, machines, pol, 20*time.Minute)
			rep, err := d.Cost(30*time.Minute, nil)
			if err != nil {
				b.Fatal(err)
			}
			var p50, p99 time.Duration
			made, kept := 0, 0
			for _, m := range rep.Machines {
				p50, p99 = max(p50, m.RPOp50), max(p99, m.RPOp99)
				made += m.Made
				kept += m.Kept
			}
			b.ReportMetric(p50.Seconds(), "rpo-p50-s/"+c.unit)
			b.ReportMetric(p99.Seconds(), "rpo-p99-s/"+c.unit)
			b.ReportMetric(rep.PerHour(int64(made))/float64(len(machines)), "points/h/vm/"+c.unit)
			b.ReportMetric(rep.PerHour(rep.TotalRequests())/float64(len(machines)), "tx/h/vm/"+c.unit)
			b.ReportMetric(time.Since(start).Seconds(), "wall-s/"+c.unit)
		}
	}
}
