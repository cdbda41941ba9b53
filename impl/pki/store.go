package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/v2a-dr/v2a/impl/fsys"
)

// File names in a CA's or an identity's directory.
const (
	CAFile    = "ca.pem"     // the vault CA's certificate
	CAKeyFile = "ca-key.pem" // the vault CA's private key (configuration server only)
	CertFile  = "cert.pem"   // the host's certificate
	KeyFile   = "key.pem"    // the host's private key
)

// ErrNoIdentity is returned by LoadIdentity and LoadCA for a directory
// without the files.
var ErrNoIdentity = errors.New("pki: no identity in directory")

// Store keeps CAs and identities in directories of a file system.
type Store struct{ FS fsys.FS }

// OS is the Store on the real file system.
var OS = Store{FS: fsys.OS{}}

// SaveCA writes ca's certificate and key into dir (created if missing).
// Each file is written whole or not at all (a temporary file renamed).
func (s Store) SaveCA(dir string, ca *CA) error {
	keyPEM, err := keyPEM(ca.Key)
	if err != nil {
		return err
	}
	return s.writeAll(dir, []file{
		{CAFile, certPEM(ca.Cert), 0o644},
		{CAKeyFile, keyPEM, 0o600},
	})
}

// LoadCA reads the CA that SaveCA wrote into dir.
func (s Store) LoadCA(dir string) (*CA, error) {
	cert, err := s.readCert(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	key, err := s.readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		// Not ErrNoIdentity: a CA certificate without its key must not be
		// taken for an empty directory and replaced.
		return nil, fmt.Errorf("pki: %s holds a CA certificate but not its key: %v", dir, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", filepath.Join(dir, CAFile))
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: %s and %s", ErrKeyMismatch, CAFile, CAKeyFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// SaveIdentity writes id into dir as cert.pem, key.pem and ca.pem.
func (s Store) SaveIdentity(dir string, id Identity) error {
	keyPEM, err := keyPEM(id.Key)
	if err != nil {
		return err
	}
	return s.writeAll(dir, []file{
		{CAFile, certPEM(id.CA), 0o644},
		{CertFile, certPEM(id.Cert), 0o644},
		{KeyFile, keyPEM, 0o600},
	})
}

// SaveRenewal replaces the certificate and key in dir with id's (a renewed
// identity: same host, same CA, a new key). Both files are written to
// temporary names and fsynced first, then renamed into place key first,
// then certificate, then the directory is fsynced. A crash before the
// first rename leaves the old pair; one between the two renames leaves
// the new key beside the old certificate and the new certificate still in
// its temporary file, which LoadIdentity finishes renaming (RecoverRenewal).
// Either way the directory holds a matching pair: never a mix.
func (s Store) SaveRenewal(dir string, id Identity) error {
	keyPEM, err := keyPEM(id.Key)
	if err != nil {
		return err
	}
	return s.writeAll(dir, []file{
		{KeyFile, keyPEM, 0o600},
		{CertFile, certPEM(id.Cert), 0o644},
	})
}

// tmpName is the temporary file writeAll writes name to.
func tmpName(dir, name string) string { return filepath.Join(dir, "."+name+".tmp") }

// recoverRenewal finishes a SaveRenewal that a crash cut between its two
// renames: when key.pem does not match cert.pem but matches the fully
// written temporary certificate, that certificate is renamed into place.
// It reports whether it did.
func (s Store) recoverRenewal(dir string, cert *x509.Certificate, key crypto.Signer) (*x509.Certificate, bool, error) {
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(key.Public()) {
		return cert, false, nil
	}
	tmp := tmpName(dir, CertFile)
	next, err := s.readCert(tmp)
	if err != nil {
		return cert, false, nil // no renewal to finish: Check will say the pair does not match
	}
	if pub, ok := next.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return cert, false, nil
	}
	if err := s.FS.Rename(tmp, filepath.Join(dir, CertFile)); err != nil {
		return nil, false, fmt.Errorf("pki: finishing an interrupted renewal in %s: %w", dir, err)
	}
	if err := fsys.SyncDir(s.FS, dir); err != nil {
		return nil, false, fmt.Errorf("pki: sync %s: %w", dir, err)
	}
	return next, true, nil
}

// LoadIdentity reads the identity in dir and checks it (Identity.Check at
// time at): a key that is not the certificate's, a certificate the CA did
// not sign, or one outside its validity is an error naming the directory.
// The host is the certificate's common name. A renewal a crash
// interrupted (SaveRenewal) is finished first.
func (s Store) LoadIdentity(dir string, at time.Time) (Identity, error) {
	cert, err := s.readCert(filepath.Join(dir, CertFile))
	if err != nil {
		return Identity{}, err
	}
	key, err := s.readKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return Identity{}, err
	}
	ca, err := s.readCert(filepath.Join(dir, CAFile))
	if err != nil {
		return Identity{}, err
	}
	if cert, _, err = s.recoverRenewal(dir, cert, key); err != nil {
		return Identity{}, err
	}
	id := Identity{Host: cert.Subject.CommonName, Cert: cert, Key: key, CA: ca}
	if err := id.Check(at); err != nil {
		return Identity{}, fmt.Errorf("pki: identity in %s: %w", dir, err)
	}
	return id, nil
}

// InitServer prepares the configuration server's TLS directory on the real
// file system: it creates the vault CA on first use (and loads it after),
// and issues the server's own identity for host unless a valid one for
// host is there already. dir then holds ca.pem, ca-key.pem, cert.pem and
// key.pem. A CA made for another vault is refused (ErrVault).
func InitServer(dir, vaultID, host string, now time.Time) (*CA, Identity, error) {
	return OS.InitServer(dir, vaultID, host, now)
}

// InitServer is the package's InitServer on s.
func (s Store) InitServer(dir, vaultID, host string, now time.Time) (*CA, Identity, error) {
	if err := ValidHost(host); err != nil {
		return nil, Identity{}, err
	}
	ca, err := s.LoadCA(dir)
	switch {
	case errors.Is(err, ErrNoIdentity):
		if ca, err = NewCA(vaultID, now); err != nil {
			return nil, Identity{}, err
		}
		if err := s.SaveCA(dir, ca); err != nil {
			return nil, Identity{}, err
		}
	case err != nil:
		return nil, Identity{}, err
	case ca.VaultID() != vaultID:
		return nil, Identity{}, fmt.Errorf("%w: %s holds the CA of vault %q, not %q", ErrVault, dir, ca.VaultID(), vaultID)
	}
	if id, err := s.LoadIdentity(dir, now); err == nil && id.Host == host && SameCA(id.CA, ca.Cert) {
		return ca, id, nil
	}
	id, err := ca.NewIdentity(host, now)
	if err != nil {
		return nil, Identity{}, err
	}
	if err := s.SaveIdentity(dir, id); err != nil {
		return nil, Identity{}, err
	}
	return ca, id, nil
}

type file struct {
	name string
	data []byte
	perm fs.FileMode
}

// writeAll writes each file to a temporary name, syncs it, and only then
// renames them all into place, so that a failure part-way leaves the old
// files (or none) rather than a mix.
func (s Store) writeAll(dir string, files []file) error {
	if err := s.FS.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	var tmps []string
	defer func() {
		for _, t := range tmps {
			s.FS.Remove(t)
		}
	}()
	for _, f := range files {
		tmp := tmpName(dir, f.name)
		w, err := s.FS.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, f.perm)
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		tmps = append(tmps, tmp)
		_, err = w.Write(f.data)
		if err == nil {
			err = w.Sync()
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("pki: write %s: %w", tmp, err)
		}
	}
	for i, f := range files {
		if err := s.FS.Rename(tmps[i], filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	tmps = nil
	if err := fsys.SyncDir(s.FS, dir); err != nil {
		return fmt.Errorf("pki: sync %s: %w", dir, err)
	}
	return nil
}

func (s Store) readPEM(path, wantType string) ([]byte, error) {
	b, err := s.FS.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing", ErrNoIdentity, path)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != wantType {
		return nil, fmt.Errorf("pki: %s: want a PEM %q block", path, wantType)
	}
	return blk.Bytes, nil
}

func (s Store) readCert(path string) (*x509.Certificate, error) {
	der, err := s.readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, nil
}

func (s Store) readKey(path string) (crypto.Signer, error) {
	der, err := s.readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	sk, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: key of type %T cannot sign", path, k)
	}
	return sk, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
