// The converged check: liveness after faults are healed.

package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"
)

// CheckConverged is the swarm's liveness verdict, to be asked after every
// fault is healed and the world ran on: each protected machine (every one
// the configuration server knows with a policy, or those named) is
// protected again, its agent replicating, its RPO within bound; and no job
// of the configuration server has been running for longer than bound (a
// job stuck on a lost reply, say). A configuration server that is down is
// itself a failure: nothing can converge without it. With no protected
// machine there is nothing to judge and the check says so (Unknown).
func (d *Deployment) CheckConverged(machines []string, bound time.Duration) []Result {
	st, err := d.csStatus()
	if err != nil {
		return []Result{{Check: "converged", Subject: HostConfigServer, Verdict: Illegal, Evidence: err.Error()}}
	}
	if machines == nil {
		machines = d.protectedMachines()
	}
	now := d.e.Sim.Now()
	var out []Result
	for _, name := range machines {
		r := Result{Check: "converged", Subject: name}
		var ms *configsrv.MachineStatus
		for i := range st.Machines {
			if st.Machines[i].Name == name {
				ms = &st.Machines[i]
			}
		}
		if ms == nil {
			r.Verdict, r.Evidence = Unknown, "the configuration server does not know the machine"
			out = append(out, r)
			continue
		}
		var why []string
		if ms.State != configsrv.StateProtected {
			why = append(why, fmt.Sprintf("state %s, not protected", ms.State))
		}
		if ms.Phase != "replicating" {
			why = append(why, fmt.Sprintf("agent phase %q, not replicating", ms.Phase))
		}
		rpo := now.Sub(ms.EnabledAt)
		if !ms.NewestPoint.IsZero() {
			rpo = now.Sub(ms.NewestPoint)
		}
		if ms.NewestPoint.IsZero() {
			why = append(why, fmt.Sprintf("no recovery point (%s since enabling)", fmtDur(rpo)))
		} else if rpo > bound {
			why = append(why, fmt.Sprintf("RPO %s over the bound %s (newest point at %s)", fmtDur(rpo), bound, fmtTime(d.e, ms.NewestPoint)))
		}
		if len(why) > 0 {
			r.Verdict, r.Evidence = Illegal, strings.Join(why, "; ")
		} else {
			r.Verdict, r.Detail = OK, fmt.Sprintf("protected, rpo=%s bound=%s", fmtDur(rpo), bound)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil // the check command reports "nothing to judge"
	}
	var stuck []string
	jobs := 0
	for _, j := range st.Jobs {
		jobs++
		if j.Status == configsrv.JobRunning && now.Sub(j.Started) > bound {
			stuck = append(stuck, fmt.Sprintf("job %d %s %s running for %s", j.ID, j.Kind, j.Machine, fmtDur(now.Sub(j.Started))))
		}
	}
	jr := Result{Check: "converged", Subject: "jobs", Verdict: OK, Detail: fmt.Sprintf("%d jobs, none running past %s", jobs, bound)}
	if len(stuck) > 0 {
		jr.Verdict, jr.Detail, jr.Evidence = Illegal, "", strings.Join(stuck, "; ")
	}
	return append(out, jr)
}
