package harness_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

// This file is written as a team's own module would write it: package
// harness_test, the public entry points only.

// TestOwnDrill runs a .scn script as a Go test: outputs compared with the
// file (go test -rewrite records them), failed checks fail the test.
func TestOwnDrill(t *testing.T) {
	harness.RunScenario(t, "testdata/example/drill.scn")
}

// TestOwnDrillBuilt is the same drill, built in Go.
func TestOwnDrillBuilt(t *testing.T) {
	s := harness.NewScenario(t).
		World(harness.WorldSpec{Seed: 2, Machines: []string{"db01"}, Workload: "bank"}).
		Deploy().
		Protect("db01").
		Run(12*time.Minute).
		Crash("db01").
		Run(time.Minute).
		Restart("db01").
		Run(12*time.Minute).
		Check("points", "schedule")
	if tl := s.Tally(); tl.Passed == 0 || tl.Failed != 0 {
		t.Errorf("%s", tl.Line())
	}
	if out := s.Do("points vm=db01").Output(); !strings.Contains(out, "db01: ") {
		t.Errorf("points: %s", out)
	}
}

// ExampleRunScenario: a team's drill script, run by `go test` in its own
// module.
func ExampleRunScenario() {
	// drill_test.go:
	//
	//	func TestMain(m *testing.M) {
	//		code := m.Run()
	//		harness.Shutdown() // stops the Azurite the worlds share
	//		os.Exit(code)
	//	}
	//
	//	func TestDrill(t *testing.T) {
	//		harness.RunScenario(t, "testdata/drill.scn")
	//	}
	_ = func(t *testing.T) { harness.RunScenario(t, "testdata/example/drill.scn") }
}

// ExampleNewScenario builds a world, deploys, protects a machine, runs
// half an hour of virtual time and checks its recovery points, all from
// Go. In a test, pass the *testing.T: an error or a failed check fails it.
func ExampleNewScenario() {
	t := &exampleT{}
	defer t.cleanup()
	s := harness.NewScenario(t).
		World(harness.WorldSpec{Seed: 2, Machines: []string{"db01"}, Workload: "bank"}).
		Deploy().
		Protect("db01").
		Run(30*time.Minute).
		Check("points", "schedule")
	fmt.Println(s.Tally().Line())
	// Output: checks: 13 passed, 0 failed
}

// exampleT stands in for the *testing.T an Example has not got.
type exampleT struct{ cleanups []func() }

func (t *exampleT) Helper()                           {}
func (t *exampleT) Errorf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (t *exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleT) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
