package vsphere

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// ErrServe is wrapped by the errors Serve returns.
var ErrServe = errors.New("vsphere: serve")

// ServeOptions configure Serve.
type ServeOptions struct {
	// Listen is the TCP address to listen on; "" for 127.0.0.1 on a free
	// port.
	Listen string
	// Certificate is the server's TLS certificate; nil makes a fresh
	// self-signed one (SelfSigned) for the listen host.
	Certificate *tls.Certificate
}

// Serve starts the simulator's HTTPS SDK endpoint at opts.Listen, once per
// world (URL and Serve share the one server), and returns its address with
// User and Password in it, and the certificate it presents.
func (w *World) Serve(opts ServeOptions) (_ *url.URL, _ *x509.Certificate, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.server != nil {
		return nil, nil, fmt.Errorf("%w: already serving at %s", ErrServe, w.server.URL.Host)
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: listen address %q: %v", ErrServe, listen, err)
	}
	cert := opts.Certificate
	if cert == nil {
		c, err := SelfSigned(host)
		if err != nil {
			return nil, nil, err
		}
		cert = &c
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: certificate: %v", ErrServe, err)
	}
	// vcsim's server panics when it cannot listen; a taken port is bad
	// input, so it becomes an error here.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: listen on %s: %v", ErrServe, listen, r)
		}
	}()
	w.model.Service.Listen = &url.URL{Host: listen}
	w.model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	w.server = w.model.Service.NewServer()
	u := *w.server.URL
	u.User = url.UserPassword(User, Password)
	return &u, leaf, nil
}

// SelfSigned makes a self-signed ECDSA P-256 server certificate valid for
// a year for host (a name or an IP address) and for localhost, 127.0.0.1
// and ::1: a lab vCenter's certificate, which clients trust by thumbprint,
// by the certificate as CA file, or not at all (insecure).
func SelfSigned(host string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("vsphere: self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("vsphere: self-signed certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "v2a vcsim", Organization: []string{"v2a"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that the certificate itself can be a client's CA file
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsUnspecified() && !ip.IsLoopback() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if host != "" && host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("vsphere: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
