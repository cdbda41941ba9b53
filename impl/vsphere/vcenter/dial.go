package vcenter

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/v2a-dr/v2a/impl/vsphere"
)

// Errors of Open (and Dial), besides the port's: the vCenter cannot be
// reached, or it was reached but its certificate is not trusted.
var (
	ErrUnreachable = errors.New("vcenter: unreachable")
	ErrUntrusted   = errors.New("vcenter: server certificate not trusted")
)

// DefaultDialTimeout bounds the TCP connect and the TLS handshake of each
// connection when Options.DialTimeout is zero: an unreachable vCenter is
// reported in seconds, not after the operating system's minutes.
const DefaultDialTimeout = 10 * time.Second

// Options configure Open.
//
// The server's certificate is trusted when it verifies against the system's
// roots (or CAFile's, which replace them), or else when its thumbprint is
// Thumbprint; Insecure trusts any certificate. These are govc's three ways:
// --tls-ca-certs, a known-hosts thumbprint, -k.
type Options struct {
	Username string
	Password string
	// Insecure skips certificate verification. It excludes Thumbprint and
	// CAFile.
	Insecure bool
	// Thumbprint is the SHA-1 (or SHA-256) fingerprint of the server's
	// certificate as govc and vCenter print it: colon-separated hex bytes,
	// "AB:CD:…" (case and colons are not significant).
	Thumbprint string
	// CAFile is a PEM file of CA certificates to verify the server with,
	// instead of the system's roots.
	CAFile string
	// DialTimeout bounds each TCP connect and TLS handshake; 0 for
	// DefaultDialTimeout.
	DialTimeout time.Duration
}

// Dial logs in to the vCenter (or vcsim) SDK at rawURL
// ("https://vc.example/sdk") with user and password. insecure skips TLS
// certificate verification, for self-signed lab certificates. It is Open
// with just those options.
func Dial(ctx context.Context, rawURL, user, password string, insecure bool) (*Client, error) {
	return Open(ctx, rawURL, Options{Username: user, Password: password, Insecure: insecure})
}

// Open logs in to the vCenter (or vcsim) SDK at rawURL as o says. Close
// logs the session out. An unreachable address gives an error wrapping
// ErrUnreachable that names the host, the port and what failed; a
// certificate that o does not trust gives one wrapping ErrUntrusted that
// names the server's SHA-1 thumbprint and the three ways to trust it.
func Open(ctx context.Context, rawURL string, o Options) (*Client, error) {
	u, err := soap.ParseURL(rawURL)
	if err != nil || u == nil {
		return nil, fmt.Errorf("vsphere: dial %s: %w: %v", rawURL, vsphere.ErrInvalidArgument, err)
	}
	where := redact(u)
	if o.Insecure && (o.Thumbprint != "" || o.CAFile != "") {
		return nil, fmt.Errorf("vsphere: dial %s: %w: insecure excludes a thumbprint or CA file (choose one way to trust the server)", where, vsphere.ErrInvalidArgument)
	}
	d := &tlsDialer{insecure: o.Insecure, timeout: o.DialTimeout}
	if d.timeout <= 0 {
		d.timeout = DefaultDialTimeout
	}
	if o.Thumbprint != "" {
		if d.thumbprint, err = ParseThumbprint(o.Thumbprint); err != nil {
			return nil, fmt.Errorf("vsphere: dial %s: %w", where, err)
		}
	}
	if o.CAFile != "" {
		if d.roots, err = loadCAFile(o.CAFile); err != nil {
			return nil, fmt.Errorf("vsphere: dial %s: %w", where, err)
		}
	}
	if o.Username != "" {
		u.User = url.UserPassword(o.Username, o.Password)
	}

	sc := soap.NewClient(u, o.Insecure)
	t := sc.DefaultTransport()
	t.DialContext = d.dial
	t.DialTLSContext = d.dialTLS
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("vsphere: dial %s: %w", where, transportError(err))
	}
	sm := session.NewManager(vc)
	if u.User != nil {
		if err := sm.Login(ctx, u.User); err != nil {
			return nil, fmt.Errorf("vsphere: dial %s: login as %s: %w", where, o.Username, transportError(err))
		}
	}
	return &Client{c: vc, logout: sm.Logout}, nil
}

func redact(u *url.URL) string {
	v := *u
	v.User = nil
	return v.String()
}

// transportError unwraps the HTTP client's "Post URL: …" from a dial or
// trust error, whose own message names the address already.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && (errors.Is(ue.Err, ErrUnreachable) || errors.Is(ue.Err, ErrUntrusted)) {
		return ue.Err
	}
	return err
}

// ParseThumbprint parses a certificate fingerprint written as hex bytes,
// with or without colons, in either case: 20 bytes (SHA-1, as govc prints
// it) or 32 (SHA-256).
func ParseThumbprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || (len(b) != sha1.Size && len(b) != sha256.Size) {
		return nil, fmt.Errorf("%w: thumbprint %q: want 20 (SHA-1) or 32 (SHA-256) colon-separated hex bytes, as govc prints them", vsphere.ErrInvalidArgument, s)
	}
	return b, nil
}

// Thumbprint is the SHA-1 thumbprint of cert as vCenter and govc print it:
// upper-case hex bytes joined by colons.
func Thumbprint(cert *x509.Certificate) string { return soap.ThumbprintSHA1(cert) }

func loadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: CA file: %v", vsphere.ErrInvalidArgument, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", vsphere.ErrInvalidArgument, path)
	}
	return pool, nil
}

// tlsDialer makes the SDK's connections: a bounded TCP connect and TLS
// handshake, and the trust decision Options describes.
type tlsDialer struct {
	insecure   bool
	thumbprint []byte         // SHA-1 or SHA-256 of the trusted certificate; nil for none
	roots      *x509.CertPool // nil for the system's
	timeout    time.Duration
}

func (d *tlsDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	conn, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		host, port, _ := net.SplitHostPort(addr)
		var dns *net.DNSError
		if errors.As(err, &dns) {
			return nil, fmt.Errorf("%w: host %s port %s: name lookup: %s", ErrUnreachable, host, port, dns.Err)
		}
		return nil, fmt.Errorf("%w: host %s port %s: TCP connect: %s", ErrUnreachable, host, port, d.reason(err))
	}
	return conn, nil
}

// reason says why a connect or handshake failed, without the "dial tcp
// ADDR: connect:" prefixes the caller's message says already.
func (d *tlsDialer) reason(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no answer within %v", d.timeout)
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

func (d *tlsDialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	raw, err := d.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	// Verification is done here, after the handshake, so that a failure
	// can say what the server presented.
	conn := tls.Client(raw, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("%w: host %s port %s: TLS handshake: %s", ErrUnreachable, host, port, d.reason(err))
	}
	if err := d.verify(host, port, conn.ConnectionState().PeerCertificates); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// verify decides whether the server's certificate chain is trusted.
func (d *tlsDialer) verify(host, port string, chain []*x509.Certificate) error {
	if d.insecure {
		return nil
	}
	if len(chain) == 0 {
		return fmt.Errorf("%w: host %s port %s presented no certificate", ErrUntrusted, host, port)
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{Roots: d.roots, DNSName: host, Intermediates: x509.NewCertPool()}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, verr := leaf.Verify(opts)
	if verr == nil {
		return nil
	}
	actual := Thumbprint(leaf)
	if d.thumbprint != nil {
		var sum []byte
		if len(d.thumbprint) == sha1.Size {
			s := sha1.Sum(leaf.Raw)
			sum = s[:]
		} else {
			s := sha256.Sum256(leaf.Raw)
			sum = s[:]
		}
		if string(sum) == string(d.thumbprint) {
			return nil
		}
		return fmt.Errorf("%w: host %s port %s: certificate thumbprint mismatch: the target expects %s, the server presents %s (SHA-256 %s); if the vCenter's certificate was replaced, update thumbprint",
			ErrUntrusted, host, port, formatThumbprint(d.thumbprint), actual, soap.ThumbprintSHA256(leaf))
	}
	src := "the system's roots"
	if d.roots != nil {
		src = "caFile"
	}
	return fmt.Errorf("%w: host %s port %s: %v (verified against %s); the server's SHA-1 thumbprint is %s: trust it with one of thumbprint: %s (govc --thumbprint), caFile: a PEM file of its CA, or insecure: true (no verification)",
		ErrUntrusted, host, port, verr, src, actual, actual)
}

func formatThumbprint(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}
