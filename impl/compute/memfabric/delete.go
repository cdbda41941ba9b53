package memfabric

import (
	"context"
	"slices"

	"github.com/v2a-dr/v2a/impl/compute"
)

// BeginDelete implements compute.Fabric. Deleting a resource that does not
// exist succeeds at once, as ARM answers 204 No Content (so cleanup can be
// repeated); in a resource group that does not exist it is ErrNotFound. A
// resource with an operation in progress is ErrConflict. A VM's NICs and
// disks are detached, and a NIC's address freed, when the deletion is done.
func (f *Fabric) BeginDelete(ctx context.Context, ref compute.Ref) (compute.Pending, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	if e := f.throttled(OpDelete, ref.Name); e != nil {
		return "", e
	}
	if e := f.needGroup(ref.Group); e != nil {
		return "", e
	}
	var busy **op
	var finish func()
	switch ref.Kind {
	case compute.KindVM:
		v := f.vms[ref]
		if v == nil {
			break
		}
		busy = &v.busy
		finish = func() {
			for _, r := range v.NICs {
				if nc := f.nics[r]; nc != nil {
					nc.VM = compute.Ref{}
				}
			}
			for _, r := range append([]compute.Ref{v.OSDisk}, v.DataDisks...) {
				if d := f.disks[r]; d != nil {
					d.VM = compute.Ref{}
				}
			}
			delete(f.vms, ref)
		}
	case compute.KindNIC:
		nc := f.nics[ref]
		if nc == nil {
			break
		}
		if nc.VM != (compute.Ref{}) {
			return "", errConflict("network interface %s is attached to %s: delete the VM first", ref, nc.VM)
		}
		busy = &nc.busy
		finish = func() { f.dropNIC(nc) }
	case compute.KindDisk:
		d := f.disks[ref]
		if d == nil {
			break
		}
		if d.VM != (compute.Ref{}) {
			return "", errConflict("disk %s is attached to %s: delete the VM first", ref, d.VM)
		}
		busy = &d.busy
		finish = func() { delete(f.disks, ref) }
	case compute.KindNetwork:
		n := f.nets[ref]
		if n == nil {
			break
		}
		for _, s := range n.subnets {
			if len(s.used) > 0 {
				return "", errConflict("network %s: subnet %s still has %d network interfaces", ref, s.name, len(s.used))
			}
		}
		busy = &n.busy
		finish = func() {
			for _, p := range sortedRefs(n.peers) {
				if pn := f.nets[p]; pn != nil {
					delete(pn.peers, ref)
				}
			}
			delete(f.nets, ref)
		}
	default:
		return "", errInvalid("cannot delete %s: unknown kind", ref)
	}
	if busy == nil { // not there: done at once
		o := f.start(OpDelete, ref, 0, func(context.Context) *compute.Error { return nil })
		return o.token, nil
	}
	if *busy != nil {
		return "", errConflict("%s is being %s", ref, busyWord(*busy))
	}
	fail, async := f.failure(OpDelete, ref.Name)
	if fail != nil && !async {
		return "", fail
	}
	v := f.vms[ref]
	var prov string
	if v != nil {
		prov = v.Provisioning
		v.Provisioning = provDeleting
	}
	o := f.start(OpDelete, ref, f.latency(f.opts.Latency.Delete), func(context.Context) *compute.Error {
		*busy = nil
		if fail != nil {
			if v != nil {
				v.Provisioning = prov
			}
			return fail
		}
		finish()
		return nil
	})
	*busy = o
	return o.token, nil
}

// Inventory implements compute.Fabric.
func (f *Fabric) Inventory(ctx context.Context) (compute.Inventory, error) {
	if err := f.enter(ctx); err != nil {
		return compute.Inventory{}, err
	}
	defer f.mu.Unlock()
	var inv compute.Inventory
	for g := range f.groups {
		inv.Groups = append(inv.Groups, g)
	}
	slices.Sort(inv.Groups)
	for _, n := range f.nets {
		inv.Networks = append(inv.Networks, n.view())
	}
	slices.SortFunc(inv.Networks, func(a, b compute.Network) int { return a.Ref.Compare(b.Ref) })
	for _, nc := range f.nics {
		inv.NICs = append(inv.NICs, nc.view())
	}
	slices.SortFunc(inv.NICs, func(a, b compute.NIC) int { return a.Ref.Compare(b.Ref) })
	for _, d := range f.disks {
		inv.Disks = append(inv.Disks, d.view())
	}
	slices.SortFunc(inv.Disks, func(a, b compute.Disk) int { return a.Ref.Compare(b.Ref) })
	for _, v := range f.vms {
		inv.VMs = append(inv.VMs, v.view())
	}
	slices.SortFunc(inv.VMs, func(a, b compute.VM) int { return a.Ref.Compare(b.Ref) })
	return inv, nil
}
