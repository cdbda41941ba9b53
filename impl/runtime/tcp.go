package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// Wire kinds 0x0001-0x000f are reserved for this package.
const (
	// KindHello is the first frame on every connection between actors.
	KindHello wire.Kind = 0x0001
)

func init() {
	wire.Register(KindHello, "runtime.hello", func() wire.Msg { return &hello{} })
}

// hello names the actor that opened a connection, so that the receiver can
// give its Messages the sender's logical Addr rather than an ephemeral port.
type hello struct{ From Addr }

func (*hello) WireKind() wire.Kind           { return KindHello }
func (h *hello) MarshalWire(e *wire.Encoder) { e.String(string(h.From)) }
func (h *hello) UnmarshalWire(d *wire.Decoder) error {
	h.From = Addr(d.String())
	if d.Err() == nil && h.From == "" {
		return errors.New("empty sender address")
	}
	return d.Err()
}

// frameHeaderLen is the length of a wire frame header (magic 2, version 1,
// kind 2, length 4): enough for wire.FrameLen to tell the frame's length.
const frameHeaderLen = 9

// frameUpfront bounds the buffer readFrame allocates for a frame before its
// bytes arrive: a frame up to this long (every replication item) is read
// into one buffer of its exact length, a longer one into a buffer that
// grows as its bytes arrive, so that a corrupt or hostile length costs at
// most this much memory up front, never wire.MaxPayload.
const frameUpfront = 8 << 20

// readFrame reads one frame from br, checks it with wire.Open and returns
// its kind and bytes. It returns io.EOF only for a stream that ended
// cleanly between frames.
func readFrame(br *bufio.Reader) (wire.Kind, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: connection closed inside a header", wire.ErrShort)
		}
		return 0, nil, err
	}
	n, ok, err := wire.FrameLen(hdr[:])
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, nil, fmt.Errorf("%w: header of %d bytes not understood", wire.ErrShort, len(hdr))
	}
	var frame []byte
	if n <= frameUpfront {
		frame = make([]byte, n)
		copy(frame, hdr[:])
		if got, err := io.ReadFull(br, frame[frameHeaderLen:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: connection closed after %d of %d bytes", wire.ErrShort, frameHeaderLen+got, n)
			}
			return 0, nil, err
		}
	} else {
		var buf bytes.Buffer
		buf.Write(hdr[:])
		if _, err := io.CopyN(&buf, br, int64(n-frameHeaderLen)); err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%w: connection closed after %d of %d bytes", wire.ErrShort, buf.Len(), n)
			}
			return 0, nil, err
		}
		frame = buf.Bytes()
	}
	k, _, err := wire.Open(frame)
	if err != nil {
		return 0, nil, err
	}
	return k, frame, nil
}

// accept serves the actor's listener until the incarnation dies.
func (inc *incarnation) accept() {
	defer inc.wg.Done()
	for {
		c, err := inc.ln.Accept()
		if err != nil {
			if inc.dead() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: say so, breathe, retry.
			inc.log.Error("runtime: accept failed", "listen", inc.ln.Addr().String(), "err", err)
			select {
			case <-inc.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !inc.track(c) {
			return
		}
		inc.wg.Add(1)
		go inc.serve(c)
	}
}

// serve reads frames from one inbound connection into the mailbox. The
// first frame must be a hello; a frame that fails wire.Open closes the
// connection, is logged with the peer's name and the wire error, and never
// reaches the actor.
func (inc *incarnation) serve(raw net.Conn) {
	defer inc.wg.Done()
	defer inc.untrack(raw)
	remote := raw.RemoteAddr().String()
	var c net.Conn = raw
	raw.SetDeadline(time.Now().Add(inc.r.opts.HelloTimeout))
	if cfg := inc.r.opts.ServerTLS; cfg != nil {
		tc := tls.Server(raw, cfg)
		if err := tc.HandshakeContext(inc.ctx); err != nil {
			if !inc.dead() {
				attrs := []any{"remote", remote, "err", err}
				if who := presented(err); who != "" {
					attrs = append(attrs, "peer_cert", who)
				}
				if refusedByPeer(err) {
					attrs = append(attrs, "cause", "the peer refused this host's certificate")
				}
				inc.log.Error("runtime: refusing inbound connection: TLS handshake failed", attrs...)
			}
			return
		}
		c = tc
	}
	raw.SetWriteDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 64<<10)
	from, err := readHello(br)
	if err != nil {
		if !inc.dead() {
			inc.log.Error("runtime: closing inbound connection: no valid hello", "remote", remote, "err", err)
		}
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		if err := certNames(tc.ConnectionState(), from); err != nil {
			if !inc.dead() {
				inc.log.Error("runtime: refusing inbound connection: its certificate is not the sender's", "peer", string(from), "remote", remote, "err", err)
			}
			return
		}
	}
	raw.SetReadDeadline(time.Time{})
	admit := func() error { return nil }
	if tc, ok := c.(*tls.Conn); ok && inc.r.opts.Admit != nil {
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			admit = func() error { return inc.r.opts.Admit(pc[0]) }
		}
	}
	for {
		k, frame, err := readFrame(br)
		if err == nil && k == KindHello {
			err = fmt.Errorf("runtime: second hello on a connection")
		}
		if err != nil {
			if err == io.EOF || inc.dead() {
				return
			}
			inc.log.Error("runtime: closing inbound connection on a bad frame", "peer", string(from), "remote", remote, "err", err)
			return
		}
		if err := admit(); err != nil {
			if !inc.dead() {
				inc.log.Error("runtime: closing inbound connection: peer no longer admitted", "peer", string(from), "remote", remote, "err", err)
			}
			return
		}
		inc.post(Message{From: from, Data: frame, Opened: true}) // readFrame checked its CRC
	}
}

// hangup is closed (done) by a connection's watcher when the peer hung up;
// err is what the watcher's read returned, to be read once done is closed.
type hangup struct {
	done chan struct{}
	err  error
}

// handshakeError is a dial's failed TLS handshake.
type handshakeError struct {
	to     Addr
	target string
	err    error
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("tls handshake with %s (%s): %v", e.to, e.target, e.err)
}

func (e *handshakeError) Unwrap() error { return e.err }

// ErrImpostor refuses a connection whose verified client certificate does
// not name the sender its hello claims.
var ErrImpostor = errors.New("runtime: certificate does not name the sender")

// certNames checks that a verified client certificate names the host of
// the sender the hello claims, so that a host the vault CA enrolled as ps01
// cannot send as cs01. Without a verified client certificate (a listener
// that does not ask for one) there is nothing to check.
func certNames(cs tls.ConnectionState, from Addr) error {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	c := cs.PeerCertificates[0]
	if err := c.VerifyHostname(from.Host()); err != nil {
		return fmt.Errorf("%w: hello from %s, certificate for %s", ErrImpostor, from, strings.Join(c.DNSNames, ","))
	}
	return nil
}

// presented names the certificate a peer presented in a handshake that
// failed to verify it ("ps01 issued by v2a vault CA vault-1"), or is empty
// when the failure was not about the peer's certificate.
func presented(err error) string {
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) || len(ve.UnverifiedCertificates) == 0 {
		return ""
	}
	c := ve.UnverifiedCertificates[0]
	name := c.Subject.CommonName
	if len(c.DNSNames) > 0 {
		name = strings.Join(c.DNSNames, ",")
	}
	return fmt.Sprintf("%s issued by %s", name, c.Issuer.CommonName)
}

// refusedByPeer reports whether err is a TLS alert the peer sent: after a
// TLS 1.3 handshake completes on the client's side, the server may still
// refuse the client's certificate, and the client learns it only on its
// next read.
func refusedByPeer(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

func readHello(br *bufio.Reader) (Addr, error) {
	_, frame, err := readFrame(br)
	if err != nil {
		return "", err
	}
	m, err := wire.Decode(frame)
	if err != nil {
		return "", err
	}
	h, ok := m.(*hello)
	if !ok {
		return "", fmt.Errorf("%w (first frame is %s)", ErrHelloMissing, wire.KindName(m.WireKind()))
	}
	return h.From, nil
}

// peer is an actor's outbound link to one destination: a bounded queue and
// the goroutine that drains it over one connection.
type peer struct {
	inc  *incarnation
	to   Addr
	q    chan []byte
	conn net.Conn // owned by the writer goroutine; TLS over raw, or raw
	raw  net.Conn // the TCP connection under conn, tracked for kill
	gone *hangup  // conn's watcher's news that the peer hung up
}

// peer returns the link to `to`, starting its writer on first use; nil once
// the incarnation is dead.
func (inc *incarnation) peer(to Addr) *peer {
	inc.mu.Lock()
	defer inc.mu.Unlock()
	if inc.dead() {
		return nil
	}
	p, ok := inc.peers[to]
	if !ok {
		p = &peer{inc: inc, to: to, q: make(chan []byte, inc.r.opts.SendQueue)}
		inc.peers[to] = p
		inc.wg.Add(1)
		go p.run()
	}
	return p
}

func (p *peer) run() {
	defer p.inc.wg.Done()
	for {
		select {
		case <-p.inc.ctx.Done():
			return
		case f := <-p.q:
			p.write(f)
		}
	}
}

// write sends one frame, dialling first if there is no connection. Any
// failure drops the frame (Send is at-most-once) and the connection, so the
// next frame re-dials.
func (p *peer) write(frame []byte) {
	inc := p.inc
	for attempt := 0; ; attempt++ {
		if p.conn != nil {
			select {
			case <-p.gone.done:
				p.drop()
			default:
			}
		}
		if p.conn == nil {
			c, raw, gone, err := p.dial()
			if err != nil {
				var hs *handshakeError
				switch {
				case inc.dead():
				case errors.As(err, &hs):
					// Not a peer that is down: one that cannot be trusted, or
					// that does not trust us. Say whose certificate it was.
					attrs := []any{"to", string(p.to), "err", err}
					if who := presented(err); who != "" {
						attrs = append(attrs, "peer_cert", who)
					}
					inc.log.Error("runtime: send dropped: cannot connect: TLS handshake failed", attrs...)
				default:
					inc.log.Warn("runtime: send dropped: cannot connect", "to", string(p.to), "err", err)
				}
				return
			}
			p.conn, p.raw, p.gone = c, raw, gone
		}
		p.conn.SetWriteDeadline(time.Now().Add(inc.r.opts.WriteTimeout))
		_, err := p.conn.Write(frame)
		if err == nil {
			return
		}
		refused := p.refused()
		p.drop()
		if refused {
			return // the watcher logged why
		}
		// net.ErrClosed means the watcher closed our end (the peer hung up)
		// before this frame reached the peer: it cannot have been delivered,
		// so one retry on a fresh connection keeps at-most-once.
		if errors.Is(err, net.ErrClosed) && attempt == 0 && !inc.dead() {
			continue
		}
		if !inc.dead() {
			inc.log.Warn("runtime: send dropped: write failed", "to", string(p.to), "err", err)
		}
		return
	}
}

// refused reports, after a failed write on a TLS connection, whether the
// peer refused the connection with a TLS alert (it rejected our
// certificate after the handshake had completed on our side): it gives the
// watcher a moment to read the alert before drop closes the connection.
func (p *peer) refused() bool {
	if p.inc.r.opts.ClientTLS == nil {
		return false
	}
	select {
	case <-p.gone.done:
		return refusedByPeer(p.gone.err)
	case <-time.After(time.Second):
		return false
	}
}

func (p *peer) drop() {
	p.inc.untrack(p.raw)
	p.conn, p.raw, p.gone = nil, nil, nil
}

// dial connects to p.to, shakes hands (TLS if configured) and sends the
// hello. It also starts a watcher that reads the connection: peers never
// write on it, so any read result (EOF, reset) means it is dead; the watcher
// closes gone and the connection, so that the next write re-dials instead of
// writing into a socket whose peer restarted.
func (p *peer) dial() (conn, raw net.Conn, gone *hangup, err error) {
	inc := p.inc
	target, err := inc.r.resolve(p.to)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("resolve %s: %w", p.to, err)
	}
	ctx, cancel := context.WithTimeout(inc.ctx, inc.r.opts.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err = d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, nil, nil, err
	}
	if !inc.track(raw) {
		return nil, nil, nil, ErrStopped
	}
	var c net.Conn = raw
	if cfg := inc.r.opts.ClientTLS; cfg != nil {
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = p.to.Host()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			inc.untrack(raw)
			return nil, nil, nil, &handshakeError{to: p.to, target: target, err: err}
		}
		c = tc
	}
	c.SetWriteDeadline(time.Now().Add(inc.r.opts.WriteTimeout))
	if _, err := c.Write(wire.Encode(&hello{From: inc.e.addr})); err != nil {
		inc.untrack(raw)
		return nil, nil, nil, fmt.Errorf("hello to %s (%s): %w", p.to, target, err)
	}
	gone = &hangup{done: make(chan struct{})}
	inc.wg.Add(1)
	go func() {
		defer inc.wg.Done()
		var b [1]byte
		_, gone.err = c.Read(b[:])
		if refusedByPeer(gone.err) && !inc.dead() {
			inc.log.Error("runtime: connection refused by the peer (TLS); frames sent on it are lost",
				"to", string(p.to), "remote", target, "err", gone.err)
		}
		close(gone.done)
		inc.untrack(raw)
	}()
	return c, raw, gone, nil
}
