package main

import (
	"github.com/spf13/cobra"
)

// demoScenario is what `v2a demo` runs.
const demoScenario = "demo"

func newDemoCmd() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the demonstration scenario: a small protected estate, replicated and checked",
		RunE: func(cmd *cobra.Command, args []string) error {
			f.seedSet = cmd.Flags().Changed("seed")
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return runScenario(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), demoScenario, f)
		},
	}
	c.Flags().Uint64Var(&f.seed, "seed", 0, "seed for the run (default: the scenario's own)")
	c.Flags().StringVar(&f.target, "target", "", "target file selecting the world")
	c.Flags().StringVar(&f.trace, "trace", "story", "live trace: story, full or none")
	c.Flags().BoolVar(&f.quiet, "quiet", false, "print only the banner and the closing lines")
	c.Flags().StringVar(&f.report, "report", "", "write the run as one self-contained HTML page to this file")
	addProgressFlag(c, &f.progress)
	return c
}
