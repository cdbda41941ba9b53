package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	port "github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	"github.com/v2a-dr/v2a/impl/vsphere/vspheretest"
)

// buildLab builds the lab fixture in a fresh directory and closes it when
// the test ends.
func buildLab(t *testing.T) (*World, *Inventory) {
	t.Helper()
	inv, err := Load(labFixture)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Build(context.Background(), inv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, inv
}

// vmView is what a fixture says about a VM, in the port's terms.
type vmView struct {
	Name, GuestOS, IP, Host, Cluster, Datastore string
	PowerState                                  port.PowerState
	CPUs, MemoryMB                              int
	InstanceUUID, BIOSUUID                      string
	Disks                                       []diskView
}

type diskView struct {
	CapacityBytes int64
	Path          string
}

func expectedVMs(inv *Inventory) []vmView {
	var want []vmView
	for _, vm := range inv.VMs {
		if vm.Physical {
			continue
		}
		bios, instance := VMUUIDs(vm.Name)
		v := vmView{
			Name: vm.Name, GuestOS: vm.GuestID, IP: vm.IP, Host: vm.Host, Cluster: inv.ClusterOf(vm.Host),
			Datastore: vm.Datastore, PowerState: port.PoweredOff, CPUs: vm.CPUs, MemoryMB: vm.MemoryMB,
			InstanceUUID: instance, BIOSUUID: bios,
		}
		if vm.On() {
			v.PowerState = port.PoweredOn
		}
		for i, d := range vm.Disks {
			ds := d.Datastore
			if ds == "" {
				ds = vm.Datastore
			}
			file := vm.Name + ".vmdk"
			if i > 0 {
				file = fmt.Sprintf("%s_%d.vmdk", vm.Name, i)
			}
			v.Disks = append(v.Disks, diskView{CapacityBytes: d.CapacityMiB << 20, Path: fmt.Sprintf("[%s] %s/%s", ds, vm.Name, file)})
		}
		want = append(want, v)
	}
	return want
}

func viewOf(vms []port.VM) []vmView {
	var got []vmView
	for _, vm := range vms {
		v := vmView{
			Name: vm.Name, GuestOS: vm.GuestOS, IP: vm.IP, Host: vm.Host, Cluster: vm.Cluster,
			Datastore: vm.Datastore, PowerState: vm.PowerState, CPUs: vm.CPUs, MemoryMB: vm.MemoryMB,
			InstanceUUID: vm.InstanceUUID, BIOSUUID: vm.BIOSUUID,
		}
		for _, d := range vm.Disks {
			v.Disks = append(v.Disks, diskView{CapacityBytes: d.CapacityBytes, Path: d.Path})
		}
		got = append(got, v)
	}
	return got
}

// byName orders views as Discover orders VMs.
func byName(a, b vmView) bool { return a.Name < b.Name }

func TestDiscoverLab(t *testing.T) {
	w, inv := buildLab(t)
	c := vcenter.New(w.Client())
	vms, err := c.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := expectedVMs(inv)
	if d := cmp.Diff(want, viewOf(vms), cmpSortVMs); d != "" {
		t.Errorf("discovered VMs (-fixture +discovered):\n%s", d)
	}
	for i := 1; i < len(vms); i++ {
		if vms[i-1].Name >= vms[i].Name {
			t.Errorf("Discover not sorted by name: %q before %q", vms[i-1].Name, vms[i].Name)
		}
	}
	for _, vm := range vms {
		if vm.Name == "phys01" {
			t.Errorf("physical server phys01 discovered in vCenter as %s", vm.Ref)
		}
	}
}

var cmpSortVMs = cmp.Transformer("sortVMs", func(in []vmView) []vmView {
	out := append([]vmView(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if byName(out[j], out[i]) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestDiskFilesSizedToCapacity(t *testing.T) {
	w, inv := buildLab(t)
	vms, err := vcenter.New(w.Client()).Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	type file struct {
		Path string
		Size int64
	}
	var want, got []file
	for _, vm := range vms {
		for i, d := range vm.Disks {
			p, err := port.ParseDatastorePath(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			flat := filepath.Join(w.DatastoreDir(p.Datastore), filepath.FromSlash(p.Path[:len(p.Path)-len(".vmdk")]+"-flat.vmdk"))
			want = append(want, file{flat, d.CapacityBytes})
			path, err := w.DiskFile(vm.Name, i)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, file{path, st.Size()})
		}
	}
	if n := countDisks(inv); len(got) != n {
		t.Errorf("%d disk files, fixture has %d VM disks", len(got), n)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("flat extents (-want +got):\n%s", d)
	}
	for _, tt := range []struct {
		vm    string
		index int
	}{{"db01", 1}, {"db01", -1}, {"phys01", 0}, {"nosuch", 0}} {
		if _, err := w.DiskFile(tt.vm, tt.index); !errors.Is(err, ErrNoSuchDisk) {
			t.Errorf("DiskFile(%q, %d) error = %v, want ErrNoSuchDisk", tt.vm, tt.index, err)
		}
	}
}

func countDisks(inv *Inventory) int {
	n := 0
	for _, vm := range inv.VMs {
		if !vm.Physical {
			n += len(vm.Disks)
		}
	}
	return n
}

// TestBuildDeterministic builds the lab twice and requires discovery —
// names, references, UUIDs, disk keys and paths — to be identical.
func TestBuildDeterministic(t *testing.T) {
	var runs [2][]port.VM
	for i := range runs {
		w, _ := buildLab(t)
		vms, err := vcenter.New(w.Client()).Discover(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		runs[i] = vms
	}
	if d := cmp.Diff(runs[0], runs[1]); d != "" {
		t.Errorf("two builds differ (-first +second):\n%s", d)
	}
	if len(runs[0]) == 0 || runs[0][0].Ref == "" || runs[0][0].Disks[0].UUID == "" {
		t.Errorf("discovery lacks references or disk UUIDs: %+v", runs[0])
	}
}

func findVM(t *testing.T, c port.Client, name string) port.VM {
	t.Helper()
	vms, err := c.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name == name {
			return vm
		}
	}
	t.Fatalf("vm %q not discovered", name)
	return port.VM{}
}

func TestRunInGuest(t *testing.T) {
	ctx := context.Background()
	w, _ := buildLab(t)
	c := vcenter.New(w.Client())
	db01 := findVM(t, c, "db01")
	report := findVM(t, c, "ord-report") // powered off in the fixture
	web01 := findVM(t, c, "web01")
	w.SetGuestLogin("web01", "root", "s3cret")

	type call struct{ VM, Path, Args string }
	var calls []call
	type result struct {
		Code int
		Err  error
	}
	tests := []struct {
		name     string
		callback bool
		vm       port.VMRef
		auth     port.GuestAuth
		want     result
		wantCall bool
	}{
		{"no tools", false, db01.Ref, port.GuestAuth{Username: "root", Password: "pw"}, result{Err: port.ErrGuestUnavailable}, false},
		{"runs", true, db01.Ref, port.GuestAuth{Username: "root", Password: "pw"}, result{Code: 0}, true},
		{"exit code", true, web01.Ref, port.GuestAuth{Username: "root", Password: "s3cret"}, result{Code: 3}, true},
		{"wrong password", true, web01.Ref, port.GuestAuth{Username: "root", Password: "guess"}, result{Err: port.ErrGuestAuth}, false},
		{"empty password", true, db01.Ref, port.GuestAuth{Username: "root"}, result{Err: port.ErrGuestAuth}, false},
		{"powered off", true, report.Ref, port.GuestAuth{Username: "root", Password: "pw"}, result{Err: port.ErrInvalidPowerState}, false},
		{"no such vm", true, "vm-999999", port.GuestAuth{Username: "root", Password: "pw"}, result{Err: port.ErrNotFound}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.callback {
				w.OnGuestProgram(func(vm, path, args string) (int, error) {
					calls = append(calls, call{vm, path, args})
					if vm == "web01" {
						return 3, nil
					}
					return 0, nil
				})
			}
			calls = nil
			code, err := c.RunInGuest(ctx, tt.vm, tt.auth, "/tmp/install_mobility.sh", "-r Agent -q")
			got := result{Code: code}
			if err != nil {
				got.Err = tt.want.Err
				if tt.want.Err == nil || !errors.Is(err, tt.want.Err) {
					t.Errorf("RunInGuest error = %v, want %v", err, tt.want.Err)
				}
			}
			if d := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b error) bool { return a == b })); d != "" {
				t.Errorf("RunInGuest (-want +got):\n%s", d)
			}
			var want []call
			if tt.wantCall {
				name := map[port.VMRef]string{db01.Ref: "db01", web01.Ref: "web01"}[tt.vm]
				want = []call{{name, "/tmp/install_mobility.sh", "-r Agent -q"}}
			}
			if d := cmp.Diff(want, calls); d != "" {
				t.Errorf("callback calls (-want +got):\n%s", d)
			}
		})
	}
}

func TestCreateVMAndPower(t *testing.T) {
	ctx := context.Background()
	w, _ := buildLab(t)
	c := vcenter.New(w.Client())
	spec := port.VMSpec{
		Name: "db01-failback", GuestOS: "ubuntu64Guest", CPUs: 2, MemoryMB: 2048,
		Host: "esx02.lab.local", Datastore: "ds-hdd01", Network: "Prod-VLAN100",
		Disks: []port.DiskSpec{{CapacityBytes: 64 << 20}, {CapacityBytes: 32 << 20, Datastore: "ds-ssd01"}},
	}
	vm, err := c.CreateVM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := vmView{
		Name: "db01-failback", GuestOS: "ubuntu64Guest", Host: "esx02.lab.local", Cluster: "Cluster01",
		Datastore: "ds-hdd01", PowerState: port.PoweredOff, CPUs: 2, MemoryMB: 2048,
		InstanceUUID: vm.InstanceUUID, BIOSUUID: vm.BIOSUUID,
		Disks: []diskView{
			{CapacityBytes: 64 << 20, Path: "[ds-hdd01] db01-failback/db01-failback.vmdk"},
			{CapacityBytes: 32 << 20, Path: "[ds-ssd01] db01-failback/db01-failback.vmdk"},
		},
	}
	if d := cmp.Diff(want, viewOf([]port.VM{vm})[0]); d != "" {
		t.Errorf("created VM (-want +got):\n%s", d)
	}
	if got := findVM(t, c, spec.Name); got.Ref != vm.Ref {
		t.Errorf("Discover finds %s as %s, CreateVM returned %s", spec.Name, got.Ref, vm.Ref)
	}
	path, err := w.DiskFile(spec.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 32<<20 {
		t.Errorf("disk file %s: size %v, err %v; want %d bytes", path, st.Size(), err, 32<<20)
	}

	steps := []struct {
		name  string
		do    func() error
		err   error
		state port.PowerState
	}{
		{"power on", func() error { return c.PowerOn(ctx, vm.Ref) }, nil, port.PoweredOn},
		{"power on again", func() error { return c.PowerOn(ctx, vm.Ref) }, port.ErrInvalidPowerState, port.PoweredOn},
		{"power off", func() error { return c.PowerOff(ctx, vm.Ref) }, nil, port.PoweredOff},
		{"power off again", func() error { return c.PowerOff(ctx, vm.Ref) }, port.ErrInvalidPowerState, port.PoweredOff},
		{"power on unknown", func() error { return c.PowerOn(ctx, "vm-999999") }, port.ErrNotFound, port.PoweredOff},
		{"duplicate name", func() error { _, err := c.CreateVM(ctx, spec); return err }, port.ErrExists, port.PoweredOff},
		{"unknown host", func() error {
			s := spec
			s.Name, s.Host = "other", "esx99"
			_, err := c.CreateVM(ctx, s)
			return err
		}, port.ErrNotFound, port.PoweredOff},
		{"unknown datastore", func() error {
			s := spec
			s.Name, s.Datastore = "other", "ds-nope"
			_, err := c.CreateVM(ctx, s)
			return err
		}, port.ErrNotFound, port.PoweredOff},
	}
	for _, st := range steps {
		err := st.do()
		if (st.err == nil) != (err == nil) || (st.err != nil && !errors.Is(err, st.err)) {
			t.Errorf("%s: error = %v, want %v", st.name, err, st.err)
		}
		got, err := c.VM(ctx, vm.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if got.PowerState != st.state {
			t.Errorf("%s: power state %s, want %s", st.name, got.PowerState, st.state)
		}
	}
}

func TestOverHTTP(t *testing.T) {
	ctx := context.Background()
	w, _ := buildLab(t)
	u := w.URL()
	u.User = nil
	c, err := vcenter.Dial(ctx, u.String(), User, Password, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)

	// The wire world must see what the in-process world sees.
	remote, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	local, err := vcenter.New(w.Client()).Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(local, remote); d != "" {
		t.Errorf("discovery over HTTP differs from in process (-local +http):\n%s", d)
	}

	data := []byte("mobility agent installer\n")
	const path = "[ds-ssd01] db01/installer.sh"
	if err := c.WriteFile(ctx, path, data); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(data, got); d != "" {
		t.Errorf("ReadFile after WriteFile (-want +got):\n%s", d)
	}
	onDisk, err := os.ReadFile(filepath.Join(w.DatastoreDir("ds-ssd01"), "db01", "installer.sh"))
	if err != nil || string(onDisk) != string(data) {
		t.Errorf("datastore directory holds %q (%v), want %q", onDisk, err, data)
	}

	errs := []struct {
		name string
		err  error
		want error
	}{
		{"missing file", func() error { _, err := c.ReadFile(ctx, "[ds-ssd01] db01/nope"); return err }(), port.ErrNotFound},
		{"missing datastore", func() error { _, err := c.ReadFile(ctx, "[ds-x] a"); return err }(), port.ErrNotFound},
		{"bad path", func() error { _, err := c.ReadFile(ctx, "ds-ssd01/a"); return err }(), port.ErrInvalidArgument},
		{"in process", func() error { _, err := vcenter.New(w.Client()).ReadFile(ctx, path); return err }(), port.ErrUnsupported},
	}
	for _, e := range errs {
		if !errors.Is(e.err, e.want) {
			t.Errorf("%s: error = %v, want %v", e.name, e.err, e.want)
		}
	}
}

// TestFilesConformance holds the vcenter adapter, over HTTP to vcsim, to
// the datastore file suite the in-memory stand-in (memds) passes too; and
// checks that a disk's flat extent is where vsphere.FlatExtentPath says.
func TestFilesConformance(t *testing.T) {
	ctx := context.Background()
	w, _ := buildLab(t)
	u := w.URL()
	u.User = nil
	c, err := vcenter.Dial(ctx, u.String(), User, Password, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	vspheretest.Files(t, c, port.DatastorePath{Datastore: "ds-ssd01", Path: "db01"})

	vms, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name != "db01" {
			continue
		}
		flat, err := port.FlatExtentPath(vm.Disks[0].Path)
		if err != nil {
			t.Fatal(err)
		}
		host, err := w.DiskFile("db01", 0)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(host)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.ReadFile(ctx, flat)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || len(got) == 0 {
			t.Errorf("ReadFile(%s) = %d bytes, the flat extent on disk has %d", flat, len(got), len(want))
		}
		return
	}
	t.Fatal("lab fixture has no db01")
}

// TestFilesConformanceMounted holds the vcenter adapter with its datastore
// mounted (ranged I/O on the local files, as a master target with the
// disks attached) to the same suite; a datastore not mounted stays on
// HTTP, Range GETs included; a path that climbs out of a mounted
// datastore is refused.
func TestFilesConformanceMounted(t *testing.T) {
	ctx := context.Background()
	w, _ := buildLab(t)
	u := w.URL()
	u.User = nil
	c, err := vcenter.Dial(ctx, u.String(), User, Password, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	c.Mount("ds-ssd01", w.DatastoreDir("ds-ssd01"))
	t.Run("mounted", func(t *testing.T) {
		vspheretest.Files(t, c, port.DatastorePath{Datastore: "ds-ssd01", Path: "db01"})
	})
	t.Run("http", func(t *testing.T) {
		vspheretest.Files(t, c, port.DatastorePath{Datastore: "ds-hdd01", Path: "app01"})
	})
	// What WriteAt puts in a mounted file, the HTTP endpoint serves.
	p := "[ds-ssd01] db01/conf-e"
	if err := c.WriteFile(ctx, p, []byte("0000000000")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAt(ctx, p, []byte("xy"), 4); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ReadFile(ctx, p); err != nil || string(got) != "0000xy0000" {
		t.Errorf("ReadFile after a mounted WriteAt = %q, %v", got, err)
	}
	for _, bad := range []string{"[ds-ssd01] ../escape", "[ds-ssd01] db01/../../escape"} {
		if _, err := c.FileSize(ctx, bad); !errors.Is(err, port.ErrInvalidArgument) {
			t.Errorf("FileSize(%s) = %v, want ErrInvalidArgument", bad, err)
		}
		if err := c.WriteAt(ctx, bad, []byte("x"), 0); !errors.Is(err, port.ErrInvalidArgument) {
			t.Errorf("WriteAt(%s) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func BenchmarkBuildLab(b *testing.B) {
	inv, err := Load(labFixture)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		w, err := Build(context.Background(), inv, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}
