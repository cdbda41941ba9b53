package harness

import (
	"context"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/proto"
)

func benchStore(b *testing.B) blob.Store {
	b.Helper()
	inst, err := sharedAzurite(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	s, err := azblob.NewFromConnectionString(inst.ConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSimInitialSync measures simulation speed: the initial-sync
// scenario's world (3 VMs, bank workload, vcsim and Azurite in the loop)
// for 2 simulated hours, reported as simulated seconds per wall second.
func BenchmarkSimInitialSync(b *testing.B) {
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e, err := New(context.Background(), Options{Seed: 42, Machines: []string{"db01", "web01", "app01"}})
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range e.MachineNames() {
			e.StartWorkload(m, workloadSpecFor("bank"))
		}
		d, err := e.Deploy(DeployOptions{})
		if err != nil {
			b.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		for _, m := range e.MachineNames() {
			d.Request(&proto.EnableReplication{Machine: m, Policy: "default"})
		}
		e.Sim.RunFor(2 * time.Hour)
		wall := time.Since(start)
		b.ReportMetric(e.Sim.Elapsed().Seconds()/wall.Seconds(), "sim-s/wall-s")
		b.ReportMetric(wall.Seconds(), "wall-s/2h")
		e.Close()
	}
}
