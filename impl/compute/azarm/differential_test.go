package azarm_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/azarm"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
)

// errClass names the first of the port's sentinels an error matches
// (most specific first), so that two fabrics' refusals compare by meaning,
// not by message. (Azure's 409 OperationNotAllowed is both a conflict and,
// as the quota code, a failure: the first is what a caller tests.)
func errClass(err error) string {
	if err == nil {
		return "ok"
	}
	for _, e := range []struct {
		name string
		err  error
	}{{"notfound", compute.ErrNotFound}, {"exists", compute.ErrExists}, {"ipinuse", compute.ErrIPInUse}, {"conflict", compute.ErrConflict},
		{"invalid", compute.ErrInvalid}, {"throttled", compute.ErrThrottled}, {"failed", compute.ErrFailed}} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "other: " + err.Error()
}

// view is what both fabrics must agree on: the IP tables, the NICs and
// disks with their attachments, and the VMs with their parts and power.
func view(t *rapid.T, f compute.Fabric) any {
	inv, err := f.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	type vmView struct {
		Ref       compute.Ref
		NICs      []compute.Ref
		OSDisk    compute.Ref
		DataDisks []compute.Ref
		Power     compute.PowerState
	}
	var vms []vmView
	for _, v := range inv.VMs {
		vms = append(vms, vmView{v.Ref, v.NICs, v.OSDisk, v.DataDisks, v.Power})
	}
	return struct {
		Groups   []string
		Networks []compute.Network
		NICs     []compute.NIC
		Disks    []compute.Disk
		VMs      []vmView
	}{inv.Groups, inv.Networks, inv.NICs, inv.Disks, vms}
}

// TestAgreesWithMemfabric runs random sequences of creates, deletes and
// power operations on azarm (over the ARM fake) and on the in-memory
// fabric the simulation uses, and demands the same outcome of each step
// and the same fabric afterwards: the two adapters of the port agree.
func TestAgreesWithMemfabric(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		w := newWorld(t, rapid.IntRange(0, 2).Draw(t, "polls"), nil)
		w.cfg.Groups = nil
		az, err := azarm.New(w.cfg)
		if err != nil {
			t.Fatal(err)
		}
		memStore := memblob.New()
		mem, err := memfabric.New(memStore, memfabric.Options{})
		if err != nil {
			t.Fatal(err)
		}
		fabrics := []struct {
			name  string
			f     compute.Fabric
			store blob.Store
		}{{"azarm", az, w.blobs}, {"memfabric", mem, memStore}}
		for _, fb := range fabrics {
			if err := fb.store.CreateContainer(ctx, "points"); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				name := fmt.Sprintf("b%d", i)
				if _, err := fb.store.CreatePageBlob(ctx, "points", name, 4096, blob.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := fb.f.CreateGroup(ctx, "rg"); err != nil {
				t.Fatal(err)
			}
			// app has three usable addresses (.4 to .6): it fills up.
			if err := fb.f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg", Name: "prod", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
				Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/29")}, {Name: "db", Prefix: netip.MustParsePrefix("10.0.2.0/24")}}}); err != nil {
				t.Fatal(err)
			}
		}
		names := []string{"a", "b", "c", "d"}
		steps := rapid.IntRange(1, 25).Draw(t, "steps")
		for i := range steps {
			kind := rapid.SampledFrom([]string{"nic", "disk", "vm", "delete", "deallocate", "start"}).Draw(t, "op")
			name := rapid.SampledFrom(names).Draw(t, "name")
			var step string
			var begin func(f compute.Fabric) (compute.Pending, error)
			switch kind {
			case "nic":
				spec := compute.NICSpec{Group: "rg", Name: name, Network: prod, Subnet: rapid.SampledFrom([]string{"app", "db"}).Draw(t, "subnet")}
				if rapid.Bool().Draw(t, "static") {
					spec.IP = netip.AddrFrom4([4]byte{10, 0, 1, byte(rapid.IntRange(0, 8).Draw(t, "host"))})
				}
				step = fmt.Sprintf("nic %s %s %v", name, spec.Subnet, spec.IP)
				begin = func(f compute.Fabric) (compute.Pending, error) { return f.BeginCreateNIC(ctx, spec) }
			case "disk":
				src := rapid.SampledFrom([]string{"b0", "b1", "b2", "none"}).Draw(t, "blob")
				step = fmt.Sprintf("disk %s from %s", name, src)
				begin = func(f compute.Fabric) (compute.Pending, error) {
					return f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: name, SourceContainer: "points", SourceBlob: src, OSType: compute.Linux})
				}
			case "vm":
				nic, disk := rapid.SampledFrom(names).Draw(t, "nic"), rapid.SampledFrom(names).Draw(t, "disk")
				step = fmt.Sprintf("vm %s nic %s disk %s", name, nic, disk)
				begin = func(f compute.Fabric) (compute.Pending, error) {
					return f.BeginCreateVM(ctx, compute.VMSpec{Group: "rg", Name: name, Size: "Standard_B1s", NICs: []compute.Ref{nicRef("rg", nic)}, OSDisk: dskRef("rg", disk), OSType: compute.Linux})
				}
			case "delete":
				k := rapid.SampledFrom([]compute.Kind{compute.KindVM, compute.KindNIC, compute.KindDisk}).Draw(t, "kind")
				ref := compute.Ref{Kind: k, Group: "rg", Name: name}
				step = "delete " + ref.String()
				begin = func(f compute.Fabric) (compute.Pending, error) { return f.BeginDelete(ctx, ref) }
			case "deallocate":
				step = "deallocate " + name
				begin = func(f compute.Fabric) (compute.Pending, error) { return f.BeginDeallocate(ctx, vmRef("rg", name)) }
			case "start":
				step = "start " + name
				begin = func(f compute.Fabric) (compute.Pending, error) { return f.BeginStart(ctx, vmRef("rg", name)) }
			}
			var outcome [2]string
			for j, fb := range fabrics {
				p, err := begin(fb.f)
				outcome[j] = "begin " + errClass(err)
				if err != nil {
					continue
				}
				for n := 0; ; n++ {
					r, err := fb.f.Poll(ctx, p)
					if err != nil {
						t.Fatalf("step %d %s on %s: Poll: %v", i, step, fb.name, err)
					}
					if r.Done {
						outcome[j] += ", done " + errClass(r.Err)
						break
					}
					if n > 10 {
						t.Fatalf("step %d %s on %s: not done after %d polls", i, step, fb.name, n)
					}
				}
			}
			if outcome[0] != outcome[1] {
				t.Fatalf("step %d %s: azarm %q, memfabric %q", i, step, outcome[0], outcome[1])
			}
			if d := cmp.Diff(view(t, mem), view(t, az), netOpts); d != "" {
				t.Fatalf("after step %d %s, the fabrics differ (-memfabric +azarm):\n%s", i, step, d)
			}
		}
	})
}
