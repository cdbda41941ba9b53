// Checks of failover: what no peer proves (FAILOVER.md §C).
//
//   - image: every booted VM's disks equal its recovery point byte for
//     byte, and are the oracle's state after exactly k writes; the
//     workload recovers on them;
//   - leftovers: after a test failover's cleanup the fabric's inventory,
//     and every network's IP table, equal what they were before the test;
//   - isolation: no test VM reaches the production network, nor it them;
//   - plan-order: groups in order, a group's VMs in parallel, actions only
//     for their failover type and direction, nothing done twice.

package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
)

// diskReadChunk is how much of a managed disk one ReadDisk call reads.
const diskReadChunk = 4 << 20

// readManagedDisk reads a whole managed disk.
func readManagedDisk(ctx context.Context, f compute.Fabric, d compute.Disk) ([]byte, error) {
	out := make([]byte, 0, d.SizeBytes)
	for off := int64(0); off < d.SizeBytes; off += diskReadChunk {
		n := min(diskReadChunk, d.SizeBytes-off)
		b, err := f.ReadDisk(ctx, d.Ref, off, n)
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != n {
			return nil, fmt.Errorf("read %s at %d: %d bytes, want %d", d.Ref, off, len(b), n)
		}
		out = append(out, b...)
	}
	return out, nil
}

// pointLookup finds a recovery point of a machine: its disks' images and
// its change-log position. ok is false when the point is not (or no longer)
// in storage.
type pointLookup func(machine, point string) (imgs []io.ReaderAt, seq uint64, consistency proto.Consistency, ok bool, err error)

// judgeImages is the image check of every VM failover made (a VM that
// carries compute.TagSource and compute.TagPoint) in inv.
//
// It also returns the booted images that passed, by job and machine, for
// the application checks that span machines.
func judgeImages(ctx context.Context, f compute.Fabric, inv compute.Inventory, lookup pointLookup, oracle func(machine string) *disk.Oracle, recover func(machine string, imgs []io.ReaderAt, app bool) (string, error)) ([]Result, map[string]map[string][]io.ReaderAt) {
	booted := map[string]map[string][]io.ReaderAt{}
	disks := map[compute.Ref]compute.Disk{}
	for _, d := range inv.Disks {
		disks[d.Ref] = d
	}
	var out []Result
	for _, vm := range inv.VMs {
		src, pt := vm.Tags[compute.TagSource], vm.Tags[compute.TagPoint]
		if src == "" || pt == "" {
			continue
		}
		subj := vm.Ref.Name + "=" + src + "@" + pt
		res := Result{Check: "image", Subject: subj}
		want, seq, kind, ok, err := lookup(src, pt)
		switch {
		case err != nil:
			res.Verdict, res.Evidence = Unknown, err.Error()
			out = append(out, res)
			continue
		case !ok:
			res.Verdict, res.Evidence = Unknown, fmt.Sprintf("point %s of %s is no longer in storage: nothing to compare the VM's disks with", pt, src)
			out = append(out, res)
			continue
		}
		refs := append([]compute.Ref{vm.OSDisk}, vm.DataDisks...)
		if len(refs) != len(want) {
			res.Verdict, res.Evidence = Illegal, fmt.Sprintf("the VM has %d disks, the point %d", len(refs), len(want))
			out = append(out, res)
			continue
		}
		var got []io.ReaderAt
		bad := ""
		for i, ref := range refs {
			d, ok := disks[ref]
			if !ok {
				bad = fmt.Sprintf("disk %d (%s) is not in the inventory", i, ref)
				break
			}
			b, err := readManagedDisk(ctx, f, d)
			if err != nil {
				res.Verdict, res.Evidence = Unknown, err.Error()
				break
			}
			p := make([]byte, len(b))
			if _, err := want[i].ReadAt(p, 0); err != nil && err != io.EOF {
				res.Verdict, res.Evidence = Unknown, fmt.Sprintf("point disk %d: %v", i, err)
				break
			}
			if !bytes.Equal(b, p) {
				at := 0
				for at < len(b) && b[at] == p[at] {
					at++
				}
				bad = fmt.Sprintf("disk %d (%s) differs from the point's disk %d first at byte %d", i, ref.Name, i, at)
				break
			}
			got = append(got, bytes.NewReader(b))
		}
		if res.Verdict != "" {
			out = append(out, res)
			continue
		}
		if bad != "" {
			res.Verdict, res.Evidence = Illegal, bad
			out = append(out, res)
			continue
		}
		o := oracle(src)
		if o == nil {
			res.Verdict, res.Evidence = Unknown, "no simulated machine "+src+": no history to judge the image against"
			out = append(out, res)
			continue
		}
		k := o.KForSeq(seq)
		v, err := o.Match(got, nil)
		switch {
		case err != nil:
			res.Verdict, res.Evidence = Unknown, err.Error()
		case !v.OK():
			res.Verdict, res.Evidence = Illegal, fmt.Sprintf("the booted disks are no state the source ever had: %s", v.Evidence)
		case !v.Ks.Contains(k):
			res.Verdict, res.Evidence = Illegal, fmt.Sprintf("the booted disks are the source after k in %s, not after the k=%d writes before the point (log seq %d)", v.Ks, k, seq)
		default:
			res.Verdict, res.Detail = OK, fmt.Sprintf("k=%d", k)
			job := vm.Tags[compute.TagJob]
			if booted[job] == nil {
				booted[job] = map[string][]io.ReaderAt{}
			}
			booted[job][src] = got
			if recover != nil {
				sum, err := recover(src, got, kind == proto.App)
				if err != nil {
					res.Verdict, res.Evidence = Illegal, "the workload does not recover on the booted disks: "+err.Error()
				} else if sum != "" {
					res.Detail += " " + sum
				}
			}
		}
		out = append(out, res)
	}
	return out, booted
}

// inventoryCmp compares addresses and prefixes by value.
var inventoryCmp = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// judgeLeftovers compares the inventory after a test's cleanup with the
// one before the test.
func judgeLeftovers(job string, before, after compute.Inventory) Result {
	res := Result{Check: "leftovers", Subject: job}
	if d := cmp.Diff(before, after, inventoryCmp...); d != "" {
		res.Verdict = Illegal
		res.Evidence = "the fabric after cleanup differs from before the test (-before +after):\n" + strings.TrimSpace(d)
		return res
	}
	res.Verdict = OK
	res.Detail = fmt.Sprintf("%d networks, %d NICs, %d disks, %d VMs, as before", len(after.Networks), len(after.NICs), len(after.Disks), len(after.VMs))
	return res
}

// judgeIsolation checks that no VM of a test failover (tagged with a test
// job) can reach a NIC of the production network or be reached from one:
// networks reach each other only when they are the same or peered.
func judgeIsolation(inv compute.Inventory, production compute.Ref, isTestJob func(job string) bool) []Result {
	peers := map[compute.Ref][]compute.Ref{}
	for _, n := range inv.Networks {
		peers[n.Ref] = n.Peers
	}
	reach := func(a, b compute.Ref) bool {
		return a == b || slices.Contains(peers[a], b) || slices.Contains(peers[b], a)
	}
	nics := map[compute.Ref]compute.NIC{}
	for _, n := range inv.NICs {
		nics[n.Ref] = n
	}
	var out []Result
	for _, vm := range inv.VMs {
		if !isTestJob(vm.Tags[compute.TagJob]) {
			continue
		}
		res := Result{Check: "isolation", Subject: vm.Ref.Name, Verdict: OK}
		var nets []string
		for _, r := range vm.NICs {
			n, ok := nics[r]
			if !ok {
				res.Verdict, res.Evidence = Unknown, "NIC "+r.String()+" not in the inventory"
				break
			}
			if reach(n.Network, production) {
				res.Verdict = Illegal
				res.Evidence = fmt.Sprintf("NIC %s (%s in %s) reaches the production network %s", n.Ref.Name, n.IP, n.Network.Name, production.Name)
				break
			}
			nets = append(nets, n.Network.Name)
		}
		if res.Verdict == OK {
			res.Detail = "only in " + strings.Join(nets, ",")
		}
		out = append(out, res)
	}
	return out
}

// runbookRun is one run of a plan's runbook, as the simulated runbook
// service saw it.
type runbookRun struct {
	Runbook, Plan, Op string
	Group             int
	OK                bool
}

// bootTask reports whether a task belongs to a boot group's own phase (its
// actions, its VMs' creation and health), as opposed to the preparation
// every VM of a plan does in parallel before the first group boots.
func bootTask(t failover.Task) bool {
	return t.Name == failover.TaskVM || t.Name == failover.TaskHealth || strings.HasPrefix(t.Name, "Group ")
}

// actionApplies says whether a plan action runs for a failover type (the
// direction is always VMware→Azure here).
func actionApplies(a proto.PlanAction, op string) bool {
	return (len(a.FailoverTypes) == 0 || slices.Contains(a.FailoverTypes, op)) &&
		(len(a.Directions) == 0 || slices.Contains(a.Directions, proto.DirectionToAzure))
}

// judgePlanOrder is the plan-order check of one plan job: boot groups
// strictly in order, the VMs of a group in parallel, actions run only for
// their failover type and direction, and nothing done twice (a resumed
// job runs only its failed action again, and a runbook never runs again
// after it succeeded).
func judgePlanOrder(j failover.Job, p *proto.RecoveryPlan, runs []runbookRun) []Result {
	subj := j.ID + " plan " + p.Name
	res := func(check string) Result {
		return Result{Check: "plan-order", Subject: subj + " " + check, Verdict: OK}
	}
	var out []Result
	// Groups in order.
	order := res("groups")
	var prevEnd time.Time
	prevGroup := 0
	for g := 1; g <= len(p.Groups); g++ {
		var first, last time.Time
		n := 0
		for _, t := range j.Tasks {
			if t.Group != g || !bootTask(t) {
				continue
			}
			n++
			if first.IsZero() || t.Start.Before(first) {
				first = t.Start
			}
			if t.End.After(last) {
				last = t.End
			}
		}
		if n == 0 {
			continue
		}
		if prevGroup > 0 && first.Before(prevEnd) {
			order.Verdict = Illegal
			order.Evidence = fmt.Sprintf("group %d started at %s, before group %d ended at %s", g, elapsed(first), prevGroup, elapsed(prevEnd))
			break
		}
		prevEnd, prevGroup = last, g
		order.Detail = fmt.Sprintf("%d groups in order", g)
	}
	if prevGroup == 0 {
		order.Verdict, order.Evidence = Unknown, "no boot group ran: nothing to judge"
	}
	out = append(out, order)
	// The VMs of a group in parallel.
	par := res("parallel")
	judged := 0
	for g := 1; g <= len(p.Groups) && par.Verdict == OK; g++ {
		var vms []failover.Task
		for _, t := range j.Tasks {
			if t.Group == g && t.Name == failover.TaskVM {
				vms = append(vms, t)
			}
		}
		if len(vms) < 2 {
			continue
		}
		judged++
		for _, a := range vms {
			for _, b := range vms {
				if !a.End.IsZero() && b.Start.After(a.End) {
					par.Verdict = Illegal
					par.Evidence = fmt.Sprintf("group %d: %s was created only after %s had booted (at %s, after %s): not in parallel", g, b.VM, a.VM, elapsed(b.Start), elapsed(a.End))
				}
			}
		}
	}
	if par.Verdict == OK {
		if judged == 0 {
			par.Verdict, par.Evidence = Unknown, "no group with two VMs: nothing to judge"
		} else {
			par.Detail = fmt.Sprintf("%d groups with their VMs in parallel", judged)
		}
	}
	out = append(out, par)
	// Actions only for their type and direction.
	acts := res("actions")
	fired, skipped := 0, 0
	for gi, g := range p.Groups {
		for _, set := range []struct {
			when string
			as   []proto.PlanAction
		}{{"pre", g.Pre}, {"post", g.Post}} {
			for _, a := range set.as {
				prefix := fmt.Sprintf("Group %d %s-action %s (", gi+1, set.when, a.Name)
				ran := slices.ContainsFunc(j.Tasks, func(t failover.Task) bool { return strings.HasPrefix(t.Name, prefix) })
				want := actionApplies(a, j.Op)
				switch {
				case ran && !want:
					acts.Verdict, acts.Evidence = Illegal, fmt.Sprintf("action %s ran in a %s, which it does not name (types %v, directions %v)", a.Name, j.Op, a.FailoverTypes, a.Directions)
				case ran:
					fired++
				case want && j.State == failover.JobSucceeded:
					acts.Verdict, acts.Evidence = Illegal, fmt.Sprintf("action %s applies to %s but never ran, and the job succeeded", a.Name, j.Op)
				case !want:
					skipped++
				}
			}
		}
	}
	if acts.Verdict == OK {
		if fired+skipped == 0 {
			acts.Verdict, acts.Evidence = Unknown, "the plan has no actions: nothing to judge"
		} else {
			acts.Detail = fmt.Sprintf("%d fired, %d left out for %s", fired, skipped, j.Op)
		}
	}
	out = append(out, acts)
	// Nothing redone.
	once := res("once")
	seen := map[string]bool{}
	for _, t := range j.Tasks {
		k := fmt.Sprintf("%s|%s|%d", t.Name, t.VM, t.Group)
		if seen[k] {
			once.Verdict, once.Evidence = Illegal, fmt.Sprintf("task %q (%s, group %d) appears twice", t.Name, t.VM, t.Group)
			break
		}
		seen[k] = true
	}
	okRuns := map[string]bool{}
	nruns := 0
	for _, r := range runs {
		if r.Plan != p.Name || r.Op != j.Op {
			continue
		}
		nruns++
		k := fmt.Sprintf("%s group %d", r.Runbook, r.Group)
		if okRuns[k] && once.Verdict == OK {
			once.Verdict, once.Evidence = Illegal, fmt.Sprintf("runbook %s ran again after it had succeeded", k)
		}
		if r.OK {
			okRuns[k] = true
		}
	}
	if once.Verdict == OK {
		once.Detail = fmt.Sprintf("%d tasks, %d runbook runs (%d succeeded), nothing redone", len(j.Tasks), nruns, len(okRuns))
	}
	out = append(out, once)
	return out
}
