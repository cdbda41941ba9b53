package harness

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// TestConvergedCheck shows the liveness check both ways: a healthy world
// converges; a site cut off from Azure for good fails it on RPO; a machine
// cut off from the process server and the configuration server before its
// enablement finishes fails it on its state and on the enablement job left
// running.
func TestConvergedCheck(t *testing.T) {
	run := func(t *testing.T, fault func(e *Env)) []Result {
		e, err := New(context.Background(), Options{Seed: 4, Machines: []string{"db01"}, MemoryStorage: true, AllocatedMiB: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		e.StartWorkload("db01", workloadSpecFor("bank"))
		d, err := e.Deploy(DeployOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		if fault != nil {
			fault(e)
		}
		d.Request(&proto.EnableReplication{Machine: "db01", Policy: "default"})
		e.Sim.RunFor(50 * time.Minute)
		return d.CheckConverged(nil, 20*time.Minute)
	}
	verdicts := func(rs []Result) string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.String() + "\n")
		}
		return b.String()
	}
	rs := run(t, nil)
	if len(rs) != 2 {
		t.Fatalf("healthy: want db01 and jobs judged, got\n%s", verdicts(rs))
	}
	for _, r := range rs {
		if r.Verdict != OK {
			t.Fatalf("healthy world did not converge:\n%s", verdicts(rs))
		}
	}
	t.Run("cut off from Azure", func(t *testing.T) {
		rs := run(t, func(e *Env) {
			e.Sim.After(15*time.Minute, "cut", func() { e.Net.Partition("onprem", "azure") })
		})
		if len(rs) == 0 || rs[0].Subject != "db01" || rs[0].Verdict != Illegal || !strings.Contains(rs[0].Evidence, "RPO") {
			t.Fatalf("cut off from Azure, converged said\n%s", verdicts(rs))
		}
		t.Log(verdicts(rs))
	})
	t.Run("enablement stuck", func(t *testing.T) {
		rs := run(t, func(e *Env) {
			e.Net.Partition("db01", HostConfigServer)
			e.Net.Partition("db01", HostProcessServer)
		})
		var machine, jobs bool
		for _, r := range rs {
			machine = machine || (r.Subject == "db01" && r.Verdict == Illegal && strings.Contains(r.Evidence, "not protected"))
			jobs = jobs || (r.Subject == "jobs" && r.Verdict == Illegal && strings.Contains(r.Evidence, "running for"))
		}
		if !machine || !jobs {
			t.Fatalf("enablement cut off: want db01 and its job failed, got\n%s", verdicts(rs))
		}
		t.Log(verdicts(rs))
	})
}
