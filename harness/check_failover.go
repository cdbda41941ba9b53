// Checks of failover: what no peer proves (FAILOVER.md §C).
//
//   - image: every booted VM's disks equal its recovery point byte for
//     byte, and are the oracle's state after exactly k writes; the
//     workload recovers on them;
//   - leftovers: after a test failover's cleanup the fabric's inventory,
//     and every network's IP table, equal what they were before the test;
//   - isolation: no test VM reaches the production network, nor it them.

package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/compute"
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
		case !v.OK() || !v.Ks.Contains(k):
			res.Verdict, res.Evidence = Illegal, fmt.Sprintf("the booted disks are not the source after the k=%d writes before the point (%s)", k, v.Evidence)
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
