package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/azurite"
)

// v2aBinary builds cmd/v2a into the test's directory.
func v2aBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "v2a")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startAzurite starts an Azurite for the wire world (stopped at the test's
// end) and returns it with a blob client on it.
func startAzurite(ctx context.Context, t *testing.T) (*azurite.Instance, *azblob.Store) {
	t.Helper()
	az, err := azurite.Start(ctx, azurite.Options{})
	if err != nil {
		t.Fatalf("azurite (the wire world needs one; `make tools`): %v", err)
	}
	t.Cleanup(func() { az.Stop() })
	store, err := azblob.NewFromConnectionString(az.ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	return az, store
}

// freeAddr is a free TCP port on ip (a loopback address per host).
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v (loopback addresses 127.0.0.x per host)", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a daemon process under test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startDaemon(t *testing.T, bin, name string, env []string, args ...string) *proc {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), env...)
	p := &proc{name: name, cmd: c, out: &syncBuffer{}, done: make(chan struct{})}
	c.Stdout, c.Stderr = p.out, p.out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = c.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			c.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("V2A_DAEMON_LOGS") != "" {
			t.Logf("--- %s output:\n%s", name, tail(p.out.String(), 40000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (p *proc) waitFor(t *testing.T, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.out.String(), what) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %s", p.name, what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDaemonsReplicate is the wire world in miniature: Azurite by
// connection string, the configuration server, process server and Azure
// side, and one physical server's agent with a bank workload, each its own
// OS process on its own loopback address. The agent registers, the server
// enables it (a standing request), it syncs and replicates until a
// crash-consistent recovery point is in storage; the point's image is
// exactly the guest's disk after the writes its bookmark follows (the
// history file the guest kept); the agent drains and restarts and goes on
// without a resync; then SIGTERM drains every daemon (exit 0,
// "daemon: drained"). A second configuration server on the first one's
// address fails with exit code 2, naming the address.
func TestDaemonsReplicate(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary, starts Azurite and four daemons (about 80 s)")
	}
	bin := v2aBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	az, store := startAzurite(ctx, t)

	dir := t.TempDir()
	cs, ps, azure, agentAddr := freeAddr(t, "127.0.0.2"), freeAddr(t, "127.0.0.3"), freeAddr(t, "127.0.0.4"), freeAddr(t, "127.0.0.5")
	peers := fmt.Sprintf("cs01=%s,ps01=%s,asr.azure=%s,db01=%s", cs, ps, azure, agentAddr)
	const prefix = "v2a-daemons-"
	env := []string{"V2A_PASSPHRASE=daemon-test-passphrase", "V2A_STORAGE_CONNECTION_STRING=" + az.ConnectionString()}
	csConf := filepath.Join(dir, "cs.yaml")
	if err := os.WriteFile(csConf, []byte(`listen: `+cs+`
log-format: json
data-dir: `+filepath.Join(dir, "cs")+`
enroll-listen: 127.0.0.2:0
policies:
  - name: fast
    rpo-threshold: 10m
    retention: 1h
    crash-interval: 1m
protect:
  db01: fast
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tlsDir := func(host string) string { return filepath.Join(dir, "tls", host) }
	ca := writePKI(t, filepath.Join(dir, "tls"), "cs01", "ps01", "asr.azure", "db01")
	tlsArgs := func(host string) []string { return []string{"--tls-dir", tlsDir(host)} }
	common := []string{"--peers", peers}
	procs := []*proc{
		startDaemon(t, bin, "configsrv", env, append(append([]string{"configsrv", "--config", csConf}, common...), tlsArgs("cs01")...)...),
		// --defer-for 5s: the write items after the agent's restart are
		// applied within seconds, not with the next bookmark a crash
		// interval later (the default 10m), which the wait below would
		// not see; deferral is still exercised.
		startDaemon(t, bin, "azuresvc", env, append(append([]string{"azuresvc", "--listen", azure,
			"--container-prefix", prefix, "--poll-every", "2s", "--defer-for", "5s"}, common...), tlsArgs("asr.azure")...)...),
		startDaemon(t, bin, "processsrv", env, append(append([]string{"processsrv", "--listen", ps, "--data-dir", filepath.Join(dir, "ps"),
			"--container-prefix", prefix}, common...), tlsArgs("ps01")...)...),
	}
	for _, p := range procs {
		p.waitFor(t, "daemon: started", 20*time.Second)
	}
	history := filepath.Join(dir, "db01.history.jsonl")
	agentArgs := append([]string{"agent", "--listen", agentAddr, "--machine", "db01",
		"--data-dir", filepath.Join(dir, "db01"), "--disks", filepath.Join(dir, "db01-disk0.img"), "--disk-bytes", fmt.Sprint(8 << 20),
		"--workload", "bank", "--workload-rate", "20", "--history", history, "--tls-dir", tlsDir("db01")}, common...)
	ag := startDaemon(t, bin, "agent", env, agentArgs...)
	ag.waitFor(t, "daemon: started", 20*time.Second)
	procs = append(procs, ag)

	// Started twice on one port: a clear error, exit code 2, and the
	// first one is untouched.
	var out, errOut bytes.Buffer
	t.Setenv("V2A_PASSPHRASE", "daemon-test-passphrase")
	if code := execute(ctx, []string{"configsrv", "--listen", cs, "--data-dir", t.TempDir()}, &out, &errOut); code != exitSetup ||
		!strings.Contains(errOut.String(), "configsrv (cs01:443) cannot listen on "+cs+": address already in use") {
		t.Errorf("a second configsrv on %s: exit %d, want %d with a clear error; stderr:\n%s", cs, code, exitSetup, errOut.String())
	}
	// Started twice on one database (another port): refused before it
	// reads or writes the file, and the first one is untouched.
	out.Reset()
	errOut.Reset()
	csDB := filepath.Join(dir, "cs", "cs.db")
	if code := execute(ctx, []string{"configsrv", "--listen", "127.0.0.9:0", "--data-dir", filepath.Join(dir, "cs")}, &out, &errOut); code != exitSetup ||
		!strings.Contains(errOut.String(), "database in use by another process: "+csDB) {
		t.Errorf("a second configsrv on %s: exit %d, want %d with a clear error; stderr:\n%s", csDB, code, exitSetup, errOut.String())
	}

	procs[0].waitFor(t, `"msg":"daemon: enabling replication (standing request)"`, 30*time.Second)

	// Mutual TLS: a client with no certificate, or one another CA signed,
	// is refused; one the vault's CA signed is accepted.
	for _, c := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"no client certificate", nil, false},
		{"foreign certificate", []tls.Certificate{foreignCert(t)}, false},
		{"the vault's certificate", []tls.Certificate{ca.issue(t, "portal")}, true},
	} {
		certs := c.certs
		// Present the certificate even when the server's list of
		// acceptable CAs does not name its issuer.
		conf := &tls.Config{ServerName: "cs01", RootCAs: ca.pool, MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if len(certs) == 0 {
					return &tls.Certificate{}, nil
				}
				return &certs[0], nil
			}}
		conn, err := tls.Dial("tcp", cs, conf)
		if err == nil {
			// TLS 1.3: the server's verdict on the client's certificate
			// arrives with the first read.
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				err = nil // the server waits for a hello: accepted
			}
		}
		if (err == nil) != c.ok {
			t.Errorf("TLS with %s: %v, want accepted=%v", c.name, err, c.ok)
		}
	}

	// A crash-consistent point, in the catalog and in storage.
	var cat *proto.Catalog
	var point proto.Point
	deadline := time.Now().Add(85 * time.Second)
	for point.ID == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no crash-consistent recovery point in storage within 85 s; catalog: %+v", cat)
		}
		time.Sleep(time.Second)
		c, _, err := azuresvc.LoadCatalog(ctx, store, prefix, "db01")
		if err != nil {
			continue
		}
		cat = c
		for _, p := range c.Points {
			if p.Kind == proto.Crash {
				point = p
				break
			}
		}
	}
	t.Logf("recovery point %s at seq %d (gen %d)", point.ID, point.Seq, point.Gen)

	// The agent drains and starts again: its change log and state carry
	// it on where it stopped, with no resync (the generation stays), and
	// new items are applied.
	if err := ag.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ag.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not exit within 20 s of SIGTERM")
	}
	if ag.err != nil || !strings.Contains(ag.out.String(), "daemon: drained") {
		t.Fatalf("agent: %v after SIGTERM, want exit 0 with a drain line", ag.err)
	}
	before := cat.Applied
	ag = startDaemon(t, bin, "agent (restarted)", env, agentArgs...)
	procs[len(procs)-1] = ag
	for {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("no item applied after the agent's restart (applied %d before); catalog: %+v", before, cat)
		}
		time.Sleep(500 * time.Millisecond)
		c, _, err := azuresvc.LoadCatalog(ctx, store, prefix, "db01")
		if err != nil {
			continue
		}
		if c.Gen != point.Gen {
			t.Fatalf("the restarted agent resynced: generation %d, was %d", c.Gen, point.Gen)
		}
		if c.Applied > before+1 {
			break
		}
	}
	if strings.Contains(ag.out.String(), "agent: sync begins") {
		t.Errorf("the restarted agent began a sync")
	}

	// SIGTERM drains every daemon: the agent first, so its history is
	// complete before it is judged.
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not exit within 20 s of SIGTERM", p.name)
		}
		if p.err != nil {
			t.Errorf("%s: %v after SIGTERM, want exit 0", p.name, p.err)
		}
		if !strings.Contains(p.out.String(), "daemon: drained") {
			t.Errorf("%s logged no drain line", p.name)
		}
	}

	// The point is the disk after exactly the writes logged before its
	// bookmark (the wire world's judge, judgePoint), and not after one
	// write fewer (its negative control).
	img, _, err := store.Get(ctx, prefix+proto.ContainerReplica, cat.Disks[0].Blob, blob.ReadOptions{Snapshot: point.Snapshots[0]})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := readHistory(history)
	if err != nil {
		t.Fatal(err)
	}
	writes, err := judgePoint(hist, img, point.Seq)
	if err != nil {
		t.Fatalf("recovery point %s: %v", point.ID, err)
	}
	if writes == 0 {
		t.Fatalf("the point follows no write of the workload: nothing to judge")
	}
	t.Logf("point %s = the disk after %d writes", point.ID, writes)
	if err := judgeDropped(hist, img, point.Seq); err == nil {
		t.Errorf("negative control: the point also matches the history with its last write before the point dropped")
	}
	// And not the whole history (the bank wrote on after the point).
	if _, err := judgePoint(hist, img, ^uint64(0)); err == nil {
		t.Errorf("negative control: the point also matches the whole history (%d writes, %d before the point)", len(hist), writes)
	}
}

// testCA is a vault's CA for the test, able to issue host certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, Organization: []string{"vault-1"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issueDER makes a certificate for host (server and client use).
func (ca *testCA) issueDER(t *testing.T, host string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func (ca *testCA) issue(t *testing.T, host string) tls.Certificate {
	der, key := ca.issueDER(t, host)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func foreignCert(t *testing.T) tls.Certificate {
	return newTestCA(t, "another vault").issue(t, "portal")
}

// writePKI writes a --tls-dir per host under dir (dir/HOST: cert.pem,
// key.pem, ca.pem), all signed by one CA, which it returns.
func writePKI(t *testing.T, dir string, hosts ...string) *testCA {
	t.Helper()
	ca := newTestCA(t, "vault-1 CA")
	for _, h := range hosts {
		d := filepath.Join(dir, h)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		der, key := ca.issueDER(t, h)
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{
			daemon.CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			daemon.KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
			daemon.CAFile:   ca.pem,
		}
		if h == "cs01" {
			// The configuration server is the vault's CA.
			cakb, err := x509.MarshalPKCS8PrivateKey(ca.key)
			if err != nil {
				t.Fatal(err)
			}
			files[pki.CAKeyFile] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: cakb})
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(d, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ca
}

// TestDaemonBadConfig: a config file with an unknown key, a secret in a
// config file, a missing passphrase, a bad log format, an invalid policy:
// each is a clear error and exit code 2, before anything listens.
func TestDaemonBadConfig(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	listen := freeAddr(t, "127.0.0.1")
	for _, c := range []struct {
		name, pass string
		args       []string
		want       string
	}{
		{"unknown key", "daemon-test-passphrase", []string{"configsrv", "--config", file("u.yaml", "listen: "+listen+"\nlisten-adress: x\n")},
			`unknown key "listen-adress"`},
		{"another daemon's key", "daemon-test-passphrase", []string{"configsrv", "--config", file("w.yaml", "workload: bank\n")},
			`unknown key "workload"`},
		{"passphrase in the file", "daemon-test-passphrase", []string{"agent", "--config", file("p.yaml", "passphrase: hunter2hunter2\n")},
			`key "passphrase": secrets are never config values`},
		{"missing passphrase", "", []string{"processsrv", "--listen", listen},
			"no vault passphrase: set $V2A_PASSPHRASE or give a file with --passphrase-file"},
		{"empty passphrase file", "", []string{"configsrv", "--listen", listen, "--passphrase-file", file("empty", "\n")},
			"vault passphrase: " + filepath.Join(dir, "empty") + " is empty"},
		{"missing connection string", "daemon-test-passphrase", []string{"azuresvc", "--listen", listen},
			"no storage connection string: set $V2A_STORAGE_CONNECTION_STRING"},
		{"log format", "daemon-test-passphrase", []string{"configsrv", "--listen", listen, "--log-format", "xml"},
			`log-format "xml": want text or json`},
		{"invalid policy", "daemon-test-passphrase", []string{"configsrv", "--config", file("pol.yaml", "listen: "+listen+"\npolicies:\n  - {name: x, rpo-threshold: 1h, retention: 1h, crash-interval: 4s}\n")},
			"crash-consistent frequency 4s is under the minimum 5s"},
		{"protect with no policy", "daemon-test-passphrase", []string{"configsrv", "--listen", listen, "--protect", "db01=nosuch"},
			`protect db01=nosuch: no policy "nosuch"`},
		{"bad duration", "daemon-test-passphrase", []string{"azuresvc", "--config", file("d.yaml", "poll-every: 5\n")},
			`want a string such as "90s"`},
		{"tls-dir without files", "daemon-test-passphrase", []string{"processsrv", "--listen", listen, "--tls-dir", dir},
			"tls-dir " + dir},
		{"agent without a machine", "daemon-test-passphrase", []string{"agent", "--listen", listen},
			"agent: machine is empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("V2A_PASSPHRASE", c.pass)
			t.Setenv("V2A_STORAGE_CONNECTION_STRING", "")
			args := c.args
			if args[0] == "agent" || args[0] == "processsrv" {
				args = append(args, "--data-dir", filepath.Join(dir, "data"))
			}
			var out, errOut bytes.Buffer
			code := execute(context.Background(), args, &out, &errOut)
			if code != exitSetup || !strings.Contains(errOut.String(), c.want) {
				t.Errorf("%v: exit %d, want %d with %q; stderr:\n%s", c.args, code, exitSetup, c.want, errOut.String())
			}
			if ln, err := net.Listen("tcp", listen); err != nil {
				t.Errorf("%s still taken after a failed start: %v", listen, err)
			} else {
				ln.Close()
			}
		})
	}
}

// TestDaemonConfigOverride: a flag overrides the config file's key of the
// same name; the file's other keys stay.
func TestDaemonConfigOverride(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("log-level: debug\nlog-format: xml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("V2A_PASSPHRASE", "")
	var out, errOut bytes.Buffer
	// The file's log-format is bad; the flag's is good: the error that
	// remains is the missing passphrase.
	code := execute(context.Background(), []string{"configsrv", "--config", p, "--log-format", "json"}, &out, &errOut)
	if code != exitSetup || !strings.Contains(errOut.String(), "no vault passphrase") {
		t.Errorf("exit %d; stderr:\n%s", code, errOut.String())
	}
	// Without the flag, the file's bad log-format is what fails.
	errOut.Reset()
	code = execute(context.Background(), []string{"configsrv", "--config", p}, &out, &errOut)
	if code != exitSetup || !strings.Contains(errOut.String(), `log-format "xml"`) {
		t.Errorf("exit %d; stderr:\n%s", code, errOut.String())
	}
}
