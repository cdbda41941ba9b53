package harness

import (
	"fmt"
	"strings"
)

// Verdict is a check's outcome, in porcupine's terms.
type Verdict string

// The verdicts.
const (
	OK      Verdict = "ok"
	Illegal Verdict = "ILLEGAL" // the property is broken: Evidence says where
	Unknown Verdict = "unknown" // the check could not decide (say why)
)

// Result is one check of one subject (a machine, a recovery point, a group).
type Result struct {
	Check    string // the property: "write-order", "invariant", ...
	Subject  string // what was checked: "db01", "db01@rp-0003"
	Verdict  Verdict
	Detail   string // the k found, the report of the invariant, ...
	Evidence string // for Illegal and Unknown: the block, the write, the point
}

func (r Result) String() string {
	s := fmt.Sprintf("%-12s %-24s %s", r.Check, r.Subject, r.Verdict)
	if r.Detail != "" {
		s += " " + r.Detail
	}
	if r.Evidence != "" {
		s += "\n    evidence: " + r.Evidence
	}
	return s
}

// Tally counts check results for a run's closing line.
type Tally struct {
	Passed, Failed int
	Failures       []Result
	// Results is every result counted, in order (the reports of `v2a
	// certify`: one test case each).
	Results []Result
}

// Add counts results; anything not OK is a failure.
func (t *Tally) Add(rs ...Result) {
	t.Results = append(t.Results, rs...)
	for _, r := range rs {
		if r.Verdict == OK {
			t.Passed++
		} else {
			t.Failed++
			t.Failures = append(t.Failures, r)
		}
	}
}

// Line is the closing line scripts and nightly jobs read.
func (t Tally) Line() string { return fmt.Sprintf("checks: %d passed, %d failed", t.Passed, t.Failed) }

// FormatResults prints results one per line.
func FormatResults(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// SummarizeResults prints one line per check with its counts, then every
// result that is not OK in full.
func SummarizeResults(rs []Result) string {
	type tally struct{ ok, bad int }
	var order []string
	counts := map[string]*tally{}
	for _, r := range rs {
		t := counts[r.Check]
		if t == nil {
			t = &tally{}
			counts[r.Check] = t
			order = append(order, r.Check)
		}
		if r.Verdict == OK {
			t.ok++
		} else {
			t.bad++
		}
	}
	var b strings.Builder
	for _, c := range order {
		fmt.Fprintf(&b, "%-12s %d ok, %d failed\n", c, counts[c].ok, counts[c].bad)
	}
	for _, r := range rs {
		if r.Verdict != OK {
			b.WriteString(r.String())
			b.WriteByte('\n')
		}
	}
	return b.String()
}
