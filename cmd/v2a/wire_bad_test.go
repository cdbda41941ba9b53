package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/sim/azurite"
)

// runDaemon runs a daemon in process until ctx ends, its output in a
// buffer; done receives its exit code.
func runDaemon(ctx context.Context, args ...string) (out *syncBuffer, done chan int) {
	out, done = &syncBuffer{}, make(chan int, 1)
	go func() { done <- execute(ctx, args, out, out) }()
	return out, done
}

// TestWireBadInput: each bad input of the wire world is a clear error and
// exit code 2, before the daemon serves: a wrong passphrase at enrollment
// (the configuration server logs the refusal), a certificate of another
// vault's CA, an expired certificate, a tls-dir with no certificate and no
// --enroll, an unreachable vCenter URL, a database of a newer schema
// (left untouched).
func TestWireBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	right, wrong := file("pass", "the right passphrase\n"), file("wrong", "not the passphrase\n")
	t.Setenv("V2A_PASSPHRASE", "")

	// A configuration server with its enrollment endpoint.
	enrollAddr, csAddr := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	csOut, csDone := runDaemon(ctx, "configsrv", "--listen", csAddr, "--passphrase-file", right,
		"--data-dir", filepath.Join(dir, "cs"), "--tls-dir", filepath.Join(dir, "cs", "tls"), "--enroll-listen", enrollAddr)
	t.Cleanup(func() {
		cancel()
		if code := <-csDone; code != exitOK {
			t.Errorf("configsrv: exit %d after cancel:\n%s", code, csOut)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(csOut.String(), "daemon: started") {
		if time.Now().After(deadline) {
			t.Fatalf("configsrv did not start:\n%s", csOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ca, err := pki.OS.LoadCA(filepath.Join(dir, "cs", "tls"))
	if err != nil {
		t.Fatalf("configsrv made no vault CA in its tls-dir: %v", err)
	}

	// Identities for the certificate cases: one of another vault's CA,
	// one of this vault's CA that has expired.
	other, err := pki.NewCA("vault-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.NewIdentity("ps01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign.CA = ca.Cert // ca.pem is the vault's, the certificate is not its
	expired, err := ca.NewIdentityFor("ps01", time.Now().Add(-48*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]pki.Identity{"foreign": foreign, "expired": expired} {
		if err := pki.OS.SaveIdentity(filepath.Join(dir, name), id); err != nil {
			t.Fatal(err)
		}
	}
	newer := filepath.Join(dir, "newer.db")
	s, err := sqlite.Open(newer)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version=99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	newerBefore, err := os.ReadFile(newer)
	if err != nil {
		t.Fatal(err)
	}

	agent := func(pass string, extra ...string) []string {
		return append([]string{"agent", "--listen", freeAddr(t, "127.0.0.1"), "--machine", "db01", "--passphrase-file", pass,
			"--data-dir", filepath.Join(dir, "db01"), "--disks", filepath.Join(dir, "db01.img"), "--disk-bytes", "1048576"}, extra...)
	}
	ps := func(tlsDir string) []string {
		return []string{"processsrv", "--listen", freeAddr(t, "127.0.0.1"), "--passphrase-file", right,
			"--data-dir", filepath.Join(dir, "ps"), "--tls-dir", tlsDir}
	}
	for _, c := range []struct {
		name   string
		args   []string
		env    []string
		want   string
		csLogs string // what the configuration server logged
	}{
		{"wrong passphrase", agent(wrong, "--enroll", "https://"+enrollAddr, "--tls-dir", filepath.Join(dir, "db01-tls")), nil,
			"agent: enroll at https://" + enrollAddr + " as db01: enroll: refused by the configuration server: wrong vault passphrase", `"enroll: refused" daemon=configsrv host=db01`},
		{"foreign certificate", ps(filepath.Join(dir, "foreign")), nil, "processsrv: tls-dir " + filepath.Join(dir, "foreign") + ": pki: identity in", ""},
		{"expired certificate", ps(filepath.Join(dir, "expired")), nil, "certificate has expired", ""},
		{"no certificate, no enroll", ps(filepath.Join(dir, "empty")), nil, "give --enroll URL to get a certificate", ""},
		{"unreachable vCenter", []string{"configsrv", "--listen", freeAddr(t, "127.0.0.1"), "--passphrase-file", right, "--data-dir", filepath.Join(dir, "cs2"),
			"--vcenter-url", "https://" + freeAddr(t, "127.0.0.1") + "/sdk", "--vcenter-user", "v2a"},
			[]string{"V2A_VCENTER_PASSWORD=x", "V2A_INSTALL_PASSWORD=x"}, "configsrv: vcenter-url: vsphere: dial", ""},
		{"vCenter password missing", []string{"configsrv", "--listen", freeAddr(t, "127.0.0.1"), "--passphrase-file", right, "--data-dir", filepath.Join(dir, "cs2"),
			"--vcenter-url", "https://127.0.0.1:1/sdk", "--vcenter-user", "v2a"},
			[]string{"V2A_VCENTER_PASSWORD=", "V2A_INSTALL_PASSWORD=x"}, "configsrv: no vCenter password: set $V2A_VCENTER_PASSWORD or give a file with --vcenter-password-file", ""},
		{"newer database", []string{"configsrv", "--listen", freeAddr(t, "127.0.0.1"), "--passphrase-file", right, "--db", newer}, nil,
			"has schema version 99", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, kv := range c.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			start := time.Now()
			out := &syncBuffer{}
			code := execute(context.Background(), c.args, out, out)
			if code != exitSetup || !strings.Contains(out.String(), c.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, exitSetup, c.want, out)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %s to fail", d)
			}
			if c.csLogs != "" && !strings.Contains(csOut.String(), c.csLogs) {
				t.Errorf("the configuration server did not log %q:\n%s", c.csLogs, csOut)
			}
		})
	}
	// An agent of another vault (its CA and certificate consistent, but
	// not this vault's) starts, and is refused at every connection with
	// the reason in both logs.
	t.Run("another vault's agent", func(t *testing.T) {
		id, err := other.NewIdentity("db02", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.OS.SaveIdentity(filepath.Join(dir, "db02-tls"), id); err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(context.Background())
		out, done := runDaemon(actx, "agent", "--listen", freeAddr(t, "127.0.0.1"), "--machine", "db02", "--passphrase-file", right,
			"--data-dir", filepath.Join(dir, "db02"), "--disks", filepath.Join(dir, "db02.img"), "--disk-bytes", "1048576",
			"--tls-dir", filepath.Join(dir, "db02-tls"), "--peers", "cs01="+csAddr)
		defer func() {
			acancel()
			if code := <-done; code != exitOK {
				t.Errorf("agent db02: exit %d after cancel:\n%s", code, out)
			}
		}()
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(out.String(), "cannot connect: TLS handshake failed") ||
			!strings.Contains(csOut.String(), "refusing inbound connection: TLS handshake failed") {
			if time.Now().After(deadline) {
				t.Fatalf("no TLS refusal in both logs within 15 s; agent:\n%s\nconfigsrv:\n%s", out, csOut)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for who, log := range map[string]string{"agent": out.String(), "configsrv": csOut.String()} {
			for _, line := range strings.Split(log, "\n") {
				if strings.Contains(line, "TLS handshake failed") {
					t.Logf("%s: %s", who, line)
					break
				}
			}
		}
		if !strings.Contains(out.String(), "certificate signed by unknown authority") {
			t.Errorf("the agent's log does not say why it refused the server:\n%s", out)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "db01-tls", "cert.pem")); !os.IsNotExist(err) {
		t.Errorf("a refused enrollment wrote a certificate (%v)", err)
	}
	if after, err := os.ReadFile(newer); err != nil || string(after) != string(newerBefore) {
		t.Errorf("the newer database was changed (%v)", err)
	}
}

// TestWireWrongStorageKey: a process server or Azure side given a storage
// connection string with a wrong key fails at start with exit code 2 and
// an error naming the account, instead of retrying forever.
func TestWireWrongStorageKey(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts Azurite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	az, err := azurite.Start(ctx, azurite.Options{})
	if err != nil {
		t.Fatalf("azurite: %v", err)
	}
	t.Cleanup(func() { az.Stop() })
	conn := az.ConnectionString()
	re := regexp.MustCompile(`AccountKey=[^;]*`)
	if !re.MatchString(conn) {
		t.Fatalf("Azurite's connection string has no AccountKey: nothing to make wrong")
	}
	bad := re.ReplaceAllString(conn, "AccountKey="+base64.StdEncoding.EncodeToString([]byte("not the account's key, 32 bytes!")))
	dir := t.TempDir()
	t.Setenv("V2A_PASSPHRASE", "wire-world-passphrase")
	for _, c := range []struct {
		conn string
		code int
	}{{bad, exitSetup}, {conn, exitOK}} {
		for _, d := range []string{"processsrv", "azuresvc"} {
			t.Setenv("V2A_STORAGE_CONNECTION_STRING", c.conn)
			args := []string{d, "--listen", freeAddr(t, "127.0.0.1")}
			if d == "processsrv" {
				args = append(args, "--data-dir", filepath.Join(dir, "ps"))
			}
			start := time.Now()
			rctx, rcancel := context.WithCancel(ctx)
			out, done := runDaemon(rctx, args...)
			var code int
			if c.code == exitOK {
				// The right key: the daemon serves until stopped.
				deadline := time.Now().Add(20 * time.Second)
				for !strings.Contains(out.String(), "daemon: started") && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				rcancel()
				code = <-done
				if !strings.Contains(out.String(), "daemon: started") {
					t.Errorf("%s with the right key did not start:\n%s", d, out)
				}
			} else {
				code = <-done
				rcancel()
				t.Logf("%s with a wrong key: %s", d, strings.TrimSpace(out.String()))
				if !strings.Contains(out.String(), `storage account "devstoreaccount1" refused the first request: HTTP 403 AuthorizationFailure (check the connection string's AccountKey)`) {
					t.Errorf("%s with a wrong key: the error does not name the account:\n%s", d, out)
				}
				if strings.Contains(out.String(), "not the account") || strings.Contains(out.String(), "AccountKey=") {
					t.Errorf("%s: the error shows the key:\n%s", d, out)
				}
				if took := time.Since(start); took > 15*time.Second {
					t.Errorf("%s took %s to refuse a wrong key", d, took)
				}
			}
			if code != c.code {
				t.Errorf("%s: exit %d, want %d:\n%s", d, code, c.code, out)
			}
		}
	}
}
