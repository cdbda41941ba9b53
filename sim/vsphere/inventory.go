package vsphere

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"

	"github.com/vmware/govmomi/vim25/types"
	"sigs.k8s.io/yaml"

	"github.com/v2a-dr/v2a/sim/strictyaml"
)

// ErrInvalidInventory is wrapped by every error Load, Parse and Validate
// return for a fixture that is malformed or inconsistent.
var ErrInvalidInventory = errors.New("vsphere: invalid inventory")

// Inventory is an on-premises vSphere estate as a fixture describes it
// (fixtures/inventory/*.yaml): one datacenter, its clusters of hosts, its
// datastores and networks, and the machines to protect, VMs and physical
// servers alike. Order is significant: Build creates objects in fixture
// order, which is what makes their managed object references repeatable.
type Inventory struct {
	Datacenter string      `json:"datacenter"`
	Clusters   []Cluster   `json:"clusters"`
	Datastores []Datastore `json:"datastores"`
	Networks   []Network   `json:"networks,omitempty"`
	VMs        []VM        `json:"vms"`
	// GuestAccount is the guest OS account of every VM, the one guest
	// operations (push install) log in with; absent: DefaultGuestAccount.
	GuestAccount *GuestAccount `json:"guestAccount,omitempty"`

	// File is where the inventory was loaded from; it prefixes errors.
	File string `json:"-"`
}

// GuestAccount is a guest OS login.
type GuestAccount struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// DefaultGuestAccount is the guest login of an inventory that names none:
// a lab's throwaway account, never a real one.
var DefaultGuestAccount = GuestAccount{Username: "root", Password: "v2a"}

// Guest returns the inventory's guest account, or DefaultGuestAccount.
func (inv *Inventory) Guest() GuestAccount {
	if inv.GuestAccount == nil {
		return DefaultGuestAccount
	}
	return *inv.GuestAccount
}

// Cluster is a vSphere cluster and its ESXi hosts.
type Cluster struct {
	Name  string `json:"name"`
	Hosts []Host `json:"hosts"`
}

// Host is an ESXi host. Host names are unique across the inventory.
type Host struct {
	Name string `json:"name"`
}

// Datastore is a datastore mounted on every host. In the simulator it is a
// directory on the local file system.
type Datastore struct {
	Name string `json:"name"`
}

// Network is a standard port group present on every host. "VM Network"
// exists in every datacenter without being listed.
type Network struct {
	Name string `json:"name"`
}

// VM is a machine to protect: a vSphere VM, or with Physical set a physical
// server that runs the Mobility service the same way but that vCenter does
// not know (Build skips it; Host, Cluster, Datastore and Network must then
// be empty).
type VM struct {
	Name       string `json:"name"`
	GuestID    string `json:"guestId"` // vSphere guest OS identifier, e.g. "ubuntu64Guest"
	CPUs       int    `json:"cpus"`
	MemoryMB   int    `json:"memoryMB"`
	IP         string `json:"ip,omitempty"`
	PowerState string `json:"powerState,omitempty"` // "poweredOn" (default) or "poweredOff"
	Cluster    string `json:"cluster,omitempty"`    // optional; must hold Host when given
	Host       string `json:"host,omitempty"`
	Datastore  string `json:"datastore,omitempty"`
	Network    string `json:"network,omitempty"` // optional; the VM then has no NIC
	Disks      []Disk `json:"disks"`
	Physical   bool   `json:"physical,omitempty"`
}

// Disk is a virtual disk (or, for a physical server, a local disk).
type Disk struct {
	CapacityMiB int64  `json:"capacityMiB"`
	Datastore   string `json:"datastore,omitempty"` // "" for the VM's datastore
}

// CapacityBytes is the disk's size in bytes.
func (d Disk) CapacityBytes() int64 { return d.CapacityMiB << 20 }

// Power states a fixture may give.
const (
	PoweredOn  = "poweredOn"
	PoweredOff = "poweredOff"
)

// On reports whether the VM is to be powered on.
func (vm VM) On() bool { return vm.PowerState == "" || vm.PowerState == PoweredOn }

// ClusterOf returns the name of the cluster holding host, or "".
func (inv *Inventory) ClusterOf(host string) string {
	for _, c := range inv.Clusters {
		for _, h := range c.Hosts {
			if h.Name == host {
				return c.Name
			}
		}
	}
	return ""
}

// Load reads and validates the inventory fixture at path. Unknown fields
// are errors; every error names the file and wraps ErrInvalidInventory
// (or is the file's read error).
func Load(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("vsphere: load inventory: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates an inventory; file names it in errors.
func Parse(file string, data []byte) (*Inventory, error) {
	var inv Inventory
	// sigs.k8s.io/yaml reports YAML syntax errors with their line; unknown
	// and duplicate fields are refused by its strict mode.
	if err := yaml.UnmarshalStrict(data, &inv); err != nil {
		if where, _ := strictyaml.UnknownField(data, reflect.TypeFor[Inventory]()); where != "" {
			return nil, fmt.Errorf("%s: %s: %w: unknown field", file, where, ErrInvalidInventory)
		}
		return nil, fmt.Errorf("%s: %w: %v", file, ErrInvalidInventory, err)
	}
	inv.File = file
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

// Validate checks the inventory is complete and consistent. It reports
// every problem, each as "file: field: problem", joined.
func (inv *Inventory) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w: %s", inv.File, field, ErrInvalidInventory, fmt.Sprintf(format, args...)))
	}
	// unique records that the object at field (whose name is field.name)
	// has name, and complains about a second one.
	unique := func(seen map[string]string, kind, name, field string) {
		if prev, ok := seen[name]; ok {
			bad(field+".name", "duplicate %s %q (first at %s)", kind, name, prev)
			return
		}
		seen[name] = field
	}

	if inv.Datacenter == "" {
		bad("datacenter", "missing name")
	}
	if a := inv.GuestAccount; a != nil {
		if a.Username == "" {
			bad("guestAccount.username", "missing user name")
		}
		if a.Password == "" {
			bad("guestAccount.password", "missing password")
		}
	}
	if len(inv.Clusters) == 0 {
		bad("clusters", "at least one cluster is needed")
	}
	clusters, hosts := map[string]string{}, map[string]string{}
	for i, c := range inv.Clusters {
		f := fmt.Sprintf("clusters[%d]", i)
		if c.Name == "" {
			bad(f+".name", "missing name")
		} else {
			unique(clusters, "cluster", c.Name, f)
		}
		if len(c.Hosts) == 0 {
			bad(f+".hosts", "a cluster needs at least one host")
		}
		for j, h := range c.Hosts {
			hf := fmt.Sprintf("%s.hosts[%d]", f, j)
			if h.Name == "" {
				bad(hf+".name", "missing name")
				continue
			}
			unique(hosts, "host", h.Name, hf)
		}
	}
	if len(inv.Datastores) == 0 {
		bad("datastores", "at least one datastore is needed")
	}
	datastores := map[string]string{}
	for i, d := range inv.Datastores {
		f := fmt.Sprintf("datastores[%d]", i)
		if d.Name == "" {
			bad(f+".name", "missing name")
			continue
		}
		if !validFileName(d.Name) {
			bad(f+".name", "%q cannot name a directory", d.Name)
		}
		unique(datastores, "datastore", d.Name, f)
	}
	networks := map[string]string{"VM Network": "(built in)"}
	for i, n := range inv.Networks {
		f := fmt.Sprintf("networks[%d]", i)
		if n.Name == "" {
			bad(f+".name", "missing name")
			continue
		}
		if n.Name == "VM Network" {
			continue // listing the built-in network is harmless
		}
		unique(networks, "network", n.Name, f)
	}

	vms := map[string]string{}
	for i, vm := range inv.VMs {
		f := fmt.Sprintf("vms[%d]", i)
		if vm.Name == "" {
			bad(f+".name", "missing name")
		} else {
			f = fmt.Sprintf("vms[%d] (%s)", i, vm.Name)
			if !validFileName(vm.Name) {
				bad(f+".name", "%q cannot name a directory", vm.Name)
			}
			unique(vms, "vm", vm.Name, f)
		}
		if vm.GuestID == "" {
			bad(f+".guestId", "missing guest OS identifier")
		} else if !slices.Contains(types.VirtualMachineGuestOsIdentifier("").Values(), types.VirtualMachineGuestOsIdentifier(vm.GuestID)) {
			bad(f+".guestId", "unknown guest OS identifier %q", vm.GuestID)
		}
		if vm.CPUs <= 0 {
			bad(f+".cpus", "must be > 0, got %d", vm.CPUs)
		}
		if vm.MemoryMB <= 0 {
			bad(f+".memoryMB", "must be > 0, got %d", vm.MemoryMB)
		}
		if vm.IP != "" {
			if _, err := netip.ParseAddr(vm.IP); err != nil {
				bad(f+".ip", "%q is not an IP address", vm.IP)
			}
		}
		switch vm.PowerState {
		case "", PoweredOn, PoweredOff:
		default:
			bad(f+".powerState", "%q is neither %s nor %s", vm.PowerState, PoweredOn, PoweredOff)
		}
		if len(vm.Disks) == 0 {
			bad(f+".disks", "at least one disk is needed")
		}
		for j, d := range vm.Disks {
			df := fmt.Sprintf("%s.disks[%d]", f, j)
			if d.CapacityMiB <= 0 {
				bad(df+".capacityMiB", "must be > 0, got %d", d.CapacityMiB)
			}
			if vm.Physical && d.Datastore != "" {
				bad(df+".datastore", "a physical server's disk is on no datastore")
			} else if d.Datastore != "" && datastores[d.Datastore] == "" {
				bad(df+".datastore", "unknown datastore %q", d.Datastore)
			}
		}
		if vm.Physical {
			for _, p := range []struct{ field, v string }{{"cluster", vm.Cluster}, {"host", vm.Host}, {"datastore", vm.Datastore}, {"network", vm.Network}} {
				if p.v != "" {
					bad(f+"."+p.field, "a physical server has no %s", p.field)
				}
			}
			continue
		}
		switch {
		case vm.Host == "":
			bad(f+".host", "missing host")
		case hosts[vm.Host] == "":
			bad(f+".host", "unknown host %q", vm.Host)
		case vm.Cluster != "" && inv.ClusterOf(vm.Host) != vm.Cluster:
			bad(f+".cluster", "host %q is not in cluster %q", vm.Host, vm.Cluster)
		}
		if vm.Cluster != "" && clusters[vm.Cluster] == "" {
			bad(f+".cluster", "unknown cluster %q", vm.Cluster)
		}
		switch {
		case vm.Datastore == "":
			bad(f+".datastore", "missing datastore")
		case datastores[vm.Datastore] == "":
			bad(f+".datastore", "unknown datastore %q", vm.Datastore)
		}
		if vm.Network != "" && networks[vm.Network] == "" {
			bad(f+".network", "unknown network %q", vm.Network)
		}
	}
	return errors.Join(errs...)
}

// validFileName reports whether name can be a single path element: the
// simulator makes directories of datastore and VM names.
func validFileName(name string) bool {
	if name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r == 0 || r == '[' || r == ']' {
			return false
		}
	}
	return true
}
