package memfabric_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
)

// BenchmarkPlan100 creates 100 VMs (a NIC and a 1 MiB disk each) in
// parallel on virtual time, polls them to the end, then deletes them all:
// the fabric's share of a 100-VM recovery plan.
func BenchmarkPlan100(b *testing.B) {
	ctx := context.Background()
	st := memblob.New()
	if err := st.CreateContainer(ctx, "src"); err != nil {
		b.Fatal(err)
	}
	if _, err := st.CreatePageBlob(ctx, "src", "img", 1<<20, blob.WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := st.WritePages(ctx, "src", "img", 0, make([]byte, 1<<20), blob.WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		c := newClock()
		f, err := memfabric.New(st, memfabric.Options{Clock: c.Now, Latency: latencies(time.Minute), PollInterval: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		_ = f.CreateGroup(ctx, rg)
		net := compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "net"}
		if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: rg, Name: "net", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
			Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.0.0/20")}}}); err != nil {
			b.Fatal(err)
		}
		all := func(begin func(j int) (compute.Pending, error)) {
			var ps []compute.Pending
			for j := 0; j < 100; j++ {
				p, err := begin(j)
				if err != nil {
					b.Fatal(err)
				}
				ps = append(ps, p)
			}
			for _, p := range ps {
				for {
					r, err := f.Poll(ctx, p)
					if err != nil || r.Err != nil {
						b.Fatal(err, r.Err)
					}
					if r.Done {
						break
					}
					c.Advance(r.After)
				}
			}
		}
		ref := func(k compute.Kind, j int) compute.Ref {
			return compute.Ref{Kind: k, Group: rg, Name: fmt.Sprintf("vm%d", j)}
		}
		all(func(j int) (compute.Pending, error) {
			return f.BeginCreateNIC(ctx, compute.NICSpec{Group: rg, Name: ref("", j).Name, Network: net, Subnet: "app"})
		})
		all(func(j int) (compute.Pending, error) {
			return f.BeginCreateDisk(ctx, compute.DiskSpec{Group: rg, Name: ref("", j).Name, SourceContainer: "src", SourceBlob: "img", OSType: compute.Linux})
		})
		all(func(j int) (compute.Pending, error) {
			return f.BeginCreateVM(ctx, compute.VMSpec{Group: rg, Name: ref("", j).Name, OSType: compute.Linux,
				NICs: []compute.Ref{ref(compute.KindNIC, j)}, OSDisk: ref(compute.KindDisk, j), Tags: map[string]string{compute.TagHydrate: "true"}})
		})
		for _, k := range []compute.Kind{compute.KindVM, compute.KindNIC, compute.KindDisk} {
			all(func(j int) (compute.Pending, error) { return f.BeginDelete(ctx, ref(k, j)) })
		}
	}
}
