package harness

import (
	"fmt"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"slices"
	"strings"
)

// The portal's views answer a question about something that does not
// exist — a machine that never replicated, an unknown group, a pruned
// point — by saying what is and why, never with an internal blob path. A
// name the world does not have at all is bad input (a typo): an error that
// lists the names it has.

// knownMachine refuses a machine the world does not have.
func (r *Runner) knownMachine(view, vm string) error {
	if slices.Contains(r.Env.names, vm) {
		return nil
	}
	return fmt.Errorf("%s: no machine %q in this world (have %s)", view, vm, strings.Join(r.Env.names, ", "))
}

// deployedMachine is the preamble of a command about one machine (vm=):
// the deployment, the name, and a clear error for a name the world lacks.
func (r *Runner) deployedMachine(view string, a argMap) (*Deployment, string, error) {
	d, err := r.deployment()
	if err != nil {
		return nil, "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return nil, "", err
	}
	if err := r.knownMachine(view, vm); err != nil {
		return nil, "", err
	}
	return d, vm, nil
}

// knownGroup refuses a group the configuration server has never heard of.
func (d *Deployment) knownGroup(view, g string) error {
	st, err := d.csStatus()
	if err != nil {
		return nil // the server is down: the group catalog still answers
	}
	var names []string
	for _, gs := range st.Groups {
		if gs.Name == g {
			return nil
		}
		names = append(names, gs.Name)
	}
	have := "no group is enabled yet: protect-group enables one"
	if len(names) > 0 {
		have = "have " + strings.Join(names, ", ")
	}
	return fmt.Errorf("%s: no replication group %q (%s)", view, g, have)
}

// groupPointsAnswer says why a known group has no group catalog yet.
func (d *Deployment) groupPointsAnswer(g string) string {
	st, _ := d.csStatus()
	for _, gs := range st.Groups {
		if gs.Name == g {
			return fmt.Sprintf("group %s (%s): no group points yet: no round has committed on every member\n", g, gs.State)
		}
	}
	return fmt.Sprintf("group %s: no group points\n", g)
}

// pointGone says what became of a point the machine's catalog does not
// hold: made and taken away (and why), or never made.
func (d *Deployment) pointGone(vm, id string, npoints int) string {
	p, ok := d.made.find(vm, id)
	if !ok {
		return fmt.Sprintf("%s has no point %q: the Azure side never made one by that name (it holds %d points; `points vm=%s` lists them)", vm, id, npoints, vm)
	}
	why := map[string]string{
		"retention":     "retention pruned it (every point of the newest 2h is kept, then each hour's earliest, for the policy's retention)",
		"revoked":       "its group round was revoked after the member's point was made",
		"snapshot-lost": "its snapshot disappeared from storage (the catalog verification dropped it)",
	}[p.Removed]
	if pol := d.PolicyOf(vm); p.Removed == "retention" && pol.CrashInterval > 0 && pol.CrashInterval < azuresvc.ContinuousUnder {
		why = fmt.Sprintf("retention pruned it (crash points every %s: every point of the newest %s is kept, then one a clock minute to %s, then each hour's earliest, for the policy's retention)",
			pol.CrashInterval, fmtDur(azuresvc.KeepEveryFor), fmtDur(azuresvc.KeepAllFor))
	}
	if why == "" {
		why = "the Azure side removed it (" + orNone([]string{p.Removed}) + ")"
	}
	return fmt.Sprintf("%s's point %s (%s, made %s) is gone: %s", vm, id, p.Kind, fmtTime(d.e, p.Time), why)
}
