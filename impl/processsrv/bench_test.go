package processsrv

import (
	"crypto/aes"
	"crypto/cipher"
	"hash/crc32"
	"math/rand/v2"
	"os"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	benchItemBytes = 1 << 20 // payload of one item, as the agent sends them
	benchBuffers   = 8       // distinct items cycled through (more than the CPU caches hold)
)

// benchData is realistic disk data (blockdev.FillRealistic: half log-like
// text, half random, in 4 KiB blocks) in 1 MiB payloads, and the same
// payloads as marshalled Chunk items with their ItemMsg.
type benchData struct {
	payloads [][]byte
	msgs     []*proto.ItemMsg
}

func newBenchData() *benchData {
	r := rand.New(rand.NewPCG(42, 42))
	d := &benchData{}
	for i := range benchBuffers {
		p := make([]byte, benchItemBytes)
		blockdev.FillRealistic(r, p)
		d.payloads = append(d.payloads, p)
		seq := uint64(i + 1)
		it := &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: int64(i) * benchItemBytes, Data: p}}}
		d.msgs = append(d.msgs, &proto.ItemMsg{Machine: "db01", Seq: seq, Data: it.Marshal()})
	}
	return d
}

// reference is the bare loop the pipeline is measured against: CRC-32C,
// s2.Encode and AES-256-GCM Seal of the payload, buffers reused.
type reference struct {
	aead      cipher.AEAD
	nonce     []byte
	comp, out []byte
}

func newReference() *reference {
	blk, _ := aes.NewCipher(testKey[:])
	aead, _ := cipher.NewGCM(blk)
	return &reference{aead: aead, nonce: make([]byte, aead.NonceSize())}
}

var sink uint32

func (r *reference) run(p []byte) {
	sink += crc32.Checksum(p, castagnoli)
	r.comp = s2.Encode(r.comp[:cap(r.comp)], p)
	r.out = r.aead.Seal(r.out[:0], r.nonce, r.comp, nil)
}

// pipelineStep is the process server's real per-item CPU path without the
// disk: the receive-side check (batch.Unmarshal, machine and seq match), the
// cache record header (CRC-32C), the record as it is read back into the
// worker's buffer, its check (CRC-32C again) and the seal (s2 + AES-256-GCM,
// name-bound) into a fresh buffer, as the upload gets it.
func pipelineStep(b *testing.B, w *worker, msg *proto.ItemMsg) int {
	if err := checkItem(msg); err != nil {
		b.Fatal(err)
	}
	h := recordHeader(msg.Data, batch.CodecS2)
	w.buf = append(append(w.buf[:0], h[:]...), msg.Data...)
	out, err := w.sealRecord(proto.CacheBlobName(msg.Machine, msg.Seq), w.buf, nil)
	if err != nil {
		b.Fatal(err)
	}
	return len(out.data)
}

func newWorker(b *testing.B) *worker {
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		b.Fatal(err)
	}
	return &worker{sealer: s, codec: batch.CodecS2}
}

func BenchmarkReferenceLoop(b *testing.B) {
	d := newBenchData()
	r := newReference()
	b.SetBytes(benchItemBytes)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.run(d.payloads[i%benchBuffers])
	}
}

// BenchmarkPipeline reports, besides its own MB/s, the reference loop
// timed over as many items right after it: x-reference is pipeline time
// over reference time (1.00 = as fast as the bare loop), and ratio the
// compression ratio it achieved.
func BenchmarkPipeline(b *testing.B) {
	d := newBenchData()
	w := newWorker(b)
	b.SetBytes(benchItemBytes)
	var raw, sealed int64
	n := 0
	for b.Loop() {
		msg := d.msgs[n%benchBuffers]
		sealed += int64(pipelineStep(b, w, msg))
		raw += int64(len(msg.Data))
		n++
	}
	pipe := b.Elapsed()
	r := newReference()
	start := time.Now()
	for i := range n {
		r.run(d.payloads[i%benchBuffers])
	}
	ref := time.Since(start)
	if ref > 0 {
		b.ReportMetric(float64(pipe)/float64(ref), "x-reference")
	}
	b.ReportMetric(float64(raw)/float64(sealed), "ratio")
}

// BenchmarkPipelineParallel runs the pipeline step on every core, one
// worker (sealer) each, as the server's MaxUploads Ops do.
func BenchmarkPipelineParallel(b *testing.B) {
	d := newBenchData()
	b.SetBytes(benchItemBytes)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := newWorker(b)
		i := 0
		for pb.Next() {
			pipelineStep(b, w, d.msgs[i%benchBuffers])
			i++
		}
	})
}

// BenchmarkBacklogMemory pushes 512 MiB of 1 MiB items through a server
// whose uploads are stalled (op completions held): every item is
// acknowledged from the cache disk, and the heap stays at a few items'
// worth. It reports the peak heap in use while pushing (peak-heap-MiB), its
// growth over the heap before (heap-growth-MiB), the server's own count of
// bytes held by the pipeline (peak-pipeline-MiB) and what was pushed.
func BenchmarkBacklogMemory(b *testing.B) {
	const items = 512
	payload := make([]byte, benchItemBytes)
	blockdev.FillRealistic(rand.New(rand.NewPCG(1, 1)), payload)
	b.SetBytes(items * benchItemBytes)
	var peak, base uint64
	var peakPipeline int64
	for b.Loop() {
		b.StopTimer()
		dir, err := os.MkdirTemp(b.TempDir(), "cache")
		if err != nil {
			b.Fatal(err)
		}
		srv := New(Config{Name: "ps01", CacheDir: dir, CacheCapBytes: 2 * items * benchItemBytes, Store: memblob.New(),
			ContainerPrefix: prefix, Key: testKey, MaxUploads: 4})
		d := runtimetest.New(b, psAddr, srv)
		d.AutoDeliverOps = false // the container exists; uploads now stall
		goruntime.GC()
		var ms goruntime.MemStats
		goruntime.ReadMemStats(&ms)
		base = ms.HeapInuse
		peak = base
		b.StartTimer()
		for seq := uint64(1); seq <= items; seq++ {
			it := &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: 0, Data: payload}}}
			d.ReceiveFrame(agentAddr, wire.Encode(&proto.ItemMsg{Machine: "db01", Seq: seq, Data: it.Marshal()}))
			// The group commit runs (its op completes); uploads stay stalled.
			d.Advance(srv.cfg.GroupCommit)
			d.DeliverOpsWhere(func(dn runtime.Done) bool { return dn.Name == "cache-commit" })
			acks := d.Sent()
			if len(acks) != 1 || acks[0].Msg.(*proto.ItemAck).Acked != seq {
				b.Fatalf("item %d: %v", seq, acks)
			}
			if seq%4 == 0 {
				goruntime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
		b.StopTimer()
		st := srv.Status()
		if st.BacklogItems != items || st.InFlight != 4 {
			b.Fatalf("backlog %d, in flight %d", st.BacklogItems, st.InFlight)
		}
		peakPipeline = st.PeakPipelineBytes
		os.RemoveAll(dir)
		b.StartTimer()
	}
	const mib = 1 << 20
	b.ReportMetric(float64(peak)/mib, "peak-heap-MiB")
	b.ReportMetric(float64(peak-base)/mib, "heap-growth-MiB")
	b.ReportMetric(float64(peakPipeline)/mib, "peak-pipeline-MiB")
	b.ReportMetric(items*benchItemBytes/mib, "pushed-MiB")
}
