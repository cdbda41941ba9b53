package daemon

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/pki/enroll"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// certWatch keeps a daemon's certificate and revocation list, every
// c.CertCheck on the real clock:
//
//   - the configuration server (ca set) renews its own certificate from
//     the CA when it is due (pki.RenewDue: a third of its validity left);
//     its revocation list changes only with revocations, which its
//     enrollment endpoint applies at once;
//   - another daemon with an enroll URL fetches the vault's revocation
//     list (its TLS listener then refuses those peers: a revocation
//     reaches it within one cert-check period plus one request, at most
//     30 s) and, when due, renews over mutual TLS with its current
//     certificate.
//
// A renewed identity is saved (pki.Store.SaveRenewal: key, then
// certificate, fsynced) before the keeper presents it, so a restart never
// goes back to an older certificate than the peers have seen. Connections
// made before keep their certificate: replication is not interrupted.
type certWatch struct {
	daemon string
	c      Config
	k      *pki.Keeper
	ca     *pki.CA // the configuration server's; nil elsewhere
	log    *slog.Logger
	csHost string

	revokedSaid, expiredSaid bool // each said once, not every period
}

func newCertWatch(daemon string, c Config, k *pki.Keeper, ca *pki.CA, log *slog.Logger) *certWatch {
	return &certWatch{daemon: daemon, c: c, k: k, ca: ca, log: log, csHost: runtime.Addr(c.ConfigServer).Host()}
}

func (w *certWatch) run(ctx context.Context) {
	id := w.k.Identity()
	every := w.c.CertCheck.D()
	if every <= 0 {
		every = time.Minute
	}
	switch {
	case w.ca == nil && w.c.Enroll == "":
		w.log.Warn("daemon: certificate renewal and revocation list off: no enroll URL", "not_after", id.Cert.NotAfter.UTC().Format(time.RFC3339))
	default:
		w.log.Info("daemon: certificate", "host", id.Host, "serial", pki.SerialText(id.Cert.SerialNumber),
			"not_after", id.Cert.NotAfter.UTC().Format(time.RFC3339), "renew_at", pki.RenewAt(id.Cert).UTC().Format(time.RFC3339),
			"renew", w.c.CertRenew, "check_every", every.String())
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *certWatch) check(ctx context.Context) {
	now := time.Now()
	id := w.k.Identity()
	if now.After(id.Cert.NotAfter) {
		// Nothing to ask with it: the configuration server refuses an
		// expired certificate like every other peer.
		if !w.expiredSaid {
			w.expiredSaid = true
			w.log.Error("daemon: this host's certificate has expired: every vault peer refuses new connections with it (enroll again with the vault passphrase)",
				"host", id.Host, "serial", pki.SerialText(id.Cert.SerialNumber), "not_after", id.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
		return
	}
	if w.revokedSaid {
		return // revoked: nothing to renew, and asking again would only be refused
	}
	if w.ca == nil && w.c.Enroll != "" {
		w.fetchRevoked(ctx)
	}
	if w.c.CertRenew && pki.RenewDue(id.Cert, now) && (w.ca != nil || w.c.Enroll != "") && !w.revokedSaid {
		w.renew(ctx, id)
	}
}

func (w *certWatch) fetchRevoked(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := enroll.Client{}.Revocations(rctx, w.c.Enroll, w.csHost, w.k)
	switch {
	case errors.Is(err, enroll.ErrRevoked):
		if !w.revokedSaid {
			w.revokedSaid = true
			id := w.k.Identity()
			w.log.Error("daemon: this host's certificate was revoked by the configuration server: every vault peer refuses it",
				"host", id.Host, "serial", pki.SerialText(id.Cert.SerialNumber), "err", err.Error())
		}
	case err != nil:
		if ctx.Err() == nil {
			w.log.Warn("daemon: revocation list not fetched; keeping the last one", "enroll", w.c.Enroll, "err", err.Error())
		}
	default:
		if len(list) != len(w.k.Revoked()) {
			w.log.Info("daemon: revocation list", "revoked", len(list))
		}
		w.k.SetRevoked(list)
	}
}

func (w *certWatch) renew(ctx context.Context, old pki.Identity) {
	var next pki.Identity
	var err error
	if w.ca != nil {
		validity := pki.Lifetime(old.Cert)
		next, err = w.ca.NewIdentityFor(old.Host, time.Now(), validity)
	} else {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		next, err = enroll.Client{}.Renew(rctx, w.c.Enroll, w.csHost, w.k)
		cancel()
	}
	if err == nil {
		err = pki.OS.SaveRenewal(w.c.TLSDir, next)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("daemon: certificate renewal failed; trying again at the next check", "host", old.Host,
				"serial", pki.SerialText(old.Cert.SerialNumber), "not_after", old.Cert.NotAfter.UTC().Format(time.RFC3339), "err", err.Error())
		}
		return
	}
	w.k.Set(next)
	w.log.Info("daemon: certificate renewed", "host", next.Host, "old_serial", pki.SerialText(old.Cert.SerialNumber),
		"serial", pki.SerialText(next.Cert.SerialNumber), "not_after", next.Cert.NotAfter.UTC().Format(time.RFC3339),
		"renew_at", pki.RenewAt(next.Cert).UTC().Format(time.RFC3339))
}
