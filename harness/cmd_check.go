// The check command: runs the property checks (check_*.go) and counts them.

package harness

import (
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// checkNames are the checks `check what=` runs.
var checkNames = []string{"disks", "invariants", "points", "catalog", "schedule", "rpo", "cut", "groups", "holds", "round-holds", "non-interference", "image", "leftovers", "isolation", "plan-order", "round-trip", "vpn-bytes", "path", "cs-kept", "converged", "capture"}

// checkNonInterference is (*Runner).CheckNonInterference, set by init: the
// check replays the script through the command table, which refers to
// this command.
var checkNonInterference func(*Runner) Result

func init() { checkNonInterference = (*Runner).CheckNonInterference }

// check runs property checks and counts them:
//
//	check [what=(disks,invariants)]
func (r *Runner) check(a argMap) (string, error) {
	what := a.list("what")
	if len(what) == 0 {
		what = []string{"disks", "invariants"}
	}
	// Arguments first: a bad one changes nothing, whatever is deployed.
	for _, w := range what {
		if !slices.Contains(checkNames, w) {
			return "", fmt.Errorf("check: unknown check %q (want %s)", w, orList(checkNames))
		}
	}
	limit, err := a.durMin("limit", proto.CrashTagTimeouts.Hold(), 1)
	if err != nil {
		return "", err
	}
	bound, err := a.durMin("bound", 10*time.Minute, 1)
	if err != nil {
		return "", err
	}
	var rs []Result
	for _, w := range what {
		before := len(rs)
		switch w {
		case "disks":
			rs = append(rs, r.Env.CheckLiveDisks()...)
		case "invariants":
			rs = append(rs, r.Env.CheckLiveInvariants()...)
		case "points", "catalog":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckPoints(a.list("vms"), PointChecks{SkipImages: w == "catalog"})...)
		case "cut", "groups":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			gs := a.list("group")
			if len(gs) == 0 {
				for _, f := range r.Env.orders {
					gs = append(gs, f.group)
				}
			}
			for _, g := range gs {
				rs = append(rs, d.CheckGroupPoints(g)...)
			}
		case "holds":
			rs = append(rs, r.Env.CheckHolds(limit)...)
		case "capture":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckCapture()...)
		case "round-holds":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckRoundHolds(limit)...)
		case "schedule":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckSchedule(a.list("vms"))...)
		case "image", "leftovers", "isolation", "plan-order":
			fo, err := r.failoverSide()
			if err != nil {
				return "", err
			}
			res, err := fo.check(w)
			if err != nil {
				return "", err
			}
			rs = append(rs, res...)
		case "round-trip", "vpn-bytes", "path":
			fb, err := r.failbackSide()
			if err != nil {
				return "", err
			}
			res, err := fb.check(w, a.list("vms"))
			if err != nil {
				return "", err
			}
			rs = append(rs, res...)
		case "cs-kept":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckConfigKept()...)
		case "non-interference":
			rs = append(rs, checkNonInterference(r))
		case "converged":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckConverged(a.list("vms"), bound)...)
		case "rpo":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckRPO(a.list("vms"), bound)...)
		}
		if len(rs) == before {
			// A check that judged nothing must not pass: no protected
			// machine, no group, no workload is a wrong script or a
			// broken system, and either way nothing was shown.
			rs = append(rs, Result{Check: w, Subject: "-", Verdict: Unknown, Evidence: "nothing to judge (no machine, group or workload this check applies to)"})
		}
	}
	r.Tally.Add(rs...)
	for _, res := range rs {
		r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "check", fmt.Sprintf("%s %s %s", res.Check, res.Subject, res.Verdict))
	}
	if _, verbose := a["verbose"]; verbose || len(rs) <= 12 {
		return FormatResults(rs), nil
	}
	return SummarizeResults(rs), nil
}
