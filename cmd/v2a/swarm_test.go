package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
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
