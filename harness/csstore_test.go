package harness

import (
	"context"
	"strings"
	"testing"
)

// TestConfigKeptNeedsTheStore is cs-kept's negative control: the same
// crash and restart of cs01 as scenarios/cs-crash.scn, with the
// configuration server's database (the check passes) and memory-only
// (it fails: the restarted server knows no job, no policy of the
// portal's, no protected machine).
func TestConfigKeptNeedsTheStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a world with Azurite and vcsim")
	}
	for _, c := range []struct {
		db   string
		pass bool
	}{{"sqlite", true}, {"memory", false}} {
		t.Run(c.db, func(t *testing.T) {
			script := "world seed=31 machines=(db01,ord-db,ord-web) workload=bank\n----\n\n" +
				"deploy cs-db=" + c.db + "\n----\n\n" +
				"policy name=gold crash=5m app=1h\n----\n\n" +
				"protect vms=(db01) policy=gold\n----\n\n" +
				"protect-group group=pair vms=(ord-db,ord-web)\n----\n\n" +
				"protect vms=(web01)\n----\n\n" + // not simulated: its push install fails (an alert)
				"wait state=protected vms=(db01,ord-db,ord-web) timeout=1h\n----\n\n" +
				"run for=6m\n----\n\n" +
				"fault crash host=cs01\n----\n\n" +
				"run for=1m\n----\n\n" +
				"fault restart host=cs01\n----\n\n" +
				"run for=1s\n----\n\n" +
				"check what=(cs-kept)\n----\n"
			s, err := NewScript("cs-kept.scn", []byte(script))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background()}
			defer r.Close()
			var out string
			r.RunScript(s, func(d Directive, o string) { out = o })
			if r.SetupFailed {
				t.Fatalf("setup failed; last output:\n%s", out)
			}
			if r.Tally.Passed+r.Tally.Failed != 5 {
				t.Fatalf("cs-kept judged %d kinds, want 5:\n%s", r.Tally.Passed+r.Tally.Failed, out)
			}
			if pass := r.Tally.Failed == 0; pass != c.pass {
				t.Fatalf("cs-kept passed=%v, want %v:\n%s", pass, c.pass, out)
			}
			if !c.pass {
				for _, kind := range []string{"machines", "policies", "groups", "jobs", "alerts"} {
					found := false
					for _, f := range r.Tally.Failures {
						found = found || (f.Subject == "cs01/"+kind && f.Verdict == Illegal)
					}
					if !found {
						t.Errorf("memory-only: cs-kept did not find %s changed:\n%s", kind, out)
					}
				}
				if !strings.Contains(out, "ILLEGAL") {
					t.Errorf("output does not show the failure:\n%s", out)
				}
			}
		})
	}
}
