// Package vault holds what the Recovery Services vault's passphrase yields:
// the key that authenticates machines registering with the configuration
// server, and the key that encrypts replication data at rest in the cache
// container. Both are derived, never stored: knowing the passphrase is what
// makes a component part of the vault.
package vault

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// MinPassphrase is the shortest passphrase accepted.
const MinPassphrase = 8

// ErrPassphrase is returned for a passphrase that cannot be a vault's.
var ErrPassphrase = errors.New("vault: passphrase too short")

// Keys are a vault's derived keys.
type Keys struct {
	VaultID string
	Auth    [32]byte // registration proofs
	Data    [32]byte // AES-256-GCM key of replication data
}

// Derive computes a vault's keys from its passphrase (HKDF-SHA256, the
// vault ID as salt).
func Derive(vaultID, passphrase string) (Keys, error) {
	if len(passphrase) < MinPassphrase {
		return Keys{}, fmt.Errorf("%w: %d characters, want at least %d", ErrPassphrase, len(passphrase), MinPassphrase)
	}
	k := Keys{VaultID: vaultID}
	for _, x := range []struct {
		info string
		dst  *[32]byte
	}{{"v2a register", &k.Auth}, {"v2a data", &k.Data}} {
		b, err := hkdf.Key(sha256.New, []byte(passphrase), []byte(vaultID), x.info, 32)
		if err != nil {
			return Keys{}, fmt.Errorf("vault: derive: %w", err)
		}
		copy(x.dst[:], b)
	}
	return k, nil
}

// Proof is what a machine presents when it registers: an HMAC of its name
// under the registration key.
func (k Keys) Proof(machine string) []byte {
	m := hmac.New(sha256.New, k.Auth[:])
	m.Write([]byte("register:" + machine))
	return m.Sum(nil)
}

// Verify checks a registration proof in constant time.
func (k Keys) Verify(machine string, proof []byte) bool {
	return hmac.Equal(k.Proof(machine), proof)
}

// MAC authenticates a message of several parts under the registration key,
// for the exchange named by purpose (say "enroll request"). Each part is
// length-prefixed, so parts cannot be shifted into one another, and the
// domain prefix keeps a MAC from ever equalling a Proof or a MAC for
// another purpose.
func (k Keys) MAC(purpose string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, k.Auth[:])
	m.Write([]byte("v2a mac\x00"))
	writePart := func(p []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	writePart([]byte(purpose))
	for _, p := range parts {
		writePart(p)
	}
	return m.Sum(nil)
}

// VerifyMAC checks a MAC made by MAC in constant time.
func (k Keys) VerifyMAC(mac []byte, purpose string, parts ...[]byte) bool {
	return hmac.Equal(k.MAC(purpose, parts...), mac)
}
