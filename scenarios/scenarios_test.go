// Package scenarios holds v2a's scripted scenarios (*.scn, the
// cockroachdb/datadriven format). This test runs each of them through
// harness.RunScenario — the runner `v2a run` uses, with its verdict rule —
// and compares every command's output with the expectation in the file;
// `make rewrite` regenerates the expectations for review. A failed check
// fails the test whatever the file recorded, unless the script's header
// declares `# expect: failed-checks`.
package scenarios

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Shutdown()
	os.Exit(code)
}

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("*.scn")
	if err != nil {
		t.Fatal(err)
	}
	errs, _ := filepath.Glob("testdata/*.scn")
	files = append(files, errs...)
	// Kept failures of the swarm (v2a swarm writes them; once the bug is
	// fixed they pass and stay, as regressions).
	regs, _ := filepath.Glob("regressions/*.scn")
	files = append(files, regs...)
	if len(files) == 0 {
		t.Fatal("no scenario files")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if f == reportScenario {
				// The demo also writes its HTML report, judged against
				// the views and in a browser (report_test.go).
				rec := harness.NewReportRecorder(0)
				harness.RunScenarioWith(t, f, func(r *harness.Runner) { r.Recorder = rec }, func(t *testing.T, r *harness.Runner) {
					checkReport(t, r, rec)
				})
				return
			}
			harness.RunScenario(t, f)
		})
	}
}

// childScript names the script TestVerdictChild runs, in a child process
// of TestGoldenCannotBlessAFailure.
const childScript = "V2A_VERDICT_CHILD_SCRIPT"

// TestGoldenCannotBlessAFailure proves the suite fails when a golden
// records a failed check: no-points.scn without its `# expect:
// failed-checks` header has goldens that record failures (what `make
// rewrite` would write), and running it as this suite runs a file must
// fail, naming the failed check. With the header it passes (the control).
func TestGoldenCannotBlessAFailure(t *testing.T) {
	data, err := os.ReadFile("testdata/no-points.scn")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), harness.ExpectFailedChecks+"\n") {
		t.Fatalf("testdata/no-points.scn lost its header %q", harness.ExpectFailedChecks)
	}
	for _, c := range []struct {
		name   string
		script string
		fail   bool
	}{
		{"undeclared failures fail", strings.TrimPrefix(string(data), harness.ExpectFailedChecks+"\n"), true},
		{"declared failures pass", string(data), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "no-points.scn")
			if err := os.WriteFile(p, []byte(c.script), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run", "^TestVerdictChild$", "-test.v")
			cmd.Env = append(os.Environ(), childScript+"="+p)
			out, err := cmd.CombinedOutput()
			failed := err != nil
			if failed != c.fail {
				t.Fatalf("child failed=%v, want %v (err %v):\n%s", failed, c.fail, err, out)
			}
			if c.fail && !strings.Contains(string(out), "checks: 0 passed, 8 failed") {
				t.Errorf("the failure does not give the tally:\n%s", out)
			}
		})
	}
}

// TestVerdictChild is TestGoldenCannotBlessAFailure's child: it runs one
// script the way TestScenarios does.
func TestVerdictChild(t *testing.T) {
	p := os.Getenv(childScript)
	if p == "" {
		t.Skip("a helper: runs only as TestGoldenCannotBlessAFailure's child")
	}
	harness.RunScenario(t, p)
}
