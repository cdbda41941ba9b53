package harness

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/v2a-dr/v2a/impl/failover"
)

// This file is what a live view over a Runner (`v2a serve`) reads between
// commands: the portal's views, run without being recorded and without
// running virtual time, so that looking at a world never changes it.

// viewCommands are the commands View runs: they only read state.
var viewCommands = []string{"status", "points", "alerts", "jobs", "groups", "group-points", "network", "policies", "fabric", "failover-jobs"}

// failoverViews make the failover side on first use (its hosts join the
// network): View shows them only once a failover command made it.
var failoverViews = []string{"fabric", "failover-jobs"}

// ErrNotAView is View's error for a command that is not a read-only view.
var ErrNotAView = fmt.Errorf("harness: not a view (views: %s)", strings.Join(viewCommands, ", "))

// View runs a read-only view command (status, points, alerts, …; line is
// as a script writes it, e.g. "points vm=db01 last=4") and returns what it
// prints. Unlike Exec it is not recorded (the non-interference check's
// history stays the script's) and it never changes the world: before the
// first failover command, fabric and failover-jobs say so rather than make
// the failover side. An error of the view is returned as an error.
func (r *Runner) View(line string) (string, error) {
	cmd, cas, err := datadriven.ParseLine(line)
	if err != nil {
		return "", fmt.Errorf("harness: view %q: %w", line, err)
	}
	if !slices.Contains(viewCommands, cmd) {
		return "", fmt.Errorf("%w: %q", ErrNotAView, cmd)
	}
	if r.Env == nil {
		return "", fmt.Errorf("harness: %s: no world yet", cmd)
	}
	if slices.Contains(failoverViews, cmd) && !r.FailoverStarted() {
		return "no failover yet\n", nil
	}
	if err := checkArgs(cmd, cas); err != nil {
		return "", fmt.Errorf("harness: %s: %w", cmd, err)
	}
	c, _ := commandNamed(cmd)
	return c.run(r, args(cas))
}

// FailoverStarted reports whether a failover command made the failover
// side (the fabric and the orchestrator's jobs exist).
func (r *Runner) FailoverStarted() bool {
	return r.Env != nil && r.Env.Deployment != nil && r.Env.Deployment.fo != nil
}

// FailoverJobs are the orchestrator's jobs with their tasks, oldest first
// (none before the first failover command).
func (r *Runner) FailoverJobs() ([]failover.Job, error) {
	if !r.FailoverStarted() {
		return nil, nil
	}
	return r.Env.Deployment.fo.Jobs()
}

// MachineNames are the world's machines, in the world's order.
func (r *Runner) MachineNames() []string {
	if r.Env == nil {
		return nil
	}
	return r.Env.MachineNames()
}

// Elapsed is the virtual time since the world began (0 before it).
func (r *Runner) Elapsed() time.Duration {
	if r.Env == nil {
		return 0
	}
	return r.Env.Sim.Elapsed()
}
