package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

const benchItem = 1 << 20

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

// BenchmarkAzuriteRawUpload is the reference: Azurite's own block-blob
// upload rate for 1 MiB blobs, two uploads at a time (as the process server
// runs on two cores).
func BenchmarkAzuriteRawUpload(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	c := fmt.Sprintf("bench-raw-%d", os.Getpid())
	if err := s.CreateContainer(ctx, c); err != nil {
		b.Fatal(err)
	}
	defer s.DeleteContainer(ctx, c)
	data := make([]byte, benchItem)
	blockdev.FillRealistic(rand.New(rand.NewPCG(1, 1)), data)
	b.SetBytes(benchItem)
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := s.Put(ctx, c, fmt.Sprintf("b/%020d", i), data, blob.WriteOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// feeder is an agent stand-in on the real runtime: it streams pre-built
// items to the process server with a sliding window.
type feeder struct {
	ps     runtime.Addr
	items  [][]byte
	window int
	acked  uint64
	sent   uint64
	done   chan struct{}
	closed bool
}

func (f *feeder) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		ctx.Send(f.ps, wire.Encode(&proto.StreamHello{Machine: "bench"}))
	case runtime.Message:
		m, err := wire.Decode(ev.Data)
		if err != nil {
			return
		}
		if a, ok := m.(*proto.ItemAck); ok {
			if a.Status == proto.AckOK && a.Acked > f.acked {
				f.acked = a.Acked
			}
			if f.sent < f.acked {
				f.sent = f.acked
			}
			for f.sent < uint64(len(f.items)) && f.sent < f.acked+uint64(f.window) {
				f.sent++
				ctx.Send(f.ps, wire.Encode(&proto.ItemMsg{Machine: "bench", Seq: f.sent, Data: f.items[f.sent-1]}))
			}
			if a.Status != proto.AckOK {
				ctx.After(50*time.Millisecond, "retry")
			}
		}
	case runtime.Timer:
		ctx.Send(f.ps, wire.Encode(&proto.StreamHello{Machine: "bench"}))
	}
}

// BenchmarkProcessServerToAzurite is the end-to-end path on the real
// runtime: items arrive over loopback TCP, are written and fsynced to the
// cache disk, sealed (s2 + AES-256-GCM) and uploaded to Azurite by the
// process server's pipeline. It reports raw item MB/s; compare with
// BenchmarkAzuriteRawUpload from the same run (the target: at least 80%, so
// that Azurite, not v2a, is the bottleneck).
func BenchmarkProcessServerToAzurite(b *testing.B) {
	s := benchStore(b)
	r := rand.New(rand.NewPCG(2, 2))
	items := make([][]byte, b.N)
	for i := range items {
		it := &batch.Item{Machine: "bench", Seq: uint64(i + 1), Kind: batch.KindChunk, Gen: 1,
			Runs: []batch.Run{{Off: int64(i) * benchItem, Data: make([]byte, benchItem)}}}
		blockdev.FillRealistic(r, it.Runs[0].Data)
		items[i] = it.Marshal()
	}
	cache, err := os.MkdirTemp(WorkBase(), "v2a-bench-cache-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(cache)
	prefix := fmt.Sprintf("bench-%d-", os.Getpid())
	rt := runtime.NewReal(runtime.RealOptions{Seed: 1, Listen: func(runtime.Addr) string { return "127.0.0.1:0" }})
	psAddr, feedAddr := runtime.Addr("ps01:9443"), runtime.Addr("bench:20004")
	// The runtime builds the actor on its own goroutine.
	var psp atomic.Pointer[processsrv.Server]
	if err := rt.Spawn(psAddr, func() runtime.Actor {
		ps := processsrv.New(processsrv.Config{Name: "ps01", CacheDir: cache, CacheCapBytes: 1 << 40, Store: s,
			ContainerPrefix: prefix, Key: [32]byte{1}, Codec: batch.CodecS2, MaxUploads: 4,
			Azure: "nowhere:1", ConfigServer: "nowhere:2"})
		psp.Store(ps)
		return ps
	}); err != nil {
		b.Fatal(err)
	}
	defer s.DeleteContainer(context.Background(), prefix+"cache")
	b.SetBytes(benchItem)
	b.ResetTimer()
	if err := rt.Spawn(feedAddr, func() runtime.Actor { return &feeder{ps: psAddr, items: items, window: 16} }); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for psp.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	ps := psp.Load()
	for ps.Status().UploadedItems < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("uploaded %d of %d items in 10 minutes: %+v", ps.Status().UploadedItems, b.N, ps.Status().LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	st := ps.Status()
	b.ReportMetric(st.Ratio, "compression")
	b.ReportMetric(float64(st.PeakPipelineBytes)/(1<<20), "pipeline-peak-MiB")
	rt.Stop()
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
