package memfabric_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
)

// consistent checks the fabric's invariants on an inventory: each NIC's
// address is in its subnet's table under its name and every table entry
// is a NIC; addresses are usable; attachments agree both ways; lists are
// sorted.
func consistent(inv compute.Inventory) error {
	nics := map[compute.Ref]compute.NIC{}
	for _, n := range inv.NICs {
		nics[n.Ref] = n
	}
	disks := map[compute.Ref]compute.Disk{}
	for _, d := range inv.Disks {
		disks[d.Ref] = d
	}
	vms := map[compute.Ref]compute.VM{}
	for _, v := range inv.VMs {
		vms[v.Ref] = v
	}
	inTables := 0
	for _, net := range inv.Networks {
		for _, s := range net.Subnets {
			if !slices.IsSortedFunc(s.Used, func(a, b compute.IPUse) int { return a.IP.Compare(b.IP) }) {
				return fmt.Errorf("subnet %s IP table not sorted: %v", s.Name, s.Used)
			}
			for _, u := range s.Used {
				inTables++
				n, ok := nics[u.NIC]
				if !ok || n.IP != u.IP || n.Subnet != s.Name || n.Network != net.Ref {
					return fmt.Errorf("subnet %s: %s held by %s, which is %+v", s.Name, u.IP, u.NIC, n)
				}
				first := s.Prefix.Addr().Next().Next().Next()
				if !s.Prefix.Contains(u.IP) || !first.Less(u.IP) {
					return fmt.Errorf("subnet %s (%s): %s is not usable", s.Name, s.Prefix, u.IP)
				}
			}
		}
	}
	if inTables != len(nics) {
		return fmt.Errorf("%d NICs but %d addresses in the tables", len(nics), inTables)
	}
	for _, v := range inv.VMs {
		for _, r := range v.NICs {
			if nics[r].VM != v.Ref {
				return fmt.Errorf("VM %s has NIC %s, which says it is attached to %v", v.Ref, r, nics[r].VM)
			}
		}
		for _, r := range append([]compute.Ref{v.OSDisk}, v.DataDisks...) {
			if disks[r].VM != v.Ref {
				return fmt.Errorf("VM %s has disk %s, which says it is attached to %v", v.Ref, r, disks[r].VM)
			}
		}
	}
	for _, n := range inv.NICs {
		if n.VM != (compute.Ref{}) && !slices.Contains(vms[n.VM].NICs, n.Ref) {
			return fmt.Errorf("NIC %s attached to %s, which does not list it", n.Ref, n.VM)
		}
	}
	for _, d := range inv.Disks {
		if v, ok := vms[d.VM]; d.VM != (compute.Ref{}) && (!ok || (v.OSDisk != d.Ref && !slices.Contains(v.DataDisks, d.Ref))) {
			return fmt.Errorf("disk %s attached to %s, which does not list it", d.Ref, d.VM)
		}
	}
	return nil
}

// TestPropertyFabricStaysConsistent runs random creates, deletes, polls
// and clock moves (with random latencies, jitter and injected faults) on a
// small subnet: the IP tables, attachments and order always hold, every
// operation ends, and deleting everything gives back the initial
// inventory.
func TestPropertyFabricStaysConsistent(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		now := time.Unix(0, 0)
		st := memblob.New()
		lat := latencies(time.Duration(rapid.IntRange(0, 30).Draw(rt, "latency s")) * time.Second)
		lat.Jitter = rapid.Float64Range(0, 0.9).Draw(rt, "jitter")
		f, err := memfabric.New(st, memfabric.Options{Clock: func() time.Time { return now }, Latency: lat,
			Rand: randFrom(rapid.Uint64().Draw(rt, "seed"))})
		if err != nil {
			rt.Fatal(err)
		}
		if err := f.CreateGroup(ctx, rg); err != nil {
			rt.Fatal(err)
		}
		net := compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "net"}
		if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: rg, Name: "net", AddressSpace: netip.MustParsePrefix("10.0.0.0/24"),
			Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.0.0/28")}}}); err != nil {
			rt.Fatal(err)
		}
		if err := st.CreateContainer(ctx, "src"); err != nil {
			rt.Fatal(err)
		}
		if _, err := st.CreatePageBlob(ctx, "src", "img", 4096, blob.WriteOptions{}); err != nil {
			rt.Fatal(err)
		}
		for i := rapid.IntRange(0, 3).Draw(rt, "faults"); i > 0; i-- {
			op := rapid.SampledFrom([]string{memfabric.OpCreateNIC, memfabric.OpCreateVM, memfabric.OpDelete, memfabric.OpHydrate}).Draw(rt, "fault op")
			ft := memfabric.Fault{Op: op, Status: 500, Code: compute.CodeProvisionFailed, Message: "injected", Count: rapid.IntRange(1, 3).Draw(rt, "count"),
				Async: rapid.Bool().Draw(rt, "async")}
			if op == memfabric.OpHydrate {
				ft = memfabric.HydrationFailed("")
			}
			if err := f.Inject(ft); err != nil {
				rt.Fatal(err)
			}
		}
		initial, _ := f.Inventory(ctx)
		var pending []compute.Pending
		ref := func(k compute.Kind, i int) compute.Ref {
			return compute.Ref{Kind: k, Group: rg, Name: fmt.Sprintf("%s%d", k, i)}
		}
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for s := 0; s < steps; s++ {
			var p compute.Pending
			var err error
			switch rapid.IntRange(0, 6).Draw(rt, "action") {
			case 0:
				spec := compute.NICSpec{Group: rg, Name: ref(compute.KindNIC, rapid.IntRange(0, 14).Draw(rt, "nic")).Name, Network: net, Subnet: "app"}
				if rapid.Bool().Draw(rt, "static") {
					spec.IP = netip.AddrFrom4([4]byte{10, 0, 0, byte(rapid.IntRange(0, 16).Draw(rt, "ip"))})
				}
				p, err = f.BeginCreateNIC(ctx, spec)
			case 1:
				p, err = f.BeginCreateDisk(ctx, compute.DiskSpec{Group: rg, Name: ref(compute.KindDisk, rapid.IntRange(0, 9).Draw(rt, "disk")).Name, SourceContainer: "src", SourceBlob: "img"})
			case 2:
				spec := compute.VMSpec{Group: rg, Name: ref(compute.KindVM, rapid.IntRange(0, 5).Draw(rt, "vm")).Name, OSType: compute.Linux,
					NICs:   []compute.Ref{ref(compute.KindNIC, rapid.IntRange(0, 14).Draw(rt, "vm nic"))},
					OSDisk: ref(compute.KindDisk, rapid.IntRange(0, 9).Draw(rt, "vm disk")),
					Tags:   map[string]string{compute.TagHydrate: fmt.Sprint(rapid.Bool().Draw(rt, "hydrate"))}}
				p, err = f.BeginCreateVM(ctx, spec)
			case 3:
				k := rapid.SampledFrom([]compute.Kind{compute.KindVM, compute.KindNIC, compute.KindDisk}).Draw(rt, "kind")
				p, err = f.BeginDelete(ctx, ref(k, rapid.IntRange(0, 14).Draw(rt, "which")))
			case 4:
				if rapid.Bool().Draw(rt, "start") {
					p, err = f.BeginStart(ctx, ref(compute.KindVM, rapid.IntRange(0, 5).Draw(rt, "vm")))
				} else {
					p, err = f.BeginDeallocate(ctx, ref(compute.KindVM, rapid.IntRange(0, 5).Draw(rt, "vm")))
				}
			default:
				now = now.Add(time.Duration(rapid.IntRange(0, 120).Draw(rt, "advance s")) * time.Second)
			}
			var ae *compute.Error
			if err != nil && !errors.As(err, &ae) {
				rt.Fatalf("step %d: an error that is not a *compute.Error: %v", s, err)
			}
			if err == nil && p != "" {
				pending = append(pending, p)
			}
			inv, err := f.Inventory(ctx)
			if err != nil {
				rt.Fatal(err)
			}
			if err := consistent(inv); err != nil {
				rt.Fatalf("step %d: %v", s, err)
			}
		}
		// Liveness: every operation ends.
		wait := func(p compute.Pending) compute.Result {
			for i := 0; i < 100; i++ {
				r, err := f.Poll(ctx, p)
				if err != nil {
					rt.Fatalf("Poll(%s): %v", p, err)
				}
				if r.Done {
					return r
				}
				now = now.Add(r.After)
			}
			rt.Fatalf("%s never ends", p)
			return compute.Result{}
		}
		for _, p := range pending {
			if r := wait(p); r.Err != nil {
				var ae *compute.Error
				if !errors.As(r.Err, &ae) {
					rt.Fatalf("%s ended with %v, not a *compute.Error", p, r.Err)
				}
			}
		}
		// Cleanup, VMs first, gives back the initial inventory. Faults
		// may still fail deletes: run until nothing is left.
		for round := 0; round < 10; round++ {
			inv, _ := f.Inventory(ctx)
			var refs []compute.Ref
			for _, v := range inv.VMs {
				refs = append(refs, v.Ref)
			}
			if len(refs) == 0 {
				for _, n := range inv.NICs {
					refs = append(refs, n.Ref)
				}
				for _, d := range inv.Disks {
					refs = append(refs, d.Ref)
				}
			}
			for _, r := range refs {
				if p, err := f.BeginDelete(ctx, r); err == nil {
					wait(p)
				}
			}
		}
		final, _ := f.Inventory(ctx)
		if diff := cmp.Diff(initial, final, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			rt.Fatalf("after deleting everything (-initial +final):\n%s", diff)
		}
	})
}

// TestConcurrentUse: many goroutines creating NICs at once get distinct
// addresses and leave a consistent fabric (run with -race).
func TestConcurrentUse(t *testing.T) {
	st := memblob.New()
	f, err := memfabric.New(st, memfabric.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.CreateGroup(ctx, rg); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: rg, Name: "net", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.0.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	net := compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "net"}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				p, err := f.BeginCreateNIC(ctx, compute.NICSpec{Group: rg, Name: fmt.Sprintf("n%d-%d", g, i), Network: net, Subnet: "app"})
				if err == nil {
					_, err = f.Poll(ctx, p)
				}
				if err != nil {
					errs <- err
				}
				_, _ = f.Inventory(ctx)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	inv, _ := f.Inventory(ctx)
	if len(inv.NICs) != 64 {
		t.Errorf("%d NICs, want 64", len(inv.NICs))
	}
	if err := consistent(inv); err != nil {
		t.Error(err)
	}
}

func randFrom(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }
