package memfabric

import (
	"context"
	"maps"

	"github.com/v2a-dr/v2a/impl/compute"
)

// BeginCreateNIC implements compute.Fabric.
func (f *Fabric) BeginCreateNIC(ctx context.Context, spec compute.NICSpec) (compute.Pending, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	if e := f.throttled(OpCreateNIC, spec.Name); e != nil {
		return "", e
	}
	ref := compute.Ref{Kind: compute.KindNIC, Group: spec.Group, Name: spec.Name}
	if e := checkName("network interface", spec.Name); e != nil {
		return "", e
	}
	if e := f.needGroup(spec.Group); e != nil {
		return "", e
	}
	if f.nics[ref] != nil {
		return "", errExists(ref)
	}
	n, e := f.network(spec.Network)
	if e != nil {
		return "", e
	}
	if n.busy != nil {
		return "", errConflict("network %s is being deleted", n.ref)
	}
	s := n.subnet(spec.Subnet)
	if s == nil {
		return "", errInvalid("network %s has no subnet %q", n.ref, spec.Subnet)
	}
	ip, static := spec.IP, spec.IP.IsValid()
	if static {
		if !s.usable(ip) {
			return "", errInvalid("address %s is not usable in subnet %s (%s): outside it, or one Azure reserves", ip, s.name, s.prefix)
		}
		if holder, taken := s.used[ip]; taken {
			return "", &compute.Error{Status: 400, Code: compute.CodeIPInUse,
				Message: "address " + ip.String() + " in subnet " + s.name + " is in use by " + holder.String()}
		}
	} else {
		var ok bool
		if ip, ok = s.nextFree(); !ok {
			return "", &compute.Error{Status: 400, Code: "SubnetIsFull", Message: "subnet " + s.name + " of " + n.ref.String() + " has no free address"}
		}
	}
	fail, async := f.failure(OpCreateNIC, spec.Name)
	if fail != nil && !async {
		return "", fail
	}
	nc := &nic{NIC: compute.NIC{Ref: ref, Network: n.ref, Subnet: s.name, IP: ip, Static: static, Tags: cloneTags(spec.Tags)}}
	s.used[ip] = ref
	f.nics[ref] = nc
	o := f.start(OpCreateNIC, ref, f.latency(f.opts.Latency.CreateNIC), func(context.Context) *compute.Error {
		nc.busy = nil
		if fail != nil {
			f.dropNIC(nc)
		}
		return fail
	})
	nc.busy = o
	return o.token, nil
}

// dropNIC removes a NIC and frees its address.
func (f *Fabric) dropNIC(nc *nic) {
	if n := f.nets[nc.Network]; n != nil {
		if s := n.subnet(nc.Subnet); s != nil && s.used[nc.IP] == nc.Ref {
			delete(s.used, nc.IP)
		}
	}
	delete(f.nics, nc.Ref)
}

// cloneTags copies tags; no tags is nil, so that views compare equal
// whether a caller gave nil or an empty map.
func cloneTags(t map[string]string) map[string]string {
	if len(t) == 0 {
		return nil
	}
	return maps.Clone(t)
}

func (nc *nic) view() compute.NIC {
	v := nc.NIC
	v.Tags = cloneTags(nc.Tags)
	return v
}
