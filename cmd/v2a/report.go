package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/harness/report"
)

// reportWritable refuses a --report path whose directory does not exist
// or that names a directory.
func reportWritable(path string) error {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("--report %s: is a directory", path)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--report %s: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--report %s: %s is not a directory", path, dir)
	}
	return nil
}

// writeReport renders the run's report and writes it to path whole (a
// temporary file renamed over it): a failed write leaves any older report
// as it was.
func writeReport(path string, r *harness.Runner, rec *harness.ReportRecorder, meta harness.ReportMeta) error {
	run, err := r.Report(rec, meta)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	var b bytes.Buffer
	if err := report.Render(&b, run); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".v2a-report-*.html")
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("--report: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	return nil
}
