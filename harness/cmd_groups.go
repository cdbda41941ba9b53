// Script commands of the multi-VM family: protect-group, orders, group-points, groups.

package harness

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
)

// protectGroup enables replication of machines as one group:
//
//	protect-group group=NAME vms=(a,b,c) [policy=default] [master=NAME]
func (r *Runner) protectGroup(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	g, err := a.need("group")
	if err != nil {
		return "", err
	}
	if err := d.Request(&proto.EnableGroup{Group: g, Machines: a.list("vms"), Policy: a.str("policy", "default"), Master: a.str("master", "")}); err != nil {
		return "", err
	}
	return r.awaitReplies(d, 1)
}

// orders starts the order flow:
//
//	orders group=NAME db=M web=M report=M [rate=0.5]
func (r *Runner) ordersCmd(a argMap) (string, error) {
	g := a.str("group", "orders")
	var names [3]string
	for i, k := range []string{"db", "web", "report"} {
		v, err := a.need(k)
		if err != nil {
			return "", err
		}
		names[i] = v
	}
	rate, err := a.floatIn("rate", 0.5, 1e-6, 1e4)
	if err != nil {
		return "", err
	}
	if err := r.Env.StartOrders(g, names, rate); err != nil {
		return "", err
	}
	return fmt.Sprintf("order flow %s: database %s -> web %s -> report %s, %.2g orders/s\n", g, names[0], names[1], names[2], rate), nil
}

// groupPoints lists a group's recovery points:
//
//	group-points group=NAME [last=N]
func (r *Runner) groupPoints(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	g, err := a.need("group")
	if err != nil {
		return "", err
	}
	last, err := a.intIn("last", 6, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	if err := d.knownGroup("group-points", g); err != nil {
		return "", err
	}
	gc, err := d.GroupCatalog(g)
	if errors.Is(err, blob.ErrNotFound) {
		return d.groupPointsAnswer(g), nil
	}
	if err != nil {
		return "", err
	}
	pts := gc.Points
	var b strings.Builder
	crash, app := 0, 0
	for _, p := range pts {
		if p.Kind == proto.App {
			app++
		} else {
			crash++
		}
	}
	fmt.Fprintf(&b, "group %s (%s): %d points (%d crash, %d app)\n", g, strings.Join(gc.Members, ","), len(pts), crash, app)
	if int64(len(pts)) > last {
		pts = pts[int64(len(pts))-last:]
	}
	for _, p := range pts {
		var seqs []string
		for _, m := range p.Members {
			seqs = append(seqs, fmt.Sprintf("%s@%d", m.Machine, m.Seq))
		}
		fmt.Fprintf(&b, "  %-22s %-5s %s %s\n", p.ID, p.Kind, fmtTime(r.Env, p.Time), strings.Join(seqs, " "))
	}
	return b.String(), nil
}

// groups prints the replication groups: points, rounds, revokes and why,
// and the write-hold distribution; with detail=rounds, also each round the
// configuration server keeps (the last configsrv.RecentRounds) with its
// phases and holds (roundLines).
func (r *Runner) groups(a argMap) (string, error) {
	detail := a.str("detail", "")
	if detail != "" && detail != "rounds" {
		return "", argErrorf("detail=%s: want detail=rounds", detail)
	}
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	st, err := d.csStatus()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, g := range st.Groups {
		var members []string
		for _, m := range g.Members {
			members = append(members, m.Machine)
		}
		fmt.Fprintf(&b, "group %s: %s, master %s, members %s\n", g.Name, g.State, g.Master, strings.Join(members, ","))
		rpo := "-"
		if !g.LatestPoint.Time.IsZero() {
			rpo = fmtDur(r.Env.Sim.Now().Sub(g.LatestPoint.Time))
		}
		fmt.Fprintf(&b, "  points %d; latest crash %s, latest app %s; rpo %s\n", g.Points, pointName(r.Env, g.LatestCrashPoint.ID, g.LatestCrashPoint.Time), pointName(r.Env, g.LatestAppPoint.ID, g.LatestAppPoint.Time), rpo)
		s := g.Stats
		fmt.Fprintf(&b, "  rounds %d: committed %d (crash %d, app %d), revoked %d\n", s.Rounds, s.Committed, s.CommittedCrash, s.CommittedApp, s.Revoked)
		if s.Unreported > 0 {
			// The counts above are of reports received; the masters'
			// own tallies say how many more rounds they finished.
			fmt.Fprintf(&b, "    reports lost: %d rounds, %d of them revoked (by the master's own count)\n", s.Unreported, s.UnreportedRevoked)
		}
		for _, rc := range s.RevokedBy {
			fmt.Fprintf(&b, "    revoked %d× %s\n", rc.Count, rc.Reason)
		}
		writeHolds(&b, "crash", s.CrashHolds.Count, s.CrashHolds.Max, s.CrashHolds.P50, s.CrashHolds.P99, holdBuckets(s.CrashHolds.Histogram))
		writeHolds(&b, "app", s.AppHolds.Count, s.AppHolds.Max, s.AppHolds.P50, s.AppHolds.P99, holdBuckets(s.AppHolds.Histogram))
		if g.Alerting {
			fmt.Fprintf(&b, "  ALERT %s since %s: %s\n", g.Alert.Name, fmtTime(r.Env, g.Alert.Raised), g.Alert.Detail)
		}
		if detail == "rounds" {
			for _, rs := range s.Recent {
				b.WriteString(roundLines(r.Env, rs))
			}
		}
	}
	if len(st.Groups) == 0 {
		b.WriteString("no replication groups\n")
	}
	if h := r.Env.holdsReport(); h != "" {
		b.WriteString("guest writes held by the prepare phase (as the guests saw them):\n" + h)
	}
	return b.String(), nil
}

// roundLines is one round as `groups detail=rounds` prints it:
//
//	round apps:c:600000 crash committed, started +00:10:00.000000, reported +00:10:00.004500
//	  phases begin 0s..1ms ok, prepare 1ms..2ms ok, commit 2ms..3ms ok, resume 3ms..4ms ok
//	  holds app01 2ms, web01 -
//
// A phase's times are since the round started, exact (the report shows
// the same); "failed" is a phase left without every acknowledgement.
func roundLines(e *Env, rs configsrv.RoundStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  round %s %s %s, started %s, reported %s", rs.TagID, rs.Kind, rs.Outcome, fmtTime(e, rs.Started), fmtTime(e, rs.Reported))
	if rs.Reason != "" {
		fmt.Fprintf(&b, " (%s)", rs.Reason)
	}
	var phases []string
	for _, p := range rs.Phases {
		ok := "ok"
		if !p.OK {
			ok = "failed"
		}
		phases = append(phases, fmt.Sprintf("%s %s..%s %s", p.Name, p.Start.Sub(rs.Started), p.End.Sub(rs.Started), ok))
	}
	if len(phases) == 0 {
		phases = []string{"- (the master reported none)"}
	}
	var holds []string
	for _, h := range rs.Holds {
		held := "-"
		if h.Held >= 0 {
			held = h.Held.String()
		}
		holds = append(holds, h.Machine+" "+held)
	}
	fmt.Fprintf(&b, "\n    phases %s\n    holds %s\n", strings.Join(phases, ", "), strings.Join(holds, ", "))
	return b.String()
}
