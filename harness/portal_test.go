package harness

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestViewOnlyReads: View runs the read-only views, refuses every other
// command, records nothing, and does not make the failover side.
func TestViewOnlyReads(t *testing.T) {
	r := &Runner{Ctx: context.Background()}
	defer r.Close()
	if _, err := r.View("status"); err == nil || !strings.Contains(err.Error(), "no world yet") {
		t.Errorf("status before the world: %v", err)
	}
	cmd, cas, err := datadriven.ParseLine("world seed=3 machines=(db01)")
	if err != nil {
		t.Fatal(err)
	}
	if out := r.Step(Directive{Pos: "t:1", Cmd: cmd, Args: cas}); strings.Contains(out, "error: ") {
		t.Fatal(out)
	}
	steps, elapsed := len(r.history), r.Elapsed()
	for _, c := range []struct{ line, err string }{
		{"run for=1h", "not a view"},
		{"deploy", "not a view"},
		{"failover vms=(db01) point=latest", "not a view"},
		{"status", "no replication deployed yet"},
		{"points vm=db01 colour=red", `unknown key "colour"`},
		{"points vm=(db01", "view"},
	} {
		_, err := r.View(c.line)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("View(%q) = %v, want an error saying %q", c.line, err, c.err)
		}
	}
	if _, err := r.View("run for=1h"); !errors.Is(err, ErrNotAView) {
		t.Errorf("View(run) = %v, want ErrNotAView", err)
	}
	for _, line := range []string{"fabric", "failover-jobs"} {
		out, err := r.View(line)
		if err != nil || out != "no failover yet\n" {
			t.Errorf("View(%s) before any failover = %q, %v", line, out, err)
		}
	}
	if out, err := r.View("network"); err != nil || !strings.Contains(out, "host db01") {
		t.Errorf("View(network) = %q, %v", out, err)
	}
	if r.FailoverStarted() {
		t.Error("a view made the failover side")
	}
	if js, err := r.FailoverJobs(); js != nil || err != nil {
		t.Errorf("FailoverJobs before any failover = %v, %v", js, err)
	}
	if len(r.history) != steps || r.Elapsed() != elapsed {
		t.Errorf("views were recorded or ran time: %d steps at %s, were %d at %s", len(r.history), r.Elapsed(), steps, elapsed)
	}
}
