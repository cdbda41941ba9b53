package enroll

// The certificate lifecycle after enrollment, on the same HTTPS endpoint:
//
//   - POST RenewPath: a host presents its current certificate (mutual TLS:
//     the endpoint asks for a client certificate and verifies any it gets
//     against the vault CA) and a certificate request for a fresh key; the
//     configuration server issues a certificate for the same host name,
//     records its serial, and answers it. A revoked or expired certificate
//     cannot renew: the host must enroll again with the passphrase.
//   - GET RevokedPath: a host presenting its certificate gets the vault's
//     revocation list (the serials revoked and not yet expired), which its
//     own TLS servers then refuse. A revoked host asking is told so
//     (Refusal naming the revocation).
//   - POST RevokePath: an operator proving the passphrase (as enrollment
//     does) revokes every certificate of a host, or one serial.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/pki"
)

// Paths of the certificate lifecycle.
const (
	RenewPath   = "/v2a/renew"
	RevokedPath = "/v2a/revoked"
	RevokePath  = "/v2a/revoke"
)

// Paths are every path Handler serves.
var Paths = []string{Path, RenewPath, RevokedPath, RevokePath}

// MAC purposes of revocation (vault.Keys.MAC).
const (
	purposeRevoke       = "revoke request"
	purposeRevokeAnswer = "revoke answer"
)

// ReasonRevoked starts the refusal of a request whose client certificate
// is revoked.
const ReasonRevoked = "certificate revoked by the configuration server"

// ErrRevoked: the configuration server says this host's certificate is
// revoked. It wraps pki.ErrRevoked.
var ErrRevoked = fmt.Errorf("%w (enroll again with the vault passphrase to get a new one)", pki.ErrRevoked)

// RenewRequest is the body of POST RenewPath.
type RenewRequest struct {
	CSR []byte `json:"csr"` // DER, for a fresh key
}

// RenewAnswer is the body of a successful POST RenewPath.
type RenewAnswer struct {
	Cert []byte `json:"cert"` // DER, for the client certificate's host and the CSR's key
}

// RevokedCert is one entry of the revocation list.
type RevokedCert struct {
	Serial string `json:"serial"` // pki.SerialText
	Host   string `json:"host"`
}

// RevokedList is the body of GET RevokedPath.
type RevokedList struct {
	Revoked []RevokedCert `json:"revoked"`
}

// RevokeRequest is the body of POST RevokePath: Host or Serial, not both.
type RevokeRequest struct {
	Host   string `json:"host,omitempty"`
	Serial string `json:"serial,omitempty"`
	Nonce  []byte `json:"nonce"`
	MAC    []byte `json:"mac"` // vault MAC "revoke request" over Host, Serial, Nonce
}

// RevokeAnswer is the body of a successful POST RevokePath.
type RevokeAnswer struct {
	Revoked []RevokedCert `json:"revoked"` // revoked by this request
	MAC     []byte        `json:"mac"`     // vault MAC "revoke answer" over Nonce and revokedText(Revoked)
}

// allowed says whether r's method is method, and otherwise answers 405.
func allowed(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeJSON(w, http.StatusMethodNotAllowed, Refusal{Reason: "method " + r.Method + " not allowed"})
	return false
}

// decode reads r's JSON body (at most maxBody bytes, no unknown fields)
// into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func revokedText(rs []RevokedCert) []byte {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%s %s\n", r.Serial, r.Host)
	}
	return []byte(b.String())
}

// peer is the verified client certificate of r, or a refusal already
// written: none, or a revoked one.
func (h *Handler) peer(w http.ResponseWriter, log *slog.Logger, r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		h.refuse(w, log, r, http.StatusUnauthorized, "", "a client certificate from the vault CA is needed (mutual TLS)")
		return nil
	}
	c := r.TLS.PeerCertificates[0]
	if h.Keeper != nil {
		if err := h.Keeper.Check(c); err != nil {
			h.refuse(w, log, r, http.StatusForbidden, c.Subject.CommonName,
				fmt.Sprintf("%s: %s serial %s", ReasonRevoked, c.Subject.CommonName, pki.SerialText(c.SerialNumber)))
			return nil
		}
	}
	return c
}

func (h *Handler) renew(w http.ResponseWriter, log *slog.Logger, r *http.Request) {
	if !allowed(w, r, http.MethodPost) {
		return
	}
	old := h.peer(w, log, r)
	if old == nil {
		return
	}
	host := old.Subject.CommonName
	var req RenewRequest
	if err := decode(w, r, &req); err != nil {
		h.refuse(w, log, r, http.StatusBadRequest, host, fmt.Sprintf("malformed request: %v", err))
		return
	}
	cert, ok := h.issue(w, log, r, req.CSR, host)
	if !ok {
		return
	}
	log.Info("enroll: certificate renewed", "host", host, "remote", r.RemoteAddr, "old_serial", pki.SerialText(old.SerialNumber),
		"serial", pki.SerialText(cert.SerialNumber), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	writeJSON(w, http.StatusOK, RenewAnswer{Cert: cert.Raw})
}

// issue issues a certificate for host to the CSR's key and records it in
// the register; on failure the refusal is written.
func (h *Handler) issue(w http.ResponseWriter, log *slog.Logger, r *http.Request, csr []byte, host string) (*x509.Certificate, bool) {
	validity := h.Validity
	if validity == 0 {
		validity = pki.HostValidity
	}
	cert, err := h.CA.IssueCSR(csr, host, h.Now(), validity)
	if err != nil {
		status := http.StatusBadRequest
		if !errors.Is(err, pki.ErrBadCSR) {
			status = http.StatusInternalServerError
		}
		h.refuse(w, log, r, status, host, err.Error())
		return nil, false
	}
	if h.Certs != nil {
		// Recorded before it is handed out: a certificate the register
		// does not know could not be revoked by host.
		err := h.Certs.Issued(r.Context(), csstore.Cert{Serial: pki.SerialText(cert.SerialNumber), Host: host, NotAfter: cert.NotAfter.UTC()})
		if err != nil {
			h.refuse(w, log, r, http.StatusInternalServerError, host, fmt.Sprintf("recording the certificate: %v", err))
			return nil, false
		}
	}
	return cert, true
}

func (h *Handler) revoked(w http.ResponseWriter, log *slog.Logger, r *http.Request) {
	if !allowed(w, r, http.MethodGet) {
		return
	}
	if h.peer(w, log, r) == nil {
		return
	}
	var list RevokedList
	if h.Keeper != nil {
		for _, rv := range h.Keeper.Revoked() {
			list.Revoked = append(list.Revoked, RevokedCert{Serial: pki.SerialText(rv.Serial), Host: rv.Host})
		}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) revoke(w http.ResponseWriter, log *slog.Logger, r *http.Request) {
	if !allowed(w, r, http.MethodPost) {
		return
	}
	var req RevokeRequest
	if err := decode(w, r, &req); err != nil {
		h.refuse(w, log, r, http.StatusBadRequest, "", fmt.Sprintf("malformed request: %v", err))
		return
	}
	if len(req.Nonce) != nonceLen {
		h.refuse(w, log, r, http.StatusBadRequest, req.Host, fmt.Sprintf("nonce of %d bytes, want %d", len(req.Nonce), nonceLen))
		return
	}
	if !h.Keys.VerifyMAC(req.MAC, purposeRevoke, []byte(req.Host), []byte(req.Serial), req.Nonce) {
		h.refuse(w, log, r, http.StatusForbidden, req.Host, ReasonWrongPassphrase)
		return
	}
	if (req.Host == "") == (req.Serial == "") {
		h.refuse(w, log, r, http.StatusBadRequest, req.Host, "name a host or a serial, not both or neither")
		return
	}
	if req.Serial != "" {
		if _, err := pki.ParseSerial(req.Serial); err != nil {
			h.refuse(w, log, r, http.StatusBadRequest, "", err.Error())
			return
		}
		req.Serial = strings.ToLower(req.Serial)
	}
	if h.Certs == nil {
		h.refuse(w, log, r, http.StatusNotImplemented, req.Host, "this endpoint keeps no certificate register")
		return
	}
	now := h.Now()
	done, err := h.Certs.Revoke(r.Context(), req.Host, req.Serial, now)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, csstore.ErrNoCert) {
			status = http.StatusNotFound
		}
		h.refuse(w, log, r, status, req.Host, err.Error())
		return
	}
	if err := h.Reload(r.Context()); err != nil {
		h.refuse(w, log, r, http.StatusInternalServerError, req.Host, err.Error())
		return
	}
	var ans RevokeAnswer
	for _, c := range done {
		ans.Revoked = append(ans.Revoked, RevokedCert{Serial: c.Serial, Host: c.Host})
		log.Warn("enroll: certificate revoked", "host", c.Host, "serial", c.Serial, "remote", r.RemoteAddr)
	}
	ans.MAC = h.Keys.MAC(purposeRevokeAnswer, req.Nonce, revokedText(ans.Revoked))
	writeJSON(w, http.StatusOK, ans)
}

// ServerTLSKeeper is the TLS configuration of the enrollment listener: the
// configuration server's current certificate (k), TLS 1.3 at least, and a
// client certificate asked for but not required (an enrolling host has
// none yet; a renewing one presents its own, verified against the vault
// CA: a foreign or expired one fails the handshake). Revocation is judged
// by the handler, which can then say so in its answer.
func ServerTLSKeeper(k *pki.Keeper) *tls.Config {
	return k.ServerConfigWith(func(cfg *tls.Config) {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.VerifyConnection = nil
	})
}
