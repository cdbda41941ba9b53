// Progress: what a person watching a long run sees (a bar per task on a
// terminal, a plain line now and then in a CI log). The runner reports it
// to Runner.OnProgress at command boundaries and, during a command, as
// virtual time passes; reading it never changes the world, so a run makes
// the same trace whether it is watched or not.

package harness

import (
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/sim/sched"
)

// DefaultProgressEvery is how much virtual time passes between two
// progress reports during a command when Runner.ProgressEvery is zero.
const DefaultProgressEvery = 30 * time.Second

// Progress is where a script run stands.
type Progress struct {
	Script string
	// Done commands of the script's Total have finished.
	Done, Total int
	// Command is the running command's line (`run for=30m`), "" between
	// commands and once the script has ended.
	Command string
	// Elapsed is the virtual time since the epoch.
	Elapsed time.Duration
	// SpanStart and SpanEnd are the virtual times (since the epoch) between
	// which the running command advances the clock: a `run for=`, a `wait`
	// or a job's limit. SpanEnd is zero when the command runs no such span.
	// A command that reaches its goal early ends before SpanEnd.
	SpanStart, SpanEnd time.Duration
	// MachinesKnown: the configuration server answered (it is deployed and
	// up), and Machines is its every machine, sorted by name.
	MachinesKnown bool
	Machines      []MachineProgress
}

// MachineProgress is one machine in a Progress.
type MachineProgress struct {
	Name  string
	State string // configsrv state: initial-sync, protected, …
	// SyncedBytes of SyncTotalBytes of the current generation's initial
	// copy, as of the machine's last heartbeat.
	SyncedBytes, SyncTotalBytes int64
}

// Syncing reports whether the machine is making an initial copy (the first
// or a resync).
func (m MachineProgress) Syncing() bool {
	return m.State == string(configsrv.StateInitialSync) || m.State == string(configsrv.StateResyncing)
}

// Protected reports whether the machine's copy is complete and it
// replicates.
func (m MachineProgress) Protected() bool { return m.State == string(configsrv.StateProtected) }

// progressState is the runner's side of progress reporting.
type progressState struct {
	hooked      *Env // the world whose clock is observed
	done, total int
	command     string
}

// Line is the directive as a script writes it: `cmd key=val …`.
func (d Directive) Line() string {
	s := d.Cmd
	for _, a := range d.Args {
		s += " " + a.String()
	}
	return s
}

// reportProgress hands the run's progress to OnProgress, when set.
func (r *Runner) reportProgress() {
	if r.OnProgress == nil {
		return
	}
	r.hookProgress()
	r.OnProgress(r.progress())
}

// hookProgress observes the world's clock once the world exists.
func (r *Runner) hookProgress() {
	if r.Env == nil || r.prog.hooked == r.Env {
		return
	}
	r.prog.hooked = r.Env
	every := r.ProgressEvery
	if every <= 0 {
		every = DefaultProgressEvery
	}
	// The clock's one hook is called before each move; progress keeps its
	// own due time and reports the first move that reaches it, with the
	// time moved to (the world it reads is the one just before).
	sim := r.Env.Sim
	next := sim.Now().Add(every)
	sim.OnAdvance(func(to time.Time) {
		if to.Before(next) {
			return
		}
		next = to.Add(every)
		r.OnProgress(r.progressAt(to.Sub(sched.Epoch)))
	})
}

// progress reads where the run stands; it only reads the world.
func (r *Runner) progress() Progress {
	if r.Env == nil {
		return r.progressAt(0)
	}
	return r.progressAt(r.Env.Sim.Elapsed())
}

// progressAt is progress with the clock read as elapsed.
func (r *Runner) progressAt(elapsed time.Duration) Progress {
	p := Progress{Script: r.Script, Done: r.prog.done, Total: r.prog.total, Command: r.prog.command}
	e := r.Env
	if e == nil {
		return p
	}
	p.Elapsed = elapsed
	if r.prog.command != "" {
		p.SpanStart, p.SpanEnd = e.span.start, e.span.end
	}
	if e.Deployment == nil {
		return p
	}
	st, err := e.Deployment.ConfigStatus()
	if err != nil {
		return p
	}
	p.MachinesKnown = true
	for _, m := range st.Machines {
		p.Machines = append(p.Machines, MachineProgress{Name: m.Name, State: string(m.State), SyncedBytes: m.SyncedBytes, SyncTotalBytes: m.SyncTotalBytes})
	}
	return p
}

// clockSpan is the virtual time a command is running toward (Progress).
type clockSpan struct{ start, end time.Duration }

// runSpan records that the clock now runs for up to d (Progress.SpanEnd).
func (e *Env) runSpan(d time.Duration) {
	now := e.Sim.Elapsed()
	e.span = clockSpan{start: now, end: now + d}
}
