package main

// The reports of `v2a certify`: JUnit XML, the drill certificate (JSON) and
// a one-page HTML summary.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/impl/proto"
)

// Report file names in --report DIR.
const (
	reportJUnit       = "junit.xml"
	reportCertificate = "certificate.json"
	reportHTML        = "summary.html"
	reportLog         = "drill.log"
)

// junitSuites is the JUnit XML document: one suite, one test case per
// check result.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	ClassName string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// Certificate is the drill certificate (certificate.json). It holds no
// secret: the vCenter URL without credentials, the storage account's name
// without its key.
type Certificate struct {
	Format      int    `json:"format"` // 1
	Passed      bool   `json:"passed"`
	Reason      string `json:"reason,omitempty"`
	Target      string `json:"target"`
	TargetFile  string `json:"targetFile"`
	World       string `json:"world"`
	WorldNote   string `json:"worldNote"`
	VSphereMode string `json:"vsphereMode"`
	VCenterURL  string `json:"vcenterURL,omitempty"`
	StorageMode string `json:"storageMode"`
	// StorageAccount is the account name of the connection string.
	StorageAccount string `json:"storageAccount"`
	// StoragePrefix is the prefix of the drill's containers (kept only
	// with --keep).
	StoragePrefix string `json:"storagePrefix,omitempty"`
	StorageKept   bool   `json:"storageKept"`
	AzureMode     string `json:"azureMode"`
	AzureNote     string `json:"azureNote,omitempty"`
	// FromEnvironment names the variables that overrode the target file.
	FromEnvironment []string `json:"fromEnvironment,omitempty"`
	Machines        []string `json:"machines"`
	MachinesChosen  string   `json:"machinesChosen"`
	Destructive     bool     `json:"destructive"`
	// Points are the recovery point ids in storage at the drill's end, by
	// machine, in log order.
	Points map[string][]string `json:"points"`
	// Images are the VMs the failovers booted, with their disks' SHA-256.
	Images []harness.DrillImage `json:"images"`
	// TestFailover is the test failover job, with its RTO (virtual time).
	TestFailover *harness.DrillJob  `json:"testFailover,omitempty"`
	Jobs         []harness.DrillJob `json:"jobs"`
	// Leftovers are the leftovers check's results.
	Leftovers []CertCheck `json:"leftovers"`
	Checks    CertTally   `json:"checks"`
	Failed    []CertCheck `json:"failed,omitempty"`
	Seed      uint64      `json:"seed"`
	// TraceSHA256 is the run's trace hash (the same seed and the same
	// services give the same drill; real services may not).
	TraceSHA256    string    `json:"traceSHA256"`
	VirtualElapsed string    `json:"virtualElapsed"`
	Version        string    `json:"version"`
	Commit         string    `json:"commit"`
	Started        time.Time `json:"started"`
	Finished       time.Time `json:"finished"`
}

// CertCheck is one check result.
type CertCheck struct {
	Check    string `json:"check"`
	Subject  string `json:"subject"`
	Verdict  string `json:"verdict"`
	Detail   string `json:"detail,omitempty"`
	Evidence string `json:"evidence,omitempty"`
}

// CertTally counts the checks.
type CertTally struct {
	Passed int `json:"passed"`
	Failed int `json:"failed"`
}

func certCheck(r harness.Result) CertCheck {
	return CertCheck{Check: r.Check, Subject: r.Subject, Verdict: string(r.Verdict), Detail: r.Detail, Evidence: r.Evidence}
}

func (c *certifyRun) certificate() Certificate {
	t := c.target
	version, commit := buildVersion()
	cert := Certificate{
		Format: 1, Target: t.Name, TargetFile: c.flags.target, World: t.World,
		WorldNote:   "the components run on the simulator's scheduler (virtual time) with simulated guests; vCenter and storage are reached through the production adapters",
		VSphereMode: t.VSphere.Mode, StorageMode: t.Storage.Mode, AzureMode: t.Azure.Mode,
		AzureNote: azureNote(t, c.overrides), FromEnvironment: c.overrides,
		Machines: c.machines, MachinesChosen: c.chosen, Destructive: c.flags.destructive,
		Points: c.facts.Points, Images: c.images, Jobs: c.facts.Jobs,
		Seed: c.flags.seed, TraceSHA256: c.facts.TraceSHA256, VirtualElapsed: c.facts.Elapsed.String(),
		Version: version, Commit: commit, Started: c.started, Finished: c.finished,
		StorageKept: c.flags.keep,
	}
	if cert.AzureMode == "" {
		cert.AzureMode = "sim"
	}
	if t.VSphere.Mode == "url" {
		cert.VCenterURL = safeURL(t.VSphere.URL)
	}
	switch t.Storage.Mode {
	case "external":
		cert.StorageAccount = storageAccount(os.Getenv(t.Storage.ConnectionStringEnv))
	default:
		cert.StorageAccount = "devstoreaccount1 (an Azurite the harness started)"
	}
	if c.flags.keep {
		cert.StoragePrefix = c.prefix
	}
	if cert.Points == nil {
		cert.Points = map[string][]string{}
	}
	for i := range c.facts.Jobs {
		if j := c.facts.Jobs[i]; j.Op == proto.OpTestFailover && cert.TestFailover == nil {
			cert.TestFailover = &j
		}
	}
	for _, r := range c.results {
		if r.Check == "leftovers" {
			cert.Leftovers = append(cert.Leftovers, certCheck(r))
		}
		if r.Verdict == harness.OK {
			cert.Checks.Passed++
		} else {
			cert.Checks.Failed++
			cert.Failed = append(cert.Failed, certCheck(r))
		}
	}
	cert.Passed = cert.Checks.Failed == 0 && !c.interrupted
	cert.Reason = c.reason()
	if c.interrupted && cert.Reason == "" {
		cert.Reason = "interrupted"
	}
	return cert
}

func (c *certifyRun) junit() junitSuites {
	dur := fmt.Sprintf("%.3f", c.finished.Sub(c.started).Seconds())
	s := junitSuite{Name: "v2a certify " + c.target.Name, Time: dur, Timestamp: c.started.Format("2006-01-02T15:04:05"),
		Properties: []junitProperty{
			{"target", c.target.Name}, {"targetFile", c.flags.target}, {"machines", strings.Join(c.machines, ",")},
			{"destructive", fmt.Sprint(c.flags.destructive)}, {"seed", fmt.Sprint(c.flags.seed)},
			{"traceSHA256", c.facts.TraceSHA256},
		}}
	for _, r := range c.results {
		tc := junitCase{ClassName: "v2a.certify." + r.Check, Name: r.Subject, Time: "0"}
		out := strings.TrimSpace(r.Check + " " + r.Subject + " " + string(r.Verdict) + " " + r.Detail)
		if r.Evidence != "" {
			out += "\nevidence: " + r.Evidence
		}
		tc.SystemOut = out
		if r.Verdict != harness.OK {
			msg := r.Evidence
			if msg == "" {
				msg = string(r.Verdict)
			}
			tc.Failure = &junitFailure{Message: msg, Type: string(r.Verdict), Text: out}
			s.Failures++
		}
		s.Cases = append(s.Cases, tc)
	}
	s.Tests = len(s.Cases)
	return junitSuites{Name: "v2a certify", Tests: s.Tests, Failures: s.Failures, Time: dur, Suites: []junitSuite{s}}
}

// writeReports writes the reports, each whole or not at all.
func (c *certifyRun) writeReports() error {
	cert := c.certificate()
	j, err := json.MarshalIndent(cert, "", "  ")
	if err != nil {
		return err
	}
	x, err := xml.MarshalIndent(c.junit(), "", "  ")
	if err != nil {
		return err
	}
	var h bytes.Buffer
	if err := summaryTemplate.Execute(&h, summaryData(cert, c.results)); err != nil {
		return fmt.Errorf("certify: summary: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{reportCertificate, append(j, '\n')},
		{reportJUnit, append([]byte(xml.Header), append(x, '\n')...)},
		{reportHTML, h.Bytes()},
		{reportLog, []byte(c.log.String())},
	} {
		if err := writeFileAtomic(filepath.Join(c.flags.report, f.name), f.data); err != nil {
			return fmt.Errorf("certify: --report: %w", err)
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".v2a-report-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// summaryRow is one check kind in the HTML summary.
type summaryRow struct {
	Check          string
	Passed, Failed int
}

type summaryView struct {
	Cert   Certificate
	Rows   []summaryRow
	Points map[string]int
	RTO    string
}

func summaryData(cert Certificate, rs []harness.Result) summaryView {
	by := map[string]*summaryRow{}
	var order []string
	for _, r := range rs {
		row := by[r.Check]
		if row == nil {
			row = &summaryRow{Check: r.Check}
			by[r.Check] = row
			order = append(order, r.Check)
		}
		if r.Verdict == harness.OK {
			row.Passed++
		} else {
			row.Failed++
		}
	}
	v := summaryView{Cert: cert, Points: map[string]int{}}
	for _, k := range order {
		v.Rows = append(v.Rows, *by[k])
	}
	ms := make([]string, 0, len(cert.Points))
	for m := range cert.Points {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	for _, m := range ms {
		v.Points[m] = len(cert.Points[m])
	}
	if cert.TestFailover != nil {
		v.RTO = cert.TestFailover.RTO
	}
	return v
}

var summaryTemplate = template.Must(template.New("summary").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>v2a certify: {{.Cert.Target}} — {{if .Cert.Passed}}passed{{else}}FAILED{{end}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}
h1{font-size:1.4em}.ok{color:#176f2c}.bad{color:#b3261e}
.verdict{font-size:1.2em;padding:.5em 1em;border-radius:4px;display:inline-block}
.verdict.ok{background:#e3f4e6}.verdict.bad{background:#fbe4e2}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.note{background:#fff6d6;padding:.4em .8em;border-left:4px solid #e0b000}
</style></head><body>
<h1>v2a DR drill certificate: {{.Cert.Target}}</h1>
<p class="verdict {{if .Cert.Passed}}ok{{else}}bad{{end}}">{{if .Cert.Passed}}PASSED: every check passed ({{.Cert.Checks.Passed}}){{else}}FAILED: {{.Cert.Reason}}{{end}}</p>
{{if .Cert.AzureNote}}<p class="note">{{.Cert.AzureNote}}</p>{{end}}
<p class="note">{{.Cert.WorldNote}}</p>
<table>
<tr><th>Target</th><td>{{.Cert.Target}} (<code>{{.Cert.TargetFile}}</code>)</td></tr>
<tr><th>vCenter</th><td>{{.Cert.VSphereMode}} <code>{{.Cert.VCenterURL}}</code></td></tr>
<tr><th>Storage</th><td>{{.Cert.StorageMode}}, account <code>{{.Cert.StorageAccount}}</code></td></tr>
<tr><th>Azure</th><td>{{.Cert.AzureMode}}</td></tr>
<tr><th>From the environment</th><td>{{range .Cert.FromEnvironment}}<code>{{.}}</code> {{else}}nothing{{end}}</td></tr>
<tr><th>Machines</th><td>{{range .Cert.Machines}}{{.}} {{end}}({{.Cert.MachinesChosen}})</td></tr>
<tr><th>Destructive</th><td>{{.Cert.Destructive}}</td></tr>
<tr><th>Test failover RTO</th><td>{{if .RTO}}{{.RTO}} (virtual time){{else}}none{{end}}</td></tr>
<tr><th>Started / finished</th><td>{{.Cert.Started.Format "2006-01-02 15:04:05Z"}} / {{.Cert.Finished.Format "2006-01-02 15:04:05Z"}} ({{.Cert.VirtualElapsed}} of virtual time)</td></tr>
<tr><th>Seed, trace</th><td>{{.Cert.Seed}}, <code>{{.Cert.TraceSHA256}}</code></td></tr>
<tr><th>v2a</th><td>{{.Cert.Version}} <code>{{.Cert.Commit}}</code></td></tr>
</table>
<h2>Checks</h2>
<table><tr><th>Check</th><th>Passed</th><th>Failed</th></tr>
{{range .Rows}}<tr><td>{{.Check}}</td><td class="ok">{{.Passed}}</td><td{{if .Failed}} class="bad"{{end}}>{{.Failed}}</td></tr>
{{end}}</table>
{{if .Cert.Failed}}<h2 class="bad">Failures</h2>
<table><tr><th>Check</th><th>Subject</th><th>Verdict</th><th>Evidence</th></tr>
{{range .Cert.Failed}}<tr><td>{{.Check}}</td><td>{{.Subject}}</td><td>{{.Verdict}}</td><td class="mono">{{.Evidence}}</td></tr>
{{end}}</table>{{end}}
<h2>Recovery points</h2>
<table><tr><th>Machine</th><th>Points in storage</th></tr>
{{range $m, $n := .Points}}<tr><td>{{$m}}</td><td>{{$n}}</td></tr>
{{end}}</table>
<h2>Booted images</h2>
<table><tr><th>VM</th><th>Source @ point</th><th>Job</th><th>Disk SHA-256</th></tr>
{{range .Cert.Images}}<tr><td>{{.VM}}</td><td>{{.Source}} @ {{.Point}}</td><td>{{.Job}}</td><td class="mono">{{range .SHA256}}{{.}}<br>{{end}}</td></tr>
{{else}}<tr><td colspan="4">none</td></tr>
{{end}}</table>
<h2>Leftovers after cleanup</h2>
<table><tr><th>Job</th><th>Verdict</th><th>Detail</th></tr>
{{range .Cert.Leftovers}}<tr><td>{{.Subject}}</td><td>{{.Verdict}}</td><td>{{.Detail}}{{.Evidence}}</td></tr>
{{else}}<tr><td colspan="3">none judged</td></tr>
{{end}}</table>
</body></html>
`))
