package memfabric

import (
	"fmt"
	"path"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
)

// The operation kinds, as Fault.Op names them and tokens spell them.
const (
	OpCreateNIC  = "create-nic"
	OpCreateDisk = "create-disk"
	OpCreateVM   = "create-vm"
	// OpHydrate is the hydration at a tagged VM's first boot: a fault on
	// it fails the VM's create when the create would be done.
	OpHydrate    = "hydrate"
	OpStart      = "start"
	OpDeallocate = "deallocate"
	OpDelete     = "delete"
	// OpAny matches every Begin call (not OpHydrate).
	OpAny = "any"
)

var faultOps = []string{OpCreateNIC, OpCreateDisk, OpCreateVM, OpHydrate, OpStart, OpDeallocate, OpDelete, OpAny}

// Fault is a failure to inject: the next Count operations of kind Op on a
// resource whose name matches Match fail with Status, Code and Message.
//
// When a call meets its fault:
//   - Status 429 (throttling) is answered by the Begin call itself, before
//     the request is checked, as ARM's throttling is; nothing happens.
//   - Any other fault is decided after the request is checked (an invalid
//     request is refused as such and does not use up a fault). Without
//     Async, the Begin call returns it and nothing happens. With Async the
//     Begin call succeeds and the operation fails when it would be done:
//     a VM is left in provisioning state "Failed" (delete it), a NIC or
//     disk is not created, a start, deallocate or delete leaves the VM as
//     it was.
//   - An OpHydrate fault is always asynchronous: the VM create fails when
//     hydration would end, with the VM left "Failed", its guest not ready.
//
// Faults are consumed in the order calls are made, the earliest injected
// matching fault first.
type Fault struct {
	Op         string
	Match      string // a path.Match glob on the resource's name; "" matches all
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // for a 429
	Async      bool
	Count      int // how many operations fail (at least 1)
}

// Quota is Azure Site Recovery's error 28031 on a VM create: the
// subscription's quota, the size family or a policy refuses the VM
// (409 OperationNotAllowed, at once).
func Quota(match string) Fault {
	return Fault{Op: OpCreateVM, Match: match, Status: 409, Code: compute.CodeQuota, Count: 1,
		Message: "28031: failed to create the virtual machine: operation results in exceeding the approved vCPU quota"}
}

// NICFailed is Azure Site Recovery's error 28092: creating a VM's network
// interface failed (at once).
func NICFailed(match string) Fault {
	return Fault{Op: OpCreateNIC, Match: match, Status: 500, Code: compute.CodeNICFailed, Count: 1,
		Message: "28092: failed to create the network interface"}
}

// HydrationFailed is Azure Site Recovery's error 170010: hydration of a
// Linux or physical source failed at first boot, so the VM create fails
// with CodeBootFailed when hydration would end. It only meets VMs tagged
// compute.TagHydrate "true".
func HydrationFailed(match string) Fault {
	return Fault{Op: OpHydrate, Match: match, Status: 200, Code: compute.CodeBootFailed, Count: 1,
		Message: "170010: hydration failed"}
}

// Throttle answers the next count Begin calls of kind op (OpAny for all)
// on resources matching match with 429 TooManyRequests and retryAfter.
func Throttle(op, match string, retryAfter time.Duration, count int) Fault {
	return Fault{Op: op, Match: match, Status: 429, Code: compute.CodeThrottled, RetryAfter: retryAfter, Count: count,
		Message: "too many requests: the subscription's request rate is exceeded"}
}

// Inject adds a fault. A fault that cannot be met, or that could not be
// told from a success, is an error and is not added.
func (f *Fabric) Inject(ft Fault) error {
	known := false
	for _, k := range faultOps {
		known = known || ft.Op == k
	}
	switch {
	case !known:
		return fmt.Errorf("memfabric: fault on unknown operation %q (want one of %v)", ft.Op, faultOps)
	case ft.Count < 1:
		return fmt.Errorf("memfabric: fault %s count %d: must fail at least one operation", ft.Op, ft.Count)
	case ft.Code == "":
		return fmt.Errorf("memfabric: fault %s has no error code", ft.Op)
	case ft.Status == 429 && (ft.Async || ft.Op == OpHydrate):
		return fmt.Errorf("memfabric: a 429 is answered at once: it cannot be asynchronous or on hydration")
	case ft.Status == 429 && ft.RetryAfter <= 0:
		return fmt.Errorf("memfabric: a 429 fault needs a RetryAfter")
	case ft.Status < 200 || ft.Status > 599:
		return fmt.Errorf("memfabric: fault %s status %d is not an HTTP status", ft.Op, ft.Status)
	case ft.Status < 400 && !(ft.Async || ft.Op == OpHydrate):
		return fmt.Errorf("memfabric: fault %s status %d: a Begin call fails only with 4xx or 5xx (use Async for an operation that ends failed)", ft.Op, ft.Status)
	}
	if _, err := path.Match(ft.Match, ""); err != nil {
		return fmt.Errorf("memfabric: fault %s match %q: %v", ft.Op, ft.Match, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &ft)
	return nil
}

// Faults returns the faults not yet used up, in injection order, each with
// the count it has left.
func (f *Fabric) Faults() []Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Fault
	for _, ft := range f.faults {
		if ft.Count > 0 {
			out = append(out, *ft)
		}
	}
	return out
}

// throttled uses up the first 429 fault matching a Begin call.
func (f *Fabric) throttled(kind, name string) *compute.Error {
	return f.consume(kind, name, true)
}

// failure uses up the first other fault matching an operation.
func (f *Fabric) failure(kind, name string) (e *compute.Error, async bool) {
	for _, ft := range f.faults {
		if ft.Count > 0 && ft.Status != 429 && opMatches(ft.Op, kind) && match(ft.Match, name) {
			ft.Count--
			return faultError(ft), ft.Async || ft.Op == OpHydrate
		}
	}
	return nil, false
}

func (f *Fabric) consume(kind, name string, throttle bool) *compute.Error {
	for _, ft := range f.faults {
		if ft.Count > 0 && (ft.Status == 429) == throttle && opMatches(ft.Op, kind) && match(ft.Match, name) {
			ft.Count--
			return faultError(ft)
		}
	}
	return nil
}

func opMatches(faultOp, kind string) bool {
	return faultOp == kind || (faultOp == OpAny && kind != OpHydrate)
}

func faultError(ft *Fault) *compute.Error {
	return &compute.Error{Status: ft.Status, Code: ft.Code, Message: ft.Message, RetryAfter: ft.RetryAfter}
}
