package armfake

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"
	networkfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources"
	resourcesfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/fake"
)

func key(group, name string) string { return strings.ToLower(group + "/" + name) }

// clone deep-copies an SDK model through its JSON form (which carries the
// read-only fields too), so that a responder never shares memory with the
// state the handlers change under s.mu.
func clone[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic("armfake: clone: " + err.Error())
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic("armfake: clone: " + err.Error())
	}
	return out
}

func (s *Server) groupID(rg string) string {
	return "/subscriptions/" + s.opt.SubscriptionID + "/resourceGroups/" + rg
}

func (s *Server) resID(rg, typ, name string) string {
	return s.groupID(rg) + "/providers/" + typ + "/" + name
}

// needGroup refuses a request in a group that does not exist, as ARM does.
func (s *Server) needGroup(rg string) *Failure {
	if s.groups[strings.ToLower(rg)] == nil {
		return fail(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", rg)
	}
	return nil
}

// parseID splits an ARM id into its group and the names along its path.
func parseID(id *string) (*arm.ResourceID, bool) {
	if id == nil {
		return nil, false
	}
	r, err := arm.ParseResourceID(*id)
	return r, err == nil
}

func (s *Server) groupsServer() resourcesfake.ResourceGroupsServer {
	return resourcesfake.ResourceGroupsServer{
		CreateOrUpdate: func(_ context.Context, rg string, p armresources.ResourceGroup, _ *armresources.ResourceGroupsClientCreateOrUpdateOptions) (resp azfake.Responder[armresources.ResourceGroupsClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if p.Location == nil || *p.Location == "" {
				errResp.SetError(fail(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition."))
				return
			}
			status := http.StatusOK
			g := s.groups[strings.ToLower(rg)]
			if g == nil {
				status = http.StatusCreated
				g = &armresources.ResourceGroup{ID: to.Ptr(s.groupID(rg)), Name: to.Ptr(rg), Location: p.Location,
					Type:       to.Ptr("Microsoft.Resources/resourceGroups"),
					Properties: &armresources.ResourceGroupProperties{ProvisioningState: to.Ptr("Succeeded")}}
				s.groups[strings.ToLower(rg)] = g
			}
			g.Tags = p.Tags
			resp.SetResponse(status, armresources.ResourceGroupsClientCreateOrUpdateResponse{ResourceGroup: clone(*g)}, nil)
			return
		},
		NewListPager: func(_ *armresources.ResourceGroupsClientListOptions) (resp azfake.PagerResponder[armresources.ResourceGroupsClientListResponse]) {
			s.mu.Lock()
			defer s.mu.Unlock()
			var page armresources.ResourceGroupsClientListResponse
			for _, k := range sortedKeys(s.groups, "") {
				page.Value = append(page.Value, to.Ptr(clone(*s.groups[k])))
			}
			resp.AddPage(http.StatusOK, page, nil)
			return
		},
		Get: func(_ context.Context, rg string, _ *armresources.ResourceGroupsClientGetOptions) (resp azfake.Responder[armresources.ResourceGroupsClientGetResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				errResp.SetError(f)
				return
			}
			resp.SetResponse(http.StatusOK, armresources.ResourceGroupsClientGetResponse{ResourceGroup: clone(*s.groups[strings.ToLower(rg)])}, nil)
			return
		},
	}
}

// subnetRef is a subnet found from its id.
type subnetRef struct {
	vnetKey string
	vnet    *armnetwork.VirtualNetwork
	subnet  *armnetwork.Subnet
	prefix  netip.Prefix
}

func (s *Server) findSubnet(id *string) (subnetRef, *Failure) {
	r, ok := parseID(id)
	if !ok || r.Parent == nil || !strings.EqualFold(r.ResourceType.String(), "Microsoft.Network/virtualNetworks/subnets") {
		return subnetRef{}, fail(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by the request is not a subnet.", deref(id))
	}
	k := key(r.ResourceGroupName, r.Parent.Name)
	v := s.vnets[k]
	if v == nil {
		return subnetRef{}, fail(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by the request was not found.", deref(id))
	}
	for _, sn := range v.Properties.Subnets {
		if strings.EqualFold(*sn.Name, r.Name) {
			p, _ := netip.ParsePrefix(deref(sn.Properties.AddressPrefix))
			return subnetRef{vnetKey: k, vnet: v, subnet: sn, prefix: p}, nil
		}
	}
	return subnetRef{}, fail(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by the request was not found.", deref(id))
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// nicsIn lists the NICs in a subnet (or in any subnet of a network, when
// subnet is ""), with their addresses.
func (s *Server) nicsIn(vnetID, subnet string) map[netip.Addr]*armnetwork.Interface {
	out := map[netip.Addr]*armnetwork.Interface{}
	for _, n := range s.nics {
		for _, c := range n.Properties.IPConfigurations {
			sid := deref(c.Properties.Subnet.ID)
			if subnet == "" && !strings.HasPrefix(strings.ToLower(sid), strings.ToLower(vnetID)+"/subnets/") {
				continue
			}
			if subnet != "" && !strings.EqualFold(sid, vnetID+"/subnets/"+subnet) {
				continue
			}
			a, _ := netip.ParseAddr(deref(c.Properties.PrivateIPAddress))
			out[a] = n
		}
	}
	return out
}

func (s *Server) vnetsServer() networkfake.VirtualNetworksServer {
	const api = "VirtualNetworksClient."
	return networkfake.VirtualNetworksServer{
		BeginCreateOrUpdate: func(ctx context.Context, rg, name string, p armnetwork.VirtualNetwork, _ *armnetwork.VirtualNetworksClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armnetwork.VirtualNetworksClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				errResp.SetError(f)
				return
			}
			v, f := s.checkVnet(rg, name, p)
			if f != nil {
				errResp.SetError(f)
				return
			}
			k := key(rg, name)
			if old := s.vnets[k]; old != nil {
				for _, sn := range old.Properties.Subnets {
					if !slices.ContainsFunc(v.Properties.Subnets, func(n *armnetwork.Subnet) bool { return strings.EqualFold(*n.Name, *sn.Name) }) &&
						len(s.nicsIn(*old.ID, *sn.Name)) > 0 {
						errResp.SetError(fail(http.StatusBadRequest, "InUseSubnetCannotBeDeleted", "Subnet %s is in use and cannot be deleted.", *sn.Name))
						return
					}
				}
				v.Properties.VirtualNetworkPeerings = old.Properties.VirtualNetworkPeerings
			}
			v.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateUpdating)
			s.vnets[k] = v
			final := clone(*v)
			final.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
			resp = lro(s, ctx, api+"BeginCreateOrUpdate", http.StatusCreated, http.StatusOK,
				armnetwork.VirtualNetworksClientCreateOrUpdateResponse{VirtualNetwork: final}, func(inj *Failure) *Failure {
					v.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
					if inj != nil {
						v.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateFailed)
					}
					return inj
				})
			return
		},
		Get: func(_ context.Context, rg, name string, _ *armnetwork.VirtualNetworksClientGetOptions) (resp azfake.Responder[armnetwork.VirtualNetworksClientGetResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v := s.vnets[key(rg, name)]
			if v == nil {
				errResp.SetError(notFound("Microsoft.Network/virtualNetworks", rg, name))
				return
			}
			resp.SetResponse(http.StatusOK, armnetwork.VirtualNetworksClientGetResponse{VirtualNetwork: s.vnetView(v)}, nil)
			return
		},
		NewListPager: func(rg string, _ *armnetwork.VirtualNetworksClientListOptions) (resp azfake.PagerResponder[armnetwork.VirtualNetworksClientListResponse]) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				resp.AddError(f)
				return
			}
			var page armnetwork.VirtualNetworksClientListResponse
			for _, k := range sortedKeys(s.vnets, rg) {
				page.Value = append(page.Value, to.Ptr(s.vnetView(s.vnets[k])))
			}
			resp.AddPage(http.StatusOK, page, nil)
			return
		},
		BeginDelete: func(ctx context.Context, rg, name string, _ *armnetwork.VirtualNetworksClientBeginDeleteOptions) (resp azfake.PollerResponder[armnetwork.VirtualNetworksClientDeleteResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			k := key(rg, name)
			v := s.vnets[k]
			if v == nil {
				resp.SetTerminalResponse(http.StatusNoContent, armnetwork.VirtualNetworksClientDeleteResponse{}, nil)
				return
			}
			if in := s.nicsIn(*v.ID, ""); len(in) > 0 {
				errResp.SetError(fail(http.StatusBadRequest, "InUseSubnetCannotBeDeleted",
					"Subnets of virtual network %s are in use by %d network interface(s) and cannot be deleted.", name, len(in)))
				return
			}
			v.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateDeleting)
			resp = lro(s, ctx, api+"BeginDelete", http.StatusAccepted, http.StatusOK, armnetwork.VirtualNetworksClientDeleteResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					v.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateFailed)
					return inj
				}
				if s.vnets[k] == v {
					delete(s.vnets, k)
				}
				// The other side's peerings to it are disconnected.
				for _, o := range s.vnets {
					for _, pe := range o.Properties.VirtualNetworkPeerings {
						if strings.EqualFold(deref(pe.Properties.RemoteVirtualNetwork.ID), *v.ID) {
							pe.Properties.PeeringState = to.Ptr(armnetwork.VirtualNetworkPeeringStateDisconnected)
						}
					}
				}
				return nil
			})
			return
		},
	}
}

// checkVnet validates a network as Azure does and returns it with ids.
func (s *Server) checkVnet(rg, name string, p armnetwork.VirtualNetwork) (*armnetwork.VirtualNetwork, *Failure) {
	if p.Location == nil || *p.Location == "" {
		return nil, fail(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	if p.Properties == nil || p.Properties.AddressSpace == nil || len(p.Properties.AddressSpace.AddressPrefixes) == 0 {
		return nil, fail(http.StatusBadRequest, "InvalidAddressSpace", "Virtual network %s has no address space.", name)
	}
	var spaces []netip.Prefix
	for _, a := range p.Properties.AddressSpace.AddressPrefixes {
		pf, err := netip.ParsePrefix(deref(a))
		if err != nil || pf.Masked() != pf {
			return nil, fail(http.StatusBadRequest, "InvalidAddressPrefixFormat", "Address prefix %s of virtual network %s is not valid.", deref(a), name)
		}
		spaces = append(spaces, pf)
	}
	id := s.resID(rg, "Microsoft.Network/virtualNetworks", name)
	v := &armnetwork.VirtualNetwork{ID: to.Ptr(id), Name: to.Ptr(name), Location: p.Location, Tags: p.Tags,
		Type: to.Ptr("Microsoft.Network/virtualNetworks"),
		Properties: &armnetwork.VirtualNetworkPropertiesFormat{
			AddressSpace: &armnetwork.AddressSpace{AddressPrefixes: p.Properties.AddressSpace.AddressPrefixes},
		}}
	var seen []netip.Prefix
	for _, sn := range p.Properties.Subnets {
		if sn == nil || sn.Name == nil || sn.Properties == nil {
			return nil, fail(http.StatusBadRequest, "InvalidRequestFormat", "A subnet of virtual network %s has no name or properties.", name)
		}
		pf, err := netip.ParsePrefix(deref(sn.Properties.AddressPrefix))
		if err != nil || pf.Masked() != pf {
			return nil, fail(http.StatusBadRequest, "InvalidAddressPrefixFormat", "Subnet %s has an invalid address prefix %q.", *sn.Name, deref(sn.Properties.AddressPrefix))
		}
		if !slices.ContainsFunc(spaces, func(sp netip.Prefix) bool { return sp.Bits() <= pf.Bits() && sp.Contains(pf.Addr()) }) {
			return nil, fail(http.StatusBadRequest, "NetcfgSubnetRangeOutsideVnet",
				"Subnet '%s' is not valid because its IP address range is outside the IP address range of virtual network '%s'.", *sn.Name, name)
		}
		for _, o := range seen {
			if o.Overlaps(pf) {
				return nil, fail(http.StatusBadRequest, "NetcfgSubnetRangesOverlap", "Subnet '%s' overlaps with another subnet of '%s'.", *sn.Name, name)
			}
		}
		seen = append(seen, pf)
		v.Properties.Subnets = append(v.Properties.Subnets, &armnetwork.Subnet{
			ID: to.Ptr(id + "/subnets/" + *sn.Name), Name: sn.Name,
			Properties: &armnetwork.SubnetPropertiesFormat{AddressPrefix: to.Ptr(pf.String()),
				ProvisioningState: to.Ptr(armnetwork.ProvisioningStateSucceeded)},
		})
	}
	return v, nil
}

// vnetView is a network as a GET returns it: its subnets list the IP
// configurations of the NICs in them.
func (s *Server) vnetView(v *armnetwork.VirtualNetwork) armnetwork.VirtualNetwork {
	out := clone(*v)
	for _, sn := range out.Properties.Subnets {
		used := s.nicsIn(*v.ID, *sn.Name)
		addrs := make([]netip.Addr, 0, len(used))
		for a := range used {
			addrs = append(addrs, a)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		for _, a := range addrs {
			sn.Properties.IPConfigurations = append(sn.Properties.IPConfigurations, &armnetwork.IPConfiguration{
				ID: used[a].Properties.IPConfigurations[0].ID})
		}
	}
	return out
}

func notFound(typ, rg, name string) *Failure {
	return fail(http.StatusNotFound, "ResourceNotFound", "The Resource '%s/%s' under resource group '%s' was not found.", typ, name, rg)
}

// sortedKeys lists the keys of m in group rg (every key when rg is ""),
// sorted.
func sortedKeys[V any](m map[string]V, rg string) []string {
	var out []string
	for k := range m {
		if rg == "" || strings.HasPrefix(k, strings.ToLower(rg)+"/") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) peeringsServer() networkfake.VirtualNetworkPeeringsServer {
	return networkfake.VirtualNetworkPeeringsServer{
		BeginCreateOrUpdate: func(ctx context.Context, rg, vnet, name string, p armnetwork.VirtualNetworkPeering, _ *armnetwork.VirtualNetworkPeeringsClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armnetwork.VirtualNetworkPeeringsClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			local := s.vnets[key(rg, vnet)]
			if local == nil {
				errResp.SetError(notFound("Microsoft.Network/virtualNetworks", rg, vnet))
				return
			}
			if p.Properties == nil || p.Properties.RemoteVirtualNetwork == nil {
				errResp.SetError(fail(http.StatusBadRequest, "InvalidRequestFormat", "Peering %s has no remote virtual network.", name))
				return
			}
			r, ok := parseID(p.Properties.RemoteVirtualNetwork.ID)
			var remote *armnetwork.VirtualNetwork
			if ok {
				remote = s.vnets[key(r.ResourceGroupName, r.Name)]
			}
			if remote == nil {
				errResp.SetError(fail(http.StatusBadRequest, "InvalidResourceReference", "Remote virtual network %s was not found.", deref(p.Properties.RemoteVirtualNetwork.ID)))
				return
			}
			if remote == local {
				errResp.SetError(fail(http.StatusBadRequest, "CannotPeerVirtualNetworkWithItself", "Virtual network %s cannot be peered with itself.", vnet))
				return
			}
			for _, a := range local.Properties.AddressSpace.AddressPrefixes {
				for _, b := range remote.Properties.AddressSpace.AddressPrefixes {
					pa, _ := netip.ParsePrefix(*a)
					pb, _ := netip.ParsePrefix(*b)
					if pa.Overlaps(pb) {
						errResp.SetError(fail(http.StatusBadRequest, "VnetAddressSpacesOverlap",
							"Cannot create or update peering %s: address space %s of %s overlaps %s of the remote network.", name, pa, vnet, pb))
						return
					}
				}
			}
			pe := &armnetwork.VirtualNetworkPeering{ID: to.Ptr(*local.ID + "/virtualNetworkPeerings/" + name), Name: to.Ptr(name),
				Properties: &armnetwork.VirtualNetworkPeeringPropertiesFormat{
					RemoteVirtualNetwork:      &armnetwork.SubResource{ID: remote.ID},
					AllowVirtualNetworkAccess: p.Properties.AllowVirtualNetworkAccess,
					PeeringState:              to.Ptr(armnetwork.VirtualNetworkPeeringStateInitiated),
					ProvisioningState:         to.Ptr(armnetwork.ProvisioningStateUpdating),
				}}
			final := clone(*pe)
			final.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
			resp = lro(s, ctx, "VirtualNetworkPeeringsClient.BeginCreateOrUpdate", http.StatusCreated, http.StatusOK,
				armnetwork.VirtualNetworkPeeringsClientCreateOrUpdateResponse{VirtualNetworkPeering: final}, func(inj *Failure) *Failure {
					if inj != nil {
						return inj
					}
					local.Properties.VirtualNetworkPeerings = slices.DeleteFunc(local.Properties.VirtualNetworkPeerings,
						func(o *armnetwork.VirtualNetworkPeering) bool { return strings.EqualFold(*o.Name, name) })
					pe.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
					local.Properties.VirtualNetworkPeerings = append(local.Properties.VirtualNetworkPeerings, pe)
					for _, back := range remote.Properties.VirtualNetworkPeerings {
						if strings.EqualFold(deref(back.Properties.RemoteVirtualNetwork.ID), *local.ID) {
							back.Properties.PeeringState = to.Ptr(armnetwork.VirtualNetworkPeeringStateConnected)
							pe.Properties.PeeringState = to.Ptr(armnetwork.VirtualNetworkPeeringStateConnected)
						}
					}
					return nil
				})
			return
		},
	}
}

// reserved reports whether Azure keeps a for itself: a subnet's first four
// addresses and its last.
func reserved(p netip.Prefix, a netip.Addr) bool {
	first := p.Masked().Addr()
	x := first
	for range 4 {
		if a == x {
			return true
		}
		x = x.Next()
	}
	return a == last(p)
}

func last(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1<<host - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (s *Server) nicsServer() networkfake.InterfacesServer {
	const api = "InterfacesClient."
	return networkfake.InterfacesServer{
		BeginCreateOrUpdate: func(ctx context.Context, rg, name string, p armnetwork.Interface, _ *armnetwork.InterfacesClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armnetwork.InterfacesClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				errResp.SetError(f)
				return
			}
			n, f := s.checkNIC(rg, name, p)
			if f != nil {
				errResp.SetError(f)
				return
			}
			k := key(rg, name)
			n.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateUpdating)
			s.nics[k] = n
			final := clone(*n)
			final.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
			resp = lro(s, ctx, api+"BeginCreateOrUpdate", http.StatusCreated, http.StatusOK,
				armnetwork.InterfacesClientCreateOrUpdateResponse{Interface: final}, func(inj *Failure) *Failure {
					n.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateSucceeded)
					if inj != nil {
						n.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateFailed)
					}
					return inj
				})
			return
		},
		Get: func(_ context.Context, rg, name string, _ *armnetwork.InterfacesClientGetOptions) (resp azfake.Responder[armnetwork.InterfacesClientGetResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			n := s.nics[key(rg, name)]
			if n == nil {
				errResp.SetError(notFound("Microsoft.Network/networkInterfaces", rg, name))
				return
			}
			resp.SetResponse(http.StatusOK, armnetwork.InterfacesClientGetResponse{Interface: clone(*n)}, nil)
			return
		},
		NewListPager: func(rg string, _ *armnetwork.InterfacesClientListOptions) (resp azfake.PagerResponder[armnetwork.InterfacesClientListResponse]) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				resp.AddError(f)
				return
			}
			var page armnetwork.InterfacesClientListResponse
			for _, k := range sortedKeys(s.nics, rg) {
				page.Value = append(page.Value, to.Ptr(clone(*s.nics[k])))
			}
			resp.AddPage(http.StatusOK, page, nil)
			return
		},
		BeginDelete: func(ctx context.Context, rg, name string, _ *armnetwork.InterfacesClientBeginDeleteOptions) (resp azfake.PollerResponder[armnetwork.InterfacesClientDeleteResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			k := key(rg, name)
			n := s.nics[k]
			if n == nil {
				resp.SetTerminalResponse(http.StatusNoContent, armnetwork.InterfacesClientDeleteResponse{}, nil)
				return
			}
			if n.Properties.VirtualMachine != nil {
				errResp.SetError(fail(http.StatusBadRequest, "NicInUse",
					"Network Interface %s is used by existing resource %s. In order to delete the network interface, it must be dissociated from the resource.",
					*n.ID, deref(n.Properties.VirtualMachine.ID)))
				return
			}
			n.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateDeleting)
			resp = lro(s, ctx, api+"BeginDelete", http.StatusAccepted, http.StatusOK, armnetwork.InterfacesClientDeleteResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					n.Properties.ProvisioningState = to.Ptr(armnetwork.ProvisioningStateFailed)
					return inj
				}
				if s.nics[k] == n {
					delete(s.nics, k) // its address is free from now on
				}
				return nil
			})
			return
		},
	}
}

// checkNIC validates a NIC and gives it its address: a static one must be
// in the subnet, not reserved and free; a dynamic one is the lowest free.
func (s *Server) checkNIC(rg, name string, p armnetwork.Interface) (*armnetwork.Interface, *Failure) {
	if p.Location == nil || *p.Location == "" {
		return nil, fail(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	if p.Properties == nil || len(p.Properties.IPConfigurations) != 1 || p.Properties.IPConfigurations[0].Properties == nil {
		// Azure allows several; the fake keeps to the one azarm makes.
		return nil, fail(http.StatusBadRequest, "InvalidRequestFormat", "Network interface %s must have exactly one IP configuration (the fake's limit).", name)
	}
	c := p.Properties.IPConfigurations[0]
	cp := c.Properties
	if cp.Subnet == nil {
		return nil, fail(http.StatusBadRequest, "InvalidRequestFormat", "IP configuration of %s has no subnet.", name)
	}
	sn, f := s.findSubnet(cp.Subnet.ID)
	if f != nil {
		return nil, f
	}
	id := s.resID(rg, "Microsoft.Network/networkInterfaces", name)
	used := s.nicsIn(*sn.vnet.ID, *sn.subnet.Name)
	for a, n := range used {
		if strings.EqualFold(*n.ID, id) {
			delete(used, a) // an update keeps or changes its own address
		}
	}
	method := armnetwork.IPAllocationMethodDynamic
	if cp.PrivateIPAllocationMethod != nil {
		method = *cp.PrivateIPAllocationMethod
	}
	var addr netip.Addr
	switch method {
	case armnetwork.IPAllocationMethodStatic:
		a, err := netip.ParseAddr(deref(cp.PrivateIPAddress))
		switch {
		case err != nil:
			return nil, fail(http.StatusBadRequest, "InvalidRequestFormat", "Private IP address %q of %s is not valid.", deref(cp.PrivateIPAddress), name)
		case !sn.prefix.Contains(a):
			return nil, fail(http.StatusBadRequest, "PrivateIPAddressNotInSubnet",
				"Private static IP address %s does not belong to the range of subnet prefix %s.", a, sn.prefix)
		case reserved(sn.prefix, a):
			// The code is the fake's: Azure answers 400 for a reserved address.
			return nil, fail(http.StatusBadRequest, "PrivateIPAddressIsReserved", "Private IP address %s is reserved by Azure in subnet %s.", a, sn.prefix)
		case used[a] != nil:
			return nil, fail(http.StatusBadRequest, "PrivateIPAddressInUse",
				"IP configuration %s is using the private IP address %s which is already allocated to resource %s.",
				id+"/ipConfigurations/"+deref(c.Name), a, *used[a].ID)
		}
		addr = a
	default:
		for a := sn.prefix.Masked().Addr(); sn.prefix.Contains(a); a = a.Next() {
			if !reserved(sn.prefix, a) && used[a] == nil {
				addr = a
				break
			}
		}
		if !addr.IsValid() {
			return nil, fail(http.StatusBadRequest, "SubnetIsFull", "Subnet %s with address prefix %s does not have enough capacity for 1 IP address.", *sn.subnet.Name, sn.prefix)
		}
	}
	ipName := deref(c.Name)
	if ipName == "" {
		ipName = "ipconfig1"
	}
	n := &armnetwork.Interface{ID: to.Ptr(id), Name: to.Ptr(name), Location: p.Location, Tags: p.Tags,
		Type: to.Ptr("Microsoft.Network/networkInterfaces"),
		Properties: &armnetwork.InterfacePropertiesFormat{
			IPConfigurations: []*armnetwork.InterfaceIPConfiguration{{
				ID: to.Ptr(id + "/ipConfigurations/" + ipName), Name: to.Ptr(ipName),
				Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{
					Subnet:                    &armnetwork.Subnet{ID: sn.subnet.ID},
					Primary:                   to.Ptr(true),
					PrivateIPAddress:          to.Ptr(addr.String()),
					PrivateIPAllocationMethod: to.Ptr(method),
					PrivateIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
				},
			}},
		}}
	if old := s.nics[key(rg, name)]; old != nil {
		n.Properties.VirtualMachine = old.Properties.VirtualMachine
	}
	return n, nil
}
