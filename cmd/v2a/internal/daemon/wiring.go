package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// newLogger builds the daemon's slog logger on w.
func newLogger(daemon string, c Config, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("%w: %s: log-level %q: want debug, info, warn or error", ErrConfig, daemon, c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch c.LogFormat {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("%w: %s: log-format %q: want text or json", ErrConfig, daemon, c.LogFormat)
	}
	return slog.New(h).With("daemon", daemon), nil
}

// TLS file names in a --tls-dir.
const (
	CertFile = "cert.pem" // this daemon's certificate (chain), naming its logical host
	KeyFile  = "key.pem"  // its private key
	CAFile   = "ca.pem"   // the vault's CA: peers must present a certificate it signed
)

// loadTLS reads dir's PEM files into the server and client configurations
// of mutual TLS: each side presents cert.pem and accepts only a peer whose
// certificate ca.pem signed. The client's ServerName is left empty: the
// runtime fills in the destination's logical host (cs01, ps01).
func loadTLS(daemon, dir string) (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: tls-dir %s: %w", ErrConfig, daemon, dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: tls-dir %s: %w", ErrConfig, daemon, dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("%w: %s: tls-dir %s: %s holds no PEM certificate", ErrConfig, daemon, dir, CAFile)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	client = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}
	return server, client, nil
}

// peerMap resolves logical addresses through --peers: an entry for the
// whole "host:port" wins, then one for the host, whose value keeps the
// logical port when it has none ("ps01=127.0.0.3" dials 127.0.0.3:9443).
// A destination with no entry is dialled by its own name, as DNS would
// resolve it.
type peerMap map[string]string

func parsePeers(daemon string, m map[string]string) (peerMap, error) {
	p := peerMap{}
	for k, v := range m {
		if k == "" || v == "" {
			return nil, fmt.Errorf("%w: %s: peers: empty entry %q=%q", ErrConfig, daemon, k, v)
		}
		p[strings.ToLower(k)] = v
	}
	return p, nil
}

func (p peerMap) resolve(a runtime.Addr) string {
	if v, ok := p[strings.ToLower(string(a))]; ok {
		return v
	}
	if v, ok := p[strings.ToLower(a.Host())]; ok {
		if _, _, err := net.SplitHostPort(v); err == nil {
			return v
		}
		return net.JoinHostPort(v, fmt.Sprint(a.Port()))
	}
	return string(a)
}

// listenError turns the runtime's failed listen into a clear one.
func listenError(daemon string, self runtime.Addr, listen string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: %s (%s) cannot listen on %s: address already in use (is another daemon running there?)", ErrConfig, daemon, self, listen)
	}
	return fmt.Errorf("%w: %s (%s) cannot listen on %s: %w", ErrConfig, daemon, self, listen, err)
}
