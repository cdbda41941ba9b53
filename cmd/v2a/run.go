package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/progress"
	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/scenarios"
	"github.com/v2a-dr/v2a/sim/sched"
)

type runFlags struct {
	seed     uint64
	seedSet  bool
	target   string
	trace    string
	quiet    bool
	cpuProf  string
	failures string
	report   string
	progress string
	storage  string
}

func newRunCmd() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run SCENARIO [--seed N]",
		Short: "Run a scenario script (a .scn file, or the name of a built-in one)",
		Long: `Run a scenario script and check the properties it asks for.

SCENARIO is a path to a .scn file, or the name of a built-in scenario (see
'v2a list'). The run prints a SEED= banner and the command that reproduces
it, the trace as it happens (--trace), each command's output, and ends with
exactly two lines that scripts rely on:

  checks: N passed, M failed
  trace-sha256: HEX

The same scenario and seed always give the same trace hash.

Exit codes: 0 every check passed; 1 a check failed (or a command printed an
unexpected error, or an armed fault failed to inject or never fired: see
'fault' in 'v2a help'); 2 the run could not be
set up (a bad flag, a script that cannot be read or parsed, an unknown
command, a command before 'world', 'world' twice, a world that cannot be
built); 130 interrupted (Ctrl-C or SIGTERM: the running command stops at
the next event, and the closing lines are still printed).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.seedSet = cmd.Flags().Changed("seed")
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return runScenario(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], f)
		},
	}
	c.Flags().Uint64Var(&f.seed, "seed", 0, "seed for the run (default: the scenario's own)")
	c.Flags().StringVar(&f.target, "target", "", "target file selecting the world (default "+harness.DefaultTarget+")")
	c.Flags().StringVar(&f.trace, "trace", "story", "live trace: story (what happens), full (every event) or none")
	c.Flags().BoolVar(&f.quiet, "quiet", false, "print only the banner and the closing lines")
	c.Flags().StringVar(&f.cpuProf, "cpuprofile", "", "write a CPU profile of the run to this file")
	c.Flags().StringVar(&f.failures, "failures", "", "write each failed check to this file as a JSON line (for tools: v2a mutants)")
	c.Flags().StringVar(&f.storage, "storage", "azurite", "blob storage of a simulated world: azurite (a local Azurite process) or memblob (in memory, faster; it passes the same conformance suite)")
	c.Flags().StringVar(&f.report, "report", "", "write the run as one self-contained HTML page to this file (timelines, points, rounds, jobs, checks)")
	addProgressFlag(c, &f.progress)
	return c
}

// addProgressFlag adds --progress to a command that runs long.
func addProgressFlag(c *cobra.Command, mode *string) {
	c.Flags().StringVar(mode, "progress", string(progress.Auto),
		"progress on stderr: auto (bars on a terminal, else plain lines), bar, plain or none; stdout is the same with any")
}

func loadScript(name string) (path string, data []byte, err error) {
	if st, err := os.Stat(name); err == nil && !st.IsDir() {
		data, err := os.ReadFile(name)
		return name, data, err
	}
	data, err = scenarios.Read(name)
	if err != nil {
		return "", nil, fmt.Errorf("no scenario %q: not a file, nor one of: %s", name, strings.Join(scenarios.Names(), ", "))
	}
	return "scenarios/" + strings.TrimSuffix(name, ".scn") + ".scn", data, nil
}

// interruptible is a context cancelled by the first Ctrl-C or SIGTERM. The
// run then stops at the next event and closes cleanly; a second signal gets
// the default behaviour (the process dies at once; the next run sweeps the
// world directory it leaves).
func interruptible(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// storyKinds are the trace events a person wants to watch.
var storyKinds = map[string]bool{
	"log": true, "warn": true, "error": true, "fault": true, "crash": true, "restart": true,
	"world": true, "vsphere": true, "machine": true, "workload": true, "alert": true, "deploy": true,
}

// runScenario runs a script until its end, its first set-up error, or ctx
// is done, and always prints the closing lines once the script parsed. Its
// error says which exit code applies: nil, errChecksFailed,
// errInterrupted, errScriptSetup, or another (the run could not start).
// Progress (--progress) goes to errw, and never changes what w gets.
func runScenario(ctx context.Context, w, errw io.Writer, name string, f runFlags) error {
	path, data, err := loadScript(name)
	if err != nil {
		return err
	}
	switch f.trace {
	case "story", "full", "none":
	default:
		return fmt.Errorf("--trace=%s: want story, full or none", f.trace)
	}
	if f.report != "" {
		// Refused before the run, not after an hour of it.
		if err := reportWritable(f.report); err != nil {
			return err
		}
	}
	mode, err := progress.ParseMode(f.progress)
	if err != nil {
		return fmt.Errorf("--progress: %w", err)
	}
	memory, err := storageMemory(f.storage)
	if err != nil {
		return err
	}
	if f.cpuProf != "" {
		pf, err := os.Create(f.cpuProf)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	s, err := harness.NewScript(path, data)
	if err != nil {
		return err
	}
	seed := f.seed
	if !f.seedSet {
		seed = scriptSeed(s.Directives)
	}
	r := &harness.Runner{Seed: &seed, Script: path, MemoryStorage: memory}
	if f.target != "" {
		t, err := harness.LoadTarget(f.target)
		if err != nil {
			return err
		}
		if _, err := t.ApplyEnv(os.Getenv); err != nil {
			return err
		}
		r.Target = t
	}
	r.Ctx = ctx
	var rec *harness.ReportRecorder
	if f.report != "" {
		rec = harness.NewReportRecorder(0)
		r.Recorder = rec
	}
	pg := progress.New(progress.Options{Mode: mode, Err: errw, Out: w})
	defer pg.Close()
	w = pg.Out()
	if mode != progress.None {
		r.OnProgress = pg.Script(progress.ScriptOptions{}).Observe
	}
	// Close removes the world's directory on every way out of here: the
	// end, an error, an interrupt, a panic.
	defer r.Close()

	fmt.Fprintf(w, "SEED=%d scenario=%s\n", seed, path)
	repro := fmt.Sprintf("v2a run %s --seed %d", path, seed)
	if memory {
		repro += " --storage memblob"
	}
	if f.target != "" {
		repro += " --target " + f.target
	}
	fmt.Fprintf(w, "reproduce: %s\n\n", repro)
	out := w
	if f.quiet {
		out = io.Discard
	}
	switch f.trace {
	case "story":
		r.Live, r.LiveFilter = out, func(k string) bool { return storyKinds[k] }
	case "full":
		r.Live = out
	}
	// The one runner (harness.Runner.RunScript) and its one verdict rule
	// (Runner.Verdict): `go test ./scenarios` and RunScenario use the same.
	interrupted := r.RunScript(s, func(d harness.Directive, res string) {
		cmdline := d.Cmd
		for _, a := range d.Args {
			cmdline += " " + a.String()
		}
		fmt.Fprintf(out, "\n> %s\n%s", cmdline, indent(res))
	})
	if interrupted {
		fmt.Fprintf(w, "interrupted: stopped at %s of virtual time, before the end of the script\n", elapsed(r))
	}
	if f.failures != "" {
		if err := writeFailures(f.failures, r.Tally.Failures); err != nil {
			fmt.Fprintf(w, "v2a: %v\n", err)
		}
	}
	if rec != nil {
		if err := writeReport(f.report, r, rec, harness.ReportMeta{Scenario: path, Reproduce: repro}); err != nil {
			fmt.Fprintf(w, "v2a: %v\n", err)
		} else {
			fmt.Fprintf(w, "report: %s\n", f.report)
		}
	}
	for _, fl := range r.Tally.Failures {
		fmt.Fprintf(w, "FAILED %s\n", fl.String())
	}
	if len(r.Tally.Failures) > 0 {
		fmt.Fprintf(w, "reproduce: %s\n", repro)
	}
	fmt.Fprintln(w, r.Tally.Line())
	verdict := r.Verdict(s)
	if s.ExpectFailed && verdict == nil {
		fmt.Fprintf(w, "failed checks expected: the script declares %q\n", harness.ExpectFailedChecks)
	}
	sum := "none"
	if r.Env != nil {
		sum = r.Env.Trace.Sum()
	}
	fmt.Fprintf(w, "trace-sha256: %s\n", sum)
	switch {
	case interrupted:
		return errInterrupted
	case r.SetupFailed:
		return errScriptSetup
	case verdict != nil:
		return errChecksFailed
	}
	return nil
}

// storageMemory reads a --storage flag: whether the world's blob storage
// is memblob (true) or Azurite (false).
func storageMemory(s string) (bool, error) {
	switch s {
	case "azurite":
		return false, nil
	case "memblob":
		return true, nil
	}
	return false, fmt.Errorf("--storage=%s: want azurite or memblob", s)
}

func elapsed(r *harness.Runner) string {
	if r.Env == nil {
		return "0s"
	}
	return sched.FormatElapsed(r.Env.Sim.Elapsed())
}

// Failure is one failed check as --failures writes it, one JSON object a
// line. Check "script" is an error printed by a command (the run did not
// go as the script meant), not a property check.
type Failure struct {
	Check    string `json:"check"`
	Subject  string `json:"subject"`
	Verdict  string `json:"verdict"`
	Evidence string `json:"evidence,omitempty"`
}

func writeFailures(path string, rs []harness.Result) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range rs {
		if err := enc.Encode(Failure{Check: r.Check, Subject: r.Subject, Verdict: string(r.Verdict), Evidence: r.Evidence}); err != nil {
			return err
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("--failures: %w", err)
	}
	return nil
}

// scriptSeed is the seed= of the script's world command, or 1.
func scriptSeed(ds []harness.Directive) uint64 {
	for _, d := range ds {
		if d.Cmd != "world" {
			continue
		}
		for _, a := range d.Args {
			if a.Key == "seed" && len(a.Vals) == 1 {
				var s uint64
				if _, err := fmt.Sscan(a.Vals[0], &s); err == nil {
					return s
				}
			}
		}
	}
	return 1
}

func indent(s string) string {
	var b bytes.Buffer
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
