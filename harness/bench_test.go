package harness

import (
	"context"
	"fmt"
	"runtime"
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
	b.ReportAllocs()
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
		b.ReportMetric(float64(e.Sim.Events())/wall.Seconds(), "events/s")
		b.ReportMetric(wall.Seconds(), "wall-s/2h")
		e.Close()
	}
}

// day16HeapLimitBytes bounds BenchmarkSimDay16VMs's heap, so that make
// bench cannot exhaust a shared machine's memory.
const day16HeapLimitBytes = 4 << 30

// BenchmarkSimDay16VMs measures simulation speed at scale: 24 simulated
// hours of 16 VMs of the farm inventory on memblob, each with a workload
// (a mix of the simulator's kinds at their defaults: bank, fs, fs, random at
// 64 KiB/s, in turn) and the default policy (crash-consistent points every
// 5 minutes, app-consistent every 60). The goal is under 60 s of wall time
// (≥ 1,440× real time). It reports simulated seconds per wall second,
// events per wall second and allocations.
func BenchmarkSimDay16VMs(b *testing.B) {
	inv, err := Resolve("fixtures/inventory/farm.yaml")
	if err != nil {
		b.Fatal(err)
	}
	tgt := &Target{Name: "sim", World: "sim", Inventory: inv, VSphere: VSphereTarget{Mode: "vcsim"}, Storage: StorageTarget{Mode: "auto"}}
	if err := tgt.Validate(); err != nil {
		b.Fatal(err)
	}
	var machines []string
	for i := 1; i <= 16; i++ {
		machines = append(machines, fmt.Sprintf("farm%02d", i))
	}
	kinds := []string{"bank", "fs", "fs", "random"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e, err := New(context.Background(), Options{Target: tgt, Seed: 42, Machines: machines, MemoryStorage: true, TraceHashOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		for j, m := range machines {
			if err := e.StartWorkload(m, workloadSpecFor(kinds[j%len(kinds)])); err != nil {
				b.Fatal(err)
			}
		}
		d, err := e.Deploy(DeployOptions{})
		if err != nil {
			b.Fatal(err)
		}
		e.Sim.RunFor(time.Second)
		for _, m := range machines {
			d.Request(&proto.EnableReplication{Machine: m, Policy: "default"})
		}
		// Hour by hour, with a bound on memory: memblob keeps every page a
		// retained point still needs, so a heavier workload than the
		// machine can hold fails here instead of exhausting its memory.
		for h := 1; h <= 24; h++ {
			e.Sim.RunFor(time.Hour)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > day16HeapLimitBytes {
				b.Fatalf("after %d simulated hours the heap holds %d MiB (limit %d MiB): the day does not fit in memory", h, ms.HeapAlloc>>20, day16HeapLimitBytes>>20)
			}
		}
		wall := time.Since(start)
		// The run must have done the work it is timed for: points on the
		// policy's schedule for every machine, all day.
		for _, r := range d.CheckSchedule(machines) {
			if r.Verdict != OK {
				b.Fatalf("the day's world failed its schedule: %s", r)
			}
		}
		b.ReportMetric(e.Sim.Elapsed().Seconds()/wall.Seconds(), "sim-s/wall-s")
		b.ReportMetric(float64(e.Sim.Events())/wall.Seconds(), "events/s")
		b.ReportMetric(wall.Seconds(), "wall-s/24h")
		e.Close()
	}
}
