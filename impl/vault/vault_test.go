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
