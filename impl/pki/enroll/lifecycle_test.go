package enroll

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/pki"
)

// lifecycleWorld is newWorld with a certificate register and the
// configuration server's Keeper, served as the daemon serves it.
func lifecycleWorld(t *testing.T) (*world, *pki.Keeper, string) {
	t.Helper()
	w := newWorld(t)
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	k := pki.NewKeeper(w.cs)
	w.h.Certs, w.h.Keeper = db, k
	srv := httptest.NewUnstartedServer(w.h)
	srv.TLS = ServerTLSKeeper(k)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return w, k, srv.URL
}

func enrolled(t *testing.T, url, host string) *pki.Keeper {
	t.Helper()
	id, err := Client{}.Get(context.Background(), url, host, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	return pki.NewKeeper(id)
}

// TestRenewAndRevoke: a host renews over mutual TLS (same host, new key,
// new serial, recorded); an operator with the passphrase revokes the host
// (every serial of it); the revoked host can neither renew nor fetch the
// list, and is told it is revoked; another host is unaffected (the
// negative control) and gets the list.
func TestRenewAndRevoke(t *testing.T) {
	ctx := context.Background()
	w, csKeeper, url := lifecycleWorld(t)
	ag, other := enrolled(t, url, "ag01"), enrolled(t, url, "ag02")
	first := ag.Identity()

	next, err := Client{}.Renew(ctx, url, "cs01", ag)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if next.Host != "ag01" || next.Cert.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 || next.Key == first.Key {
		t.Fatalf("renewed identity: host %s serial %s (old %s)", next.Host, pki.SerialText(next.Cert.SerialNumber), pki.SerialText(first.Cert.SerialNumber))
	}
	ag.Set(next)
	if !strings.Contains(w.logs.String(), `msg="enroll: certificate renewed" host=ag01`) {
		t.Errorf("server log lacks the renewal:\n%s", w.logs)
	}

	if _, err := (Client{}).Revoke(ctx, url, "not the passphrase", "ag01", ""); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Revoke with a wrong passphrase: %v", err)
	}
	if _, err := (Client{}).Revoke(ctx, url, passphrase, "nobody", ""); err == nil || !strings.Contains(err.Error(), "no certificate on record") {
		t.Fatalf("Revoke of an unknown host: %v", err)
	}
	done, err := Client{}.Revoke(ctx, url, passphrase, "ag01", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 {
		t.Fatalf("Revoke ag01 revoked %v, want its first and renewed certificates", done)
	}
	if got := csKeeper.Revoked(); len(got) != 2 {
		t.Fatalf("the server's keeper lists %d revocations, want 2", len(got))
	}
	if err := csKeeper.Check(next.Cert); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("server's check of the revoked certificate: %v", err)
	}

	if _, err := (Client{}).Renew(ctx, url, "cs01", ag); !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "ag01 serial "+pki.SerialText(next.Cert.SerialNumber)) {
		t.Errorf("Renew of a revoked host: %v, want ErrRevoked naming it", err)
	}
	if _, err := (Client{}).Revocations(ctx, url, "cs01", ag); !errors.Is(err, ErrRevoked) {
		t.Errorf("Revocations by a revoked host: %v, want ErrRevoked", err)
	}
	if !strings.Contains(w.logs.String(), "reason=\"certificate revoked by the configuration server: ag01 serial") {
		t.Errorf("server log lacks the refusal naming the revocation:\n%s", w.logs)
	}
	list, err := Client{}.Revocations(ctx, url, "cs01", other)
	if err != nil {
		t.Fatalf("Revocations by a host not revoked: %v", err)
	}
	if len(list) != 2 || list[0].Host != "ag01" {
		t.Errorf("list = %v", list)
	}
	if _, err := (Client{}).Renew(ctx, url, "cs01", other); err != nil {
		t.Errorf("Renew by a host not revoked: %v", err)
	}
	// A serial alone (a stolen certificate reported), once.
	done, err = Client{}.Revoke(ctx, url, passphrase, "", pki.SerialText(other.Identity().Cert.SerialNumber))
	if err != nil || len(done) != 1 || done[0].Host != "ag02" {
		t.Fatalf("Revoke of a serial = %v, %v", done, err)
	}
	if done, err := (Client{}).Revoke(ctx, url, passphrase, "ag01", ""); err != nil || len(done) != 0 {
		t.Errorf("revoking again = %v, %v; want nothing new", done, err)
	}
}

// TestRenewRefused: no client certificate, or one from another vault,
// cannot renew.
func TestRenewRefused(t *testing.T) {
	ctx := context.Background()
	_, _, url := lifecycleWorld(t)
	foreignCA, _ := pki.NewCA("vault-evil", time.Now())
	foreign, _ := foreignCA.NewIdentity("ag01", time.Now())
	fk := pki.NewKeeper(foreign)
	if _, err := (Client{}).Renew(ctx, url, "cs01", fk); err == nil {
		t.Error("a foreign certificate renewed")
	}
	// No client certificate at all: a client that presents none.
	anon := Client{HTTP: newInsecureClient()}
	if _, err := anon.Renew(ctx, url, "cs01", fk); err == nil || !strings.Contains(err.Error(), "client certificate") {
		t.Errorf("renew without a client certificate: %v", err)
	}
}

func newInsecureClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}
