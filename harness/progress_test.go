package harness

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOnProgress runs a short script watched every 50 ms of virtual time:
// the
// reports count the commands, carry the `run for=` span, see the machine
// sync and then protected, never go back in time; and the trace is the
// one an unwatched run of the script makes.
func TestOnProgress(t *testing.T) {
	t.Setenv("V2A_WORKDIR", t.TempDir())
	text := strings.Join([]string{"world seed=4 machines=(db01) workload=bank", "deploy", "protect vms=(db01)",
		"wait state=protected vms=(db01)", "run for=3m"}, "\n\n") + "\n"
	run := func(watch func(Progress)) string {
		t.Helper()
		s, err := NewScript("progress.scn", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		r := &Runner{OnProgress: watch, ProgressEvery: 50 * time.Millisecond}
		defer r.Close()
		if r.RunScript(s, nil) {
			t.Fatal("interrupted")
		}
		if err := r.Verdict(s); err != nil {
			t.Fatal(err)
		}
		return r.Env.Trace.Sum()
	}
	var got []Progress
	watched := run(func(p Progress) { got = append(got, p) })
	unwatched := run(nil)
	if watched != unwatched {
		t.Fatalf("trace %s watched, %s unwatched", watched, unwatched)
	}

	var synced, protected, spanned bool
	for i, p := range got {
		if p.Total != 5 || p.Done < 0 || p.Done > 5 {
			t.Fatalf("report %d: %d of %d commands done", i, p.Done, p.Total)
		}
		if i > 0 && (p.Elapsed < got[i-1].Elapsed || p.Done < got[i-1].Done) {
			t.Fatalf("report %d went back: %+v after %+v", i, p, got[i-1])
		}
		for _, m := range p.Machines {
			// The sync's bytes come with the agent's heartbeat (every
			// 30 s); this copy is done in a second: only its state shows.
			synced = synced || m.Syncing()
			protected = protected || m.Protected()
		}
		if p.Command == "run for=3m" && p.SpanEnd-p.SpanStart == 3*time.Minute && p.Elapsed > p.SpanStart {
			spanned = true
		}
		if p.Command == "" && p.SpanEnd != 0 {
			t.Fatalf("report %d: a span between commands: %+v", i, p)
		}
	}
	last := got[len(got)-1]
	if last.Done != 5 || last.Command != "" {
		t.Errorf("last report %+v: want 5 of 5 done", last)
	}
	if !synced || !protected || !spanned {
		t.Errorf("saw a machine syncing %t, protected %t, the run span %t: want all", synced, protected, spanned)
	}
	starts := slices.IndexFunc(got, func(p Progress) bool { return p.Command == "run for=3m" })
	if starts < 0 {
		t.Fatal("no report before `run for=3m`")
	}
}
