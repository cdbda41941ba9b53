package runtime

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/pki/enroll"
	"github.com/v2a-dr/v2a/impl/vault"
)

// enrolled enrolls hosts with a configuration server serving the vault
// CA's enrollment endpoint on loopback, and loads their identities back
// from the directories enrollment wrote, as a daemon's --tls-dir would.
func enrolled(t *testing.T, ca *pki.CA, hosts ...string) map[string]pki.Identity {
	t.Helper()
	const passphrase = "correct horse battery"
	keys, err := vault.Derive(ca.VaultID(), passphrase)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ca.NewIdentity("cs01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(&enroll.Handler{CA: ca, Keys: keys, Now: time.Now, Log: slog.New(slog.DiscardHandler)})
	srv.TLS = enroll.ServerTLS(cs)
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids := map[string]pki.Identity{}
	for _, h := range hosts {
		dir := filepath.Join(t.TempDir(), h)
		if _, err := enroll.Enroll(ctx, srv.URL, h, passphrase, dir); err != nil {
			t.Fatal(err)
		}
		id, err := pki.OS.LoadIdentity(dir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids[h] = id
	}
	return ids
}

// logWant is a log record a side must write: its message, and what its
// err attribute must contain, and the peer_cert it names (none: "").
type logWant struct {
	msg, err, peerCert string
}

// TestMutualTLS: actors holding identities enrolled from the vault CA talk
// over mutual TLS; a peer without a certificate, with one from a foreign
// CA, with an expired one, or with one for another host is refused, and
// both sides' logs say who and why.
func TestMutualTLS(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("vault-1", now)
	if err != nil {
		t.Fatal(err)
	}
	evil, err := pki.NewCA("vault-evil", now)
	if err != nil {
		t.Fatal(err)
	}
	ids := enrolled(t, ca, addrA.Host(), addrB.Host())
	a, b := ids[addrA.Host()], ids[addrB.Host()]
	mustID := func(id pki.Identity, err error) pki.Identity {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	foreignA := mustID(evil.NewIdentity(addrA.Host(), now))
	foreignA.CA = ca.Cert // it trusts the vault CA; only its own certificate is foreign
	foreignB := mustID(evil.NewIdentity(addrB.Host(), now))
	foreignB.CA = ca.Cert
	expiredA := mustID(ca.NewIdentityFor(addrA.Host(), now.Add(-48*time.Hour), time.Hour))
	expiredB := mustID(ca.NewIdentityFor(addrB.Host(), now.Add(-48*time.Hour), time.Hour))
	wrongHostB := mustID(ca.NewIdentity("c.example", now))
	wrongHostA := wrongHostB
	noCert := pki.ClientConfig(a)
	noCert.GetClientCertificate = nil

	refusedByServer := func(serverErr, peerCert, clientErr string) (logWant, logWant) {
		return logWant{"TLS handshake failed", serverErr, peerCert},
			logWant{"connection refused by the peer (TLS)", clientErr, ""}
	}
	refusedByClient := func(clientErr, peerCert string) (logWant, logWant) {
		return logWant{"TLS handshake failed", "remote error: tls: bad certificate", ""},
			logWant{"cannot connect: TLS handshake failed", clientErr, peerCert}
	}
	for _, c := range []struct {
		name   string
		server *tls.Config // B's
		client *tls.Config // A's
		logs   func() (server, client logWant)
	}{
		{name: "enrolled both sides", server: pki.ServerConfig(b), client: pki.ClientConfig(a)},
		{"no client certificate", pki.ServerConfig(b), noCert, func() (logWant, logWant) {
			return refusedByServer("client didn't provide a certificate", "", "remote error: tls: certificate required")
		}},
		{"client certificate from a foreign CA", pki.ServerConfig(b), pki.ClientConfig(foreignA), func() (logWant, logWant) {
			return refusedByServer("certificate signed by unknown authority", "a.example issued by v2a vault CA vault-evil", "remote error: tls: unknown certificate authority")
		}},
		{"expired client certificate", pki.ServerConfig(b), pki.ClientConfig(expiredA), func() (logWant, logWant) {
			return refusedByServer("certificate has expired", "a.example issued by v2a vault CA vault-1", "remote error: tls: expired certificate")
		}},
		{"server certificate from a foreign CA", pki.ServerConfig(foreignB), pki.ClientConfig(a), func() (logWant, logWant) {
			return refusedByClient("certificate signed by unknown authority", "b.example issued by v2a vault CA vault-evil")
		}},
		{"expired server certificate", pki.ServerConfig(expiredB), pki.ClientConfig(a), func() (logWant, logWant) {
			return refusedByClient("certificate has expired", "b.example issued by v2a vault CA vault-1")
		}},
		{"client certificate for another host", pki.ServerConfig(b), pki.ClientConfig(wrongHostA), func() (logWant, logWant) {
			// The handshake succeeds (the certificate is the vault's); the
			// hello then claims a.example. The dialler only sees its
			// connection closed.
			return logWant{"its certificate is not the sender's", "hello from a.example:9443, certificate for c.example", ""}, logWant{}
		}},
		{"server certificate for another host", pki.ServerConfig(wrongHostB), pki.ClientConfig(a), func() (logWant, logWant) {
			return refusedByClient("certificate is valid for c.example, not b.example", "c.example issued by v2a vault CA vault-1")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srvLogs, cliLogs := newLogSink(), newLogSink()
			r1 := NewReal(RealOptions{Listen: loopback, ServerTLS: c.server, Logger: srvLogs.logger()})
			r2 := NewReal(RealOptions{Listen: loopback, ClientTLS: c.client, Logger: cliLogs.logger(),
				Resolve: func(a Addr) (string, error) { return r1.BoundAddr(a), nil }})
			fb, rb, seenB := newRecorder(nil)
			if err := r1.Spawn(addrB, fb); err != nil {
				t.Fatal(err)
			}
			waitFor(t, seenB, "started") // so that Stop cannot come before it
			fa, _, _ := newRecorder(func(ctx Context, ev Event) {
				if _, ok := ev.(Started); ok {
					ctx.Send(addrB, frame("ping", 1))
				}
			})
			if err := r2.Spawn(addrA, fa); err != nil {
				t.Fatal(err)
			}
			want := []string{"started"}
			if c.logs == nil {
				waitFor(t, seenB, "msg from=a.example:9443 ping 1")
				want = append(want, "msg from=a.example:9443 ping 1")
			} else {
				sw, cw := c.logs()
				checkLog(t, "server", srvLogs, sw, map[string]any{"actor": string(addrB)})
				if cw.msg != "" {
					checkLog(t, "client", cliLogs, cw, map[string]any{"actor": string(addrA), "to": string(addrB)})
				}
			}
			stop(t, r1)
			stop(t, r2)
			if diff := cmp.Diff(want, (*rb).events); diff != "" {
				t.Errorf("B's events (-want +got):\n%s", diff)
			}
		})
	}
}

func checkLog(t *testing.T, side string, s *logSink, w logWant, attrs map[string]any) {
	t.Helper()
	rec := s.waitLog(t, w.msg, attrs)
	if got := fmt.Sprint(rec.Attrs["err"]); !strings.Contains(got, w.err) {
		t.Errorf("%s log %q: err %q lacks %q", side, rec.Msg, got, w.err)
	}
	if got, _ := rec.Attrs["peer_cert"].(string); got != w.peerCert {
		t.Errorf("%s log %q: peer_cert %q, want %q", side, rec.Msg, got, w.peerCert)
	}
	if rec.Level != slog.LevelError {
		t.Errorf("%s log %q at level %v, want ERROR", side, rec.Msg, rec.Level)
	}
}

// TestAdmitRevoked: a peer whose certificate is revoked while it is
// connected is cut off at its next frame (RealOptions.Admit), and its
// reconnection is refused by the handshake, both logged naming the
// revocation; until then its frames arrive (the negative control).
func TestAdmitRevoked(t *testing.T) {
	ca, err := pki.NewCA("vault-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ids := enrolled(t, ca, addrA.Host(), addrB.Host())
	ka, kb := pki.NewKeeper(ids[addrA.Host()]), pki.NewKeeper(ids[addrB.Host()])
	srvLogs := newLogSink()
	r1 := NewReal(RealOptions{Listen: loopback, ServerTLS: kb.ServerConfig(), Admit: kb.Check, Logger: srvLogs.logger()})
	r2 := NewReal(RealOptions{Listen: loopback, ClientTLS: ka.ClientConfig(),
		Resolve: func(a Addr) (string, error) { return r1.BoundAddr(a), nil }})
	fb, _, seenB := newRecorder(nil)
	if err := r1.Spawn(addrB, fb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenB, "started")
	n := uint64(0)
	fa, _, _ := newRecorder(func(ctx Context, ev Event) {
		switch ev.(type) {
		case Started, Timer:
			n++
			ctx.Send(addrB, frame("ping", n))
			ctx.After(20*time.Millisecond, "again")
		}
	})
	if err := r2.Spawn(addrA, fa); err != nil {
		t.Fatal(err)
	}
	waitFor(t, seenB, "msg from=a.example:9443 ping 2") // admitted, on one connection
	serial := pki.SerialText(ids[addrA.Host()].Cert.SerialNumber)
	kb.SetRevoked([]pki.Revocation{{Serial: ids[addrA.Host()].Cert.SerialNumber, Host: addrA.Host()}})
	rec := srvLogs.waitLog(t, "runtime: closing inbound connection: peer no longer admitted", map[string]any{"peer": string(addrA)})
	if got := fmt.Sprint(rec.Attrs["err"]); !strings.Contains(got, "revoked") || !strings.Contains(got, serial) {
		t.Errorf("cut-off log err = %q, want the revocation and serial %s", got, serial)
	}
	rec = srvLogs.waitLog(t, "runtime: refusing inbound connection: TLS handshake failed", nil)
	if got := fmt.Sprint(rec.Attrs["err"]); !strings.Contains(got, "certificate revoked by the configuration server") {
		t.Errorf("reconnection refusal err = %q, want the revocation", got)
	}
	stop(t, r2)
	stop(t, r1)
}
