// The holds checks: no guest write held past the tag protocol's phase timeouts.

package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"

	"github.com/v2a-dr/v2a/sim/disk"
)

type bucket struct {
	label string
	n     int
}

func writeHolds(b *strings.Builder, kind string, n int, maxHold, p50, p99 time.Duration, hist []bucket) {
	if n == 0 {
		fmt.Fprintf(b, "  %s holds: none\n", kind)
		return
	}
	var parts []string
	for _, h := range hist {
		if h.n > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", h.label, h.n))
		}
	}
	fmt.Fprintf(b, "  %s holds: %d, p50 %s, p99 %s, max %s [%s]\n", kind, n, p50, p99, maxHold, strings.Join(parts, " "))
}

func holdBuckets(hs []configsrv.HoldBucket) []bucket {
	out := make([]bucket, len(hs))
	for i, h := range hs {
		out[i] = bucket{h.Label, h.Count}
	}
	return out
}

// CheckHolds checks, on every simulated machine, that no guest write
// waited for a held gate longer than limit (the phase timeouts' sum).
func (e *Env) CheckHolds(limit time.Duration) []Result {
	var out []Result
	for _, n := range e.names {
		w := e.Machines[n].Waits()
		r := Result{Check: "hold", Subject: n, Verdict: OK, Detail: fmt.Sprintf("%d writes held, longest %s, limit %s", w.Held, w.Max, limit)}
		if w.Max > limit {
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("a guest write waited %s for the filter's gate, over the %s the phase timeouts allow", w.Max, limit)
		}
		out = append(out, r)
	}
	return out
}

// holdsReport prints the guests' view of held writes.
func (e *Env) holdsReport() string {
	var b strings.Builder
	for _, n := range e.names {
		w := e.Machines[n].Waits()
		if w.Held == 0 {
			continue
		}
		var parts []string
		for i, c := range w.Buckets {
			if c > 0 {
				parts = append(parts, fmt.Sprintf("%s:%d", disk.WaitBucketLabels[i], c))
			}
		}
		fmt.Fprintf(&b, "  %s: %d writes waited, longest %s, mean %s [%s]\n", n, w.Held, w.Max, (w.Total / time.Duration(w.Held)).Round(time.Microsecond), strings.Join(parts, " "))
	}
	return b.String()
}

// CheckRoundHolds checks the write holds the members reported for the
// group's committed and revoked crash-consistent rounds: the longest must
// be within limit, and there must be some (a round that held nothing
// measured nothing).
func (d *Deployment) CheckRoundHolds(limit time.Duration) []Result {
	st, err := d.csStatus()
	if err != nil {
		return []Result{{Check: "round-hold", Subject: "-", Verdict: Unknown, Evidence: err.Error()}}
	}
	var out []Result
	for _, g := range st.Groups {
		h := g.Stats.CrashHolds
		r := Result{Check: "round-hold", Subject: g.Name, Verdict: OK,
			Detail: fmt.Sprintf("%d member holds in crash rounds, p50 %s, max %s, limit %s", h.Count, h.P50, h.Max, limit)}
		switch {
		case h.Count == 0:
			r.Verdict, r.Evidence = Unknown, "no crash-consistent round reported a hold"
		case h.Max > limit:
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("a member held its writes %s in a crash-consistent round, over %s", h.Max, limit)
		}
		out = append(out, r)
	}
	return out
}
