package scenarios

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/harness/browser"
	"github.com/v2a-dr/v2a/harness/report"
)

// reportScenario is the scenario whose run TestScenarios also reports.
const reportScenario = "demo.scn"

// view runs a view command on the run's world and returns its output.
func view(t *testing.T, r *harness.Runner, cmd string, args ...string) string {
	t.Helper()
	d := harness.Directive{Pos: "report_test", Cmd: cmd}
	for i := 0; i+1 < len(args); i += 2 {
		d.Args = append(d.Args, datadriven.CmdArg{Key: args[i], Vals: []string{args[i+1]}})
	}
	out := r.Exec(d)
	if strings.Contains(out, "error: ") {
		t.Fatalf("%s: %s", cmd, out)
	}
	return out
}

// statusRow is a machine's row of the status view.
type statusRow struct{ crash, app, rpo string }

func statusRows(t *testing.T, out string) map[string]statusRow {
	t.Helper()
	rows := map[string]statusRow{}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 10 {
			t.Fatalf("status row %q: want 10 columns", l)
		}
		rows[f[0]] = statusRow{crash: f[7], app: f[8], rpo: f[9]}
	}
	return rows
}

var (
	figMachine = regexp.MustCompile(`<figure class="machine" data-machine="([^"]+)" data-live-points="(\d+)" data-crash="(\d+)" data-app="(\d+)" data-rpo-final="([^"]+)" data-rpo-max="([^"]+)"`)
	figGroup   = regexp.MustCompile(`<figure class="group" data-group="([^"]+)" data-rounds="(\d+)" data-committed="(\d+)" data-revoked="(\d+)" data-points="(\d+)"`)
	pointsHead = regexp.MustCompile(`^(\S+): (\d+) points,`)
	groupHead  = regexp.MustCompile(`(?m)^group (\S+): .*\n  points (\d+);[^\n]*\n  rounds (\d+): committed (\d+) \(crash \d+, app \d+\), revoked (\d+)`)
	// viewRound is a round of `groups detail=rounds`, viewPhase one of
	// its phases.
	viewRound = regexp.MustCompile(`(?m)^  round (\S+) (\S+) (\S+), started [^\n]*\n    phases ([^\n]*)\n    holds ([^\n]*)$`)
	viewPhase = regexp.MustCompile(`(\w+) (\S+)\.\.(\S+) (ok|failed)`)
	// figRound is a row of a report's phase chart; figPhase and figHold
	// its phases and holds.
	figRound = regexp.MustCompile(`<g class="round-row (\S+)" data-tag="([^"]+)"(?s:(.*?))</g>`)
	figPhase = regexp.MustCompile(`data-phase="([^"]+)" data-from="([^"]+)" data-to="([^"]+)" data-ok="(true|false)"`)
	figHold  = regexp.MustCompile(`data-machine="([^"]+)" data-hold="([^"]+)"`)
)

// roundsOf reads the rounds of a `groups detail=rounds` view: per tag, its
// outcome, phases and known holds as one line each.
func roundsOf(groupsOut string) map[string][]string {
	out := map[string][]string{}
	for _, m := range viewRound.FindAllStringSubmatch(groupsOut, -1) {
		lines := []string{"outcome " + m[3]}
		for _, p := range viewPhase.FindAllStringSubmatch(m[4], -1) {
			lines = append(lines, fmt.Sprintf("phase %s %s..%s %s", p[1], p[2], p[3], p[4]))
		}
		for _, h := range strings.Split(m[5], ", ") {
			if machine, held, ok := strings.Cut(h, " "); ok && held != "-" {
				lines = append(lines, "hold "+machine+" "+held)
			}
		}
		out[m[1]] = lines
	}
	return out
}

// reportRoundsOf reads the rows of a report's phase charts as roundsOf
// reads the view.
func reportRoundsOf(html string) map[string][]string {
	out := map[string][]string{}
	for _, m := range figRound.FindAllStringSubmatch(html, -1) {
		lines := []string{"outcome " + m[1]}
		for _, p := range figPhase.FindAllStringSubmatch(m[3], -1) {
			ok := "ok"
			if p[4] == "false" {
				ok = "failed"
			}
			lines = append(lines, fmt.Sprintf("phase %s %s..%s %s", p[1], p[2], p[3], ok))
		}
		for _, h := range figHold.FindAllStringSubmatch(m[3], -1) {
			lines = append(lines, "hold "+h[1]+" "+h[2])
		}
		out[m[2]] = lines
	}
	return out
}

// checkReport judges the demo's report three ways: the numbers it carries
// are the views' (status, points, groups) for the same run; rendering is
// deterministic; and a browser shows them (the marks of the points, the
// RPO labels), leaving a screenshot.
func checkReport(t *testing.T, r *harness.Runner, rec *harness.ReportRecorder) {
	meta := harness.ReportMeta{Scenario: "scenarios/" + reportScenario, Reproduce: "v2a run scenarios/" + reportScenario + " --seed 42"}
	run, err := r.Report(rec, meta)
	if err != nil {
		t.Fatal(err)
	}
	var page, again bytes.Buffer
	if err := report.Render(&page, run); err != nil {
		t.Fatal(err)
	}
	run2, err := r.Report(rec, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := report.Render(&again, run2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(page.Bytes(), again.Bytes()) {
		t.Fatal("two reports of the same run differ")
	}
	html := page.String()
	for _, bad := range []string{"http://", "https://", "<script", "<link"} {
		if strings.Contains(html, bad) {
			t.Errorf("the report is not self-contained: it has %q", bad)
		}
	}
	if !strings.Contains(html, run.TraceSHA256) || !strings.Contains(html, meta.Reproduce) {
		t.Error("the report lacks the trace hash or the reproduce line")
	}

	// The numbers, against the views.
	statusOut := view(t, r, "status")
	pointsOut := map[string]string{}
	for name := range statusRows(t, statusOut) {
		pointsOut[name] = view(t, r, "points", "vm", name, "last", "0")
	}
	groupsOut := view(t, r, "groups", "detail", "rounds")
	for _, m := range reportMismatches(t, html, statusOut, pointsOut, groupsOut) {
		t.Error(m)
	}
	status := statusRows(t, statusOut)
	livePoints := map[string]int{}
	for _, m := range figMachine.FindAllStringSubmatch(html, -1) {
		livePoints[m[1]], _ = strconv.Atoi(m[2])
	}
	if !strings.Contains(html, `data-kind="failover"`) || !strings.Contains(html, `data-kind="test-failover"`) {
		t.Error("the report has no failover or test-failover job")
	}

	// In a browser: what is drawn is what the views say.
	dir := browser.OutDir(t)
	path, err := filepath.Abs(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	b := browser.ForTest(t, browser.Options{Width: 1100, Height: 900})
	if err := b.Navigate("file://" + path); err != nil {
		t.Fatal(err)
	}
	for name, want := range livePoints {
		sel := fmt.Sprintf(`figure.machine[data-machine=%q]`, name)
		n, err := browser.Eval[int](b, fmt.Sprintf(`document.querySelectorAll('%s circle.pt.live').length`, sel))
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: %d live point marks drawn, the points view has %d", name, n, want)
		}
		label, err := browser.Eval[string](b, fmt.Sprintf(`document.querySelector('%s text.rpo-final').textContent`, sel))
		if err != nil {
			t.Fatal(err)
		}
		if want := "end " + status[name].rpo; label != want {
			t.Errorf("%s: RPO label %q, the status view's rpo gives %q", name, label, want)
		}
		cell, err := browser.Eval[string](b, fmt.Sprintf(`document.querySelector('table.machines tr[data-machine=%q] td[data-col="rpo"]').textContent`, name))
		if err != nil {
			t.Fatal(err)
		}
		if cell != status[name].rpo {
			t.Errorf("%s: RPO cell %q, status view %q", name, cell, status[name].rpo)
		}
		maxLabel, err := browser.Eval[string](b, fmt.Sprintf(`document.querySelector('%s text.rpo-max').textContent`, sel))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(maxLabel, "max ") || strings.HasPrefix(maxLabel, "max -") {
			t.Errorf("%s: RPO max label %q: no maximum drawn", name, maxLabel)
		}
	}
	viewPhases := 0
	for _, lines := range roundsOf(groupsOut) {
		for _, l := range lines {
			if strings.HasPrefix(l, "phase ") {
				viewPhases++
			}
		}
	}
	drawn, err := browser.Eval[int](b, `document.querySelectorAll('figure.group g.round-row rect.phase').length`)
	if err != nil {
		t.Fatal(err)
	}
	if drawn != viewPhases || drawn == 0 {
		t.Errorf("%d round phases drawn, the groups view lists %d", drawn, viewPhases)
	}
	shown, err := browser.Eval[bool](b, `(() => { const r = document.querySelector('figure.machine svg').getBoundingClientRect(); return r.width > 500 && r.height > 100; })()`)
	if err != nil || !shown {
		t.Errorf("the RPO chart is not laid out (%v)", err)
	}
	if err := b.Screenshot(filepath.Join(dir, "report.png")); err != nil {
		t.Fatal(err)
	}
}

// reportMismatches compares the numbers a report page carries with the
// views' outputs: per machine the status view's crash, app and rpo and
// the points view's count of live points; per group the groups view's
// points and rounds (total, committed, revoked); and per round the
// server keeps (`groups detail=rounds`) its outcome, phases and holds
// against the report's phase chart, which draws the same rounds. Nothing
// to compare is a mismatch too.
func reportMismatches(t *testing.T, html, statusOut string, pointsOut map[string]string, groupsOut string) []string {
	t.Helper()
	var out []string
	status := statusRows(t, statusOut)
	ms := figMachine.FindAllStringSubmatch(html, -1)
	if len(ms) == 0 || len(ms) != len(status) {
		out = append(out, fmt.Sprintf("the report shows %d machines, the status view %d", len(ms), len(status)))
	}
	for _, m := range ms {
		name := m[1]
		st, ok := status[name]
		if !ok {
			out = append(out, fmt.Sprintf("the report shows %s, the status view does not", name))
			continue
		}
		if m[3] != st.crash || m[4] != st.app || m[5] != st.rpo {
			out = append(out, fmt.Sprintf("%s: report crash=%s app=%s rpo=%s; status view crash=%s app=%s rpo=%s", name, m[3], m[4], m[5], st.crash, st.app, st.rpo))
		}
		ph := pointsHead.FindStringSubmatch(pointsOut[name])
		if ph == nil || ph[2] != m[2] {
			out = append(out, fmt.Sprintf("%s: report %s live points; points view %v", name, m[2], ph))
		}
	}
	groups := groupHead.FindAllStringSubmatch(groupsOut, -1)
	gs := figGroup.FindAllStringSubmatch(html, -1)
	if len(gs) == 0 || len(gs) != len(groups) {
		out = append(out, fmt.Sprintf("the report shows %d groups, the groups view %d", len(gs), len(groups)))
		return out
	}
	for i, g := range gs {
		v := groups[i]
		if g[1] != v[1] || g[2] != v[3] || g[3] != v[4] || g[4] != v[5] || g[5] != v[2] {
			out = append(out, fmt.Sprintf("group: report %v; groups view %v", g[1:], v[1:]))
		}
	}
	viewRounds, drawn := roundsOf(groupsOut), reportRoundsOf(html)
	phases := 0
	for tag, want := range viewRounds {
		got, ok := drawn[tag]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("round %s: in the groups view, not drawn", tag))
		case strings.Join(got, "; ") != strings.Join(want, "; "):
			out = append(out, fmt.Sprintf("round %s: report %q; groups view %q", tag, got, want))
		}
		for _, l := range want {
			if strings.HasPrefix(l, "phase ") {
				phases++
			}
		}
	}
	for tag := range drawn {
		if _, ok := viewRounds[tag]; !ok {
			out = append(out, fmt.Sprintf("round %s: drawn, not in the groups view", tag))
		}
	}
	if phases == 0 {
		out = append(out, fmt.Sprintf("no round phase to compare (%d rounds in the groups view)", len(viewRounds)))
	}
	return out
}

// TestReportMismatches is the comparison's control, on views as they
// print and a page as Render writes it: the same numbers pass, and each
// number changed on either side is caught.
func TestReportMismatches(t *testing.T) {
	statusOut := "machine    state           mode      written       sent  ratio codec  crash   app       rpo\n" +
		"db01       protected       data      34.6MiB    41.7MiB   1.49 s2        13     1        2s\n"
	points := map[string]string{"db01": "db01: 14 points, gen 1, synced=true, applied item 75, log seq 8875\n"}
	groupsOut := "group apps: protected, master web01, members app01,web01\n  points 17; latest crash x, latest app y; rpo 2s\n  rounds 21: committed 20 (crash 18, app 2), revoked 1\n" +
		"  round apps:c:1 crash committed, started +00:10:00.000000, reported +00:10:00.004500\n" +
		"    phases begin 0s..1ms ok, prepare 1ms..2.5ms ok, commit 2.5ms..3ms ok, resume 3ms..4ms ok\n" +
		"    holds app01 2ms, web01 -\n"
	html := `<figure class="machine" data-machine="db01" data-live-points="14" data-crash="13" data-app="1" data-rpo-final="2s" data-rpo-max="5m0s" data-samples="60">` +
		`<figure class="group" data-group="apps" data-rounds="21" data-committed="20" data-revoked="1" data-points="17">` +
		`<g class="round-row committed" data-tag="apps:c:1" data-kind="crash" data-outcome="committed"><title>t</title>` +
		`<rect class="phase begin" x="1" y="1" width="1" height="10" data-phase="begin" data-from="0s" data-to="1ms" data-ok="true"><title>x</title></rect>` +
		`<rect class="phase prepare" x="1" y="1" width="1" height="10" data-phase="prepare" data-from="1ms" data-to="2.5ms" data-ok="true"><title>x</title></rect>` +
		`<rect class="phase commit" x="1" y="1" width="1" height="10" data-phase="commit" data-from="2.5ms" data-to="3ms" data-ok="true"><title>x</title></rect>` +
		`<rect class="phase resume" x="1" y="1" width="1" height="10" data-phase="resume" data-from="3ms" data-to="4ms" data-ok="true"><title>x</title></rect>` +
		`<rect class="hold" x="1" y="1" width="1" height="4" data-machine="app01" data-hold="2ms"><title>x</title></rect></g>`
	if ms := reportMismatches(t, html, statusOut, points, groupsOut); len(ms) != 0 {
		t.Fatalf("the same numbers mismatch: %v", ms)
	}
	for _, c := range []struct{ name, html, status, points, groups string }{
		{"live points", strings.Replace(html, `data-live-points="14"`, `data-live-points="13"`, 1), statusOut, points["db01"], groupsOut},
		{"crash", strings.Replace(html, `data-crash="13"`, `data-crash="12"`, 1), statusOut, points["db01"], groupsOut},
		{"rpo", html, strings.Replace(statusOut, "  2s", "  3s", 1), points["db01"], groupsOut},
		{"points view", html, statusOut, strings.Replace(points["db01"], "14 points", "15 points", 1), groupsOut},
		{"rounds", strings.Replace(html, `data-rounds="21"`, `data-rounds="22"`, 1), statusOut, points["db01"], groupsOut},
		{"revoked", html, statusOut, points["db01"], strings.Replace(groupsOut, "revoked 1", "revoked 2", 1)},
		{"group points", html, statusOut, points["db01"], strings.Replace(groupsOut, "points 17", "points 16", 1)},
		{"no group", html, statusOut, points["db01"], "no replication groups\n"},
		{"a phase's end in the view", html, statusOut, points["db01"], strings.Replace(groupsOut, "prepare 1ms..2.5ms", "prepare 1ms..2.6ms", 1)},
		{"a phase's start in the report", strings.Replace(html, `data-phase="commit" data-from="2.5ms"`, `data-phase="commit" data-from="2.4ms"`, 1), statusOut, points["db01"], groupsOut},
		{"a phase acknowledged", strings.Replace(html, `data-phase="resume" data-from="3ms" data-to="4ms" data-ok="true"`, `data-phase="resume" data-from="3ms" data-to="4ms" data-ok="false"`, 1), statusOut, points["db01"], groupsOut},
		{"a hold", strings.Replace(html, `data-hold="2ms"`, `data-hold="3ms"`, 1), statusOut, points["db01"], groupsOut},
		{"a round not drawn", strings.Replace(html, `data-tag="apps:c:1"`, `data-tag="apps:c:2"`, 1), statusOut, points["db01"], groupsOut},
		{"no phases", html, statusOut, points["db01"], strings.Replace(groupsOut, "begin 0s..1ms ok, prepare 1ms..2.5ms ok, commit 2.5ms..3ms ok, resume 3ms..4ms ok", "- (the master reported none)", 1)},
		{"no machine", strings.Replace(html, `class="machine"`, `class="other"`, 1), statusOut, points["db01"], groupsOut},
	} {
		t.Run(c.name, func(t *testing.T) {
			if ms := reportMismatches(t, c.html, c.status, map[string]string{"db01": c.points}, c.groups); len(ms) == 0 {
				t.Error("not caught")
			}
		})
	}
}
