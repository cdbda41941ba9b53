package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRenewAt: renewal falls due when a third of the issued validity
// remains, whatever the validity (the clock-skew backdating not counted).
func TestRenewAt(t *testing.T) {
	ca := newCA(t, "vault-1")
	for _, c := range []struct {
		validity time.Duration
		due      time.Duration // after issue
	}{
		{HostValidity, HostValidity * 2 / 3},
		{12 * time.Second, 8 * time.Second},
		{time.Hour, 40 * time.Minute},
	} {
		id, err := ca.NewIdentityFor("ag01", t0, c.validity)
		if err != nil {
			t.Fatal(err)
		}
		if got := Lifetime(id.Cert); got != c.validity {
			t.Errorf("Lifetime(%s) = %s", c.validity, got)
		}
		if got, want := RenewAt(id.Cert), t0.Add(c.due); !got.Equal(want) {
			t.Errorf("RenewAt(%s) = %s, want %s", c.validity, got, want)
		}
		if RenewDue(id.Cert, t0.Add(c.due-time.Second)) || !RenewDue(id.Cert, t0.Add(c.due)) {
			t.Errorf("RenewDue(%s) wrong around %s", c.validity, c.due)
		}
	}
}

func TestSerialText(t *testing.T) {
	ca := newCA(t, "vault-1")
	id, err := ca.NewIdentity("ag01", t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSerial(SerialText(id.Cert.SerialNumber))
	if err != nil || got.Cmp(id.Cert.SerialNumber) != 0 {
		t.Fatalf("round trip: %v %v", got, err)
	}
	for _, bad := range []string{"", "xyz", "-1", "0"} {
		if _, err := ParseSerial(bad); err == nil {
			t.Errorf("ParseSerial(%q) accepted", bad)
		}
	}
}

// handshake runs one mutual-TLS handshake over a pipe and returns both
// sides' errors and the certificate each side saw.
func handshake(t *testing.T, srv, cli *tls.Config, serverName string) (serr, cerr error, clientSaw, serverSaw string) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cli = cli.Clone()
	cli.ServerName = serverName
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := tls.Server(a, srv)
		serr = s.Handshake()
		if serr == nil {
			if pc := s.ConnectionState().PeerCertificates; len(pc) > 0 {
				serverSaw = SerialText(pc[0].SerialNumber)
			}
			// TLS 1.3: the client learns of a refusal on its first read.
			s.Write([]byte{1})
		}
		a.Close()
	}()
	c := tls.Client(b, cli)
	cerr = c.Handshake()
	if cerr == nil {
		clientSaw = SerialText(c.ConnectionState().PeerCertificates[0].SerialNumber)
		var one [1]byte
		if _, err := c.Read(one[:]); err != nil {
			cerr = err
		}
	}
	b.Close()
	<-done
	return
}

// TestKeeperRevocation: a revoked client is refused by the server with
// ErrRevoked naming it, and the client sees a TLS refusal; a peer not
// revoked is accepted (the negative control); a revoked server is refused
// by the client.
func TestKeeperRevocation(t *testing.T) {
	ca := newCA(t, "vault-1")
	mk := func(host string) *Keeper {
		id, err := ca.NewIdentity(host, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return NewKeeper(id)
	}
	srv, good, bad := mk("ps01"), mk("ag01"), mk("ag02")
	revoke := []Revocation{{Serial: bad.Identity().Cert.SerialNumber, Host: "ag02"}}
	srv.SetRevoked(revoke)

	if serr, cerr, _, _ := handshake(t, srv.ServerConfig(), good.ClientConfig(), "ps01"); serr != nil || cerr != nil {
		t.Fatalf("a peer not revoked: server %v, client %v", serr, cerr)
	}
	serr, cerr, _, _ := handshake(t, srv.ServerConfig(), bad.ClientConfig(), "ps01")
	if !errors.Is(serr, ErrRevoked) || !strings.Contains(serr.Error(), "ag02") || !strings.Contains(serr.Error(), SerialText(bad.Identity().Cert.SerialNumber)) {
		t.Errorf("server's error for a revoked client = %v, want ErrRevoked naming ag02 and its serial", serr)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "bad certificate") {
		t.Errorf("revoked client's error = %v, want the server's bad-certificate alert", cerr)
	}
	// The list is replaced, not added to: an empty list admits ag02 again.
	srv.SetRevoked(nil)
	if serr, cerr, _, _ := handshake(t, srv.ServerConfig(), bad.ClientConfig(), "ps01"); serr != nil || cerr != nil {
		t.Fatalf("after the list was emptied: server %v, client %v", serr, cerr)
	}
	// A client refuses a revoked server.
	good.SetRevoked([]Revocation{{Serial: srv.Identity().Cert.SerialNumber}})
	if _, cerr, _, _ := handshake(t, srv.ServerConfig(), good.ClientConfig(), "ps01"); !errors.Is(cerr, ErrRevoked) {
		t.Errorf("client's error for a revoked server = %v, want ErrRevoked", cerr)
	}
}

// TestKeeperRenewal: after Set, the next handshake presents the new
// certificate on both sides, with the same TLS configurations.
func TestKeeperRenewal(t *testing.T) {
	ca := newCA(t, "vault-1")
	sid, _ := ca.NewIdentity("ps01", time.Now())
	cid, _ := ca.NewIdentity("ag01", time.Now())
	srv, cli := NewKeeper(sid), NewKeeper(cid)
	scfg, ccfg := srv.ServerConfig(), cli.ClientConfig()
	_, _, clientSaw, serverSaw := handshake(t, scfg, ccfg, "ps01")
	if clientSaw != SerialText(sid.Cert.SerialNumber) || serverSaw != SerialText(cid.Cert.SerialNumber) {
		t.Fatalf("first handshake saw %s/%s", clientSaw, serverSaw)
	}
	sid2, _ := ca.NewIdentity("ps01", time.Now())
	cid2, _ := ca.NewIdentity("ag01", time.Now())
	srv.Set(sid2)
	cli.Set(cid2)
	serr, cerr, clientSaw, serverSaw := handshake(t, scfg, ccfg, "ps01")
	if serr != nil || cerr != nil {
		t.Fatalf("after renewal: %v, %v", serr, cerr)
	}
	if clientSaw != SerialText(sid2.Cert.SerialNumber) || serverSaw != SerialText(cid2.Cert.SerialNumber) {
		t.Errorf("after renewal the handshake saw %s/%s, want the new serials %s/%s", clientSaw, serverSaw,
			SerialText(sid2.Cert.SerialNumber), SerialText(cid2.Cert.SerialNumber))
	}
}

// TestSaveRenewalCrash: whichever step of SaveRenewal a crash stops at,
// LoadIdentity finds a matching, valid pair: the old one before the key's
// rename, the new one after it.
func TestSaveRenewalCrash(t *testing.T) {
	ca := newCA(t, "vault-1")
	old, _ := ca.NewIdentity("ag01", t0)
	next, _ := ca.NewIdentity("ag01", t0.Add(time.Hour))
	keyNew, err := keyPEM(next.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		crash func(dir string) // leaves dir as a crash at that step would
		want  Identity
	}{
		{"temporaries written, nothing renamed", func(dir string) {
			os.WriteFile(tmpName(dir, KeyFile), keyNew, 0o600)
			os.WriteFile(tmpName(dir, CertFile), certPEM(next.Cert), 0o644)
		}, old},
		{"key renamed, certificate not", func(dir string) {
			os.WriteFile(filepath.Join(dir, KeyFile), keyNew, 0o600)
			os.WriteFile(tmpName(dir, CertFile), certPEM(next.Cert), 0o644)
		}, next},
		{"both renamed", func(dir string) {
			if err := OS.SaveRenewal(dir, next); err != nil {
				t.Fatal(err)
			}
		}, next},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := OS.SaveIdentity(dir, old); err != nil {
				t.Fatal(err)
			}
			c.crash(dir)
			got, err := OS.LoadIdentity(dir, t0.Add(2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if got.Cert.SerialNumber.Cmp(c.want.Cert.SerialNumber) != 0 {
				t.Errorf("loaded serial %s, want %s", SerialText(got.Cert.SerialNumber), SerialText(c.want.Cert.SerialNumber))
			}
			// And again: the recovery left the directory consistent.
			if _, err := OS.LoadIdentity(dir, t0.Add(2*time.Hour)); err != nil {
				t.Errorf("second load: %v", err)
			}
		})
	}
	// A key matching neither certificate is still refused.
	dir := t.TempDir()
	OS.SaveIdentity(dir, old)
	other, _ := ca.NewIdentity("ag01", t0)
	kp, _ := keyPEM(other.Key)
	os.WriteFile(filepath.Join(dir, KeyFile), kp, 0o600)
	os.WriteFile(tmpName(dir, CertFile), certPEM(next.Cert), 0o644)
	if _, err := OS.LoadIdentity(dir, t0.Add(2*time.Hour)); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("a stray key: %v, want ErrKeyMismatch", err)
	}
}
