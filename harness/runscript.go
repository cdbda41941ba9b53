package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// This file is THE scenario runner: `v2a run FILE`, `go test ./scenarios`
// and a user's own tests (RunScenario, the Scenario builder) all step a
// script through Runner.Step and judge it with Runner.Verdict, so a script
// gets one verdict whichever way it is run.
//
// The verdict rule:
//   - an error the script expects (the directive's expected output has an
//     `error: ` line) is output, not a failure: errors.scn asserts its bad
//     input that way;
//   - an error it does not expect is a failed check named "script" (and,
//     when the script is malformed, stops the CLI: SetupFailed);
//   - a failed property check fails the run, whatever the expected output
//     recorded — unless the script declares `# expect: failed-checks` in
//     its header (a negative control: no-points.scn), and then it fails
//     unless some property check did fail;
//   - an armed fault (`on=`, corrupt-blob) that fired and could not be
//     injected is a failed "script" check, whatever the expected output
//     recorded, and so is one that never fired by the end of the script,
//     unless armed with `unfired=ok` (armedfault.go).

// ExpectFailedChecks is the header line a script declares when failed
// checks are what it shows.
const ExpectFailedChecks = "# expect: failed-checks"

// Script is a parsed scenario file.
type Script struct {
	Path       string
	Directives []Directive
	// ExpectFailed: the header declares `# expect: failed-checks`.
	ExpectFailed bool
}

// NewScript parses a script: its header (the comment lines before the
// first directive) and its directives.
func NewScript(path string, data []byte) (*Script, error) {
	ds, err := ParseScript(path, data)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	expect, err := scriptExpect(path, data)
	if err != nil {
		return nil, err
	}
	return &Script{Path: path, Directives: ds, ExpectFailed: expect}, nil
}

// LoadScript reads and parses a script file.
func LoadScript(path string) (*Script, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	return NewScript(path, data)
}

// scriptExpect reads the header's `# expect:` line. Only failed-checks is
// known: a misspelt one is refused rather than read as "expect nothing".
func scriptExpect(path string, data []byte) (bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	expect := false
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		if !strings.HasPrefix(l, "#") {
			break // the header ends at the first directive
		}
		if !strings.HasPrefix(l, "# expect:") {
			continue
		}
		if l != ExpectFailedChecks {
			return false, fmt.Errorf("harness: %s:%d: unknown header %q (want %q)", path, n, l, ExpectFailedChecks)
		}
		expect = true
	}
	return expect, sc.Err()
}

// hasError reports whether output has an `error: ` line.
func hasError(out string) bool {
	return strings.HasPrefix(out, "error: ") || strings.Contains(out, "\nerror: ")
}

// Step runs one directive and applies the verdict rule to its output: an
// error its expected output (d.Expected) does not announce is counted as a
// failed "script" check; an armed fault that fired during the command and
// failed to inject is counted too, announced or not. An error printed
// because the run was interrupted is no verdict on the system and is not
// counted.
func (r *Runner) Step(d Directive) string {
	out := r.Exec(d)
	r.Recorder.attach(r.Env) // from the command that built the world on
	if r.interrupted() {
		return out
	}
	// A fault that fired during the command and failed fails the run even
	// when the expected output records it: a golden cannot bless it.
	r.Tally.Add(r.lastFaults...)
	if !r.lastOwnError || hasError(d.Expected) {
		return out
	}
	r.Tally.Add(Result{Check: "script", Subject: d.Pos, Verdict: Illegal, Evidence: strings.TrimSpace(out)})
	if r.lastSetup {
		r.SetupFailed = true
	}
	return out
}

func (r *Runner) interrupted() bool {
	return (r.Ctx != nil && r.Ctx.Err() != nil) || (r.Env != nil && r.Env.Sim.Interrupted())
}

// RunScript steps every directive of s, handing each with its output to
// emit (which may be nil), until the end, an unexpected setup error, or
// the Runner's context is done. It reports whether the run was
// interrupted; Verdict judges it.
func (r *Runner) RunScript(s *Script, emit func(d Directive, out string)) (interrupted bool) {
	if r.Script == "" {
		r.Script = s.Path
	}
	r.prog.total = len(s.Directives)
	for i, d := range s.Directives {
		if r.interrupted() {
			return true
		}
		r.prog.done, r.prog.command = i, d.Line()
		if r.Env != nil {
			r.Env.span = clockSpan{}
		}
		r.reportProgress()
		out := r.Step(d)
		r.prog.done, r.prog.command = i+1, ""
		r.reportProgress()
		if emit != nil {
			emit(d, out)
		}
		if r.interrupted() {
			// The command was cut short: its output and any error it
			// printed are not a verdict on the system.
			return true
		}
		if r.SetupFailed {
			break // the script is malformed: what follows would only fail too
		}
	}
	r.Finish()
	return false
}

// Verdict judges a run of s by the rule above: nil when it passed, else
// an error that says why.
func (r *Runner) Verdict(s *Script) error {
	r.Finish()
	var script, checks int
	for _, f := range r.Tally.Failures {
		if f.Check == "script" {
			script++
		} else {
			checks++
		}
	}
	switch {
	case script > 0:
		return fmt.Errorf("harness: %s: %d unexpected error(s), first at %s: %s", s.Path, script, firstScript(r.Tally.Failures).Subject, firstScript(r.Tally.Failures).Evidence)
	case s.ExpectFailed && checks == 0:
		return fmt.Errorf("harness: %s: declares %q, but no check failed (%d passed)", s.Path, ExpectFailedChecks, r.Tally.Passed)
	case !s.ExpectFailed && checks > 0:
		f := r.Tally.Failures[0]
		return fmt.Errorf("harness: %s: %s; first: %s %s %s %s", s.Path, r.Tally.Line(), f.Check, f.Subject, f.Verdict, f.Evidence)
	}
	return nil
}

func firstScript(fs []Result) Result {
	for _, f := range fs {
		if f.Check == "script" {
			return f
		}
	}
	return Result{}
}
