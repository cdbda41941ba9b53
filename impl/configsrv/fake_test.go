package configsrv

import (
	"context"
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

func (f *fakeVC) PowerOn(context.Context, vsphere.VMRef) error  { return vsphere.ErrUnsupported }
func (f *fakeVC) PowerOff(context.Context, vsphere.VMRef) error { return vsphere.ErrUnsupported }
func (f *fakeVC) CreateVM(context.Context, vsphere.VMSpec) (vsphere.VM, error) {
	return vsphere.VM{}, vsphere.ErrUnsupported
}
func (f *fakeVC) ReadFile(context.Context, string) ([]byte, error) {
	return nil, vsphere.ErrUnsupported
}
func (f *fakeVC) WriteFile(context.Context, string, []byte) error { return vsphere.ErrUnsupported }
