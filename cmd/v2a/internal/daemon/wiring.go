package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/pki/enroll"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
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

// TLS file names in a --tls-dir (pki's).
const (
	CertFile = pki.CertFile // this daemon's certificate, naming its logical host
	KeyFile  = pki.KeyFile  // its private key
	CAFile   = pki.CAFile   // the vault's CA: peers must present a certificate it signed
)

// setUpTLS prepares the daemon's identity in c.TLSDir and loads it
// (pki.LoadIdentity: a certificate that is expired, not yet valid, not the
// key's, or not signed by ca.pem is an ErrConfig error naming the
// directory).
//
// The configuration server is the vault's CA: at first start it makes the
// CA and its own certificate there (pki.InitServer), returned with the CA
// (startEnrollment then serves the enrollment endpoint). Another daemon
// given c.Enroll whose directory has no certificate yet enrolls first: it
// proves the passphrase and writes what the configuration server issued (a
// refusal, such as "wrong vault passphrase", is an ErrConfig error).
func setUpTLS(ctx context.Context, daemon string, c Config, pass string, log *slog.Logger) (pki.Identity, *pki.CA, error) {
	if daemon == "configsrv" {
		ca, id, err := pki.InitServer(c.TLSDir, c.VaultID, c.Host, time.Now())
		if err != nil {
			return pki.Identity{}, nil, fmt.Errorf("%w: configsrv: tls-dir %s: %w", ErrConfig, c.TLSDir, err)
		}
		return id, ca, nil
	}
	if c.Enroll != "" {
		if _, err := os.Stat(filepath.Join(c.TLSDir, CertFile)); errors.Is(err, os.ErrNotExist) {
			host := c.Host
			if daemon == "agent" {
				host = c.Machine
			}
			ectx, cancel := context.WithTimeout(ctx, EnrollWait)
			var id pki.Identity
			err := retryUnreachable(ectx, log, c.Enroll, func() (err error) {
				id, err = enroll.Enroll(ectx, c.Enroll, host, pass, c.TLSDir)
				return err
			})
			cancel()
			if err != nil {
				return pki.Identity{}, nil, fmt.Errorf("%w: %s: enroll at %s as %s: %w", ErrConfig, daemon, c.Enroll, host, err)
			}
			log.Info("daemon: enrolled", "host", id.Host, "enroll", c.Enroll, "tls-dir", c.TLSDir,
				"not_after", id.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	id, err := pki.OS.LoadIdentity(c.TLSDir, time.Now())
	if err != nil {
		hint := ""
		if errors.Is(err, pki.ErrNoIdentity) && c.Enroll == "" {
			hint = " (give --enroll URL to get a certificate from the configuration server)"
		}
		return pki.Identity{}, nil, fmt.Errorf("%w: %s: tls-dir %s: %w%s", ErrConfig, daemon, c.TLSDir, err, hint)
	}
	return id, nil, nil
}

// EnrollWait bounds how long a daemon waits for the configuration server's
// enrollment endpoint to come up (daemons may start in any order).
var EnrollWait = 2 * time.Minute

// retryUnreachable calls try until it succeeds, fails with an error other
// than enroll.ErrUnreachable (a refusal is final), or ctx ends; between
// tries it waits 250 ms doubling to 5 s and logs that it is waiting. The
// error returned is the last try's.
func retryUnreachable(ctx context.Context, log *slog.Logger, url string, try func() error) error {
	wait := 250 * time.Millisecond
	for n := 1; ; n++ {
		err := try()
		if err == nil || !errors.Is(err, enroll.ErrUnreachable) {
			return err
		}
		log.Warn("daemon: configuration server not answering; enrolling again", "enroll", url, "attempt", n, "in", wait.String(), "err", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// enrollServer is the configuration server's enrollment endpoint (HTTPS).
type enrollServer struct {
	srv  *http.Server
	done chan error
}

// startEnrollment serves the enrollment endpoint (enrollment, renewal,
// the revocation list, revocation) on c.EnrollListen with the
// configuration server's keeper k, recording certificates in certs; k's
// revocation list is loaded from certs first.
func startEnrollment(ca *pki.CA, k *pki.Keeper, certs csstore.Certs, c Config, pass string, log *slog.Logger) (*enrollServer, error) {
	keys, err := vault.Derive(c.VaultID, pass)
	if err != nil {
		return nil, fmt.Errorf("%w: configsrv: %w", ErrConfig, err)
	}
	h := &enroll.Handler{CA: ca, Keys: keys, Now: time.Now, Validity: c.CertValidity.D(), Log: log, Certs: certs, Keeper: k}
	if err := h.Reload(context.Background()); err != nil {
		return nil, fmt.Errorf("%w: configsrv: %w", ErrConfig, err)
	}
	ln, err := net.Listen("tcp", c.EnrollListen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: configsrv cannot serve enrollment on %s: address already in use (is another daemon running there?)", ErrConfig, c.EnrollListen)
		}
		return nil, fmt.Errorf("%w: configsrv cannot serve enrollment on %s: %w", ErrConfig, c.EnrollListen, err)
	}
	mux := http.NewServeMux()
	for _, p := range enroll.Paths {
		mux.Handle(p, h)
	}
	e := &enrollServer{done: make(chan error, 1), srv: &http.Server{Handler: mux, TLSConfig: enroll.ServerTLSKeeper(k),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	go func() { e.done <- e.srv.ServeTLS(ln, "", "") }()
	log.Info("daemon: enrollment endpoint", "url", "https://"+ln.Addr().String(), "ca", ca.Cert.Subject.CommonName)
	return e, nil
}

// close stops the endpoint (nil: nothing to stop).
func (e *enrollServer) close() error {
	if e == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.srv.Shutdown(ctx)
	if serr := <-e.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("enrollment endpoint: %w", err)
	}
	return nil
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
