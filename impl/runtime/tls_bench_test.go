package runtime

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The stream of the TLS-cost benchmark: 1 MiB frames (an agent's item
// size), a window of them in flight, each acknowledged by a small frame.
const (
	streamFrameBytes = 1 << 20
	streamMiB        = 128 // per transport per round
	streamWindow     = 16
)

var (
	streamSrc = Addr("src:20004")
	streamDst = Addr("dst:9443")
)

// streamSender sends total frames to streamDst, at most window ahead of
// the acknowledgements, and closes done on the last acknowledgement.
type streamSender struct {
	frame       []byte
	total, sent uint64
	acked       uint64
	done        chan struct{}
}

func (s *streamSender) Handle(ctx Context, ev Event) {
	switch ev := ev.(type) {
	case Started:
	case Message:
		m, err := wire.Decode(ev.Data)
		if err != nil {
			panic(err)
		}
		s.acked = max(s.acked, m.(*testMsg).N)
		if s.acked == s.total {
			close(s.done)
			return
		}
	default:
		return
	}
	for s.sent < s.total && s.sent < s.acked+streamWindow {
		s.sent++
		ctx.Send(streamDst, s.frame)
	}
}

// streamReceiver acknowledges every frame with the count received so far.
type streamReceiver struct{ n uint64 }

func (r *streamReceiver) Handle(ctx Context, ev Event) {
	if m, ok := ev.(Message); ok {
		if m.From != streamSrc {
			panic("frame from " + m.From)
		}
		r.n++
		ctx.Send(streamSrc, frame("ack", r.n))
	}
}

// streamTLS are the two hosts' TLS configurations; nil: plain TCP.
type streamTLS struct{ src, dst *pki.Identity }

// runStream streams mib frames of 1 MiB from one Real to another (each
// host its own process, as the agent and the process server are) and
// returns the wall time and the CPU time (user + system, of the whole
// process) from the sender's spawn to the last acknowledgement.
func runStream(b *testing.B, mib int, ids streamTLS) (wall, cpu time.Duration) {
	b.Helper()
	payload := make([]byte, streamFrameBytes-64)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	f := frame(string(payload), 0)
	var src, dst *Real
	var handshakes atomic.Int64
	opts := func(id *pki.Identity, peer **Real, peerAddr Addr) RealOptions {
		o := RealOptions{Listen: func(Addr) string { return "127.0.0.1:0" },
			Resolve: func(a Addr) (string, error) {
				if a != peerAddr {
					return "", fmt.Errorf("no route to %s", a)
				}
				return (*peer).BoundAddr(a), nil
			}}
		if id != nil {
			o.ServerTLS, o.ClientTLS = pki.ServerConfig(*id), pki.ClientConfig(*id)
			// Counted, so that the run can show it really spoke TLS.
			o.ServerTLS.VerifyConnection = func(tls.ConnectionState) error { handshakes.Add(1); return nil }
		}
		return o
	}
	src = NewReal(opts(ids.src, &dst, streamDst))
	dst = NewReal(opts(ids.dst, &src, streamSrc))
	defer src.Stop()
	defer dst.Stop()
	if err := dst.Spawn(streamDst, func() Actor { return &streamReceiver{} }); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	cpu0 := cpuTime(b)
	start := time.Now()
	if err := src.Spawn(streamSrc, func() Actor {
		return &streamSender{frame: f, total: uint64(mib), acked: 0, done: done}
	}); err != nil {
		b.Fatal(err)
	}
	// The sender's first turn (Started) sends the first window.
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("stream of %d MiB not acknowledged in 5 minutes", mib)
	}
	wall, cpu = time.Since(start), cpuTime(b)-cpu0
	// Each side dials the other once: the frames one way, the acks back.
	if want := map[bool]int64{false: 0, true: 2}[ids.src != nil]; handshakes.Load() != want {
		b.Fatalf("%d TLS handshakes, want %d", handshakes.Load(), want)
	}
	return wall, cpu
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStreamTLSCost is the cost of mutual TLS on the real runtime: the
// same stream of 1 MiB frames (a window of 16 in flight, each acknowledged)
// between two Reals on loopback, over plain TCP and over mutual TLS with
// certificates from the vault CA (TLS 1.3, AES-GCM), alternating in each
// round. It reports the wall and CPU (whole process: both ends) time per
// MiB of each, and the difference, TLS's cost per MiB.
func BenchmarkStreamTLSCost(b *testing.B) {
	now := time.Now()
	ca, err := pki.NewCA("vault-bench", now)
	if err != nil {
		b.Fatal(err)
	}
	srcID, err := ca.NewIdentity(streamSrc.Host(), now)
	if err != nil {
		b.Fatal(err)
	}
	dstID, err := ca.NewIdentity(streamDst.Host(), now)
	if err != nil {
		b.Fatal(err)
	}
	var tcpWall, tcpCPU, tlsWall, tlsCPU time.Duration
	b.SetBytes(2 * streamMiB << 20)
	for b.Loop() {
		w, c := runStream(b, streamMiB, streamTLS{})
		tcpWall, tcpCPU = tcpWall+w, tcpCPU+c
		w, c = runStream(b, streamMiB, streamTLS{src: &srcID, dst: &dstID})
		tlsWall, tlsCPU = tlsWall+w, tlsCPU+c
	}
	mib := float64(b.N * streamMiB)
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / mib }
	b.ReportMetric(per(tcpWall), "tcp-ns/MiB")
	b.ReportMetric(per(tlsWall), "tls-ns/MiB")
	b.ReportMetric(per(tlsWall-tcpWall), "tls-cost-ns/MiB")
	b.ReportMetric(per(tcpCPU), "tcp-cpu-ns/MiB")
	b.ReportMetric(per(tlsCPU), "tls-cpu-ns/MiB")
	b.ReportMetric(per(tlsCPU-tcpCPU), "tls-cost-cpu-ns/MiB")
}
