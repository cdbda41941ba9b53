package main

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/internal/mutants"
	"github.com/v2a-dr/v2a/harness"
)

// errMutantsLived marks a suite where a mutant survived or rotted.
var errMutantsLived = errors.New("mutants: not every mutant was killed")

func newMutantsCmd() *cobra.Command {
	var (
		dir  string
		run  string
		jobs int
		tmo  time.Duration
	)
	c := &cobra.Command{
		Use:   "mutants [--dir harness/testdata/mutants] [--run REGEXP] [--jobs N]",
		Short: "Run the mutant suite: plant each curated bug and demand that its check catches it",
		Long: `Run the mutant suite. Each harness/testdata/mutants/*.patch plants one bug;
its header names the scenario that must catch it and the check that must
fail. For each, v2a copies the tree (the files git tracks, as they are in
the working tree) into a temporary directory, applies the patch, builds
v2a there (sharing the Go build cache) and runs the scenario.

It prints one line per mutant — killed by which check in which scenario, or
SURVIVED, or ROTTED (the patch no longer applies or builds) — and the total
time. It exits 1 if any mutant was not killed by its named check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var re *regexp.Regexp
			if run != "" {
				var err error
				if re, err = regexp.Compile(run); err != nil {
					return fmt.Errorf("--run: %w", err)
				}
			}
			if jobs < 1 || jobs > 4 {
				return fmt.Errorf("--jobs=%d: want 1 to 4 (each job is a build and a simulation)", jobs)
			}
			root, err := harness.ModuleRoot()
			if err != nil {
				return err
			}
			d := dir
			if d == "" {
				d = root + "/harness/testdata/mutants"
			}
			ms, err := mutants.Load(d, re)
			if err != nil {
				return err
			}
			if len(ms) == 0 {
				return fmt.Errorf("mutants: no mutant in %s matches --run=%q: nothing to judge", d, run)
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "mutants: %d from %s, %d at a time\n", len(ms), d, jobs)
			start := time.Now()
			s := &mutants.Suite{Root: root, Links: []string{"sim/azurite/node_modules"}, Jobs: jobs, Timeout: tmo, Log: cmd.ErrOrStderr()}
			rs := s.Run(ctx, ms)
			dead := 0
			for _, r := range rs {
				fmt.Fprintln(w, r.Line())
				if r.Outcome.Dead() {
					dead++
				}
			}
			fmt.Fprintf(w, "mutants: %d of %d killed in %s\n", dead, len(rs), time.Since(start).Round(time.Second))
			if ctx.Err() != nil {
				return errInterrupted
			}
			if dead < len(rs) {
				return errMutantsLived
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "the directory of mutant patches (default harness/testdata/mutants)")
	c.Flags().StringVar(&run, "run", "", "run only the mutants whose name matches this regular expression")
	c.Flags().IntVar(&jobs, "jobs", 1, "mutants at once (1 or 2 on a small machine)")
	c.Flags().DurationVar(&tmo, "timeout", 15*time.Minute, "a mutant's limit for its build and its run")
	return c
}
