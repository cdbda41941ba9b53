package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/harness/swarm"
)

// TestSwarmBadFlags: bad flags exit 2 with a clear error, and run no seed.
func TestSwarmBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"swarm"}, "say which seeds"},
		{[]string{"swarm", "--seeds", "0"}, "at least 1"},
		{[]string{"swarm", "--seeds", "3", "--from", "1", "--to", "2"}, "not both"},
		{[]string{"swarm", "--from", "3"}, "go together"},
		{[]string{"swarm", "--from", "5", "--to", "2"}, "before --from"},
		{[]string{"swarm", "--seeds", "3", "--shard", "3/3"}, "--shard"},
		{[]string{"swarm", "--seeds", "3", "--shard", "x"}, "--shard"},
		{[]string{"swarm", "--seeds", "3", "--storage", "s3"}, "want azurite or memblob"},
		{[]string{"swarm", "--seeds", "3", "--jobs", "0"}, "--jobs"},
		{[]string{"run", "demo", "--storage", "s3"}, "want azurite or memblob"},
	} {
		var out, errb bytes.Buffer
		code := execute(context.Background(), tt.args, &out, &errb)
		if code != exitSetup || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tt.args, code, errb.String(), exitSetup, tt.want)
		}
		if strings.Contains(out.String(), "seed-") {
			t.Errorf("%v: ran seeds: %s", tt.args, out.String())
		}
	}
}

// TestSwarmProgress: the swarm's progress in each mode, with a fake seed
// runner that fails seed 2 of 3. bar draws the seeds-done and seeds-failed
// bars, ending at 3/3 and 1/3; plain prints its lines; none prints no
// progress. stdout (the failing seed, the summary) is the same in every
// mode.
func TestSwarmProgress(t *testing.T) {
	wallTime := regexp.MustCompile(`in \S+ of wall time: \d+ seeds/hour`)
	runSeed = func(_ context.Context, _ string, p swarm.Plan, _, _ string) swarm.Result {
		r := swarm.Result{Plan: p, Passed: 2}
		if p.Seed == 2 {
			r.Verdict = "a check failed"
			r.Failures = []harness.Result{{Check: "points", Subject: "sw01", Verdict: harness.Illegal, Evidence: "planted"}}
		}
		return r
	}
	t.Cleanup(func() { runSeed = runSeedProcess })
	outs, dir := map[string]string{}, t.TempDir()
	for _, tt := range []struct {
		mode     string
		want     []string
		wantNone bool
	}{
		{"bar", []string{"seeds done", "3/3", "seeds failed", "1/3"}, false},
		{"plain", []string{"swarm: 3/3 seeds done, 1 failed check(s) so far"}, false},
		{"none", nil, true},
	} {
		var out, errb bytes.Buffer
		code := execute(context.Background(), []string{"swarm", "--seeds", "3", "--jobs", "1", "--progress", tt.mode,
			"--progress-every", "1", "--out", dir}, &out, &errb)
		if code != exitChecks {
			t.Fatalf("--progress %s: exit %d, want %d (seed 2 failed)\n%s%s", tt.mode, code, exitChecks, out.String(), errb.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("--progress %s: stderr lacks %q:\n%q", tt.mode, w, errb.String())
			}
		}
		if tt.wantNone && strings.Contains(errb.String(), "seeds done") {
			t.Errorf("--progress none printed progress: %q", errb.String())
		}
		if !strings.Contains(out.String(), "FAILED seed 2") {
			t.Errorf("--progress %s: stdout lacks the failing seed:\n%s", tt.mode, out.String())
		}
		outs[tt.mode] = wallTime.ReplaceAllString(out.String(), "WALL")
	}
	if outs["bar"] != outs["none"] || outs["plain"] != outs["none"] {
		t.Errorf("stdout differs across --progress modes:\nnone:\n%s\nplain:\n%s\nbar:\n%s", outs["none"], outs["plain"], outs["bar"])
	}
	var errb bytes.Buffer
	if code := execute(context.Background(), []string{"swarm", "--seeds", "1", "--progress", "loud"}, &bytes.Buffer{}, &errb); code != exitSetup ||
		!strings.Contains(errb.String(), "want auto, bar, plain or none") {
		t.Errorf("--progress loud: exit %d, stderr %q", code, errb.String())
	}
}

// TestSwarmStopsOnSetupError: a seed that cannot be set up (here: the
// worlds' working directory does not exist) stops the swarm at once with
// exit 2 and the child's error, starts no other seed, and prints no
// summary nor rate as if seeds had run.
func TestSwarmStopsOnSetupError(t *testing.T) {
	t.Setenv(asV2A, "1")
	t.Setenv("V2A_WORKDIR", filepath.Join(t.TempDir(), "missing"))
	var out, errb bytes.Buffer
	code := execute(t.Context(), []string{"swarm", "--seeds", "5", "--jobs", "1", "--out", t.TempDir(), "--progress-every", "0"}, &out, &errb)
	if code != exitSetup {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitSetup, out.String(), errb.String())
	}
	for _, want := range []string{"seed 1 could not be set up", "4 seed(s) not started", "missing"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr misses %q:\n%s", want, errb.String())
		}
	}
	t.Logf("stderr: %s", errb.String())
	if strings.Contains(out.String(), "seeds/hour") || strings.Contains(out.String(), "FAILED") {
		t.Errorf("a summary as if seeds ran:\n%s", out.String())
	}
}

// TestChildEnv: a seed's child runs with madvdontneed=0 added to GODEBUG,
// unless GODEBUG already says how to give memory back.
func TestChildEnv(t *testing.T) {
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{[]string{"A=1"}, "GODEBUG=madvdontneed=0"},
		{[]string{"GODEBUG=gctrace=1", "A=1"}, "GODEBUG=gctrace=1,madvdontneed=0"},
		{[]string{"GODEBUG=madvdontneed=1"}, "GODEBUG=madvdontneed=1"},
		{[]string{"GODEBUG="}, "GODEBUG=madvdontneed=0"},
	} {
		got := childEnv(tt.env)
		if got[len(got)-1] != tt.want || strings.Count(strings.Join(got, "\n"), "GODEBUG=") != 1 || (len(tt.env) > 1 && got[0] != "A=1") {
			t.Errorf("childEnv(%q) = %q, want it ending in %q", tt.env, got, tt.want)
		}
	}
}
