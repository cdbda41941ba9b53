// Package compute is v2a's port to Azure compute and networking: what
// failover needs to turn recovery points into running VMs. It covers
// resource groups, virtual networks with their subnets and private-IP
// tables, network interfaces (static or next-free private IP), managed
// disks imported from a page blob, VMs made from those disks, their power
// operations and instance view, and the inventory that a leftovers check
// compares before and after a test failover.
//
// Two adapters implement Fabric: impl/compute/memfabric, an in-memory
// fabric (latency model, injectable failures, a boot hook) that sim/fabric
// sets up as the simulated world's Azure, in virtual time, booting each VM
// by its guest workload's own recovery; and impl/compute/azarm, the real
// adapter on armcompute/v8 and armnetwork/v9, tested against the SDKs'
// fake servers. impl/compute/computetest is the conformance suite both
// pass; where they disagree, Azure's behaviour is the reference.
//
// Long-running operations follow ARM's shape: a Begin call checks the
// request, reserves what it names (so a second NIC cannot take the same
// IP) and returns a Pending token at once; Poll says whether the operation
// is done and how it ended. Callers poll from a timer (Result.After is the
// suggested wait), never in a loop. A token is a plain string so that an
// orchestrator that restarts can keep polling it.
//
// Every method is synchronous, may do network I/O, and is safe for
// concurrent use: component code calls it only from a runtime.Op.
package compute

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Fabric is an Azure subscription as failover sees it, scoped to the
// resource groups it was given (the adapter's configuration says which).
type Fabric interface {
	// CreateGroup creates a resource group; an existing one is not an
	// error.
	CreateGroup(ctx context.Context, name string) error

	// CreateNetwork creates a virtual network with its subnets and waits
	// until it exists. A name taken in the group gives ErrExists; a subnet
	// prefix outside the address space, or two overlapping subnets,
	// ErrInvalid.
	CreateNetwork(ctx context.Context, spec NetworkSpec) error
	// Peer connects two networks both ways, so that each reaches the
	// other. Networks are isolated unless peered.
	Peer(ctx context.Context, a, b Ref) error
	// Network returns a network with its subnets and IP tables.
	Network(ctx context.Context, ref Ref) (Network, error)

	// BeginCreateNIC creates a network interface in spec's subnet. With
	// spec.IP set the address is static and must be in the subnet
	// (ErrInvalid) and free (ErrIPInUse); unset, the NIC takes the lowest
	// free address (Azure reserves a subnet's first four and its last).
	// The address is reserved when Begin returns.
	BeginCreateNIC(ctx context.Context, spec NICSpec) (Pending, error)
	// BeginCreateDisk creates a managed disk by importing a page blob of
	// the storage account the fabric is attached to. The import reads the
	// blob as it is when Begin is called; changing or deleting the blob
	// afterwards does not change the disk.
	BeginCreateDisk(ctx context.Context, spec DiskSpec) (Pending, error)
	// BeginCreateVM creates a VM from existing NICs and disks and starts
	// it; the operation is done when the VM has booted (its power state is
	// running) or failed to. A NIC or disk already attached to another VM
	// gives ErrConflict.
	BeginCreateVM(ctx context.Context, spec VMSpec) (Pending, error)
	// BeginStart starts a stopped or deallocated VM (booting it again).
	BeginStart(ctx context.Context, vm Ref) (Pending, error)
	// BeginDeallocate stops a VM and releases its compute.
	BeginDeallocate(ctx context.Context, vm Ref) (Pending, error)
	// BeginDelete deletes a VM, NIC, disk or network. Deleting a NIC or
	// disk attached to a VM, or a network with NICs in it, gives
	// ErrConflict: delete the VM first, then its NICs and disks. A NIC's
	// address is free again when the deletion is done. Deleting a resource
	// that does not exist succeeds, as ARM answers 204 No Content, so that
	// a cleanup can be run again.
	BeginDelete(ctx context.Context, ref Ref) (Pending, error)
	// Poll reports how a pending operation stands. A token the fabric does
	// not know gives ErrNotFound. An operation that failed reports its
	// *Error in Result.Err; Poll's own error means the poll itself failed
	// (retry it).
	Poll(ctx context.Context, p Pending) (Result, error)

	// VM returns a VM with its instance view.
	VM(ctx context.Context, ref Ref) (VM, error)
	// ReadDisk reads n bytes of a managed disk at off (the real adapter
	// grants read access and reads the export).
	ReadDisk(ctx context.Context, disk Ref, off, n int64) ([]byte, error)
	// Inventory lists every resource in the fabric's scope, each list
	// sorted by Ref. Two inventories of the same fabric state compare
	// equal with cmp.Diff.
	Inventory(ctx context.Context) (Inventory, error)
}

// Kind is a resource type.
type Kind string

// The resource types of the port.
const (
	KindNetwork Kind = "network"
	KindNIC     Kind = "nic"
	KindDisk    Kind = "disk"
	KindVM      Kind = "vm"
)

// Ref names one resource: its type, resource group and name.
type Ref struct {
	Kind  Kind
	Group string
	Name  string
}

// String is "kind/group/name".
func (r Ref) String() string { return fmt.Sprintf("%s/%s/%s", r.Kind, r.Group, r.Name) }

// Compare orders refs by kind, group, then name.
func (r Ref) Compare(o Ref) int {
	switch {
	case r.Kind != o.Kind:
		return strings.Compare(string(r.Kind), string(o.Kind))
	case r.Group != o.Group:
		return strings.Compare(r.Group, o.Group)
	default:
		return strings.Compare(r.Name, o.Name)
	}
}

// NetworkSpec is a virtual network to create.
type NetworkSpec struct {
	Group        string
	Name         string
	AddressSpace netip.Prefix
	Subnets      []SubnetSpec
}

// SubnetSpec is one subnet of a network.
type SubnetSpec struct {
	Name   string
	Prefix netip.Prefix
}

// Network is a virtual network as it stands.
type Network struct {
	Ref          Ref
	AddressSpace netip.Prefix
	Subnets      []Subnet // sorted by Name
	Peers        []Ref    // peered networks, sorted
}

// Subnet is one subnet with its IP table.
type Subnet struct {
	Name   string
	Prefix netip.Prefix
	// Used are the addresses taken by NICs, sorted by address.
	Used []IPUse
}

// IPUse is one taken address and the NIC that holds it.
type IPUse struct {
	IP  netip.Addr
	NIC Ref
}

// NICSpec is a network interface to create.
type NICSpec struct {
	Group   string
	Name    string
	Network Ref
	Subnet  string
	// IP is a static address, or the zero Addr for the next free one.
	IP   netip.Addr
	Tags map[string]string
}

// NIC is a network interface as it stands.
type NIC struct {
	Ref     Ref
	Network Ref
	Subnet  string
	IP      netip.Addr
	Static  bool
	VM      Ref // the VM it is attached to; zero when none
	Tags    map[string]string
}

// OSType is a disk's or VM's operating system family.
type OSType string

// The OS types.
const (
	Linux   OSType = "Linux"
	Windows OSType = "Windows"
)

// DiskSpec is a managed disk to import from a page blob.
type DiskSpec struct {
	Group string
	Name  string
	// SourceContainer and SourceBlob name the page blob to import (in the
	// storage account the fabric is attached to).
	SourceContainer string
	SourceBlob      string
	SizeBytes       int64
	OSType          OSType // "" for a data disk
	Tags            map[string]string
}

// Disk is a managed disk as it stands.
type Disk struct {
	Ref       Ref
	SizeBytes int64
	OSType    OSType
	VM        Ref // the VM it is attached to; zero when none
	Tags      map[string]string
}

// VMSpec is a VM to create from existing NICs and disks.
type VMSpec struct {
	Group string
	Name  string
	Size  string // e.g. "Standard_D2s_v3"
	// NICs are attached in order; the first is the primary.
	NICs      []Ref
	OSDisk    Ref
	DataDisks []Ref
	OSType    OSType
	// Tags are the VM's Azure tags. v2a records the source machine and
	// recovery point in them (see the Tag* constants).
	Tags map[string]string
}

// Tags that v2a sets on what failover creates.
const (
	TagSource = "v2a-source" // the protected machine's name
	TagPoint  = "v2a-point"  // the recovery point's id
	TagJob    = "v2a-job"    // the failover job that made the resource
	// TagHydrate "true" marks a source that needs hydration at first boot
	// (Linux and physical sources, per Azure Site Recovery).
	TagHydrate = "v2a-hydrate"
)

// PowerState is a VM's power state, with Azure's spelling (the part after
// "PowerState/").
type PowerState string

// The power states a VM reports.
const (
	Starting    PowerState = "starting"
	Running     PowerState = "running"
	Stopping    PowerState = "stopping"
	Stopped     PowerState = "stopped"
	Deallocated PowerState = "deallocated"
)

// VM is a VM with its instance view.
type VM struct {
	Ref       Ref
	Size      string
	OSType    OSType
	NICs      []Ref
	OSDisk    Ref
	DataDisks []Ref
	Tags      map[string]string
	// Provisioning is Azure's provisioning state: "Creating",
	// "Succeeded", "Failed", "Deleting".
	Provisioning string
	Power        PowerState
	// Guest is what the guest reported at its last boot.
	Guest GuestStatus
}

// GuestStatus is the guest's health after boot: Ready when the guest came
// up and its application recovered, else Message says why not.
type GuestStatus struct {
	Ready   bool
	Message string
}

// Inventory is everything in the fabric's scope.
type Inventory struct {
	Groups   []string
	Networks []Network
	NICs     []NIC
	Disks    []Disk
	VMs      []VM
}

// Pending is an operation in progress, as returned by a Begin call.
type Pending string

// Result is how an operation stands.
type Result struct {
	Done bool
	// Err is the operation's failure (a *Error) once Done; nil for
	// success.
	Err error
	// After is how long to wait before polling again while not Done.
	After time.Duration
}

// Errors returned by Fabric implementations. An *Error matches one of
// these with errors.Is, by its HTTP status and code.
var (
	ErrNotFound  = errors.New("compute: not found")
	ErrExists    = errors.New("compute: already exists")
	ErrConflict  = errors.New("compute: conflict")
	ErrInvalid   = errors.New("compute: invalid request")
	ErrIPInUse   = errors.New("compute: private IP address in use")
	ErrThrottled = errors.New("compute: throttled")
	ErrFailed    = errors.New("compute: operation failed")
)

// Error is a failure as Azure reports it: the HTTP status, Azure's error
// code and message, and for a 429 how long to wait before retrying.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

// Azure error codes the port gives meaning to.
const (
	CodeNotFound        = "ResourceNotFound"
	CodeExists          = "ResourceExists"
	CodeConflict        = "Conflict"
	CodeInvalid         = "InvalidParameter"
	CodeIPInUse         = "PrivateIPAddressInUse"
	CodeThrottled       = "TooManyRequests"
	CodeQuota           = "OperationNotAllowed" // VM create refused: quota, size family or policy
	CodeNICFailed       = "NetworkInterfaceFailed"
	CodeProvisionFailed = "ProvisioningFailed"
	CodeBootFailed      = "VMBootFailed" // the guest did not come up (hydration, drivers, a corrupt disk)
	// Azure reports these conflicts as 400, not 409: a NIC attached to a
	// VM (deleting it, or attaching it to another VM), and a network or
	// subnet that still has NICs in it (deleting it).
	CodeNICInUse    = "NicInUse"
	CodeSubnetInUse = "InUseSubnetCannotBeDeleted"
)

func (e *Error) Error() string {
	s := fmt.Sprintf("compute: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Is maps an Error onto the Err* sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == 404
	case ErrThrottled:
		return e.Status == 429
	case ErrIPInUse:
		return e.Code == CodeIPInUse
	case ErrExists:
		return e.Code == CodeExists
	case ErrConflict:
		return e.Status == 409 || e.Code == CodeNICInUse || e.Code == CodeSubnetInUse
	case ErrInvalid:
		return e.Status == 400
	case ErrFailed:
		return e.Status >= 500 || e.Code == CodeQuota || e.Code == CodeNICFailed ||
			e.Code == CodeProvisionFailed || e.Code == CodeBootFailed
	}
	return false
}
