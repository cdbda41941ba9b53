package agent

import "github.com/v2a-dr/v2a/impl/blockdev"

// Guest is the port to the protected machine as its agent sees it: the
// harness implements it for simulated guests, a real filter driver and VSS
// elsewhere.
type Guest interface {
	// Disks are the protected disks, in the order the stream numbers them;
	// the agent reads them for sync, resync and metadata-mode drains.
	Disks() []blockdev.Device
	// Filter is the installed filter driver, nil if none yet. It is kernel
	// state: it survives agent restarts, and the agent installs one (with
	// OpenFilter and Attach) on its first start. After a machine crash the
	// guest drops it (CrashClose); whoever boots the machine must attach a
	// reopened filter before the guest writes again, or those writes go
	// untracked.
	Filter() *Filter
	// Attach installs f as the machine's filter driver.
	Attach(f *Filter)
	// Freeze quiesces the applications (VSS): they flush and hold new
	// writes until Thaw. The agent calls Thaw after every successful Freeze.
	Freeze() error
	Thaw()
}
