package main

import (
	"bytes"
	"context"
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
