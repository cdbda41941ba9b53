// Package scenarios holds v2a's scripted scenarios (*.scn, the
// cockroachdb/datadriven format). This test runs each of them and compares
// every command's output with the expectation in the file; `make rewrite`
// regenerates the expectations for review.
package scenarios

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/v2a-dr/v2a/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Shutdown()
	os.Exit(code)
}

func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("*.scn")
	if err != nil {
		t.Fatal(err)
	}
	errs, _ := filepath.Glob("testdata/*.scn")
	files = append(files, errs...)
	if len(files) == 0 {
		t.Fatal("no scenario files")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			r := &harness.Runner{Ctx: context.Background(), Script: f}
			defer r.Close()
			datadriven.RunTest(t, f, func(t *testing.T, td *datadriven.TestData) string {
				return r.Exec(harness.Directive{Pos: td.Pos, Cmd: td.Cmd, Args: td.CmdArgs, Input: td.Input})
			})
		})
	}
}
