package proto

import (
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// Reprotect and failback's messages (FAILOVER.md §B). Every request is
// answered with a Reply to its sender, Req echoed.
//
//	failover -> cs       FailedOver (a machine now runs in Azure), FailedBack (on premises again)
//	portal -> cs         Reprotect (Azure → on-premises, or on-premises → Azure again)
//	cs -> mt             AttachTarget (the on-premises disks a machine's stream goes to)
//	cs -> azure          ResumeReplication (a stopped machine replicates to Azure again)
//	mt -> cs             ReplicaEvent (sync-started, sync-complete, point, apply-error), Checksums
//	failover -> mt       TargetPointsRequest (answered TargetPoints), FailbackPoint
//
// In failback the stream runs agent (in the Azure VM) -> the Azure process
// server -> master target, over the site-to-site VPN, with the forward
// stream's messages (ItemMsg, ItemAck): the master target plays the Azure
// side's part, the failback policy's bookmarks become its points.

// Reprotect directions (Reprotect.Direction).
const (
	ReprotectToOnPrem = "to-on-prem" // Azure → on-premises (failback)
	ReprotectToAzure  = "to-azure"   // on-premises → Azure again, after failback
)

// Reprotect locations (Reprotect.Location).
const (
	LocationOriginal  = "original"  // the original VM's disks: only the blocks that differ are sent
	LocationAlternate = "alternate" // a new VM on the master target's host and datastore: a full copy
)

// FailedOver tells the configuration server that Machine's failover (not a
// test) completed: Azure VM AzureVM runs the workload now. The
// configuration server stops protecting the machine forward and waits for
// the agent in AzureVM to register for a reprotect.
type FailedOver struct {
	Req     string
	Machine string
	AzureVM string
}

func (*FailedOver) WireKind() wire.Kind { return KindFailedOver }

// Reprotect asks the configuration server to replicate Machines in
// Direction.
//
// ReprotectToOnPrem (every machine failed over, its Azure VM's agent
// registered since): through ProcessServer (the process server in Azure,
// an address) to MasterTarget (an address) into the original VMs
// (LocationOriginal) or new VMs created on Host and Datastore
// (LocationAlternate), with the machines' failback policies. Machines of
// one request share the master target (a group must). Physical servers
// always take the alternate location.
//
// ReprotectToAzure (every machine failed back): from the on-premises VMs
// through the configured process server to Azure again, a new generation
// whose sync sends only the blocks that differ from the Azure replica.
type Reprotect struct {
	Req           string
	Machines      []string
	Direction     string
	MasterTarget  string
	ProcessServer string
	Location      string
	Host          string
	Datastore     string
}

func (*Reprotect) WireKind() wire.Kind { return KindReprotect }

// FailbackPoint asks the master target to bring Machine's on-premises
// disks to a failback point and stop taking its stream: Point is
// PointLatest (its newest point), PointLatestApp (its newest app-consistent
// one) or a point's id. The Reply's Result is the point's id, its Subject
// the VM the disks belong to; it is refused, with nothing changed, when
// there is no such point. Asking again for the point the disks are at is
// answered OK again (a lost reply).
type FailbackPoint struct {
	Req     string
	Machine string
	Point   string
}

func (*FailbackPoint) WireKind() wire.Kind { return KindFailbackPoint }

// TargetPointsRequest asks a master target for Machine's failback points.
type TargetPointsRequest struct {
	Req     string
	Machine string
}

func (*TargetPointsRequest) WireKind() wire.Kind { return KindTargetPointsRequest }

// TargetPoint is one failback point: a bookmark of the failback stream the
// master target applied and can still bring the disks back to.
type TargetPoint struct {
	ID   string
	Kind Consistency
	Time time.Time // the bookmark's time in the Azure VM
	Seq  uint64    // the bookmark's change-log position
}

// TargetPoints answers TargetPointsRequest: the points oldest first, the
// on-premises VM, the stream items applied. Err, when not empty, says why
// there are none (machine not attached).
type TargetPoints struct {
	Req     string
	Machine string
	VM      string
	Applied uint64
	Points  []TargetPoint
	Err     string
}

func (*TargetPoints) WireKind() wire.Kind { return KindTargetPoints }

// FailedBack tells the configuration server that Machine runs on premises
// again, in VM (committed failback): it waits there for a reprotect to
// Azure.
type FailedBack struct {
	Req     string
	Machine string
	VM      string
}

func (*FailedBack) WireKind() wire.Kind { return KindFailedBack }

// ResumeReplication asks the Azure side to take a stopped machine's stream
// again (a reprotect to Azure after failback): Catalog.Stopped is cleared,
// the replica disks are kept as they are (the new generation's sync
// compares against them), and points are made again. Resuming a machine
// that is not stopped is not an error.
type ResumeReplication struct {
	Req     string
	Machine string
}

func (*ResumeReplication) WireKind() wire.Kind { return KindResumeReplication }
