// Package computetest is the conformance suite of compute.Fabric: the
// in-memory fabric (impl/compute/memfabric, which sim/fabric builds on) and
// the real adapter (impl/compute/azarm, against the SDKs' fake servers or
// Azure) must pass Run. It holds only behaviour Azure has; what only the
// simulated fabric does (latency, fault injection, reachability) is tested
// in its own package.
//
// Each subtest works in a resource group and a blob container of its own,
// named after the subtest and the process, so that runs may share one
// subscription and one storage account.
package computetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
)

// Env is one fabric under test, with the storage account it imports disks
// from and, for a fabric on virtual time, the way to move its clock.
type Env struct {
	Fabric compute.Fabric
	// Store is the storage account the fabric is attached to: the suite
	// writes the page blobs it imports there.
	Store blob.Store
	// Advance moves the fabric's clock forward by d. Nil for a fabric on
	// real time: the suite then sleeps (at most MaxSleep per poll).
	Advance func(d time.Duration)
	// MaxPolls bounds how often the suite polls one operation before it
	// calls it stuck (default 10000).
	MaxPolls int
}

// MinSleep and MaxSleep bound one wait between polls on a real-time
// fabric (whose Result.After may be 0 when Azure sent no Retry-After).
const (
	MinSleep = 10 * time.Millisecond
	MaxSleep = 2 * time.Second
)

// Run runs the conformance suite. newEnv is called once per subtest.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"Groups", testGroups},
		{"Networks", testNetworks},
		{"Peering", testPeering},
		{"NICStaticIP", testNICStaticIP},
		{"NICNextFreeIP", testNICNextFree},
		{"IPFreedWhenDeleteDone", testIPFreedWhenDeleteDone},
		{"DiskImport", testDiskImport},
		{"VMCreate", testVMCreate},
		{"Attachments", testAttachments},
		{"PowerStates", testPowerStates},
		{"DeleteOrder", testDeleteOrder},
		{"Leftovers", testLeftovers},
		{"NotFound", testNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			if env.MaxPolls == 0 {
				env.MaxPolls = 10000
			}
			s := &suite{Env: env, ctx: context.Background(), group: Name(t, 90), container: Name(t, 63)}
			if err := s.Store.CreateContainer(s.ctx, s.container); err != nil {
				t.Fatalf("CreateContainer(%s): %v", s.container, err)
			}
			t.Cleanup(func() { _ = s.Store.DeleteContainer(context.Background(), s.container) })
			if err := s.Fabric.CreateGroup(s.ctx, s.group); err != nil {
				t.Fatalf("CreateGroup(%s): %v", s.group, err)
			}
			tc.fn(t, s)
		})
	}
}

var seq atomic.Int64

// Name is a name of at most maxLen lower-case letters, digits and hyphens
// that no other test or concurrent test process uses: the test's name, the
// process ID and a counter. It is valid as a resource group and as a blob
// container name.
func Name(t *testing.T, maxLen int) string {
	var b strings.Builder
	dash := true
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	base := strings.Trim(b.String(), "-")
	suffix := fmt.Sprintf("-%d-%d", os.Getpid(), seq.Add(1))
	if m := maxLen - len(suffix); len(base) > m {
		base = strings.Trim(base[len(base)-m:], "-")
	}
	if base == "" {
		base = "t"
	}
	return base + suffix
}

// suite is one subtest's environment.
type suite struct {
	Env
	ctx       context.Context
	group     string
	container string
}

func (s *suite) ref(kind compute.Kind, name string) compute.Ref {
	return compute.Ref{Kind: kind, Group: s.group, Name: name}
}

// wait polls p until it is done, moving the clock by Result.After (or
// sleeping it) between polls, and returns how it ended.
func (s *suite) wait(t *testing.T, what string, p compute.Pending) compute.Result {
	t.Helper()
	for i := 0; i < s.MaxPolls; i++ {
		r, err := s.Fabric.Poll(s.ctx, p)
		if err != nil {
			t.Fatalf("%s: Poll(%s): %v", what, p, err)
		}
		if r.Done {
			return r
		}
		switch {
		case s.Advance != nil && r.After <= 0:
			// On virtual time the caller would poll again at once,
			// for ever.
			t.Fatalf("%s: Poll(%s) not done and suggests waiting %s", what, p, r.After)
		case s.Advance != nil:
			s.Advance(r.After)
		default:
			time.Sleep(min(max(r.After, MinSleep), MaxSleep))
		}
	}
	t.Fatalf("%s: operation %s still not done after %d polls", what, p, s.MaxPolls)
	return compute.Result{}
}

// do starts an operation and waits for it to succeed.
func (s *suite) do(t *testing.T, what string, p compute.Pending, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r := s.wait(t, what, p); r.Err != nil {
		t.Fatalf("%s: operation failed: %v", what, r.Err)
	}
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// network creates a network 10.<n>.0.0/16 with subnets "app"
// (10.<n>.1.0/24) and "db" (10.<n>.2.0/24).
func (s *suite) network(t *testing.T, name string, n int) compute.Ref {
	t.Helper()
	spec := compute.NetworkSpec{
		Group: s.group, Name: name, AddressSpace: prefix(fmt.Sprintf("10.%d.0.0/16", n)),
		Subnets: []compute.SubnetSpec{
			{Name: "db", Prefix: prefix(fmt.Sprintf("10.%d.2.0/24", n))},
			{Name: "app", Prefix: prefix(fmt.Sprintf("10.%d.1.0/24", n))},
		},
	}
	if err := s.Fabric.CreateNetwork(s.ctx, spec); err != nil {
		t.Fatalf("CreateNetwork(%s): %v", name, err)
	}
	return s.ref(compute.KindNetwork, name)
}

// nic creates a NIC in subnet "app" of net and waits for it; a zero ip
// takes the next free address.
func (s *suite) nic(t *testing.T, name string, net compute.Ref, ip netip.Addr) compute.Ref {
	t.Helper()
	p, err := s.Fabric.BeginCreateNIC(s.ctx, compute.NICSpec{Group: s.group, Name: name, Network: net, Subnet: "app", IP: ip})
	s.do(t, "BeginCreateNIC "+name, p, err)
	return s.ref(compute.KindNIC, name)
}

// pageBlob writes a page blob of size bytes whose first pages hold data.
func (s *suite) pageBlob(t *testing.T, name string, size int64, data []byte) {
	t.Helper()
	if _, err := s.Store.CreatePageBlob(s.ctx, s.container, name, size, blob.WriteOptions{}); err != nil {
		t.Fatalf("CreatePageBlob(%s): %v", name, err)
	}
	if len(data) > 0 {
		if _, err := s.Store.WritePages(s.ctx, s.container, name, 0, data, blob.WriteOptions{}); err != nil {
			t.Fatalf("WritePages(%s): %v", name, err)
		}
	}
}

// disk imports a fresh page blob into a disk and waits for it.
func (s *suite) disk(t *testing.T, name string, os compute.OSType, data []byte) compute.Ref {
	t.Helper()
	s.pageBlob(t, name+".vhd", 64<<10, data)
	p, err := s.Fabric.BeginCreateDisk(s.ctx, compute.DiskSpec{
		Group: s.group, Name: name, SourceContainer: s.container, SourceBlob: name + ".vhd", OSType: os,
	})
	s.do(t, "BeginCreateDisk "+name, p, err)
	return s.ref(compute.KindDisk, name)
}

// vm creates a Linux VM from nics and disks and waits for it.
func (s *suite) vm(t *testing.T, name string, nics []compute.Ref, osDisk compute.Ref, data ...compute.Ref) compute.Ref {
	t.Helper()
	p, err := s.Fabric.BeginCreateVM(s.ctx, s.vmSpec(name, nics, osDisk, data...))
	s.do(t, "BeginCreateVM "+name, p, err)
	return s.ref(compute.KindVM, name)
}

func (s *suite) vmSpec(name string, nics []compute.Ref, osDisk compute.Ref, data ...compute.Ref) compute.VMSpec {
	return compute.VMSpec{
		Group: s.group, Name: name, Size: "Standard_D2s_v3", NICs: nics, OSDisk: osDisk, DataDisks: data,
		OSType: compute.Linux, Tags: map[string]string{compute.TagSource: name + "-src", compute.TagPoint: "p1"},
	}
}

// del deletes ref and waits for the deletion.
func (s *suite) del(t *testing.T, ref compute.Ref) {
	t.Helper()
	p, err := s.Fabric.BeginDelete(s.ctx, ref)
	s.do(t, "BeginDelete "+ref.String(), p, err)
}

// wantErr fails t unless err matches want (or is nil when want is nil).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

// pattern is n bytes that differ from page to page.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/blob.PageSize) ^ byte(i) ^ seed
	}
	return b
}

func testGroups(t *testing.T, s *suite) {
	if err := s.Fabric.CreateGroup(s.ctx, s.group); err != nil {
		t.Errorf("CreateGroup of an existing group: %v", err)
	}
	inv, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(inv.Groups, s.group) {
		t.Errorf("Inventory groups %v lack %s", inv.Groups, s.group)
	}
	if !slices.IsSorted(inv.Groups) {
		t.Errorf("Inventory groups not sorted: %v", inv.Groups)
	}
}

func testNetworks(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	got, err := s.Fabric.Network(s.ctx, net)
	if err != nil {
		t.Fatal(err)
	}
	want := compute.Network{Ref: net, AddressSpace: prefix("10.1.0.0/16"), Subnets: []compute.Subnet{
		{Name: "app", Prefix: prefix("10.1.1.0/24")},
		{Name: "db", Prefix: prefix("10.1.2.0/24")},
	}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Network (-want +got):\n%s", diff)
	}
	err = s.Fabric.CreateNetwork(s.ctx, compute.NetworkSpec{Group: s.group, Name: "prod", AddressSpace: prefix("10.9.0.0/16")})
	wantErr(t, "CreateNetwork of a taken name", err, compute.ErrExists)
	for _, tc := range []struct {
		what    string
		subnets []compute.SubnetSpec
	}{
		{"subnet outside the address space", []compute.SubnetSpec{{Name: "a", Prefix: prefix("10.3.0.0/24")}}},
		{"subnet larger than the address space", []compute.SubnetSpec{{Name: "a", Prefix: prefix("10.0.0.0/8")}}},
		{"overlapping subnets", []compute.SubnetSpec{{Name: "a", Prefix: prefix("10.2.0.0/24")}, {Name: "b", Prefix: prefix("10.2.0.128/25")}}},
	} {
		err := s.Fabric.CreateNetwork(s.ctx, compute.NetworkSpec{Group: s.group, Name: "bad", AddressSpace: prefix("10.2.0.0/16"), Subnets: tc.subnets})
		wantErr(t, "CreateNetwork with "+tc.what, err, compute.ErrInvalid)
	}
	if _, err := s.Fabric.Network(s.ctx, s.ref(compute.KindNetwork, "bad")); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("a refused network exists after all: Network(bad) error %v, want ErrNotFound", err)
	}
}

func testPeering(t *testing.T, s *suite) {
	a, b, c := s.network(t, "prod", 1), s.network(t, "test", 2), s.network(t, "other", 3)
	if err := s.Fabric.Peer(s.ctx, a, b); err != nil {
		t.Fatalf("Peer: %v", err)
	}
	if err := s.Fabric.Peer(s.ctx, b, a); err != nil {
		t.Errorf("Peer again, the other way: %v", err)
	}
	for _, tc := range []struct {
		net  compute.Ref
		want []compute.Ref
	}{{a, []compute.Ref{b}}, {b, []compute.Ref{a}}, {c, nil}} {
		n, err := s.Fabric.Network(s.ctx, tc.net)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, n.Peers); diff != "" {
			t.Errorf("Network(%s).Peers (-want +got):\n%s", tc.net, diff)
		}
	}
	wantErr(t, "Peer with a missing network", s.Fabric.Peer(s.ctx, a, s.ref(compute.KindNetwork, "nope")), compute.ErrNotFound)
}

func testNICStaticIP(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	ip := addr("10.1.1.10")
	a := s.nic(t, "a", net, ip)
	n, err := s.Fabric.Network(s.ctx, net)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]compute.IPUse{{IP: ip, NIC: a}}, n.Subnets[0].Used, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("subnet app IP table (-want +got):\n%s", diff)
	}
	inv, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.NICs) != 1 || inv.NICs[0].IP != ip || !inv.NICs[0].Static || inv.NICs[0].Subnet != "app" || inv.NICs[0].Network != net {
		t.Errorf("Inventory NICs = %+v, want one static NIC %s at %s in app", inv.NICs, a, ip)
	}
	for _, tc := range []struct {
		what string
		ip   string
		want error
	}{
		{"an address in use", "10.1.1.10", compute.ErrIPInUse},
		{"an address outside the subnet", "10.1.2.10", compute.ErrInvalid},
		{"the subnet's first address", "10.1.1.0", compute.ErrInvalid},
		{"an address Azure reserves", "10.1.1.3", compute.ErrInvalid},
		{"the subnet's last address", "10.1.1.255", compute.ErrInvalid},
	} {
		_, err := s.Fabric.BeginCreateNIC(s.ctx, compute.NICSpec{Group: s.group, Name: "b", Network: net, Subnet: "app", IP: addr(tc.ip)})
		wantErr(t, "BeginCreateNIC at "+tc.what, err, tc.want)
	}
	_, err = s.Fabric.BeginCreateNIC(s.ctx, compute.NICSpec{Group: s.group, Name: "a", Network: net, Subnet: "app"})
	wantErr(t, "BeginCreateNIC of a taken name", err, compute.ErrExists)
	n2, err := s.Fabric.Network(s.ctx, net)
	if err != nil {
		t.Fatal(err)
	}
	if len(n2.Subnets[0].Used) != 1 {
		t.Errorf("refused NICs took addresses: %v", n2.Subnets[0].Used)
	}
}

func testNICNextFree(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	ipOf := func(ref compute.Ref) netip.Addr {
		inv, err := s.Fabric.Inventory(s.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range inv.NICs {
			if n.Ref == ref {
				return n.IP
			}
		}
		t.Fatalf("%s not in the inventory", ref)
		return netip.Addr{}
	}
	a := s.nic(t, "a", net, netip.Addr{})
	b := s.nic(t, "b", net, netip.Addr{})
	s.nic(t, "c", net, addr("10.1.1.6"))
	d := s.nic(t, "d", net, netip.Addr{})
	for _, tc := range []struct {
		nic  compute.Ref
		want string
	}{{a, "10.1.1.4"}, {b, "10.1.1.5"}, {d, "10.1.1.7"}} {
		if got := ipOf(tc.nic); got != addr(tc.want) {
			t.Errorf("%s took %s, want %s (Azure keeps the first four addresses; the next free is the lowest)", tc.nic, got, tc.want)
		}
	}
	s.del(t, b)
	e := s.nic(t, "e", net, netip.Addr{})
	if got := ipOf(e); got != addr("10.1.1.5") {
		t.Errorf("after deleting b, e took %s, want b's 10.1.1.5", got)
	}
}

func testIPFreedWhenDeleteDone(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	ip := addr("10.1.1.20")
	a := s.nic(t, "a", net, ip)
	p, err := s.Fabric.BeginDelete(s.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Fabric.Poll(s.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Done {
		_, err := s.Fabric.BeginCreateNIC(s.ctx, compute.NICSpec{Group: s.group, Name: "b", Network: net, Subnet: "app", IP: ip})
		wantErr(t, "BeginCreateNIC at the address of a NIC being deleted", err, compute.ErrIPInUse)
	}
	if r := s.wait(t, "delete a", p); r.Err != nil {
		t.Fatalf("delete a: %v", r.Err)
	}
	s.nic(t, "b", net, ip)
}

func testDiskImport(t *testing.T, s *suite) {
	data := pattern(16<<10, 7)
	s.pageBlob(t, "os.vhd", 64<<10, data)
	p, err := s.Fabric.BeginCreateDisk(s.ctx, compute.DiskSpec{
		Group: s.group, Name: "os", SourceContainer: s.container, SourceBlob: "os.vhd", OSType: compute.Linux,
		Tags: map[string]string{compute.TagSource: "vm1"},
	})
	if err != nil {
		t.Fatalf("BeginCreateDisk: %v", err)
	}
	// The import reads the blob as it was at Begin: what happens to the
	// blob afterwards does not reach the disk.
	if _, err := s.Store.WritePages(s.ctx, s.container, "os.vhd", 0, pattern(4096, 99), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := s.wait(t, "create disk os", p); r.Err != nil {
		t.Fatalf("create disk os: %v", r.Err)
	}
	ref := s.ref(compute.KindDisk, "os")
	want := append(slices.Clone(data), make([]byte, 48<<10)...)
	readAll := func(when string) {
		t.Helper()
		got, err := s.Fabric.ReadDisk(s.ctx, ref, 0, 64<<10)
		if err != nil {
			t.Fatalf("ReadDisk %s: %v", when, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("ReadDisk of the whole disk differs from the blob at import, %s (first difference at byte %d)", when, firstDiff(got, want))
		}
	}
	readAll("after the blob changed")
	if err := s.Store.Delete(s.ctx, s.container, "os.vhd", blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	readAll("after the blob was deleted")
	mid, err := s.Fabric.ReadDisk(s.ctx, ref, 1000, 3000)
	if err != nil {
		t.Fatalf("ReadDisk range: %v", err)
	}
	if !bytes.Equal(mid, want[1000:4000]) {
		t.Errorf("ReadDisk [1000, 4000) differs from the blob (first difference at byte %d)", firstDiff(mid, want[1000:4000]))
	}
	inv, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantDisks := []compute.Disk{{Ref: ref, SizeBytes: 64 << 10, OSType: compute.Linux, Tags: map[string]string{compute.TagSource: "vm1"}}}
	if diff := cmp.Diff(wantDisks, inv.Disks); diff != "" {
		t.Errorf("Inventory disks (-want +got):\n%s", diff)
	}
	_, err = s.Fabric.BeginCreateDisk(s.ctx, compute.DiskSpec{Group: s.group, Name: "gone", SourceContainer: s.container, SourceBlob: "os.vhd"})
	wantErr(t, "BeginCreateDisk from a missing blob", err, compute.ErrNotFound)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testVMCreate(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	n1, n2 := s.nic(t, "vm1-nic0", net, netip.Addr{}), s.nic(t, "vm1-nic1", net, netip.Addr{})
	osd, dd := s.disk(t, "vm1-os", compute.Linux, pattern(4096, 1)), s.disk(t, "vm1-data", "", pattern(4096, 2))
	ref := s.vm(t, "vm1", []compute.Ref{n1, n2}, osd, dd)
	got, err := s.Fabric.VM(s.ctx, ref)
	if err != nil {
		t.Fatalf("VM: %v", err)
	}
	want := compute.VM{
		Ref: ref, Size: "Standard_D2s_v3", OSType: compute.Linux, NICs: []compute.Ref{n1, n2}, OSDisk: osd, DataDisks: []compute.Ref{dd},
		Tags: map[string]string{compute.TagSource: "vm1-src", compute.TagPoint: "p1"}, Provisioning: "Succeeded", Power: compute.Running,
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Guest" }, cmp.Ignore())); diff != "" {
		t.Errorf("VM (-want +got):\n%s", diff)
	}
	inv, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range inv.NICs {
		if n.VM != ref {
			t.Errorf("NIC %s attached to %v, want %s", n.Ref, n.VM, ref)
		}
	}
	for _, d := range inv.Disks {
		if d.VM != ref {
			t.Errorf("disk %s attached to %v, want %s", d.Ref, d.VM, ref)
		}
	}
	if len(inv.VMs) != 1 || inv.VMs[0].Ref != ref {
		t.Errorf("Inventory VMs = %v, want just %s", inv.VMs, ref)
	}
	_, err = s.Fabric.BeginCreateVM(s.ctx, s.vmSpec("vm1", []compute.Ref{s.nic(t, "spare", net, netip.Addr{})}, s.disk(t, "spare-os", compute.Linux, nil)))
	wantErr(t, "BeginCreateVM of a taken name", err, compute.ErrExists)
}

func testAttachments(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	n1, n2 := s.nic(t, "n1", net, netip.Addr{}), s.nic(t, "n2", net, netip.Addr{})
	d1, d2 := s.disk(t, "d1", compute.Linux, nil), s.disk(t, "d2", compute.Linux, nil)
	s.vm(t, "vm1", []compute.Ref{n1}, d1)
	for _, tc := range []struct {
		what string
		spec compute.VMSpec
	}{
		{"a NIC attached to another VM", s.vmSpec("vm2", []compute.Ref{n2, n1}, d2)},
		{"an OS disk attached to another VM", s.vmSpec("vm2", []compute.Ref{n2}, d1)},
		{"a data disk attached to another VM", s.vmSpec("vm2", []compute.Ref{n2}, d2, d1)},
	} {
		_, err := s.Fabric.BeginCreateVM(s.ctx, tc.spec)
		wantErr(t, "BeginCreateVM with "+tc.what, err, compute.ErrConflict)
	}
	if _, err := s.Fabric.VM(s.ctx, s.ref(compute.KindVM, "vm2")); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("a refused VM exists after all: VM(vm2) error %v", err)
	}
	for _, r := range []compute.Ref{n1, d1} {
		_, err := s.Fabric.BeginDelete(s.ctx, r)
		wantErr(t, "BeginDelete of attached "+r.String(), err, compute.ErrConflict)
	}
	_, err := s.Fabric.BeginDelete(s.ctx, net)
	wantErr(t, "BeginDelete of a network with NICs", err, compute.ErrConflict)
	// What the refused VM named is still free.
	s.vm(t, "vm2", []compute.Ref{n2}, d2)
}

func testPowerStates(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	ref := s.vm(t, "vm1", []compute.Ref{s.nic(t, "n1", net, netip.Addr{})}, s.disk(t, "d1", compute.Linux, nil))
	power := func(what string, want compute.PowerState) {
		t.Helper()
		v, err := s.Fabric.VM(s.ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if v.Power != want {
			t.Errorf("%s: power %q, want %q", what, v.Power, want)
		}
	}
	power("after create", compute.Running)
	p, err := s.Fabric.BeginDeallocate(s.ctx, ref)
	s.do(t, "deallocate", p, err)
	power("after deallocate", compute.Deallocated)
	p, err = s.Fabric.BeginStart(s.ctx, ref)
	s.do(t, "start", p, err)
	power("after start", compute.Running)
}

func testDeleteOrder(t *testing.T, s *suite) {
	net := s.network(t, "prod", 1)
	n1 := s.nic(t, "n1", net, netip.Addr{})
	d1 := s.disk(t, "d1", compute.Linux, nil)
	vm := s.vm(t, "vm1", []compute.Ref{n1}, d1)
	s.del(t, vm)
	inv, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.VMs) != 0 {
		t.Errorf("VMs after deleting vm1: %v", inv.VMs)
	}
	if len(inv.NICs) != 1 || inv.NICs[0].VM != (compute.Ref{}) || len(inv.Disks) != 1 || inv.Disks[0].VM != (compute.Ref{}) {
		t.Errorf("after deleting the VM its NIC and disk should remain, detached: NICs %+v, disks %+v", inv.NICs, inv.Disks)
	}
	s.del(t, n1)
	s.del(t, d1)
	s.del(t, net)
	inv, err = s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.NICs)+len(inv.Disks)+len(inv.Networks)+len(inv.VMs) != 0 {
		t.Errorf("left after deleting everything: %+v", inv)
	}
	if _, err := s.Fabric.VM(s.ctx, vm); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("VM of a deleted VM: %v, want ErrNotFound", err)
	}
	// Deleting again, as a cleanup run twice does, succeeds.
	for _, r := range []compute.Ref{vm, n1, d1, net} {
		p, err := s.Fabric.BeginDelete(s.ctx, r)
		if err != nil {
			t.Errorf("BeginDelete of deleted %s: %v", r, err)
			continue
		}
		if res := s.wait(t, "delete again", p); res.Err != nil {
			t.Errorf("deleting deleted %s: %v", r, res.Err)
		}
	}
}

func testLeftovers(t *testing.T, s *suite) {
	prod := s.network(t, "prod", 1)
	s.nic(t, "prod-nic", prod, netip.Addr{})
	before, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A test failover's worth: an isolated network, two VMs with a NIC
	// (one static) and a disk each, then cleanup in the right order.
	test := s.network(t, "test", 2)
	var made []compute.Ref
	for i, ip := range []netip.Addr{addr("10.2.1.9"), {}} {
		name := fmt.Sprintf("vm%d", i)
		n := s.nic(t, name+"-nic", test, ip)
		d := s.disk(t, name+"-os", compute.Linux, pattern(2048, byte(i)))
		made = append(made, s.vm(t, name+"-test", []compute.Ref{n}, d), n, d)
	}
	during, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sorted := range []bool{
		slices.IsSortedFunc(during.Networks, func(a, b compute.Network) int { return a.Ref.Compare(b.Ref) }),
		slices.IsSortedFunc(during.NICs, func(a, b compute.NIC) int { return a.Ref.Compare(b.Ref) }),
		slices.IsSortedFunc(during.Disks, func(a, b compute.Disk) int { return a.Ref.Compare(b.Ref) }),
		slices.IsSortedFunc(during.VMs, func(a, b compute.VM) int { return a.Ref.Compare(b.Ref) }),
	} {
		if !sorted {
			t.Errorf("Inventory lists not sorted by Ref: %+v", during)
			break
		}
	}
	if len(during.VMs) != 2 || len(during.NICs) != 3 || len(during.Disks) != 2 || len(during.Networks) != 2 {
		t.Errorf("Inventory during the test: %d VMs, %d NICs, %d disks, %d networks; want 2, 3, 2, 2", len(during.VMs), len(during.NICs), len(during.Disks), len(during.Networks))
	}
	for i := 0; i < len(made); i += 3 {
		s.del(t, made[i])
	}
	for i := 0; i < len(made); i += 3 {
		s.del(t, made[i+1])
		s.del(t, made[i+2])
	}
	s.del(t, test)
	after, err := s.Fabric.Inventory(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Inventory after cleanup differs from before the test (-before +after):\n%s", diff)
	}
}

func testNotFound(t *testing.T, s *suite) {
	_, err := s.Fabric.Poll(s.ctx, compute.Pending("no-such-operation"))
	wantErr(t, "Poll of an unknown token", err, compute.ErrNotFound)
	_, err = s.Fabric.VM(s.ctx, s.ref(compute.KindVM, "nope"))
	wantErr(t, "VM of a missing VM", err, compute.ErrNotFound)
	_, err = s.Fabric.Network(s.ctx, s.ref(compute.KindNetwork, "nope"))
	wantErr(t, "Network of a missing network", err, compute.ErrNotFound)
	_, err = s.Fabric.ReadDisk(s.ctx, s.ref(compute.KindDisk, "nope"), 0, 512)
	wantErr(t, "ReadDisk of a missing disk", err, compute.ErrNotFound)
	_, err = s.Fabric.BeginStart(s.ctx, s.ref(compute.KindVM, "nope"))
	wantErr(t, "BeginStart of a missing VM", err, compute.ErrNotFound)
	_, err = s.Fabric.BeginDeallocate(s.ctx, s.ref(compute.KindVM, "nope"))
	wantErr(t, "BeginDeallocate of a missing VM", err, compute.ErrNotFound)
	net := s.network(t, "prod", 1)
	_, err = s.Fabric.BeginCreateNIC(s.ctx, compute.NICSpec{Group: s.group, Name: "n", Network: s.ref(compute.KindNetwork, "nope"), Subnet: "app"})
	wantErr(t, "BeginCreateNIC in a missing network", err, compute.ErrNotFound)
	d := s.disk(t, "d", compute.Linux, nil)
	_, err = s.Fabric.BeginCreateVM(s.ctx, s.vmSpec("vm", []compute.Ref{s.ref(compute.KindNIC, "nope")}, d))
	wantErr(t, "BeginCreateVM with a missing NIC", err, compute.ErrNotFound)
	n := s.nic(t, "n", net, netip.Addr{})
	_, err = s.Fabric.BeginCreateVM(s.ctx, s.vmSpec("vm", []compute.Ref{n}, s.ref(compute.KindDisk, "nope")))
	wantErr(t, "BeginCreateVM with a missing disk", err, compute.ErrNotFound)
	// An Azure error is reported as such, with its status and code.
	var ae *compute.Error
	if _, err := s.Fabric.VM(s.ctx, s.ref(compute.KindVM, "nope")); !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("VM of a missing VM: %v, want a *compute.Error with status 404", err)
	}
}
