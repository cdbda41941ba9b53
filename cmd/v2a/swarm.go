package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/progress"
	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/harness/swarm"
)

type swarmFlags struct {
	seeds         uint64
	from, to      uint64
	shard         string
	budget        time.Duration
	storage       string
	junit         string
	out           string
	keep          bool
	jobs          int
	failures      string
	progress      string
	progressEvery int
}

func newSwarmCmd() *cobra.Command {
	var f swarmFlags
	c := &cobra.Command{
		Use:   "swarm [--seeds N | --from S --to E] [--shard i/n] [--budget DURATION] [--storage memblob|azurite] [--junit FILE] [--out DIR] [--keep]",
		Short: "Run many seeded worlds, each with its own fault mix; write out the seeds that fail",
		Long: `Swarm testing: each seed draws a world (1–16 machines of the swarm
inventory, VMs and physical servers, 0–2 multi-VM groups, a policy,
workloads) and a fault mix (crashes and restarts of every component and
machine, partitions, clogging, loss, duplicates, reordering, torn and
corrupt change logs, a corrupted stream item, a deleted snapshot, a lost or
full cache), as a .scn script of ordinary harness commands. It runs with the
safety checks live (points, holds, cut), heals every fault, runs on, and
demands liveness (check what=converged: every machine protected again,
RPO within its bound, no job stuck). Some seeds then drill the healed
world: a test failover and its cleanup, or a failover, failback and
reprotect to Azure (the round trip), judged and followed by the liveness
and safety checks again.

A failing seed's script is written to DIR/seed-N.scn, run once more from the
file to show that it reproduces, and its reproduce line printed. The summary
counts, per fault kind, the seeds that injected it and how many of those
failed, then the totals and seeds per hour. --shard i/n takes the seeds with
seed % n == i (a CI matrix with no coordinator); --budget stops starting new
seeds after the duration. Each seed runs in its own 'v2a run' process
(--jobs at once): a panic fails one seed, not the swarm.

Exit codes: 0 every seed passed; 1 a seed failed; 2 bad flags; 130
interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return runSwarm(ctx, cmd, f)
		},
	}
	c.Flags().Uint64Var(&f.seeds, "seeds", 0, "run seeds 1..N (or --from/--to)")
	c.Flags().Uint64Var(&f.from, "from", 0, "first seed")
	c.Flags().Uint64Var(&f.to, "to", 0, "last seed (inclusive)")
	c.Flags().StringVar(&f.shard, "shard", "0/1", "i/n: take the seeds with seed % n == i")
	c.Flags().DurationVar(&f.budget, "budget", 0, "stop starting new seeds after this much wall time (0: no limit)")
	c.Flags().StringVar(&f.storage, "storage", "memblob", "blob storage of the worlds: memblob (in memory) or azurite")
	c.Flags().StringVar(&f.junit, "junit", "", "write a JUnit XML report (one test case per seed) to this file")
	c.Flags().StringVar(&f.out, "out", "swarm-out", "directory for the scripts of failing seeds")
	c.Flags().BoolVar(&f.keep, "keep", false, "also write the scripts of seeds that passed")
	c.Flags().IntVar(&f.jobs, "jobs", runtime.GOMAXPROCS(0), "seeds run at once")
	c.Flags().StringVar(&f.failures, "failures", "", "write every failed check of every seed to this file as JSON lines (for v2a mutants)")
	c.Flags().StringVar(&f.progress, "progress", string(progress.Auto),
		"progress on stderr: auto (bars on a terminal, else plain lines), bar (seeds done and seeds failed), plain or none; stdout is the same with any")
	c.Flags().IntVar(&f.progressEvery, "progress-every", 10, "with plain progress: a line every N seeds (0: none)")
	return c
}

func runSwarm(ctx context.Context, cmd *cobra.Command, f swarmFlags) error {
	w, ew := cmd.OutOrStdout(), cmd.ErrOrStderr()
	fl := cmd.Flags()
	switch {
	case fl.Changed("seeds") && (fl.Changed("from") || fl.Changed("to")):
		return errors.New("swarm: --seeds N or --from S --to E, not both")
	case fl.Changed("seeds"):
		if f.seeds == 0 {
			return errors.New("swarm: --seeds must be at least 1")
		}
		f.from, f.to = 1, f.seeds
	case fl.Changed("from") != fl.Changed("to"):
		return errors.New("swarm: --from and --to go together")
	case !fl.Changed("from"):
		return errors.New("swarm: say which seeds: --seeds N or --from S --to E")
	case f.to < f.from:
		return fmt.Errorf("swarm: --to %d is before --from %d", f.to, f.from)
	}
	si, sn, err := swarm.ParseShard(f.shard)
	if err != nil {
		return err
	}
	if _, err := storageMemory(f.storage); err != nil {
		return err
	}
	if f.jobs < 1 {
		return fmt.Errorf("swarm: --jobs %d: want at least 1", f.jobs)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	tmp, err := os.MkdirTemp("", "v2a-swarm-")
	if err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return fmt.Errorf("swarm: --out: %w", err)
	}
	mode, err := progress.ParseMode(f.progress)
	if err != nil {
		return fmt.Errorf("swarm: --progress: %w", err)
	}
	seeds := swarm.Seeds(f.from, f.to, si, sn)
	pg := progress.New(progress.Options{Mode: mode, Err: ew, Out: w})
	defer pg.Close()
	w = pg.Out()
	var seedsDone, seedsFailed *progress.Counter
	if pg.Mode() == progress.Bar {
		seedsDone = pg.Counter("seeds done", int64(len(seeds)))
		seedsFailed = pg.Counter("seeds failed", int64(len(seeds)))
	}
	fmt.Fprintf(w, "swarm: seeds %d..%d shard %s: %d seed(s), %d at a time, storage %s\n", f.from, f.to, f.shard, len(seeds), f.jobs, f.storage)
	repro := func(seed uint64) string {
		return fmt.Sprintf("v2a run %s --seed %d --storage %s", filepath.Join(f.out, fmt.Sprintf("seed-%d.scn", seed)), seed, f.storage)
	}
	run := func(ctx context.Context, p swarm.Plan) swarm.Result {
		path := filepath.Join(tmp, fmt.Sprintf("seed-%d.scn", p.Seed))
		if err := os.WriteFile(path, []byte(p.Script), 0o644); err != nil {
			return swarm.Result{Plan: p, Verdict: err.Error(), Failures: []harness.Result{{Check: "script", Subject: path, Verdict: harness.Illegal, Evidence: err.Error()}}}
		}
		return runSeed(ctx, exe, p, path, f.storage)
	}
	var failures []harness.Result
	rep := swarm.Swarm(ctx, swarm.Config{Seeds: seeds, Jobs: f.jobs, Budget: f.budget, Exec: run,
		Done: func(r swarm.Result, done, total int) {
			name := filepath.Join(f.out, fmt.Sprintf("seed-%d.scn", r.Plan.Seed))
			if r.Failed() || f.keep {
				if err := os.WriteFile(name, []byte(r.Plan.Script), 0o644); err != nil {
					fmt.Fprintf(ew, "swarm: %v\n", err)
				}
			}
			if r.Failed() {
				failures = append(failures, r.Failures...)
			}
			switch {
			case seedsDone != nil:
				seedsDone.Set(int64(done))
				if r.Failed() {
					seedsFailed.Inc()
				}
			case pg.Mode() == progress.Plain && f.progressEvery > 0 && (done%f.progressEvery == 0 || done == total):
				progressLine(ew, done, total, len(failures))
			}
		}})
	if seedsDone != nil {
		seedsDone.Done() // seedsFailed stays as it is, out of every seed (Close)
	}
	if rep.Setup != nil {
		// No seed was judged: no summary, no rate, no reproduction.
		return fmt.Errorf("swarm: seed %d could not be set up, so the swarm stopped (%d seed(s) not started): %s",
			rep.Setup.Plan.Seed, rep.NotRun, rep.Setup.Verdict)
	}
	// Each failing seed once more, from the file written out: the proof
	// that the file alone reproduces it.
	for i, r := range rep.Results {
		if !r.Failed() || ctx.Err() != nil {
			continue
		}
		name := filepath.Join(f.out, fmt.Sprintf("seed-%d.scn", r.Plan.Seed))
		again := runSeed(ctx, exe, r.Plan, name, f.storage)
		same := swarm.SameFailures(r.Failures, again.Failures)
		rep.Results[i].Reproduced = &same
	}
	for _, r := range rep.Results {
		if !r.Failed() {
			continue
		}
		fmt.Fprintf(w, "FAILED seed %d (faults: %s): %s\n%s", r.Plan.Seed, strings.Join(r.Plan.Used, ","), firstLineOf(r.Verdict), swarm.FailureLines(r.Failures))
		if r.Reproduced != nil {
			if *r.Reproduced {
				fmt.Fprintf(w, "  reproduced from %s: the same checks failed\n", filepath.Join(f.out, fmt.Sprintf("seed-%d.scn", r.Plan.Seed)))
			} else {
				fmt.Fprintf(w, "  NOT reproduced from its file: the second run failed other checks (or none)\n")
			}
		}
		fmt.Fprintf(w, "  reproduce: %s\n", repro(r.Plan.Seed))
	}
	rep.WriteSummary(w)
	if f.junit != "" {
		var b bytes.Buffer
		if err := rep.WriteJUnit(&b, repro); err != nil {
			return fmt.Errorf("swarm: --junit: %w", err)
		}
		if err := os.WriteFile(f.junit, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("swarm: --junit: %w", err)
		}
	}
	if f.failures != "" {
		var all []harness.Result
		for _, r := range rep.Results {
			if r.Failed() {
				all = append(all, r.Failures...)
			}
		}
		if err := writeFailures(f.failures, all); err != nil {
			return err
		}
	}
	switch {
	case ctx.Err() != nil:
		return errInterrupted
	case rep.Failed() > 0:
		return errChecksFailed
	}
	return nil
}

// progressLine is the swarm's progress, one plain line; the terminal's
// progress bars (cmd/v2a/internal/progress) can take its place.
var progressLine = func(w io.Writer, done, total, failed int) {
	fmt.Fprintf(w, "swarm: %d/%d seeds done, %d failed check(s) so far\n", done, total, failed)
}

// runSeed runs one seed's script: runSeedProcess (tests put a fake here).
var runSeed = runSeedProcess

// runSeedProcess runs a script with `v2a run` in a child process and reads
// its verdict: the failures file, the closing lines and the exit code. A
// child that dies before its closing lines (a panic) fails the seed with a
// "crash" failure carrying the end of its output.
func runSeedProcess(ctx context.Context, exe string, p swarm.Plan, path, storage string) swarm.Result {
	start := time.Now()
	res := swarm.Result{Plan: p}
	fails := path + ".failures"
	defer os.Remove(fails)
	cmd := exec.CommandContext(ctx, exe, "run", path, "--storage", storage, "--trace", "none", "--quiet", "--failures", fails)
	// Interrupted, a child stops at its next event and closes its world
	// (removing its directory) as `v2a run` does on Ctrl-C; killed only if
	// it has not within 10 s.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.Env = childEnv(os.Environ())
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res.Wall = time.Since(start)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		res.Verdict = err.Error()
		res.Failures = []harness.Result{{Check: "crash", Subject: path, Verdict: harness.Illegal, Evidence: err.Error()}}
		return res
	}
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	closed := false
	for sc.Scan() {
		l := sc.Text()
		var passed, failed int
		if n, _ := fmt.Sscanf(l, "checks: %d passed, %d failed", &passed, &failed); n == 2 {
			res.Passed, closed = passed, true
		}
		if s, ok := strings.CutPrefix(l, "trace-sha256: "); ok {
			res.TraceSum = s
		}
	}
	if ctx.Err() != nil || code == exitIntr {
		res.Interrupted, res.Verdict = true, "interrupted"
		return res
	}
	if data, err := os.ReadFile(fails); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.TrimSpace(l) == "" {
				continue
			}
			var fl Failure
			if err := json.Unmarshal([]byte(l), &fl); err == nil {
				res.Failures = append(res.Failures, harness.Result{Check: fl.Check, Subject: fl.Subject, Verdict: harness.Verdict(fl.Verdict), Evidence: fl.Evidence})
			}
		}
	}
	// A child that could not set the seed up (exit 2 without a panic's
	// trace: no fixtures, no working directory, a script the harness
	// refuses) says nothing about the system, and every seed would fail
	// the same way: the swarm stops (Result.Setup).
	panicked := strings.Contains(out.String(), "panic: ") && strings.Contains(out.String(), "\ngoroutine ")
	if code == exitSetup && !panicked {
		res.Setup = true
		res.Verdict = swarm.SetupVerdict(res.Failures, lastLine(out.String()))
		return res
	}
	switch {
	case !closed:
		tail := strings.TrimSpace(out.String())
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		res.Failures = append(res.Failures, harness.Result{Check: "crash", Subject: path, Verdict: harness.Illegal, Evidence: fmt.Sprintf("exit %d before the closing lines: %s", code, tail)})
		res.Verdict = fmt.Sprintf("v2a run died (exit %d)", code)
	case code != 0:
		res.Verdict = fmt.Sprintf("v2a run exited %d", code)
		if len(res.Failures) == 0 {
			res.Failures = []harness.Result{{Check: "script", Subject: path, Verdict: harness.Illegal, Evidence: tailLines(out.String(), 5)}}
		}
	}
	return res
}

// childEnv is a seed's child's environment: this one, with the Go
// runtime told to give memory back with MADV_FREE (madvdontneed=0) unless
// GODEBUG says otherwise. A world's heap swells and shrinks by hundreds of
// MiB; with MADV_FREE the pages stay mapped until the kernel wants them,
// so the next swell does not fault them in again (a seed spent a fifth of
// its CPU in the kernel, about a sixth less of it with this).
func childEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	debug := "madvdontneed=0"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if strings.Contains(v, "madvdontneed=") {
				debug = v
			} else if v != "" {
				debug = v + "," + debug
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GODEBUG="+debug)
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

func firstLineOf(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func tailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
