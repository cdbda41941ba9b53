// Package vsphere builds the simulated on-premises vSphere estate: a govmomi
// simulator (vcsim) world holding exactly what an inventory fixture
// (fixtures/inventory/*.yaml) describes, with VM disks backed by real files
// sized to their capacity, and guest operations routed to a Go callback
// instead of vcsim's Docker containers.
//
// Everything a trace may print is repeatable: objects are made one at a time
// in fixture order (so managed object references repeat), VM UUIDs are
// derived from VM names, disk paths from VM names. vcsim's delay and fault
// knobs, which draw from the wall clock and the global random source, are
// never turned on.
package vsphere

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// ErrNoSuchDisk is returned by DiskFile for an unknown VM or disk index.
var ErrNoSuchDisk = errors.New("vsphere: no such disk")

// Credentials of the simulated vCenter's SDK, as URL gives them.
const (
	User     = "v2a"
	Password = "v2a-lab"
)

// World is a running simulated vCenter built from an Inventory.
type World struct {
	inv   *Inventory
	dir   string
	model *simulator.Model
	vc    *vim25.Client // in process
	guest *guestProcesses

	mu     sync.Mutex
	server *simulator.Server
}

// Build creates a vcsim world holding inv's objects. Datastores are the
// directories dir/<datastore name>, which Build creates; dir must be empty
// or absent, and is left in place by Close. inv is validated first.
func Build(ctx context.Context, inv *Inventory, dir string) (w *World, err error) {
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("vsphere: build: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vsphere: build: %w", err)
	}

	// The VPX model with every count zeroed is an empty vCenter: service
	// content, root folder and managers only. The inventory is then made
	// through the API, as an administrator would make it.
	model := simulator.VPX()
	model.Datacenter, model.Portgroup, model.Host, model.Cluster = 0, 0, 0, 0
	model.ClusterHost, model.Datastore, model.Machine = 0, 0, 0
	model.Autostart = false
	if err := model.Create(); err != nil {
		return nil, fmt.Errorf("vsphere: build: create model: %w", err)
	}
	w = &World{inv: inv, dir: dir, model: model}
	defer func() {
		if err != nil {
			w.Close()
			w = nil
		}
	}()

	if w.guest, err = installGuestOperations(model); err != nil {
		return nil, err
	}
	w.vc, err = vim25.NewClient(ctx, model.Service)
	if err != nil {
		return nil, fmt.Errorf("vsphere: build: in-process client: %w", err)
	}
	if err := w.populate(ctx); err != nil {
		return nil, fmt.Errorf("vsphere: build %s: %w", inv.File, err)
	}
	return w, nil
}

// Close stops the HTTP server, if URL started one, and removes vcsim's own
// state. The datastore directories stay, for the caller to inspect.
func (w *World) Close() {
	w.mu.Lock()
	if w.server != nil {
		w.server.Close()
		w.server = nil
	}
	w.mu.Unlock()
	w.model.Remove()
}

// Inventory is the inventory the world was built from.
func (w *World) Inventory() *Inventory { return w.inv }

// Client is an in-process client of the world: calls are served by direct
// method calls on the simulator, without HTTP or XML, on the caller's
// goroutine. It cannot move datastore files (they travel over HTTP); use
// URL for that.
func (w *World) Client() *vim25.Client { return w.vc }

// URL starts the simulator's HTTPS SDK endpoint, once, and returns its
// address with User and Password in it. Its certificate is self-signed:
// clients must skip verification.
func (w *World) URL() *url.URL {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.server == nil {
		w.model.Service.TLS = new(tls.Config)
		w.server = w.model.Service.NewServer()
	}
	u := *w.server.URL
	u.User = url.UserPassword(User, Password)
	return &u
}

// DatastoreDir is the directory backing the named datastore.
func (w *World) DatastoreDir(name string) string { return filepath.Join(w.dir, name) }

// VMUUIDs returns the BIOS and instance UUIDs Build gives the VM named
// name: name-based (SHA-1) UUIDs, so that they repeat across runs.
func VMUUIDs(name string) (bios, instance string) {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("v2a:vsphere:vm:bios:"+name)).String(),
		uuid.NewSHA1(uuid.NameSpaceURL, []byte("v2a:vsphere:vm:instance:"+name)).String()
}

func (w *World) populate(ctx context.Context) error {
	c := w.vc
	inv := w.inv
	root := object.NewRootFolder(c)
	dc, err := root.CreateDatacenter(ctx, inv.Datacenter)
	if err != nil {
		return fmt.Errorf("datacenter %q: %w", inv.Datacenter, err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}

	hosts := map[string]*object.HostSystem{}
	var hostOrder []*object.HostSystem
	pools := map[string]*object.ResourcePool{} // by cluster name
	for _, cl := range inv.Clusters {
		cluster, err := folders.HostFolder.CreateCluster(ctx, cl.Name, types.ClusterConfigSpecEx{})
		if err != nil {
			return fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
		for _, h := range cl.Hosts {
			task, err := cluster.AddHost(ctx, types.HostConnectSpec{HostName: h.Name}, true, nil, nil)
			if err != nil {
				return fmt.Errorf("host %q: %w", h.Name, err)
			}
			info, err := task.WaitForResult(ctx, nil)
			if err != nil {
				return fmt.Errorf("host %q: %w", h.Name, err)
			}
			host := object.NewHostSystem(c, info.Result.(types.ManagedObjectReference))
			hosts[h.Name] = host
			hostOrder = append(hostOrder, host)
		}
		if pools[cl.Name], err = cluster.ResourcePool(ctx); err != nil {
			return fmt.Errorf("cluster %q: %w", cl.Name, err)
		}
	}

	// Every datastore and network is on every host, as in a cluster where
	// any host can run any VM.
	for _, d := range inv.Datastores {
		path := w.DatastoreDir(d.Name)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fmt.Errorf("datastore %q: %w", d.Name, err)
		}
		for _, h := range hostOrder {
			dss, err := h.ConfigManager().DatastoreSystem(ctx)
			if err != nil {
				return err
			}
			if _, err := dss.CreateLocalDatastore(ctx, d.Name, path); err != nil {
				return fmt.Errorf("datastore %q on host %s: %w", d.Name, h.Reference().Value, err)
			}
		}
	}
	for _, n := range inv.Networks {
		if n.Name == "VM Network" {
			continue
		}
		for _, h := range hostOrder {
			ns, err := h.ConfigManager().NetworkSystem(ctx)
			if err != nil {
				return err
			}
			err = ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: n.Name, VswitchName: "vSwitch0"})
			// vcsim keeps one Network object per datacenter and answers
			// DuplicateName for the second host that adds the port group.
			if err != nil && !fault.Is(err, &types.DuplicateName{}) {
				return fmt.Errorf("network %q: %w", n.Name, err)
			}
		}
	}

	for _, vm := range inv.VMs {
		if vm.Physical {
			continue
		}
		if err := w.createVM(ctx, folders, hosts[vm.Host], pools[inv.ClusterOf(vm.Host)], vm); err != nil {
			return fmt.Errorf("vm %q: %w", vm.Name, err)
		}
	}
	return nil
}

func (w *World) createVM(ctx context.Context, folders *object.DatacenterFolders, host *object.HostSystem, pool *object.ResourcePool, vm VM) error {
	c := w.vc
	bios, instance := VMUUIDs(vm.Name)
	config := types.VirtualMachineConfigSpec{
		Name:         vm.Name,
		GuestId:      vm.GuestID,
		NumCPUs:      int32(vm.CPUs),
		MemoryMB:     int64(vm.MemoryMB),
		Uuid:         bios,
		InstanceUuid: instance,
		Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + vm.Datastore + "]"},
	}
	if vm.IP != "" {
		// vcsim's "SET." extraConfig keys set guest properties, standing in
		// for what VMware Tools would report.
		config.ExtraConfig = []types.BaseOptionValue{
			&types.OptionValue{Key: "SET.guest.ipAddress", Value: vm.IP},
		}
	}

	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return err
	}
	devices = append(devices, scsi)
	for i, d := range vm.Disks {
		ds := d.Datastore
		if ds == "" {
			ds = vm.Datastore
		}
		// Disk file names are the vSphere convention, spelled out so that
		// they never depend on what is already in the directory.
		name := vm.Name + ".vmdk"
		if i > 0 {
			name = fmt.Sprintf("%s_%d.vmdk", vm.Name, i)
		}
		if ds != vm.Datastore {
			// The VM's folder exists only on its own datastore.
			if err := os.MkdirAll(filepath.Join(w.DatastoreDir(ds), vm.Name), 0o755); err != nil {
				return err
			}
		}
		disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
			fmt.Sprintf("[%s] %s/%s", ds, vm.Name, name))
		disk.CapacityInKB = d.CapacityBytes() / 1024
		disk.CapacityInBytes = d.CapacityBytes()
		devices = append(devices, disk)
	}
	if vm.Network != "" {
		network, err := object.NewSearchIndex(c).FindChild(ctx, folders.NetworkFolder, vm.Network)
		if err != nil || network == nil {
			return fmt.Errorf("network %q not found (%v)", vm.Network, err)
		}
		backing, err := network.(object.NetworkReference).EthernetCardBackingInfo(ctx)
		if err != nil {
			return err
		}
		nic, err := devices.CreateEthernetCard("vmxnet3", backing)
		if err != nil {
			return err
		}
		devices = append(devices, nic)
	}
	if config.DeviceChange, err = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd); err != nil {
		return err
	}

	task, err := folders.VmFolder.CreateVM(ctx, config, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	ref := info.Result.(types.ManagedObjectReference)

	// vcsim leaves the flat extent empty; the simulated disk layer reads
	// and writes it as the raw disk, so it must span the capacity.
	for i := range vm.Disks {
		if _, err := w.DiskFile(vm.Name, i); err != nil {
			return err
		}
	}
	if vm.On() {
		task, err := object.NewVirtualMachine(c, ref).PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("power on: %w", err)
		}
	}
	return nil
}

// simDisk is a VM disk as the simulator's registry holds it.
type simDisk struct {
	key      int32
	fileName string // "[ds1] db01/db01.vmdk"
	capacity int64
}

// disks returns the disks of the VM named name, sorted by device key (the
// order the fixture lists them in).
func (w *World) disks(name string) ([]simDisk, error) {
	reg := w.model.Map()
	var found *simulator.VirtualMachine
	for _, e := range reg.All("VirtualMachine") {
		if vm, ok := e.(*simulator.VirtualMachine); ok && vm.Name == name {
			found = vm
			break
		}
	}
	if found == nil {
		return nil, fmt.Errorf("vm %q: %w", name, ErrNoSuchDisk)
	}
	var disks []simDisk
	w.model.Service.Context.WithLock(found, func() {
		if found.Config == nil {
			return
		}
		for _, d := range found.Config.Hardware.Device {
			vd, ok := d.(*types.VirtualDisk)
			if !ok {
				continue
			}
			b, ok := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo)
			if !ok {
				continue
			}
			capacity := vd.CapacityInBytes
			if capacity == 0 {
				capacity = vd.CapacityInKB * 1024
			}
			disks = append(disks, simDisk{key: vd.Key, fileName: b.GetVirtualDeviceFileBackingInfo().FileName, capacity: capacity})
		}
	})
	sort.Slice(disks, func(i, j int) bool { return disks[i].key < disks[j].key })
	return disks, nil
}

// DiskFile returns the host path of the flat extent ("-flat.vmdk") of the
// VM's disk at index (in device key order, which for a built VM is fixture
// order), growing the file to the disk's capacity if it is shorter. It
// works for VMs made later through the API too (failback targets). The
// simulated disk layer opens the file as the raw disk.
func (w *World) DiskFile(vmName string, index int) (string, error) {
	disks, err := w.disks(vmName)
	if err != nil {
		return "", err
	}
	if index < 0 || index >= len(disks) {
		return "", fmt.Errorf("vm %q disk %d of %d: %w", vmName, index, len(disks), ErrNoSuchDisk)
	}
	d := disks[index]
	ds, rel, ok := strings.Cut(strings.TrimPrefix(d.fileName, "["), "] ")
	if !ok {
		return "", fmt.Errorf("vm %q disk %d: unexpected file name %q", vmName, index, d.fileName)
	}
	path := filepath.Join(w.DatastoreDir(ds), filepath.FromSlash(simulator.VirtualDiskBackingFileName(rel)))
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("vsphere: disk file of vm %q disk %d: %w", vmName, index, err)
	}
	if st.Size() < d.capacity {
		if err := os.Truncate(path, d.capacity); err != nil {
			return "", fmt.Errorf("vsphere: disk file of vm %q disk %d: %w", vmName, index, err)
		}
	}
	return path, nil
}
