package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/vault"
)

const (
	vaultID    = "vault-1"
	passphrase = "correct horse battery"
)

// logBuf is a slog destination the server's goroutines share.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// world is a configuration server's enrollment endpoint.
type world struct {
	ca   *pki.CA
	cs   pki.Identity
	h    *Handler
	logs *logBuf
}

func newWorld(t *testing.T) *world {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA(vaultID, now)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ca.NewIdentity("cs01", now)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := vault.Derive(vaultID, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	return &world{ca: ca, cs: cs, logs: logs,
		h: &Handler{CA: ca, Keys: keys, Now: time.Now, Log: slog.New(slog.NewTextHandler(logs, nil))}}
}

// serve starts an HTTPS server with handler h presenting id's certificate.
func serve(t *testing.T, h http.Handler, id pki.Identity) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = ServerTLS(id)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// rewrite wraps the real handler and lets a man in the middle change a
// successful answer.
func rewrite(t *testing.T, h http.Handler, change func(*Answer)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if r.Method != http.MethodPost || rec.Code != http.StatusOK {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		var a Answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Errorf("proxy: %v", err)
		}
		change(&a)
		json.NewEncoder(w).Encode(a)
	})
}

func TestReasonMatchesConfigsrv(t *testing.T) {
	if ReasonWrongPassphrase != configsrv.ReasonWrongPassphrase {
		t.Errorf("enroll says %q, configsrv says %q", ReasonWrongPassphrase, configsrv.ReasonWrongPassphrase)
	}
}

// TestEnroll: a host with the passphrase gets an identity it can load;
// every other case is refused with a clear error, on the client and in the
// server's log, and writes nothing.
func TestEnroll(t *testing.T) {
	foreignCA, err := pki.NewCA("vault-evil", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreignCS, _ := foreignCA.NewIdentity("cs01", time.Now())
	wrongKeys, _ := vault.Derive(vaultID, "not the passphrase")
	// An answer captured from an earlier enrollment of the same host.
	var old *Answer
	for _, c := range []struct {
		name       string
		host       string
		passphrase string
		url        func(w *world) string // default: the real endpoint
		wantErr    error
		wantMsg    string // in the client's error
		wantLog    string // in the server's log
	}{
		{name: "ok", host: "ps01", passphrase: passphrase},
		{name: "machine name with underscores", host: "DC0_C0_H0_VM0", passphrase: passphrase},
		{name: "wrong passphrase", host: "ps01", passphrase: "not the passphrase",
			wantErr: ErrWrongPassphrase, wantMsg: "wrong vault passphrase (host ps01, vault vault-1",
			wantLog: `msg="enroll: refused" host=ps01 remote=127.0.0.1`},
		{name: "passphrase too short", host: "ps01", passphrase: "short",
			wantErr: vault.ErrPassphrase, wantMsg: "passphrase too short"},
		{name: "bad host name", host: "ps 01", passphrase: passphrase,
			wantErr: pki.ErrBadHost, wantMsg: `"ps 01"`},
		{name: "plain http", host: "ps01", passphrase: passphrase,
			url:     func(w *world) string { return "http://127.0.0.1:1" },
			wantMsg: "want https://HOST:PORT"},
		{name: "nobody listening", host: "ps01", passphrase: passphrase,
			url:     func(w *world) string { return "https://127.0.0.1:1" },
			wantErr: ErrUnreachable, wantMsg: "configuration server unreachable: GET https://127.0.0.1:1/"},
		{name: "foreign CA planted", host: "ps01", passphrase: passphrase,
			url: func(w *world) string {
				return serve(t, rewrite(t, w.h, func(a *Answer) { a.CA = foreignCA.Cert.Raw }), w.cs)
			},
			wantErr: ErrTampered, wantMsg: "tampered with"},
		{name: "answer re-MACed without the passphrase", host: "ps01", passphrase: passphrase,
			url: func(w *world) string {
				return serve(t, rewrite(t, w.h, func(a *Answer) {
					a.CA = foreignCA.Cert.Raw
					a.MAC = wrongKeys.MAC(purposeAnswer, []byte("ps01"), nil, a.Cert, a.CA)
				}), w.cs)
			},
			wantErr: ErrTampered},
		{name: "certificate swapped", host: "ps01", passphrase: passphrase,
			url: func(w *world) string {
				return serve(t, rewrite(t, w.h, func(a *Answer) { a.Cert = w.cs.Cert.Raw }), w.cs)
			},
			wantErr: ErrTampered},
		{name: "old answer replayed", host: "ps01", passphrase: passphrase,
			url: func(w *world) string {
				return serve(t, rewrite(t, w.h, func(a *Answer) {
					if old == nil {
						t.Fatal("no answer captured")
					}
					*a = *old
				}), w.cs)
			},
			wantErr: ErrTampered},
		{name: "HTTPS server not from the vault CA", host: "ps01", passphrase: passphrase,
			url:     func(w *world) string { return serve(t, w.h, foreignCS) },
			wantErr: ErrBadAnswer, wantMsg: "HTTPS server's certificate (cs01) is not from the vault CA"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			var url string
			if c.url != nil {
				url = c.url(w)
			} else {
				url = serve(t, rewrite(t, w.h, func(a *Answer) {
					if c.name == "ok" {
						cp := *a
						old = &cp
					}
				}), w.cs)
			}
			dir := filepath.Join(t.TempDir(), "tls")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			id, err := Enroll(ctx, url, c.host, c.passphrase, dir)
			if c.wantErr == nil && c.wantMsg == "" {
				if err != nil {
					t.Fatalf("Enroll: %v", err)
				}
				got, err := pki.OS.LoadIdentity(dir, time.Now())
				if err != nil {
					t.Fatalf("LoadIdentity: %v", err)
				}
				if got.Host != c.host || !got.Cert.Equal(id.Cert) || !pki.SameCA(got.CA, w.ca.Cert) {
					t.Errorf("loaded %s (CA %s), want %s from the vault CA", got.Host, got.CA.Subject.CommonName, c.host)
				}
				if !strings.Contains(w.logs.String(), "enroll: certificate issued") {
					t.Errorf("server log lacks the issue:\n%s", w.logs)
				}
				return
			}
			if err == nil {
				t.Fatalf("Enroll succeeded, want an error")
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
			if c.wantErr != ErrUnreachable && errors.Is(err, ErrUnreachable) {
				t.Errorf("error %v is ErrUnreachable: the daemon would retry what a retry cannot mend", err)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("error %q lacks %q", err, c.wantMsg)
			}
			if c.wantLog != "" && !strings.Contains(w.logs.String(), c.wantLog) {
				t.Errorf("server log lacks %q:\n%s", c.wantLog, w.logs)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused enrollment wrote %s (%v)", dir, err)
			}
		})
	}
}

// TestHandlerRefuses: requests that do not follow the protocol are refused
// with a status and a reason, and logged.
func TestHandlerRefuses(t *testing.T) {
	w := newWorld(t)
	keys := w.h.Keys
	csr, _, err := pki.NewCSR("ps01")
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{7}, nonceLen)
	good := Request{Host: "ps01", CSR: csr, Nonce: nonce, MAC: keys.MAC(purposeRequest, []byte("ps01"), csr, nonce)}
	for _, c := range []struct {
		name   string
		method string
		body   string
		status int
		reason string
	}{
		{"not JSON", "POST", "{", http.StatusBadRequest, "malformed request"},
		{"unknown field", "POST", `{"host":"ps01","admin":true}`, http.StatusBadRequest, "unknown field"},
		{"bad host", "POST", mustJSON(t, Request{Host: "-x", Nonce: nonce}), http.StatusBadRequest, "bad host name"},
		{"short nonce", "POST", mustJSON(t, Request{Host: "ps01", Nonce: nonce[:3]}), http.StatusBadRequest, "nonce of 3 bytes"},
		{"host changed under the MAC", "POST", mustJSON(t, func() Request { r := good; r.Host = "cs01"; return r }()), http.StatusForbidden, ReasonWrongPassphrase},
		{"CSR not a CSR", "POST", mustJSON(t, func() Request {
			r := good
			r.CSR = []byte("junk")
			r.MAC = keys.MAC(purposeRequest, []byte("ps01"), r.CSR, nonce)
			return r
		}()), http.StatusBadRequest, "bad certificate request"},
		{"method", "PUT", "", http.StatusMethodNotAllowed, "method PUT not allowed"},
		{"good", "POST", mustJSON(t, good), http.StatusOK, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			w.h.ServeHTTP(rec, httptest.NewRequest(c.method, Path, strings.NewReader(c.body)))
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			if c.status == http.StatusOK {
				return
			}
			var ref Refusal
			if err := json.Unmarshal(rec.Body.Bytes(), &ref); err != nil || !strings.Contains(ref.Reason, c.reason) {
				t.Errorf("refusal %q (%v), want one containing %q", rec.Body, err, c.reason)
			}
			if c.method == "POST" && !strings.Contains(w.logs.String(), "enroll: refused") {
				t.Errorf("refusal not logged:\n%s", w.logs)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
