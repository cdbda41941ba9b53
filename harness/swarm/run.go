package swarm

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

// Result is one seed's run.
type Result struct {
	Plan     Plan
	Passed   int              // property checks passed
	Failures []harness.Result // failed checks ("script": an unexpected error), in the order found
	// Verdict is the runner's verdict (harness.Runner.Verdict): "" when the
	// seed passed.
	Verdict string
	// Interrupted: the run was stopped (Ctrl-C, the budget's context)
	// before the end of its script; it is no verdict on the system.
	Interrupted bool
	// Setup: the seed could not be set up (a harness error, `v2a run`'s
	// exit 2: no fixtures, no working directory, a script the harness
	// refuses). It is no verdict on the system either, and every other
	// seed would fail the same way: Swarm stops at once.
	Setup    bool
	TraceSum string
	Wall     time.Duration
	// Reproduced is set for a failing seed whose written .scn was run
	// again: whether it failed the same checks.
	Reproduced *bool
}

// Failed reports whether the seed failed (a set-up failure is no failure
// of the system: see Setup).
func (r Result) Failed() bool { return r.Verdict != "" && !r.Interrupted && !r.Setup }

// RunOptions configure Run.
type RunOptions struct {
	// Memory runs the world on memblob instead of Azurite.
	Memory bool
	// Path names the script in the verdict and the reproduce line.
	Path string
}

// Run runs a script in-process through the scenario runner (the same
// Runner.RunScript and Runner.Verdict as `v2a run`) and judges it.
func Run(ctx context.Context, p Plan, script string, o RunOptions) Result {
	start := time.Now()
	res := Result{Plan: p}
	path := o.Path
	if path == "" {
		path = fmt.Sprintf("seed-%d.scn", p.Seed)
	}
	s, err := harness.NewScript(path, []byte(script))
	if err != nil {
		res.Verdict = err.Error()
		res.Failures = []harness.Result{{Check: "script", Subject: path, Verdict: harness.Illegal, Evidence: err.Error()}}
		return res
	}
	r := &harness.Runner{Ctx: ctx, Script: path, MemoryStorage: o.Memory}
	defer r.Close()
	res.Interrupted = r.RunScript(s, nil)
	res.Passed = r.Tally.Passed
	res.Failures = r.Tally.Failures
	if err := r.Verdict(s); err != nil {
		res.Verdict = err.Error()
	}
	if r.SetupFailed && !res.Interrupted {
		res.Setup = true
		res.Verdict = SetupVerdict(res.Failures, res.Verdict)
	}
	if r.Env != nil {
		res.TraceSum = r.Env.Trace.Sum()
	}
	res.Wall = time.Since(start)
	return res
}

// SameFailures reports whether two runs failed the same checks on the
// same subjects (the evidence may word itself differently). A "script"
// failure's subject is FILE:LINE: the same line of a copy of the script
// elsewhere is the same subject.
func SameFailures(a, b []harness.Result) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i].Check != b[i].Check || filepath.Base(a[i].Subject) != filepath.Base(b[i].Subject) || a[i].Verdict != b[i].Verdict {
			return false
		}
	}
	return true
}

// SetupVerdict is what a seed that could not be set up says: its first
// script error (FILE:LINE: the error), else the runner's verdict.
func SetupVerdict(fs []harness.Result, verdict string) string {
	for _, f := range fs {
		if f.Check == "script" && f.Evidence != "" {
			return f.Subject + ": " + strings.TrimPrefix(errorLine(f.Evidence), "error: ")
		}
	}
	return verdict
}
