package fabric_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/sim/fabric"
)

// TestFormat: an inventory prints one resource a line, in order, tags
// sorted, and the same state prints the same text every time.
func TestFormat(t *testing.T) {
	w := newWorld(t, 1, nil)
	if err := w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: "test", AddressSpace: netip.MustParsePrefix("10.9.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.9.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.f.Peer(w.ctx, w.net, compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "test"}); err != nil {
		t.Fatal(err)
	}
	w.vm("db", "db-src", make([]byte, 4096), true)
	w.run("nic")(w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: "spare", Network: w.net, Subnet: "app",
		IP: netip.MustParseAddr("10.0.1.9"), Tags: map[string]string{"z": "1", "a": "2"}}))
	inv, err := w.f.Inventory(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `group rg
network rg/net 10.0.0.0/16 peers=rg/test
  subnet app 10.0.1.0/24 used=2 10.0.1.4:db-nic 10.0.1.9:spare
network rg/test 10.9.0.0/16 peers=rg/net
  subnet app 10.9.1.0/24 used=0
nic rg/db-nic net/app 10.0.1.4 dynamic vm=db
nic rg/spare net/app 10.0.1.9 static a=2 z=1
disk rg/db-os 4096B Linux vm=db
vm rg/db Standard_D2s_v3 Linux Succeeded/running guest=ready nics=db-nic disks=db-os v2a-hydrate=true v2a-source=db-src
`
	for i := 0; i < 3; i++ {
		if diff := cmp.Diff(want, fabric.Format(inv)); diff != "" {
			t.Fatalf("Format (-want +got):\n%s", diff)
		}
	}
}
