package vcenter_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"

	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
)

// tlsServer is a vcsim (govmomi's default vCenter model) on loopback HTTPS
// with its self-signed certificate, and its SDK credentials.
type tlsServer struct {
	url        string // without credentials
	user, pass string
	thumbprint string // SHA-1, as govc prints it
	sha256     string
	caFile     string // the server's certificate, PEM
}

func startServer(t *testing.T) tlsServer {
	t.Helper()
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Remove)
	model.Service.TLS = new(tls.Config)
	s := model.Service.NewServer()
	t.Cleanup(s.Close)
	cert := s.Certificate()
	ca := filepath.Join(t.TempDir(), "vcsim.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	u := *s.URL
	pass, _ := u.User.Password()
	srv := tlsServer{user: u.User.Username(), pass: pass, thumbprint: soap.ThumbprintSHA1(cert), sha256: soap.ThumbprintSHA256(cert), caFile: ca}
	u.User = nil
	srv.url = u.String()
	return srv
}

// otherCA is a PEM file of a fresh self-signed CA certificate for
// 127.0.0.1, which did not sign the server's.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "other"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenTLS: each way to trust a self-signed vCenter works; without one,
// or with a wrong one, the error says why, names the server's thumbprint
// and the three options; contradictory or malformed options are refused
// before any connection.
func TestOpenTLS(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	lower := strings.ToLower(srv.thumbprint)
	wrong := "00" + srv.thumbprint[2:]
	if srv.thumbprint[:2] == "00" {
		wrong = "11" + srv.thumbprint[2:]
	}
	tests := []struct {
		name     string
		opts     vcenter.Options
		wantErr  error
		contains []string
	}{
		{"insecure", vcenter.Options{Insecure: true}, nil, nil},
		{"sha1 thumbprint", vcenter.Options{Thumbprint: srv.thumbprint}, nil, nil},
		{"lower-case thumbprint", vcenter.Options{Thumbprint: lower}, nil, nil},
		{"sha256 thumbprint", vcenter.Options{Thumbprint: srv.sha256}, nil, nil},
		{"ca file", vcenter.Options{CAFile: srv.caFile}, nil, nil},
		{"no trust", vcenter.Options{}, vcenter.ErrUntrusted,
			[]string{"127.0.0.1", "thumbprint is " + srv.thumbprint, "thumbprint: " + srv.thumbprint, "caFile:", "insecure: true", "system's roots"}},
		{"wrong thumbprint", vcenter.Options{Thumbprint: wrong}, vcenter.ErrUntrusted,
			[]string{"mismatch", "expects " + wrong, "presents " + srv.thumbprint}},
		{"foreign ca file", vcenter.Options{CAFile: otherCA(t)}, vcenter.ErrUntrusted,
			[]string{"verified against caFile", srv.thumbprint}},
		{"missing ca file", vcenter.Options{CAFile: filepath.Join(t.TempDir(), "nope.pem")}, vsphere.ErrInvalidArgument,
			[]string{"CA file", "nope.pem"}},
		{"insecure and thumbprint", vcenter.Options{Insecure: true, Thumbprint: srv.thumbprint}, vsphere.ErrInvalidArgument,
			[]string{"insecure excludes"}},
		{"malformed thumbprint", vcenter.Options{Thumbprint: "AB:CD"}, vsphere.ErrInvalidArgument,
			[]string{`thumbprint "AB:CD"`, "20 (SHA-1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Username, o.Password = srv.user, srv.pass
			c, err := vcenter.Open(ctx, srv.url, o)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer c.Close(ctx)
				vms, err := c.Discover(ctx)
				if err != nil || len(vms) == 0 {
					t.Fatalf("Discover over the trusted connection: %d VMs, %v", len(vms), err)
				}
				return
			}
			if err == nil {
				c.Close(ctx)
				t.Fatalf("Open succeeded, want %v", tt.wantErr)
			}
			t.Log(err)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Open error = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q:\n%v", s, err)
				}
			}
			if strings.Contains(err.Error(), srv.pass) {
				t.Errorf("error shows the password:\n%v", err)
			}
		})
	}
}

// TestOpenUnreachable: a closed port, a server that never answers the TLS
// handshake and a name that does not resolve are reported quickly, naming
// host, port and what failed.
func TestOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().(*net.TCPAddr)
	closed.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() { // accept and say nothing
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	silentAddr := silent.Addr().(*net.TCPAddr)

	tests := []struct {
		name     string
		url      string
		contains []string
	}{
		{"closed port", fmt.Sprintf("https://127.0.0.1:%d/sdk", closedAddr.Port),
			[]string{"host 127.0.0.1", fmt.Sprintf("port %d", closedAddr.Port), "TCP connect: connection refused"}},
		{"silent server", fmt.Sprintf("https://127.0.0.1:%d/sdk", silentAddr.Port),
			[]string{"host 127.0.0.1", fmt.Sprintf("port %d", silentAddr.Port), "TLS handshake: no answer within 300ms"}},
		// .invalid never resolves (RFC 6761); without DNS at all the
		// lookup fails or times out, a name lookup error either way.
		{"unknown host", "https://vcenter.example.invalid/sdk", []string{"host vcenter.example.invalid", "port 443", "name lookup"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := vcenter.Open(ctx, tt.url,
				vcenter.Options{Username: "u", Password: "p", Insecure: true, DialTimeout: 300 * time.Millisecond})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Open took %v: the dial timeout does not bound it", took)
			}
			t.Log(err)
			if !errors.Is(err, vcenter.ErrUnreachable) {
				t.Fatalf("Open error = %v, want %v", err, vcenter.ErrUnreachable)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q:\n%v", s, err)
				}
			}
		})
	}
}

// TestParseThumbprint: govc's spelling and its variants parse to the same
// bytes; anything else is refused.
func TestParseThumbprint(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	want20 := sum[:20]
	colon := func(b []byte, upper bool) string {
		var parts []string
		for _, x := range b {
			f := "%02x"
			if upper {
				f = "%02X"
			}
			parts = append(parts, fmt.Sprintf(f, x))
		}
		return strings.Join(parts, ":")
	}
	for _, s := range []string{colon(want20, true), colon(want20, false), strings.ReplaceAll(colon(want20, true), ":", ""), " " + colon(want20, true) + "\n"} {
		got, err := vcenter.ParseThumbprint(s)
		if err != nil || string(got) != string(want20) {
			t.Errorf("ParseThumbprint(%q) = %x, %v; want %x", s, got, err, want20)
		}
	}
	if got, err := vcenter.ParseThumbprint(colon(sum[:], true)); err != nil || len(got) != 32 {
		t.Errorf("ParseThumbprint(SHA-256) = %x, %v", got, err)
	}
	for _, s := range []string{"", "AB:CD", "ZZ" + colon(want20, true)[2:], colon(sum[:21], true)} {
		if _, err := vcenter.ParseThumbprint(s); !errors.Is(err, vsphere.ErrInvalidArgument) {
			t.Errorf("ParseThumbprint(%q) error = %v, want %v", s, err, vsphere.ErrInvalidArgument)
		}
	}
}
