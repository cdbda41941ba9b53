package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

// vcsimServer is a `v2a vcsim` run in process, as its --env file gives it.
type vcsimServer struct {
	env    map[string]string
	stdout *syncBuffer
	stderr *syncBuffer
}

// startVCSim runs `v2a vcsim` with args until the test ends, and waits for
// its --env file.
func startVCSim(t *testing.T, args ...string) vcsimServer {
	t.Helper()
	envFile := filepath.Join(t.TempDir(), "vcsim.env")
	ctx, cancel := context.WithCancel(context.Background())
	s := vcsimServer{env: map[string]string{}, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, append([]string{"vcsim", "--env", envFile}, args...), s.stdout, s.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("v2a vcsim exited %d after cancel, want 0:\n%s", code, s.stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("v2a vcsim did not stop within 30s of cancel")
		}
		if _, err := os.Stat(envFile); !os.IsNotExist(err) {
			t.Errorf("v2a vcsim left its env file behind (%v)", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(envFile)
		if err == nil {
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				k, v, _ := strings.Cut(sc.Text(), "=")
				s.env[k] = v
			}
			return s
		}
		select {
		case code := <-done:
			t.Fatalf("v2a vcsim exited %d before serving:\n%s", code, s.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2a vcsim wrote no env file within 30s:\n%s", s.stderr)
		}
	}
}

// writeTarget writes a target file for the lab inventory with vsphere set by
// the given YAML lines (indented under vsphere:).
func writeTarget(t *testing.T, vsphere ...string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("name: vcsim-by-url\ninventory: %s\nvsphere:\n  %s\nstorage:\n  mode: auto\n",
		filepath.Join(root, "fixtures/inventory/lab.yaml"), strings.Join(vsphere, "\n  "))
	p := filepath.Join(t.TempDir(), "target.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVCSimByURL is the wire world's vCenter end to end, on loopback: `v2a
// vcsim` serves the lab inventory over HTTPS with a self-signed
// certificate and a --guest-exec command; a target file reaches it by URL
// and thumbprint; discovery sees the inventory, and a push install through
// vCenter's guest operations runs the command for each VM (the files it
// wrote prove it, with the installer and its arguments), after which the
// simulated guests' agents register and the VMs reach protected. The same
// vcsim refuses a wrong thumbprint and no trust at all, naming what it
// presents; an unreachable URL is reported quickly with host and port.
func TestVCSimByURL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: serves a vcsim and starts Azurite")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("V2A_WORKDIR", t.TempDir())
	installed := t.TempDir()
	guestCmd := fmt.Sprintf(`printf '%%s|%%s|%%s\n' "$V2A_VM" "$V2A_GUEST_PROGRAM" "$V2A_GUEST_ARGS" > '%s'/"$V2A_VM".installed`, installed)
	vc := startVCSim(t, "--inventory", filepath.Join(root, "fixtures/inventory/lab.yaml"), "--guest-exec", guestCmd)

	url, tp := vc.env["V2A_VCENTER_URL"], vc.env["V2A_VCENTER_THUMBPRINT"]
	if line := fmt.Sprintf("url=%s thumbprint=%s\n", url, tp); vc.stdout.String() != line {
		t.Fatalf("v2a vcsim stdout = %q, want %q", vc.stdout.String(), line)
	}
	if !strings.HasPrefix(url, "https://127.0.0.1:") || len(tp) != 59 {
		t.Fatalf("env file: url %q thumbprint %q", url, tp)
	}
	t.Setenv("V2A_TEST_VCSIM_PASSWORD", vc.env["V2A_VCENTER_PASSWORD"])
	login := []string{"mode: url", "url: " + url, "username: " + vc.env["V2A_VCENTER_USERNAME"], "passwordEnv: V2A_TEST_VCSIM_PASSWORD"}

	t.Run("protect", func(t *testing.T) {
		target := writeTarget(t, append(login, "thumbprint: "+tp)...)
		p := script(t,
			"world seed=7 machines=(db01,web01) workload=bank",
			"deploy",
			"protect vms=(db01,web01)",
			"wait state=protected timeout=10m",
			"run for=6m",
			"check what=points")
		var out, errOut bytes.Buffer
		start := time.Now()
		code := execute(context.Background(), []string{"run", p, "--target", target, "--trace", "none"}, &out, &errOut)
		t.Logf("run took %v", time.Since(start))
		if code != exitOK {
			t.Fatalf("v2a run against vcsim by URL: exit %d\n%s%s\nvcsim:\n%s", code, out.String(), errOut.String(), vc.stderr)
		}
		for _, s := range []string{"vsphere url: 6 VMs with 7 disks discovered", "db01,web01 protected after", ", 0 failed"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("output lacks %q:\n%s", s, out.String())
			}
		}
		for _, vm := range []string{"db01", "web01"} {
			data, err := os.ReadFile(filepath.Join(installed, vm+".installed"))
			if err != nil {
				t.Errorf("the guest-exec command did not run for %s: %v", vm, err)
				continue
			}
			got := strings.Split(strings.TrimSpace(string(data)), "|")
			if len(got) != 3 || got[0] != vm || !strings.Contains(got[1], "ASR") || !strings.Contains(got[2], "--vault vault-1") {
				t.Errorf("%s: the command saw V2A_VM|V2A_GUEST_PROGRAM|V2A_GUEST_ARGS = %q", vm, data)
			}
		}
		if _, err := os.Stat(filepath.Join(installed, "app01.installed")); !os.IsNotExist(err) {
			t.Errorf("the command ran for app01, which was not protected (%v)", err)
		}
	})

	// The negative control: a command that fails fails the push install,
	// and no agent starts.
	t.Run("install fails", func(t *testing.T) {
		bad := startVCSim(t, "--inventory", filepath.Join(root, "fixtures/inventory/lab.yaml"), "--guest-exec", "exit 7")
		target := writeTarget(t, "mode: url", "url: "+bad.env["V2A_VCENTER_URL"], "username: v2a", "passwordEnv: V2A_TEST_VCSIM_PASSWORD",
			"caFile: "+writeCA(t, bad))
		p := script(t,
			"world seed=7 machines=(db01) workload=bank",
			"deploy",
			"protect vms=(db01)",
			"run for=1m",
			"status",
			"jobs vm=db01")
		var out, errOut bytes.Buffer
		if code := execute(context.Background(), []string{"run", p, "--target", target, "--trace", "none"}, &out, &errOut); code != exitOK {
			t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
		}
		for _, s := range []string{"db01       unprotected", "push install failed: installer exited with code 7"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("output lacks %q:\n%s", s, out.String())
			}
		}
	})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	wrong := "00" + tp[2:]
	if tp[:2] == "00" {
		wrong = "11" + tp[2:]
	}
	for _, c := range []struct {
		name    string
		vsphere []string
		want    []string
	}{
		{"wrong thumbprint", append(login, "thumbprint: "+wrong), []string{"not trusted", "expects " + wrong, "presents " + tp}},
		{"no trust", login, []string{"not trusted", "thumbprint is " + tp, "thumbprint: " + tp, "caFile:", "insecure: true"}},
		{"unreachable", []string{"mode: url", fmt.Sprintf("url: https://127.0.0.1:%d/sdk", closedPort), "username: v2a"},
			[]string{"unreachable", "host 127.0.0.1", fmt.Sprintf("port %d", closedPort), "TCP connect: connection refused"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := writeTarget(t, c.vsphere...)
			var out, errOut bytes.Buffer
			start := time.Now()
			code := execute(context.Background(), []string{"run", script(t, "world seed=1 machines=(db01)"), "--target", target, "--trace", "none"}, &out, &errOut)
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("refusal took %v", took)
			}
			if code != exitSetup {
				t.Errorf("exit %d, want %d", code, exitSetup)
			}
			all := out.String() + errOut.String()
			for _, s := range append(c.want, target) {
				if !strings.Contains(all, s) {
					t.Errorf("output lacks %q:\n%s", s, all)
				}
			}
		})
	}
}

// writeCA fetches the certificate the vcsim presents and writes it as a
// PEM file, a target's caFile (the certificate is its own CA).
func writeCA(t *testing.T, s vcsimServer) string {
	t.Helper()
	u, err := neturl.Parse(s.env["V2A_VCENTER_URL"])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := filepath.Join(t.TempDir(), "vcsim-ca.pem")
	der := conn.ConnectionState().PeerCertificates[0].Raw
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVCSimBadInput: bad flags, a bad inventory, a certificate that does
// not load and a taken port each stop `v2a vcsim` at once with exit 2 and
// an error that says which; its help documents every flag.
func TestVCSimBadInput(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	lab := filepath.Join(root, "fixtures/inventory/lab.yaml")
	dir := t.TempDir()
	badInv := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badInv, []byte("datacenter: DC\nclustrs: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no inventory", nil, []string{"--inventory is required"}},
		{"inventory missing", []string{"--inventory", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml", "no such file"}},
		{"unknown inventory key", []string{"--inventory", badInv}, []string{badInv, "line 2: clustrs", "unknown field"}},
		{"cert without key", []string{"--inventory", lab, "--tls-cert", notPEM}, []string{"--tls-cert and --tls-key go together"}},
		{"cert not PEM", []string{"--inventory", lab, "--tls-cert", notPEM, "--tls-key", notPEM}, []string{"--tls-cert " + notPEM}},
		{"port taken", []string{"--inventory", lab, "--listen", taken.Addr().String(), "--dir", t.TempDir()}, []string{"listen on " + taken.Addr().String(), "address already in use"}},
		{"bad listen address", []string{"--inventory", lab, "--listen", "nowhere", "--dir", t.TempDir()}, []string{`listen address "nowhere"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := execute(context.Background(), append([]string{"vcsim"}, tt.args...), &out, &errOut)
			if code != exitSetup {
				t.Errorf("exit %d, want %d", code, exitSetup)
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q, want nothing (no URL line for a vcsim that does not serve)", out.String())
			}
			for _, s := range tt.want {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
		})
	}

	var out, errOut bytes.Buffer
	if code := execute(context.Background(), []string{"vcsim", "--help"}, &out, &errOut); code != exitOK {
		t.Fatalf("vcsim --help: exit %d: %s", code, errOut.String())
	}
	for _, flag := range []string{"--inventory", "--listen", "--tls-cert", "--tls-key", "--dir", "--env", "--guest-exec", "V2A_VM", "V2A_GUEST_PROGRAM", "V2A_GUEST_ARGS", "thumbprint="} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("vcsim --help lacks %s", flag)
		}
	}
}
