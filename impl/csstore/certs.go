package csstore

import (
	"context"
	"errors"
	"time"
)

// Cert is a host certificate the configuration server issued (or a serial
// it was asked to revoke without having issued it: Host is then empty
// and NotAfter zero).
type Cert struct {
	Serial   string    // pki.SerialText: lower-case hexadecimal
	Host     string    // the logical host it names
	NotAfter time.Time // its expiry, UTC
	Revoked  time.Time // when it was revoked; zero while it is not
}

// ErrNoCert: a revocation named a host with no certificate on record.
var ErrNoCert = errors.New("csstore: no certificate on record")

// Certs is the vault CA's register of the certificates it issued and
// revoked, kept beside the configuration server's records. Unlike Store,
// its methods may be called concurrently (the enrollment endpoint serves
// requests on their own goroutines) and with Store's.
type Certs interface {
	// Issued records a certificate issued. Recording a serial twice
	// replaces its host and expiry and keeps its revocation.
	Issued(ctx context.Context, c Cert) error
	// Revoke revokes, at time at, every certificate of host not yet
	// revoked (serial empty), or the one serial (host empty; a serial not
	// on record is recorded revoked, so that one issued before the
	// register existed can be refused too). It returns the certificates it
	// revoked now, sorted by serial; revoking again what is revoked
	// returns none and is not an error. A host with no certificate on
	// record is ErrNoCert.
	Revoke(ctx context.Context, host, serial string, at time.Time) ([]Cert, error)
	// Revoked lists the revoked certificates not yet expired at time now
	// (an expired certificate is refused anyway, so the list stays as
	// short as the live ones), sorted by serial.
	Revoked(ctx context.Context, now time.Time) ([]Cert, error)
}
