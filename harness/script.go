package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/v2a-dr/v2a/sim/sched"
)

// Directive is one command of a scenario script: `cmd key=val ...`, an
// optional input block, and (in files) the expected output after `----`.
type Directive struct {
	Pos      string // file:line, for errors
	Cmd      string
	Args     []datadriven.CmdArg
	Input    string
	Expected string
}

// ParseScript splits a .scn file (cockroachdb/datadriven format) into
// directives (NewScript also reads the header). The CLI steps them with
// Runner.RunScript; `go test` (RunScenario) steps the same files through
// datadriven, which also compares outputs — both through Runner.Step.
func ParseScript(name string, data []byte) ([]Directive, error) {
	var out []Directive
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	var cur *Directive
	state := 0 // 0 between directives, 1 input, 2 expected output
	var buf []string
	flush := func() {
		if cur == nil {
			return
		}
		text := strings.Join(buf, "\n")
		if state == 1 {
			cur.Input = text
		} else if state == 2 {
			cur.Expected = text
		}
		out = append(out, *cur)
		cur, buf, state = nil, nil, 0
	}
	for sc.Scan() {
		line++
		l := sc.Text()
		switch {
		case cur == nil:
			t := strings.TrimSpace(l)
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			cmd, args, err := datadriven.ParseLine(t)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, line, err)
			}
			cur = &Directive{Pos: fmt.Sprintf("%s:%d", name, line), Cmd: cmd, Args: args}
			state = 1
		case l == "----":
			if state == 1 {
				cur.Input = strings.Join(buf, "\n")
				buf = nil
				state = 2
			}
		case l == "" && state == 2:
			flush()
		case l == "" && state == 1 && len(buf) == 0:
			flush()
		default:
			buf = append(buf, l)
		}
	}
	flush()
	return out, sc.Err()
}

// Runner executes scenario directives on an environment it builds with the
// `world` command. Every command prints something; errors are printed as
// output (`error: ...`), never thrown, so that scripts can assert them.
type Runner struct {
	Ctx context.Context
	// Target overrides the default target for `world`.
	Target *Target
	// Seed, when set, overrides the seed= of `world` (the CLI's --seed).
	Seed *uint64
	// Live and LiveFilter receive the trace as it happens.
	Live       io.Writer
	LiveFilter func(kind string) bool
	// Script is the path of the script being run, for the reproduce line.
	Script string
	// MemoryStorage runs the world's blob storage in memory
	// (impl/blob/memblob) instead of Azurite: `v2a run --storage memblob`
	// and the swarm.
	MemoryStorage bool

	Env *Env
	// Recorder, when set, gathers the run for its HTML report (Report).
	Recorder  *ReportRecorder
	traceMark int
	Tally     Tally
	// interruptSaid: the interrupt was reported (once, by the command it
	// stopped).
	interruptSaid bool
	// SetupFailed is set by Step when a command failed, unexpectedly,
	// because the script is malformed (an unknown command, a command
	// before `world`, `world` twice, a world that cannot be built): the run
	// could not be set up. An expected one (errors.scn) is output.
	SetupFailed bool
	// lastSetup: the last Exec's error was a setup error.
	lastSetup bool
	// history is every directive executed so far with the virtual time it
	// took: the non-interference check replays it without the failover
	// commands (noninterference.go).
	history []stepRecord

	// OnProgress, when set, is told where the run stands (RunScript
	// only): before and after each command, and during one each time
	// ProgressEvery (default DefaultProgressEvery) of virtual time has
	// passed. It is called on the runner's goroutine; it must not touch the
	// world, and whatever it does the trace is the same.
	OnProgress    func(Progress)
	ProgressEvery time.Duration
	prog          progressState

	// cur is the directive being executed (the line a fault is armed on).
	cur Directive
	// faults is every fault armed so far, with its outcome (armedfault.go);
	// injecting is the one whose injection is running.
	faults    []*armedFault
	injecting *armedFault
	// finished: Finish judged the armed faults.
	finished bool
	// lastFaults: the faults the last Exec reported as failed (Step counts
	// them); lastOwnError: its command itself printed an error.
	lastFaults   []Result
	lastOwnError bool
}

// setupError is an error in the script's structure rather than in the
// system under test: an unknown command, a command before `world`, `world`
// twice, a world that cannot be built. The CLI exits 2 for these.
type setupError struct{ error }

func (e setupError) Unwrap() error { return e.error }

// Close releases the environment.
func (r *Runner) Close() {
	if r.Env != nil {
		r.Env.Close()
		r.Env = nil
	}
}

// Exec runs one directive and returns its output.
//
// Paths under the module root are printed relative to it, so that outputs
// are the same in every checkout.
func (r *Runner) Exec(d Directive) string {
	var start time.Duration
	if r.Env != nil {
		start = r.Env.Sim.Elapsed()
	}
	r.cur = d
	out, err := r.exec(d)
	failed := r.takeFailedFaults()
	if r.Env != nil {
		r.history = append(r.history, stepRecord{d: d, start: start, end: r.Env.Sim.Elapsed(), failed: err != nil || len(failed) > 0})
	}
	r.lastSetup = false
	var ae argError
	if errors.As(err, &ae) {
		err = fmt.Errorf("%s: %w", d.Cmd, err)
	}
	if err != nil {
		out += "error: " + err.Error() + "\n"
		var se setupError
		if errors.As(err, &se) {
			r.lastSetup = true
		}
	}
	if r.Env != nil && r.Env.Sim.Interrupted() && !r.interruptSaid {
		// The context was cancelled (Ctrl-C): the command stopped at an
		// event boundary, and what it printed is as far as it got.
		r.interruptSaid = true
		out += fmt.Sprintf("error: interrupted at %s of virtual time\n", sched.FormatElapsed(r.Env.Sim.Elapsed()))
	}
	// A fault armed earlier that fired during this command and could not be
	// injected: said here, where it happened (Step counts it whatever the
	// expected output says).
	r.lastOwnError, r.lastFaults = hasError(out), nil
	for _, f := range failed {
		msg := r.clean("error: " + f.failure())
		out += msg + "\n"
		r.lastFaults = append(r.lastFaults, Result{Check: "script", Subject: f.pos, Verdict: Illegal, Evidence: msg})
	}
	return r.clean(out)
}

// clean spells what differs between checkouts and worlds the same in
// every run: paths under the module root relative to it, the world's
// random container prefix as <prefix>-.
func (r *Runner) clean(out string) string {
	if root, rerr := ModuleRoot(); rerr == nil {
		out = strings.ReplaceAll(out, root+string(filepath.Separator), "")
	}
	if r.Env != nil && r.Env.prefix != "" {
		// The world's container prefix is random (worlds share one Azurite).
		out = strings.ReplaceAll(out, r.Env.prefix, "<prefix>-")
	}
	return out
}

func (r *Runner) exec(d Directive) (string, error) {
	if _, ok := commandNamed(d.Cmd); !ok {
		return "", setupError{fmt.Errorf("unknown command %q (known: %s)", d.Cmd, strings.Join(Commands, ", "))}
	}
	if err := checkArgs(d.Cmd, d.Args); err != nil {
		return "", err
	}
	a := args(d.Args)
	if d.Cmd != "world" && r.Env == nil {
		return "", setupError{fmt.Errorf("%s: no world yet: start the script with `world`", d.Cmd)}
	}
	c, _ := commandNamed(d.Cmd) // known: commandKeys has it
	return c.run(r, a)
}
