package harness

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestArmedFaultOutcomes: each outcome of an armed fault, a negative
// control of the others. The triggers are the harness's own trace lines
// (`fault partition` writes "harness fault partition ..."), so the worlds
// need no replication unless the case is about corrupt-blob.
func TestArmedFaultOutcomes(t *testing.T) {
	const world = "world seed=3 machines=(db01)\n----\n"
	cases := []struct {
		name   string
		script string
		pass   bool
		// failure is what the first failed "script" check's subject and
		// evidence say (pass: none).
		subject, evidence string
		// output is a line the outputs must contain.
		output string
	}{
		{
			name: "fired ok passes",
			script: world + `
fault partition a=db01 b=ps01 on=fault-crash-db01
----

fault crash host=db01
----

run for=1s
----
`,
			pass: true,
		},
		{
			name: "fired and failed fails at the command it fired in",
			script: world + `
fault machine-crash vm=db01 on=fault-partition
----

fault partition a=onprem b=azure
----

run for=1s
----
`,
			subject:  "t.scn:4",
			evidence: "error: fault machine-crash vm=db01 (line 4) armed on \"fault partition\" fired at +00:00:00.000000 and failed: no replication deployed yet: run `deploy` first",
			output:   "error: fault machine-crash vm=db01 (line 4) armed on \"fault partition\" fired at +00:00:00.000000 and failed: no replication deployed yet",
		},
		{
			name: "a golden that records the failure cannot bless it",
			script: world + `
fault machine-crash vm=db01 on=fault-partition
----

fault partition a=onprem b=azure
----

run for=1s
----
error: fault machine-crash vm=db01 (line 4) armed on "fault partition" fired at +00:00:00.000000 and failed: no replication deployed yet: run ` + "`deploy`" + ` first
`,
			subject:  "t.scn:4",
			evidence: "error: fault machine-crash vm=db01 (line 4) armed on \"fault partition\" fired at +00:00:00.000000 and failed: no replication deployed yet: run `deploy` first",
		},
		{
			name: "never fired fails on its line",
			script: world + `
fault crash host=db01 on=no-such-event
----

run for=1s
----
`,
			subject:  "t.scn:4",
			evidence: `error: fault crash host=db01 (line 4) armed on "no such event" of db01 never fired (say unfired=ok if it need not)`,
		},
		{
			name: "optional never fired passes",
			script: world + `
fault crash host=db01 on=no-such-event unfired=ok
----

run for=1s
----
`,
			pass: true,
		},
		{
			name: "optional does not excuse a failure",
			script: world + `
fault machine-crash vm=db01 on=fault-partition unfired=ok
----

fault partition a=onprem b=azure
----

run for=1s
----
`,
			subject:  "t.scn:4",
			evidence: "error: fault machine-crash vm=db01 (line 4) armed on \"fault partition\" fired at +00:00:00.000000 and failed: no replication deployed yet: run `deploy` first",
		},
		{
			name: "triggered at the very end, never injected",
			script: world + `
fault partition a=db01 b=ps01 on=fault-crash-db01
----

fault crash host=db01
----
`,
			subject:  "t.scn:4",
			evidence: `error: fault partition a=db01 b=ps01 (line 4) armed on "fault crash db01" fired at +00:00:00.000000, but the script ended before it was injected`,
		},
		{
			name: "heal does not disarm",
			script: world + `
fault crash host=db01 on=no-such-event
----

fault heal
----

run for=1s
----
`,
			subject:  "t.scn:4",
			evidence: `error: fault crash host=db01 (line 4) armed on "no such event" of db01 never fired (say unfired=ok if it need not)`,
		},
		{
			name: "corrupt-blob with no upload never fires",
			script: world + `
deploy
----

fault corrupt-blob vm=db01
----

run for=1m
----
`,
			subject:  "t.scn:7",
			evidence: `error: fault corrupt-blob vm=db01 (line 7) armed on "done upload db01/" of ps01 never fired (say unfired=ok if it need not)`,
		},
		{
			name: "corrupt-blob on= waits for its event, then the upload",
			script: world + `
deploy
----

fault corrupt-blob vm=db01 on=fault-partition
----

fault partition a=onprem b=azure
----

run for=1m
----
`,
			subject:  "t.scn:7",
			evidence: `error: fault corrupt-blob vm=db01 (line 7) armed on "fault partition", then on "done upload db01/" of ps01 never fired (say unfired=ok if it need not)`,
		},
		{
			name: "corrupt-blob unfired=ok passes",
			script: world + `
deploy
----

fault corrupt-blob vm=db01 unfired=ok
----

run for=1m
----
`,
			pass: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewScript("t.scn", []byte(c.script))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background(), MemoryStorage: true}
			defer r.Close()
			var outs strings.Builder
			if r.RunScript(s, func(_ Directive, out string) { outs.WriteString(out) }) {
				t.Fatal("interrupted")
			}
			err = r.Verdict(s)
			if (err == nil) != c.pass {
				t.Fatalf("verdict %v, want pass=%v; outputs:\n%s", err, c.pass, outs.String())
			}
			if c.output != "" && !strings.Contains(outs.String(), c.output) {
				t.Errorf("outputs lack %q:\n%s", c.output, outs.String())
			}
			if c.pass {
				return
			}
			var got []Result
			for _, f := range r.Tally.Failures {
				if f.Check == "script" {
					got = append(got, Result{Check: f.Check, Subject: f.Subject, Evidence: f.Evidence})
				}
			}
			want := []Result{{Check: "script", Subject: c.subject, Evidence: c.evidence}}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("failures (-want +got):\n%s", d)
			}
			if !strings.Contains(err.Error(), c.evidence) {
				t.Errorf("the verdict does not say why: %v", err)
			}
			// Verdict and Finish count once.
			if err2 := r.Verdict(s); err2 == nil || len(r.Tally.Failures) != len(got) {
				t.Errorf("a second Verdict: %v, %d failures, want the same %d", err2, len(r.Tally.Failures), len(got))
			}
		})
	}
}

// TestUnfiredKey: unfired= takes ok or fail and only on a fault armed to
// fire later; refused, it arms nothing (the script then passes: nothing is
// left armed).
func TestUnfiredKey(t *testing.T) {
	for _, c := range []struct{ line, err string }{
		{"fault crash host=db01 on=x unfired=maybe", "fault crash: unfired=maybe, want ok"},
		{"fault crash host=db01 unfired=ok", "fault crash: unfired= is for a fault armed to fire later"},
		{"fault crash host=db01 on=x unfired", "fault crash: unfired needs a value"},
		{"fault crash host=db01 on=x unfired=fail", ""},
		{"fault corrupt-blob vm=db01 unfired=ok", "no replication deployed yet"},
	} {
		t.Run(c.line, func(t *testing.T) {
			script := "world seed=3 machines=(db01)\n----\n\n" + c.line + "\n----\n"
			s, err := NewScript("t.scn", []byte(script))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background(), MemoryStorage: true}
			defer r.Close()
			var last string
			r.RunScript(s, func(_ Directive, out string) { last = out })
			if c.err == "" {
				if hasError(last) {
					t.Fatalf("refused: %s", last)
				}
				if len(r.faults) != 1 {
					t.Fatalf("%d faults armed, want 1", len(r.faults))
				}
				return
			}
			if !strings.Contains(last, "error: "+c.err) && !strings.Contains(last, c.err) {
				t.Errorf("output %q, want the error %q", last, c.err)
			}
			if len(r.faults) != 0 {
				t.Errorf("a refused fault was armed: %+v", r.faults[0])
			}
		})
	}
}

// TestDeleteSnapshotNothingToDelete: delete-snapshot of a point whose
// catalog entry lists no snapshot deletes nothing, and says so as an
// error rather than reporting a fault injected; the control, a point with
// a snapshot of a catalogued disk, gets past that to the storage (which
// has no such snapshot: a different error).
func TestDeleteSnapshotNothingToDelete(t *testing.T) {
	for _, c := range []struct {
		name      string
		snapshots []string
		err       string
	}{
		{"no snapshot", nil, "error: fault delete-snapshot: point rp-1 of db01 has no snapshot of a catalogued disk to delete (0 snapshot(s), 1 disk(s))"},
		{"a snapshot", []string{"2026-11-30T00:00:00Z"}, "error: fault delete-snapshot: disk 0 of db01: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewScript("t.scn", []byte("world seed=3 machines=(db01)\n----\n\ndeploy\n----\n"))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background(), MemoryStorage: true}
			defer r.Close()
			r.RunScript(s, nil)
			if r.Tally.Failed > 0 {
				t.Fatalf("set-up: %v", r.Tally.Failures)
			}
			store, prefix, err := r.Env.Storage()
			if err != nil {
				t.Fatal(err)
			}
			cat := proto.NewCatalog("db01")
			cat.Disks = []proto.Disk{{Blob: "db01-disk0"}}
			cat.Points = []proto.Point{{ID: "rp-1", Kind: proto.Crash, Seq: 1, Snapshots: c.snapshots}}
			data, err := json.Marshal(cat)
			if err != nil {
				t.Fatal(err)
			}
			_ = store.CreateContainer(r.Env.ctx, prefix+proto.ContainerCatalog) // may exist
			if _, err := store.Put(r.Env.ctx, prefix+proto.ContainerCatalog, proto.CatalogBlobName("db01"), data, blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			before := r.Env.Trace.Sum()
			out := r.Exec(Directive{Pos: "t.scn:7", Cmd: "fault", Args: []datadriven.CmdArg{{Key: "delete-snapshot"}, {Key: "vm", Vals: []string{"db01"}}}})
			if !strings.HasPrefix(out, c.err) {
				t.Errorf("output %q, want it to start %q", out, c.err)
			}
			if c.snapshots == nil && r.Env.Trace.Sum() != before {
				t.Errorf("a delete-snapshot that deleted nothing wrote a trace line")
			}
		})
	}
}
