package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportFlag: --report writes the page after the run; a path that
// cannot be written is refused before the run starts (exit 2, nothing run).
func TestReportFlag(t *testing.T) {
	t.Setenv("V2A_WORKDIR", t.TempDir())
	dir := t.TempDir()
	p := script(t, "world seed=2 machines=(db01) workload=bank", "run for=10s", "check")
	for _, c := range []struct {
		name, path string
		code       int
		out        string
	}{
		{"no such directory", filepath.Join(dir, "nope", "r.html"), exitSetup, "--report " + filepath.Join(dir, "nope", "r.html")},
		{"a directory", dir, exitSetup, "is a directory"},
		{"written", filepath.Join(dir, "r.html"), exitOK, "report: " + filepath.Join(dir, "r.html")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := execute(context.Background(), []string{"run", p, "--trace", "none", "--report", c.path}, &out, &errOut)
			all := out.String() + errOut.String()
			if code != c.code || !strings.Contains(all, c.out) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, c.code, c.out, all)
			}
			if c.code != exitOK {
				if strings.Contains(out.String(), "SEED=") {
					t.Errorf("the run started before the bad --report was refused:\n%s", out.String())
				}
				return
			}
			page, err := os.ReadFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(page, []byte("<!DOCTYPE html>")) || !bytes.Contains(page, []byte(`data-seed="2"`)) {
				t.Errorf("the report is not the run's page (%d bytes)", len(page))
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".v2a-report-*")); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}
