// Package vcenter implements the vSphere port (impl/vsphere) over govmomi.
// The same code speaks to a real vCenter (Open, by URL, credentials and
// how to trust its certificate; Dial for the common case) and to the
// govmomi simulator, over HTTPS by URL or in process (New, from an existing
// *vim25.Client).
//
// As a port adapter it may block, poll and use the real clock: RunInGuest
// polls the guest process list until the program has ended.
//
// Datastore files travel over the SDK's HTTP file endpoint (/folder):
// ReadFile is a GET, ReadAt a GET with a Range header (ESXi and vcsim
// honour it), FileSize the datastore browser's answer, WriteFile a PUT.
// That endpoint has no ranged write — a PUT replaces the whole file — so
// WriteAt over it reads the whole file, patches it and puts it back: right,
// but it moves the whole file both ways, which no disk of real size can
// afford. A master target writes its disks as block devices instead (the
// VMware master target hot-adds them; a Linux one with the datastore
// mounted sees its files): Mount tells the client where a datastore is
// mounted on this machine, and ReadAt, WriteAt and FileSize on it then
// use the local files, moving only the bytes asked for.
package vcenter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/v2a-dr/v2a/impl/vsphere"
)

// Client is the govmomi adapter of vsphere.Client.
type Client struct {
	c      *vim25.Client
	logout func(context.Context) error // nil unless Dial made the session
	// mounts are the datastores mounted on this machine, by name: their
	// directories (see Mount). Set before the client is shared.
	mounts map[string]string
}

var _ vsphere.Client = (*Client)(nil)

// New returns a Client over an existing, logged-in vim25 client. A client
// without an HTTP transport (the simulator's in-process one) serves every
// call except the datastore file calls, which then return ErrUnsupported
// (ReadAt, WriteAt and FileSize still work on a Mount-ed datastore).
func New(c *vim25.Client) *Client {
	return &Client{c: c}
}

// Vim25 is the underlying govmomi client, for callers that need more than
// the port offers (tests, tools).
func (c *Client) Vim25() *vim25.Client { return c.c }

// Close logs out the session Dial opened; it does nothing for New.
func (c *Client) Close(ctx context.Context) error {
	if c.logout == nil {
		return nil
	}
	if err := c.logout(ctx); err != nil {
		return fmt.Errorf("vsphere: logout: %w", err)
	}
	return nil
}

// vmProps are the VirtualMachine properties discovery reads.
var vmProps = []string{
	"name",
	"config.instanceUuid",
	"config.uuid",
	"config.guestId",
	"config.template",
	"config.hardware.numCPU",
	"config.hardware.memoryMB",
	"config.hardware.device",
	"runtime.powerState",
	"runtime.host",
	"guest.ipAddress",
	"summary.config.vmPathName",
}

// placement resolves host references to host and cluster names.
type placement struct {
	host    map[types.ManagedObjectReference]string
	cluster map[types.ManagedObjectReference]string // host ref -> cluster name
}

// Discover implements vsphere.Client.
func (c *Client) Discover(ctx context.Context) ([]vsphere.VM, error) {
	m := view.NewManager(c.c)
	v, err := m.CreateContainerView(ctx, c.c.ServiceContent.RootFolder,
		[]string{"VirtualMachine", "HostSystem", "ClusterComputeResource"}, true)
	if err != nil {
		return nil, fmt.Errorf("vsphere: discover: %w", mapFault(err))
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()

	var mvms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, vmProps, &mvms); err != nil {
		return nil, fmt.Errorf("vsphere: discover: %w", mapFault(err))
	}
	var hosts []mo.HostSystem
	if err := v.Retrieve(ctx, []string{"HostSystem"}, []string{"name", "parent"}, &hosts); err != nil {
		return nil, fmt.Errorf("vsphere: discover hosts: %w", mapFault(err))
	}
	var clusters []mo.ClusterComputeResource
	if err := v.Retrieve(ctx, []string{"ClusterComputeResource"}, []string{"name"}, &clusters); err != nil {
		return nil, fmt.Errorf("vsphere: discover clusters: %w", mapFault(err))
	}
	pl := newPlacement(hosts, clusters)

	vms := make([]vsphere.VM, 0, len(mvms))
	for i := range mvms {
		if mvms[i].Config != nil && mvms[i].Config.Template {
			continue
		}
		vms = append(vms, toVM(&mvms[i], pl))
	}
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Name != vms[j].Name {
			return vms[i].Name < vms[j].Name
		}
		return vms[i].Ref < vms[j].Ref
	})
	return vms, nil
}

func newPlacement(hosts []mo.HostSystem, clusters []mo.ClusterComputeResource) placement {
	cname := make(map[types.ManagedObjectReference]string, len(clusters))
	for _, cl := range clusters {
		cname[cl.Self] = cl.Name
	}
	pl := placement{
		host:    make(map[types.ManagedObjectReference]string, len(hosts)),
		cluster: make(map[types.ManagedObjectReference]string, len(hosts)),
	}
	for _, h := range hosts {
		pl.host[h.Self] = h.Name
		if h.Parent != nil {
			pl.cluster[h.Self] = cname[*h.Parent] // "" for a standalone ComputeResource
		}
	}
	return pl
}

// VM implements vsphere.Client.
func (c *Client) VM(ctx context.Context, ref vsphere.VMRef) (vsphere.VM, error) {
	pc := property.DefaultCollector(c.c)
	var mvm mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, vmRef(ref), vmProps, &mvm); err != nil {
		return vsphere.VM{}, fmt.Errorf("vsphere: vm %s: %w", ref, mapFault(err))
	}
	pl := placement{host: map[types.ManagedObjectReference]string{}, cluster: map[types.ManagedObjectReference]string{}}
	if h := mvm.Runtime.Host; h != nil {
		var mh mo.HostSystem
		if err := pc.RetrieveOne(ctx, *h, []string{"name", "parent"}, &mh); err != nil {
			return vsphere.VM{}, fmt.Errorf("vsphere: vm %s: host %s: %w", ref, h.Value, mapFault(err))
		}
		pl.host[*h] = mh.Name
		if mh.Parent != nil && mh.Parent.Type == "ClusterComputeResource" {
			var cl mo.ClusterComputeResource
			if err := pc.RetrieveOne(ctx, *mh.Parent, []string{"name"}, &cl); err != nil {
				return vsphere.VM{}, fmt.Errorf("vsphere: vm %s: cluster %s: %w", ref, mh.Parent.Value, mapFault(err))
			}
			pl.cluster[*h] = cl.Name
		}
	}
	return toVM(&mvm, pl), nil
}

func vmRef(ref vsphere.VMRef) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)}
}

func toVM(m *mo.VirtualMachine, pl placement) vsphere.VM {
	vm := vsphere.VM{
		Name:       m.Name,
		Ref:        vsphere.VMRef(m.Self.Value),
		PowerState: vsphere.PowerState(m.Runtime.PowerState),
	}
	if g := m.Guest; g != nil {
		vm.IP = g.IpAddress
	}
	if h := m.Runtime.Host; h != nil {
		vm.Host = pl.host[*h]
		vm.Cluster = pl.cluster[*h]
	}
	if p, err := vsphere.ParseDatastorePath(m.Summary.Config.VmPathName); err == nil {
		vm.Datastore = p.Datastore
	}
	cfg := m.Config
	if cfg == nil {
		return vm
	}
	vm.InstanceUUID = cfg.InstanceUuid
	vm.BIOSUUID = cfg.Uuid
	vm.GuestOS = cfg.GuestId
	vm.CPUs = int(cfg.Hardware.NumCPU)
	vm.MemoryMB = int(cfg.Hardware.MemoryMB)
	for _, d := range cfg.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		vd := vsphere.Disk{Key: disk.Key, CapacityBytes: disk.CapacityInBytes}
		if vd.CapacityBytes == 0 {
			vd.CapacityBytes = disk.CapacityInKB * 1024
		}
		if info := disk.DeviceInfo; info != nil {
			vd.Label = info.GetDescription().Label
		}
		if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			vd.Path = b.GetVirtualDeviceFileBackingInfo().FileName
			if p, err := vsphere.ParseDatastorePath(vd.Path); err == nil {
				vd.Datastore = p.Datastore
			}
		}
		if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			vd.UUID = b.Uuid
		}
		vm.Disks = append(vm.Disks, vd)
	}
	sort.Slice(vm.Disks, func(i, j int) bool { return vm.Disks[i].Key < vm.Disks[j].Key })
	return vm
}

// PowerOn implements vsphere.Client.
func (c *Client) PowerOn(ctx context.Context, ref vsphere.VMRef) error {
	task, err := object.NewVirtualMachine(c.c, vmRef(ref)).PowerOn(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("vsphere: power on %s: %w", ref, mapFault(err))
	}
	return nil
}

// PowerOff implements vsphere.Client.
func (c *Client) PowerOff(ctx context.Context, ref vsphere.VMRef) error {
	task, err := object.NewVirtualMachine(c.c, vmRef(ref)).PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("vsphere: power off %s: %w", ref, mapFault(err))
	}
	return nil
}

// findByName returns the reference of the managed entity of kind named
// name, searching the whole inventory.
func (c *Client) findByName(ctx context.Context, kind, name string) (types.ManagedObjectReference, error) {
	m := view.NewManager(c.c)
	v, err := m.CreateContainerView(ctx, c.c.ServiceContent.RootFolder, []string{kind}, true)
	if err != nil {
		return types.ManagedObjectReference{}, mapFault(err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	refs, err := v.Find(ctx, []string{kind}, property.Match{"name": name})
	if err != nil {
		return types.ManagedObjectReference{}, mapFault(err)
	}
	if len(refs) == 0 {
		return types.ManagedObjectReference{}, fmt.Errorf("%s %q: %w", kind, name, vsphere.ErrNotFound)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Value < refs[j].Value })
	return refs[0], nil
}

// datacenterOf returns a finder scoped to the datacenter holding ref, and
// that datacenter.
func (c *Client) datacenterOf(ctx context.Context, ref types.ManagedObjectReference) (*find.Finder, *object.Datacenter, error) {
	anc, err := mo.Ancestors(ctx, c.c, c.c.ServiceContent.PropertyCollector, ref)
	if err != nil {
		return nil, nil, mapFault(err)
	}
	for _, e := range anc {
		if e.Self.Type != "Datacenter" {
			continue
		}
		f := find.NewFinder(c.c, false)
		obj, err := f.ObjectReference(ctx, e.Self)
		if err != nil {
			return nil, nil, mapFault(err)
		}
		dc := obj.(*object.Datacenter)
		f.SetDatacenter(dc)
		return f, dc, nil
	}
	return nil, nil, fmt.Errorf("datacenter of %s: %w", ref.Value, vsphere.ErrNotFound)
}

// CreateVM implements vsphere.Client.
func (c *Client) CreateVM(ctx context.Context, spec vsphere.VMSpec) (vsphere.VM, error) {
	vm, err := c.createVM(ctx, spec)
	if err != nil {
		return vsphere.VM{}, fmt.Errorf("vsphere: create vm %q: %w", spec.Name, err)
	}
	return vm, nil
}

func (c *Client) createVM(ctx context.Context, spec vsphere.VMSpec) (vsphere.VM, error) {
	if spec.Name == "" || spec.Host == "" || spec.Datastore == "" {
		return vsphere.VM{}, fmt.Errorf("%w: name, host and datastore are required", vsphere.ErrInvalidArgument)
	}
	// vCenter refuses a duplicate name only within one folder, vcsim not at
	// all; the port keeps VM names unique across the inventory.
	switch ref, err := c.findByName(ctx, "VirtualMachine", spec.Name); {
	case err == nil:
		return vsphere.VM{}, fmt.Errorf("%w: vm %s has that name", vsphere.ErrExists, ref.Value)
	case !errors.Is(err, vsphere.ErrNotFound):
		return vsphere.VM{}, err
	}
	hostRef, err := c.findByName(ctx, "HostSystem", spec.Host)
	if err != nil {
		return vsphere.VM{}, err
	}
	pc := property.DefaultCollector(c.c)
	var host mo.HostSystem
	if err := pc.RetrieveOne(ctx, hostRef, []string{"parent"}, &host); err != nil {
		return vsphere.VM{}, mapFault(err)
	}
	if host.Parent == nil {
		return vsphere.VM{}, fmt.Errorf("host %q has no compute resource: %w", spec.Host, vsphere.ErrNotFound)
	}
	var cr mo.ComputeResource
	if err := pc.RetrieveOne(ctx, *host.Parent, []string{"resourcePool"}, &cr); err != nil {
		return vsphere.VM{}, mapFault(err)
	}
	if cr.ResourcePool == nil {
		return vsphere.VM{}, fmt.Errorf("resource pool of host %q: %w", spec.Host, vsphere.ErrNotFound)
	}
	finder, dc, err := c.datacenterOf(ctx, hostRef)
	if err != nil {
		return vsphere.VM{}, err
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return vsphere.VM{}, mapFault(err)
	}

	datastores := map[string]*object.Datastore{}
	datastore := func(name string) (*object.Datastore, error) {
		if ds, ok := datastores[name]; ok {
			return ds, nil
		}
		ds, err := finder.Datastore(ctx, name)
		if err != nil {
			return nil, mapFault(err)
		}
		datastores[name] = ds
		return ds, nil
	}
	vmds, err := datastore(spec.Datastore)
	if err != nil {
		return vsphere.VM{}, err
	}

	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return vsphere.VM{}, err
	}
	devices = append(devices, scsi)
	for i, d := range spec.Disks {
		if d.CapacityBytes <= 0 {
			return vsphere.VM{}, fmt.Errorf("%w: disk %d: capacity %d bytes", vsphere.ErrInvalidArgument, i, d.CapacityBytes)
		}
		ds := vmds
		if d.Datastore != "" {
			if ds, err = datastore(d.Datastore); err != nil {
				return vsphere.VM{}, err
			}
		}
		disk := devices.CreateDisk(scsi.(types.BaseVirtualController), ds.Reference(), "")
		// A bare "[datastore]" lets vCenter name the disk in the VM's folder
		// on that datastore (CreateDisk would append ".vmdk" to it).
		disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName = vsphere.DatastorePath{Datastore: ds.Name()}.String()
		disk.CapacityInKB = (d.CapacityBytes + 1023) / 1024
		disk.CapacityInBytes = disk.CapacityInKB * 1024
		devices = append(devices, disk)
	}
	if spec.Network != "" {
		network, err := finder.Network(ctx, spec.Network)
		if err != nil {
			return vsphere.VM{}, mapFault(err)
		}
		backing, err := network.EthernetCardBackingInfo(ctx)
		if err != nil {
			return vsphere.VM{}, mapFault(err)
		}
		nic, err := devices.CreateEthernetCard("vmxnet3", backing)
		if err != nil {
			return vsphere.VM{}, err
		}
		devices = append(devices, nic)
	}
	change, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return vsphere.VM{}, err
	}

	config := types.VirtualMachineConfigSpec{
		Name:         spec.Name,
		GuestId:      spec.GuestOS,
		NumCPUs:      int32(max(spec.CPUs, 1)),
		MemoryMB:     int64(spec.MemoryMB),
		Uuid:         spec.BIOSUUID,
		InstanceUuid: spec.InstanceUUID,
		Files:        &types.VirtualMachineFileInfo{VmPathName: vsphere.DatastorePath{Datastore: vmds.Name()}.String()},
		DeviceChange: change,
	}
	if config.GuestId == "" {
		config.GuestId = string(types.VirtualMachineGuestOsIdentifierOtherGuest64)
	}
	if config.MemoryMB == 0 {
		config.MemoryMB = 1024
	}

	hs := object.NewHostSystem(c.c, hostRef)
	task, err := folders.VmFolder.CreateVM(ctx, config, object.NewResourcePool(c.c, *cr.ResourcePool), hs)
	if err != nil {
		return vsphere.VM{}, mapFault(err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return vsphere.VM{}, mapFault(err)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return vsphere.VM{}, fmt.Errorf("create task returned %T, not a reference", info.Result)
	}
	return c.VM(ctx, vsphere.VMRef(ref.Value))
}

// datastoreFile resolves a datastore path to the datastore object (with
// its datacenter path, which file transfer URLs need) and the relative path.
func (c *Client) datastoreFile(ctx context.Context, path string) (*object.Datastore, string, error) {
	if c.c.Client == nil {
		return nil, "", fmt.Errorf("%w: datastore file transfer needs an HTTP connection to the SDK", vsphere.ErrUnsupported)
	}
	p, err := vsphere.ParseDatastorePath(path)
	if err != nil {
		return nil, "", err
	}
	if p.Path == "" {
		return nil, "", fmt.Errorf("%w: %q names no file", vsphere.ErrInvalidArgument, path)
	}
	ref, err := c.findByName(ctx, "Datastore", p.Datastore)
	if err != nil {
		return nil, "", err
	}
	finder, _, err := c.datacenterOf(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	ds, err := finder.Datastore(ctx, p.Datastore)
	if err != nil {
		return nil, "", mapFault(err)
	}
	return ds, p.Path, nil
}

// ReadFile implements vsphere.Client.
func (c *Client) ReadFile(ctx context.Context, path string) ([]byte, error) {
	ds, rel, err := c.datastoreFile(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vsphere: read %s: %w", path, err)
	}
	rc, _, err := ds.Download(ctx, rel, &soap.DefaultDownload)
	if err != nil {
		// The HTTP file endpoint says 404 without a fault: ask the
		// datastore browser whether the file is there, for a typed error.
		if _, serr := ds.Stat(ctx, rel); serr != nil {
			err = serr
		}
		return nil, fmt.Errorf("vsphere: read %s: %w", path, mapFault(err))
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("vsphere: read %s: %w", path, err)
	}
	return data, nil
}

// WriteFile implements vsphere.Client.
func (c *Client) WriteFile(ctx context.Context, path string, data []byte) error {
	ds, rel, err := c.datastoreFile(ctx, path)
	if err != nil {
		return fmt.Errorf("vsphere: write %s: %w", path, err)
	}
	param := soap.DefaultUpload
	param.ContentLength = int64(len(data))
	if err := ds.Upload(ctx, bytes.NewReader(data), rel, &param); err != nil {
		return fmt.Errorf("vsphere: write %s: %w", path, mapFault(err))
	}
	return nil
}

// Mount says that datastore is mounted at dir on this machine (a master
// target with the datastore's disks attached; vcsim's datastores are
// directories on its host, which its datastore's info.url names): ReadAt,
// WriteAt and FileSize on its files then use the local files, with
// ranged, in-place I/O. ReadFile and WriteFile stay on HTTP. Call it before
// the client is shared between goroutines.
func (c *Client) Mount(datastore, dir string) {
	if c.mounts == nil {
		c.mounts = map[string]string{}
	}
	c.mounts[datastore] = dir
}

// local resolves a datastore path on a mounted datastore to its local
// file; ok is false for a datastore not mounted.
func (c *Client) local(path string) (file string, ok bool, err error) {
	p, err := vsphere.ParseDatastorePath(path)
	if err != nil {
		return "", false, err
	}
	if p.Path == "" {
		return "", false, fmt.Errorf("%w: %q names no file", vsphere.ErrInvalidArgument, path)
	}
	dir, ok := c.mounts[p.Datastore]
	if !ok {
		return "", false, nil
	}
	rel := filepath.FromSlash(p.Path)
	if !filepath.IsLocal(rel) {
		return "", false, fmt.Errorf("%w: %q leaves its datastore", vsphere.ErrInvalidArgument, path)
	}
	return filepath.Join(dir, rel), true, nil
}

// localErr maps a local file error to the port's.
func localErr(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w (%v)", vsphere.ErrNotFound, err)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w (%v)", vsphere.ErrNoSpace, err)
	}
	return err
}

// FileSize implements vsphere.Client.
func (c *Client) FileSize(ctx context.Context, path string) (int64, error) {
	n, err := c.fileSize(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("vsphere: size %s: %w", path, err)
	}
	return n, nil
}

func (c *Client) fileSize(ctx context.Context, path string) (int64, error) {
	file, ok, err := c.local(path)
	if err != nil {
		return 0, err
	}
	if ok {
		st, err := os.Stat(file)
		if err != nil {
			return 0, localErr(err)
		}
		return st.Size(), nil
	}
	ds, rel, err := c.datastoreFile(ctx, path)
	if err != nil {
		return 0, err
	}
	info, err := ds.Stat(ctx, rel)
	if err != nil {
		return 0, mapFault(err)
	}
	return info.GetFileInfo().FileSize, nil
}

// ReadAt implements vsphere.Client: on a mounted datastore a read of the
// local file, otherwise an HTTP GET of bytes [off, off+len(p)).
func (c *Client) ReadAt(ctx context.Context, path string, p []byte, off int64) (int, error) {
	n, err := c.readAt(ctx, path, p, off)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("vsphere: read %s at %d: %w", path, off, err)
	}
	return n, err
}

func (c *Client) readAt(ctx context.Context, path string, p []byte, off int64) (int, error) {
	file, ok, err := c.local(path)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset", vsphere.ErrInvalidArgument)
	}
	if ok {
		f, err := os.Open(file)
		if err != nil {
			return 0, localErr(err)
		}
		defer f.Close()
		return f.ReadAt(p, off)
	}
	ds, rel, err := c.datastoreFile(ctx, path)
	if err != nil {
		return 0, err
	}
	if len(p) == 0 {
		// No range to ask for; the file must still be there.
		if _, err := ds.Stat(ctx, rel); err != nil {
			return 0, mapFault(err)
		}
		return 0, nil
	}
	u, ticket, err := ds.ServiceTicket(ctx, rel, http.MethodGet)
	if err != nil {
		return 0, mapFault(err)
	}
	param := soap.Download{Method: http.MethodGet, Ticket: ticket, Close: ticket != nil,
		Headers: map[string]string{"Range": "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+int64(len(p))-1, 10)}}
	res, err := c.c.Client.DownloadRequest(ctx, u, &param)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK: // a server that ignores Range sends the whole file
		if _, err := io.CopyN(io.Discard, res.Body, off); err == io.EOF {
			return 0, io.EOF
		} else if err != nil {
			return 0, err
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, io.EOF // off is at or past the end
	case http.StatusNotFound:
		// No fault in the answer: ask the datastore browser, for a typed
		// error.
		if _, err := ds.Stat(ctx, rel); err != nil {
			return 0, mapFault(err)
		}
		return 0, fmt.Errorf("%w: GET %s: %s", vsphere.ErrNotFound, rel, res.Status)
	default:
		return 0, fmt.Errorf("GET %s: %s", rel, res.Status)
	}
	n, err := io.ReadFull(res.Body, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// WriteAt implements vsphere.Client: on a mounted datastore a write to the
// local file, in place and synced to stable storage before it returns;
// otherwise the whole-file fallback (read the file, patch it, put it back),
// which moves the whole file both ways.
func (c *Client) WriteAt(ctx context.Context, path string, p []byte, off int64) error {
	if err := c.writeAt(ctx, path, p, off); err != nil {
		return fmt.Errorf("vsphere: write %s at %d: %w", path, off, err)
	}
	return nil
}

func (c *Client) writeAt(ctx context.Context, path string, p []byte, off int64) error {
	file, ok, err := c.local(path)
	if err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("%w: negative offset", vsphere.ErrInvalidArgument)
	}
	if ok {
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			return localErr(err)
		}
		if _, err := f.WriteAt(p, off); err != nil {
			f.Close()
			return localErr(err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return localErr(err)
		}
		return localErr(f.Close())
	}
	img, err := c.ReadFile(ctx, path)
	if err != nil {
		return err
	}
	if end := off + int64(len(p)); end > int64(len(img)) {
		img = append(img, make([]byte, end-int64(len(img)))...)
	}
	copy(img[off:], p)
	return c.WriteFile(ctx, path, img)
}

// Guest process polling bounds: a push install takes seconds to minutes, so
// the first poll is immediate (the simulator finishes at once) and later
// ones back off to a few seconds.
const (
	pollFirst = 250 * time.Millisecond
	pollMax   = 5 * time.Second
)

// RunInGuest implements vsphere.Client.
func (c *Client) RunInGuest(ctx context.Context, ref vsphere.VMRef, auth vsphere.GuestAuth, program, args string) (int, error) {
	code, err := c.runInGuest(ctx, ref, auth, program, args)
	if err != nil {
		return 0, fmt.Errorf("vsphere: run %q in guest of %s: %w", program, ref, err)
	}
	return code, nil
}

func (c *Client) runInGuest(ctx context.Context, ref vsphere.VMRef, auth vsphere.GuestAuth, program, args string) (int, error) {
	pm, err := guest.NewOperationsManager(c.c, vmRef(ref)).ProcessManager(ctx)
	if err != nil {
		return 0, mapFault(err)
	}
	creds := &types.NamePasswordAuthentication{Username: auth.Username, Password: auth.Password}
	pid, err := pm.StartProgram(ctx, creds, &types.GuestProgramSpec{ProgramPath: program, Arguments: args})
	if err != nil {
		return 0, mapFault(err)
	}
	wait := pollFirst
	for {
		procs, err := pm.ListProcesses(ctx, creds, []int64{pid})
		if err != nil {
			return 0, mapFault(err)
		}
		for _, p := range procs {
			if p.Pid == pid && p.EndTime != nil {
				return int(p.ExitCode), nil
			}
		}
		if len(procs) == 0 {
			return 0, fmt.Errorf("guest process %d vanished: %w", pid, vsphere.ErrNotFound)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, pollMax)
	}
}

// faultKinds maps vSphere faults to the port's errors, first match wins.
var faultKinds = []struct {
	fault types.BaseMethodFault
	err   error
}{
	{&types.ManagedObjectNotFound{}, vsphere.ErrNotFound},
	{&types.NotFound{}, vsphere.ErrNotFound},
	{&types.FileNotFound{}, vsphere.ErrNotFound},
	{&types.DuplicateName{}, vsphere.ErrExists},
	{&types.FileAlreadyExists{}, vsphere.ErrExists},
	{&types.AlreadyExists{}, vsphere.ErrExists},
	{&types.InvalidPowerState{}, vsphere.ErrInvalidPowerState},
	{&types.InvalidGuestLogin{}, vsphere.ErrGuestAuth},
	{&types.GuestPermissionDenied{}, vsphere.ErrGuestAuth},
	{&types.GuestOperationsUnavailable{}, vsphere.ErrGuestUnavailable},
	{&types.ToolsUnavailable{}, vsphere.ErrGuestUnavailable},
	{&types.NoDiskSpace{}, vsphere.ErrNoSpace},
	{&types.InvalidArgument{}, vsphere.ErrInvalidArgument},
	{&types.InvalidDeviceSpec{}, vsphere.ErrInvalidArgument},
}

// mapFault wraps err with the port error its vSphere fault means, keeping
// the fault's own message; an error of no known kind is returned as is.
func mapFault(err error) error {
	if err == nil {
		return nil
	}
	var nf *find.NotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("%w (%v)", vsphere.ErrNotFound, err)
	}
	for _, k := range faultKinds {
		if fault.Is(err, k.fault) {
			return fmt.Errorf("%w (%s)", k.err, strings.TrimSpace(err.Error()))
		}
	}
	var nsf object.DatastoreNoSuchFileError
	var nsd object.DatastoreNoSuchDirectoryError
	if errors.As(err, &nsf) || errors.As(err, &nsd) {
		return fmt.Errorf("%w (%v)", vsphere.ErrNotFound, err)
	}
	return err
}
