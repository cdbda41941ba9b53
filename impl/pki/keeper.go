package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync/atomic"
	"time"
)

// RenewFraction is the part of a host certificate's validity left when its
// holder asks for a new one: a third. With the default HostValidity that
// is four months before expiry, room for an operator to notice a holder
// that failed to renew; with a short test validity (configsrv
// --cert-validity 12s) it is 4 s, several of the holder's checks.
const RenewFraction = 3 // renew when less than validity/RenewFraction remains

// Lifetime is the validity cert was issued with: NotAfter − NotBefore, less
// the clock-skew allowance Issue backdates NotBefore by.
func Lifetime(cert *x509.Certificate) time.Duration {
	d := cert.NotAfter.Sub(cert.NotBefore)
	if d > clockSkew {
		d -= clockSkew
	}
	return d
}

// RenewAt is when cert's holder should ask for a new one: when less than
// a third (RenewFraction) of its Lifetime remains.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotAfter.Add(-Lifetime(cert) / RenewFraction)
}

// RenewDue reports whether cert should be renewed at time now.
func RenewDue(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewAt(cert))
}

// ErrRevoked refuses a peer whose certificate the configuration server
// revoked (its machine unregistered, or the certificate reported stolen).
var ErrRevoked = errors.New("pki: certificate revoked by the configuration server")

// Revocation is one revoked certificate.
type Revocation struct {
	Serial *big.Int
	Host   string // the host it was issued to ("" when the serial alone was revoked)
}

// SerialText is how serials are written in logs, requests and the
// configuration server's database: lower-case hexadecimal.
func SerialText(s *big.Int) string { return s.Text(16) }

// ParseSerial reads a SerialText.
func ParseSerial(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("pki: serial %q: want a positive hexadecimal number", s)
	}
	return n, nil
}

// Keeper holds a host's current identity and the vault's revocation list
// for the TLS configurations built from it, so that a renewed certificate
// is presented, and a newly revoked peer refused, on every connection made
// after the change without rebuilding anything. Safe for concurrent use:
// TLS handshakes read it on their own goroutines while the holder's
// renewal replaces it.
type Keeper struct {
	id      atomic.Pointer[Identity]
	revoked atomic.Pointer[[]Revocation] // sorted by serial
}

// NewKeeper starts a Keeper with id and no revocations.
func NewKeeper(id Identity) *Keeper {
	k := &Keeper{}
	k.Set(id)
	k.SetRevoked(nil)
	return k
}

// Identity is the current identity.
func (k *Keeper) Identity() Identity { return *k.id.Load() }

// Set makes id the identity presented from the next handshake on.
// Connections made before keep the certificate they were made with.
func (k *Keeper) Set(id Identity) { k.id.Store(&id) }

// SetRevoked replaces the revocation list.
func (k *Keeper) SetRevoked(rs []Revocation) {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Revocation) int { return a.Serial.Cmp(b.Serial) })
	k.revoked.Store(&rs)
}

// Revoked is the current revocation list, sorted by serial.
func (k *Keeper) Revoked() []Revocation { return slices.Clone(*k.revoked.Load()) }

// Check refuses cert with ErrRevoked when its serial is revoked, naming
// the certificate's host and serial.
func (k *Keeper) Check(cert *x509.Certificate) error {
	rs := *k.revoked.Load()
	if _, found := slices.BinarySearchFunc(rs, cert.SerialNumber, func(r Revocation, s *big.Int) int { return r.Serial.Cmp(s) }); found {
		return fmt.Errorf("%w: %s (serial %s, issued by %s)", ErrRevoked, certName(cert), SerialText(cert.SerialNumber), cert.Issuer.CommonName)
	}
	return nil
}

func certName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// verifyConnection refuses a verified peer certificate that is revoked.
func (k *Keeper) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // nothing presented: crypto/tls's ClientAuth decides
	}
	return k.Check(cs.PeerCertificates[0])
}

// ServerConfig is ServerConfig of the current identity, read at each
// handshake, that also refuses a client whose certificate is revoked.
func (k *Keeper) ServerConfig() *tls.Config { return k.ServerConfigWith(nil) }

// ServerConfigWith is ServerConfig with change applied to the
// configuration of every handshake (the enrollment listener relaxes
// ClientAuth). Each handshake gets its configuration from
// GetConfigForClient, built from the identity current then, so that
// certificates set on the returned configuration itself (httptest adds
// its own) are never presented.
func (k *Keeper) ServerConfigWith(change func(*tls.Config)) *tls.Config {
	build := func() *tls.Config {
		cfg := ServerConfig(k.Identity())
		cfg.VerifyConnection = k.verifyConnection
		if change != nil {
			change(cfg)
		}
		return cfg
	}
	outer := build()
	outer.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return build(), nil }
	return outer
}

// ClientConfig is ClientConfig of the current identity, read at each
// handshake, that also refuses a server whose certificate is revoked.
func (k *Keeper) ClientConfig() *tls.Config {
	cfg := ClientConfig(k.Identity())
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c := k.Identity().tlsCert()
		return &c, nil
	}
	cfg.VerifyConnection = k.verifyConnection
	return cfg
}
