// Package vsphere is the port through which v2a components see VMware
// vSphere: discover the protected VMs and their disks, power VMs on and off,
// create VMs (master target, failback), move datastore files and run a
// program inside a guest (push install of the Mobility service).
//
// The port is an interface so that components never depend on govmomi; the
// adapter in impl/vsphere/vcenter implements it against a real vCenter and
// against the govmomi simulator (vcsim) alike. Every call may do network
// I/O, so component code calls it only from a runtime.Op.
package vsphere

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by Client implementations. Each error a Client returns
// wraps at most one of these, so callers can tell the cases apart with
// errors.Is; the wrapping message says which call and object failed.
var (
	ErrNotFound          = errors.New("vsphere: not found")
	ErrExists            = errors.New("vsphere: already exists")
	ErrInvalidArgument   = errors.New("vsphere: invalid argument")
	ErrInvalidPowerState = errors.New("vsphere: invalid power state")
	ErrGuestAuth         = errors.New("vsphere: guest authentication failed")
	ErrGuestUnavailable  = errors.New("vsphere: guest operations unavailable")
	ErrUnsupported       = errors.New("vsphere: unsupported")
	// ErrNoSpace: the datastore is full (vCenter's NoDiskSpace fault).
	ErrNoSpace = errors.New("vsphere: datastore full")
)

// PowerState is a VM's power state, with vSphere's own spelling.
type PowerState string

// The power states vSphere reports.
const (
	PoweredOn  PowerState = "poweredOn"
	PoweredOff PowerState = "poweredOff"
	Suspended  PowerState = "suspended"
)

// VMRef names a VM by its managed object reference value ("vm-42"). It is
// stable for the VM's life in one vCenter, unlike its name.
type VMRef string

// VM is one virtual machine as discovered in vCenter.
type VM struct {
	Name         string
	Ref          VMRef
	InstanceUUID string // vCenter-unique; what ASR keys a protected VM by
	BIOSUUID     string
	GuestOS      string // guest OS identifier, e.g. "ubuntu64Guest"
	PowerState   PowerState
	IP           string // primary guest IP as VMware Tools reports it; "" when unknown
	Host         string // ESXi host name
	Cluster      string // "" for a standalone host
	Datastore    string // datastore of the VM's configuration file
	CPUs         int
	MemoryMB     int
	Disks        []Disk // sorted by Key
}

// Disk is one virtual disk of a VM.
type Disk struct {
	Key           int32  // device key, unique within the VM
	Label         string // e.g. "Hard disk 1"
	CapacityBytes int64
	Path          string // datastore path of the descriptor, "[ds1] db01/db01.vmdk"
	Datastore     string // the datastore Path names
	UUID          string // the disk's own UUID; "" when the backing has none
}

// DiskSpec is a disk to create with a VM.
type DiskSpec struct {
	CapacityBytes int64  // rounded up to a whole KiB
	Datastore     string // "" for the VM's datastore
}

// VMSpec is what CreateVM makes: a powered-off VM with empty thin disks.
type VMSpec struct {
	Name      string
	GuestOS   string // guest OS identifier; "" for "otherGuest64"
	CPUs      int    // 0 for 1
	MemoryMB  int    // 0 for 1024
	Host      string // ESXi host name; required (a simulator would pick one at random)
	Datastore string // datastore for the configuration files and, by default, the disks
	Network   string // port group for one vmxnet3 NIC; "" for no NIC
	Disks     []DiskSpec
	// InstanceUUID and BIOSUUID are set when not empty; vCenter picks them
	// otherwise.
	InstanceUUID string
	BIOSUUID     string
}

// GuestAuth is the guest OS account used for guest operations.
type GuestAuth struct {
	Username string
	Password string
}

// Client is the vSphere port. Implementations are safe for concurrent use
// and honour ctx cancellation. VM lists are sorted by Name, then Ref, so two
// discoveries of the same inventory compare equal.
type Client interface {
	// Discover returns every VM of the inventory (templates excluded).
	Discover(ctx context.Context) ([]VM, error)
	// VM returns the VM ref names, or an error wrapping ErrNotFound.
	VM(ctx context.Context, ref VMRef) (VM, error)
	// PowerOn powers a VM on. A VM already on gives ErrInvalidPowerState.
	PowerOn(ctx context.Context, ref VMRef) error
	// PowerOff powers a VM off hard (no guest shutdown). A VM already off
	// gives ErrInvalidPowerState.
	PowerOff(ctx context.Context, ref VMRef) error
	// CreateVM creates a powered-off VM as spec says and returns it as
	// discovered. A name already taken gives ErrExists.
	CreateVM(ctx context.Context, spec VMSpec) (VM, error)
	// ReadFile returns the contents of a datastore file ("[ds1] dir/f").
	ReadFile(ctx context.Context, path string) ([]byte, error)
	// WriteFile creates or replaces a datastore file.
	WriteFile(ctx context.Context, path string, data []byte) error
	// FileSize returns the size in bytes of a datastore file; a missing
	// file gives ErrNotFound.
	FileSize(ctx context.Context, path string) (int64, error)
	// ReadAt reads len(p) bytes of a datastore file from byte off, as
	// io.ReaderAt does: n < len(p) only at the file's end, and then
	// with io.EOF (an off at or past the end gives 0, io.EOF). A
	// negative off gives ErrInvalidArgument, a missing file ErrNotFound.
	// Only the bytes asked for cross the wire: a disk of any size is read
	// piece by piece.
	ReadAt(ctx context.Context, path string, p []byte, off int64) (n int, err error)
	// WriteAt writes p at byte off of an existing datastore file, growing
	// it with zeros when off+len(p) is past its end (the bytes between
	// read as zeros). A missing file gives ErrNotFound (WriteFile creates
	// files), a negative off ErrInvalidArgument, a full datastore
	// ErrNoSpace. How much crosses the wire depends on the adapter: see
	// its doc.
	WriteAt(ctx context.Context, path string, p []byte, off int64) error
	// RunInGuest runs program with args inside the guest of a powered-on VM
	// and returns its exit code once it has ended. Bad credentials give
	// ErrGuestAuth, a guest without running tools ErrGuestUnavailable, a VM
	// that is off ErrInvalidPowerState.
	RunInGuest(ctx context.Context, ref VMRef, auth GuestAuth, program, args string) (exitCode int, err error)
}

// DatastorePath is a parsed datastore path "[Datastore] Path".
type DatastorePath struct {
	Datastore string
	Path      string // relative to the datastore root, "" for the root
}

// String formats p as vSphere does: "[ds1] db01/db01.vmdk", "[ds1]".
func (p DatastorePath) String() string {
	if p.Path == "" {
		return "[" + p.Datastore + "]"
	}
	return "[" + p.Datastore + "] " + p.Path
}

// ParseDatastorePath parses "[Datastore] Path". The datastore name must not
// be empty; the path may be.
func ParseDatastorePath(s string) (DatastorePath, error) {
	rest, ok := strings.CutPrefix(s, "[")
	if !ok {
		return DatastorePath{}, fmt.Errorf("vsphere: datastore path %q: %w: want \"[datastore] path\"", s, ErrInvalidArgument)
	}
	ds, p, ok := strings.Cut(rest, "]")
	if !ok || ds == "" {
		return DatastorePath{}, fmt.Errorf("vsphere: datastore path %q: %w: want \"[datastore] path\"", s, ErrInvalidArgument)
	}
	return DatastorePath{Datastore: ds, Path: strings.TrimSpace(p)}, nil
}

// FlatExtentPath is the datastore path of the flat extent that holds the
// data of the disk whose descriptor is desc: "[ds1] db01/db01.vmdk" has its
// bytes in "[ds1] db01/db01-flat.vmdk", the file a master target writes.
func FlatExtentPath(desc string) (string, error) {
	p, err := ParseDatastorePath(desc)
	if err != nil {
		return "", err
	}
	base, ok := strings.CutSuffix(p.Path, ".vmdk")
	if !ok || base == "" || strings.HasSuffix(base, "-flat") {
		return "", fmt.Errorf("vsphere: disk descriptor %q: %w: want \"[datastore] dir/name.vmdk\"", desc, ErrInvalidArgument)
	}
	p.Path = base + "-flat.vmdk"
	return p.String(), nil
}
