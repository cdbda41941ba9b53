package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/azurite"
)

// certifyReports are the three reports of a drill, parsed.
type certifyReports struct {
	junit junitSuites
	cert  Certificate
	html  string
	raw   string // the three files, concatenated (for secrets)
}

func readReports(t *testing.T, dir string) certifyReports {
	t.Helper()
	var r certifyReports
	var raw strings.Builder
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("report %s: %v", name, err)
		}
		raw.Write(data)
		return data
	}
	if err := xml.Unmarshal(read(reportJUnit), &r.junit); err != nil {
		t.Fatalf("junit.xml does not parse: %v", err)
	}
	if err := json.Unmarshal(read(reportCertificate), &r.cert); err != nil {
		t.Fatalf("certificate.json does not parse: %v", err)
	}
	r.html = string(read(reportHTML))
	r.raw = raw.String()
	return r
}

// TestCertifyRealTarget is the issue's "what it must show": `v2a certify
// --target fixtures/targets/real.yaml`, the real-environment target, with
// V2A_VCENTER_URL and V2A_VCENTER_THUMBPRINT pointing at a `v2a vcsim`
// served over HTTPS (its push installs run a command that succeeds; the
// simulated guests' agents then register) and V2A_STORAGE_CONNECTION_STRING
// at an Azurite, both reached as a real vCenter and storage account are.
// The target's azure.mode is arm and there is no subscription here, so
// V2A_AZURE_MODE=sim lands the test failover in the simulated fabric; the
// certificate and the summary must say so.
//
// It passes with exit 0 and writes the reports: the JUnit test cases are
// the checks that ran (their count is the run's tally, every kind the
// drill asks for is there, none failed), the certificate's point ids are
// in storage (read back from the catalogs the drill left with --keep), its
// image hashes cover each machine, and no report holds a secret. The
// negative control runs the same drill through a storage endpoint that
// acknowledges every fifth page write and drops it: exit 1, a one-line
// reason, <failure> test cases, a certificate that did not pass.
func TestCertifyRealTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: serves a vcsim, starts Azurite and runs two drills")
	}
	start := time.Now()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("V2A_WORKDIR", t.TempDir())
	vc := startVCSim(t, "--inventory", filepath.Join(root, "fixtures/inventory/lab.yaml"), "--guest-exec", "true")
	az, err := azurite.Start(context.Background(), azurite.Options{Mode: azurite.ModeLocal})
	if err != nil {
		t.Fatalf("Azurite: %v", err)
	}
	t.Cleanup(func() { az.Stop() })
	for _, k := range []string{harness.EnvVCenterURL, harness.EnvVCenterUsername, harness.EnvVCenterPassword, harness.EnvVCenterThumbprint} {
		t.Setenv(k, vc.env[k])
	}
	t.Setenv(harness.EnvStorage, az.ConnectionString())
	t.Setenv(harness.EnvAzureMode, "sim")
	target := filepath.Join(root, "fixtures/targets/real.yaml")

	t.Run("passes", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		var out, errOut bytes.Buffer
		code := execute(context.Background(), []string{"certify", "--target", target, "--report", dir, "--keep", "--timeout", "80s"}, &out, &errOut)
		if code != exitOK {
			t.Fatalf("v2a certify: exit %d\n%s\nstderr:\n%s\nvcsim:\n%s", code, lastLines(out.String(), 60), errOut.String(), vc.stderr)
		}
		rep := readReports(t, dir)
		c := rep.cert

		// The JUnit test cases are the checks that ran.
		m := regexp.MustCompile(`checks: (\d+) passed, 0 failed`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no closing tally in the output:\n%s", lastLines(out.String(), 20))
		}
		if len(rep.junit.Suites) != 1 {
			t.Fatalf("junit: %d suites, want 1", len(rep.junit.Suites))
		}
		s := rep.junit.Suites[0]
		if got := fmt.Sprint(len(s.Cases)); got != m[1] || s.Tests != len(s.Cases) || rep.junit.Tests != len(s.Cases) {
			t.Errorf("junit: %d test cases (tests=%d, %d), the run counted %s checks", len(s.Cases), s.Tests, rep.junit.Tests, m[1])
		}
		kinds := map[string]int{}
		for _, tc := range s.Cases {
			kinds[strings.TrimPrefix(tc.ClassName, "v2a.certify.")]++
			if tc.Failure != nil || s.Failures != 0 {
				t.Errorf("junit: failure in %s %s: %+v", tc.ClassName, tc.Name, tc.Failure)
			}
			if tc.SystemOut == "" || tc.Name == "" {
				t.Errorf("junit: test case without name or evidence: %+v", tc)
			}
		}
		for _, k := range []string{"write-order", "invariant", "monotonic", "retention", "schedule", "image", "isolation", "plan-order", "leftovers", "drill"} {
			if kinds[k] == 0 {
				t.Errorf("junit: no %s test case (have %v)", k, kinds)
			}
		}
		if c.Checks.Passed != len(s.Cases) || c.Checks.Failed != 0 || !c.Passed {
			t.Errorf("certificate: passed=%t checks %+v, junit %d cases", c.Passed, c.Checks, len(s.Cases))
		}

		// The certificate: what the drill was run on, no secret.
		if c.VCenterURL != vc.env[harness.EnvVCenterURL] || c.VSphereMode != "url" || c.StorageMode != "external" || c.StorageAccount != azurite.AccountName {
			t.Errorf("certificate: vcenter %q (%s), storage %s %q; want %q and %q", c.VCenterURL, c.VSphereMode, c.StorageMode, c.StorageAccount, vc.env[harness.EnvVCenterURL], azurite.AccountName)
		}
		if c.Target != "real-services" || c.AzureMode != "sim" || !strings.Contains(c.AzureNote, "simulated Azure fabric") || !strings.Contains(c.AzureNote, "V2A_AZURE_MODE=sim") {
			t.Errorf("certificate: target %q azure %q note %q", c.Target, c.AzureMode, c.AzureNote)
		}
		if !strings.Contains(rep.html, "simulated Azure fabric") || !strings.Contains(rep.html, "PASSED") {
			t.Errorf("summary.html lacks the verdict or the simulated-fabric note")
		}
		for _, secret := range []string{vc.env[harness.EnvVCenterPassword], azurite.AccountKey, "AccountKey"} {
			if strings.Contains(rep.raw, secret) || strings.Contains(out.String(), secret) {
				t.Errorf("a report or the output holds the secret %q", secret)
			}
		}
		for _, bad := range []string{"<script", "<link", " src=", " href="} {
			if strings.Contains(rep.html, bad) {
				t.Errorf("summary.html is not self-contained: it has %q", bad)
			}
		}
		if want := []string{"db01", "web01"}; fmt.Sprint(c.Machines) != fmt.Sprint(want) || !strings.Contains(c.MachinesChosen, "default") {
			t.Errorf("certificate: machines %v (%s), want the default %v", c.Machines, c.MachinesChosen, want)
		}
		if c.TestFailover == nil || c.TestFailover.State != "succeeded" {
			t.Fatalf("certificate: test failover %+v", c.TestFailover)
		}
		if rto, err := time.ParseDuration(c.TestFailover.RTO); err != nil || rto <= 0 {
			t.Errorf("certificate: test failover RTO %q", c.TestFailover.RTO)
		}
		if len(c.Leftovers) != 1 || c.Leftovers[0].Verdict != "ok" {
			t.Errorf("certificate: leftovers %+v", c.Leftovers)
		}
		if c.Seed != 1 || len(c.TraceSHA256) != 64 || c.Started.IsZero() || !c.Finished.After(c.Started) || c.Version == "" {
			t.Errorf("certificate: seed %d trace %q started %v finished %v version %q", c.Seed, c.TraceSHA256, c.Started, c.Finished, c.Version)
		}
		hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
		booted := map[string]bool{}
		for _, im := range c.Images {
			if len(im.SHA256) != 1 || !hex64.MatchString(im.SHA256[0]) || im.Point != c.TestFailover.Point[im.Source] {
				t.Errorf("certificate: image %+v (test failover points %v)", im, c.TestFailover.Point)
			}
			booted[im.Source] = true
		}
		if !booted["db01"] || !booted["web01"] {
			t.Errorf("certificate: images %+v, want db01 and web01", c.Images)
		}

		// The certificate's point ids are in storage.
		if c.StoragePrefix == "" || !c.StorageKept {
			t.Fatalf("certificate: storage prefix %q kept=%t with --keep", c.StoragePrefix, c.StorageKept)
		}
		store, err := azblob.NewFromConnectionString(az.ConnectionString())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, cn := range proto.Containers() {
				store.DeleteContainer(context.Background(), c.StoragePrefix+cn)
			}
		})
		for _, mach := range c.Machines {
			ids := c.Points[mach]
			if len(ids) < 4 {
				t.Errorf("certificate: %s has %d points after 30 min at crash=5m", mach, len(ids))
			}
			cat, _, err := azuresvc.LoadCatalog(context.Background(), store, c.StoragePrefix, mach)
			if err != nil {
				t.Fatalf("catalog of %s in storage: %v", mach, err)
			}
			for _, id := range ids {
				if _, ok := cat.FindPoint(id); !ok {
					t.Errorf("certificate point %s of %s is not in storage", id, mach)
				}
			}
			if len(cat.Points) != len(ids) {
				t.Errorf("%s: storage has %d points, the certificate %d", mach, len(cat.Points), len(ids))
			}
		}
	})

	t.Run("storage drops writes", func(t *testing.T) {
		// A storage endpoint that acknowledges every fifth page write
		// without passing it on: the bytes are lost.
		u, err := url.Parse(az.BlobURL())
		if err != nil {
			t.Fatal(err)
		}
		var n, dropped atomic.Int64
		proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && r.URL.Query().Get("comp") == "page" && r.Header.Get("x-ms-page-write") == "update" && n.Add(1)%5 == 0 {
				io.Copy(io.Discard, r.Body)
				dropped.Add(1)
				h := w.Header()
				h.Set("ETag", `"0x8DD000000000000"`)
				h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
				h.Set("x-ms-blob-sequence-number", "0")
				h.Set("x-ms-request-server-encrypted", "true")
				h.Set("x-ms-version", r.Header.Get("x-ms-version"))
				w.WriteHeader(http.StatusCreated)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		t.Setenv(harness.EnvStorage, strings.Replace(az.ConnectionString(), "BlobEndpoint="+az.BlobURL(), "BlobEndpoint="+srv.URL+u.Path, 1))
		dir := filepath.Join(t.TempDir(), "out")
		var out, errOut bytes.Buffer
		// --progress none: stderr is then the reason line alone.
		code := execute(context.Background(), []string{"certify", "--target", target, "--report", dir, "--timeout", "80s", "--progress", "none"}, &out, &errOut)
		if code != exitChecks {
			t.Fatalf("v2a certify through a storage that drops writes: exit %d, want %d\n%s\n%s", code, exitChecks, lastLines(out.String(), 40), errOut.String())
		}
		t.Logf("dropped %d of %d page writes; stderr: %s", dropped.Load(), n.Load(), errOut.String())
		if dropped.Load() == 0 {
			t.Fatalf("the proxy saw %d page writes and dropped none", n.Load())
		}
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "v2a: certify: ") || !strings.Contains(lines[0], "checks failed; first: ") {
			t.Errorf("stderr = %q, want one line with the reason", errOut.String())
		}
		rep := readReports(t, dir)
		failures := 0
		for _, tc := range rep.junit.Suites[0].Cases {
			if tc.Failure != nil {
				failures++
				if tc.Failure.Message == "" || tc.Failure.Type == "" {
					t.Errorf("junit: failure without message or type: %+v", tc)
				}
			}
		}
		if failures == 0 || rep.junit.Suites[0].Failures != failures || rep.junit.Failures != failures {
			t.Errorf("junit: %d <failure> test cases, suite says %d, document %d", failures, rep.junit.Suites[0].Failures, rep.junit.Failures)
		}
		if rep.cert.Passed || rep.cert.Checks.Failed != failures || rep.cert.Reason == "" {
			t.Errorf("certificate: passed=%t failed=%d reason %q, junit failures %d", rep.cert.Passed, rep.cert.Checks.Failed, rep.cert.Reason, failures)
		}
		if !strings.Contains(rep.html, "FAILED") {
			t.Errorf("summary.html does not say FAILED")
		}
	})
	if took := time.Since(start); took > 90*time.Second {
		t.Errorf("the test took %v, over its 90 s bound", took)
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
