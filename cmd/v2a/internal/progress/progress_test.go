package progress

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/harness"
)

// clock is a wall clock a test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func plain(t *testing.T) (*Progress, *bytes.Buffer, *clock) {
	t.Helper()
	var b bytes.Buffer
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := New(Options{Mode: Plain, Err: &b, Now: clk.now})
	if p.Mode() != Plain {
		t.Fatalf("mode %s, want plain", p.Mode())
	}
	return p, &b, clk
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "bar", "plain", "none"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "bars", "Plain", "quiet"} {
		if _, err := ParseMode(s); !errors.Is(err, ErrMode) {
			t.Errorf("ParseMode(%q): err %v, want ErrMode", s, err)
		}
	}
}

func TestPlainCounter(t *testing.T) {
	tests := []struct {
		name string
		do   func(c *Counter, clk *clock)
		want []string
	}{
		{"a line a tenth, and none between", func(c *Counter, _ *clock) {
			for range 20 {
				c.Inc()
			}
		}, []string{
			"progress: seeds 1/20 (5%)", "progress: seeds 2/20 (10%)", "progress: seeds 4/20 (20%)", "progress: seeds 6/20 (30%)",
			"progress: seeds 8/20 (40%)", "progress: seeds 10/20 (50%)", "progress: seeds 12/20 (60%)", "progress: seeds 14/20 (70%)",
			"progress: seeds 16/20 (80%)", "progress: seeds 18/20 (90%)", "progress: seeds 20/20 (100%)",
		}},
		{"a slow counter prints every 10 s of wall time when it moved", func(c *Counter, clk *clock) {
			c.Set(2)
			clk.t = clk.t.Add(5 * time.Second)
			c.Set(3) // the same tenth, too soon
			clk.t = clk.t.Add(5 * time.Second)
			c.Set(3)
			clk.t = clk.t.Add(20 * time.Second)
			c.Set(3) // did not move
		}, []string{"progress: seeds 2/20 (10%)", "progress: seeds 3/20 (15%)", "progress: seeds stopped at 3/20 (15%)"}},
		{"done short of the total", func(c *Counter, _ *clock) {
			c.Set(3)
			c.Done()
			c.Set(20) // ended: ignored
		}, []string{"progress: seeds 3/20 (15%)", "progress: seeds done at 3 of 20"}},
		{"aborted", func(c *Counter, _ *clock) {
			c.Add(7)
			c.Abort()
		}, []string{"progress: seeds 7/20 (35%)", "progress: seeds stopped at 7/20 (35%)"}},
		{"the total grows", func(c *Counter, _ *clock) {
			c.Set(10)
			c.SetTotal(40)
			c.Set(12)
			c.Set(40)
		}, []string{"progress: seeds 10/20 (50%)", "progress: seeds 40/40 (100%)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, b, clk := plain(t)
			c := p.Counter("seeds", 20)
			tc.do(c, clk)
			p.Close()
			if diff := cmp.Diff(tc.want, lines(b)); diff != "" {
				t.Fatalf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnits(t *testing.T) {
	p, b, _ := plain(t)
	p.Counter("copy", 64<<20, WithUnit(Bytes)).Set(32 << 20)
	p.Counter("run for=30m", int64(30*time.Minute), WithUnit(Duration)).Set(int64(90 * time.Second))
	p.Counter("unknown total", 0).Set(5)
	nothing := p.Counter("nothing known", 0)
	nothing.Set(0)
	nothing.Done()
	p.Close()
	want := []string{
		"progress: copy 32.0 MiB/64.0 MiB (50%)",
		"progress: run for=30m 1m30s/30m0s (5%)",
		"progress: unknown total 5",
		"progress: nothing known started",
		"progress: nothing known done",
		"progress: copy stopped at 32.0 MiB/64.0 MiB (50%)",
		"progress: run for=30m stopped at 1m30s/30m0s (5%)",
		"progress: unknown total stopped at 5",
	}
	if diff := cmp.Diff(want, lines(b)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}

func TestNonePrintsNothing(t *testing.T) {
	var errB, outB bytes.Buffer
	p := New(Options{Mode: None, Err: &errB, Out: &outB})
	c := p.Counter("seeds", 3)
	c.Inc()
	c.Done()
	p.Script(ScriptOptions{Protected: []string{"db01"}}).Observe(harness.Progress{Done: 1, Total: 2, Command: "run for=1h", SpanEnd: time.Hour, Elapsed: time.Minute, MachinesKnown: true})
	p.Close()
	if errB.Len() != 0 || outB.Len() != 0 {
		t.Fatalf("mode none wrote %q to stderr, %q to stdout", errB.String(), outB.String())
	}
	if p.Out() != &outB {
		t.Fatal("Out is not Options.Out in mode none")
	}
}

// Auto on a writer that is not a terminal is plain: CI logs get lines.
func TestAutoOffATerminalIsPlain(t *testing.T) {
	var b bytes.Buffer
	p := New(Options{Mode: Auto, Err: &b})
	defer p.Close()
	if p.Mode() != Plain {
		t.Fatalf("auto on a buffer: %s, want plain", p.Mode())
	}
}

// Bar mode draws bars (escape sequences to redraw them) on Err, and
// leaves Out alone when it is not a terminal.
func TestBarMode(t *testing.T) {
	var errB, outB bytes.Buffer
	p := New(Options{Mode: Bar, Err: &errB, Out: &outB, Width: 80})
	if p.Out() != &outB {
		t.Fatal("Out is wrapped though it is not a terminal")
	}
	c := p.Counter("seeds", 4)
	c.Inc()
	time.Sleep(2 * barRefresh) // let it draw while running
	c.Inc()
	p.Close()
	s := errB.String()
	if !strings.Contains(s, "seeds") || !strings.Contains(s, "\x1b[") {
		t.Fatalf("no bar drawn: %q", s)
	}
	if outB.Len() != 0 {
		t.Fatalf("bars wrote to stdout: %q", outB.String())
	}
}

// TestScript feeds a run's reports to a Script: the commands counter
// follows Done, a command's clock span becomes a counter that ends with
// the command, the initial copy is counted while machines sync, and the
// drill's machines protected.
func TestScript(t *testing.T) {
	p, b, _ := plain(t)
	s := p.Script(ScriptOptions{Steps: "drill steps", Protected: []string{"db01", "web01"}})
	syncing := func(a, b int64) []harness.MachineProgress {
		return []harness.MachineProgress{
			{Name: "db01", State: "initial-sync", SyncedBytes: a << 20, SyncTotalBytes: 100 << 20},
			{Name: "web01", State: "initial-sync", SyncedBytes: b << 20, SyncTotalBytes: 100 << 20},
		}
	}
	m := time.Minute
	for _, pr := range []harness.Progress{
		{Done: 0, Total: 4, Command: "world"},
		{Done: 1, Total: 4},
		{Done: 1, Total: 4, Command: "wait state=protected", Elapsed: 0},
		{Done: 1, Total: 4, Command: "wait state=protected", Elapsed: m, SpanStart: 0, SpanEnd: 60 * m, MachinesKnown: true, Machines: syncing(50, 0)},
		{Done: 1, Total: 4, Command: "wait state=protected", Elapsed: 2 * m, SpanStart: 0, SpanEnd: 60 * m, MachinesKnown: true, Machines: syncing(100, 60)},
		{Done: 2, Total: 4, Elapsed: 3 * m, MachinesKnown: true, Machines: []harness.MachineProgress{{Name: "db01", State: "protected"}, {Name: "web01", State: "protected"}}},
		{Done: 2, Total: 4, Command: "run for=10m", Elapsed: 3 * m},
		{Done: 2, Total: 4, Command: "run for=10m", Elapsed: 8 * m, SpanStart: 3 * m, SpanEnd: 13 * m},
		{Done: 3, Total: 4, Elapsed: 13 * m},
		{Done: 3, Total: 4, Command: "check"},
		{Done: 4, Total: 4, Elapsed: 13 * m},
	} {
		s.Observe(pr)
	}
	p.Close()
	want := []string{
		"progress: drill steps 0/4 (0%)",
		"progress: drill steps 1/4 (25%)",
		"progress: wait state=protected 1m0s/1h0m0s (1%)",
		"progress: initial copy db01,web01 50.0 MiB/200.0 MiB (25%)",
		"progress: machines protected 0/2 (0%)",
		"progress: initial copy db01,web01 160.0 MiB/200.0 MiB (80%)",
		"progress: wait state=protected done at 3m0s of 1h0m0s",
		"progress: drill steps 2/4 (50%)",
		"progress: initial copy db01,web01 done at 160.0 MiB of 200.0 MiB",
		"progress: machines protected 2/2 (100%)",
		"progress: run for=10m 5m0s/10m0s (50%)",
		"progress: run for=10m 10m0s/10m0s (100%)",
		"progress: drill steps 3/4 (75%)",
		"progress: drill steps 4/4 (100%)",
	}
	if diff := cmp.Diff(want, lines(b)); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
}
