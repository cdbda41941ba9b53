package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/impl/pki"
)

// syncBuf is an output that a command running on another goroutine writes
// while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEnrollCLI: `v2a ca init` makes the vault CA, `v2a ca serve` serves
// enrollment, `v2a enroll` gets a certificate with the passphrase from the
// environment or a file; a wrong or missing passphrase is a clear error
// (on the server's log too) that writes nothing.
func TestEnrollCLI(t *testing.T) {
	base := t.TempDir()
	csDir := filepath.Join(base, "cs01")
	t.Setenv(daemon.EnvPassphrase, "correct horse battery")
	var out, errOut bytes.Buffer
	if code := execute(context.Background(), []string{"ca", "init", "--dir", csDir, "--vault", "vault-1"}, &out, &errOut); code != exitOK {
		t.Fatalf("ca init: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "v2a vault CA vault-1 (sha256 ") {
		t.Errorf("ca init said:\n%s", out.String())
	}
	if code := execute(context.Background(), []string{"ca", "init", "--dir", csDir, "--vault", "vault-2"}, &out, &errOut); code != exitSetup ||
		!strings.Contains(errOut.String(), `holds the CA of vault "vault-1", not "vault-2"`) {
		t.Errorf("ca init for another vault: exit %d: %s", code, errOut.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	var srvOut, srvLog syncBuf
	served := make(chan int, 1)
	go func() {
		served <- execute(ctx, []string{"ca", "serve", "--dir", csDir, "--listen", "127.0.0.1:0"}, &srvOut, &srvLog)
	}()
	url := ""
	re := regexp.MustCompile(`enrollment: (https://\S+)`)
	for deadline := time.Now().Add(20 * time.Second); url == ""; {
		if m := re.FindStringSubmatch(srvOut.String()); m != nil {
			url = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ca serve printed no URL:\n%s%s", srvOut.String(), srvLog.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	passFile := filepath.Join(base, "pass")
	os.WriteFile(passFile, []byte("correct horse battery\n"), 0o600)
	wrongFile := filepath.Join(base, "wrong")
	os.WriteFile(wrongFile, []byte("not the passphrase\n"), 0o600)
	for _, c := range []struct {
		name    string
		env     string
		args    []string
		code    int
		out     string // in stdout (success) or stderr (failure)
		srvLog  string // in the server's log
		written bool
	}{
		{"passphrase from the environment", "correct horse battery", []string{"--host", "ps01"}, exitOK, "enrolled ps01", "enroll: certificate issued", true},
		{"passphrase from a file", "", []string{"--host", "db01", "--passphrase-file", passFile}, exitOK, "enrolled db01", "host=db01", true},
		{"wrong passphrase", "", []string{"--host", "ps02", "--passphrase-file", wrongFile}, exitSetup,
			"wrong vault passphrase (host ps02, vault vault-1", `msg="enroll: refused" host=ps02`, false},
		{"no passphrase", "", []string{"--host", "ps03"}, exitSetup, "no vault passphrase: set $V2A_PASSPHRASE", "", false},
		{"bad host", "correct horse battery", []string{"--host", "ps 04"}, exitSetup, "bad host name", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(daemon.EnvPassphrase, c.env)
			dir := filepath.Join(base, "tls-"+strings.ReplaceAll(c.name, " ", "-"))
			var out, errOut bytes.Buffer
			args := append([]string{"enroll", "--cs", url, "--dir", dir}, c.args...)
			code := execute(context.Background(), args, &out, &errOut)
			text := out.String()
			if c.code != exitOK {
				text = errOut.String()
			}
			if code != c.code || !strings.Contains(text, c.out) {
				t.Errorf("exit %d, want %d; output lacks %q:\n%s%s", code, c.code, c.out, out.String(), errOut.String())
			}
			if c.srvLog != "" && !strings.Contains(srvLog.String(), c.srvLog) {
				t.Errorf("server log lacks %q:\n%s", c.srvLog, srvLog.String())
			}
			_, err := pki.OS.LoadIdentity(dir, time.Now())
			if c.written && err != nil {
				t.Errorf("enrolled identity: %v", err)
			}
			if _, serr := os.Stat(dir); !c.written && serr == nil {
				t.Errorf("a failed enrollment created %s", dir)
			}
		})
	}
	cancel()
	select {
	case code := <-served:
		if code != exitOK {
			t.Errorf("ca serve stopped with exit %d: %s", code, srvLog.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ca serve did not stop")
	}
}
