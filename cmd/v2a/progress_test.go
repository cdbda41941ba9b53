package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestProgressModes runs one short scenario with --progress none (the
// runner is not observed at all), plain and bar (observed): stdout (the trace, every command's output, the closing lines
// with the trace hash) is byte for byte the same; none writes nothing to
// stderr; plain writes lines whose percentages only grow, counter by
// counter, and the commands counter ends at 100 %; bar draws bars.
func TestProgressModes(t *testing.T) {
	t.Setenv("V2A_WORKDIR", t.TempDir())
	p := script(t, "world seed=3 machines=(db01) workload=bank", "deploy", "protect vms=(db01)",
		"wait state=protected vms=(db01)", "run for=5m", "check")
	run := func(mode string) (stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := execute(context.Background(), []string{"run", p, "--progress", mode}, &out, &errOut); code != exitOK {
			t.Fatalf("--progress %s: exit %d\n%s\n%s", mode, code, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}
	noneOut, noneErr := run("none")
	plainOut, plainErr := run("plain")
	barOut, barErr := run("bar")
	if !regexp.MustCompile(`(?m)^trace-sha256: [0-9a-f]{64}$`).MatchString(noneOut) {
		t.Fatalf("no trace hash in the output:\n%s", noneOut)
	}
	if plainOut != noneOut || barOut != noneOut {
		t.Errorf("stdout differs across --progress modes:\nnone:\n%s\nplain:\n%s\nbar:\n%s", noneOut, plainOut, barOut)
	}
	if noneErr != "" {
		t.Errorf("--progress none wrote to stderr: %q", noneErr)
	}
	if !strings.Contains(barErr, "\x1b[") || !strings.Contains(barErr, "commands") {
		t.Errorf("--progress bar drew no bars: %q", barErr)
	}

	val := `[0-9][0-9a-z.]*(?: MiB)?`
	line := regexp.MustCompile(`^progress: (.+?) (?:done at |stopped at )?` + val + `(?:(?:/| of )` + val + `)?(?: \((\d+)%\))?$`)
	pct := map[string]int{}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(plainErr), "\n") {
		if strings.HasSuffix(l, " started") || strings.HasSuffix(l, " done") {
			continue // a counter with nothing known yet (the initial copy before a heartbeat)
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected plain line %q in:\n%s", l, plainErr)
		}
		if strings.Contains(l, " stopped at ") {
			t.Errorf("a counter was stopped in a run that finished: %q", l)
		}
		if m[2] == "" {
			continue // done short of its total, or a total not known yet
		}
		n, _ := strconv.Atoi(m[2])
		if prev, ok := pct[m[1]]; ok && n < prev {
			t.Errorf("%s went back from %d%% to %d%%:\n%s", m[1], prev, n, plainErr)
		}
		pct[m[1]] = n
		last = l
	}
	if last != "progress: commands 6/6 (100%)" {
		t.Errorf("the last plain line is %q, want the commands at 100%%:\n%s", last, plainErr)
	}
	if pct["run for=5m"] != 100 {
		t.Errorf("run for=5m did not reach 100%%:\n%s", plainErr)
	}
}

func TestProgressFlagRefused(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := execute(context.Background(), []string{"run", "foundation", "--progress", "loud"}, &out, &errOut); code != exitSetup {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitSetup, out.String(), errOut.String())
	}
	if !strings.Contains(out.String()+errOut.String(), "want auto, bar, plain or none") {
		t.Errorf("no clear error:\n%s%s", out.String(), errOut.String())
	}
}
