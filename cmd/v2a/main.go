// Command v2a is the VMware-to-Azure disaster-recovery testbed: it runs
// scripted scenarios in a deterministic simulated world (vcsim and Azurite in
// the loop) and checks the recovery points they make.
//
// Exit codes: 0 every check passed; 1 a check failed (a correctness bug);
// 2 the run could not be set up (bad flags, missing tools, bad fixtures).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/harness"
)

// Exit codes.
const (
	exitOK     = 0
	exitChecks = 1
	exitSetup  = 2
)

// errChecksFailed marks a run that completed with failed checks.
var errChecksFailed = errors.New("checks failed")

func main() {
	root := &cobra.Command{
		Use:           "v2a",
		Short:         "v2a: a simulation-first testbed for VMware/physical to Azure replication",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newDemoCmd(), newListCmd())
	err := root.Execute()
	harness.Shutdown()
	switch {
	case err == nil:
		os.Exit(exitOK)
	case errors.Is(err, errChecksFailed):
		os.Exit(exitChecks)
	default:
		fmt.Fprintln(os.Stderr, "v2a:", err)
		os.Exit(exitSetup)
	}
}
