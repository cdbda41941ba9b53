package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	goruntime "runtime"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	addrA Addr = "a.example:9443"
	addrB Addr = "b.example:9443"
)

// TestPingPong: A sends n frames to B in one handler; B echoes each. Both
// see every frame, in order, from the other's logical address — over plain
// TCP and over TLS.
func TestPingPong(t *testing.T) {
	const n = 300
	srvTLS, cliTLS := testTLS(t, "a.example", "b.example")
	for _, tc := range []struct {
		name string
		opts RealOptions
	}{
		{"tcp", RealOptions{Listen: loopback}},
		{"tls", RealOptions{Listen: loopback, ServerTLS: srvTLS, ClientTLS: cliTLS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReal(tc.opts)
			fa, a, seenA := newRecorder(func(ctx Context, ev Event) {
				if _, ok := ev.(Started); ok {
					for i := range uint64(n) {
						ctx.Send(addrB, frame("ping", i))
					}
				}
			})
			fb, b, _ := newRecorder(func(ctx Context, ev Event) {
				if m, ok := ev.(Message); ok {
					in, _ := wire.Decode(m.Data)
					ctx.Send(m.From, frame("pong", in.(*testMsg).N))
				}
			})
			// B first, so that A's first dial finds it listening.
			if err := r.Spawn(addrB, fb); err != nil {
				t.Fatal(err)
			}
			if err := r.Spawn(addrA, fa); err != nil {
				t.Fatal(err)
			}
			waitFor(t, seenA, fmt.Sprintf("msg from=%s pong %d", addrB, n-1))
			stop(t, r)

			wantA, wantB := []string{"started"}, []string{"started"}
			for i := range n {
				wantA = append(wantA, fmt.Sprintf("msg from=%s pong %d", addrB, i))
				wantB = append(wantB, fmt.Sprintf("msg from=%s ping %d", addrA, i))
			}
			if diff := cmp.Diff(wantA, (*a).events); diff != "" {
				t.Errorf("A's events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantB, (*b).events); diff != "" {
				t.Errorf("B's events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTwoReals: actors in different Reals (processes, in production) reach
// each other through Resolve and BoundAddr.
func TestTwoReals(t *testing.T) {
	var r1, r2 *Real
	r1 = NewReal(RealOptions{Listen: loopback, Resolve: func(a Addr) (string, error) { return r2.BoundAddr(a), nil }})
	r2 = NewReal(RealOptions{Listen: loopback, Resolve: func(a Addr) (string, error) { return r1.BoundAddr(a), nil }})
	fa, _, seenA := newRecorder(func(ctx Context, ev Event) {
		if m, ok := ev.(Message); ok {
			ctx.Send(m.From, frame("pong", 1))
		}
	})
	fb, b, seenB := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Send(addrA, frame("ping", 1))
		}
	})
	if err := r1.Spawn(addrA, fa); err != nil {
		t.Fatal(err)
	}
	if err := r2.Spawn(addrB, fb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenA, "msg from=b.example:9443 ping 1")
	waitFor(t, seenB, "msg from=a.example:9443 pong 1")
	stop(t, r1)
	stop(t, r2)
	if diff := cmp.Diff([]string{"started", "msg from=a.example:9443 pong 1"}, (*b).events); diff != "" {
		t.Errorf("B's events (-want +got):\n%s", diff)
	}
}

// TestTLSUntrustedServer: a client that does not trust the server's
// certificate drops its frame and logs why; the server logs the failed
// handshake and its actor sees nothing.
func TestTLSUntrustedServer(t *testing.T) {
	srvTLS, _ := testTLS(t, "b.example")
	_, otherCli := testTLS(t, "b.example") // trusts another CA
	logs1, logs2 := newLogSink(), newLogSink()
	var r1 *Real
	r1 = NewReal(RealOptions{Listen: loopback, ServerTLS: srvTLS, Logger: logs1.logger()})
	r2 := NewReal(RealOptions{Listen: loopback, ClientTLS: otherCli, Logger: logs2.logger(),
		Resolve: func(a Addr) (string, error) { return r1.BoundAddr(a), nil }})
	fb, b, _ := newRecorder(nil)
	if err := r1.Spawn(addrB, fb); err != nil {
		t.Fatal(err)
	}
	fa, _, _ := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Send(addrB, frame("secret", 1))
		}
	})
	if err := r2.Spawn(addrA, fa); err != nil {
		t.Fatal(err)
	}
	rec := logs2.waitLog(t, "cannot connect", map[string]any{"actor": string(addrA), "to": string(addrB)})
	var unknownCA x509.UnknownAuthorityError
	if err, _ := rec.Attrs["err"].(error); !errors.As(err, &unknownCA) {
		t.Errorf("client error = %v, want an x509.UnknownAuthorityError", rec.Attrs["err"])
	}
	logs1.waitLog(t, "TLS handshake failed", map[string]any{"actor": string(addrB)})
	stop(t, r1)
	stop(t, r2)
	if diff := cmp.Diff([]string{"started"}, (*b).events); diff != "" {
		t.Errorf("B's events (-want +got):\n%s", diff)
	}
}

// TestTimers: timers fire; a cancelled timer never fires, even one that
// had already fired and sat in the mailbox when it was cancelled.
func TestTimers(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	f, a, seen := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); !ok {
			return
		}
		ctx.After(1, "one")
		ctx.After(2, "two")
		ctx.Cancel(ctx.After(3600e9, "hour-cancelled"))
		fired := ctx.After(0, "fired-then-cancelled")
		// Wait (in the handler, so nothing is handled meanwhile) until the
		// timer has posted its event, then cancel it.
		for ctx.(*realContext).inc.mb.len() == 0 {
			goruntime.Gosched()
		}
		ctx.Cancel(fired)
		ctx.Cancel(fired) // twice does nothing
		ctx.Cancel(9999)  // unknown does nothing
		ctx.After(5e6, "last")
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	waitN(t, seen, 4)
	stop(t, r)
	evs := (*a).events
	// Real timers of different durations may be handled in either order
	// under load; compare as a set after the first event.
	sorted := append([]string(nil), evs[1:]...)
	sort.Strings(sorted)
	want := []string{"timer last", "timer one", "timer two"}
	if diff := cmp.Diff(want, sorted); diff != "" || evs[0] != "started" {
		t.Errorf("events %q; timers (-want +got):\n%s", evs, diff)
	}
}

// TestOps: an Op's value and error come back as Done; a panicking Op comes
// back as an error wrapping ErrOpPanic; the actor goes on handling events
// while an Op runs.
func TestOps(t *testing.T) {
	errDisk := errors.New("disk: gone")
	release := make(chan struct{})
	ops := []Op{
		{Name: "value", Run: func(context.Context) (any, error) { return 42, nil }},
		{Name: "error", Run: func(context.Context) (any, error) { return nil, errDisk }},
		{Name: "panic", Run: func(context.Context) (any, error) { panic("boom") }},
		{Name: "nil-run"},
		{Name: "slow", Run: func(context.Context) (any, error) { <-release; return "late", nil }},
	}
	var dones atomic.Pointer[map[string]Done]
	m := map[string]Done{}
	dones.Store(&m)
	ids := map[OpID]string{}
	r := NewReal(RealOptions{Listen: loopback})
	f, _, seen := newRecorder(func(ctx Context, ev Event) {
		switch ev := ev.(type) {
		case Started:
			for _, op := range ops {
				ids[ctx.Start(op)] = op.Name
			}
			ctx.After(0, "tick")
		case Timer:
			close(release) // the slow Op is still running: the actor is not blocked
		case Done:
			if ids[ev.ID] != ev.Name {
				panic(fmt.Sprintf("Done %d named %q, started as %q", ev.ID, ev.Name, ids[ev.ID]))
			}
			(*dones.Load())[ev.Name] = ev
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	waitN(t, seen, 2+len(ops)) // Started, the Timer, and one Done per Op
	stop(t, r)
	got := *dones.Load()
	if len(got) != len(ops) {
		t.Fatalf("got %d Done events, want %d: %v", len(got), len(ops), got)
	}
	for _, tc := range []struct {
		name    string
		value   any
		wantErr error
	}{
		{"value", 42, nil},
		{"error", nil, errDisk},
		{"panic", nil, ErrOpPanic},
		{"nil-run", nil, ErrOpPanic},
		{"slow", "late", nil},
	} {
		d := got[tc.name]
		if d.Value != tc.value || !errors.Is(d.Err, tc.wantErr) || (tc.wantErr == nil) != (d.Err == nil) {
			t.Errorf("%s: Done{Value: %v, Err: %v}, want value %v and error %v", tc.name, d.Value, d.Err, tc.value, tc.wantErr)
		}
	}
}

// TestBadInbound: a raw TCP client that sends a bad stream has its
// connection closed with a logged error naming the peer and the wire error;
// the actor sees none of it.
func TestBadInbound(t *testing.T) {
	helloA := wire.Encode(&hello{From: "mallory.example:1"})
	good := frame("x", 1)
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x20; return b }
	huge := bytes.Clone(good)
	binary.BigEndian.PutUint32(huge[5:], wire.MaxPayload+1)
	for _, tc := range []struct {
		name     string
		send     []byte
		logMsg   string
		peer     string
		wantErr  error
		wantText string
	}{
		{"corrupt payload", cat(helloA, flip(good, 10)), "bad frame", "mallory.example:1", wire.ErrChecksum, ""},
		{"bad magic", cat(helloA, flip(good, 0)), "bad frame", "mallory.example:1", wire.ErrMagic, ""},
		{"bad version", cat(helloA, flip(good, 2)), "bad frame", "mallory.example:1", wire.ErrVersion, ""},
		{"length too large", cat(helloA, huge), "bad frame", "mallory.example:1", wire.ErrTooLarge, ""},
		{"truncated", cat(helloA, good[:len(good)-1]), "bad frame", "mallory.example:1", wire.ErrShort, ""},
		{"no hello", good, "no valid hello", "", ErrHelloMissing, ""},
		{"corrupt hello", flip(helloA, 12), "no valid hello", "", wire.ErrChecksum, ""},
		{"second hello", cat(helloA, helloA), "bad frame", "mallory.example:1", nil, "second hello"},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "no valid hello", "", wire.ErrMagic, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := newLogSink()
			r := NewReal(RealOptions{Listen: loopback, Logger: logs.logger()})
			fb, b, seenB := newRecorder(nil)
			if err := r.Spawn(addrB, fb); err != nil {
				t.Fatal(err)
			}
			c, err := net.Dial("tcp", r.BoundAddr(addrB))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite() // the truncated case needs the end of stream
			// The server closes the connection: the client reads EOF (or a
			// reset) and nothing else.
			if n, err := io.Copy(io.Discard, bufio.NewReader(c)); n != 0 {
				t.Errorf("client read %d bytes (err %v), want the connection closed", n, err)
			}
			want := map[string]any{"actor": string(addrB)}
			if tc.peer != "" {
				want["peer"] = tc.peer
			}
			rec := logs.waitLog(t, tc.logMsg, want)
			err, _ = rec.Attrs["err"].(error)
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("logged err = %v, want %v", err, tc.wantErr)
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.wantText)) {
				t.Errorf("logged err = %v, want it to say %q", err, tc.wantText)
			}
			if rec.Attrs["remote"] != c.LocalAddr().String() {
				t.Errorf("logged remote = %v, want %s", rec.Attrs["remote"], c.LocalAddr())
			}
			// A good frame from A after the bad connection closed arrives,
			// and arrives alone: had the bad frame been delivered, it would
			// have been queued before the close, so before this one.
			fa, _, _ := newRecorder(func(ctx Context, ev Event) {
				if _, ok := ev.(Started); ok {
					ctx.Send(addrB, frame("good", 7))
				}
			})
			if err := r.Spawn(addrA, fa); err != nil {
				t.Fatal(err)
			}
			waitFor(t, seenB, "msg from=a.example:9443 good 7")
			stop(t, r)
			if diff := cmp.Diff([]string{"started", "msg from=a.example:9443 good 7"}, (*b).events); diff != "" {
				t.Errorf("B's events (-want +got):\n%s", diff)
			}
		})
	}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestSendNeverBlocks: frames to an address nobody listens on, to one that
// does not resolve, and beyond a full send queue are dropped with a log;
// the sending actor goes on and its other frames arrive.
func TestSendNeverBlocks(t *testing.T) {
	const nobody, unknown Addr = "nobody.example:1", "unknown.example:1"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	errUnknown := errors.New("no such host")
	resolving := make(chan struct{}, 1)
	release := make(chan struct{})
	logs := newLogSink()
	var r *Real
	r = NewReal(RealOptions{Listen: loopback, Logger: logs.logger(), SendQueue: 4,
		Resolve: func(a Addr) (string, error) {
			switch a {
			case nobody:
				// Hold nobody's writer in its first dial so that its queue
				// fills: the sender must still not block.
				select {
				case resolving <- struct{}{}:
					<-release
				default:
				}
				return closedPort, nil
			case unknown:
				return "", errUnknown
			}
			return r.BoundAddr(a), nil
		}})
	fb, _, seenB := newRecorder(nil)
	if err := r.Spawn(addrB, fb); err != nil {
		t.Fatal(err)
	}
	fa, _, _ := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Send(nobody, frame("lost", 0))
			<-resolving // nobody's writer is now stuck in Resolve
			for i := range uint64(100) {
				ctx.Send(nobody, frame("lost", i))
			}
			ctx.Send(unknown, frame("lost", 0))
			ctx.Send(addrB, []byte("not a frame"))
			ctx.Send(addrB, frame("arrives", 1))
		}
	})
	if err := r.Spawn(addrA, fa); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenB, "msg from=a.example:9443 arrives 1")
	logs.waitLog(t, "send queue full", map[string]any{"actor": string(addrA), "to": string(nobody)})
	rec := logs.waitLog(t, "send dropped", map[string]any{"to": string(addrB)})
	if err, _ := rec.Attrs["err"].(error); !errors.Is(err, ErrNotFrame) {
		t.Errorf("non-frame send logged err %v, want ErrNotFrame", rec.Attrs["err"])
	}
	rec = logs.waitLog(t, "cannot connect", map[string]any{"to": string(unknown)})
	if err, _ := rec.Attrs["err"].(error); !errors.Is(err, errUnknown) {
		t.Errorf("unresolvable send logged err %v, want %v", rec.Attrs["err"], errUnknown)
	}
	close(release)
	logs.waitLog(t, "cannot connect", map[string]any{"to": string(nobody)})
	stop(t, r)
}

// TestCrashRestart: a crashed actor loses its state and its connections;
// Restart calls the factory again, delivers Started first, and peers reach
// the new incarnation (retrying on a timer, as the contract asks).
func TestCrashRestart(t *testing.T) {
	r := NewReal(RealOptions{Listen: loopback})
	fa, _, _ := newRecorder(func(ctx Context, ev Event) {
		if m, ok := ev.(Message); ok {
			in, _ := wire.Decode(m.Data)
			ctx.Send(m.From, frame("ack", in.(*testMsg).N))
		}
	})
	var lives uint64 // touched only by B's loop, and by the test after Stop
	var pending TimerID
	fbRec, b, seenB := newRecorder(func(ctx Context, ev Event) {
		switch ev.(type) {
		case Started:
			ctx.Send(addrA, frame("up", lives))
			pending = ctx.After(2e7, "retry")
		case Timer:
			ctx.Send(addrA, frame("up", lives))
			pending = ctx.After(2e7, "retry")
		case Message:
			ctx.Cancel(pending)
		}
	})
	fb := func() Actor { lives++; return fbRec() }
	if err := r.Spawn(addrA, fa); err != nil {
		t.Fatal(err)
	}
	if err := r.Spawn(addrB, fb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenB, "msg from=a.example:9443 ack 1")
	first := *b
	if err := r.Crash(addrB); err != nil {
		t.Fatal(err)
	}
	if got := r.BoundAddr(addrB); got != "" {
		t.Errorf("BoundAddr of a crashed actor = %q, want \"\"", got)
	}
	firstEvents := append([]string(nil), first.events...) // B's loop has ended
	if err := r.Restart(addrB); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenB, "msg from=a.example:9443 ack 2")
	stop(t, r)
	if *b == first {
		t.Fatal("Restart did not build a new actor")
	}
	if diff := cmp.Diff(firstEvents, first.events); diff != "" {
		t.Errorf("the crashed incarnation handled events after Crash (-at crash +at end):\n%s", diff)
	}
	if got := (*b).events[0]; got != "started" {
		t.Errorf("restarted actor's first event = %q, want started", got)
	}
	if lives != 2 {
		t.Errorf("factory called %d times, want 2", lives)
	}
}

// TestRandSeeded: an actor's Rand depends on the seed and its address only.
func TestRandSeeded(t *testing.T) {
	draw := func(seed uint64, addr Addr) []uint64 {
		r := NewReal(RealOptions{Seed: seed, Listen: loopback})
		var got []uint64
		f, _, seen := newRecorder(func(ctx Context, ev Event) {
			for range 4 {
				got = append(got, ctx.Rand().Uint64())
			}
		})
		if err := r.Spawn(addr, f); err != nil {
			t.Fatal(err)
		}
		waitFor(t, seen, "started")
		stop(t, r)
		return got
	}
	base := draw(1, addrA)
	for _, tc := range []struct {
		name string
		seed uint64
		addr Addr
		same bool
	}{
		{"same seed and address", 1, addrA, true},
		{"other address", 1, addrB, false},
		{"other seed", 2, addrA, false},
	} {
		got := draw(tc.seed, tc.addr)
		if same := cmp.Equal(base, got); same != tc.same {
			t.Errorf("%s: draws %v vs %v: equal=%v, want %v", tc.name, base, got, same, tc.same)
		}
	}
}

// TestStop: Stop waits for actors and Ops; calls after it fail with
// ErrStopped; an actor's panic is reported by Stop.
func TestStop(t *testing.T) {
	logs := newLogSink()
	r := NewReal(RealOptions{Listen: loopback, Logger: logs.logger()})
	release := make(chan struct{})
	var finished bool // written by the Op, read after Stop: -race checks Stop waited
	f, _, seen := newRecorder(func(ctx Context, ev Event) {
		if _, ok := ev.(Started); ok {
			ctx.Start(Op{Name: "slow", Run: func(context.Context) (any, error) {
				<-release
				for range 1000 {
					goruntime.Gosched()
				}
				finished = true
				return nil, nil
			}})
		}
	})
	if err := r.Spawn(addrA, f); err != nil {
		t.Fatal(err)
	}
	if err := r.Spawn(addrA, f); !errors.Is(err, ErrActorExists) {
		t.Errorf("second Spawn of %s: %v, want ErrActorExists", addrA, err)
	}
	if err := r.Restart("nobody:1"); !errors.Is(err, ErrNoActor) {
		t.Errorf("Restart of an unknown actor: %v, want ErrNoActor", err)
	}
	panicky := func() Actor { return &recorder{seen: seen, on: func(Context, Event) { panic("handler bug") }} }
	if err := r.Spawn(addrB, panicky); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seen, "started")
	logs.waitLog(t, "actor panicked", map[string]any{"actor": string(addrB)})
	close(release)
	err := r.Stop()
	if !finished {
		t.Error("Stop returned before the Op finished")
	}
	if !errors.Is(err, ErrActorPanic) {
		t.Errorf("Stop = %v, want the panic of %s (ErrActorPanic)", err, addrB)
	}
	for name, err := range map[string]error{
		"Spawn":   r.Spawn("c:1", f),
		"Crash":   r.Crash(addrA),
		"Restart": r.Restart(addrA),
	} {
		if !errors.Is(err, ErrStopped) {
			t.Errorf("%s after Stop: %v, want ErrStopped", name, err)
		}
	}
}

// TestFrameHeaderLen pins frameHeaderLen to what wire.FrameLen needs.
func TestFrameHeaderLen(t *testing.T) {
	f := frame("x", 1)
	if _, ok, _ := wire.FrameLen(f[:frameHeaderLen-1]); ok {
		t.Errorf("wire.FrameLen is satisfied by %d bytes; frameHeaderLen %d is too long", frameHeaderLen-1, frameHeaderLen)
	}
	if n, ok, err := wire.FrameLen(f[:frameHeaderLen]); !ok || err != nil || n != len(f) {
		t.Errorf("wire.FrameLen(%d bytes) = %d, %v, %v; want %d", frameHeaderLen, n, ok, err, len(f))
	}
}

// TestSpawnListenFails: a Spawn whose listen fails returns the error and
// leaves nothing behind.
func TestSpawnListenFails(t *testing.T) {
	r := NewReal(RealOptions{Listen: func(Addr) string { return "127.0.0.1:-1" }})
	f, _, _ := newRecorder(nil)
	if err := r.Spawn(addrA, f); err == nil {
		t.Fatal("Spawn with an impossible listen address succeeded")
	}
	if err := r.Restart(addrA); !errors.Is(err, ErrNoActor) {
		t.Errorf("Restart after a failed Spawn: %v, want ErrNoActor", err)
	}
	stop(t, r)
}
