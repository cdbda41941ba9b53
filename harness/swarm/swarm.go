package swarm

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

// Seeds is the seeds of [from, to] that shard i of n takes: those with
// seed % n == i, so that n machines split a range with no coordinator.
// n = 1 takes them all.
func Seeds(from, to uint64, i, n uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		if s%n == i {
			out = append(out, s)
		}
		if s == ^uint64(0) {
			break
		}
	}
	return out
}

// ParseShard reads "i/n" (0 ≤ i < n).
func ParseShard(s string) (i, n uint64, err error) {
	if _, err := fmt.Sscanf(s, "%d/%d", &i, &n); err != nil || n == 0 || i >= n || fmt.Sprintf("%d/%d", i, n) != s {
		return 0, 0, fmt.Errorf("swarm: --shard %q: want i/n with 0 ≤ i < n, e.g. 3/8", s)
	}
	return i, n, nil
}

// Exec runs one seed's plan and judges it.
type Exec func(ctx context.Context, p Plan) Result

// InProcess is the Exec that runs a plan in this process (Run).
func InProcess(memory bool) Exec {
	return func(ctx context.Context, p Plan) Result {
		return Run(ctx, p, p.Script, RunOptions{Memory: memory})
	}
}

// Config configures Swarm.
type Config struct {
	Seeds []uint64
	// Jobs is how many seeds run at once (each world is independent); 0: 1.
	Jobs int
	// Budget, when positive, stops starting new seeds once it has passed;
	// the seeds running finish.
	Budget time.Duration
	Exec   Exec
	// Done, when set, is called (from one goroutine at a time) as each
	// seed finishes, in the order they finish: for progress lines and for
	// writing out a failing seed.
	Done func(r Result, done, total int)
}

// Report is a swarm run: every seed that ran, by seed.
type Report struct {
	Results []Result
	// NotRun is how many seeds the budget (or an interrupt, or a set-up
	// failure) left unstarted.
	NotRun int
	Wall   time.Duration
	// Setup is the first seed that could not be set up (Result.Setup), if
	// one could not: the swarm stopped there, and judged nothing.
	Setup *Result
}

// Swarm runs the seeds, Jobs at a time. The report is ordered by seed,
// whatever the job count. A seed that cannot be set up stops the swarm at
// once: no new seed starts, and the running ones are interrupted (every
// seed would fail the same way, and a rate of seeds that never ran is no
// rate).
func Swarm(ctx context.Context, c Config) Report {
	start := time.Now()
	jobs := max(c.Jobs, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
		next    int
		notRun  int
		setup   *Result
	)
	take := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= len(c.Seeds) {
			return 0, false
		}
		if ctx.Err() != nil || (c.Budget > 0 && time.Since(start) >= c.Budget) {
			notRun = len(c.Seeds) - next
			next = len(c.Seeds)
			return 0, false
		}
		s := c.Seeds[next]
		next++
		return s, true
	}
	for j := 0; j < jobs; j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s, ok := take()
				if !ok {
					return
				}
				r := c.Exec(ctx, Generate(s))
				mu.Lock()
				if r.Setup && setup == nil {
					setup = &r
					cancel()
				}
				results = append(results, r)
				if c.Done != nil {
					c.Done(r, len(results), len(c.Seeds))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].Plan.Seed < results[j].Plan.Seed })
	return Report{Results: results, NotRun: notRun, Wall: time.Since(start), Setup: setup}
}

// Failed is how many seeds failed.
func (rep Report) Failed() int {
	n := 0
	for _, r := range rep.Results {
		if r.Failed() {
			n++
		}
	}
	return n
}

// SeedsPerHour is the rate the seeds ran at, in wall time.
func (rep Report) SeedsPerHour() float64 {
	if rep.Wall <= 0 {
		return 0
	}
	return float64(len(rep.Results)) / rep.Wall.Hours()
}

// WriteSummary writes the per-fault-kind table (seeds that injected the
// kind, and how many of them failed), then the totals.
func (rep Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "%-16s %6s %8s\n", "fault", "seeds", "failed")
	for _, k := range Kinds {
		var seeds, failed int
		for _, r := range rep.Results {
			if contains(r.Plan.Used, k) {
				seeds++
				if r.Failed() {
					failed++
				}
			}
		}
		fmt.Fprintf(w, "%-16s %6d %8d\n", k, seeds, failed)
	}
	var sim time.Duration
	var checks, interrupted int
	for _, r := range rep.Results {
		sim += r.Plan.Simulated
		checks += r.Passed + len(r.Failures)
		if r.Interrupted {
			interrupted++
		}
	}
	fmt.Fprintf(w, "seeds: %d ran, %d failed", len(rep.Results), rep.Failed())
	if interrupted > 0 {
		fmt.Fprintf(w, ", %d interrupted", interrupted)
	}
	if rep.NotRun > 0 {
		fmt.Fprintf(w, ", %d not started (budget)", rep.NotRun)
	}
	fmt.Fprintf(w, "; %d checks; %.1f simulated hours in %s of wall time: %.0f seeds/hour\n",
		checks, sim.Hours(), rep.Wall.Round(time.Second), rep.SeedsPerHour())
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// JUnit test report: one test case per seed.
type junitSuite struct {
	XMLName  xml.Name    `xml:"testsuite"`
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	Skipped   *struct{}     `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML, one test case per seed;
// repro gives a failing seed's reproduce line.
func (rep Report) WriteJUnit(w io.Writer, repro func(seed uint64) string) error {
	s := junitSuite{Name: "v2a-swarm", Tests: len(rep.Results), Failures: rep.Failed(), Time: fmt.Sprintf("%.3f", rep.Wall.Seconds())}
	for _, r := range rep.Results {
		c := junitCase{Name: fmt.Sprintf("seed-%d", r.Plan.Seed), Classname: "swarm", Time: fmt.Sprintf("%.3f", r.Wall.Seconds()),
			SystemOut: fmt.Sprintf("faults: %s; %d checks passed; simulated %s", strings.Join(r.Plan.Used, ","), r.Passed, r.Plan.Simulated)}
		switch {
		case r.Failed():
			var b strings.Builder
			for _, f := range r.Failures {
				b.WriteString(f.String() + "\n")
			}
			b.WriteString("reproduce: " + repro(r.Plan.Seed) + "\n")
			c.Failure = &junitFailure{Message: firstLine(r.Verdict), Text: b.String()}
		case r.Interrupted:
			c.Skipped = &struct{}{}
			s.Skipped++
		}
		s.Cases = append(s.Cases, c)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(s); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// errorLine is the line of a command's output that says what went wrong
// (its `error: ` line), else its first line.
func errorLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "error: ") {
			return l
		}
	}
	return firstLine(s)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// FailureLines is a failing seed's failed checks, one line each.
func FailureLines(fs []harness.Result) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  FAILED %s %s %s: %s\n", f.Check, f.Subject, f.Verdict, errorLine(f.Evidence))
	}
	return b.String()
}
