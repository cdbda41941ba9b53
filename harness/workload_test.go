package harness

import (
	"context"
	"strings"
	"testing"
)

// TestFSWorkloadCommands: the fs workload is one the scripts can name,
// with `world workload=fs` and with `workload kind=fs`, and its invariant
// is judged on the live disks.
func TestFSWorkloadCommands(t *testing.T) {
	for _, script := range []string{
		"world seed=5 machines=(db01) workload=fs tx=1\n\nrun for=10m\n\ncheck what=(disks,invariants)\n",
		"world seed=5 machines=(db01)\n\nworkload kind=fs machines=(db01)\n\nrun for=10m\n\ncheck what=(disks,invariants)\n",
	} {
		r := &Runner{Ctx: context.Background()}
		ds, err := ParseScript("fs", []byte(script))
		if err != nil {
			t.Fatal(err)
		}
		var outs []string
		for _, d := range ds {
			outs = append(outs, r.Exec(d))
		}
		r.Close()
		all := strings.Join(outs, "\n")
		if strings.Contains(all, "error:") || strings.Contains(all, "ILLEGAL") {
			t.Fatalf("script output:\n%s", all)
		}
		check := outs[len(outs)-1]
		for _, want := range []string{"write-order  db01", "invariant    db01", "ok fs files="} {
			if !strings.Contains(check, want) {
				t.Errorf("check output lacks %q:\n%s", want, all)
			}
		}
		t.Logf("\n%s", all)
	}
}

// TestFSWorkloadReplicated replicates an fs machine, with app-consistent
// points (fsfreeze: the journal checkpointed) as well as crash-consistent
// ones, and judges every point: exact write order and a file system that
// recovers — with nothing to replay at the app-consistent ones.
func TestFSWorkloadReplicated(t *testing.T) {
	r := &Runner{Ctx: context.Background()}
	defer r.Close()
	ds, err := ParseScript("fs", []byte(`world seed=8 machines=(db01) workload=fs

deploy

policy name=p crash=5m app=10m

protect vms=(db01) policy=p

wait state=protected timeout=1h

run for=21m

points vm=db01

check what=(points)
`))
	if err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, d := range ds {
		out := r.Exec(d)
		if strings.Contains(out, "error:") {
			t.Fatalf("%s: %s", d.Cmd, out)
		}
		outs = append(outs, out)
	}
	points, check := outs[len(outs)-2], outs[len(outs)-1]
	t.Logf("\n%s\n%s", points, check)
	if n := strings.Count(points, " app "); n != 2 {
		t.Errorf("%d app-consistent points, want 2 (at 10 and 20 minutes)", n)
	}
	for _, want := range []string{"write-order  6 ok, 0 failed", "invariant    6 ok, 0 failed"} {
		if !strings.Contains(check, want) {
			t.Errorf("check output lacks %q", want)
		}
	}
}
