package configsrv

import (
	"context"
	"fmt"
	"sync"

	"github.com/v2a-dr/v2a/impl/vsphere"
)

// fakeVC is a vsphere.Client for unit tests: Discover returns VMs,
// RunInGuest records its calls and returns Exit/RunErr.
type fakeVC struct {
	mu          sync.Mutex
	VMs         []vsphere.VM
	DiscoverErr error
	Exit        int
	RunErr      error
	Calls       []runCall
	PoweredOff  []vsphere.VMRef  // PowerOff calls that powered a VM off
	Created     []vsphere.VMSpec // CreateVM calls
	CreateErr   error            // CreateVM's error when set
}

type runCall struct {
	Ref     vsphere.VMRef
	Auth    vsphere.GuestAuth
	Program string
	Args    string
}

var _ vsphere.Client = (*fakeVC)(nil)

func (f *fakeVC) Discover(context.Context) ([]vsphere.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.DiscoverErr != nil {
		return nil, f.DiscoverErr
	}
	return append([]vsphere.VM(nil), f.VMs...), nil
}

func (f *fakeVC) VM(_ context.Context, ref vsphere.VMRef) (vsphere.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, vm := range f.VMs {
		if vm.Ref == ref {
			return vm, nil
		}
	}
	return vsphere.VM{}, vsphere.ErrNotFound
}

func (f *fakeVC) RunInGuest(_ context.Context, ref vsphere.VMRef, auth vsphere.GuestAuth, program, args string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, runCall{Ref: ref, Auth: auth, Program: program, Args: args})
	return f.Exit, f.RunErr
}

func (f *fakeVC) calls() []runCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]runCall(nil), f.Calls...)
}

func (f *fakeVC) PowerOn(context.Context, vsphere.VMRef) error { return vsphere.ErrUnsupported }

// PowerOff powers a VM of VMs off and records it.
func (f *fakeVC) PowerOff(_ context.Context, ref vsphere.VMRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, vm := range f.VMs {
		if vm.Ref != ref {
			continue
		}
		if vm.PowerState == vsphere.PoweredOff {
			return fmt.Errorf("fake: power off %s: %w", ref, vsphere.ErrInvalidPowerState)
		}
		f.VMs[i].PowerState = vsphere.PoweredOff
		f.PoweredOff = append(f.PoweredOff, ref)
		return nil
	}
	return fmt.Errorf("fake: power off %s: %w", ref, vsphere.ErrNotFound)
}

// CreateVM adds a powered-off VM with thin disks "[ds] name/name.vmdk",
// "[ds] name/name_1.vmdk", ... to VMs, as vCenter lays them out.
func (f *fakeVC) CreateVM(_ context.Context, spec vsphere.VMSpec) (vsphere.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Created = append(f.Created, spec)
	if f.CreateErr != nil {
		return vsphere.VM{}, f.CreateErr
	}
	for _, vm := range f.VMs {
		if vm.Name == spec.Name {
			return vsphere.VM{}, fmt.Errorf("fake: create %s: %w", spec.Name, vsphere.ErrExists)
		}
	}
	vm := vsphere.VM{Name: spec.Name, Ref: vsphere.VMRef(fmt.Sprintf("vm-%d", 100+len(f.VMs))), GuestOS: spec.GuestOS,
		PowerState: vsphere.PoweredOff, Host: spec.Host, Datastore: spec.Datastore}
	for i, d := range spec.Disks {
		name := spec.Name
		if i > 0 {
			name = fmt.Sprintf("%s_%d", spec.Name, i)
		}
		vm.Disks = append(vm.Disks, vsphere.Disk{Key: int32(2000 + i), Label: fmt.Sprintf("Hard disk %d", i+1),
			CapacityBytes: d.CapacityBytes, Path: fmt.Sprintf("[%s] %s/%s.vmdk", spec.Datastore, spec.Name, name), Datastore: spec.Datastore})
	}
	f.VMs = append(f.VMs, vm)
	return vm, nil
}
func (f *fakeVC) ReadFile(context.Context, string) ([]byte, error) {
	return nil, vsphere.ErrUnsupported
}
func (f *fakeVC) WriteFile(context.Context, string, []byte) error { return vsphere.ErrUnsupported }
func (f *fakeVC) FileSize(context.Context, string) (int64, error) { return 0, vsphere.ErrUnsupported }
func (f *fakeVC) ReadAt(context.Context, string, []byte, int64) (int, error) {
	return 0, vsphere.ErrUnsupported
}
func (f *fakeVC) WriteAt(context.Context, string, []byte, int64) error { return vsphere.ErrUnsupported }
