package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/scenarios"
)

type runFlags struct {
	seed    uint64
	seedSet bool
	target  string
	trace   string
	quiet   bool
	cpuProf string
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

The same scenario and seed always give the same trace hash.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.seedSet = cmd.Flags().Changed("seed")
			return runScenario(cmd.OutOrStdout(), args[0], f)
		},
	}
	c.Flags().Uint64Var(&f.seed, "seed", 0, "seed for the run (default: the scenario's own)")
	c.Flags().StringVar(&f.target, "target", "", "target file selecting the world (default "+harness.DefaultTarget+")")
	c.Flags().StringVar(&f.trace, "trace", "story", "live trace: story (what happens), full (every event) or none")
	c.Flags().BoolVar(&f.quiet, "quiet", false, "print only the banner and the closing lines")
	c.Flags().StringVar(&f.cpuProf, "cpuprofile", "", "write a CPU profile of the run to this file")
	return c
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

// storyKinds are the trace events a person wants to watch.
var storyKinds = map[string]bool{
	"log": true, "warn": true, "error": true, "fault": true, "crash": true, "restart": true,
	"world": true, "vsphere": true, "machine": true, "workload": true, "alert": true, "deploy": true,
}

func runScenario(w io.Writer, name string, f runFlags) error {
	path, data, err := loadScript(name)
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
	ds, err := harness.ParseScript(path, data)
	if err != nil {
		return err
	}
	seed := f.seed
	if !f.seedSet {
		seed = scriptSeed(ds)
	}
	r := &harness.Runner{Seed: &seed, Script: path}
	if f.target != "" {
		t, err := harness.LoadTarget(f.target)
		if err != nil {
			return err
		}
		r.Target = t
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r.Ctx = ctx
	defer r.Close()

	fmt.Fprintf(w, "SEED=%d scenario=%s\n", seed, path)
	repro := fmt.Sprintf("v2a run %s --seed %d", path, seed)
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
	case "none":
	default:
		return fmt.Errorf("--trace=%s: want story, full or none", f.trace)
	}
	for _, d := range ds {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted")
		}
		cmdline := d.Cmd
		for _, a := range d.Args {
			cmdline += " " + a.String()
		}
		res := r.Exec(d)
		fmt.Fprintf(out, "\n> %s\n%s", cmdline, indent(res))
		if strings.HasPrefix(res, "error: ") || strings.Contains(res, "\nerror: ") {
			r.Tally.Add(harness.Result{Check: "script", Subject: d.Pos, Verdict: harness.Illegal, Evidence: strings.TrimSpace(res)})
		}
	}
	for _, fl := range r.Tally.Failures {
		fmt.Fprintf(w, "FAILED %s\n", fl.String())
	}
	if len(r.Tally.Failures) > 0 {
		fmt.Fprintf(w, "reproduce: %s\n", repro)
	}
	fmt.Fprintln(w, r.Tally.Line())
	sum := "none"
	if r.Env != nil {
		sum = r.Env.Trace.Sum()
	}
	fmt.Fprintf(w, "trace-sha256: %s\n", sum)
	if r.Tally.Failed > 0 {
		return errChecksFailed
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
