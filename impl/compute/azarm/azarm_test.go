package azarm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/azarm"
	"github.com/v2a-dr/v2a/impl/compute/azarm/armfake"
)

const (
	blobEndpoint = "https://acct.blob.core.windows.net/"
	storageID    = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/acct"
	pollEvery    = time.Millisecond
)

// netOpts compares the port's addresses and prefixes by value.
var netOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// world is an azarm Fabric on a stateful fake, with the blob store its
// disks import from.
type world struct {
	f     *azarm.Fabric
	srv   *armfake.Server
	blobs *memblob.Store
	cfg   azarm.Config
}

// fataler is what newWorld needs of a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

// newWorld makes a Fabric on a fresh fake whose long-running operations
// answer polls non-terminal answers first. wrap, if not nil, wraps the
// fake's transport (to inject throttling).
func newWorld(t fataler, polls int, wrap func(policy.Transporter) policy.Transporter) *world {
	t.Helper()
	blobs := memblob.New()
	srv := armfake.New(armfake.Options{Blobs: blobs, BlobEndpoint: blobEndpoint, Polls: polls})
	var tr policy.Transporter = srv.Transport()
	if wrap != nil {
		tr = wrap(tr)
	}
	cfg := azarm.Config{
		SubscriptionID:   srv.SubscriptionID(),
		Location:         "westeurope",
		Groups:           []string{"rg", "rg-test"},
		StorageAccountID: storageID,
		Credential:       &azfake.TokenCredential{},
		ClientOptions: &arm.ClientOptions{ClientOptions: azcore.ClientOptions{
			Transport: tr,
			Retry:     policy.RetryOptions{MaxRetries: 3, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
		}},
		PollFrequency: pollEvery,
	}
	f, err := azarm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &world{f: f, srv: srv, blobs: blobs, cfg: cfg}
}

// wait polls p until it is done and returns its outcome and how many polls
// said "not yet".
func (w *world) wait(t *testing.T, p compute.Pending) (error, int) {
	t.Helper()
	ctx := context.Background()
	for n := 0; n < 100; n++ {
		r, err := w.f.Poll(ctx, p)
		if err != nil {
			t.Fatalf("Poll(%.40q): %v", p, err)
		}
		if r.Done {
			return r.Err, n
		}
		if r.After != pollEvery {
			t.Fatalf("Poll says wait %v, want the configured %v", r.After, pollEvery)
		}
	}
	t.Fatalf("Poll(%.40q): not done after 100 polls", p)
	return nil, 0
}

// do returns a function that takes what a Begin call returned and waits
// until the operation is done, failing the test on any error:
// w.do(t, "what")(w.f.BeginX(...)).
func (w *world) do(t *testing.T, what string) func(compute.Pending, error) {
	return func(p compute.Pending, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err, _ := w.wait(t, p); err != nil {
			t.Fatalf("%s: operation failed: %v", what, err)
		}
	}
}

var (
	prod   = compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "prod"}
	isol   = compute.Ref{Kind: compute.KindNetwork, Group: "rg-test", Name: "isolated"}
	nicRef = func(g, n string) compute.Ref { return compute.Ref{Kind: compute.KindNIC, Group: g, Name: n} }
	dskRef = func(g, n string) compute.Ref { return compute.Ref{Kind: compute.KindDisk, Group: g, Name: n} }
	vmRef  = func(g, n string) compute.Ref { return compute.Ref{Kind: compute.KindVM, Group: g, Name: n} }
)

// network makes group rg with network prod (10.0.0.0/16: app 10.0.1.0/24,
// db 10.0.2.0/24).
func (w *world) network(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := w.f.CreateGroup(ctx, "rg"); err != nil {
		t.Fatal(err)
	}
	if err := w.f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg", Name: "prod", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "db", Prefix: netip.MustParsePrefix("10.0.2.0/24")}, {Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
}

// pageBlob writes a page blob of n pages, page i filled with byte seed+i.
func (w *world) pageBlob(t *testing.T, container, name string, pages int, seed byte) []byte {
	t.Helper()
	ctx := context.Background()
	if err := w.blobs.CreateContainer(ctx, container); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, pages*blob.PageSize)
	for i := range pages {
		copy(data[i*blob.PageSize:], bytes.Repeat([]byte{seed + byte(i)}, blob.PageSize))
	}
	if _, err := w.blobs.CreatePageBlob(ctx, container, name, int64(len(data)), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.blobs.WritePages(ctx, container, name, 0, data, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return data
}

func asError(t *testing.T, err error) *compute.Error {
	t.Helper()
	var e *compute.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *compute.Error", err, err)
	}
	return e
}

func TestNetworkNICsAndIPTable(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.network(t)
	ctx := context.Background()

	p, err := w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "web-nic", Network: prod, Subnet: "app", IP: netip.MustParseAddr("10.0.1.10"), Tags: map[string]string{compute.TagSource: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(p), "nic-create:") {
		t.Errorf("token %.40q does not name its operation", p)
	}
	// Polls 2: Begin's answer is the first non-terminal one, one poll the
	// second.
	if err, notYet := w.wait(t, p); err != nil || notYet != 1 {
		t.Fatalf("static NIC: err %v after %d not-done polls, want nil after 1", err, notYet)
	}
	w.do(t, "dynamic NIC")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "db-nic", Network: prod, Subnet: "app"}))

	got, err := w.f.Network(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	want := compute.Network{Ref: prod, AddressSpace: netip.MustParsePrefix("10.0.0.0/16"), Subnets: []compute.Subnet{
		{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24"), Used: []compute.IPUse{
			{IP: netip.MustParseAddr("10.0.1.4"), NIC: nicRef("rg", "db-nic")}, // lowest free: Azure keeps .0-.3
			{IP: netip.MustParseAddr("10.0.1.10"), NIC: nicRef("rg", "web-nic")},
		}},
		{Name: "db", Prefix: netip.MustParsePrefix("10.0.2.0/24")},
	}}
	if d := cmp.Diff(want, got, netOpts); d != "" {
		t.Errorf("Network (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		name string
		spec compute.NICSpec
		is   error
		code string
	}{
		{"ip in use", compute.NICSpec{Group: "rg", Name: "x1", Network: prod, Subnet: "app", IP: netip.MustParseAddr("10.0.1.10")}, compute.ErrIPInUse, "PrivateIPAddressInUse"},
		{"ip outside subnet", compute.NICSpec{Group: "rg", Name: "x2", Network: prod, Subnet: "app", IP: netip.MustParseAddr("10.0.2.10")}, compute.ErrInvalid, "PrivateIPAddressNotInSubnet"},
		{"reserved ip", compute.NICSpec{Group: "rg", Name: "x3", Network: prod, Subnet: "app", IP: netip.MustParseAddr("10.0.1.255")}, compute.ErrInvalid, "PrivateIPAddressIsReserved"},
		{"no such subnet", compute.NICSpec{Group: "rg", Name: "x4", Network: prod, Subnet: "nope"}, compute.ErrNotFound, compute.CodeNotFound},
		{"no such network", compute.NICSpec{Group: "rg", Name: "x4", Network: compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "ghost"}, Subnet: "app"}, compute.ErrNotFound, "ResourceNotFound"},
		{"no such group", compute.NICSpec{Group: "rg", Name: "x4", Network: isol, Subnet: "app"}, compute.ErrNotFound, "ResourceGroupNotFound"},
		{"name taken", compute.NICSpec{Group: "rg", Name: "web-nic", Network: prod, Subnet: "app"}, compute.ErrExists, compute.CodeExists},
		{"group out of scope", compute.NICSpec{Group: "other", Name: "x5", Network: prod, Subnet: "app"}, compute.ErrInvalid, compute.CodeInvalid},
	} {
		_, err := w.f.BeginCreateNIC(ctx, tc.spec)
		if !errors.Is(err, tc.is) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.is)
			continue
		}
		if e := asError(t, err); e.Code != tc.code || e.Message == "" {
			t.Errorf("%s: code %q message %q, want code %q and a message", tc.name, e.Code, e.Message, tc.code)
		}
	}
	// Nothing the refused requests named was made.
	inv, err := w.f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.NICs) != 2 {
		t.Errorf("inventory has %d NICs after refused creates, want 2: %+v", len(inv.NICs), inv.NICs)
	}
	if inv.NICs[0].Ref != nicRef("rg", "db-nic") || inv.NICs[0].Static {
		t.Errorf("db-nic: %+v, want dynamic", inv.NICs[0])
	}
	if n := inv.NICs[1]; !n.Static || n.Tags[compute.TagSource] != "web" || n.Network != prod || n.Subnet != "app" {
		t.Errorf("web-nic: %+v, want static, tagged, in prod/app", n)
	}
}

func TestCreateNetworkRefusals(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	sp := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		spec compute.NetworkSpec
		is   error
	}{
		{"exists", compute.NetworkSpec{Group: "rg", Name: "prod", AddressSpace: sp("10.9.0.0/16")}, compute.ErrExists},
		{"subnet outside", compute.NetworkSpec{Group: "rg", Name: "n1", AddressSpace: sp("10.1.0.0/16"), Subnets: []compute.SubnetSpec{{Name: "a", Prefix: sp("10.2.0.0/24")}}}, compute.ErrInvalid},
		{"subnets overlap", compute.NetworkSpec{Group: "rg", Name: "n2", AddressSpace: sp("10.1.0.0/16"), Subnets: []compute.SubnetSpec{{Name: "a", Prefix: sp("10.1.0.0/24")}, {Name: "b", Prefix: sp("10.1.0.128/25")}}}, compute.ErrInvalid},
		{"no group", compute.NetworkSpec{Group: "rg-test", Name: "n3", AddressSpace: sp("10.1.0.0/16")}, compute.ErrNotFound},
	} {
		if err := w.f.CreateNetwork(ctx, tc.spec); !errors.Is(err, tc.is) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.is)
		}
	}
	inv, err := w.f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Networks) != 1 {
		t.Errorf("refused networks were made: %+v", inv.Networks)
	}
}

func TestPeeringAndIsolation(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	if err := w.f.CreateGroup(ctx, "rg-test"); err != nil {
		t.Fatal(err)
	}
	if err := w.f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg-test", Name: "isolated", AddressSpace: netip.MustParsePrefix("10.50.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	hub := compute.Ref{Kind: compute.KindNetwork, Group: "rg-test", Name: "hub"}
	if err := w.f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg-test", Name: "hub", AddressSpace: netip.MustParsePrefix("10.60.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if err := w.f.Peer(ctx, prod, hub); err != nil {
		t.Fatal(err)
	}
	peers := func(r compute.Ref) []compute.Ref {
		n, err := w.f.Network(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return n.Peers
	}
	if d := cmp.Diff([]compute.Ref{hub}, peers(prod), netOpts); d != "" {
		t.Errorf("prod's peers (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]compute.Ref{prod}, peers(hub), netOpts); d != "" {
		t.Errorf("hub's peers (-want +got):\n%s", d)
	}
	if p := peers(isol); len(p) != 0 {
		t.Errorf("the isolated network has peers %v", p)
	}
	// Overlapping address spaces cannot be peered.
	if err := w.f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg-test", Name: "clash", AddressSpace: netip.MustParsePrefix("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := w.f.Peer(ctx, prod, compute.Ref{Kind: compute.KindNetwork, Group: "rg-test", Name: "clash"}); !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("peering overlapping networks: err %v, want ErrInvalid", err)
	}
	if err := w.f.Peer(ctx, prod, compute.Ref{Kind: compute.KindNetwork, Group: "rg-test", Name: "ghost"}); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("peering with a missing network: err %v, want ErrNotFound", err)
	}
}

// TestFailoverLifecycle runs what a test failover does and its cleanup:
// import a disk from a page blob, make a NIC and a VM, read the booted
// disk back, then delete everything in the order Azure demands.
func TestFailoverLifecycle(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.network(t)
	ctx := context.Background()
	before, err := w.f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := w.pageBlob(t, "points", "web-os.vhd", 8, 1)

	p, err := w.f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: "web-os", SourceContainer: "points", SourceBlob: "web-os.vhd",
		SizeBytes: int64(len(want)), OSType: compute.Linux, Tags: map[string]string{compute.TagPoint: "p7"}})
	w.do(t, "import disk")(p, err)
	// The import took the blob as it was at Begin.
	w.pageBlob(t, "points", "web-os.vhd", 8, 100)

	w.do(t, "nic")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "web-test-nic", Network: prod, Subnet: "app", IP: netip.MustParseAddr("10.0.1.20")}))
	spec := compute.VMSpec{Group: "rg", Name: "web-test", Size: "Standard_D2s_v3", NICs: []compute.Ref{nicRef("rg", "web-test-nic")},
		OSDisk: dskRef("rg", "web-os"), OSType: compute.Linux, Tags: map[string]string{compute.TagSource: "web", compute.TagPoint: "p7"}}
	p, err = w.f.BeginCreateVM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := w.f.VM(ctx, vmRef("rg", "web-test"))
	if err != nil {
		t.Fatal(err)
	}
	if vm.Provisioning != "Creating" || vm.Power != compute.Starting {
		t.Errorf("VM while creating: provisioning %q power %q, want Creating and starting", vm.Provisioning, vm.Power)
	}
	if err, notYet := w.wait(t, p); err != nil || notYet != 1 {
		t.Fatalf("create VM: %v after %d not-done polls, want nil after 1", err, notYet)
	}
	vm, err = w.f.VM(ctx, vmRef("rg", "web-test"))
	if err != nil {
		t.Fatal(err)
	}
	wantVM := compute.VM{Ref: vmRef("rg", "web-test"), Size: "Standard_D2s_v3", OSType: compute.Linux, NICs: spec.NICs, OSDisk: spec.OSDisk,
		Tags: spec.Tags, Provisioning: "Succeeded", Power: compute.Running, Guest: compute.GuestStatus{Ready: true, Message: "Guest Agent is running"}}
	if d := cmp.Diff(wantVM, vm, netOpts); d != "" {
		t.Errorf("VM (-want +got):\n%s", d)
	}

	// A second VM cannot take the attached NIC or disk.
	w.do(t, "nic2")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "nic2", Network: prod, Subnet: "app"}))
	for _, s := range []compute.VMSpec{
		{Group: "rg", Name: "thief1", Size: "Standard_B1s", NICs: spec.NICs, OSDisk: dskRef("rg", "web-os"), OSType: compute.Linux},
		{Group: "rg", Name: "thief2", Size: "Standard_B1s", NICs: []compute.Ref{nicRef("rg", "nic2")}, OSDisk: dskRef("rg", "web-os"), OSType: compute.Linux},
	} {
		if _, err := w.f.BeginCreateVM(ctx, s); !errors.Is(err, compute.ErrConflict) {
			t.Errorf("VM %s on attached resources: err %v, want ErrConflict", s.Name, err)
		}
	}
	// Attached resources cannot be deleted; a running VM's disk cannot be
	// exported.
	for _, r := range []compute.Ref{nicRef("rg", "web-test-nic"), dskRef("rg", "web-os")} {
		if _, err := w.f.BeginDelete(ctx, r); !errors.Is(err, compute.ErrConflict) {
			t.Errorf("delete attached %s: err %v, want ErrConflict", r, err)
		}
	}
	if _, err := w.f.ReadDisk(ctx, dskRef("rg", "web-os"), 0, 512); !errors.Is(err, compute.ErrConflict) {
		t.Errorf("ReadDisk of a running VM's disk: err %v, want ErrConflict", err)
	}

	w.do(t, "deallocate")(w.f.BeginDeallocate(ctx, vm.Ref))
	if vm, _ := w.f.VM(ctx, vm.Ref); vm.Power != compute.Deallocated || vm.Guest.Ready {
		t.Errorf("after deallocate: power %q guest %+v", vm.Power, vm.Guest)
	}
	got, err := w.f.ReadDisk(ctx, dskRef("rg", "web-os"), 512, 3*512)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[512:4*512]) {
		t.Errorf("ReadDisk returned pages other than the imported ones")
	}
	if _, err := w.f.ReadDisk(ctx, dskRef("rg", "web-os"), 7*512, 1024); !errors.Is(err, compute.ErrInvalid) {
		t.Errorf("ReadDisk past the end: err %v, want ErrInvalid", err)
	}
	w.do(t, "start")(w.f.BeginStart(ctx, vm.Ref))
	if vm, _ := w.f.VM(ctx, vm.Ref); vm.Power != compute.Running || !vm.Guest.Ready {
		t.Errorf("after start: power %q guest %+v", vm.Power, vm.Guest)
	}

	// Cleanup: the VM, then its NIC and disk, then what else was made.
	w.do(t, "delete vm")(w.f.BeginDelete(ctx, vm.Ref))
	if _, err := w.f.VM(ctx, vm.Ref); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("VM after delete: err %v, want ErrNotFound", err)
	}
	for _, r := range []compute.Ref{nicRef("rg", "web-test-nic"), nicRef("rg", "nic2"), dskRef("rg", "web-os")} {
		w.do(t, "delete "+r.String())(w.f.BeginDelete(ctx, r))
	}
	after, err := w.f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, after, netOpts); d != "" {
		t.Errorf("inventory after cleanup differs from before (-before +after):\n%s", d)
	}
	// Negative control: the comparison sees a leftover.
	w.do(t, "leftover")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "left", Network: prod, Subnet: "db"}))
	after, err = w.f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal(before, after, netOpts) {
		t.Errorf("a leftover NIC does not show in the inventory")
	}
	// A network with a NIC in it cannot be deleted; once empty it can.
	if _, err := w.f.BeginDelete(ctx, prod); !errors.Is(err, compute.ErrConflict) {
		t.Errorf("delete a network with a NIC: err %v, want ErrConflict", err)
	}
	w.do(t, "delete left")(w.f.BeginDelete(ctx, nicRef("rg", "left")))
	w.do(t, "delete prod")(w.f.BeginDelete(ctx, prod))
	if _, err := w.f.Network(ctx, prod); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("network after delete: err %v, want ErrNotFound", err)
	}
}

func TestNotFound(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	_, err := w.f.VM(ctx, vmRef("rg", "ghost"))
	if !errors.Is(err, compute.ErrNotFound) {
		t.Fatalf("VM of a missing VM: err %v, want ErrNotFound", err)
	}
	if e := asError(t, err); e.Status != http.StatusNotFound || e.Code != "ResourceNotFound" || !strings.Contains(e.Message, "ghost") {
		t.Errorf("404 as %+v, want status 404, code ResourceNotFound and Azure's message", e)
	}
	if _, err := w.f.BeginStart(ctx, vmRef("rg", "ghost")); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("start a missing VM: err %v, want ErrNotFound", err)
	}
	if _, err := w.f.ReadDisk(ctx, dskRef("rg", "ghost"), 0, 512); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("read a missing disk: err %v, want ErrNotFound", err)
	}
	if _, err := w.f.Network(ctx, compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "ghost"}); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("missing network: err %v, want ErrNotFound", err)
	}
	// ARM's DELETE is idempotent: a missing VM's deletion is done at once.
	p, err := w.f.BeginDelete(ctx, vmRef("rg", "ghost"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.f.Poll(ctx, p); err != nil || !r.Done || r.Err != nil {
		t.Errorf("poll the deletion of a missing VM: %+v, %v; want done", r, err)
	}
	// Disk import from a blob that does not exist.
	if _, err := w.f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: "d", SourceContainer: "points", SourceBlob: "none", SizeBytes: 512}); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("import a missing blob: err %v, want ErrNotFound", err)
	}
}

func TestPollTokens(t *testing.T) {
	w := newWorld(t, 3, nil)
	w.network(t)
	ctx := context.Background()
	for _, tok := range []compute.Pending{"", "garbage", "vm-create:", "vm-create:{not json", "done:nonsense", "teleport:{}"} {
		if _, err := w.f.Poll(ctx, tok); !errors.Is(err, compute.ErrNotFound) {
			t.Errorf("Poll(%q): err %v, want ErrNotFound", tok, err)
		}
	}
	p, err := w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"})
	if err != nil {
		t.Fatal(err)
	}
	// A token of one operation does not resume another's poller.
	if _, err := w.f.Poll(ctx, compute.Pending("vm-delete:"+strings.TrimPrefix(string(p), "nic-create:"))); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("a NIC token polled as a VM deletion: err %v, want ErrNotFound", err)
	}
	// The token is all an orchestrator needs: a new Fabric (after a restart)
	// finishes polling it.
	if r, err := w.f.Poll(ctx, p); err != nil || r.Done {
		t.Fatalf("first poll: %+v, %v; want not done", r, err)
	}
	f2, err := azarm.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var r compute.Result
	for range 3 {
		if r, err = f2.Poll(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if !r.Done || r.Err != nil {
		t.Fatalf("poll after restart: %+v, want done", r)
	}
	// Polling a finished operation again says the same.
	if r, err := w.f.Poll(ctx, p); err != nil || !r.Done || r.Err != nil {
		t.Errorf("poll after done: %+v, %v; want done again", r, err)
	}
	// An operation that finished within Begin (no non-terminal answer).
	w0 := newWorld(t, 0, nil)
	w0.network(t)
	p, err = w0.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"})
	if err != nil || p != "done:nic-create" {
		t.Fatalf("immediate create: %q, %v; want done:nic-create", p, err)
	}
	if r, err := w0.f.Poll(ctx, p); err != nil || !r.Done || r.Err != nil {
		t.Errorf("poll immediate: %+v, %v", r, err)
	}
}

func TestOperationFailure(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	w.pageBlob(t, "points", "os", 2, 0)
	w.do(t, "disk")(w.f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: "os", SourceContainer: "points", SourceBlob: "os", SizeBytes: 1024, OSType: compute.Windows}))
	w.do(t, "nic")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"}))
	w.srv.FailNext("VirtualMachinesClient.BeginCreateOrUpdate", armfake.Failure{Status: http.StatusConflict, Code: compute.CodeQuota,
		Message: "Operation could not be completed as it results in exceeding approved standardDSv3Family Cores quota."})
	p, err := w.f.BeginCreateVM(ctx, compute.VMSpec{Group: "rg", Name: "vm", Size: "Standard_D2s_v3", NICs: []compute.Ref{nicRef("rg", "n")}, OSDisk: dskRef("rg", "os"), OSType: compute.Windows})
	if err != nil {
		t.Fatal(err)
	}
	opErr, _ := w.wait(t, p)
	if !errors.Is(opErr, compute.ErrFailed) {
		t.Fatalf("failed create: Result.Err %v, want ErrFailed", opErr)
	}
	if e := asError(t, opErr); e.Code != compute.CodeQuota || !strings.Contains(e.Message, "quota") {
		t.Errorf("failed create reported as %+v, want Azure's code and message", e)
	}
	vm, err := w.f.VM(ctx, vmRef("rg", "vm"))
	if err != nil {
		t.Fatal(err)
	}
	if vm.Provisioning != "Failed" || vm.Power == compute.Running {
		t.Errorf("VM after a failed create: %q %q, want Failed and not running", vm.Provisioning, vm.Power)
	}
}

// TestConcurrentOperation: a second operation of the same kind on a
// resource while the first runs is refused, as ARM does.
func TestConcurrentOperation(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.network(t)
	ctx := context.Background()
	w.do(t, "nic")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"}))
	p, err := w.f.BeginDelete(ctx, nicRef("rg", "n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.f.BeginDelete(ctx, nicRef("rg", "n")); !errors.Is(err, compute.ErrConflict) {
		t.Errorf("second delete while the first runs: err %v, want ErrConflict", err)
	}
	// The address stays taken until the deletion is done.
	n, err := w.f.Network(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Subnets[0].Used) != 1 {
		t.Errorf("address freed before the deletion is done: %+v", n.Subnets[0])
	}
	w.do(t, "finish delete")(p, nil)
	if n, err := w.f.Network(ctx, prod); err != nil || len(n.Subnets[0].Used) != 0 {
		t.Errorf("address still taken after the deletion: %+v, %v", n, err)
	}
}

// TestPollFrequency: the synchronous calls poll at the configured
// frequency, not the SDK's 30 s default.
func TestPollFrequency(t *testing.T) {
	w := newWorld(t, 5, nil)
	start := time.Now()
	w.network(t)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("CreateNetwork with 5 non-terminal answers took %v: the poll frequency is not used", el)
	}
	if n := w.srv.Calls("VirtualNetworksClient.BeginCreateOrUpdate"); n != 6 {
		t.Errorf("CreateNetwork sent %d requests, want the PUT and 5 polls", n)
	}
}

// throttle answers the first n requests of api with a real 429 carrying
// Retry-After, then passes requests on.
type throttle struct {
	next       policy.Transporter
	api        string
	n          int32
	retryAfter string
	seen       atomic.Int32
}

func (th *throttle) Do(req *http.Request) (*http.Response, error) {
	if api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string); api == th.api && th.seen.Add(1) <= th.n {
		return &http.Response{StatusCode: http.StatusTooManyRequests, Status: "429 Too Many Requests", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Retry-After": {th.retryAfter}, "Content-Type": {"application/json"}, "X-Ms-Error-Code": {compute.CodeThrottled}},
			Body:   io.NopCloser(strings.NewReader(`{"error":{"code":"TooManyRequests","message":"The request is being throttled."}}`)), Request: req}, nil
	}
	return th.next.Do(req)
}

func TestThrottlingRetried(t *testing.T) {
	th := &throttle{api: "VirtualMachinesClient.Get", n: 2, retryAfter: "0"}
	w := newWorld(t, 1, func(next policy.Transporter) policy.Transporter { th.next = next; return th })
	w.network(t)
	ctx := context.Background()
	_, err := w.f.VM(ctx, vmRef("rg", "ghost"))
	if !errors.Is(err, compute.ErrNotFound) {
		t.Fatalf("VM after two 429s: err %v, want the 404 behind them", err)
	}
	if got := th.seen.Load(); got != 3 {
		t.Errorf("the Get was sent %d times, want 3 (two 429s retried by azcore)", got)
	}
}

func TestThrottlingExhausted(t *testing.T) {
	th := &throttle{api: "VirtualMachinesClient.Get", n: 1000, retryAfter: "7"}
	w := newWorld(t, 1, func(next policy.Transporter) policy.Transporter { th.next = next; return th })
	w.cfg.ClientOptions.Retry.MaxRetries = -1 // one try: a 7 s Retry-After would be slept
	f, err := azarm.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.VM(context.Background(), vmRef("rg", "vm"))
	if !errors.Is(err, compute.ErrThrottled) {
		t.Fatalf("err %v, want ErrThrottled", err)
	}
	if e := asError(t, err); e.RetryAfter != 7*time.Second || e.Code != compute.CodeThrottled {
		t.Errorf("429 as %+v, want RetryAfter 7s and code TooManyRequests", e)
	}
}

func TestConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg, err := azarm.ConfigFromEnv(env(map[string]string{"AZURE_SUBSCRIPTION_ID": "sub", "AZURE_LOCATION": "westeurope",
		"AZURE_RESOURCE_GROUP": "rg-a, rg-b", "AZURE_STORAGE_ACCOUNT_ID": storageID}))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(azarm.Config{SubscriptionID: "sub", Location: "westeurope", Groups: []string{"rg-a", "rg-b"}, StorageAccountID: storageID}, cfg,
		cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".DiskSKU" }, cmp.Ignore())); d != "" {
		t.Errorf("ConfigFromEnv (-want +got):\n%s", d)
	}
	_, err = azarm.ConfigFromEnv(env(map[string]string{"AZURE_RESOURCE_GROUP": "rg"}))
	if !errors.Is(err, azarm.ErrConfig) || !strings.Contains(err.Error(), "AZURE_SUBSCRIPTION_ID") || !strings.Contains(err.Error(), "AZURE_LOCATION") {
		t.Errorf("missing vars: err %v, want ErrConfig naming them", err)
	}
	for _, bad := range []azarm.Config{
		{Location: "x", Groups: []string{"rg"}},
		{SubscriptionID: "s", Groups: []string{"rg"}},
		{SubscriptionID: "s", Location: "x", Groups: []string{"rg"}, StorageAccountID: "/subscriptions/s/resourceGroups/rg"},
	} {
		bad.Credential = &azfake.TokenCredential{}
		if _, err := azarm.New(bad); !errors.Is(err, azarm.ErrConfig) {
			t.Errorf("New(%+v): err %v, want ErrConfig", bad, err)
		}
	}
	// A disk import needs the storage account.
	w := newWorld(t, 0, nil)
	w.cfg.StorageAccountID = ""
	f, err := azarm.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.BeginCreateDisk(context.Background(), compute.DiskSpec{Group: "rg", Name: "d", SourceContainer: "c", SourceBlob: "b"}); !errors.Is(err, azarm.ErrConfig) {
		t.Errorf("disk without a storage account: err %v, want ErrConfig", err)
	}
}

// TestConcurrentUse: NICs created from many goroutines at once all get
// distinct addresses (the Fabric and the fake are safe for concurrent use;
// run with -race).
func TestConcurrentUse(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			p, err := w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "nic" + strings.Repeat("x", i), Network: prod, Subnet: "app"})
			for err == nil {
				var r compute.Result
				if r, err = w.f.Poll(ctx, p); err == nil && r.Done {
					err = r.Err
					break
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	net, err := w.f.Network(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, u := range net.Subnets[0].Used {
		seen[u.IP] = true
	}
	if len(net.Subnets[0].Used) != n || len(seen) != n {
		t.Errorf("%d NICs hold %d addresses (%d distinct), want %d distinct: %v", n, len(net.Subnets[0].Used), len(seen), n, net.Subnets[0].Used)
	}
}

// TestThrottledBegin: a 429 on a Begin call's PUT is retried too, and the
// operation then runs normally.
func TestThrottledBegin(t *testing.T) {
	th := &throttle{api: "InterfacesClient.BeginCreateOrUpdate", n: 1, retryAfter: "0"}
	w := newWorld(t, 1, func(next policy.Transporter) policy.Transporter { th.next = next; return th })
	w.network(t)
	w.do(t, "throttled create")(w.f.BeginCreateNIC(context.Background(), compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"}))
	if got := th.seen.Load(); got < 2 {
		t.Errorf("the PUT was sent %d times, want a retry after the 429", got)
	}
}

// TestVMWithTwoNICs: the first NIC is the primary (ARM refuses a VM with
// several NICs and no single primary).
func TestVMWithTwoNICs(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.network(t)
	ctx := context.Background()
	w.pageBlob(t, "points", "os", 2, 0)
	w.do(t, "disk")(w.f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: "os", SourceContainer: "points", SourceBlob: "os", OSType: compute.Linux}))
	w.do(t, "nic a")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "a", Network: prod, Subnet: "app"}))
	w.do(t, "nic b")(w.f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "b", Network: prod, Subnet: "db"}))
	nics := []compute.Ref{nicRef("rg", "b"), nicRef("rg", "a")}
	w.do(t, "vm")(w.f.BeginCreateVM(ctx, compute.VMSpec{Group: "rg", Name: "vm", Size: "Standard_B2s", NICs: nics, OSDisk: dskRef("rg", "os"), OSType: compute.Linux}))
	vm, err := w.f.VM(ctx, vmRef("rg", "vm"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(nics, vm.NICs); d != "" {
		t.Errorf("NIC order (-want +got):\n%s", d)
	}
}

// TestPollAfterFromRetryAfter: while an operation runs, Poll suggests the
// wait ARM asked for, not the configured frequency.
func TestPollAfterFromRetryAfter(t *testing.T) {
	blobs := memblob.New()
	srv := armfake.New(armfake.Options{Blobs: blobs, BlobEndpoint: blobEndpoint, Polls: 3, RetryAfter: 25 * time.Millisecond})
	w := newWorld(t, 0, nil)
	w.cfg.ClientOptions.Transport = srv.Transport()
	w.cfg.SubscriptionID = srv.SubscriptionID()
	f, err := azarm.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.CreateGroup(ctx, "rg"); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg", Name: "prod", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	p, err := f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: "n", Network: prod, Subnet: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, err := f.Poll(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i < 2 && (r.Done || r.After != 25*time.Millisecond):
			t.Errorf("poll %d: %+v, want not done, after 25ms", i, r)
		case i == 2 && (!r.Done || r.Err != nil):
			t.Errorf("poll %d: %+v, want done", i, r)
		}
	}
}
