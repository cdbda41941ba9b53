package harness

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"
)

// T is what the Scenario builder needs of a test: *testing.T and
// *testing.B satisfy it.
type T interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Scenario builds and runs a scenario from Go, a typed way to write what a
// .scn script says. Each call is one script command run at once by the same
// Runner (Step, with the verdict rule of `v2a run`): an error fails the
// test at once (Fatalf, with the command and its output); a failed check
// fails it too (Errorf, with the evidence); so does a fault armed with
// on= that never fired by the end of the test. The world is removed when
// the test ends.
//
//	harness.NewScenario(t).
//		World(harness.WorldSpec{Machines: []string{"db01"}, Workload: "bank"}).
//		Deploy().
//		Protect("db01").
//		Run(30 * time.Minute).
//		Check("points", "schedule")
type Scenario struct {
	t   T
	r   *Runner
	n   int
	out string
	// stopped: a command's error stopped the test (Fatalf).
	stopped bool
}

// NewScenario starts a scenario for a test. Call Shutdown from TestMain
// after m.Run: it stops the Azurite process the worlds share.
func NewScenario(t T) *Scenario {
	t.Helper()
	s := &Scenario{t: t, r: &Runner{Ctx: context.Background(), Script: "builder"}}
	t.Cleanup(s.r.Close)
	t.Cleanup(s.finish) // runs first: the world is still up
	return s
}

// finish judges the end of the scenario as the end of a script: a fault
// armed (on=, corrupt-blob) that never fired fails the test, unless armed
// with unfired=ok. A test already stopped by an error is not judged again.
func (s *Scenario) finish() {
	if s.stopped {
		return
	}
	before := len(s.r.Tally.Failures)
	s.r.Finish()
	for _, f := range s.r.Tally.Failures[before:] {
		s.t.Errorf("harness: %s: %s", f.Subject, f.Evidence)
	}
}

// WorldSpec is the world to build (the `world` command). Zero values take
// the defaults: seed 1, the lab inventory, every machine in it, no
// workload.
type WorldSpec struct {
	Seed      uint64
	Inventory string   // a name under fixtures/inventory, or a path
	Machines  []string // a subset of the inventory
	Workload  string   // bank, fs, random or idle: started on every machine
	Tx        float64  // the workload's transactions (operations) a second
}

// World builds the world.
func (s *Scenario) World(w WorldSpec) *Scenario {
	s.t.Helper()
	args := []string{}
	if w.Seed != 0 {
		args = append(args, fmt.Sprintf("seed=%d", w.Seed))
	}
	if w.Inventory != "" {
		args = append(args, "inventory="+w.Inventory)
	}
	if len(w.Machines) > 0 {
		args = append(args, "machines=("+strings.Join(w.Machines, ",")+")")
	}
	if w.Workload != "" {
		args = append(args, "workload="+w.Workload)
	}
	if w.Tx != 0 {
		args = append(args, fmt.Sprintf("tx=%g", w.Tx))
	}
	return s.Do("world " + strings.Join(args, " "))
}

// Deploy starts the configuration server, process server and Azure side.
func (s *Scenario) Deploy() *Scenario {
	s.t.Helper()
	return s.Do("deploy")
}

// Protect enables replication of machines with the default policy (the
// agent is push-installed).
func (s *Scenario) Protect(vms ...string) *Scenario {
	s.t.Helper()
	return s.Do("protect vms=(" + strings.Join(vms, ",") + ")")
}

// Run advances virtual time.
func (s *Scenario) Run(d time.Duration) *Scenario {
	s.t.Helper()
	return s.Do("run for=" + d.String())
}

// Crash crashes a host (a protected machine: its agent process).
func (s *Scenario) Crash(host string) *Scenario {
	s.t.Helper()
	return s.Do("fault crash host=" + host)
}

// Restart restarts a crashed host.
func (s *Scenario) Restart(host string) *Scenario {
	s.t.Helper()
	return s.Do("fault restart host=" + host)
}

// Partition cuts two hosts (or sites) apart until Heal.
func (s *Scenario) Partition(a, b string) *Scenario {
	s.t.Helper()
	return s.Do("fault partition a=" + a + " b=" + b)
}

// Heal removes partitions and clogs.
func (s *Scenario) Heal() *Scenario {
	s.t.Helper()
	return s.Do("fault heal")
}

// Check runs property checks (disks, invariants, points, schedule, rpo,
// cut, holds, ...; see `v2a help`); each failed one fails the test with
// its evidence.
func (s *Scenario) Check(what ...string) *Scenario {
	s.t.Helper()
	before := len(s.r.Tally.Failures)
	s.Do("check what=(" + strings.Join(what, ",") + ")")
	for _, f := range s.r.Tally.Failures[before:] {
		if f.Check != "script" { // an error: Do has stopped the test
			s.t.Errorf("harness: check failed: %s", f.String())
		}
	}
	return s
}

// Do runs any script command, written as in a .scn file (e.g. `fault
// clog factor=20 for=30m`, `points vm=db01`); its output is Output().
func (s *Scenario) Do(line string) *Scenario {
	s.t.Helper()
	s.n++
	pos := fmt.Sprintf("builder:%d", s.n)
	cmd, args, err := datadriven.ParseLine(line)
	if err != nil {
		s.stopped = true
		s.t.Fatalf("harness: %s: %q: %v", pos, line, err)
		return s
	}
	before := len(s.r.Tally.Failures)
	s.out = s.r.Step(Directive{Pos: pos, Cmd: cmd, Args: args})
	for _, f := range s.r.Tally.Failures[before:] {
		if f.Check == "script" {
			s.stopped = true
			s.t.Fatalf("harness: %s: %s:\n%s", pos, line, s.out)
		}
	}
	return s
}

// Output is the last command's output.
func (s *Scenario) Output() string { return s.out }

// Tally is the checks counted so far (the closing line of `v2a run`).
func (s *Scenario) Tally() Tally { return s.r.Tally }

// Env is the world, for what the commands do not say.
func (s *Scenario) Env() *Env { return s.r.Env }
