// The schedule check: a point every crash interval, an app point every app interval.

package harness

import (
	"fmt"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
)

// protectedSince is when the machine last became protected (its sync
// completed), if it is protected now.
func (d *Deployment) protectedSince(m string) (time.Time, bool) {
	ms, ok := d.MachineStatus(m)
	if !ok || ms.State != configsrv.StateProtected {
		return time.Time{}, false
	}
	for i := len(ms.History) - 1; i >= 0; i-- {
		if ms.History[i].To == configsrv.StateProtected && ms.History[i].From != configsrv.StateProtected {
			return ms.History[i].At, true
		}
	}
	return time.Time{}, false
}

// CheckSchedule checks that points follow the policy: no gap between
// consecutive points longer than the crash-consistent interval (plus a
// minute's slack for drain and apply), and no gap between app-consistent
// points longer than the app-consistent interval, from the first point to
// the newest. A gap names the two points around it. A gap between points of
// two generations (a resync in between) is not the schedule's: it is
// counted, not judged.
//
// Under continuous protection (a crash interval under
// azuresvc.ContinuousUnder, down to 5 s) the slack is continuousSlack and
// the points of the newest azuresvc.KeepEveryFor, which retention keeps
// all of, must come every interval ± that slack: consecutive crash points
// closer than the interval less the slack fail too (points made more
// often than the policy asks cost storage for nothing). Older points of
// the newest two hours are thinned to one a clock minute: there a gap is
// judged against two minutes (a minute's point may be its app point, late
// in the minute).
func (d *Deployment) CheckSchedule(machines []string) []Result {
	if machines == nil {
		machines = d.protectedMachines()
	}
	var out []Result
	for _, m := range machines {
		cat, err := d.Catalog(m)
		if err != nil {
			out = append(out, Result{Check: "schedule", Subject: m, Verdict: Unknown, Evidence: err.Error()})
			continue
		}
		out = append(out, checkSchedule(m, cat.Points, d.PolicyOf(m), d.e.Sim.Now(), d.machineCrashes[m]...))
	}
	return out
}

const scheduleSlack = time.Minute

// continuousSlack is the tolerance on a continuous-protection interval: the
// agent's bookmark timer is exact in virtual time, so a second is a missed
// or doubled point, never jitter.
const continuousSlack = time.Second

// machineCrashes are when the machine crashed: a bookmark its filter held
// in memory then was lost with it (as a kernel driver's), so a gap across
// a machine crash is counted, not judged, as one across a resync is.
func checkSchedule(m string, pts []azuresvc.Point, p proto.Policy, now time.Time, machineCrashes ...time.Time) Result {
	r := Result{Check: "schedule", Subject: m, Verdict: OK}
	pts = append([]azuresvc.Point(nil), pts...)
	sort.Slice(pts, func(i, j int) bool { return pts[i].Time.Before(pts[j].Time) })
	if len(pts) == 0 {
		r.Verdict, r.Evidence = Illegal, "no recovery points"
		return r
	}
	// Beyond the newest two hours retention thins points to one an hour
	// (checked by the retention check): judge the schedule on the points
	// the service keeps all of, from the last one before that window on.
	cut := now.Add(-azuresvc.KeepAllFor)
	first := len(pts)
	for i := len(pts) - 1; i >= 0 && pts[i].Time.After(cut); i-- {
		first = i
	}
	if first == len(pts) {
		r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no recovery point in the last %s", azuresvc.KeepAllFor)
		return r
	}
	pts = pts[first:]
	continuous := p.CrashInterval > 0 && p.CrashInterval < azuresvc.ContinuousUnder
	fine := now.Add(-azuresvc.KeepEveryFor) // continuous: every point kept from here
	var maxGap, maxAppGap, minCrashGap, maxCrashGap time.Duration
	apps, resyncs, crashGaps, fineN := 0, 0, 0, 0
	crashedWithin := func(from, to time.Time) bool {
		for _, t := range machineCrashes {
			if t.After(from) && t.Before(to) {
				return true
			}
		}
		return false
	}
	var lastApp, lastCrash *azuresvc.Point
	for i := range pts {
		if i > 0 {
			gap := pts[i].Time.Sub(pts[i-1].Time)
			maxGap = max(maxGap, gap)
			allowed := p.CrashInterval + scheduleSlack
			if continuous {
				allowed = 2*azuresvc.ContinuousUnder + continuousSlack // the minute tier
				if !pts[i-1].Time.Before(fine) {
					allowed = p.CrashInterval + continuousSlack
				}
			}
			if continuous && !pts[i-1].Time.Before(fine) && pts[i].Kind == proto.Crash && lastCrash != nil && lastCrash.Gen == pts[i].Gen {
				cg := pts[i].Time.Sub(lastCrash.Time)
				if fineN == 0 || cg < minCrashGap {
					minCrashGap = cg
				}
				maxCrashGap = max(maxCrashGap, cg)
				fineN++
				if cg < p.CrashInterval-continuousSlack {
					r.Verdict = Illegal
					r.Evidence = fmt.Sprintf("crash points %s and %s are %s apart (policy: one every %s)", lastCrash.ID, pts[i].ID, fmtDur(cg), p.CrashInterval)
					return r
				}
			}
			if gap > allowed && pts[i].Gen != pts[i-1].Gen {
				// A resync (a new generation) makes no points until the
				// replica is whole again: the schedule cannot hold across
				// it, and the resync was ordered with an alert.
				resyncs++
			} else if gap > allowed && crashedWithin(pts[i-1].Time, pts[i].Time) {
				crashGaps++
			} else if gap > allowed {
				r.Verdict = Illegal
				r.Evidence = fmt.Sprintf("a %s gap between %s and %s (policy: a point every %s)", fmtDur(gap), pts[i-1].ID, pts[i].ID, p.CrashInterval)
				return r
			}
		}
		if pts[i].Kind == proto.Crash {
			lastCrash = &pts[i]
		}
		if pts[i].Kind == proto.App {
			if lastApp != nil {
				gap := pts[i].Time.Sub(lastApp.Time)
				maxAppGap = max(maxAppGap, gap)
				if p.AppInterval > 0 && gap > p.AppInterval+scheduleSlack && pts[i].Gen == lastApp.Gen {
					r.Verdict = Illegal
					r.Evidence = fmt.Sprintf("app-consistent points %s and %s are %s apart (policy: every %s)", lastApp.ID, pts[i].ID, fmtDur(gap), p.AppInterval)
					return r
				}
			}
			apps++
			lastApp = &pts[i]
		}
	}
	span := pts[len(pts)-1].Time.Sub(pts[0].Time)
	if p.AppInterval > 0 && span >= p.AppInterval+scheduleSlack && apps == 0 {
		r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no app-consistent point in %s of points (policy: every %s)", fmtDur(span), p.AppInterval)
		return r
	}
	if continuous && fineN == 0 {
		r.Verdict, r.Evidence = Illegal, fmt.Sprintf("no two crash points in the newest %s (policy: one every %s)", azuresvc.KeepEveryFor, p.CrashInterval)
		return r
	}
	r.Detail = fmt.Sprintf("%d points over %s, largest gap %s; %d app-consistent", len(pts), fmtDur(span), fmtDur(maxGap), apps)
	if continuous {
		r.Detail += fmt.Sprintf("; newest %s: %d crash intervals of %s to %s", azuresvc.KeepEveryFor, fineN, fmtDur(minCrashGap), fmtDur(maxCrashGap))
	}
	if resyncs > 0 {
		r.Detail += fmt.Sprintf("; %d gap(s) across a resync", resyncs)
	}
	if crashGaps > 0 {
		r.Detail += fmt.Sprintf("; %d gap(s) across a machine crash (bookmarks in the filter's memory lost with it)", crashGaps)
	}
	return r
}
