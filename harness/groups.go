package harness

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
	"github.com/v2a-dr/v2a/sim/workload"
)

// hbEdge says that write k of a machine happened after write onK of
// machine on was acknowledged (its cause).
type hbEdge struct {
	k   uint64
	on  string
	onK uint64
}

// causality is the happens-before relation across machines, as the
// cross-VM workloads report it: per machine, edges in k order.
type causality struct{ edges map[string][]hbEdge }

func (c *causality) add(machine string, k uint64, on string, onK uint64) {
	if c.edges == nil {
		c.edges = map[string][]hbEdge{}
	}
	c.edges[machine] = append(c.edges[machine], hbEdge{k, on, onK})
}

// violation finds a write inside the cut whose cause is outside it: for
// every machine v in the cut, every write k <= cut[v] of v whose cause is a
// write onK of another machine u in the cut needs onK <= cut[u].
func (c *causality) violation(cut map[string]uint64) string {
	for _, v := range sortedKeys(cut) {
		for _, e := range c.edges[v] {
			if e.k > cut[v] {
				break // edges are in k order
			}
			if ku, in := cut[e.on]; in && e.onK > ku {
				return fmt.Sprintf("%s write k=%d is in the cut but its cause, %s write k=%d, is not (%s is cut at k=%d)", v, e.k, e.on, e.onK, e.on, ku)
			}
		}
	}
	return ""
}

// orderFlow is a running order flow and the group it belongs to.
type orderFlow struct {
	group string
	o     *workload.Orders
}

// StartOrders runs the cross-VM order flow on three machines (database,
// web, report), recording every cross-machine dependency.
func (e *Env) StartOrders(group string, names [3]string, rate float64) error {
	var ws [3]workload.Writer
	for i, n := range names {
		m := e.Machines[n]
		if m == nil {
			return fmt.Errorf("harness: no machine %q (have %s)", n, strings.Join(e.names, ", "))
		}
		if e.Workloads.Workload(n) != nil {
			return fmt.Errorf("harness: machine %s already runs a workload", n)
		}
		ws[i] = &tracedWriter{e: e, m: m}
	}
	o, err := workload.NewOrders(names, ws, workload.Spec{RegionStart: 32 << 20}, rate, e.hb.add)
	if err != nil {
		return err
	}
	e.orders = append(e.orders, orderFlow{group: group, o: o})
	r := e.Sim.SubRand("workload/orders/" + group)
	e.Workloads.Start("orders/"+group, o, r, time.Duration(r.IntN(1000))*time.Millisecond)
	e.Trace.Add(e.Sim.Elapsed(), "harness", "workload", fmt.Sprintf("orders group=%s db=%s web=%s report=%s", group, names[0], names[1], names[2]))
	return nil
}

// orderFlowOn returns the flow a machine takes part in, if any.
func (e *Env) orderFlowOn(machine string) *workload.Orders {
	for _, f := range e.orders {
		for _, n := range f.o.Machines() {
			if n == machine {
				return f.o
			}
		}
	}
	return nil
}

// GroupCatalog reads a replication group's catalog from storage.
func (d *Deployment) GroupCatalog(group string) (*azuresvc.GroupCatalog, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return nil, err
	}
	c, _, err := azuresvc.LoadGroupCatalog(d.e.ctx, store, prefix, group)
	return c, err
}

// CheckGroupPoints checks every group recovery point of a group:
//
//   - member: each member's disks are exactly its writes before the tag
//     (write-order and durability, as for a machine's own points);
//   - cut: no member's image holds a write whose cause, on another member,
//     is missing (the consistent-cut property);
//   - group-invariant: the cross-VM application recovers on the images.
func (d *Deployment) CheckGroupPoints(group string) []Result {
	gc, err := d.GroupCatalog(group)
	if err != nil {
		return []Result{{Check: "cut", Subject: group, Verdict: Unknown, Evidence: err.Error()}}
	}
	if len(gc.Points) == 0 {
		return []Result{d.noGroupPoints(group)}
	}
	var out []Result
	cats := map[string]*azuresvc.Catalog{}
	for _, gp := range gc.Points {
		subj := group + "@" + gp.ID
		cut := map[string]uint64{}
		images := map[string][]io.ReaderAt{}
		ok := true
		for _, mp := range gp.Members {
			m := d.e.Machines[mp.Machine]
			if m == nil {
				out = append(out, Result{Check: "member", Subject: subj, Verdict: Unknown, Evidence: "no simulated machine " + mp.Machine})
				ok = false
				continue
			}
			cat := cats[mp.Machine]
			if cat == nil {
				if cat, err = d.Catalog(mp.Machine); err != nil {
					out = append(out, Result{Check: "member", Subject: subj, Verdict: Unknown, Evidence: err.Error()})
					ok = false
					continue
				}
				cats[mp.Machine] = cat
			}
			imgs, ranges, err := d.PointImages(cat, azuresvc.Point{ID: gp.ID, Snapshots: mp.Snapshots})
			if err != nil {
				out = append(out, Result{Check: "member", Subject: subj + "/" + mp.Machine, Verdict: Unknown, Evidence: err.Error()})
				ok = false
				continue
			}
			r := judgePoint(m.Oracle(), subj+"/"+mp.Machine, mp.Seq, imgs, ranges)
			r.Check = "member"
			out = append(out, r)
			cut[mp.Machine] = m.Oracle().KForSeq(mp.Seq)
			images[mp.Machine] = imgs
		}
		if !ok {
			continue
		}
		r := Result{Check: "cut", Subject: subj, Verdict: OK, Detail: cutString(cut)}
		if v := d.e.hb.violation(cut); v != "" {
			r.Verdict, r.Evidence = Illegal, v
		}
		out = append(out, r)
		for _, f := range d.e.orders {
			ns := f.o.Machines()
			if _, a := images[ns[0]]; !a {
				continue
			}
			rep, err := f.o.CheckGroup(images[ns[0]][0], images[ns[1]][0], images[ns[2]][0])
			gr := Result{Check: "group-inv", Subject: subj, Verdict: OK, Detail: gp.Kind + " " + rep.Summary}
			if err != nil {
				gr.Verdict, gr.Evidence = Illegal, err.Error()
			}
			out = append(out, gr)
		}
	}
	return out
}

// noGroupPoints is the verdict on a group without group points: Illegal
// once every member has been protected for longer than a crash interval
// and the schedule's slack, Unknown before (too early to judge), never OK
// (a consistent-cut check over no cuts proves nothing).
func (d *Deployment) noGroupPoints(group string) Result {
	r := Result{Check: "cut", Subject: group, Verdict: Unknown}
	st, err := d.csStatus()
	if err != nil {
		r.Evidence = "no group points, and the configuration server is down: " + err.Error()
		return r
	}
	for _, g := range st.Groups {
		if g.Name != group {
			continue
		}
		if g.ProtectedSince.IsZero() {
			r.Evidence = fmt.Sprintf("no group points, and not every member is protected (group %s): nothing to judge", g.State)
			return r
		}
		p := proto.DefaultPolicy()
		for _, q := range st.Policies {
			if q.Name == g.Policy {
				p = q
			}
		}
		return noPointsVerdict("cut", group, "group recovery points", true, g.ProtectedSince, d.e.Sim.Now(), p)
	}
	r.Evidence = "no group points, and the configuration server knows no group " + group
	return r
}

func cutString(cut map[string]uint64) string {
	var parts []string
	for _, m := range sortedKeys(cut) {
		parts = append(parts, fmt.Sprintf("%s:k=%d", m, cut[m]))
	}
	return strings.Join(parts, " ")
}

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
		if p.Kind == "app" {
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
// and the write-hold distribution.
func (r *Runner) groups(a argMap) (string, error) {
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
	}
	if len(st.Groups) == 0 {
		b.WriteString("no replication groups\n")
	}
	if h := r.Env.holdsReport(); h != "" {
		b.WriteString("guest writes held by the prepare phase (as the guests saw them):\n" + h)
	}
	return b.String(), nil
}

func pointName(e *Env, id string, t time.Time) string {
	if id == "" {
		return "-"
	}
	return id + " (" + fmtTime(e, t) + ")"
}

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
