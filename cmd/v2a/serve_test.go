package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/harness"
)

// dashWorld is the world the dashboard tests serve: db01 protected with
// ten minutes of points, web01 not, and the networks a test failover needs.
var dashWorld = []string{
	"world seed=5 machines=(db01,web01) workload=bank",
	"deploy",
	"protect vms=(db01)",
	"wait state=protected timeout=1h",
	"run for=10m",
	"azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,db:10.0.2.0/24) production",
	"azure-network name=drill cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,db:10.0.2.0/24)",
	"target vm=db01 subnet=db ip=10.0.2.10",
}

// startDashboard builds a dashboard over lines with its clock stopped (the
// tests step it) and serves it; both stop at the test's end.
func startDashboard(t *testing.T, lines ...string) (*dashboard, *httptest.Server) {
	t.Helper()
	s, err := harness.LoadScript(script(t, lines...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := newDashboard(ctx, s, scriptSeed(s.Directives))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	d.paused = true
	go d.loop(ctx, 0)
	srv := httptest.NewServer(d.handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-d.stopped
	})
	return d, srv
}

// noRedirect is a client that shows a POST's 303 rather than follow it.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func post(t *testing.T, srv *httptest.Server, path string, form url.Values) (int, string) {
	t.Helper()
	resp, err := noRedirect.PostForm(srv.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

var (
	machinesTable = regexp.MustCompile(`(?s)<table id="machines">.*?<tbody>(.*?)</tbody>`)
	rowRe         = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellRe        = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	elapsedRe     = regexp.MustCompile(`<strong id="elapsed">(.*?)</strong>`)
)

// htmlMachines are the cells of the page's machines table.
func htmlMachines(t *testing.T, page string) [][]string {
	t.Helper()
	m := machinesTable.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no machines table in the page:\n%s", page)
	}
	var rows [][]string
	for _, r := range rowRe.FindAllStringSubmatch(m[1], -1) {
		var cells []string
		for _, c := range cellRe.FindAllStringSubmatch(r[1], -1) {
			cells = append(cells, html.UnescapeString(c[1]))
		}
		rows = append(rows, cells)
	}
	return rows
}

// statusRows are the rows of the `status` view's text, split into fields.
func statusRows(t *testing.T, d *dashboard) [][]string {
	t.Helper()
	var out string
	var err error
	if !d.do(func() { out, err = d.r.View("status") }) {
		t.Fatal("the dashboard stopped")
	}
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] { // past the header
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func elapsedOf(t *testing.T, page string) string {
	t.Helper()
	m := elapsedRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no virtual time in the page")
	}
	return html.UnescapeString(m[1])
}

func TestServeHandlers(t *testing.T) {
	d, srv := startDashboard(t, dashWorld...)

	// The machines table is the status view's numbers for the same state.
	page := get(t, srv, "/")
	got, want := htmlMachines(t, page), statusRows(t, d)
	if len(want) != 1 || want[0][0] != "db01" || want[0][1] != "protected" || want[0][7] == "0" {
		t.Fatalf("status view = %q, want db01 protected with crash points", want)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("machines table (-status +page):\n%s", diff)
	}
	if !strings.Contains(page, `id="act-test-failover"`) || !strings.Contains(page, `value="web01"`) {
		t.Errorf("the page has no portal buttons or machine choices")
	}

	// Bad requests are refused with why, and change nothing.
	before := get(t, srv, "/script.scn")
	bad := []struct {
		path string
		form url.Values
		why  string
	}{
		{"/act", url.Values{"action": {"test-failover"}}, "choose one or more machines"},
		{"/act", url.Values{"action": {"test-failover"}, "vm": {"db01) point=custom id=(x"}}, "bad machine name"},
		{"/act", url.Values{"action": {"test-failover"}, "vm": {"db01"}, "network": {"drill wait=5h"}}, "bad point"},
		{"/act", url.Values{"action": {"format-c"}, "vm": {"db01"}}, "unknown action"},
		{"/time", url.Values{"op": {"step"}, "by": {"-1m"}}, "want a duration"},
		{"/time", url.Values{"op": {"step"}, "by": {"soon"}}, "want a duration"},
		{"/time", url.Values{"op": {"speed"}, "speed": {"0"}}, "want simulated seconds"},
		{"/time", url.Values{"op": {"rewind"}}, "want pause, run, step or speed"},
		{"/command", url.Values{"line": {""}}, "want one script line"},
		{"/command", url.Values{"line": {"status\nrun for=9h"}}, "want one script line"},
		{"/command", url.Values{"line": {"world seed=9"}}, "built already"},
	}
	for _, b := range bad {
		code, body := post(t, srv, b.path, b.form)
		if code != http.StatusBadRequest || !strings.Contains(body, b.why) {
			t.Errorf("POST %s %v = %d %q, want 400 saying %q", b.path, b.form, code, body, b.why)
		}
	}
	if after := get(t, srv, "/script.scn"); after != before {
		t.Errorf("bad requests changed the session:\n%s", cmp.Diff(before, after))
	}

	// A step runs exactly that much virtual time.
	t0 := elapsedOf(t, get(t, srv, "/live"))
	if code, _ := post(t, srv, "/time", url.Values{"op": {"step"}, "by": {"1m"}}); code != http.StatusSeeOther {
		t.Fatalf("step: %d, want 303", code)
	}
	t1 := elapsedOf(t, get(t, srv, "/live"))
	if d0, d1 := parseElapsed(t, t0), parseElapsed(t, t1); d1-d0 != time.Minute {
		t.Errorf("step by=1m: %s -> %s", t0, t1)
	}

	// The test failover button starts a job; its steps show, and run on
	// as virtual time does.
	if code, body := post(t, srv, "/act", url.Values{"action": {"test-failover"}, "vm": {"db01"}, "point": {"latest"}, "network": {"drill"}}); code != http.StatusSeeOther {
		t.Fatalf("test failover: %d %s", code, body)
	}
	live := get(t, srv, "/live")
	if !strings.Contains(live, `id="job-job-1"`) || !strings.Contains(live, "test-failover db01") || !strings.Contains(live, "Prerequisites check") {
		t.Fatalf("no test failover job with its steps in /live:\n%s", live)
	}
	post(t, srv, "/time", url.Values{"op": {"step"}, "by": {"15m"}})
	var jobs []string
	d.do(func() {
		js, _ := d.r.FailoverJobs()
		for _, j := range js {
			jobs = append(jobs, j.ID+" "+string(j.State))
		}
	})
	if diff := cmp.Diff([]string{"job-1 succeeded"}, jobs); diff != "" {
		t.Errorf("failover jobs after 15m (-want +got):\n%s", diff)
	}
	if live := get(t, srv, "/live"); !strings.Contains(live, `test-failover db01: <span class="state-succeeded">succeeded</span>`) {
		t.Errorf("/live does not show job-1 succeeded")
	}

	// A command's error is shown, and counted as the script would count it.
	req, _ := http.NewRequest("POST", srv.URL+"/command", strings.NewReader("line=points+vm=nosuch"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Requested-With", "fetch")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("X-V2A-Output"), "error: ") {
		t.Errorf("command points vm=nosuch: %d output %q, want 204 and its error", resp.StatusCode, resp.Header.Get("X-V2A-Output"))
	}

	// The script page is the session: replayed, it gives the same trace.
	scn := get(t, srv, "/script.scn")
	for _, l := range []string{"world seed=5", "run for=1m0s", "test-failover vms=(db01) point=latest network=drill wait=0", "run for=15m0s", "points vm=nosuch"} {
		if !strings.Contains(scn, "\n"+l) {
			t.Errorf("script lacks %q:\n%s", l, scn)
		}
	}
	if sp := get(t, srv, "/script"); !strings.Contains(sp, "test-failover vms=(db01)") {
		t.Errorf("the script page lacks the test failover")
	}
	var sum string
	d.do(func() { sum = d.traceSum() })
	rs, err := harness.NewScript("session.scn", []byte(scn))
	if err != nil {
		t.Fatal(err)
	}
	seed := scriptSeed(rs.Directives)
	r := &harness.Runner{Seed: &seed}
	defer r.Close()
	r.RunScript(rs, nil)
	if r.Env == nil || r.Env.Trace.Sum() != sum {
		t.Errorf("the replayed session's trace differs from the live one's (%s)", sum)
	}
}

// A stopped dashboard answers 503, and runs nothing.
func TestServeStopped(t *testing.T) {
	d := &dashboard{reqs: make(chan func()), stopped: make(chan struct{})}
	close(d.stopped)
	srv := httptest.NewServer(d.handler())
	defer srv.Close()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/", ""}, {"GET", "/live", ""}, {"GET", "/script.scn", ""},
		{"POST", "/time", "op=pause"}, {"POST", "/command", "line=status"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s on a stopped dashboard: %d, want 503", c.method, c.path, resp.StatusCode)
		}
	}
}

func parseElapsed(t *testing.T, s string) time.Duration {
	t.Helper()
	var h, m int
	var sec float64
	if _, err := fmt.Sscanf(s, "+%d:%d:%f", &h, &m, &sec); err != nil {
		t.Fatalf("elapsed %q: %v", s, err)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second))
}

func TestActionLine(t *testing.T) {
	for _, c := range []struct {
		action  string
		vms     []string
		point   string
		network string
		want    string
	}{
		{"protect", []string{"app01"}, "", "", "protect vms=(app01)"},
		{"test-failover", []string{"db01", "web01"}, "latest-app", "drill", "test-failover vms=(db01,web01) point=latest-app network=drill wait=0"},
		{"test-failover", []string{"db01"}, "", "", "test-failover vms=(db01) point=latest network=drill wait=0"},
		{"cleanup", []string{"db01"}, "", "", "cleanup vms=(db01) wait=0"},
		{"failover", []string{"db01"}, "latest-processed", "", "failover vms=(db01) point=latest-processed wait=0"},
		{"commit", []string{"db01"}, "", "", "commit vms=(db01) wait=0"},
		{"reprotect", []string{"db01"}, "", "", "reprotect vms=(db01)"},
	} {
		got, err := actionLine(c.action, c.vms, c.point, c.network)
		if err != nil || got != c.want {
			t.Errorf("actionLine(%s, %v) = %q, %v; want %q", c.action, c.vms, got, err, c.want)
		}
	}
}

// The session's script keeps what a replay needs: the seed the run used,
// input blocks, and the errors the original script expected (and only
// those), and parses back to the same directives.
func TestSessionScript(t *testing.T) {
	orig := "world machines=(db01)\n\n" +
		"failover vms=(db01) point=latest\n----\nerror: failover: refused\n\n" +
		"status\n----\n\n" +
		"trace grep=alert\nsome input\n----\n"
	s, err := harness.NewScript("o.scn", []byte(orig))
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{"world sim seed=9\n", "error: failover: refused: a test failover runs\n", "error: status: unexpected\n", "nothing\n"}
	var blocks []string
	for i, d := range s.Directives {
		blocks = append(blocks, directiveBlock(d, 9, outs[i]))
	}
	want := []string{
		"world machines=db01 seed=9", // one value: the same to the parser
		"failover vms=db01 point=latest\n----\nerror: failover: refused: a test failover runs",
		"status",
		"trace grep=alert\nsome input\n----",
	}
	if diff := cmp.Diff(want, blocks); diff != "" {
		t.Fatalf("blocks (-want +got):\n%s", diff)
	}
	back, err := harness.NewScript("session.scn", []byte(scriptText(append(blocks, "run for=1m0s"))))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range back.Directives {
		got = append(got, d.Cmd+"|"+d.Input+"|"+d.Expected)
	}
	wantBack := []string{"world||", "failover||error: failover: refused: a test failover runs", "status||", "trace|some input|", "run||"}
	if diff := cmp.Diff(wantBack, got); diff != "" {
		t.Errorf("the script parsed back (-want +got):\n%s", diff)
	}
}

// TestServeGroupRounds: the dashboard draws each group's last rounds with
// their phases, and what it draws is what `groups detail=rounds` prints
// (every phase's times, since the round's start); before a deployment it
// says why there are none.
func TestServeGroupRounds(t *testing.T) {
	d, srv := startDashboard(t, "world seed=5 machines=(web01,app01) workload=bank", "deploy",
		"protect-group group=apps vms=(web01,app01)", "wait state=protected timeout=1h", "run for=11m")
	page := get(t, srv, "/live")
	var out string
	var err error
	if !d.do(func() { out, err = d.r.View("groups detail=rounds") }) {
		t.Fatal("the dashboard stopped")
	}
	if err != nil {
		t.Fatal(err)
	}
	// The view's phases, per round: "tag name from..to ok".
	var want []string
	for _, m := range regexp.MustCompile(`(?m)^  round (\S+) .*\n    phases (.*)$`).FindAllStringSubmatch(out, -1) {
		for _, p := range regexp.MustCompile(`(\w+) (\S+)\.\.(\S+) (ok|failed)`).FindAllStringSubmatch(m[2], -1) {
			want = append(want, fmt.Sprintf("%s %s %s..%s %s", m[1], p[1], p[2], p[3], p[4]))
		}
	}
	var got []string
	for _, row := range regexp.MustCompile(`(?s)<g class="round-row \S+" data-tag="([^"]+)"(.*?)</g>`).FindAllStringSubmatch(page, -1) {
		for _, p := range regexp.MustCompile(`data-phase="([^"]+)" data-from="([^"]+)" data-to="([^"]+)" data-ok="(true|false)"`).FindAllStringSubmatch(row[2], -1) {
			ok := "ok"
			if p[4] == "false" {
				ok = "failed"
			}
			got = append(got, fmt.Sprintf("%s %s %s..%s %s", row[1], p[1], p[2], p[3], ok))
		}
	}
	if len(want) < 4 {
		t.Fatalf("the groups view has %d phases to compare:\n%s", len(want), out)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("phases drawn -groups view +dashboard:\n%s", diff)
	}
	if !strings.Contains(page, `<div class="group-rounds" data-group="apps">`) || !strings.Contains(get(t, srv, "/"), ".phase.prepare") {
		t.Error("the rounds are not in their section, or the page does not style them")
	}

	_, before := startDashboard(t, "world seed=5 machines=(web01) workload=bank")
	if page := get(t, before, "/live"); !strings.Contains(page, "no replication deployed yet") {
		t.Error("before a deployment the rounds section does not say why it is empty")
	}
}
