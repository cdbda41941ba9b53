package harness

import (
	"fmt"
	"strings"
	"testing"
)

// recT records what the builder reports instead of failing the test.
type recT struct {
	errs, fatals []string
	cleanups     []func()
}

func (t *recT) Helper() {}
func (t *recT) Errorf(format string, args ...any) {
	t.errs = append(t.errs, fmt.Sprintf(format, args...))
}
func (t *recT) Fatalf(format string, args ...any) {
	t.fatals = append(t.fatals, fmt.Sprintf(format, args...))
}
func (t *recT) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *recT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// TestBuilderFails is the builder's negative control: a failed check is
// an Errorf with its evidence, an error a Fatalf with the command.
func TestBuilderFails(t *testing.T) {
	rt := &recT{}
	defer rt.done()
	s := NewScenario(rt).World(WorldSpec{Seed: 2, Machines: []string{"db01"}})
	if len(rt.errs)+len(rt.fatals) != 0 {
		t.Fatalf("world: %v %v", rt.errs, rt.fatals)
	}
	s.Do("write vm=db01 off=0 len=4096").Check("invariants")
	if len(rt.errs) == 0 || !strings.Contains(rt.errs[0], "harness: check failed: invariant") && strings.Contains(rt.errs[0], "nothing to judge") {
		t.Errorf("a check over nothing did not fail the test: %q (output %s)", rt.errs, s.Output())
	}
	s.Do("write vm=ghost off=0")
	if len(rt.fatals) != 1 || !strings.Contains(rt.fatals[0], `builder:4: write vm=ghost off=0:`) {
		t.Errorf("an error did not stop the test: %q", rt.fatals)
	}
}

// TestBuilderArmedFaultNeverFired: a fault armed with on= that never fired
// by the end of the test fails it (an Errorf from the builder's cleanup);
// unfired=ok is the control; a test an error already stopped is not
// judged again.
func TestBuilderArmedFaultNeverFired(t *testing.T) {
	for _, c := range []struct {
		name  string
		lines []string
		errs  int
	}{
		{"never fired", []string{"fault crash host=db01 on=no-such-event"}, 1},
		{"unfired=ok", []string{"fault crash host=db01 on=no-such-event unfired=ok"}, 0},
		{"fired", []string{"fault partition a=db01 b=ps01 on=fault-crash-db01", "fault crash host=db01", "run for=1s"}, 0},
		{"stopped by an error", []string{"fault crash host=db01 on=no-such-event", "write vm=ghost off=0"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := &recT{}
			s := NewScenario(rt)
			s.r.MemoryStorage = true
			s.World(WorldSpec{Seed: 2, Machines: []string{"db01"}})
			for _, l := range c.lines {
				s.Do(l)
			}
			rt.done()
			if len(rt.errs) != c.errs {
				t.Fatalf("%d Errorf, want %d: %q (fatals %q)", len(rt.errs), c.errs, rt.errs, rt.fatals)
			}
			if c.errs > 0 && !strings.Contains(rt.errs[0], `harness: builder:2: error: fault crash host=db01 (line 2) armed on "no such event" of db01 never fired`) {
				t.Errorf("the Errorf does not name the fault and its line: %q", rt.errs[0])
			}
		})
	}
}
