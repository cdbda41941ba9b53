package fabric

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/v2a-dr/v2a/impl/compute"
)

// Format writes an inventory as text, one resource a line (a subnet's IP
// table indented under its network), in the inventory's order and with
// tags sorted by key: the same fabric state always gives the same text, so
// that a scenario can print it and a leftovers check can diff two of them
// line by line.
func Format(inv compute.Inventory) string {
	var b strings.Builder
	for _, g := range inv.Groups {
		fmt.Fprintf(&b, "group %s\n", g)
	}
	for _, n := range inv.Networks {
		fmt.Fprintf(&b, "network %s/%s %s", n.Ref.Group, n.Ref.Name, n.AddressSpace)
		if len(n.Peers) > 0 {
			var ps []string
			for _, p := range n.Peers {
				ps = append(ps, p.Group+"/"+p.Name)
			}
			fmt.Fprintf(&b, " peers=%s", strings.Join(ps, ","))
		}
		b.WriteByte('\n')
		for _, s := range n.Subnets {
			fmt.Fprintf(&b, "  subnet %s %s used=%d", s.Name, s.Prefix, len(s.Used))
			for _, u := range s.Used {
				fmt.Fprintf(&b, " %s:%s", u.IP, u.NIC.Name)
			}
			b.WriteByte('\n')
		}
	}
	for _, n := range inv.NICs {
		static := "dynamic"
		if n.Static {
			static = "static"
		}
		fmt.Fprintf(&b, "nic %s/%s %s/%s %s %s%s%s\n", n.Ref.Group, n.Ref.Name, n.Network.Name, n.Subnet, n.IP, static, attached(n.VM), tags(n.Tags))
	}
	for _, d := range inv.Disks {
		os := string(d.OSType)
		if os == "" {
			os = "data"
		}
		fmt.Fprintf(&b, "disk %s/%s %dB %s%s%s\n", d.Ref.Group, d.Ref.Name, d.SizeBytes, os, attached(d.VM), tags(d.Tags))
	}
	for _, v := range inv.VMs {
		guest := "guest=ready"
		if !v.Guest.Ready {
			guest = fmt.Sprintf("guest=%q", v.Guest.Message)
		}
		var nics, disks []string
		for _, n := range v.NICs {
			nics = append(nics, n.Name)
		}
		for _, d := range append([]compute.Ref{v.OSDisk}, v.DataDisks...) {
			disks = append(disks, d.Name)
		}
		fmt.Fprintf(&b, "vm %s/%s %s %s %s/%s %s nics=%s disks=%s%s\n", v.Ref.Group, v.Ref.Name, v.Size, v.OSType,
			v.Provisioning, v.Power, guest, strings.Join(nics, ","), strings.Join(disks, ","), tags(v.Tags))
	}
	return b.String()
}

func attached(vm compute.Ref) string {
	if vm == (compute.Ref{}) {
		return ""
	}
	return " vm=" + vm.Name
}

func tags(t map[string]string) string {
	if len(t) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(t)) {
		fmt.Fprintf(&b, " %s=%s", k, t[k])
	}
	return b.String()
}
