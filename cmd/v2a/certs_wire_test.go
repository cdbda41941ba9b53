package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestWireCertLifecycle: certificate renewal and revocation with real
// processes over mutual TLS. The configuration server issues certificates
// valid 12 s (--cert-validity); every daemon checks its own every second.
//
//   - Renewal: db01's agent, replicating a bank workload, renews its
//     certificate over its current mutual-TLS connection at 8 s (a third
//     left) without a restart; then, after its first certificate has
//     expired, it restarts from the renewed one in its tls-dir (no new
//     enrollment) and replicates on; a recovery point taken after the
//     renewal and the restart is exactly the guest's disk after the writes
//     before it (judgePoint).
//   - The negative control: web01's agent, the same but --cert-renew=false,
//     logs that its certificate expired, and cannot start again with it
//     (exit 2, "certificate has expired").
//   - Revocation: `v2a revoke --host db01` (proving the passphrase; a wrong
//     one is refused); the configuration server cuts db01 off and refuses
//     its reconnection, logging the revocation; the process server learns
//     the list within a check period and refuses db01 too; db01's log says
//     its certificate was revoked. The process server's own certificate
//     is not revoked: its fetch of the list is accepted (the peer not
//     revoked is accepted).
func TestWireCertLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary, starts Azurite and five daemons (about 40 s)")
	}
	bin := v2aBinary(t)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	az, store := startAzurite(ctx, t)

	dir := t.TempDir()
	const pass = "cert-lifecycle-passphrase"
	const prefix = "v2a-certs-"
	cs, enrollAddr := freeAddr(t, "127.0.0.2"), freeAddr(t, "127.0.0.2")
	ps, azure := freeAddr(t, "127.0.0.3"), freeAddr(t, "127.0.0.4")
	db01, web01 := freeAddr(t, "127.0.0.5"), freeAddr(t, "127.0.0.6")
	peers := fmt.Sprintf("cs01=%s,ps01=%s,asr.azure=%s,db01=%s,web01=%s", cs, ps, azure, db01, web01)
	enrollURL := "https://" + enrollAddr
	env := []string{"V2A_PASSPHRASE=" + pass, "V2A_STORAGE_CONNECTION_STRING=" + az.ConnectionString()}
	lifecycle := []string{"--enroll", enrollURL, "--cert-check", "1s"}

	csConf := filepath.Join(dir, "cs.yaml")
	if err := os.WriteFile(csConf, []byte(`policies:
  - name: fast
    rpo-threshold: 10m
    retention: 1h
    crash-interval: 5s
protect:
  db01: fast
`), 0o644); err != nil {
		t.Fatal(err)
	}
	csProc := startDaemon(t, bin, "configsrv", env, "configsrv", "--config", csConf, "--listen", cs, "--peers", peers,
		"--data-dir", filepath.Join(dir, "cs"), "--tls-dir", filepath.Join(dir, "cs", "tls"), "--enroll-listen", enrollAddr,
		"--cert-validity", "12s", "--cert-check", "1s")
	csProc.waitFor(t, "daemon: started", 30*time.Second)
	azProc := startDaemon(t, bin, "azuresvc", env, append([]string{"azuresvc", "--listen", azure, "--peers", peers,
		"--container-prefix", prefix, "--poll-every", "1s", "--defer-for", "1s", "--tls-dir", filepath.Join(dir, "azure", "tls")}, lifecycle...)...)
	psProc := startDaemon(t, bin, "processsrv", env, append([]string{"processsrv", "--listen", ps, "--peers", peers,
		"--data-dir", filepath.Join(dir, "ps"), "--container-prefix", prefix, "--tls-dir", filepath.Join(dir, "ps", "tls")}, lifecycle...)...)
	agentArgs := func(vm, listen string, extra ...string) []string {
		d := filepath.Join(dir, vm)
		a := []string{"agent", "--listen", listen, "--machine", vm, "--peers", peers,
			"--tls-dir", filepath.Join(d, "tls"), "--data-dir", filepath.Join(d, "data"),
			"--disks", filepath.Join(d, "disk0.img"), "--disk-bytes", fmt.Sprint(8 << 20),
			"--history", filepath.Join(d, "history.jsonl")}
		return append(append(a, lifecycle...), extra...)
	}
	dbArgs := agentArgs("db01", db01, "--workload", "bank", "--workload-rate", "20")
	webArgs := agentArgs("web01", web01, "--cert-renew=false")
	dbProc := startDaemon(t, bin, "agent db01", env, dbArgs...)
	webProc := startDaemon(t, bin, "agent web01 (no renewal)", env, webArgs...)
	for _, p := range []*proc{azProc, psProc, dbProc, webProc} {
		p.waitFor(t, "daemon: enrolled", 30*time.Second)
	}
	first, err := pki.OS.LoadIdentity(filepath.Join(dir, "db01", "tls"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Cert.NotAfter.Sub(first.Cert.NotBefore); got > 6*time.Minute {
		t.Fatalf("db01's certificate is valid %s: --cert-validity 12s not applied", got)
	}

	// Renewal while replicating.
	dbProc.waitFor(t, "daemon: certificate renewed", 30*time.Second)
	renewedAt := time.Now()
	for _, p := range []*proc{psProc, azProc} {
		p.waitFor(t, "daemon: certificate renewed", 10*time.Second)
	}
	csProc.waitFor(t, `msg="enroll: certificate renewed" daemon=configsrv host=db01`, 5*time.Second)
	renewed, err := pki.OS.LoadIdentity(filepath.Join(dir, "db01", "tls"), time.Time{})
	if err != nil {
		t.Fatalf("db01's tls-dir after the renewal: %v", err)
	}
	if renewed.Cert.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 {
		t.Fatal("db01's tls-dir still holds its first certificate after the renewal")
	}

	// The negative control: web01 did not renew; its certificate expires.
	webProc.waitFor(t, "daemon: this host's certificate has expired", 30*time.Second)
	if strings.Contains(webProc.out.String(), "daemon: certificate renewed") {
		t.Error("web01 renewed with --cert-renew=false")
	}
	stopProc(t, webProc)
	webAgain := startDaemon(t, bin, "agent web01 (restarted, expired)", env, webArgs...)
	<-webAgain.done
	if code := procExit(webAgain.err); code != exitSetup || !strings.Contains(webAgain.out.String(), "certificate has expired") {
		t.Errorf("web01 restarted with its expired certificate: exit %d, want %d with \"certificate has expired\":\n%s", code, exitSetup, webAgain.out)
	}

	// db01 restarts after its first certificate expired: it starts from
	// the renewed one (no enrollment) and replicates on.
	if wait := time.Until(first.Cert.NotAfter); wait > 0 {
		time.Sleep(wait + 500*time.Millisecond)
	}
	stopProc(t, dbProc)
	restartAt := time.Now()
	dbProc = startDaemon(t, bin, "agent db01 (restarted)", env, dbArgs...)
	dbProc.waitFor(t, "daemon: started", 20*time.Second)
	if strings.Contains(dbProc.out.String(), "daemon: enrolled") {
		t.Error("db01 enrolled again on restart: its renewed certificate was not in tls-dir")
	}
	var cat *proto.Catalog
	var point proto.Point
	waitUntil(t, "a crash-consistent point of db01 after its renewal and restart", 40*time.Second, func() bool {
		c, _, err := azuresvc.LoadCatalog(ctx, store, prefix, "db01")
		if err != nil {
			return false
		}
		for _, p := range c.Points {
			if p.Kind == proto.Crash && p.Time.After(restartAt) {
				cat, point = c, p
				return true
			}
		}
		return false
	})
	t.Logf("point %s at seq %d, %s after the renewal, %s after the restart", point.ID, point.Seq,
		point.Time.Sub(renewedAt).Round(100*time.Millisecond), point.Time.Sub(restartAt).Round(100*time.Millisecond))

	// Revocation. A wrong passphrase is refused first.
	wrong := filepath.Join(dir, "wrong-passphrase")
	os.WriteFile(wrong, []byte("not the passphrase"), 0o600)
	var out syncBuffer
	if code := execute(ctx, []string{"revoke", "--cs", enrollURL, "--host", "db01", "--passphrase-file", wrong}, &out, &out); code != exitSetup ||
		!strings.Contains(out.String(), "wrong vault passphrase") {
		t.Errorf("revoke with a wrong passphrase: exit %d:\n%s", code, out.String())
	}
	out = syncBuffer{}
	t.Setenv("V2A_PASSPHRASE", pass)
	if code := execute(ctx, []string{"revoke", "--cs", enrollURL, "--host", "db01"}, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "revoked db01 serial "+pki.SerialText(first.Cert.SerialNumber)) ||
		!strings.Contains(out.String(), "revoked db01 serial "+pki.SerialText(renewed.Cert.SerialNumber)) {
		t.Fatalf("revoke --host db01: exit %d:\n%s", code, out.String())
	}
	revokedAt := time.Now()
	// The configuration server refuses db01 from now on, naming the
	// revocation: at its enrollment endpoint (db01's next fetch of the
	// list, within a second) and on its actor's listener (db01's next
	// message or connection).
	csProc.waitFor(t, "certificate revoked by the configuration server: db01", 10*time.Second)
	// db01 is told.
	dbProc.waitFor(t, "daemon: this host's certificate was revoked by the configuration server", 10*time.Second)
	// The process server fetched the list (its own certificate accepted)
	// and cuts db01's stream off, then refuses its reconnections.
	psProc.waitFor(t, "daemon: revocation list", 10*time.Second)
	psProc.waitFor(t, "certificate revoked by the configuration server: db01 (serial ", 10*time.Second)
	t.Logf("revocation reached the process server within %s", time.Since(revokedAt).Round(100*time.Millisecond))
	for _, host := range []string{"ps01", "asr.azure"} {
		if strings.Contains(csProc.out.String(), "certificate revoked by the configuration server: "+host+" (") {
			t.Errorf("%s was refused as revoked", host)
		}
	}
	if strings.Contains(psProc.out.String(), "revocation list not fetched") {
		t.Errorf("the process server's fetch of the revocation list failed")
	}

	// The point after the renewal is exact.
	stopProc(t, dbProc)
	img, _, err := store.Get(ctx, prefix+proto.ContainerReplica, cat.Disks[0].Blob, blob.ReadOptions{Snapshot: point.Snapshots[0]})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := readHistory(filepath.Join(dir, "db01", "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	writes, err := judgePoint(hist, img, point.Seq)
	if err != nil {
		t.Fatalf("point %s after the renewal: %v", point.ID, err)
	}
	if writes == 0 {
		t.Fatal("the point follows no write: nothing to judge")
	}
	if err := judgeDroppedChange(hist, img, point.Seq); err == nil {
		t.Error("negative control: the point also matches the history with a write dropped")
	}
	for _, p := range []*proc{psProc, azProc, csProc} {
		stopProc(t, p)
	}
	t.Logf("point %s = the disk after %d writes; wall time %s", point.ID, writes, time.Since(began).Round(time.Second))
}

// procExit is a finished process's exit status (-1: not an exit).
func procExit(err error) int {
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// judgeDroppedChange is judgePoint on hist without the last write before
// seq whose bytes the point must show: the last writer of some block
// before seq, which changed that block (the negative control: it must
// fail). Unlike judgeDropped it skips writes of the bytes already there,
// which a point after an agent's restart may end with (the bank replays
// its journal at boot), and whose loss no judge could see.
func judgeDroppedChange(hist []daemon.HistoryRecord, img []byte, seq uint64) error {
	idx := make([]int, 0, len(hist))
	for i, r := range hist {
		if r.Seq != 0 && r.Seq < seq {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return hist[idx[a]].Seq < hist[idx[b]].Seq })
	const bs = 4096
	zero := sha256.Sum256(make([]byte, bs))
	type blockState struct {
		digest, before string // after its last writer, and before it
		writer         int    // index in hist of its last writer
	}
	blocks := map[int64]*blockState{}
	for _, i := range idx {
		r := hist[i]
		for j, d := range r.Blocks {
			b := r.Off/bs + int64(j)
			st := blocks[b]
			if st == nil {
				st = &blockState{digest: hex.EncodeToString(zero[:16])}
				blocks[b] = st
			}
			st.before, st.digest, st.writer = st.digest, d, i
		}
	}
	last := -1
	for _, st := range blocks {
		if st.before != st.digest && (last < 0 || hist[st.writer].Seq > hist[last].Seq) {
			last = st.writer
		}
	}
	if last < 0 {
		return errors.New("no write before the point is visible in it")
	}
	dropped := append(append([]daemon.HistoryRecord(nil), hist[:last]...), hist[last+1:]...)
	_, err := judgePoint(dropped, img, seq)
	return err
}

// TestJudgeDroppedChange: when the last write before a point rewrote the
// bytes already there, dropping it goes unseen (judgeDropped accepts the
// image) but dropping the last write that changed a block does not.
func TestJudgeDroppedChange(t *testing.T) {
	const bs = 4096
	img := make([]byte, 2*bs)
	digest := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:16]) }
	for j := range bs {
		img[bs+j] = 7
	}
	for j := range bs {
		img[j] = 3
	}
	d0, d1 := digest(img[:bs]), digest(img[bs:])
	hist := []daemon.HistoryRecord{
		{Boot: 1, K: 1, Seq: 1, Off: 0, Len: bs, Blocks: []string{d0}},
		{Boot: 1, K: 2, Seq: 2, Off: bs, Len: bs, Blocks: []string{d1}},
		{Boot: 2, K: 1, Seq: 3, Off: bs, Len: bs, Blocks: []string{d1}}, // the same bytes again: write 2 is not visible either
	}
	if _, err := judgePoint(hist, img, 4); err != nil {
		t.Fatalf("the history's own image: %v", err)
	}
	if err := judgeDropped(hist, img, 4); err != nil {
		t.Fatalf("dropping the rewrite was seen (%v): the case this judge is for did not arise", err)
	}
	if err := judgeDroppedChange(hist, img, 4); err == nil || !strings.Contains(err.Error(), "block 0 is not") {
		t.Errorf("dropping write 1, the last visible one: %v, want block 0 judged wrong", err)
	}
}
