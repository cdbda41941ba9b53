package memfabric

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/v2a-dr/v2a/impl/compute"
)

// Azure's smallest IPv4 subnet is a /29: 8 addresses, of which it keeps
// the first four and the last for itself.
const (
	maxSubnetBits = 29
	reservedLow   = 4
)

// CreateNetwork implements compute.Fabric.
func (f *Fabric) CreateNetwork(ctx context.Context, spec compute.NetworkSpec) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.mu.Unlock()
	ref := compute.Ref{Kind: compute.KindNetwork, Group: spec.Group, Name: spec.Name}
	if e := checkName("network", spec.Name); e != nil {
		return e
	}
	if e := f.needGroup(spec.Group); e != nil {
		return e
	}
	if f.nets[ref] != nil {
		return errExists(ref)
	}
	sp := spec.AddressSpace
	if !sp.IsValid() || !sp.Addr().Is4() || sp.Masked() != sp {
		return errInvalid("network %s: address space %s is not an IPv4 prefix in canonical form", ref, sp)
	}
	n := &network{ref: ref, space: sp, peers: map[compute.Ref]bool{}}
	for _, s := range spec.Subnets {
		if e := checkName("subnet", s.Name); e != nil {
			return e
		}
		p := s.Prefix
		switch {
		case !p.IsValid() || !p.Addr().Is4() || p.Masked() != p:
			return errInvalid("subnet %s: prefix %s is not an IPv4 prefix in canonical form", s.Name, p)
		case p.Bits() > maxSubnetBits:
			return errInvalid("subnet %s: prefix %s is smaller than a /%d", s.Name, p, maxSubnetBits)
		case p.Bits() < sp.Bits() || !sp.Contains(p.Addr()):
			return errInvalid("subnet %s: prefix %s is outside the address space %s", s.Name, p, sp)
		}
		for _, o := range n.subnets {
			if o.name == s.Name {
				return errInvalid("network %s: two subnets named %s", ref, s.Name)
			}
			if o.prefix.Overlaps(p) {
				return errInvalid("network %s: subnets %s (%s) and %s (%s) overlap", ref, o.name, o.prefix, s.Name, p)
			}
		}
		n.subnets = append(n.subnets, &subnet{name: s.Name, prefix: p, used: map[netip.Addr]compute.Ref{}})
	}
	slices.SortFunc(n.subnets, func(a, b *subnet) int { return strings.Compare(a.name, b.name) })
	f.nets[ref] = n
	return nil
}

// Peer implements compute.Fabric. Peering a network with itself, or two
// networks whose address spaces overlap, is ErrInvalid (Azure refuses
// both); peering two networks again is not an error.
func (f *Fabric) Peer(ctx context.Context, a, b compute.Ref) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.mu.Unlock()
	na, e := f.network(a)
	if e != nil {
		return e
	}
	nb, e := f.network(b)
	if e != nil {
		return e
	}
	switch {
	case a == b:
		return errInvalid("cannot peer network %s with itself", a)
	case na.space.Overlaps(nb.space):
		return errInvalid("cannot peer %s (%s) and %s (%s): address spaces overlap", a, na.space, b, nb.space)
	}
	na.peers[b] = true
	nb.peers[a] = true
	return nil
}

// network looks a network up (the caller holds the lock).
func (f *Fabric) network(ref compute.Ref) (*network, *compute.Error) {
	if ref.Kind != compute.KindNetwork {
		return nil, errInvalid("%s is not a network", ref)
	}
	n := f.nets[ref]
	if n == nil {
		return nil, errNotFound(ref.String())
	}
	return n, nil
}

// Network implements compute.Fabric.
func (f *Fabric) Network(ctx context.Context, ref compute.Ref) (compute.Network, error) {
	if err := f.enter(ctx); err != nil {
		return compute.Network{}, err
	}
	defer f.mu.Unlock()
	n, e := f.network(ref)
	if e != nil {
		return compute.Network{}, e
	}
	return n.view(), nil
}

// view is the network as the port shows it, sorted, sharing nothing.
func (n *network) view() compute.Network {
	out := compute.Network{Ref: n.ref, AddressSpace: n.space, Peers: sortedRefs(n.peers)}
	for _, s := range n.subnets {
		sv := compute.Subnet{Name: s.name, Prefix: s.prefix}
		for _, ip := range slices.SortedFunc(maps.Keys(s.used), netip.Addr.Compare) {
			sv.Used = append(sv.Used, compute.IPUse{IP: ip, NIC: s.used[ip]})
		}
		out.Subnets = append(out.Subnets, sv)
	}
	return out
}

// subnet finds a subnet by name.
func (n *network) subnet(name string) *subnet {
	for _, s := range n.subnets {
		if s.name == name {
			return s
		}
	}
	return nil
}

// usable reports whether ip may be given to a NIC: inside the subnet and
// not one of the addresses Azure keeps.
func (s *subnet) usable(ip netip.Addr) bool {
	if !s.prefix.Contains(ip) {
		return false
	}
	first := s.prefix.Addr()
	for i := 0; i < reservedLow; i++ {
		if ip == first {
			return false
		}
		first = first.Next()
	}
	return ip != s.last()
}

// last is the subnet's broadcast address.
func (s *subnet) last() netip.Addr {
	a := s.prefix.Addr().As4()
	host := uint32(1)<<(32-s.prefix.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// nextFree is the lowest usable address not in use, or false when the
// subnet is full.
func (s *subnet) nextFree() (netip.Addr, bool) {
	last := s.last()
	ip := s.prefix.Addr()
	for i := 0; i < reservedLow; i++ {
		ip = ip.Next()
	}
	for ; ip.Less(last); ip = ip.Next() {
		if _, taken := s.used[ip]; !taken {
			return ip, true
		}
	}
	return netip.Addr{}, false
}
