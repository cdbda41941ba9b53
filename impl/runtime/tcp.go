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

// readFrame reads one frame from br, checks it with wire.Open and returns
// its kind and bytes. It returns
// io.EOF only for a stream that ended cleanly between frames. The frame's
// buffer grows as bytes arrive, so a corrupt length does not allocate
// wire.MaxPayload up front.
func readFrame(br *bufio.Reader) (wire.Kind, []byte, error) {
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, br, frameHeaderLen); err != nil {
		if err == io.EOF && buf.Len() > 0 {
			err = fmt.Errorf("%w: connection closed inside a header", wire.ErrShort)
		}
		return 0, nil, err
	}
	n, ok, err := wire.FrameLen(buf.Bytes())
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		return 0, nil, fmt.Errorf("%w: header of %d bytes not understood", wire.ErrShort, buf.Len())
	}
	if _, err := io.CopyN(&buf, br, int64(n-frameHeaderLen)); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: connection closed after %d of %d bytes", wire.ErrShort, buf.Len(), n)
		}
		return 0, nil, err
	}
	frame := buf.Bytes()
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
	if cfg := inc.r.opts.ServerTLS; cfg != nil {
		c = tls.Server(raw, cfg)
	}
	c.SetReadDeadline(time.Now().Add(inc.r.opts.HelloTimeout))
	br := bufio.NewReaderSize(c, 64<<10)
	from, err := readHello(br)
	if err != nil {
		if !inc.dead() {
			inc.log.Error("runtime: closing inbound connection: no valid hello", "remote", remote, "err", err)
		}
		return
	}
	c.SetReadDeadline(time.Time{})
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
		inc.post(Message{From: from, Data: frame})
	}
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
	conn net.Conn      // owned by the writer goroutine; TLS over raw, or raw
	raw  net.Conn      // the TCP connection under conn, tracked for kill
	gone chan struct{} // closed by conn's watcher when the peer hung up
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
			case <-p.gone:
				p.drop()
			default:
			}
		}
		if p.conn == nil {
			c, raw, gone, err := p.dial()
			if err != nil {
				if !inc.dead() {
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
		p.drop()
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

func (p *peer) drop() {
	p.inc.untrack(p.raw)
	p.conn, p.raw, p.gone = nil, nil, nil
}

// dial connects to p.to, shakes hands (TLS if configured) and sends the
// hello. It also starts a watcher that reads the connection: peers never
// write on it, so any read result (EOF, reset) means it is dead; the watcher
// closes gone and the connection, so that the next write re-dials instead of
// writing into a socket whose peer restarted.
func (p *peer) dial() (conn, raw net.Conn, gone chan struct{}, err error) {
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
			return nil, nil, nil, fmt.Errorf("tls handshake with %s (%s): %w", p.to, target, err)
		}
		c = tc
	}
	c.SetWriteDeadline(time.Now().Add(inc.r.opts.WriteTimeout))
	if _, err := c.Write(wire.Encode(&hello{From: inc.e.addr})); err != nil {
		inc.untrack(raw)
		return nil, nil, nil, fmt.Errorf("hello to %s (%s): %w", p.to, target, err)
	}
	gone = make(chan struct{})
	inc.wg.Add(1)
	go func() {
		defer inc.wg.Done()
		var b [1]byte
		c.Read(b[:])
		close(gone)
		inc.untrack(raw)
	}()
	return c, raw, gone, nil
}
