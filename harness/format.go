// Formatting shared by the views.

package harness

import (
	"sort"
	"time"

	"github.com/v2a-dr/v2a/sim/sched"
)

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

func fmtTime(e *Env, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return sched.FormatElapsed(t.Sub(sched.Epoch))
}
