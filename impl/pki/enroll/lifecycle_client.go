package enroll

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
)

// mtls is an HTTP client presenting k's current certificate and accepting
// only the configuration server csHost's certificate from the vault CA
// (not revoked), for one exchange.
func mtls(k *pki.Keeper, csHost string) *http.Client {
	cfg := k.ClientConfig()
	cfg.ServerName = csHost
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func endpoint(csURL, path string) (string, error) {
	u, err := url.Parse(csURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("enroll: configuration server URL %q: want https://HOST:PORT", csURL)
	}
	u.Path = path
	return u.String(), nil
}

// Renew asks the configuration server at csURL (whose certificate names
// csHost) for a new certificate for k's host, over mutual TLS with k's
// current certificate, with a fresh key. It returns the new identity
// without writing it or setting it in k (the caller saves it with
// pki.Store.SaveRenewal first). A revoked certificate is ErrRevoked.
func (c Client) Renew(ctx context.Context, csURL, csHost string, k *pki.Keeper) (pki.Identity, error) {
	ep, err := endpoint(csURL, RenewPath)
	if err != nil {
		return pki.Identity{}, err
	}
	cur := k.Identity()
	csr, key, err := pki.NewCSR(cur.Host)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	body, err := json.Marshal(RenewRequest{CSR: csr})
	if err != nil {
		return pki.Identity{}, fmt.Errorf("enroll: %w", err)
	}
	var ans RenewAnswer
	if _, err := c.do(ctx, c.client(k, csHost), http.MethodPost, ep, body, &ans); err != nil {
		return pki.Identity{}, revokedErr(err)
	}
	cert, err := x509.ParseCertificate(ans.Cert)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("%w: certificate: %w", ErrBadAnswer, err)
	}
	id := pki.Identity{Host: cur.Host, Cert: cert, Key: key, CA: cur.CA}
	if err := id.Check(c.at()); err != nil {
		return pki.Identity{}, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	return id, nil
}

// Revocations fetches the vault's revocation list over mutual TLS with k.
// A revoked certificate of k's own is ErrRevoked.
func (c Client) Revocations(ctx context.Context, csURL, csHost string, k *pki.Keeper) ([]pki.Revocation, error) {
	ep, err := endpoint(csURL, RevokedPath)
	if err != nil {
		return nil, err
	}
	var list RevokedList
	if _, err := c.do(ctx, c.client(k, csHost), http.MethodGet, ep, nil, &list); err != nil {
		return nil, revokedErr(err)
	}
	out := make([]pki.Revocation, 0, len(list.Revoked))
	for _, r := range list.Revoked {
		n, err := pki.ParseSerial(r.Serial)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadAnswer, err)
		}
		out = append(out, pki.Revocation{Serial: n, Host: r.Host})
	}
	return out, nil
}

func (c Client) client(k *pki.Keeper, csHost string) *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return mtls(k, csHost)
}

// revokedErr turns the server's refusal of a revoked certificate into
// ErrRevoked (keeping the server's words).
func revokedErr(err error) error {
	if strings.Contains(err.Error(), ReasonRevoked) {
		return fmt.Errorf("%w: %w", ErrRevoked, err)
	}
	return err
}

// Revoke asks the configuration server at csURL to revoke every
// certificate of host, or the one serial (give one of them), proving the
// vault passphrase. It returns what was revoked now (nothing when it was
// revoked already). The answer is authenticated by the passphrase, so a
// man in the middle cannot fake a revocation that did not happen.
func (c Client) Revoke(ctx context.Context, csURL, passphrase, host, serial string) ([]RevokedCert, error) {
	ep, err := endpoint(csURL, RevokePath)
	if err != nil {
		return nil, err
	}
	hc := c.passphraseClient()
	ep0, _ := endpoint(csURL, Path) // the same URL: it parsed above
	_, keys, err := c.vaultKeys(ctx, hc, ep0, passphrase)
	if err != nil {
		return nil, err
	}
	req := RevokeRequest{Host: host, Serial: serial, Nonce: make([]byte, nonceLen)}
	if _, err := rand.Read(req.Nonce); err != nil {
		return nil, fmt.Errorf("enroll: nonce: %w", err)
	}
	req.MAC = keys.MAC(purposeRevoke, []byte(host), []byte(serial), req.Nonce)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var ans RevokeAnswer
	if _, err := c.do(ctx, hc, http.MethodPost, ep, body, &ans); err != nil {
		return nil, err
	}
	if !keys.VerifyMAC(ans.MAC, purposeRevokeAnswer, req.Nonce, revokedText(ans.Revoked)) {
		return nil, fmt.Errorf("%w (%s)", ErrTampered, ep)
	}
	return ans.Revoked, nil
}
