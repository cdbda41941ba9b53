package memfabric

import (
	"context"
	"io"
	"slices"

	"github.com/v2a-dr/v2a/impl/compute"
)

// Provisioning states.
const (
	provCreating  = "Creating"
	provSucceeded = "Succeeded"
	provFailed    = "Failed"
	provDeleting  = "Deleting"
)

// BeginCreateVM implements compute.Fabric. The NICs and disks are attached
// when Begin returns. A VM needs at least one NIC and an OS disk; a NIC or
// disk named twice is ErrInvalid; one still being created or deleted is
// ErrConflict. The operation takes Latency.CreateVM, plus Latency.Hydrate
// for a VM tagged compute.TagHydrate "true"; when it is done the VM boots
// (Booter) and runs, healthy or not.
func (f *Fabric) BeginCreateVM(ctx context.Context, spec compute.VMSpec) (compute.Pending, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	if e := f.throttled(OpCreateVM, spec.Name); e != nil {
		return "", e
	}
	ref := compute.Ref{Kind: compute.KindVM, Group: spec.Group, Name: spec.Name}
	if e := checkName("virtual machine", spec.Name); e != nil {
		return "", e
	}
	if e := f.needGroup(spec.Group); e != nil {
		return "", e
	}
	if f.vms[ref] != nil {
		return "", errExists(ref)
	}
	switch spec.OSType {
	case compute.Linux, compute.Windows:
	default:
		return "", errInvalid("virtual machine %s: OS type %q is neither Linux nor Windows", ref, spec.OSType)
	}
	if len(spec.NICs) == 0 {
		return "", errInvalid("virtual machine %s has no network interface", ref)
	}
	seen := map[compute.Ref]bool{}
	var nics []*nic
	for _, r := range spec.NICs {
		if r.Kind != compute.KindNIC {
			return "", errInvalid("virtual machine %s: %s is not a network interface", ref, r)
		}
		nc := f.nics[r]
		switch {
		case nc == nil:
			return "", errNotFound(r.String())
		case seen[r]:
			return "", errInvalid("virtual machine %s: %s named twice", ref, r)
		case nc.VM != compute.Ref{}:
			return "", errConflict("network interface %s is attached to %s", r, nc.VM)
		case nc.busy != nil:
			return "", errConflict("network interface %s is being %s", r, busyWord(nc.busy))
		}
		seen[r] = true
		nics = append(nics, nc)
	}
	var disks []*disk
	for i, r := range append([]compute.Ref{spec.OSDisk}, spec.DataDisks...) {
		if i == 0 && r == (compute.Ref{}) {
			return "", errInvalid("virtual machine %s has no OS disk", ref)
		}
		d, e := f.disk(r)
		switch {
		case e != nil:
			return "", e
		case seen[r]:
			return "", errInvalid("virtual machine %s: %s named twice", ref, r)
		case d.VM != compute.Ref{}:
			return "", errConflict("disk %s is attached to %s", r, d.VM)
		case d.busy != nil:
			return "", errConflict("disk %s is being %s", r, busyWord(d.busy))
		}
		seen[r] = true
		disks = append(disks, d)
	}
	hydrate := spec.Tags[compute.TagHydrate] == "true"
	var fail *compute.Error
	if fe, async := f.failure(OpCreateVM, spec.Name); fe != nil {
		if !async {
			return "", fe
		}
		fail = fe
	}
	if fail == nil && hydrate {
		fail, _ = f.failure(OpHydrate, spec.Name)
	}
	v := &vm{VM: compute.VM{
		Ref: ref, Size: spec.Size, OSType: spec.OSType,
		NICs: slices.Clone(spec.NICs), OSDisk: spec.OSDisk, DataDisks: slices.Clone(spec.DataDisks),
		Tags: cloneTags(spec.Tags), Provisioning: provCreating, Power: compute.Starting,
	}}
	if len(v.DataDisks) == 0 {
		v.DataDisks = nil
	}
	for _, nc := range nics {
		nc.VM = ref
	}
	for _, d := range disks {
		d.VM = ref
	}
	f.vms[ref] = v
	d := f.latency(f.opts.Latency.CreateVM)
	if hydrate {
		d += f.latency(f.opts.Latency.Hydrate)
	}
	o := f.start(OpCreateVM, ref, d, func(ctx context.Context) *compute.Error {
		v.busy = nil
		if fail != nil {
			v.Provisioning, v.Power = provFailed, compute.Stopped
			v.Guest = compute.GuestStatus{Message: fail.Message}
			return fail
		}
		v.Provisioning = provSucceeded
		f.boot(ctx, v)
		return nil
	})
	v.busy = o
	return o.token, nil
}

// busyWord says what an operation in progress does to its resource.
func busyWord(o *op) string {
	switch o.kind {
	case OpDelete:
		return "deleted"
	case OpStart:
		return "started"
	case OpDeallocate:
		return "deallocated"
	}
	return "created"
}

// boot runs the guest: the VM is running, its guest healthy unless the
// Booter says otherwise.
func (f *Fabric) boot(ctx context.Context, v *vm) {
	v.Power = compute.Running
	v.Guest = compute.GuestStatus{Ready: true}
	if f.opts.Booter == nil {
		return
	}
	var imgs []io.ReaderAt
	for _, r := range append([]compute.Ref{v.OSDisk}, v.DataDisks...) {
		imgs = append(imgs, f.disks[r].img)
	}
	if err := f.opts.Booter(ctx, v.view(), imgs); err != nil {
		v.Guest = compute.GuestStatus{Message: err.Error()}
	}
}

// vm looks a VM up.
func (f *Fabric) vm(ref compute.Ref) (*vm, *compute.Error) {
	if ref.Kind != compute.KindVM {
		return nil, errInvalid("%s is not a virtual machine", ref)
	}
	v := f.vms[ref]
	if v == nil {
		return nil, errNotFound(ref.String())
	}
	return v, nil
}

// power starts a start or deallocate of a VM.
func (f *Fabric) power(ctx context.Context, ref compute.Ref, kind string) (compute.Pending, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	if e := f.throttled(kind, ref.Name); e != nil {
		return "", e
	}
	v, e := f.vm(ref)
	if e != nil {
		return "", e
	}
	if v.busy != nil {
		return "", errConflict("virtual machine %s is being %s", ref, busyWord(v.busy))
	}
	if v.Provisioning == provFailed {
		return "", errConflict("virtual machine %s failed to provision: delete it", ref)
	}
	fail, async := f.failure(kind, ref.Name)
	if fail != nil && !async {
		return "", fail
	}
	before := v.Power
	var d = f.latency(f.opts.Latency.Start)
	if kind == OpStart {
		v.Power = compute.Starting
	} else {
		d = f.latency(f.opts.Latency.Deallocate)
		v.Power = compute.Stopping
	}
	o := f.start(kind, ref, d, func(ctx context.Context) *compute.Error {
		v.busy = nil
		switch {
		case fail != nil:
			v.Power = before
			return fail
		case kind == OpDeallocate:
			v.Power = compute.Deallocated
		case before == compute.Running:
			v.Power = compute.Running // already running: nothing boots
		default:
			f.boot(ctx, v)
		}
		return nil
	})
	v.busy = o
	return o.token, nil
}

// BeginStart implements compute.Fabric. Starting a running VM succeeds and
// changes nothing; a stopped or deallocated one boots again (Booter).
func (f *Fabric) BeginStart(ctx context.Context, ref compute.Ref) (compute.Pending, error) {
	return f.power(ctx, ref, OpStart)
}

// BeginDeallocate implements compute.Fabric. Deallocating a deallocated VM
// succeeds and changes nothing.
func (f *Fabric) BeginDeallocate(ctx context.Context, ref compute.Ref) (compute.Pending, error) {
	return f.power(ctx, ref, OpDeallocate)
}

// VM implements compute.Fabric.
func (f *Fabric) VM(ctx context.Context, ref compute.Ref) (compute.VM, error) {
	if err := f.enter(ctx); err != nil {
		return compute.VM{}, err
	}
	defer f.mu.Unlock()
	v, e := f.vm(ref)
	if e != nil {
		return compute.VM{}, e
	}
	return v.view(), nil
}

func (v *vm) view() compute.VM {
	out := v.VM
	out.NICs = slices.Clone(v.NICs)
	out.DataDisks = slices.Clone(v.DataDisks)
	out.Tags = cloneTags(v.Tags)
	return out
}
