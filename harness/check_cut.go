// The cut check: each group point is a consistent cut.

package harness

import (
	"fmt"
	"io"
	"strings"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/proto"
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
			o := d.oracleAt(mp.Machine, gp.Time)
			r := judgePoint(o, subj+"/"+mp.Machine, mp.Seq, imgs, ranges)
			r.Check = "member"
			out = append(out, r)
			cut[mp.Machine] = o.KForSeq(mp.Seq)
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
			gr := Result{Check: "group-inv", Subject: subj, Verdict: OK, Detail: gp.Kind.String() + " " + rep.Summary}
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
