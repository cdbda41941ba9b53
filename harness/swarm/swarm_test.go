package swarm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Shutdown()
	os.Exit(code)
}

// shortSeeds are the seeds `make test` runs: seed 1, a VM and a physical
// server through an Azure-side crash, a torn log, LAN loss and a lost
// cache (1 h 14 min simulated); seed 9, one VM through a clogged uplink
// and a corrupted stream item (56 min); both end with a test-failover
// drill; seed 20, one VM through a corrupt log, a partition and a full
// cache, then the failback round trip with two VPN drops mid-reprotect
// (3.6 s of wall time on a quiet machine).
var shortSeeds = []uint64{1, 9, 20}

// TestSwarmShort runs a short swarm in-process on memblob: every seed
// must pass, the report must be ordered by seed and say what ran.
func TestSwarmShort(t *testing.T) {
	start := time.Now()
	rep := Swarm(t.Context(), Config{Seeds: shortSeeds, Jobs: 1, Exec: InProcess(true)})
	for _, r := range rep.Results {
		if r.Failed() {
			t.Errorf("seed %d failed: %s\n%s%s", r.Plan.Seed, r.Verdict, FailureLines(r.Failures), r.Plan.Script)
		}
		if r.Passed == 0 {
			t.Errorf("seed %d: no check passed", r.Plan.Seed)
		}
	}
	if len(rep.Results) != len(shortSeeds) || rep.NotRun != 0 {
		t.Fatalf("%d results, %d not run, for %d seeds", len(rep.Results), rep.NotRun, len(shortSeeds))
	}
	// Both drills ran: the short swarm judges them too.
	for _, k := range []string{KindTestFailover, KindFailback} {
		n := 0
		for _, r := range rep.Results {
			if slices.Contains(r.Plan.Used, k) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no short seed drills %s", k)
		}
	}
	var b bytes.Buffer
	rep.WriteSummary(&b)
	if !strings.Contains(b.String(), fmt.Sprintf("seeds: %d ran, 0 failed", len(shortSeeds))) {
		t.Errorf("summary:\n%s", b.String())
	}
	t.Logf("%s(took %s)", b.String(), time.Since(start).Round(time.Second))
}

// TestSwarmReport: failures are counted per fault kind, the report is in
// seed order whatever order seeds finish in, the budget stops new seeds,
// and the JUnit report has one case per seed with the failing one's
// reproduce line. A fake Exec fails seed 2 (negative control of the
// summary: a failure must show).
func TestSwarmReport(t *testing.T) {
	fake := func(_ context.Context, p Plan) Result {
		time.Sleep(time.Duration(5-p.Seed) * time.Millisecond) // finish out of order
		r := Result{Plan: p, Passed: 3}
		if p.Seed == 2 {
			r.Verdict = "checks: 2 passed, 1 failed"
			r.Failures = []harness.Result{{Check: "write-order", Subject: "sw01@p1", Verdict: harness.Illegal, Evidence: "block 9"}}
		}
		return r
	}
	rep := Swarm(context.Background(), Config{Seeds: []uint64{1, 2, 3, 4}, Jobs: 4, Exec: fake})
	for i, r := range rep.Results {
		if r.Plan.Seed != uint64(i+1) {
			t.Fatalf("report not in seed order: %d at %d", r.Plan.Seed, i)
		}
	}
	if rep.Failed() != 1 {
		t.Fatalf("failed %d, want 1", rep.Failed())
	}
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	for _, k := range Generate(2).Used {
		if !strings.Contains(sum.String(), k) {
			t.Errorf("summary misses %s:\n%s", k, sum.String())
		}
	}
	if !strings.Contains(sum.String(), "seeds: 4 ran, 1 failed") {
		t.Errorf("summary:\n%s", sum.String())
	}
	var j bytes.Buffer
	if err := rep.WriteJUnit(&j, func(s uint64) string { return "v2a run seed.scn" }); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(j.String(), "<testcase "); n != 4 || !strings.Contains(j.String(), `failures="1"`) || !strings.Contains(j.String(), "reproduce: v2a run seed.scn") {
		t.Errorf("junit (%d cases):\n%s", n, j.String())
	}
	// The budget: once spent, no new seed starts.
	slow := func(_ context.Context, p Plan) Result { time.Sleep(30 * time.Millisecond); return Result{Plan: p} }
	rep = Swarm(context.Background(), Config{Seeds: []uint64{1, 2, 3, 4, 5, 6}, Jobs: 1, Budget: 40 * time.Millisecond, Exec: slow})
	if len(rep.Results) == 0 || len(rep.Results) == 6 || rep.NotRun != 6-len(rep.Results) {
		t.Fatalf("budget: %d ran, %d not run", len(rep.Results), rep.NotRun)
	}
}

// benchFirstSeed is BenchmarkSwarm's first seed: seeds 100.. are the range
// the README's swarm figures are measured on (v2a swarm --from 100).
const benchFirstSeed = 100

// BenchmarkSwarm runs seeds 100..100+b.N-1 in-process on memblob, one at a
// time, and reports seeds an hour (wall), CPU seconds per seed (user and
// system, the whole process: garbage collection included) and simulated
// hours per seed. Wall time on a loaded machine says little; CPU seconds
// per seed are the figure to compare: a 2-core machine runs 7,200/CPU
// seeds an hour with --jobs 2. Run with -benchtime=12x (seeds 100..111).
func BenchmarkSwarm(b *testing.B) {
	var seeds []uint64
	for i := range b.N {
		seeds = append(seeds, benchFirstSeed+uint64(i))
	}
	before := cpuTime(b)
	b.ResetTimer()
	rep := Swarm(context.Background(), Config{Seeds: seeds, Jobs: 1, Exec: InProcess(true)})
	b.StopTimer()
	cpu := cpuTime(b) - before
	var sim time.Duration
	for _, r := range rep.Results {
		sim += r.Plan.Simulated
		if r.Setup {
			b.Fatalf("seed %d could not be set up: %s", r.Plan.Seed, r.Verdict)
		}
	}
	n := float64(len(rep.Results))
	b.ReportMetric(rep.SeedsPerHour(), "seeds/hour")
	b.ReportMetric(cpu.Seconds()/n, "cpu-s/seed")
	b.ReportMetric(sim.Hours()/n, "sim-hours/seed")
	b.ReportMetric(float64(rep.Failed()), "failed-seeds")
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSameFailures: a failing seed re-run from its written file
// reproduces when the same checks fail on the same subjects; a script
// failure's file may be elsewhere, its line may not move.
func TestSameFailures(t *testing.T) {
	a := []harness.Result{{Check: "write-order", Subject: "sw01@p1", Verdict: harness.Illegal}, {Check: "script", Subject: "/tmp/x/seed-4.scn:53", Verdict: harness.Illegal}}
	b := []harness.Result{{Check: "write-order", Subject: "sw01@p1", Verdict: harness.Illegal, Evidence: "other words"}, {Check: "script", Subject: "out/seed-4.scn:53", Verdict: harness.Illegal}}
	if !SameFailures(a, b) {
		t.Error("the same failures, the script elsewhere: not the same")
	}
	c := append([]harness.Result{}, b...)
	c[1].Subject = "out/seed-4.scn:54"
	for _, other := range [][]harness.Result{c, b[:1], nil} {
		if SameFailures(a, other) {
			t.Errorf("%v and %v: the same", a, other)
		}
	}
	if SameFailures(nil, nil) {
		t.Error("no failures reproduce nothing")
	}
}

// TestSwarmStopsOnSetup: a seed that cannot be set up stops the swarm: no
// seed after it starts, the running ones are cancelled, and the report
// names it. In-process, Run marks a seed whose world cannot be built (its
// working directory is missing) as a set-up failure, not a failed check.
func TestSwarmStopsOnSetup(t *testing.T) {
	var (
		mu      sync.Mutex
		started []uint64
	)
	fake := func(ctx context.Context, p Plan) Result {
		mu.Lock()
		started = append(started, p.Seed)
		mu.Unlock()
		switch p.Seed {
		case 2:
			return Result{Plan: p, Setup: true, Verdict: "seed-2.scn:5: harness: no fixtures"}
		case 1:
			<-ctx.Done() // running beside seed 2: cancelled by it
			return Result{Plan: p, Interrupted: true, Verdict: "interrupted"}
		}
		return Result{Plan: p, Passed: 1}
	}
	rep := Swarm(context.Background(), Config{Seeds: []uint64{1, 2, 3, 4, 5}, Jobs: 2, Exec: fake})
	if rep.Setup == nil || rep.Setup.Plan.Seed != 2 || rep.NotRun != 3 || len(rep.Results) != 2 || rep.Failed() != 0 {
		t.Fatalf("setup %+v, %d not run, %d results (%v started), %d failed", rep.Setup, rep.NotRun, len(rep.Results), started, rep.Failed())
	}

	t.Setenv("V2A_WORKDIR", t.TempDir()+"/missing")
	r := InProcess(true)(t.Context(), Generate(1))
	if !r.Setup || r.Failed() || !strings.Contains(r.Verdict, "seed-1.scn:") || !strings.Contains(r.Verdict, "missing") {
		t.Fatalf("in-process: setup %v, failed %v, verdict %q", r.Setup, r.Failed(), r.Verdict)
	}
}
