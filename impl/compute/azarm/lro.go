package azarm

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"

	"github.com/v2a-dr/v2a/impl/compute"
)

// The operations a Pending token names: each resumes with its own client
// and method.
const (
	opNICCreate     = "nic-create"
	opNICDelete     = "nic-delete"
	opDiskCreate    = "disk-create"
	opDiskDelete    = "disk-delete"
	opVMCreate      = "vm-create"
	opVMStart       = "vm-start"
	opVMDeallocate  = "vm-deallocate"
	opVMDelete      = "vm-delete"
	opNetworkDelete = "network-delete"
	opDone          = "done" // "done:<op>": finished when Begin returned
)

// pending makes the token of a poller Begin returned.
func pending[T any](ctx context.Context, op string, p *runtime.Poller[T]) (compute.Pending, error) {
	if p.Done() {
		// ARM answered with a terminal state at once: there is nothing to
		// resume. A failure is reported now, as Begin's error.
		if _, err := p.Result(ctx); err != nil {
			return "", asError(err)
		}
		return compute.Pending(opDone + ":" + op), nil
	}
	tok, err := p.ResumeToken()
	if err != nil {
		return "", fmt.Errorf("azarm: %s: resume token: %w", op, err)
	}
	return compute.Pending(op + ":" + tok), nil
}

// BeginCreateNIC creates a NIC with a static address (spec.IP) or a
// dynamic one (the subnet's next free address, which Azure assigns).
func (f *Fabric) BeginCreateNIC(ctx context.Context, spec compute.NICSpec) (compute.Pending, error) {
	g, err := f.group(spec.Group)
	if err != nil {
		return "", err
	}
	ref := compute.Ref{Kind: compute.KindNIC, Group: g, Name: spec.Name}
	if err := checkName(ref); err != nil {
		return "", err
	}
	if spec.Network.Kind != compute.KindNetwork || spec.Network.Name == "" || spec.Subnet == "" {
		return "", invalid("nic %s: needs a network and a subnet", ref)
	}
	if spec.IP.IsValid() && !spec.IP.Is4() {
		return "", invalid("nic %s: %s is not an IPv4 address", ref, spec.IP)
	}
	ipc := &armnetwork.InterfaceIPConfigurationPropertiesFormat{
		Subnet:                    &armnetwork.Subnet{ID: to.Ptr(f.subnetID(spec.Network, spec.Subnet))},
		Primary:                   to.Ptr(true),
		PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic),
	}
	if spec.IP.IsValid() {
		ipc.PrivateIPAllocationMethod = to.Ptr(armnetwork.IPAllocationMethodStatic)
		ipc.PrivateIPAddress = to.Ptr(spec.IP.String())
	}
	nic := armnetwork.Interface{
		Location: to.Ptr(f.cfg.Location),
		Tags:     toTags(spec.Tags),
		Properties: &armnetwork.InterfacePropertiesFormat{
			IPConfigurations: []*armnetwork.InterfaceIPConfiguration{{Name: to.Ptr("ipconfig1"), Properties: ipc}},
		},
	}
	if err := f.hasSubnet(ctx, spec.Network, spec.Subnet); err != nil {
		return "", err
	}
	if err := f.absent(ctx, ref); err != nil {
		return "", err
	}
	p, err := f.nics.BeginCreateOrUpdate(ctx, g, spec.Name, nic, nil)
	if err != nil {
		return "", f.fail(err, "create nic %s", ref)
	}
	return pending(ctx, opNICCreate, p)
}

// hasSubnet gives ErrNotFound when the network or its subnet does not
// exist (ARM would answer a NIC's reference to it with 400
// InvalidResourceReference).
func (f *Fabric) hasSubnet(ctx context.Context, network compute.Ref, subnet string) error {
	g, err := f.group(network.Group)
	if err != nil {
		return err
	}
	v, err := f.vnets.Get(ctx, g, network.Name, nil)
	if err != nil {
		return f.fail(err, "network %s", network)
	}
	if v.Properties != nil {
		for _, s := range v.Properties.Subnets {
			if s != nil && strings.EqualFold(str(s.Name), subnet) {
				return nil
			}
		}
	}
	return &compute.Error{Status: http.StatusNotFound, Code: compute.CodeNotFound,
		Message: fmt.Sprintf("network %s has no subnet %q", network, subnet)}
}

// BeginCreateDisk imports a page blob of the configured storage account as
// a managed disk.
func (f *Fabric) BeginCreateDisk(ctx context.Context, spec compute.DiskSpec) (compute.Pending, error) {
	g, err := f.group(spec.Group)
	if err != nil {
		return "", err
	}
	ref := compute.Ref{Kind: compute.KindDisk, Group: g, Name: spec.Name}
	if err := checkName(ref); err != nil {
		return "", err
	}
	if f.cfg.StorageAccountID == "" {
		return "", fmt.Errorf("%w: StorageAccountID is needed to import disks", ErrConfig)
	}
	if spec.SourceContainer == "" || spec.SourceBlob == "" {
		return "", invalid("disk %s: needs a source container and blob", ref)
	}
	if spec.OSType != "" && spec.OSType != compute.Linux && spec.OSType != compute.Windows {
		return "", invalid("disk %s: unknown OS type %q", ref, spec.OSType)
	}
	d := armcompute.Disk{
		Location: to.Ptr(f.cfg.Location),
		Tags:     toTags(spec.Tags),
		SKU:      &armcompute.DiskSKU{Name: to.Ptr(f.cfg.DiskSKU)},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{
				CreateOption:     to.Ptr(armcompute.DiskCreateOptionImport),
				SourceURI:        to.Ptr(f.blobBase + spec.SourceContainer + "/" + spec.SourceBlob),
				StorageAccountID: to.Ptr(f.cfg.StorageAccountID),
			},
		},
	}
	if spec.OSType != "" {
		d.Properties.OSType = to.Ptr(armcompute.OperatingSystemTypes(spec.OSType))
	}
	if err := f.absent(ctx, ref); err != nil {
		return "", err
	}
	p, err := f.disks.BeginCreateOrUpdate(ctx, g, spec.Name, d, nil)
	if err != nil {
		return "", f.fail(err, "create disk %s", ref)
	}
	return pending(ctx, opDiskCreate, p)
}

// BeginCreateVM creates a VM that attaches existing disks and NICs.
func (f *Fabric) BeginCreateVM(ctx context.Context, spec compute.VMSpec) (compute.Pending, error) {
	g, err := f.group(spec.Group)
	if err != nil {
		return "", err
	}
	ref := compute.Ref{Kind: compute.KindVM, Group: g, Name: spec.Name}
	if err := checkName(ref); err != nil {
		return "", err
	}
	if spec.Size == "" || len(spec.NICs) == 0 || spec.OSDisk.Kind != compute.KindDisk {
		return "", invalid("vm %s: needs a size, a NIC and an OS disk", ref)
	}
	if spec.OSType != compute.Linux && spec.OSType != compute.Windows {
		return "", invalid("vm %s: unknown OS type %q", ref, spec.OSType)
	}
	sp := &armcompute.StorageProfile{OSDisk: &armcompute.OSDisk{
		CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesAttach),
		OSType:       to.Ptr(armcompute.OperatingSystemTypes(spec.OSType)),
		ManagedDisk:  &armcompute.ManagedDiskParameters{ID: to.Ptr(f.id(spec.OSDisk))},
	}}
	for i, d := range spec.DataDisks {
		if d.Kind != compute.KindDisk {
			return "", invalid("vm %s: data disk %s is not a disk", ref, d)
		}
		sp.DataDisks = append(sp.DataDisks, &armcompute.DataDisk{
			Lun:          to.Ptr(int32(i)),
			CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesAttach),
			ManagedDisk:  &armcompute.ManagedDiskParameters{ID: to.Ptr(f.id(d))},
		})
	}
	np := &armcompute.NetworkProfile{}
	for i, n := range spec.NICs {
		if n.Kind != compute.KindNIC {
			return "", invalid("vm %s: %s is not a NIC", ref, n)
		}
		np.NetworkInterfaces = append(np.NetworkInterfaces, &armcompute.NetworkInterfaceReference{
			ID:         to.Ptr(f.id(n)),
			Properties: &armcompute.NetworkInterfaceReferenceProperties{Primary: to.Ptr(i == 0)},
		})
	}
	vm := armcompute.VirtualMachine{
		Location: to.Ptr(f.cfg.Location),
		Tags:     toTags(spec.Tags),
		Properties: &armcompute.VirtualMachineProperties{
			HardwareProfile: &armcompute.HardwareProfile{VMSize: to.Ptr(armcompute.VirtualMachineSizeTypes(spec.Size))},
			StorageProfile:  sp,
			NetworkProfile:  np,
		},
	}
	if err := f.absent(ctx, ref); err != nil {
		return "", err
	}
	p, err := f.vms.BeginCreateOrUpdate(ctx, g, spec.Name, vm, nil)
	if err != nil {
		return "", f.fail(err, "create vm %s", ref)
	}
	return pending(ctx, opVMCreate, p)
}

// BeginStart starts a VM.
func (f *Fabric) BeginStart(ctx context.Context, vm compute.Ref) (compute.Pending, error) {
	g, err := f.vmGroup(vm)
	if err != nil {
		return "", err
	}
	p, err := f.vms.BeginStart(ctx, g, vm.Name, nil)
	if err != nil {
		return "", f.fail(err, "start %s", vm)
	}
	return pending(ctx, opVMStart, p)
}

// BeginDeallocate stops a VM and releases its compute.
func (f *Fabric) BeginDeallocate(ctx context.Context, vm compute.Ref) (compute.Pending, error) {
	g, err := f.vmGroup(vm)
	if err != nil {
		return "", err
	}
	p, err := f.vms.BeginDeallocate(ctx, g, vm.Name, nil)
	if err != nil {
		return "", f.fail(err, "deallocate %s", vm)
	}
	return pending(ctx, opVMDeallocate, p)
}

func (f *Fabric) vmGroup(vm compute.Ref) (string, error) {
	if vm.Kind != compute.KindVM {
		return "", invalid("%s is not a VM", vm)
	}
	if err := checkName(vm); err != nil {
		return "", err
	}
	return f.group(vm.Group)
}

// BeginDelete deletes a VM, NIC, disk or network. ARM refuses to delete a
// NIC or disk in use, or a network with NICs in it; that refusal is
// returned as it is.
func (f *Fabric) BeginDelete(ctx context.Context, ref compute.Ref) (compute.Pending, error) {
	g, err := f.group(ref.Group)
	if err != nil {
		return "", err
	}
	if err := checkName(ref); err != nil {
		return "", err
	}
	switch ref.Kind {
	case compute.KindVM:
		p, err := f.vms.BeginDelete(ctx, g, ref.Name, nil)
		if err != nil {
			return "", f.fail(err, "delete %s", ref)
		}
		return pending(ctx, opVMDelete, p)
	case compute.KindNIC:
		p, err := f.nics.BeginDelete(ctx, g, ref.Name, nil)
		if err != nil {
			return "", f.fail(err, "delete %s", ref)
		}
		return pending(ctx, opNICDelete, p)
	case compute.KindDisk:
		p, err := f.disks.BeginDelete(ctx, g, ref.Name, nil)
		if err != nil {
			return "", f.fail(err, "delete %s", ref)
		}
		return pending(ctx, opDiskDelete, p)
	case compute.KindNetwork:
		p, err := f.vnets.BeginDelete(ctx, g, ref.Name, nil)
		if err != nil {
			return "", f.fail(err, "delete %s", ref)
		}
		return pending(ctx, opNetworkDelete, p)
	}
	return "", invalid("delete %s: unknown resource kind", ref)
}

// Poll resumes the operation's poller from its token and polls it once.
func (f *Fabric) Poll(ctx context.Context, p compute.Pending) (compute.Result, error) {
	op, tok, ok := strings.Cut(string(p), ":")
	if !ok || tok == "" {
		return compute.Result{}, unknownToken(p)
	}
	switch op {
	case opDone:
		if !knownOp(tok) {
			return compute.Result{}, unknownToken(p)
		}
		return compute.Result{Done: true}, nil
	case opNICCreate:
		q, err := f.nics.BeginCreateOrUpdate(ctx, "", "", armnetwork.Interface{}, &armnetwork.InterfacesClientBeginCreateOrUpdateOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opNICDelete:
		q, err := f.nics.BeginDelete(ctx, "", "", &armnetwork.InterfacesClientBeginDeleteOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opDiskCreate:
		q, err := f.disks.BeginCreateOrUpdate(ctx, "", "", armcompute.Disk{}, &armcompute.DisksClientBeginCreateOrUpdateOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opDiskDelete:
		q, err := f.disks.BeginDelete(ctx, "", "", &armcompute.DisksClientBeginDeleteOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opVMCreate:
		q, err := f.vms.BeginCreateOrUpdate(ctx, "", "", armcompute.VirtualMachine{}, &armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opVMStart:
		q, err := f.vms.BeginStart(ctx, "", "", &armcompute.VirtualMachinesClientBeginStartOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opVMDeallocate:
		q, err := f.vms.BeginDeallocate(ctx, "", "", &armcompute.VirtualMachinesClientBeginDeallocateOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opVMDelete:
		q, err := f.vms.BeginDelete(ctx, "", "", &armcompute.VirtualMachinesClientBeginDeleteOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	case opNetworkDelete:
		q, err := f.vnets.BeginDelete(ctx, "", "", &armnetwork.VirtualNetworksClientBeginDeleteOptions{ResumeToken: tok})
		return pollOnce(ctx, f, p, q, err)
	}
	return compute.Result{}, unknownToken(p)
}

func knownOp(op string) bool {
	switch op {
	case opNICCreate, opNICDelete, opDiskCreate, opDiskDelete, opVMCreate, opVMStart, opVMDeallocate, opVMDelete, opNetworkDelete:
		return true
	}
	return false
}

func unknownToken(p compute.Pending) error {
	s := string(p)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Errorf("azarm: poll %q: not a token of this fabric: %w", s, compute.ErrNotFound)
}

// pollOnce takes a resumed poller (or the error of resuming it), polls it
// once and reports how the operation stands.
func pollOnce[T any](ctx context.Context, f *Fabric, tok compute.Pending, p *runtime.Poller[T], err error) (compute.Result, error) {
	if err != nil {
		// The token did not decode as this operation's poller.
		return compute.Result{}, fmt.Errorf("%w (%v)", unknownToken(tok), err)
	}
	resp, err := p.Poll(ctx)
	if err != nil {
		return compute.Result{}, f.fail(err, "poll")
	}
	if !p.Done() {
		after := retryAfter(resp)
		if after <= 0 {
			after = f.poll
		}
		return compute.Result{After: after}, nil
	}
	if _, err := p.Result(ctx); err != nil {
		return compute.Result{Done: true, Err: asError(err)}, nil
	}
	return compute.Result{Done: true}, nil
}

// retryAfter reads how long ARM asked the caller to wait, or 0.
func retryAfter(r *http.Response) time.Duration {
	if r == nil {
		return 0
	}
	for _, h := range []struct {
		name string
		unit time.Duration
	}{{"Retry-After-Ms", time.Millisecond}, {"X-Ms-Retry-After-Ms", time.Millisecond}, {"Retry-After", time.Second}} {
		v := r.Header.Get(h.name)
		if v == "" {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return time.Duration(n) * h.unit
		}
		if t, err := http.ParseTime(v); err == nil && h.unit == time.Second {
			if d := time.Until(t); d > 0 {
				return d
			}
			return 0
		}
	}
	return 0
}
