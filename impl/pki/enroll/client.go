package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/vault"
)

// Client enrolls hosts. The zero value is usable.
type Client struct {
	// HTTP makes the requests. Default: a client whose TLS accepts any
	// server certificate (the CA is not known yet: the answer's MAC and the
	// check that the received CA signed the server's certificate stand in
	// for it), TLS 1.3 at least, 30 s timeout.
	HTTP *http.Client
	// Store is where the identity is written. Default: pki.OS.
	Store *pki.Store
	// Now is the clock that judges the issued certificate. Default: the
	// real clock.
	Now func() time.Time
}

// Enroll enrolls host with the configuration server at csURL (https://
// host:port) using the vault passphrase, and writes the identity into dir
// (cert.pem, key.pem, ca.pem). Nothing is written unless every check
// passed.
func Enroll(ctx context.Context, csURL, host, passphrase, dir string) (pki.Identity, error) {
	return Client{}.Enroll(ctx, csURL, host, passphrase, dir)
}

// Enroll is the package's Enroll with c's settings.
func (c Client) Enroll(ctx context.Context, csURL, host, passphrase, dir string) (pki.Identity, error) {
	id, err := c.Get(ctx, csURL, host, passphrase)
	if err != nil {
		return pki.Identity{}, err
	}
	store := pki.OS
	if c.Store != nil {
		store = *c.Store
	}
	if err := store.SaveIdentity(dir, id); err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	return id, nil
}

// Get runs the enrollment exchange and returns the identity without
// writing it anywhere.
func (c Client) Get(ctx context.Context, csURL, host, passphrase string) (pki.Identity, error) {
	if err := pki.ValidHost(host); err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	endpoint, err := endpoint(csURL, Path)
	if err != nil {
		return pki.Identity{}, err
	}
	hc := c.passphraseClient()
	info, keys, err := c.vaultKeys(ctx, hc, endpoint, passphrase)
	if err != nil {
		return pki.Identity{}, err
	}

	csr, key, err := pki.NewCSR(host)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	req := Request{Host: host, CSR: csr, Nonce: make([]byte, nonceLen)}
	if _, err := rand.Read(req.Nonce); err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: nonce: %w", err)
	}
	req.MAC = keys.MAC(purposeRequest, []byte(host), req.CSR, req.Nonce)
	body, err := json.Marshal(req)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	var ans Answer
	resp, err := c.do(ctx, hc, http.MethodPost, endpoint, body, &ans)
	if err != nil {
		if errors.Is(err, ErrWrongPassphrase) {
			return pki.Identity{}, fmt.Errorf("%w (host %s, vault %s, %s)", ErrWrongPassphrase, host, info.VaultID, endpoint)
		}
		return pki.Identity{}, err
	}
	defer resp.Body.Close()
	if !keys.VerifyMAC(ans.MAC, purposeAnswer, []byte(host), req.Nonce, ans.Cert, ans.CA) {
		return pki.Identity{}, fmt.Errorf("%w (%s)", ErrTampered, endpoint)
	}
	return checkAnswer(ans, host, key, resp.TLS, c.at())
}

// passphraseClient is c.HTTP, or the default client of the exchanges the
// vault passphrase authenticates (enrollment, revocation): any server
// certificate is accepted, the answers' MACs standing in for it.
func (c Client) passphraseClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true},
	}}
}

// vaultKeys asks the enrollment endpoint which vault it serves and derives
// that vault's keys from the passphrase.
func (c Client) vaultKeys(ctx context.Context, hc *http.Client, endpoint, passphrase string) (Info, vault.Keys, error) {
	var info Info
	resp, err := c.do(ctx, hc, http.MethodGet, endpoint, nil, &info)
	if err != nil {
		return Info{}, vault.Keys{}, err
	}
	resp.Body.Close()
	keys, err := vault.Derive(info.VaultID, passphrase)
	if err != nil {
		return Info{}, vault.Keys{}, fmt.Errorf("enroll: %w", err)
	}
	return info, keys, nil
}

// at is the time issued certificates are judged at: c.Now, or zero (the
// real clock, as crypto/x509 takes it).
func (c Client) at() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Time{}
}

// checkAnswer turns an authenticated answer into an identity, checking it
// is for key and host, and that its CA signed the certificate the HTTPS
// server presented.
func checkAnswer(ans Answer, host string, key crypto.Signer, cs *tls.ConnectionState, at time.Time) (pki.Identity, error) {
	cert, err := x509.ParseCertificate(ans.Cert)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("%w: certificate: %w", ErrBadAnswer, err)
	}
	ca, err := x509.ParseCertificate(ans.CA)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("%w: CA: %w", ErrBadAnswer, err)
	}
	id := pki.Identity{Host: host, Cert: cert, Key: key, CA: ca}
	if err := id.Check(at); err != nil {
		return pki.Identity{}, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return pki.Identity{}, fmt.Errorf("%w: the server presented no certificate", ErrBadAnswer)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := cs.PeerCertificates[0]
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return pki.Identity{}, fmt.Errorf("%w: the HTTPS server's certificate (%s) is not from the vault CA: %w", ErrBadAnswer, srv.Subject.CommonName, err)
	}
	return id, nil
}

// do sends one request and decodes a 200 answer into out; a refusal
// becomes ErrRefused or ErrWrongPassphrase with the server's reason.
func (c Client) do(ctx context.Context, hc *http.Client, method, endpoint string, body []byte, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("enroll: %s %s: %w", method, endpoint, err)
		}
		return nil, fmt.Errorf("%w: %s %s: %w", ErrUnreachable, method, endpoint, err)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("enroll: %s %s: reading the answer: %w", method, endpoint, err)
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(nil))
	if len(data) > maxBody {
		return nil, fmt.Errorf("%w: %s %s: answer longer than %d bytes", ErrBadAnswer, method, endpoint, maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		var ref Refusal
		if json.Unmarshal(data, &ref) != nil || ref.Reason == "" {
			ref.Reason = strings.TrimSpace(string(data))
		}
		if ref.Reason == ReasonWrongPassphrase {
			return nil, ErrWrongPassphrase
		}
		return nil, fmt.Errorf("%w: %s %s: %s: %s", ErrRefused, method, endpoint, resp.Status, ref.Reason)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrBadAnswer, method, endpoint, err)
	}
	return resp, nil
}
