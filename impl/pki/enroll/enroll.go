// Package enroll is how a process server, an agent or the Azure side gets
// its certificate from the configuration server: it proves the vault
// passphrase and receives a certificate for its logical host name and the
// vault CA, over HTTPS.
//
// The enrolling host cannot know the CA before it has it, so the HTTPS
// connection authenticates nothing by itself. The passphrase does, in both
// directions, through keys derived from it (vault.Keys.MAC):
//
//  1. GET Path answers the vault ID (the salt of the key derivation).
//  2. POST Path sends a Request: the host, a certificate request (CSR) for
//     a fresh key, a random nonce, and MAC("enroll request", host, CSR,
//     nonce). The server refuses a bad MAC (ReasonWrongPassphrase) and
//     otherwise issues a certificate to the CSR's key for the host.
//  3. The Answer carries the certificate, the CA and MAC("enroll answer",
//     host, nonce, certificate, CA). The client refuses an answer whose MAC
//     does not verify (ErrTampered), whose certificate is not for its key
//     and host, or whose CA did not sign the HTTPS server's certificate.
//
// So a man in the middle without the passphrase can neither get a
// certificate (no valid request MAC; a replayed request yields a
// certificate for a key it does not hold) nor plant a CA (no valid answer
// MAC; an old answer does not carry the client's fresh nonce). What it can
// do is what any observer of a password-keyed MAC can: guess passphrases
// offline, which is why vault.MinPassphrase exists.
package enroll

import (
	"errors"
	"fmt"
)

// Path is the enrollment endpoint on the configuration server.
const Path = "/v2a/enroll"

// ReasonWrongPassphrase is the refusal of a request whose proof does not
// verify: the same words configsrv.ReasonWrongPassphrase gives an agent's
// registration (a test keeps them equal).
const ReasonWrongPassphrase = "wrong vault passphrase"

// MAC purposes (vault.Keys.MAC).
const (
	purposeRequest = "enroll request"
	purposeAnswer  = "enroll answer"
)

// nonceLen is the length of the client's nonce in bytes.
const nonceLen = 32

// maxBody bounds a request or an answer body.
const maxBody = 64 << 10

// Errors of the client. A refusal by the server is ErrRefused, or
// ErrWrongPassphrase (which wraps it) for a wrong passphrase.
var (
	ErrRefused         = errors.New("enroll: refused by the configuration server")
	ErrWrongPassphrase = fmt.Errorf("%w: %s", ErrRefused, ReasonWrongPassphrase)
	ErrTampered        = errors.New("enroll: answer not authenticated by the vault passphrase (tampered with, or not from the configuration server)")
	ErrBadAnswer       = errors.New("enroll: bad answer")
	// ErrUnreachable: no answer came (connection refused, reset, timed
	// out): the configuration server may not be up yet, and trying again
	// later is sensible, unlike after any other error.
	ErrUnreachable = errors.New("enroll: configuration server unreachable")
)

// Info is the answer to GET Path.
type Info struct {
	VaultID string `json:"vault_id"`
}

// Request is the body of POST Path.
type Request struct {
	Host  string `json:"host"`
	CSR   []byte `json:"csr"`   // DER
	Nonce []byte `json:"nonce"` // nonceLen random bytes
	MAC   []byte `json:"mac"`   // vault MAC "enroll request" over Host, CSR, Nonce
}

// Answer is the body of a successful POST Path.
type Answer struct {
	Cert []byte `json:"cert"` // DER, issued to the CSR's key for Host
	CA   []byte `json:"ca"`   // DER, the vault CA
	MAC  []byte `json:"mac"`  // vault MAC "enroll answer" over Host, Nonce, Cert, CA
}

// Refusal is the body of a refused request (status 4xx or 5xx).
type Refusal struct {
	Reason string `json:"reason"`
}
