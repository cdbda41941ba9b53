package failover_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
)

// BenchmarkPlanFailover100: a recovery plan of 100 VMs in 7 boot groups
// fails over in the simulated fabric (with its latency model); reports
// the wall time per failover and the simulated RTO of the plan.
func BenchmarkPlanFailover100(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		e := newEnvFor(b, b, options{latency: fabricLatency})
		pl := &proto.RecoveryPlan{Name: "big", Groups: make([]proto.PlanGroup, failover.MaxPlanGroups)}
		for i := range failover.MaxPlanVMs {
			vm := fmt.Sprintf("vm%03d", i)
			e.replicate(vm, "", 1, pt{vm + "-c-1", proto.Crash})
			g := &pl.Groups[i%failover.MaxPlanGroups]
			g.VMs = append(g.VMs, vm)
		}
		b.StartTimer()
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, Plan: pl, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
		j := e.wait(id, 24*time.Hour)
		if j.State != failover.JobSucceeded {
			b.Fatalf("plan %s: %v", j.State, j.Errors)
		}
		b.ReportMetric(j.RTO().Seconds(), "sim-rto-s")
	}
}
