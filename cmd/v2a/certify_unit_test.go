package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/harness"
)

// TestCertifyBadInput: bad flags, a bad target or variable, an unknown or
// unfit machine stop `v2a certify` at once with exit 2 and an error that
// says which, before anything is written to the report directory.
func TestCertifyBadInput(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	sim := filepath.Join(root, "fixtures/targets/sim.yaml")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no target", nil, nil, []string{"--target is required"}},
		{"target missing", []string{"--target", "nope.yaml"}, nil, []string{"nope.yaml", "no such file"}},
		{"unknown machine", []string{"--target", sim, "--machines", "db01,nosuch"}, nil, []string{`machine "nosuch" is not in inventory`, "db01, web01, app01"}},
		{"physical machine", []string{"--target", sim, "--machines", "phys01"}, nil, []string{`"phys01" is a physical server`}},
		{"machine twice", []string{"--target", sim, "--machines", "db01,db01"}, nil, []string{`"db01" named twice`}},
		{"bad azure mode", []string{"--target", sim}, map[string]string{harness.EnvAzureMode: "cloud"}, []string{harness.EnvAzureMode, `"cloud"`}},
		{"bad thumbprint", []string{"--target", sim}, map[string]string{harness.EnvVCenterURL: "https://vc/sdk", harness.EnvVCenterThumbprint: "AB"}, []string{"vsphere.thumbprint", harness.EnvVCenterThumbprint}},
		{"zero timeout", []string{"--target", sim, "--timeout", "0s"}, nil, []string{"--timeout 0s"}},
		{"unknown flag", []string{"--target", sim, "--destructiv"}, nil, []string{"unknown flag: --destructiv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range harness.EnvOverrides {
				t.Setenv(k, tt.env[k])
			}
			dir := filepath.Join(t.TempDir(), "out")
			var out, errOut bytes.Buffer
			code := execute(context.Background(), append([]string{"certify", "--report", dir}, tt.args...), &out, &errOut)
			if code != exitSetup {
				t.Errorf("exit %d, want %d\n%s", code, exitSetup, out.String())
			}
			for _, s := range tt.want {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a refused drill wrote %s (%v)", dir, err)
			}
		})
	}
	var out, errOut bytes.Buffer
	if code := execute(context.Background(), []string{"certify", "--help"}, &out, &errOut); code != exitOK {
		t.Fatalf("certify --help: exit %d", code)
	}
	for _, s := range append([]string{"--target", "--report", "--machines", "--destructive", "--timeout", "--seed", "--keep", "junit.xml", "certificate.json", "summary.html", "Exit codes"}, harness.EnvOverrides...) {
		if !strings.Contains(out.String(), s) {
			t.Errorf("certify --help lacks %s", s)
		}
	}
}

// TestCertifyTimeout: a drill that does not finish within --timeout fails
// (exit 1) with the reason, and still writes its reports.
func TestCertifyTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a world")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range harness.EnvOverrides {
		t.Setenv(k, "")
	}
	t.Setenv("V2A_WORKDIR", t.TempDir())
	dir := filepath.Join(t.TempDir(), "out")
	var out, errOut bytes.Buffer
	code := execute(context.Background(), []string{"certify", "--target", filepath.Join(root, "fixtures/targets/sim.yaml"), "--report", dir, "--timeout", "1s"}, &out, &errOut)
	if code != exitChecks {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, exitChecks, lastLines(out.String(), 20), errOut.String())
	}
	if !strings.Contains(errOut.String(), "timed out after 1s (--timeout)") {
		t.Errorf("stderr lacks the timeout: %s", errOut.String())
	}
	rep := readReports(t, dir)
	if rep.cert.Passed || rep.junit.Failures == 0 {
		t.Errorf("a timed-out drill: certificate passed=%t, junit failures %d", rep.cert.Passed, rep.junit.Failures)
	}
}

// TestCertifyJUnitShape: the JUnit document parses back as testsuites >
// testsuite > testcase, one test case per result in order, a <failure>
// with the evidence as its message for each failed one, the evidence as
// system-out, the counts right; markup in evidence is escaped in the XML
// and in the HTML summary.
func TestCertifyJUnitShape(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := &certifyRun{
		flags:    certifyFlags{target: "t.yaml", seed: 7, report: t.TempDir()},
		target:   &harness.Target{Name: "lab", World: "sim", VSphere: harness.VSphereTarget{Mode: "url", URL: "https://user:pw@vc.example/sdk?token=x"}, Storage: harness.StorageTarget{Mode: "auto"}},
		machines: []string{"db01"}, started: start, finished: start.Add(90 * time.Second),
		results: []harness.Result{
			{Check: "write-order", Subject: "db01@p1", Verdict: harness.OK, Detail: "k=5"},
			{Check: "image", Subject: "db01-test=db01@p1", Verdict: harness.Illegal, Evidence: `disk 0 differs <script>alert("x")</script> & more`},
			{Check: "drill", Subject: "steps", Verdict: harness.Unknown, Evidence: "stopped after step 3 of 9"},
		},
	}
	if err := c.writeReports(); err != nil {
		t.Fatal(err)
	}
	rep := readReports(t, c.flags.report)
	type tc struct{ Class, Name, Failure, Type, Out string }
	var got []tc
	for _, s := range rep.junit.Suites {
		for _, k := range s.Cases {
			x := tc{Class: k.ClassName, Name: k.Name, Out: k.SystemOut}
			if k.Failure != nil {
				x.Failure, x.Type = k.Failure.Message, k.Failure.Type
			}
			got = append(got, x)
		}
	}
	want := []tc{
		{"v2a.certify.write-order", "db01@p1", "", "", "write-order db01@p1 ok k=5"},
		{"v2a.certify.image", "db01-test=db01@p1", `disk 0 differs <script>alert("x")</script> & more`, "ILLEGAL", "image db01-test=db01@p1 ILLEGAL\nevidence: disk 0 differs <script>alert(\"x\")</script> & more"},
		{"v2a.certify.drill", "steps", "stopped after step 3 of 9", "unknown", "drill steps unknown\nevidence: stopped after step 3 of 9"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("test cases (-want +got):\n%s", d)
	}
	s := rep.junit.Suites[0]
	if rep.junit.Tests != 3 || rep.junit.Failures != 2 || s.Tests != 3 || s.Failures != 2 || s.Time != "90.000" || s.Timestamp != "2026-01-02T03:04:05" {
		t.Errorf("counts: document %d/%d, suite %d/%d time %s at %s", rep.junit.Tests, rep.junit.Failures, s.Tests, s.Failures, s.Time, s.Timestamp)
	}
	var doc struct {
		XMLName xml.Name
	}
	if err := xml.Unmarshal([]byte(strings.SplitN(rep.raw, "\n", 2)[1]), &doc); err != nil || doc.XMLName.Local != "testsuites" {
		t.Errorf("root element %q (%v), want testsuites", doc.XMLName.Local, err)
	}
	if strings.Contains(rep.html, "<script>") || !strings.Contains(rep.html, "&lt;script&gt;") {
		t.Errorf("the summary does not escape evidence")
	}
	if rep.cert.VCenterURL != "https://vc.example/sdk" || strings.Contains(rep.raw, "pw@") || strings.Contains(rep.raw, "token=") {
		t.Errorf("certificate vCenter URL %q: credentials or query leaked", rep.cert.VCenterURL)
	}
	if rep.cert.Passed || rep.cert.Checks != (CertTally{Passed: 1, Failed: 2}) || !strings.HasPrefix(rep.cert.Reason, "2 of 3 checks failed; first: image") {
		t.Errorf("certificate: passed=%t checks %+v reason %q", rep.cert.Passed, rep.cert.Checks, rep.cert.Reason)
	}
}

// TestCertifyCompleteness: the drill's own checks fail when a step did not
// run, a check the drill asks for judged nothing, or a machine was not
// booted by the test failover; they pass when all is there.
func TestCertifyCompleteness(t *testing.T) {
	s := &harness.Script{Directives: make([]harness.Directive, 9)}
	all := func(extra ...string) []harness.Result {
		var rs []harness.Result
		for _, k := range append([]string{"write-order", "invariant", "schedule", "image", "isolation", "plan-order", "leftovers"}, extra...) {
			rs = append(rs, harness.Result{Check: k, Verdict: harness.OK})
		}
		return rs
	}
	booted := []harness.DrillImage{{VM: "db01-test", Source: "db01"}, {VM: "web01-test", Source: "web01"}}
	tests := []struct {
		name        string
		steps       int
		results     []harness.Result
		images      []harness.DrillImage
		timedOut    bool
		destructive bool
		want        map[string]string // subject → evidence ("" ok)
	}{
		{"complete", 9, all(), booted, false, false, map[string]string{"steps": "", "coverage": "", "test-failover": ""}},
		{"stopped early", 4, all(), booted, false, false, map[string]string{"steps": "stopped after step 4 of 9 (see the script failure)", "coverage": "", "test-failover": ""}},
		{"timed out", 4, all(), booted, true, false, map[string]string{"steps": "timed out after 1m0s (--timeout) at step 4 of 9", "coverage": "", "test-failover": ""}},
		{"a check judged nothing", 9, all()[1:], booted, false, false, map[string]string{"steps": "", "coverage": "no result from write-order", "test-failover": ""}},
		{"destructive without round trip", 9, all(), booted, false, true, map[string]string{"steps": "", "coverage": "no result from round-trip, path", "test-failover": ""}},
		{"destructive complete", 9, all("round-trip", "path"), booted, false, true, map[string]string{"steps": "", "coverage": "", "test-failover": ""}},
		{"a machine not booted", 9, all(), booted[:1], false, false, map[string]string{"steps": "", "coverage": "", "test-failover": "not booted (or not hashed) by the test failover: web01"}},
		{"only the failover booted it", 9, all(), []harness.DrillImage{booted[0], {VM: "web01", Source: "web01"}}, false, true, map[string]string{"steps": "", "coverage": "no result from round-trip, path", "test-failover": "not booted (or not hashed) by the test failover: web01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &certifyRun{flags: certifyFlags{timeout: time.Minute, destructive: tt.destructive}, machines: []string{"db01", "web01"}, images: tt.images, timedOut: tt.timedOut}
			got := map[string]string{}
			for _, r := range c.completeness(s, tt.steps, tt.results) {
				if (r.Verdict == harness.OK) != (r.Evidence == "") {
					t.Errorf("%s: verdict %s with evidence %q", r.Subject, r.Verdict, r.Evidence)
				}
				got[r.Subject] = r.Evidence
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestStorageAccountAndURL: the certificate's storage account is the
// connection string's AccountName (else the blob endpoint's host), never
// its key; the vCenter URL loses credentials, query and fragment.
func TestStorageAccountAndURL(t *testing.T) {
	for conn, want := range map[string]string{
		"DefaultEndpointsProtocol=https;AccountName=prodbackup;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net": "prodbackup",
		"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=abc":                    "acct.blob.core.windows.net",
		"": "",
	} {
		if got := storageAccount(conn); got != want {
			t.Errorf("storageAccount(%q) = %q, want %q", conn, got, want)
		}
	}
	for in, want := range map[string]string{
		"https://administrator%40vsphere.local:pw@vc.example:8443/sdk?x=1#f": "https://vc.example:8443/sdk",
		"https://127.0.0.1:9999/sdk":                                         "https://127.0.0.1:9999/sdk",
		"":                                                                   "",
	} {
		if got := safeURL(in); got != want {
			t.Errorf("safeURL(%q) = %q, want %q", in, got, want)
		}
	}
}
