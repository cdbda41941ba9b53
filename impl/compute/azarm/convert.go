package azarm

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"

	"github.com/v2a-dr/v2a/impl/compute"
)

// providerPaths are the ARM resource types of the port's kinds.
var providerPaths = map[compute.Kind]string{
	compute.KindNetwork: "Microsoft.Network/virtualNetworks",
	compute.KindNIC:     "Microsoft.Network/networkInterfaces",
	compute.KindDisk:    "Microsoft.Compute/disks",
	compute.KindVM:      "Microsoft.Compute/virtualMachines",
}

// id is ref's ARM resource id.
func (f *Fabric) id(ref compute.Ref) string {
	return "/subscriptions/" + f.cfg.SubscriptionID + "/resourceGroups/" + ref.Group +
		"/providers/" + providerPaths[ref.Kind] + "/" + ref.Name
}

// subnetID is the ARM id of a network's subnet.
func (f *Fabric) subnetID(network compute.Ref, subnet string) string {
	return f.id(network) + "/subnets/" + subnet
}

// ref parses an ARM id of the given kind (or of a child of one, such as a
// subnet or an IP configuration, whose ancestor of that kind it returns).
// The group gets the scope's spelling when it is in scope. An id that is
// not of that kind gives the zero Ref.
func (f *Fabric) ref(kind compute.Kind, id *string) compute.Ref {
	if id == nil || *id == "" {
		return compute.Ref{}
	}
	rid, err := arm.ParseResourceID(*id)
	if err != nil {
		return compute.Ref{}
	}
	for ; rid != nil; rid = rid.Parent {
		if strings.EqualFold(rid.ResourceType.String(), providerPaths[kind]) {
			g := rid.ResourceGroupName
			if s, ok := f.scope[strings.ToLower(g)]; ok {
				g = s
			}
			return compute.Ref{Kind: kind, Group: g, Name: rid.Name}
		}
	}
	return compute.Ref{}
}

// subnetOf returns the network and subnet name of a subnet id.
func (f *Fabric) subnetOf(id *string) (compute.Ref, string) {
	if id == nil {
		return compute.Ref{}, ""
	}
	rid, err := arm.ParseResourceID(*id)
	if err != nil || len(rid.ResourceType.Types) == 0 || !strings.EqualFold(rid.ResourceType.Types[len(rid.ResourceType.Types)-1], "subnets") {
		return compute.Ref{}, ""
	}
	return f.ref(compute.KindNetwork, id), rid.Name
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func toTags(m map[string]string) map[string]*string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*string, len(m))
	for k, v := range m {
		out[k] = &v
	}
	return out
}

func fromTags(m map[string]*string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = str(v)
	}
	return out
}

// toNetwork converts a virtual network; nics are every NIC in scope, whose
// addresses make the subnets' IP tables.
func (f *Fabric) toNetwork(v armnetwork.VirtualNetwork, nics []compute.NIC) (compute.Network, error) {
	n := compute.Network{Ref: f.ref(compute.KindNetwork, v.ID)}
	if n.Ref == (compute.Ref{}) {
		return compute.Network{}, errors.New("azarm: network without a usable id: " + str(v.ID))
	}
	p := v.Properties
	if p == nil {
		return n, nil
	}
	if p.AddressSpace != nil && len(p.AddressSpace.AddressPrefixes) > 0 {
		n.AddressSpace = prefix(p.AddressSpace.AddressPrefixes[0])
	}
	for _, s := range p.Subnets {
		if s == nil {
			continue
		}
		sub := compute.Subnet{Name: str(s.Name)}
		if s.Properties != nil {
			sub.Prefix = prefix(s.Properties.AddressPrefix)
			if !sub.Prefix.IsValid() && len(s.Properties.AddressPrefixes) > 0 {
				sub.Prefix = prefix(s.Properties.AddressPrefixes[0])
			}
		}
		for _, nic := range nics {
			if nic.Network.Compare(n.Ref) == 0 && strings.EqualFold(nic.Subnet, sub.Name) && nic.IP.IsValid() {
				sub.Used = append(sub.Used, compute.IPUse{IP: nic.IP, NIC: nic.Ref})
			}
		}
		slices.SortFunc(sub.Used, func(a, b compute.IPUse) int { return a.IP.Compare(b.IP) })
		n.Subnets = append(n.Subnets, sub)
	}
	slices.SortFunc(n.Subnets, func(a, b compute.Subnet) int { return strings.Compare(a.Name, b.Name) })
	for _, pe := range p.VirtualNetworkPeerings {
		if pe == nil || pe.Properties == nil || pe.Properties.RemoteVirtualNetwork == nil {
			continue
		}
		// A peering made from one side only is "Initiated": the networks
		// do not reach each other until the other side exists.
		if st := pe.Properties.PeeringState; st != nil && *st != armnetwork.VirtualNetworkPeeringStateConnected {
			continue
		}
		if r := f.ref(compute.KindNetwork, pe.Properties.RemoteVirtualNetwork.ID); r != (compute.Ref{}) {
			n.Peers = append(n.Peers, r)
		}
	}
	slices.SortFunc(n.Peers, compute.Ref.Compare)
	n.Peers = slices.Compact(n.Peers)
	return n, nil
}

// toNIC converts a network interface; its primary IP configuration gives
// the subnet and address.
func (f *Fabric) toNIC(i armnetwork.Interface) compute.NIC {
	n := compute.NIC{Ref: f.ref(compute.KindNIC, i.ID), Tags: fromTags(i.Tags)}
	p := i.Properties
	if p == nil {
		return n
	}
	if p.VirtualMachine != nil {
		n.VM = f.ref(compute.KindVM, p.VirtualMachine.ID)
	}
	var ipc *armnetwork.InterfaceIPConfiguration
	for _, c := range p.IPConfigurations {
		if c != nil && c.Properties != nil && (ipc == nil || (c.Properties.Primary != nil && *c.Properties.Primary)) {
			ipc = c
		}
	}
	if ipc == nil {
		return n
	}
	cp := ipc.Properties
	if cp.Subnet != nil {
		n.Network, n.Subnet = f.subnetOf(cp.Subnet.ID)
	}
	if a, err := netip.ParseAddr(str(cp.PrivateIPAddress)); err == nil {
		n.IP = a
	}
	n.Static = cp.PrivateIPAllocationMethod != nil && *cp.PrivateIPAllocationMethod == armnetwork.IPAllocationMethodStatic
	return n
}

const gib = 1 << 30

// toDisk converts a managed disk.
func (f *Fabric) toDisk(d armcompute.Disk) compute.Disk {
	out := compute.Disk{Ref: f.ref(compute.KindDisk, d.ID), VM: f.ref(compute.KindVM, d.ManagedBy), Tags: fromTags(d.Tags)}
	if p := d.Properties; p != nil {
		switch {
		case p.DiskSizeBytes != nil:
			out.SizeBytes = *p.DiskSizeBytes
		case p.DiskSizeGB != nil:
			out.SizeBytes = int64(*p.DiskSizeGB) * gib
		}
		if p.OSType != nil {
			out.OSType = compute.OSType(*p.OSType)
		}
	}
	return out
}

// toVM converts a VM read with its instance view.
func (f *Fabric) toVM(v armcompute.VirtualMachine) compute.VM {
	out := compute.VM{Ref: f.ref(compute.KindVM, v.ID), Tags: fromTags(v.Tags)}
	p := v.Properties
	if p == nil {
		return out
	}
	out.Provisioning = str(p.ProvisioningState)
	if p.HardwareProfile != nil && p.HardwareProfile.VMSize != nil {
		out.Size = string(*p.HardwareProfile.VMSize)
	}
	if sp := p.StorageProfile; sp != nil {
		if od := sp.OSDisk; od != nil {
			if od.OSType != nil {
				out.OSType = compute.OSType(*od.OSType)
			}
			if od.ManagedDisk != nil {
				out.OSDisk = f.ref(compute.KindDisk, od.ManagedDisk.ID)
			}
		}
		dds := slices.Clone(sp.DataDisks)
		dds = slices.DeleteFunc(dds, func(d *armcompute.DataDisk) bool { return d == nil || d.ManagedDisk == nil })
		slices.SortStableFunc(dds, func(a, b *armcompute.DataDisk) int { return int(lun(a)) - int(lun(b)) })
		for _, d := range dds {
			out.DataDisks = append(out.DataDisks, f.ref(compute.KindDisk, d.ManagedDisk.ID))
		}
	}
	if np := p.NetworkProfile; np != nil {
		for _, ni := range np.NetworkInterfaces {
			if ni != nil {
				out.NICs = append(out.NICs, f.ref(compute.KindNIC, ni.ID))
			}
		}
	}
	if iv := p.InstanceView; iv != nil {
		for _, s := range iv.Statuses {
			if s != nil && strings.HasPrefix(str(s.Code), "PowerState/") {
				out.Power = compute.PowerState(strings.TrimPrefix(str(s.Code), "PowerState/"))
			}
		}
		out.Guest = guest(iv.VMAgent)
	}
	return out
}

func lun(d *armcompute.DataDisk) int32 {
	if d.Lun == nil {
		return 0
	}
	return *d.Lun
}

// guest reads the VM agent's status: Ready when it reports "Ready", else
// the message of its last status (or that it reported nothing).
func guest(a *armcompute.VirtualMachineAgentInstanceView) compute.GuestStatus {
	if a == nil || len(a.Statuses) == 0 {
		return compute.GuestStatus{Message: "no VM agent status"}
	}
	var last *armcompute.InstanceViewStatus
	for _, s := range a.Statuses {
		if s == nil {
			continue
		}
		if strings.EqualFold(str(s.DisplayStatus), "Ready") {
			return compute.GuestStatus{Ready: true, Message: str(s.Message)}
		}
		last = s
	}
	if last == nil {
		return compute.GuestStatus{Message: "no VM agent status"}
	}
	msg := str(last.Message)
	if msg == "" {
		msg = str(last.DisplayStatus)
	}
	return compute.GuestStatus{Message: msg}
}

// asError turns an *azcore.ResponseError into a *compute.Error with Azure's
// code and message; other errors are returned as they are.
func asError(err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	e := &compute.Error{Status: re.StatusCode, Code: re.ErrorCode}
	if r := re.RawResponse; r != nil {
		if body, rerr := runtime.Payload(r); rerr == nil {
			var b struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(body, &b) == nil {
				e.Message = b.Error.Message
				if e.Code == "" {
					e.Code = b.Error.Code
				}
			}
		}
		if e.Status == http.StatusTooManyRequests {
			e.RetryAfter = retryAfter(r)
		}
	}
	if e.Code == "" {
		e.Code = http.StatusText(e.Status)
	}
	if e.Message == "" {
		e.Message = e.Code
	}
	return e
}
