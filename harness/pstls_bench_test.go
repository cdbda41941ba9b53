package harness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The stream of the process-server benchmark: what an agent sends (1 MiB
// items of realistic disk data, agent.Config.ItemBytes' default) and what
// the process server makes of it (the default MaxUploads uploads at once).
const (
	psBenchItemBytes = 1 << 20
	psBenchItems     = 128 // per leg per round: 128 MiB
	psBenchWindow    = 16  // items the agent stand-in keeps unacknowledged
	psBenchMachine   = "db01"
)

// psBenchUploads is how many uploads each leg keeps going at once: the
// process server's default, or V2A_BENCH_UPLOADS for both legs alike (a
// fair comparison at another concurrency).
var psBenchUploads = func() int {
	if n, err := strconv.Atoi(os.Getenv("V2A_BENCH_UPLOADS")); err == nil && n > 0 {
		return n
	}
	return processsrv.DefaultMaxUploads
}()

var (
	psBenchPS    = runtime.MakeAddr("ps01", runtime.PortProcess)
	psBenchAgent = runtime.MakeAddr(psBenchMachine, runtime.PortTag)
	psBenchAzure = runtime.MakeAddr("az01", runtime.PortConfig)
	psBenchKey   = [32]byte{1}
)

// psBenchData is one round's stream: the items as the agent sends them
// (ItemMsg frames) and as the process server uploads them (sealed under
// their cache blob names with the vault key: the same bytes, so the
// reference uploads blobs of exactly the process server's sizes).
type psBenchData struct {
	frames   [][]byte
	sealed   [][]byte
	rawBytes int64 // item bytes (what both legs' MB/s count)
}

func newPSBenchData(b *testing.B) *psBenchData {
	b.Helper()
	r := rand.New(rand.NewPCG(2, 2))
	sealer, err := batch.NewSealer(psBenchKey, batch.CodecS2)
	if err != nil {
		b.Fatal(err)
	}
	d := &psBenchData{}
	for i := range psBenchItems {
		seq := uint64(i + 1)
		it := &batch.Item{Machine: psBenchMachine, Seq: seq, Kind: batch.KindChunk, Gen: 1,
			Runs: []batch.Run{{Off: int64(i) * psBenchItemBytes, Data: make([]byte, psBenchItemBytes)}}}
		blockdev.FillRealistic(r, it.Runs[0].Data)
		raw := it.Marshal()
		d.rawBytes += int64(len(raw))
		d.frames = append(d.frames, wire.Encode(&proto.ItemMsg{Machine: psBenchMachine, Seq: seq, Data: raw}))
		out, err := sealer.Seal(nil, proto.CacheBlobName(psBenchMachine, seq), raw)
		if err != nil {
			b.Fatal(err)
		}
		d.sealed = append(d.sealed, out)
	}
	return d
}

// uploadReference is Azurite's own rate: the sealed items put straight
// with the azblob client, psBenchUploads at a time, into a fresh
// container. It returns when the puts started and their wall time (not
// the container's creation, as the process server's leg starts with its
// container made), and the schedstat of Azurite's main thread (pid) over
// them.
func uploadReference(b *testing.B, s blob.Store, container string, d *psBenchData, azuritePid int) (start time.Time, took time.Duration, azurite schedTimes) {
	b.Helper()
	ctx := context.Background()
	if err := s.CreateContainer(ctx, container); err != nil {
		b.Fatal(err)
	}
	defer s.DeleteContainer(ctx, container)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, psBenchUploads)
	s0 := readSched(azuritePid)
	start = time.Now()
	for range psBenchUploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(d.sealed)) {
					return
				}
				if _, err := s.Put(ctx, container, proto.CacheBlobName(psBenchMachine, uint64(i+1)), d.sealed[i], blob.WriteOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	took = time.Since(start)
	azurite = readSched(azuritePid).sub(s0)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	checkUploaded(b, s, container, len(d.sealed))
	return start, took, azurite
}

// checkUploaded fails the benchmark unless the container holds n blobs: a
// leg is only timed if it did the work.
func checkUploaded(b *testing.B, s blob.Store, container string, n int) {
	b.Helper()
	got, err := s.List(context.Background(), container, "")
	if err != nil {
		b.Fatal(err)
	}
	if len(got) != n {
		b.Fatalf("container %s holds %d blobs, want %d", container, len(got), n)
	}
}

// psFeeder is the agent stand-in: it says hello, then streams the
// pre-encoded item frames with a sliding window of unacknowledged items,
// as the agent does (go-back-N from the last cumulative ack).
type psFeeder struct {
	frames      [][]byte
	sent, acked uint64
	allAcked    *atomic.Int64 // when the last item was acknowledged (UnixNano)
	// ackedAt[i] is when item i+1 was first acknowledged (read once the
	// leg is over, for its timeline).
	ackedAt []time.Time
}

func (f *psFeeder) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		ctx.Send(psBenchPS, wire.Encode(&proto.StreamHello{Machine: psBenchMachine}))
	case runtime.Message:
		m, err := wire.Decode(ev.Data)
		if err != nil {
			panic(err)
		}
		a, ok := m.(*proto.ItemAck)
		if !ok {
			return
		}
		if a.Status != proto.AckOK {
			panic(fmt.Sprintf("process server answered %s: %s", a.Status, a.Reason))
		}
		for now := time.Now(); f.acked < a.Acked && f.acked < uint64(len(f.ackedAt)); f.acked++ {
			f.ackedAt[f.acked] = now
		}
		f.acked = max(f.acked, a.Acked)
		f.sent = max(f.sent, f.acked)
		if f.acked == uint64(len(f.frames)) && f.allAcked.Load() == 0 {
			f.allAcked.Store(time.Now().UnixNano())
		}
		for f.sent < uint64(len(f.frames)) && f.sent < f.acked+psBenchWindow {
			f.sent++
			ctx.Send(psBenchPS, f.frames[f.sent-1])
		}
	}
}

// psAzure stands in for the Azure side: the process server's Uploaded
// hints say how far the cache container has the stream; the last one ends
// the timed leg.
type psAzure struct {
	want uint64
	done chan struct{}
}

func (z *psAzure) Handle(ctx runtime.Context, ev runtime.Event) {
	m, ok := ev.(runtime.Message)
	if !ok {
		return
	}
	msg, err := wire.Decode(m.Data)
	if err != nil {
		panic(err)
	}
	if u, ok := msg.(*proto.Uploaded); ok && u.UpTo == z.want {
		close(z.done)
	}
}

// psWorld is one round's three hosts, each its own Real (as each is its own
// process in the wire world) with its certificate from the vault CA:
// every connection between them is mutual TLS.
type psWorld struct {
	ps, agent, azure *runtime.Real
}

func newPSWorld(b *testing.B, ca *pki.CA) *psWorld {
	b.Helper()
	w := &psWorld{}
	hosts := map[runtime.Addr]**runtime.Real{psBenchPS: &w.ps, psBenchAgent: &w.agent, psBenchAzure: &w.azure}
	resolve := func(a runtime.Addr) (string, error) {
		r, ok := hosts[a]
		if !ok {
			return "", fmt.Errorf("bench: no host %s", a) // the configuration server: health reports are dropped
		}
		return (*r).BoundAddr(a), nil
	}
	for addr, r := range hosts {
		id, err := ca.NewIdentity(addr.Host(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		*r = runtime.NewReal(runtime.RealOptions{Seed: 1, Resolve: resolve,
			Listen:    func(runtime.Addr) string { return "127.0.0.1:0" },
			ServerTLS: pki.ServerConfig(id), ClientTLS: pki.ClientConfig(id)})
	}
	return w
}

func (w *psWorld) stop() {
	w.agent.Stop()
	w.ps.Stop()
	w.azure.Stop()
}

// streamThroughPS is the process server's leg: the agent stand-in streams
// the items over mutual TLS, the process server caches, seals and uploads
// them to Azurite. It returns the wall time from the first item sent (the
// agent's spawn, with the process server's container made) to the Uploaded
// hint for the last item.
func streamThroughPS(b *testing.B, s blob.Store, ca *pki.CA, prefix string, d *psBenchData, azuritePid int) psLeg {
	b.Helper()
	cache, err := os.MkdirTemp(WorkBase(), "v2a-bench-cache-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(cache)
	defer s.DeleteContainer(context.Background(), prefix+proto.ContainerCache)
	w := newPSWorld(b, ca)
	defer w.stop()
	done := make(chan struct{})
	if err := w.azure.Spawn(psBenchAzure, func() runtime.Actor { return &psAzure{want: psBenchItems, done: done} }); err != nil {
		b.Fatal(err)
	}
	cfg := processsrv.Config{Name: "ps01", CacheDir: cache, CacheCapBytes: 1 << 40, Store: s,
		ContainerPrefix: prefix, Key: psBenchKey, Codec: batch.CodecS2, MaxUploads: psBenchUploads,
		Azure: psBenchAzure, ConfigServer: runtime.MakeAddr("cs01", runtime.PortConfig)}
	if n, err := strconv.Atoi(os.Getenv("V2A_BENCH_PS_MAXUPLOADS")); err == nil && n > 0 {
		// An experiment, not the benchmark: the process server's uploads
		// at once (the reference keeps psBenchUploads), to see whether
		// the leg is short of requests for Azurite.
		cfg.MaxUploads = n
	}
	if n, err := strconv.Atoi(os.Getenv("V2A_BENCH_PS_SEALAHEAD")); err == nil {
		cfg.SealAhead = n // items sealed ahead of the upload slots (default 0)
	}
	if os.Getenv("V2A_BENCH_PS_DISK") == "readback" {
		// The cache path before retained items and recycled files, for a
		// comparison in the same conditions: every item read back from its
		// cache file to be sealed, every file created and deleted.
		cfg.RetainBytes, cfg.RecycleFiles = -1, -1
	}
	if err := w.ps.Spawn(psBenchPS, func() runtime.Actor { return processsrv.New(cfg) }); err != nil {
		b.Fatal(err)
	}
	status := func() processsrv.Status {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := runtime.InspectAs(ctx, w.ps, psBenchPS, func(a runtime.Actor) processsrv.Status { return a.(*processsrv.Server).Status() })
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	for deadline := time.Now().Add(time.Minute); !status().ContainerReady; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("cache container not made in a minute: %s", status().LastError)
		}
	}
	var allAcked atomic.Int64
	feeder := &psFeeder{frames: d.frames, allAcked: &allAcked, ackedAt: make([]time.Time, len(d.frames))}
	s0 := readSched(azuritePid)
	start := time.Now()
	if err := w.agent.Spawn(psBenchAgent, func() runtime.Actor { return feeder }); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		st := status()
		b.Fatalf("%d of %d items uploaded in 10 minutes: %s", st.UploadedItems, psBenchItems, st.LastError)
	}
	took := time.Since(start)
	azurite := readSched(azuritePid).sub(s0)
	// The feeder may read the last ack after the last upload's hint came.
	for deadline := time.Now().Add(time.Minute); allAcked.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("uploads done, but the agent stand-in never got the last ack")
		}
	}
	st := status()
	if st.UploadedItems != psBenchItems || st.RawBytes != d.rawBytes || st.Errors != 0 {
		b.Fatalf("process server uploaded %d items, %d item bytes (want %d, %d), %d errors: %s",
			st.UploadedItems, st.RawBytes, psBenchItems, d.rawBytes, st.Errors, st.LastError)
	}
	checkUploaded(b, s, prefix+proto.ContainerCache, psBenchItems)
	return psLeg{start: start, took: took, azurite: azurite, acked: time.Unix(0, allAcked.Load()).Sub(start), st: st, ackedAt: feeder.ackedAt}
}

// psLeg is what streamThroughPS measured: when it started, the whole leg,
// the part until the last item was acknowledged (cached), the server's
// final status, and when each item was acknowledged.
type psLeg struct {
	start       time.Time
	took, acked time.Duration
	st          processsrv.Status
	ackedAt     []time.Time
	azurite     schedTimes // Azurite's main thread over the timed part
}

// BenchmarkProcessServerToAzurite is issue 11's throughput benchmark on the
// real runtime over loopback mutual TLS: an agent stand-in streams 128
// items of 1 MiB to the process server (three Reals, one per host, each
// with its certificate from the vault CA), which caches them (cache on
// WorkBase: tmpfs where there is one), seals them (s2 + AES-256-GCM) and
// uploads them to Azurite, four at a time; timed from the first item sent
// to the process server's Uploaded hint for the last. Each round also
// times the reference, Azurite's own rate: the same sealed blobs (same
// names and sizes) put with the azblob client, four at a time. Both rates
// count item bytes; x-azurite is their ratio, the median over the rounds
// (goal: at least 0.8, so that storage, not v2a, is the bottleneck).
//
// The CPU time of each leg, this process's (v2a: agent stand-in, process
// server and storage client) and the local Azurite's, is reported per MiB
// of items: on a machine whose cores are all busy (2 shared cores), the
// wall-time ratio tends to the CPU-time ratio, cpu-x-azurite; with a core
// to spare for each of v2a and Azurite, to Azurite's share alone.
//
// V2A_BENCH_PS_DISK=readback runs the process server with the cache path
// it had before (RetainBytes and RecycleFiles -1: each item read back from
// its cache file to be sealed, each file created and deleted), to compare.
// V2A_BENCH_UPLOADS=N gives both legs N uploads at once.
// V2A_BENCH_PS_MAXUPLOADS=N gives the process server N uploads at once
// (the reference keeps 4): an experiment. V2A_BENCH_PS_SEALAHEAD=N sets
// its Config.SealAhead. V2A_BENCH_PS_TIMELINE=PATH
// writes each round's per-item timeline (acknowledged, upload began and
// ended) to PATH.<round>.
func BenchmarkProcessServerToAzurite(b *testing.B) {
	inst, err := sharedAzurite(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	az, err := azblob.NewFromConnectionString(inst.ConnectionString())
	if err != nil {
		b.Fatal(err)
	}
	s := &putLog{Store: az}
	ca, err := pki.NewCA("vault-bench", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	d := newPSBenchData(b)
	var ref, ps, acked time.Duration
	var refCPU, psCPU cpuTimes
	var ratios []float64 // per round: reference time over process server time
	var ratio, peak, recycled float64
	var refBusy, psBusy, psShort, psBusyAfter float64 // uploads in flight, summed over rounds
	var refSched, psSched schedTimes                  // Azurite's main thread over each leg
	timeline := os.Getenv("V2A_BENCH_PS_TIMELINE")
	round := 0
	b.SetBytes(2 * d.rawBytes)
	for b.Loop() {
		round++
		prefix := fmt.Sprintf("bench-%d-%d-", os.Getpid(), round)
		refBefore := ref
		// Reference and process server alternate which goes first, so
		// that a load that drifts over the run weighs on both alike.
		refLeg := func() {
			s.take()
			c0 := readCPU(b, inst.Pid())
			start, took, az := uploadReference(b, s, prefix+"ref", d, inst.Pid())
			refCPU = refCPU.add(readCPU(b, inst.Pid()).sub(c0))
			refSched = refSched.add(az)
			ref += took
			mean, _ := occupancy(s.take(), start, start.Add(took), psBenchUploads)
			refBusy += mean
		}
		if round%2 == 1 {
			refLeg()
		}
		s.take()
		c0 := readCPU(b, inst.Pid())
		leg := streamThroughPS(b, s, ca, prefix, d, inst.Pid())
		psCPU = psCPU.add(readCPU(b, inst.Pid()).sub(c0))
		psSched = psSched.add(leg.azurite)
		spans := s.take()
		end, lastAck := leg.start.Add(leg.took), leg.start.Add(leg.acked)
		mean, short := occupancy(spans, leg.start, end, psBenchUploads)
		after, _ := occupancy(spans, lastAck, end, psBenchUploads)
		psBusy, psShort, psBusyAfter = psBusy+mean, psShort+short, psBusyAfter+after
		if timeline != "" {
			writeTimeline(b, fmt.Sprintf("%s.%d", timeline, round), leg, spans)
		}
		ps, acked = ps+leg.took, acked+leg.acked
		ratio, peak = leg.st.Ratio, max(peak, float64(leg.st.PeakPipelineBytes)/(1<<20))
		recycled += float64(leg.st.RecycledItems) / psBenchItems
		if round%2 == 0 {
			refLeg()
		}
		ratios = append(ratios, (ref-refBefore).Seconds()/leg.took.Seconds())
	}
	mbps := func(took time.Duration) float64 { return float64(round) * float64(d.rawBytes) / 1e6 / took.Seconds() }
	b.ReportMetric(mbps(ps), "ps-MB/s")
	b.ReportMetric(mbps(ref), "azurite-MB/s")
	// The median round's ratio: a load that comes and goes on a shared
	// machine skews a round or two, not the median.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "x-azurite")
	// The spread, so that a median is never quoted without it.
	b.ReportMetric(ratios[0], "x-azurite-min")
	b.ReportMetric(ratios[len(ratios)-1], "x-azurite-max")
	b.ReportMetric(ref.Seconds()/ps.Seconds(), "x-azurite-sum")
	b.ReportMetric(acked.Seconds()/ps.Seconds(), "acked-at")
	mib := float64(round) * float64(d.rawBytes) / (1 << 20)
	perMiB := func(d time.Duration) float64 { return float64(d) / 1e6 / mib }
	b.ReportMetric(perMiB(psCPU.self), "ps-cpu-ms/MiB")
	b.ReportMetric(perMiB(refCPU.self), "ref-cpu-ms/MiB")
	if inst.Pid() != 0 {
		b.ReportMetric(perMiB(psCPU.azurite), "ps-azurite-cpu-ms/MiB")
		b.ReportMetric(perMiB(refCPU.azurite), "ref-azurite-cpu-ms/MiB")
		// The ratio a machine with no core to spare would show: each leg's
		// CPU time, v2a's and Azurite's together.
		b.ReportMetric(float64(refCPU.self+refCPU.azurite)/float64(psCPU.self+psCPU.azurite), "cpu-x-azurite")
	}
	// How busy each leg kept the storage: the mean number of uploads in
	// flight (the reference keeps psBenchUploads going all along), over
	// the process server's whole leg and after its last ack; and the share
	// of its leg with fewer than psBenchUploads in flight.
	b.ReportMetric(refBusy/float64(round), "ref-uploading")
	b.ReportMetric(psBusy/float64(round), "ps-uploading")
	b.ReportMetric(psBusyAfter/float64(round), "ps-uploading-after-acked")
	b.ReportMetric(psShort/float64(round), "ps-under-width")
	// Azurite's main thread over each leg: the share of the leg's time it
	// ran and the share it waited for a CPU (the rest it was idle).
	if refSched.run > 0 {
		b.ReportMetric(refSched.run.Seconds()/ref.Seconds(), "ref-azurite-run")
		b.ReportMetric(refSched.wait.Seconds()/ref.Seconds(), "ref-azurite-wait")
		b.ReportMetric(psSched.run.Seconds()/ps.Seconds(), "ps-azurite-run")
		b.ReportMetric(psSched.wait.Seconds()/ps.Seconds(), "ps-azurite-wait")
	}
	b.ReportMetric(ratio, "compression")
	b.ReportMetric(peak, "pipeline-peak-MiB")
	// The share of items written over a recycled cache file (the others:
	// a new file).
	b.ReportMetric(recycled/float64(round), "recycled")
}

// cpuTimes is CPU time (user + system) of this process and of the local
// Azurite.
type cpuTimes struct{ self, azurite time.Duration }

func (c cpuTimes) add(o cpuTimes) cpuTimes { return cpuTimes{c.self + o.self, c.azurite + o.azurite} }
func (c cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{c.self - o.self, c.azurite - o.azurite} }

// readCPU reads this process's CPU time, and the Azurite's at pid (0: none,
// an Azurite not started here) from /proc.
func readCPU(b *testing.B, pid int) cpuTimes {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	c := cpuTimes{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if pid == 0 {
		return c
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// After the command's ")": state is field 3 of proc(5), utime 14 and
	// stime 15, in clock ticks (USER_HZ: 100 on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	c.azurite = time.Duration(ticks) * 10 * time.Millisecond
	return c
}
