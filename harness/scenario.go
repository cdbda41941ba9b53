package harness

import (
	"testing"

	"github.com/cockroachdb/datadriven"
)

// RunScenario runs a scenario script (a .scn file: a command with
// key=value arguments, `----`, the expected output) as a Go test. It is
// the entry point for a team's own DR scenarios in `go test`:
//
//	func TestMyFailoverDrill(t *testing.T) {
//		harness.RunScenario(t, "testdata/my-drill.scn")
//	}
//
// Each command's output is compared with the expectation in the file, the
// cockroachdb/datadriven way (`go test -rewrite` rewrites the file; review
// the diff). The test fails on an output that differs, on an `error:` the
// file does not expect, on an armed fault (`on=`, corrupt-blob) that failed
// to inject or never fired (unless armed with `unfired=ok`), and on a
// failed check — whatever the file recorded,
// unless its header declares `# expect: failed-checks` (then it fails if
// no check failed). The verdict is the one `v2a run FILE` gives.
//
// Call Shutdown from TestMain after m.Run: it stops the Azurite process
// the worlds share.
func RunScenario(t *testing.T, path string) {
	t.Helper()
	RunScenarioWith(t, path, nil, nil)
}

// RunScenarioWith is RunScenario with two hooks (either may be nil):
// before gets the runner before the first command (to give it a
// Recorder), after gets it once the script has run, its world still up
// (to look at what the run left: its report, its views).
func RunScenarioWith(t *testing.T, path string, before func(*Runner), after func(*testing.T, *Runner)) {
	t.Helper()
	s, err := LoadScript(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Ctx: t.Context(), Script: path}
	defer r.Close()
	if before != nil {
		before(r)
	}
	datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
		return r.Step(Directive{Pos: td.Pos, Cmd: td.Cmd, Args: td.CmdArgs, Input: td.Input, Expected: td.Expected})
	})
	if err := r.Verdict(s); err != nil {
		t.Error(err)
	}
	if after != nil && !t.Failed() {
		after(t, r)
	}
}
