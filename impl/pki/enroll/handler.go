package enroll

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/vault"
)

// Handler serves Paths for the configuration server: it issues a host
// certificate to whoever proves the vault passphrase, renews and revokes
// them (lifecycle.go), and logs every refusal with the host, the remote
// address and the reason.
type Handler struct {
	CA       *pki.CA
	Keys     vault.Keys
	Now      func() time.Time // the clock of certificates' validity
	Validity time.Duration    // of issued certificates; 0 means pki.HostValidity
	Log      *slog.Logger     // nil discards
	// Certs, when set, records every certificate issued and keeps the
	// revocations (RevokePath needs it).
	Certs csstore.Certs
	// Keeper, when set, is the configuration server's own: its revocation
	// list is what the handler refuses and serves, and Reload refreshes it
	// from Certs after every revocation, so that the server's TLS
	// listeners refuse a revoked peer from the next handshake on.
	Keeper *pki.Keeper
}

// Reload sets the Keeper's revocation list from Certs (at start, and
// after each revocation).
func (h *Handler) Reload(ctx context.Context) error {
	if h.Certs == nil || h.Keeper == nil {
		return nil
	}
	list, err := h.Certs.Revoked(ctx, h.Now())
	if err != nil {
		return fmt.Errorf("enroll: revocation list: %w", err)
	}
	rs := make([]pki.Revocation, 0, len(list))
	for _, c := range list {
		n, err := pki.ParseSerial(c.Serial)
		if err != nil {
			return fmt.Errorf("enroll: revocation list: %w", err)
		}
		rs = append(rs, pki.Revocation{Serial: n, Host: c.Host})
	}
	h.Keeper.SetRevoked(rs)
	return nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch r.URL.Path {
	case Path:
	case RenewPath:
		h.renew(w, log, r)
		return
	case RevokedPath:
		h.revoked(w, log, r)
		return
	case RevokePath:
		h.revoke(w, log, r)
		return
	default:
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
	if err := decode(w, r, &req); err != nil {
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
	cert, ok := h.issue(w, log, r, req.CSR, req.Host)
	if !ok {
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

// ServerTLS is ServerTLSKeeper of a fixed identity.
func ServerTLS(id pki.Identity) *tls.Config {
	return ServerTLSKeeper(pki.NewKeeper(id))
}
