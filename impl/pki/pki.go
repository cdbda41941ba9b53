// Package pki is the vault's certificate authority: the configuration
// server holds it, every process server, agent and Azure-side service gets
// a certificate from it for its logical host name (cs01, ps01, a machine's
// name) at enrollment, and every later connection between them is mutual
// TLS that accepts only peers the vault CA signed.
//
// Keys are ECDSA P-256 and certificates X.509 from the standard library.
// Validity dates come from the caller's clock (a now argument): this
// package never reads the clock itself. Verifying a peer during a TLS
// handshake does use the real clock, as crypto/tls does.
//
// A CA is kept in a directory as ca.pem and ca-key.pem; an identity as
// cert.pem, key.pem and ca.pem (the files a daemon's --tls-dir holds).
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Validity periods.
const (
	// CAValidity is how long a vault CA is valid from its creation.
	CAValidity = 10 * 365 * 24 * time.Hour
	// HostValidity is how long a host certificate is valid from its issue.
	HostValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a peer whose clock is a little
	// behind the issuer's accepts a fresh certificate.
	clockSkew = 5 * time.Minute
	// maxHostLen is the longest logical host name (a DNS name's limit).
	maxHostLen = 253
)

// Errors.
var (
	ErrBadHost     = errors.New("pki: bad host name")
	ErrNotIssued   = errors.New("pki: certificate not issued by this vault CA")
	ErrKeyMismatch = errors.New("pki: certificate and key do not match")
	ErrBadCSR      = errors.New("pki: bad certificate request")
	ErrVault       = errors.New("pki: CA belongs to another vault")
)

// CA is a vault's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// VaultID is the vault the CA was made for (its subject's organization).
func (ca *CA) VaultID() string {
	if len(ca.Cert.Subject.Organization) == 0 {
		return ""
	}
	return ca.Cert.Subject.Organization[0]
}

// NewCA makes a vault's CA, valid from now for CAValidity.
func NewCA(vaultID string, now time.Time) (*CA, error) {
	if vaultID == "" {
		return nil, errors.New("pki: new CA: empty vault ID")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "v2a vault CA " + vaultID, Organization: []string{vaultID}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ValidHost checks a logical host name: 1 to 253 characters of letters,
// digits, '.', '-' and '_' (vCenter names such as DC0_C0_H0_VM0 have
// underscores, which crypto/x509 accepts in names), not starting or ending
// with '.' or '-'.
func ValidHost(host string) error {
	if host == "" || len(host) > maxHostLen {
		return fmt.Errorf("%w: %q: want 1 to %d characters", ErrBadHost, host, maxHostLen)
	}
	for _, r := range host {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("%w: %q: character %q not allowed (letters, digits, '.', '-', '_')", ErrBadHost, host, r)
		}
	}
	if strings.HasPrefix(host, ".") || strings.HasPrefix(host, "-") || strings.HasSuffix(host, ".") || strings.HasSuffix(host, "-") {
		return fmt.Errorf("%w: %q: starts or ends with '.' or '-'", ErrBadHost, host)
	}
	return nil
}

// Issue signs a certificate for host's public key, valid from now for
// validity, usable both as a TLS server and a TLS client (every component
// both listens and dials). The host is the certificate's common name and
// its only DNS name.
func (ca *CA) Issue(pub crypto.PublicKey, host string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if err := ValidHost(host); err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: ca.Cert.Subject.Organization},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %s: %w", host, err)
	}
	return x509.ParseCertificate(der)
}

// IssueCSR checks a certificate request's signature (its sender holds the
// key) and issues a certificate for host to the request's public key. The
// request's own subject and names are ignored: the certificate names host.
func (ca *CA) IssueCSR(csrDER []byte, host string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return ca.Issue(csr.PublicKey, host, now, validity)
}

// NewCSR makes a key and a certificate request for host signed with it.
func NewCSR(host string) (csrDER []byte, key crypto.Signer, err error) {
	if err := ValidHost(host); err != nil {
		return nil, nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
	}, k)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	return der, k, nil
}

// Identity is what one logical host presents and trusts: its certificate
// and key, and the vault CA that signs its peers.
type Identity struct {
	Host string
	Cert *x509.Certificate
	Key  crypto.Signer
	CA   *x509.Certificate
}

// NewIdentity makes a key for host and issues its certificate, valid from
// now for HostValidity (the configuration server's own identity, and
// tests').
func (ca *CA) NewIdentity(host string, now time.Time) (Identity, error) {
	return ca.NewIdentityFor(host, now, HostValidity)
}

// NewIdentityFor is NewIdentity with a chosen validity.
func (ca *CA) NewIdentityFor(host string, now time.Time, validity time.Duration) (Identity, error) {
	csr, key, err := NewCSR(host)
	if err != nil {
		return Identity{}, err
	}
	cert, err := ca.IssueCSR(csr, host, now, validity)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Host: host, Cert: cert, Key: key, CA: ca.Cert}, nil
}

// Check verifies that id is consistent: its key is its certificate's, the
// certificate was signed by its CA for its host with both TLS usages, and
// at time at it is within its validity (a zero at: the real clock, as
// crypto/x509 reads it).
func (id Identity) Check(at time.Time) error {
	if id.Cert == nil || id.Key == nil || id.CA == nil {
		return errors.New("pki: incomplete identity (certificate, key and CA needed)")
	}
	pub, ok := id.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(id.Key.Public()) {
		return fmt.Errorf("%w (%s)", ErrKeyMismatch, id.Cert.Subject.CommonName)
	}
	return Verify(id.CA, id.Cert, id.Host, at)
}

// Verify checks that cert was issued by ca for host, for both TLS usages,
// and is valid at time at (a zero at: now).
func Verify(ca, cert *x509.Certificate, host string, at time.Time) error {
	if ca == nil || cert == nil {
		return fmt.Errorf("%w: missing certificate", ErrNotIssued)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{use}})
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrNotIssued, cert.Subject.CommonName, err)
		}
	}
	return nil
}

// SameCA reports whether a and b are the same CA certificate.
func SameCA(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.Raw, b.Raw)
}

func (id Identity) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
}

func (id Identity) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.CA)
	return p
}

// ServerConfig is the TLS configuration of a listener with identity id:
// TLS 1.3 at least, presenting id's certificate, and requiring a client
// certificate that the vault CA signed for client use. Any vault host may
// connect; which host it is, is the certificate's DNS name.
func ServerConfig(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.tlsCert()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.pool(),
	}
}

// ClientConfig is the TLS configuration of a dialler with identity id: TLS
// 1.3 at least, presenting id's certificate, and accepting only a server
// certificate the vault CA signed for the server's logical host name.
// ServerName is left empty: runtime.Real fills it with the destination
// Addr's host (cs01, ps01) for each connection; other callers must set it.
//
// The client always presents its certificate, even when the server asks
// for another CA's (crypto/tls would otherwise send none): a server then
// logs which certificate it refused and why, rather than "no certificate".
func ClientConfig(id Identity) *tls.Config {
	cert := id.tlsCert()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		RootCAs: id.pool(),
	}
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
