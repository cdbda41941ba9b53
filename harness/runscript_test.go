package harness

import (
	"context"
	"strings"
	"testing"
)

// TestVerdictRule is the one verdict rule on scripts that need no world:
// an expected error is output, an unexpected one fails and (a setup
// error) stops the run, and a declared `# expect: failed-checks` with no
// failed check fails.
func TestVerdictRule(t *testing.T) {
	cases := []struct {
		name, script string
		pass, setup  bool
		steps        int
	}{
		{"expected error is output", "status\n----\nerror: status: no world yet: start the script with `world`\n\nfrobnicate\n----\nerror: unknown command \"frobnicate\" (known: " + strings.Join(Commands, ", ") + ")\n", true, false, 2},
		{"unexpected error fails and stops", "status\n----\n\nfrobnicate\n----\n", false, true, 1},
		{"an error announced for another output still counts as expected", "status\n----\nerror: something else\n", true, false, 1},
		{"declared failures but none", ExpectFailedChecks + "\n\nstatus\n----\nerror: status: no world yet: start the script with `world`\n", false, false, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewScript("t.scn", []byte(c.script))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background()}
			defer r.Close()
			steps := 0
			if r.RunScript(s, func(Directive, string) { steps++ }) {
				t.Fatal("interrupted")
			}
			if err := r.Verdict(s); (err == nil) != c.pass {
				t.Errorf("verdict %v, want pass=%v", err, c.pass)
			}
			if r.SetupFailed != c.setup || steps != c.steps {
				t.Errorf("SetupFailed=%v after %d steps, want %v after %d", r.SetupFailed, steps, c.setup, c.steps)
			}
		})
	}
}

func TestScriptHeaderRefusesUnknownExpect(t *testing.T) {
	_, err := NewScript("t.scn", []byte("# expect: failures\n\nstatus\n----\n"))
	if err == nil || !strings.Contains(err.Error(), `harness: t.scn:1: unknown header "# expect: failures"`) {
		t.Fatalf("err %v", err)
	}
	s, err := NewScript("t.scn", []byte("status\n----\n\n# expect: failed-checks\n"))
	if err != nil || s.ExpectFailed {
		t.Fatalf("a line after the first directive is not the header: %v %+v", err, s)
	}
}

// TestRunnerMemoryStorage: Runner.MemoryStorage (the CLI's --storage
// memblob) gives the world memblob, and without it the world has the
// target's storage.
func TestRunnerMemoryStorage(t *testing.T) {
	for _, mem := range []bool{true, false} {
		s, err := NewScript("t.scn", []byte("world machines=(db01)\n----\n"))
		if err != nil {
			t.Fatal(err)
		}
		r := &Runner{Ctx: context.Background(), MemoryStorage: mem}
		r.RunScript(s, func(Directive, string) {})
		if r.Env == nil {
			t.Fatal("no world")
		}
		if got := r.Env.memStore != nil; got != mem {
			t.Errorf("MemoryStorage=%v: world on memblob=%v", mem, got)
		}
		r.Close()
	}
}
