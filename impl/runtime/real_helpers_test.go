package runtime

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// testMsg is the message the tests exchange.
type testMsg struct {
	N    uint64
	Text string
}

const kindTestMsg wire.Kind = 0x000f

func init() {
	wire.Register(kindTestMsg, "runtime.test", func() wire.Msg { return &testMsg{} })
}

func (*testMsg) WireKind() wire.Kind           { return kindTestMsg }
func (m *testMsg) MarshalWire(e *wire.Encoder) { e.Uint(m.N); e.String(m.Text) }
func (m *testMsg) UnmarshalWire(d *wire.Decoder) error {
	m.N, m.Text = d.Uint(), d.String()
	return d.Err()
}

func frame(text string, n uint64) []byte { return wire.Encode(&testMsg{N: n, Text: text}) }

// summary renders an event as a line the tests compare with cmp.Diff.
func summary(ev Event) string {
	switch ev := ev.(type) {
	case Started:
		return "started"
	case Message:
		if !ev.Opened { // the Real checks every frame's CRC on arrival
			return fmt.Sprintf("message from %s not opened by the runtime", ev.From)
		}
		m, err := ev.Decode()
		if err != nil {
			return fmt.Sprintf("bad message from %s: %v", ev.From, err)
		}
		tm := m.(*testMsg)
		return fmt.Sprintf("msg from=%s %s %d", ev.From, tm.Text, tm.N)
	case Timer:
		return "timer " + ev.Name
	case Done:
		return fmt.Sprintf("done %s value=%v err=%v", ev.Name, ev.Value, ev.Err)
	}
	return fmt.Sprintf("unknown event %T", ev)
}

// recorder is a test actor. It appends every event's summary to events
// without a lock, so reading events after Stop is race-free only if Stop
// waited for the actor's goroutine: `go test -race` checks that. It also
// reports each summary on seen, for tests to wait on.
type recorder struct {
	events []string
	seen   chan string
	on     func(ctx Context, ev Event)
}

func (a *recorder) Handle(ctx Context, ev Event) {
	s := summary(ev)
	a.events = append(a.events, s)
	if a.on != nil {
		a.on(ctx, ev)
	}
	a.seen <- s
}

// newRecorder returns a factory for recorders whose handler is on, and the
// channel their summaries arrive on. *last is the latest incarnation.
func newRecorder(on func(ctx Context, ev Event)) (f Factory, last **recorder, seen chan string) {
	seen = make(chan string, 100000)
	last = new(*recorder)
	f = func() Actor {
		*last = &recorder{seen: seen, on: on}
		return *last
	}
	return f, last, seen
}

// waitFor reads seen until want arrives. The timeout only keeps a broken
// test from hanging; it is not a timing assertion.
func waitFor(t *testing.T, seen <-chan string, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case s := <-seen:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("gave up waiting for %q", want)
		}
	}
}

// waitN reads n summaries from seen.
func waitN(t *testing.T, seen <-chan string, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-seen:
		case <-deadline:
			t.Fatalf("gave up waiting for event %d of %d", i+1, n)
		}
	}
}

// logSink is an slog.Handler that keeps records for assertions.
type logSink struct {
	mu   sync.Mutex
	recs []logRec
	cond chan struct{} // signalled on every record
}

type logRec struct {
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

func newLogSink() *logSink { return &logSink{cond: make(chan struct{}, 1)} }

func (s *logSink) logger() *slog.Logger { return slog.New(&sinkHandler{sink: s}) }

// find returns the records whose message contains msg and whose attrs
// include every key of want with an equal value.
func (s *logSink) find(msg string, want map[string]any) []logRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRec
next:
	for _, r := range s.recs {
		if !strings.Contains(r.Msg, msg) {
			continue
		}
		for k, v := range want {
			if r.Attrs[k] != v {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// waitLog waits until a record matching msg and want is logged.
func (s *logSink) waitLog(t *testing.T, msg string, want map[string]any) logRec {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if rs := s.find(msg, want); len(rs) > 0 {
			return rs[0]
		}
		select {
		case <-s.cond:
		case <-deadline:
			t.Fatalf("gave up waiting for log %q %v; have:\n%s", msg, want, s.dump())
		}
	}
}

func (s *logSink) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, r := range s.recs {
		fmt.Fprintf(&b, "%v %s %v\n", r.Level, r.Msg, r.Attrs)
	}
	return b.String()
}

type sinkHandler struct {
	sink  *logSink
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *sinkHandler) WithGroup(string) slog.Handler            { return h }
func (h *sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Any()
		return true
	})
	h.sink.mu.Lock()
	h.sink.recs = append(h.sink.recs, rec)
	h.sink.mu.Unlock()
	select {
	case h.sink.cond <- struct{}{}:
	default:
	}
	return nil
}

// loopback makes every actor listen on a free loopback port.
func loopback(Addr) string { return "127.0.0.1:0" }

// testTLS makes a self-signed certificate for hosts and the server and
// client configurations that trust it.
func testTLS(t *testing.T, hosts ...string) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "v2a test"},
		DNSNames:              hosts,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// stop stops r and fails the test on an error.
func stop(t *testing.T, r *Real) {
	t.Helper()
	if err := r.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// TestMessageDecode: the CRC is checked once, by whoever received the
// frame: Decode checks it unless the driver did (Opened).
func TestMessageDecode(t *testing.T) {
	good := frame("x", 1)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 1
	for _, tc := range []struct {
		name    string
		msg     Message
		wantErr error
	}{
		{"good", Message{Data: good}, nil},
		{"good, opened", Message{Data: good, Opened: true}, nil},
		{"bad crc", Message{Data: badCRC}, wire.ErrChecksum},
		// What the driver opened is not checked again.
		{"bad crc, opened", Message{Data: badCRC, Opened: true}, nil},
		{"bad magic, opened", Message{Data: append([]byte("x2"), good[2:]...), Opened: true}, wire.ErrMagic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.msg.Decode()
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Decode = %v, %v; want error %v", m, err, tc.wantErr)
			}
			if err == nil && m.(*testMsg).Text != "x" {
				t.Errorf("Decode = %+v, want the message sent", m)
			}
		})
	}
}
