package enroll

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/vault"
)

// Handler serves Path for the configuration server: it issues a host
// certificate to whoever proves the vault passphrase, and logs every
// refusal with the host, the remote address and the reason.
type Handler struct {
	CA       *pki.CA
	Keys     vault.Keys
	Now      func() time.Time // the clock of certificates' validity
	Validity time.Duration    // of issued certificates; 0 means pki.HostValidity
	Log      *slog.Logger     // nil discards
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, Info{VaultID: h.Keys.VaultID})
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST")
		writeJSON(w, http.StatusMethodNotAllowed, Refusal{Reason: "method " + r.Method + " not allowed"})
		return
	}
	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.refuse(w, log, r, http.StatusBadRequest, "", fmt.Sprintf("malformed request: %v", err))
		return
	}
	if err := pki.ValidHost(req.Host); err != nil {
		h.refuse(w, log, r, http.StatusBadRequest, req.Host, err.Error())
		return
	}
	if len(req.Nonce) != nonceLen {
		h.refuse(w, log, r, http.StatusBadRequest, req.Host, fmt.Sprintf("nonce of %d bytes, want %d", len(req.Nonce), nonceLen))
		return
	}
	if !h.Keys.VerifyMAC(req.MAC, purposeRequest, []byte(req.Host), req.CSR, req.Nonce) {
		h.refuse(w, log, r, http.StatusForbidden, req.Host, ReasonWrongPassphrase)
		return
	}
	validity := h.Validity
	if validity == 0 {
		validity = pki.HostValidity
	}
	cert, err := h.CA.IssueCSR(req.CSR, req.Host, h.Now(), validity)
	if err != nil {
		status := http.StatusBadRequest
		if !errors.Is(err, pki.ErrBadCSR) {
			status = http.StatusInternalServerError
		}
		h.refuse(w, log, r, status, req.Host, err.Error())
		return
	}
	ans := Answer{Cert: cert.Raw, CA: h.CA.Cert.Raw}
	ans.MAC = h.Keys.MAC(purposeAnswer, []byte(req.Host), req.Nonce, ans.Cert, ans.CA)
	log.Info("enroll: certificate issued", "host", req.Host, "remote", r.RemoteAddr,
		"serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	writeJSON(w, http.StatusOK, ans)
}

func (h *Handler) refuse(w http.ResponseWriter, log *slog.Logger, r *http.Request, status int, host, reason string) {
	log.Warn("enroll: refused", "host", host, "remote", r.RemoteAddr, "reason", reason)
	writeJSON(w, status, Refusal{Reason: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ServerTLS is the TLS configuration of the enrollment listener: the
// configuration server's certificate, TLS 1.3 at least, and no client
// certificate asked for (an enrolling host has none yet).
func ServerTLS(id pki.Identity) *tls.Config {
	cfg := pki.ServerConfig(id)
	cfg.ClientAuth = tls.NoClientCert
	cfg.ClientCAs = nil
	return cfg
}
