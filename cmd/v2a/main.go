// Command v2a is the VMware-to-Azure disaster-recovery testbed: it runs
// scripted scenarios in a deterministic simulated world (vcsim and Azurite in
// the loop) and checks the recovery points they make.
//
// Exit codes: 0 every check passed; 1 a check failed (a correctness bug);
// 2 the run could not be set up (bad flags, missing tools, bad fixtures, a
// malformed script); 130 interrupted (Ctrl-C, SIGTERM). The daemons
// (configsrv, processsrv, azuresvc, agent): 0 drained after SIGTERM or
// SIGINT; 1 the drain failed; 2 could not start; 130 a second signal.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/harness"
)

// Exit codes.
const (
	exitOK     = 0
	exitChecks = 1
	exitSetup  = 2
	exitIntr   = 130
)

var (
	// errChecksFailed marks a run that completed with failed checks.
	errChecksFailed = errors.New("checks failed")
	// errScriptSetup marks a run stopped by a malformed script (its error
	// is in the output already).
	errScriptSetup = errors.New("the script could not be set up (see the error above)")
	// errInterrupted marks a run stopped by a signal.
	errInterrupted = errors.New("interrupted")
)

func main() {
	code := execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	harness.Shutdown()
	os.Exit(code)
}

// execute runs the CLI with args and returns its exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "v2a",
		Short:         "v2a: a simulation-first testbed for VMware/physical to Azure replication",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newCertifyCmd(), newDemoCmd(), newListCmd(), newMutantsCmd(), newSwarmCmd(), newVCSimCmd())
	root.AddCommand(newDaemonCmds()...)
	root.AddCommand(newEnrollCmd(), newRevokeCmd(), newCACmd(), newServeCmd())
	root.SetHelpCommand(newHelpCmd(root))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	code := exitCode(err)
	switch code {
	case exitChecks:
		if errors.Is(err, daemon.ErrRun) || errors.Is(err, errDrillFailed) {
			fmt.Fprintln(stderr, "v2a:", err)
		}
	case exitOK:
	case exitIntr:
		fmt.Fprintln(stderr, "v2a: interrupted")
	default:
		fmt.Fprintln(stderr, "v2a:", err)
	}
	return code
}

// exitCode maps what a command returned to the process's exit code.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errChecksFailed), errors.Is(err, errMutantsLived):
		return exitChecks
	case errors.Is(err, errInterrupted), errors.Is(err, daemon.ErrInterrupted):
		return exitIntr
	case errors.Is(err, daemon.ErrRun):
		return exitChecks
	}
	return exitSetup
}
