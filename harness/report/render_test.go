package report

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

func sampleRun() *Run {
	m := Machine{Name: "db01", State: "protected", Policy: "default", Threshold: 10 * time.Minute, Crash: 2, App: 1}
	for i := range 30 {
		m.RPO = append(m.RPO, Sample{At: time.Duration(i) * time.Minute, RPO: time.Duration(i%5) * time.Minute, Known: i > 0})
	}
	m.Final = Sample{At: 30 * time.Minute, RPO: 2 * time.Minute, Known: true}
	m.Max = Sample{At: 24 * time.Minute, RPO: 4 * time.Minute, Known: true}
	m.Points = []Point{
		{ID: "p1", Kind: "crash", At: 5 * time.Minute, Gone: "retention"},
		{ID: "p2", Kind: "crash", At: 10 * time.Minute},
		{ID: "p3", Kind: "app", At: 15 * time.Minute},
		{ID: "p4", Kind: "crash", At: 20 * time.Minute},
	}
	m.Alerts = []Alert{{Name: "rpo-threshold-exceeded", Detail: "RPO <16m>", Raised: 12 * time.Minute, Cleared: 14 * time.Minute}}
	return &Run{
		Scenario: "t.scn", Seed: 7, TraceSHA256: "abc123", Reproduce: "v2a run t.scn --seed 7", Elapsed: 30 * time.Minute, SampleEvery: time.Minute,
		World:    World{Hosts: []Host{{Name: "cs01", Site: "onprem"}, {Name: "storage.azure", Site: "azure", Public: true}}, Links: []Link{{Path: "internet", From: "onprem", To: "azure", Latency: 20 * time.Millisecond, Mbps: 100}}, VPN: "absent"},
		Machines: []Machine{m},
		Groups: []Group{{Name: "apps", Members: []string{"a", "b"}, Count: 1, Rounds: 2, Committed: 1, Revoked: 1,
			Points: []Point{{ID: "g1", Kind: "crash", At: 10 * time.Minute, Group: "apps"}},
			Shown: []Round{{Tag: "t1", Kind: "crash", Outcome: "committed", Started: 9 * time.Minute, Reported: 10 * time.Minute, Holds: []Hold{{"a", time.Second}, {"b", -1}},
				Phases: []Phase{{"begin", 9*time.Minute + ms, 9*time.Minute + 3*ms, true}, {"prepare", 9*time.Minute + 3*ms, 9*time.Minute + 5*ms, true},
					{"commit", 9*time.Minute + 5*ms, 9*time.Minute + 8*ms, true}, {"resume", 9*time.Minute + 8*ms, 9*time.Minute + 1005*ms, true}}},
				{Tag: "t2", Kind: "crash", Outcome: "revoked", Reason: "prepare b", Started: 19 * time.Minute, Reported: 20 * time.Minute,
					Phases: []Phase{{"begin", 19 * time.Minute, 19*time.Minute + ms, true}, {"prepare", 19*time.Minute + ms, 19*time.Minute + 301*ms, false},
						{"revoke", 19*time.Minute + 301*ms, 19*time.Minute + 401*ms, false}}}}}},
		Jobs: []Job{{ID: "cs-1", Kind: "enable-replication", Subject: "db01", Status: "succeeded", Start: time.Second, End: 2 * time.Minute},
			{ID: "job-1", Kind: "failover", Subject: "site", Status: "succeeded", Start: 25 * time.Minute, End: 29 * time.Minute, RTO: 4 * time.Minute,
				Steps: []Step{{Name: "Create the virtual machine", VM: "db01", Group: 1, Status: "succeeded", Start: 26 * time.Minute, End: 28 * time.Minute}}}},
		Checks: Checks{Passed: 1, Failed: 1, Results: []Check{{Check: "rpo", Subject: "db01", Verdict: "ok"}, {Check: "image", Subject: "db01", Verdict: "ILLEGAL", Evidence: "block <7> differs"}}},
	}
}

func render(t *testing.T, r *Run) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRender(t *testing.T) {
	page := render(t, sampleRun())
	if again := render(t, sampleRun()); again != page {
		t.Fatal("the same run rendered twice differs")
	}
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(page, -1)) }
	for _, c := range []struct {
		what string
		re   string
		want int
	}{
		{"live crash marks", `<circle class="pt crash live"`, 3}, // p2, p4 and the group's g1
		{"live app marks", `<circle class="pt app live"`, 1},
		{"gone marks", `<circle class="pt crash gone"`, 1},
		{"threshold line", `<line class="threshold"[^>]*data-threshold="10m0s"`, 1},
		{"alert bands", `<rect class="alert-band"`, 1},
		{"RPO curves", `<polyline class="rpo"`, 1}, // the unknown first sample starts no curve
		{"rounds", `<g class="round (committed|revoked)"`, 2},
		{"known holds, on the group's chart and under the round's phases", `<rect class="hold"[^>]*data-hold="1s"`, 2},
		{"round rows", `<g class="round-row (committed|revoked)"`, 2},
		{"phases", `<rect class="phase [a-z]+( failed)?"[^>]*data-phase=`, 7},
		{"phases left unacknowledged", `<rect class="phase [a-z]+ failed"`, 2},
		{"a phase's times since its round's start", `data-phase="prepare" data-from="3ms" data-to="5ms" data-ok="true"`, 1},
		{"the failed prepare", `data-phase="prepare" data-from="1ms" data-to="301ms" data-ok="false"`, 1},
		{"the hold from prepare sent", `<rect class="hold" x="[0-9.]+" y="[0-9]+" width="[0-9.]+" height="4" data-machine="a" data-hold="1s"><title>`, 1},
		{"a legend entry per phase", `<rect class="phase (begin|prepare|quiesce|commit|resume|revoke)" x="\d+" y="6"`, 6},
		{"job bars", `<rect class="job-bar"`, 2},
		{"recovery job with its RTO", `data-job="job-1" data-kind="failover" data-rto="4m0s"`, 1},
		{"failed check, in the failures and in every result", `<td class="bad">ILLEGAL</td>`, 2},
	} {
		if got := count(c.re); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	for _, want := range []string{`data-rpo-final="2m0s" data-rpo-max="4m0s"`, `end 2m0s`, `max 4m0s at +00:24:00`, "block &lt;7&gt; differs", "RPO &lt;16m&gt;", "v2a run t.scn --seed 7", "abc123"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "http://", "https://", "block <7>"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page has %q", bad)
		}
	}
}

// TestRenderThresholdAboveChart: a threshold far above the curve is named,
// not drawn (it would flatten the curve).
func TestRenderThresholdAboveChart(t *testing.T) {
	r := sampleRun()
	r.Machines[0].Threshold = time.Hour
	page := render(t, r)
	if strings.Contains(page, `<line class="threshold"`) || !strings.Contains(page, "threshold 1h0m0s (above the chart)") {
		t.Error("a threshold 15× the largest RPO is drawn, or not named")
	}
	r.Machines[0].Threshold = 10 * time.Minute // the control: drawn
	if page := render(t, r); !strings.Contains(page, `<line class="threshold"`) {
		t.Error("a threshold near the curve is not drawn")
	}
}

func TestRenderEmpty(t *testing.T) {
	page := render(t, &Run{Scenario: "empty.scn", Seed: 1, TraceSHA256: "x"})
	for _, want := range []string{"No machine was protected.", "No replication group.", "No jobs."} {
		if !strings.Contains(page, want) {
			t.Errorf("the page of an empty run lacks %q", want)
		}
	}
}

func TestAxisTicks(t *testing.T) {
	a := axis{0, 3*time.Hour + 2*time.Minute}
	ts := a.ticks()
	if len(ts) == 0 || len(ts) > 10 || ts[0] != 0 || ts[1] != 30*time.Minute {
		t.Fatalf("ticks of 3h2m: %v", ts)
	}
	if x := a.x(-time.Second); x != padL {
		t.Errorf("before the axis: x=%v, want %v", x, padL)
	}
	if x := a.x(5 * time.Hour); x != padL+plotW {
		t.Errorf("after the axis: x=%v, want %v", x, padL+plotW)
	}
}

// TestRenderRoundsTail: the phase chart draws only the last GanttRounds
// rounds, one row each; a round without phases says so.
func TestRenderRoundsTail(t *testing.T) {
	r := sampleRun()
	g := &r.Groups[0]
	g.Shown = nil
	for i := range GanttRounds + 4 {
		g.Shown = append(g.Shown, Round{Tag: fmt.Sprintf("r%02d", i), Kind: "crash", Outcome: "committed", Started: time.Duration(i) * time.Minute})
	}
	page := render(t, r)
	rows := regexp.MustCompile(`<g class="round-row committed" data-tag="(r\d+)"`).FindAllStringSubmatch(page, -1)
	if len(rows) != GanttRounds || rows[0][1] != "r04" || rows[len(rows)-1][1] != "r19" {
		t.Fatalf("%d rows, first %v: want %d from r04", len(rows), rows[:min(1, len(rows))], GanttRounds)
	}
	if n := strings.Count(page, "no phase times reported"); n != GanttRounds {
		t.Errorf("%d rounds say they have no phases, want %d", n, GanttRounds)
	}
}

func TestFineTicks(t *testing.T) {
	for _, c := range []struct {
		span time.Duration
		step time.Duration
	}{{4 * ms, 500 * time.Microsecond}, {300 * ms, 50 * ms}, {90 * time.Second, 10 * time.Second}} {
		ts := fineTicks(c.span)
		if len(ts) < 2 || len(ts) > 11 || ts[0] != 0 || ts[1] != c.step {
			t.Errorf("ticks of %v: %v, want steps of %v", c.span, ts, c.step)
		}
	}
}
