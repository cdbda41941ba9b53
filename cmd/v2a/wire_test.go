package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/workload"
)

// wireVMs are the wire world's protected machines: vCenter VMs of the lab
// inventory, each with its agent on its own loopback address.
var wireVMs = []struct{ name, ip string }{{"db01", "127.0.0.11"}, {"web01", "127.0.0.12"}, {"app01", "127.0.0.13"}}

// TestWireWorld is the wire world end to end, every component its own OS
// process on loopback (127.0.0.x per host), on the real clock:
//
//   - `v2a vcsim` serves the lab inventory by URL; its --guest-exec command
//     starts `v2a agent` for a VM, as a push install would;
//   - Azurite by connection string;
//   - `v2a configsrv` with a database, the vault CA and the enrollment
//     endpoint, discovering the VMs through vCenter (trusted by thumbprint)
//     and enabling replication of three of them (a standing request): the
//     push install runs the command, whose agent enrolls (proving the
//     passphrase) and registers; `v2a processsrv` and `v2a azuresvc` enroll
//     at their first start; every later connection is mutual TLS;
//   - three machines run the bank workload, each keeping its write history.
//
// Faults, while they replicate: kill -9 of the process server while items
// are in its cache (then restarted), kill -9 and restart of the
// configuration server (its database keeps every machine protected: no new
// enable, no resync), an
// agent restart, and a link cut (a TCP proxy in front of the process
// server drops every connection and refuses new ones for a while). Then
// every recovery point in storage is judged: its image is exactly the
// guest's disk after the writes logged before its bookmark (so no
// acknowledged write before it is lost), and the bank's invariant holds on
// it. A negative control: the same judge refuses a history with one write
// dropped.
func TestWireWorld(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary, starts vcsim, Azurite, three daemons and three agents (about 3 minutes)")
	}
	began := time.Now()
	bin := v2aBinary(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	az, store := startAzurite(ctx, t)

	dir := t.TempDir()
	const prefix = "v2a-wire-"
	const pass = "wire-world-passphrase"
	cs, enrollAddr := freeAddr(t, "127.0.0.2"), freeAddr(t, "127.0.0.2")
	ps, azure, link := freeAddr(t, "127.0.0.3"), freeAddr(t, "127.0.0.4"), freeAddr(t, "127.0.0.7")
	enrollURL := "https://" + enrollAddr
	agentListen := map[string]string{}
	peerList := []string{"cs01=" + cs, "ps01=" + ps, "asr.azure=" + azure}
	for _, vm := range wireVMs {
		agentListen[vm.name] = freeAddr(t, vm.ip)
		peerList = append(peerList, vm.name+"="+agentListen[vm.name])
	}
	peers := strings.Join(peerList, ",")
	// Agents reach the process server through the link (the proxy).
	agentPeers := strings.Replace(peers, "ps01="+ps, "ps01="+link, 1)
	proxy := startProxy(t, link, ps)

	// vCenter: `v2a vcsim`, its guest programs the script below.
	guestScript := filepath.Join(dir, "guest.sh")
	vcEnv := filepath.Join(dir, "vcsim.env")
	env := []string{"V2A_PASSPHRASE=" + pass, "V2A_STORAGE_CONNECTION_STRING=" + az.ConnectionString()}
	// The process server reaches storage through a second link, held down
	// while it is killed so that items are surely in its cache then.
	blobURL, err := url.Parse(az.BlobURL())
	if err != nil || blobURL.Host == "" {
		t.Fatalf("Azurite's blob URL %q: %v", az.BlobURL(), err)
	}
	storageLink := freeAddr(t, "127.0.0.8")
	storageProxy := startProxy(t, storageLink, blobURL.Host)
	psEnv := []string{"V2A_PASSPHRASE=" + pass, "V2A_STORAGE_CONNECTION_STRING=" + strings.Replace(az.ConnectionString(), blobURL.Host, storageLink, 1)}
	agentArgs := func(vm string) []string {
		d := filepath.Join(dir, vm)
		return []string{"agent", "--listen", agentListen[vm], "--machine", vm, "--peers", agentPeers,
			"--enroll", enrollURL, "--tls-dir", filepath.Join(d, "tls"), "--data-dir", filepath.Join(d, "data"),
			"--disks", filepath.Join(d, "disk0.img"), "--disk-bytes", fmt.Sprint(64 << 20),
			"--workload", "bank", "--workload-rate", "20", "--history", filepath.Join(d, "history.jsonl"),
			"--log-format", "json"}
	}
	writeGuestScript(t, guestScript, bin, dir, agentArgs)
	vc := startDaemon(t, bin, "vcsim", env, "vcsim", "--inventory", filepath.Join(root, "fixtures/inventory/lab.yaml"),
		"--listen", freeAddr(t, "127.0.0.6"), "--env", vcEnv, "--dir", filepath.Join(dir, "datastores"), "--guest-exec", "sh "+guestScript)
	vcVars := waitEnvFile(t, vc, vcEnv)
	t.Cleanup(func() { killAgents(t, dir) })

	// The vCenter's self-signed certificate, not trusted: exit 2 naming
	// the thumbprint it presents (what --vcenter-thumbprint takes).
	{
		t.Setenv("V2A_PASSPHRASE", pass)
		t.Setenv("V2A_VCENTER_PASSWORD", vcVars["V2A_VCENTER_PASSWORD"])
		t.Setenv("V2A_INSTALL_PASSWORD", "v2a")
		out := &syncBuffer{}
		code := execute(ctx, []string{"configsrv", "--listen", freeAddr(t, "127.0.0.2"), "--data-dir", filepath.Join(dir, "untrusting"),
			"--vcenter-url", vcVars["V2A_VCENTER_URL"], "--vcenter-user", vcVars["V2A_VCENTER_USERNAME"]}, out, out)
		if code != exitSetup || !strings.Contains(out.String(), "not trusted") || !strings.Contains(out.String(), "--vcenter-thumbprint") || !strings.Contains(out.String(), vcVars["V2A_VCENTER_THUMBPRINT"]) {
			t.Errorf("configsrv with an untrusted vCenter: exit %d, want %d naming the thumbprint %s:\n%s", code, exitSetup, vcVars["V2A_VCENTER_THUMBPRINT"], out)
		}
		t.Logf("untrusted vCenter: %s", strings.TrimSpace(out.String()))
	}

	csConf := filepath.Join(dir, "cs.yaml")
	protect := ""
	for _, vm := range wireVMs {
		protect += "  " + vm.name + ": fast\n"
	}
	if err := os.WriteFile(csConf, []byte(`log-format: json
policies:
  - name: fast
    rpo-threshold: 10m
    retention: 1h
    crash-interval: 1m
    app-interval: 1m
protect:
`+protect), 0o644); err != nil {
		t.Fatal(err)
	}
	csArgs := []string{"configsrv", "--config", csConf, "--listen", cs, "--peers", peers, "--data-dir", filepath.Join(dir, "cs"),
		"--tls-dir", filepath.Join(dir, "cs", "tls"), "--enroll-listen", enrollAddr,
		"--vcenter-url", vcVars["V2A_VCENTER_URL"], "--vcenter-user", vcVars["V2A_VCENTER_USERNAME"],
		"--vcenter-thumbprint", vcVars["V2A_VCENTER_THUMBPRINT"], "--rediscover-every", "10s"}
	csEnv := append([]string{"V2A_VCENTER_PASSWORD=" + vcVars["V2A_VCENTER_PASSWORD"], "V2A_INSTALL_PASSWORD=v2a"}, env...)
	csProc := startDaemon(t, bin, "configsrv", csEnv, csArgs...)
	csProc.waitFor(t, "daemon: started", 30*time.Second)
	azArgs := []string{"azuresvc", "--listen", azure, "--peers", peers, "--container-prefix", prefix, "--poll-every", "2s",
		"--enroll", enrollURL, "--tls-dir", filepath.Join(dir, "azure", "tls"), "--log-format", "json"}
	psArgs := []string{"processsrv", "--listen", ps, "--peers", peers, "--data-dir", filepath.Join(dir, "ps"), "--container-prefix", prefix,
		"--enroll", enrollURL, "--tls-dir", filepath.Join(dir, "ps", "tls"), "--log-format", "json"}
	azProc := startDaemon(t, bin, "azuresvc", env, azArgs...)
	psProc := startDaemon(t, bin, "processsrv", psEnv, psArgs...)
	for _, p := range []*proc{azProc, psProc} {
		p.waitFor(t, "daemon: enrolled", 30*time.Second)
		p.waitFor(t, "daemon: started", 30*time.Second)
	}

	// Discovery, the standing requests, the push installs: each agent
	// enrolls and replicates.
	catalogs := func() map[string]*proto.Catalog {
		out := map[string]*proto.Catalog{}
		for _, vm := range wireVMs {
			if c, _, err := azuresvc.LoadCatalog(ctx, store, prefix, vm.name); err == nil {
				out[vm.name] = c
			}
		}
		return out
	}
	waitUntil(t, "every machine's first items applied", 90*time.Second, func() bool {
		cats := catalogs()
		for _, vm := range wireVMs {
			if c := cats[vm.name]; c == nil || c.Applied == 0 {
				return false
			}
		}
		return true
	})
	gens := map[string]uint64{}
	for name, c := range catalogs() {
		gens[name] = c.Gen
	}
	for _, vm := range wireVMs {
		b, err := os.ReadFile(filepath.Join(dir, vm.name, "install.txt"))
		if err != nil || !strings.Contains(string(b), "--cs cs01:443") {
			t.Errorf("%s: the push install did not run the guest program with the server's arguments: %q, %v", vm.name, b, err)
		}
		if log := agentLog(dir, vm.name); !strings.Contains(log, "daemon: enrolled") {
			t.Errorf("%s: the agent did not enroll", vm.name)
		}
	}
	t.Logf("replicating after %s", time.Since(began).Round(time.Second))

	// Fault 1: kill -9 of the process server while items are in its
	// cache (its link to storage is held down first, so the items it
	// acknowledges stay there); a new one on the same data directory
	// carries on and uploads them.
	storageProxy.hold()
	var cached []string
	waitUntil(t, "items in the process server's cache (its storage link down)", 60*time.Second, func() bool {
		cached, _ = filepath.Glob(filepath.Join(dir, "ps", "cache", "*", "*.item"))
		return len(cached) > 0
	})
	psProc.cmd.Process.Kill()
	<-psProc.done
	storageProxy.release()
	t.Logf("process server killed with %d items in its cache (%s, ...)", len(cached), filepath.Base(cached[0]))
	psProc = startDaemon(t, bin, "processsrv (restarted)", psEnv, psArgs...)
	psProc.waitFor(t, "daemon: started", 30*time.Second)
	if strings.Contains(psProc.out.String(), "daemon: enrolled") {
		t.Errorf("the restarted process server enrolled again (its certificate was in tls-dir)")
	}

	// Fault 2: the configuration server is killed (kill -9: what its
	// database committed is all it keeps) and restarts on its database.
	csProc.cmd.Process.Kill()
	<-csProc.done
	csProc = startDaemon(t, bin, "configsrv (restarted)", csEnv, csArgs...)
	csProc.waitFor(t, "daemon: started", 30*time.Second)

	// Fault 3: db01's agent restarts.
	pid := agentPID(t, dir, "db01")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "db01's agent to drain", 20*time.Second, func() bool { return !alive(pid) })
	if !strings.Contains(agentLog(dir, "db01"), "daemon: drained") {
		t.Errorf("db01's agent did not drain on SIGTERM")
	}
	restarted := startDaemon(t, bin, "agent db01 (restarted)", env, agentArgs("db01")...)
	restarted.waitFor(t, "daemon: started", 30*time.Second)

	// Fault 4: the link to the process server is cut for 8 s.
	proxy.cut(8 * time.Second)
	faultsDone := time.Now()
	t.Logf("faults done after %s (link refused %d connections while cut)", time.Since(began).Round(time.Second), proxy.refused())

	// A crash-consistent point taken after every fault, for each machine.
	waitUntil(t, "a crash-consistent point after the faults on every machine", 150*time.Second, func() bool {
		cats := catalogs()
		for _, vm := range wireVMs {
			c := cats[vm.name]
			if c == nil || !hasPointAfter(c, faultsDone) {
				return false
			}
		}
		return true
	})

	// The database kept the machines: no new enable after the restart,
	// no resync (the generations are the first ones).
	for name, c := range catalogs() {
		if c.Gen != gens[name] {
			t.Errorf("%s resynced: generation %d, was %d before the faults", name, c.Gen, gens[name])
		}
	}
	if strings.Contains(csProc.out.String(), "enabling replication (standing request)") {
		t.Errorf("the restarted configuration server enabled replication again: its database did not keep the machines")
	}
	if strings.Contains(restarted.out.String(), "agent: sync begins") {
		t.Errorf("db01's restarted agent began a sync")
	}

	// The agents stop first: their histories are then complete.
	for _, vm := range wireVMs[1:] {
		pid := agentPID(t, dir, vm.name)
		syscall.Kill(pid, syscall.SIGTERM)
		waitUntil(t, vm.name+"'s agent to drain", 20*time.Second, func() bool { return !alive(pid) })
	}
	stopProc(t, restarted)

	// Every point in storage, judged.
	points := 0
	for _, vm := range wireVMs {
		c, _, err := azuresvc.LoadCatalog(ctx, store, prefix, vm.name)
		if err != nil {
			t.Fatalf("%s: catalog: %v", vm.name, err)
		}
		hist, err := readHistory(filepath.Join(dir, vm.name, "history.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) == 0 {
			t.Fatalf("%s: empty history: nothing to judge", vm.name)
		}
		for _, p := range c.Points {
			img, _, err := store.Get(ctx, prefix+proto.ContainerReplica, c.Disks[0].Blob, blob.ReadOptions{Snapshot: p.Snapshots[0]})
			if err != nil {
				t.Fatalf("%s point %s: %v", vm.name, p.ID, err)
			}
			n, err := judgePoint(hist, img, p.Seq)
			if err != nil {
				t.Errorf("%s point %s (%s, seq %d): %v", vm.name, p.ID, p.Kind, p.Seq, err)
				continue
			}
			if n == 0 {
				continue // before the first write: nothing to judge, not counted
			}
			points++
			// An app-consistent point is the bank flushed: nothing to replay.
			if _, err := workload.CheckBank(bytes.NewReader(img), 0, p.Kind == proto.App); err != nil {
				t.Errorf("%s point %s: bank invariant: %v", vm.name, p.ID, err)
			}
			// Negative control: the history without its last write
			// before the point is not the point's image.
			if err := judgeDropped(hist, img, p.Seq); err == nil {
				t.Errorf("%s point %s: negative control: a history with one write dropped was judged exact", vm.name, p.ID)
			}
		}
		kinds := map[proto.Consistency]int{}
		for _, p := range c.Points {
			kinds[p.Kind]++
		}
		t.Logf("%s: %d points (%d crash-, %d app-consistent), %d writes acknowledged, generation %d",
			vm.name, len(c.Points), kinds[proto.Crash], kinds[proto.App], len(hist), c.Gen)
	}
	if points < len(wireVMs) {
		t.Fatalf("only %d points with writes judged, want at least one per machine", points)
	}
	for _, p := range []*proc{psProc, azProc, csProc, vc} {
		stopProc(t, p)
	}
	t.Logf("wire world: %d points judged exact, wall time %s", points, time.Since(began).Round(time.Second))
}

// writeGuestScript writes the --guest-exec script: it records the
// installer's arguments and starts the VM's agent in its own session (the
// installer exits; the agent runs on), its pid in DIR/VM/agent.pid.
func writeGuestScript(t *testing.T, path, bin, dir string, agentArgs func(string) []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("set -e\nd=" + shq(dir) + "/\"$V2A_VM\"\nmkdir -p \"$d\"\n")
	b.WriteString("echo \"$V2A_GUEST_PROGRAM $V2A_GUEST_ARGS\" > \"$d/install.txt\"\ncase \"$V2A_VM\" in\n")
	for _, vm := range wireVMs {
		q := []string{shq(bin)}
		for _, a := range agentArgs(vm.name) {
			q = append(q, shq(a))
		}
		fmt.Fprintf(&b, "%s) setsid %s > \"$d/agent.log\" 2>&1 < /dev/null & echo $! > \"$d/agent.pid\" ;;\n", vm.name, strings.Join(q, " "))
	}
	b.WriteString("*) echo \"no agent for $V2A_VM\" >&2; exit 3 ;;\nesac\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func agentLog(dir, vm string) string {
	b, _ := os.ReadFile(filepath.Join(dir, vm, "agent.log"))
	return string(b)
}

// alive says whether process pid runs (a zombie does not: the agents the
// guest script started are not this process's children, and whoever
// reaps them may be slow to).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func agentPID(t *testing.T, dir, vm string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, vm, "agent.pid"))
	if err != nil {
		t.Fatalf("%s: no agent pid: %v", vm, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: agent pid %q: %v", vm, b, err)
	}
	return pid
}

// killAgents kills the agents the guest script started (still running
// after a failure): only a process whose command line is still that
// agent's (a pid may have been reused since), and shows their logs when
// the test failed.
func killAgents(t *testing.T, dir string) {
	for _, vm := range wireVMs {
		if b, err := os.ReadFile(filepath.Join(dir, vm.name, "agent.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				if bytes.Contains(cmdline, []byte(filepath.Join(dir, vm.name, "history.jsonl"))) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if t.Failed() || os.Getenv("V2A_DAEMON_LOGS") != "" {
			t.Logf("--- agent %s (started by the push install) output:\n%s", vm.name, tail(agentLog(dir, vm.name), 20000))
		}
	}
}

// waitEnvFile waits for `v2a vcsim`'s --env file and reads it.
func waitEnvFile(t *testing.T, p *proc, path string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	waitUntil(t, "v2a vcsim's env file", 30*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("v2a vcsim exited (%v) before serving", p.err)
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				vars[k] = v
			}
		}
		return true
	})
	return vars
}

func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stopProc sends SIGTERM and waits for a clean exit with a drain line.
func stopProc(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit within 30 s of SIGTERM", p.name)
	}
	if p.err != nil {
		t.Errorf("%s: %v after SIGTERM, want exit 0", p.name, p.err)
	}
}

func hasPointAfter(c *proto.Catalog, at time.Time) bool {
	for _, p := range c.Points {
		if p.Kind == proto.Crash && p.Time.After(at) {
			return true
		}
	}
	return false
}

// readHistory reads a guest's history file (every boot).
func readHistory(path string) ([]daemon.HistoryRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []daemon.HistoryRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r daemon.HistoryRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("history %s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// judgePoint checks a recovery point's image against a guest's history:
// every block is as the writes logged before change-log record seq left
// it (in change-log order, across the agent's restarts), and every other
// block is zero. It returns how many writes the point follows. A write the
// filter did not track (seq 0) is an error: it could not be replicated.
func judgePoint(hist []daemon.HistoryRecord, img []byte, seq uint64) (int, error) {
	const bs = 4096
	if len(img)%bs != 0 {
		return 0, fmt.Errorf("image of %d bytes is not whole blocks", len(img))
	}
	rs := make([]daemon.HistoryRecord, 0, len(hist))
	for _, r := range hist {
		if r.Seq == 0 {
			return 0, fmt.Errorf("write %d of boot %d (disk %d, offset %d) was not tracked by the filter", r.K, r.Boot, r.Disk, r.Off)
		}
		if r.Seq < seq {
			rs = append(rs, r)
		}
	}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Seq < rs[j].Seq })
	zero := sha256.Sum256(make([]byte, bs))
	want := make([]string, len(img)/bs)
	for i := range want {
		want[i] = hex.EncodeToString(zero[:16])
	}
	for _, r := range rs {
		if r.Disk != 0 {
			return 0, fmt.Errorf("write %d on disk %d: one disk expected", r.K, r.Disk)
		}
		for i, d := range r.Blocks {
			b := int(r.Off/bs) + i
			if b >= len(want) {
				return 0, fmt.Errorf("write %d at block %d beyond the image's %d blocks", r.K, b, len(want))
			}
			want[b] = d
		}
	}
	for b := range want {
		s := sha256.Sum256(img[b*bs : (b+1)*bs])
		if got := hex.EncodeToString(s[:16]); got != want[b] {
			return len(rs), fmt.Errorf("block %d is not the guest's after its %d writes before seq %d", b, len(rs), seq)
		}
	}
	return len(rs), nil
}

// judgeDropped is judgePoint on hist without its last write before seq
// (the negative control: it must fail).
func judgeDropped(hist []daemon.HistoryRecord, img []byte, seq uint64) error {
	last := -1
	for i, r := range hist {
		if r.Seq < seq && (last < 0 || r.Seq > hist[last].Seq) {
			last = i
		}
	}
	if last < 0 {
		return errors.New("no write before the point to drop")
	}
	dropped := append(append([]daemon.HistoryRecord(nil), hist[:last]...), hist[last+1:]...)
	_, err := judgePoint(dropped, img, seq)
	if err == nil {
		return nil
	}
	return err
}

// TestJudgePoint: the point judge accepts the image the history makes and
// refuses one with a write dropped, one with a block changed, and an
// untracked write.
func TestJudgePoint(t *testing.T) {
	const bs = 4096
	img := make([]byte, 4*bs)
	digest := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:16]) }
	var hist []daemon.HistoryRecord
	for i, blk := range []int{1, 2, 1} {
		for j := range bs {
			img[blk*bs+j] = byte(i + 1)
		}
		hist = append(hist, daemon.HistoryRecord{Boot: 1, K: uint64(i + 1), Seq: uint64(i + 1), Off: int64(blk * bs), Len: bs,
			Blocks: []string{digest(img[blk*bs : (blk+1)*bs])}})
	}
	if n, err := judgePoint(hist, img, 4); err != nil || n != 3 {
		t.Fatalf("the history's own image: %d writes, %v", n, err)
	}
	if err := judgeDropped(hist, img, 4); err == nil {
		t.Errorf("a history with its last write dropped was judged exact")
	}
	if _, err := judgePoint(hist, img, 3); err == nil {
		t.Errorf("a point before write 3 was judged to hold it")
	}
	bad := bytes.Clone(img)
	bad[3*bs] = 9
	if _, err := judgePoint(hist, bad, 4); err == nil {
		t.Errorf("a changed block was judged exact")
	}
	untracked := append(append([]daemon.HistoryRecord(nil), hist...), daemon.HistoryRecord{Boot: 2, K: 1, Seq: 0, Off: 0, Len: bs})
	if _, err := judgePoint(untracked, img, 4); err == nil || !strings.Contains(err.Error(), "not tracked") {
		t.Errorf("an untracked write: %v, want an error", err)
	}
}

// linkProxy is a TCP proxy standing for the network link to the process
// server: cut drops every connection and refuses new ones for a while.
type linkProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	conns     map[net.Conn]bool
	downUntil time.Time
	nRefused  int
}

func startProxy(t *testing.T, listen, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &linkProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *linkProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := time.Now().Before(p.downUntil)
		if down {
			p.nRefused++
		}
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *linkProxy) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// cut drops every open connection and refuses new ones for d.
func (p *linkProxy) cut(d time.Duration) {
	p.mu.Lock()
	p.downUntil = time.Now().Add(d)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	time.Sleep(d)
}

// hold drops every open connection and refuses new ones until release.
func (p *linkProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.downUntil = time.Now().Add(time.Hour)
	for c := range p.conns {
		c.Close()
	}
}

// release ends a hold.
func (p *linkProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.downUntil = time.Time{}
}

func (p *linkProxy) refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nRefused
}
