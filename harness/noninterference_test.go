package harness

import (
	"context"
	"strings"
	"testing"
)

// TestNonInterference is the non-interference check with its negative
// control: a failover-family command that only lets time pass leaves
// replication's trace as the control run has it; one that writes to a
// guest disk (as a test failover that touched the source would) is
// caught, with the first differing line as evidence; and a run with no
// failover command has nothing to judge and fails.
func TestNonInterference(t *testing.T) {
	saved := commands
	t.Cleanup(func() { commands = saved; commandKeys = keysOf(saved); failoverCmds = failoverNames(saved) })
	commands = append(append([]Command(nil), saved...),
		Command{Name: "fo-idle", Keys: []string{}, Failover: true, run: func(r *Runner, _ argMap) (string, error) {
			r.Env.Sim.RunFor(2 * 60e9)
			return "idle\n", nil
		}},
		Command{Name: "fo-meddle", Keys: []string{}, Failover: true, run: func(r *Runner, _ argMap) (string, error) {
			return "meddled\n", r.Env.Write("web01", 0, 1<<20, make([]byte, 4096))
		}},
	)
	commandKeys = keysOf(commands)
	failoverCmds = failoverNames(commands)
	const prelude = "world seed=3 machines=(web01) workload=random\n----\n\ndeploy\n----\n\nprotect vms=(web01)\n----\n\nrun for=10m\n----\n\n"
	cases := []struct {
		name, body string
		want       Verdict
		evidence   string
	}{
		{"time only", "fo-idle\n----\n\nrun for=5m\n----\n\n", OK, "identical"},
		{"a guest write", "fo-meddle\n----\n\nrun for=5m\n----\n\n", Illegal, "differs from the control run"},
		{"nothing to judge", "run for=5m\n----\n\n", Unknown, "nothing to judge"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewScript("t.scn", []byte(prelude+c.body))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background()}
			defer r.Close()
			r.RunScript(s, func(d Directive, out string) {
				if hasError(out) {
					t.Fatalf("%s: %s", d.Pos, out)
				}
			})
			res := r.CheckNonInterference()
			if res.Verdict != c.want || !strings.Contains(res.Evidence+res.Detail, c.evidence) {
				t.Fatalf("got %s %q %q, want %s containing %q", res.Verdict, res.Evidence, res.Detail, c.want, c.evidence)
			}
		})
	}
}

func keysOf(cs []Command) map[string][]string {
	m := map[string][]string{}
	for _, c := range cs {
		m[c.Name] = c.Keys
	}
	return m
}
