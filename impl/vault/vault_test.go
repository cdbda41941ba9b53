package vault

import (
	"errors"
	"testing"
)

func TestDeriveAndVerify(t *testing.T) {
	k, err := Derive("vault-1", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Derive("vault-1", "correct horse battery")
	if k != again {
		t.Fatal("derivation is not repeatable")
	}
	wrong, _ := Derive("vault-1", "incorrect horse battery")
	otherVault, _ := Derive("vault-2", "correct horse battery")
	if k.Data == wrong.Data || k.Data == otherVault.Data || k.Auth == k.Data {
		t.Fatal("keys collide across passphrases, vaults or purposes")
	}
	if !k.Verify("db01", k.Proof("db01")) {
		t.Fatal("own proof refused")
	}
	if k.Verify("db01", wrong.Proof("db01")) {
		t.Fatal("a wrong passphrase's proof was accepted")
	}
	if k.Verify("web01", k.Proof("db01")) {
		t.Fatal("a proof for another machine was accepted")
	}
	if _, err := Derive("vault-1", "short"); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("short passphrase: %v", err)
	}
}

// TestMAC: a MAC verifies under the same keys, purpose and parts only;
// moving bytes between parts changes it.
func TestMAC(t *testing.T) {
	k, _ := Derive("vault-1", "correct horse battery")
	wrong, _ := Derive("vault-1", "incorrect horse battery")
	mac := k.MAC("enroll answer", []byte("ab"), []byte("c"))
	for _, c := range []struct {
		name    string
		keys    Keys
		purpose string
		parts   [][]byte
		want    bool
	}{
		{"same", k, "enroll answer", [][]byte{[]byte("ab"), []byte("c")}, true},
		{"wrong passphrase", wrong, "enroll answer", [][]byte{[]byte("ab"), []byte("c")}, false},
		{"other purpose", k, "enroll request", [][]byte{[]byte("ab"), []byte("c")}, false},
		{"shifted parts", k, "enroll answer", [][]byte{[]byte("a"), []byte("bc")}, false},
		{"one part more", k, "enroll answer", [][]byte{[]byte("ab"), []byte("c"), nil}, false},
	} {
		if got := c.keys.VerifyMAC(mac, c.purpose, c.parts...); got != c.want {
			t.Errorf("%s: VerifyMAC = %v, want %v", c.name, got, c.want)
		}
	}
	if k.VerifyMAC(k.Proof("db01"), "register", []byte("db01")) {
		t.Error("a registration proof verified as a MAC")
	}
}
