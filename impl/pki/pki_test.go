package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func newCA(t *testing.T, vault string) *CA {
	t.Helper()
	ca, err := NewCA(vault, t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestValidHost(t *testing.T) {
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"cs01", true}, {"ps01.contoso.local", true}, {"DC0_C0_H0_VM0", true}, {"a", true},
		{"", false}, {"ps 01", false}, {"-ps", false}, {"ps.", false}, {"ps/01", false},
		{"ünicode", false}, {strings.Repeat("a", 254), false}, {strings.Repeat("a", 253), true},
	} {
		err := ValidHost(c.host)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadHost)) {
			t.Errorf("ValidHost(%q) = %v, want ok=%v", c.host, err, c.ok)
		}
	}
}

// TestIssueAndVerify: a certificate the CA issues verifies for its host,
// both usages, within its validity only; another CA's, another host's, a
// mismatched key are refused.
func TestIssueAndVerify(t *testing.T) {
	ca, other := newCA(t, "vault-1"), newCA(t, "vault-2")
	id, err := ca.NewIdentity("ps01", t0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.NewIdentity("ps01", t0)
	if err != nil {
		t.Fatal(err)
	}
	short, err := ca.NewIdentityFor("ps01", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		id   Identity
		at   time.Time
		want error // nil, or what errors.Is must find
		msg  string
	}{
		{"fresh", id, t0, nil, ""},
		{"a year less a day", id, t0.Add(HostValidity - 24*time.Hour), nil, ""},
		{"expired", short, t0.Add(2 * time.Hour), ErrNotIssued, "expired"},
		{"before issue (beyond the skew)", id, t0.Add(-time.Hour), ErrNotIssued, "not yet valid"},
		{"foreign CA", Identity{Host: "ps01", Cert: foreign.Cert, Key: foreign.Key, CA: ca.Cert}, t0, ErrNotIssued, "unknown authority"},
		{"other host", Identity{Host: "cs01", Cert: id.Cert, Key: id.Key, CA: ca.Cert}, t0, ErrNotIssued, "not cs01"},
		{"key of another", Identity{Host: "ps01", Cert: id.Cert, Key: foreign.Key, CA: ca.Cert}, t0, ErrKeyMismatch, ""},
		{"incomplete", Identity{Host: "ps01", Cert: id.Cert}, t0, nil, "incomplete identity"},
	} {
		err := c.id.Check(c.at)
		switch {
		case c.want == nil && c.msg == "":
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		case err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.want != nil && !errors.Is(err, c.want), !strings.Contains(err.Error(), c.msg):
			t.Errorf("%s: %v, want %v containing %q", c.name, err, c.want, c.msg)
		}
	}
	if id.Cert.Subject.CommonName != "ps01" || len(id.Cert.DNSNames) != 1 || id.Cert.DNSNames[0] != "ps01" || id.Cert.IsCA {
		t.Errorf("certificate names %q %v (CA %v), want ps01 only, not a CA", id.Cert.Subject.CommonName, id.Cert.DNSNames, id.Cert.IsCA)
	}
	if ca.VaultID() != "vault-1" {
		t.Errorf("VaultID = %q", ca.VaultID())
	}
	if _, err := ca.IssueCSR([]byte("junk"), "ps01", t0, time.Hour); !errors.Is(err, ErrBadCSR) {
		t.Errorf("junk CSR: %v, want ErrBadCSR", err)
	}
	if _, err := ca.NewIdentity("bad host", t0); !errors.Is(err, ErrBadHost) {
		t.Errorf("bad host: %v, want ErrBadHost", err)
	}
}

// TestStore: a CA and an identity survive a save and a load; InitServer
// creates once and loads after; what cannot be trusted is refused with an
// error naming it and not overwritten.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	ca1, id1, err := InitServer(dir, "vault-1", "cs01", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAFile, CAKeyFile, CertFile, KeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(f, "ca-key") || f == KeyFile {
			if st.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v, want no access for group and others", f, st.Mode().Perm())
			}
		}
	}
	ca2, id2, err := InitServer(dir, "vault-1", "cs01", t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !SameCA(ca1.Cert, ca2.Cert) || !id1.Cert.Equal(id2.Cert) {
		t.Error("InitServer made a new CA or certificate instead of loading them")
	}
	if _, _, err := InitServer(dir, "vault-2", "cs01", t0); !errors.Is(err, ErrVault) {
		t.Errorf("InitServer for another vault: %v, want ErrVault", err)
	}
	// A new host name on the same CA: a new certificate, the same CA.
	ca3, id3, err := InitServer(dir, "vault-1", "cs02", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !SameCA(ca1.Cert, ca3.Cert) || id3.Host != "cs02" {
		t.Errorf("renamed server: CA kept %v, host %s", SameCA(ca1.Cert, ca3.Cert), id3.Host)
	}
	got, err := OS.LoadIdentity(dir, t0)
	if err != nil || !got.Cert.Equal(id3.Cert) {
		t.Errorf("LoadIdentity: %v (same certificate %v)", err, err == nil && got.Cert.Equal(id3.Cert))
	}

	// Broken directories.
	other := newCA(t, "vault-1")
	foreign, _ := other.NewIdentity("ps01", t0)
	for _, c := range []struct {
		name  string
		setup func(dir string)
		load  func(dir string) error
		want  string
	}{
		{"empty", func(string) {}, func(d string) error { _, err := OS.LoadIdentity(d, t0); return err }, "cert.pem is missing"},
		{"not PEM", func(d string) {
			OS.SaveIdentity(d, id1)
			os.WriteFile(filepath.Join(d, CertFile), []byte("hello"), 0o644)
		}, func(d string) error { _, err := OS.LoadIdentity(d, t0); return err }, `want a PEM "CERTIFICATE" block`},
		{"foreign CA", func(d string) {
			OS.SaveIdentity(d, Identity{Host: "ps01", Cert: foreign.Cert, Key: foreign.Key, CA: ca1.Cert})
		}, func(d string) error { _, err := OS.LoadIdentity(d, t0); return err }, "unknown authority"},
		{"expired", func(d string) { OS.SaveIdentity(d, id1) },
			func(d string) error { _, err := OS.LoadIdentity(d, t0.Add(2*HostValidity)); return err }, "expired"},
		{"CA certificate without its key", func(d string) {
			OS.SaveCA(d, ca1)
			os.Remove(filepath.Join(d, CAKeyFile))
		}, func(d string) error { _, _, err := InitServer(d, "vault-1", "cs01", t0); return err }, "holds a CA certificate but not its key"},
		{"an agent's directory is no CA", func(d string) { OS.SaveIdentity(d, foreign) },
			func(d string) error { _, _, err := InitServer(d, "vault-1", "cs01", t0); return err }, "not its key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			c.setup(d)
			before := snapshot(t, d)
			err := c.load(d)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if after := snapshot(t, d); after != before {
				t.Errorf("a refused load changed the directory:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot is a directory's file names and contents.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + "=" + string(data) + ";")
	}
	return b.String()
}
