package harness

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/harness/report"
)

// reportRun runs a short replication with or without a recorder and
// returns its trace hash and, with one, its rendered report.
func reportRun(t *testing.T, seed int, record bool) (string, []byte) {
	t.Helper()
	script := fmt.Sprintf("world seed=%d machines=(db01) workload=bank\n----\n\ndeploy\n----\n\nprotect vms=(db01)\n----\n\nrun for=12m\n----\n", seed)
	s, err := NewScript("t.scn", []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Ctx: context.Background()}
	defer r.Close()
	var rec *ReportRecorder
	if record {
		rec = NewReportRecorder(30 * time.Second)
		r.Recorder = rec
	}
	r.RunScript(s, nil)
	if err := r.Verdict(s); err != nil {
		t.Fatal(err)
	}
	if !record {
		return r.Env.Trace.Sum(), nil
	}
	run, err := r.Report(rec, ReportMeta{Scenario: "t.scn", Reproduce: "v2a run t.scn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Machines) != 1 || len(run.Machines[0].RPO) < 20 || len(run.Machines[0].Points) == 0 {
		t.Fatalf("the report has nothing to show: %+v", run.Machines)
	}
	var b bytes.Buffer
	if err := report.Render(&b, run); err != nil {
		t.Fatal(err)
	}
	return r.Env.Trace.Sum(), b.Bytes()
}

// TestReportDeterministic: the same seed gives the same report byte for
// byte, another seed another one, and recording changes nothing of the
// run (the trace hash is the one of a run without a recorder).
func TestReportDeterministic(t *testing.T) {
	plain, _ := reportRun(t, 3, false)
	h1, a := reportRun(t, 3, true)
	h2, b := reportRun(t, 3, true)
	_, c := reportRun(t, 4, true)
	if h1 != plain || h2 != plain {
		t.Errorf("recording changed the trace: %s, %s; without a recorder %s", h1, h2, plain)
	}
	if !bytes.Equal(a, b) {
		t.Error("seed 3 gave two different reports")
	}
	if bytes.Equal(a, c) {
		t.Error("seeds 3 and 4 gave the same report")
	}
	if !strings.Contains(string(a), plain) {
		t.Error("the report does not carry the trace hash")
	}
}

// TestReportNoWorld: a run that built no world has no report, and says why.
func TestReportNoWorld(t *testing.T) {
	r := &Runner{}
	_, err := r.Report(NewReportRecorder(0), ReportMeta{})
	if err == nil || !strings.Contains(err.Error(), "no world") {
		t.Fatalf("err %v", err)
	}
}

// TestReportThinning: past maxSamples the recorder halves its samples,
// keeping the peaks, and samples half as often.
func TestReportThinning(t *testing.T) {
	rc := NewReportRecorder(time.Second)
	var ss []report.Sample
	for i := range 10 {
		ss = append(ss, report.Sample{At: time.Duration(i) * time.Second, RPO: time.Duration(i%3) * time.Second, Known: i != 4})
	}
	rc.samples["m"] = ss
	rc.thin()
	var got []string
	for _, s := range rc.samples["m"] {
		got = append(got, fmt.Sprintf("%v:%v:%v", s.At, s.RPO, s.Known))
	}
	want := "1s:1s:true 2s:2s:true 5s:2s:true 7s:1s:true 8s:2s:true"
	if strings.Join(got, " ") != want || rc.every != 2*time.Second {
		t.Fatalf("thinned %s every %v; want %s every 2s", strings.Join(got, " "), rc.every, want)
	}
}
