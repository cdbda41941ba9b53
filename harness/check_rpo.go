// The rpo check: each machine's recovery point objective within a bound.

package harness

import (
	"fmt"
	"time"
)

// CheckRPO checks that each machine's RPO, as the configuration server
// measures it, is within bound.
func (d *Deployment) CheckRPO(machines []string, bound time.Duration) []Result {
	if machines == nil {
		machines = d.protectedMachines()
	}
	var out []Result
	for _, m := range machines {
		ms, ok := d.MachineStatus(m)
		r := Result{Check: "rpo", Subject: m}
		switch {
		case !ok:
			r.Verdict, r.Evidence = Unknown, "the configuration server does not know the machine (or is down)"
		case ms.NewestPoint.IsZero():
			r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no recovery point yet (RPO %s since enabling)", fmtDur(ms.RPO))
		default:
			rpo := d.e.Sim.Now().Sub(ms.NewestPoint)
			r.Detail = fmt.Sprintf("rpo=%s bound=%s", fmtDur(rpo), bound)
			r.Verdict = OK
			if rpo > bound {
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("newest point at %s, RPO %s over the bound", fmtTime(d.e, ms.NewestPoint), fmtDur(rpo))
			}
		}
		out = append(out, r)
	}
	return out
}
