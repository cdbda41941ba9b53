package daemon

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
)

// TestCertWatchRenewsOwn: the configuration server's watch renews its own
// certificate once a third of its validity is left: saved in tls-dir and
// presented by the keeper; not before, and not with cert-renew off (the
// negative control).
func TestCertWatchRenewsOwn(t *testing.T) {
	for _, c := range []struct {
		name     string
		validity time.Duration
		age      time.Duration // since issue
		renew    bool
		want     bool
	}{
		{"due", 3 * time.Second, 2100 * time.Millisecond, true, true},
		{"not due", time.Hour, 30 * time.Minute, true, false},
		{"due, renewal off", 3 * time.Second, 2100 * time.Millisecond, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			now := time.Now()
			ca, err := pki.NewCA("vault-1", now)
			if err != nil {
				t.Fatal(err)
			}
			id, err := ca.NewIdentityFor("cs01", now.Add(-c.age), c.validity)
			if err != nil {
				t.Fatal(err)
			}
			if err := pki.OS.SaveCA(dir, ca); err != nil {
				t.Fatal(err)
			}
			if err := pki.OS.SaveIdentity(dir, id); err != nil {
				t.Fatal(err)
			}
			k := pki.NewKeeper(id)
			cfg := Defaults("configsrv")
			cfg.TLSDir, cfg.CertRenew = dir, c.renew
			w := newCertWatch("configsrv", cfg, k, ca, slog.New(slog.NewTextHandler(io.Discard, nil)))
			w.check(context.Background())
			got := k.Identity()
			renewed := got.Cert.SerialNumber.Cmp(id.Cert.SerialNumber) != 0
			if renewed != c.want {
				t.Fatalf("renewed = %v, want %v", renewed, c.want)
			}
			onDisk, err := pki.OS.LoadIdentity(dir, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if onDisk.Cert.SerialNumber.Cmp(got.Cert.SerialNumber) != 0 {
				t.Errorf("tls-dir holds serial %s, the keeper presents %s", pki.SerialText(onDisk.Cert.SerialNumber), pki.SerialText(got.Cert.SerialNumber))
			}
			if renewed && (got.Host != "cs01" || pki.Lifetime(got.Cert) != c.validity || got.Key == id.Key) {
				t.Errorf("renewed identity: host %s, validity %s, same key %v", got.Host, pki.Lifetime(got.Cert), got.Key == id.Key)
			}
		})
	}
}
