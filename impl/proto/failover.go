package proto

import (
	"fmt"

	"github.com/v2a-dr/v2a/impl/wire"
)

// Failover's messages. The orchestrator (impl/failover) receives
// FailoverRequest, JobAction and SetTarget from the portal and answers each
// with a Reply (Req echoed; Result the job id); it sends StopReplication,
// MakeLatest and CommitPoint to the Azure-side service (azuresvc), which
// answers each with a Reply (Req echoed; Result the point MakeLatest made,
// "" when nothing was pending).
//
//	portal -> failover   FailoverRequest, JobAction, SetTarget; failover answers Reply
//	failover -> azure    StopReplication, MakeLatest, CommitPoint; azure answers Reply

// Failover operations, with ASR's names in the comments.
const (
	OpTestFailover = "test-failover" // TestFailover
	OpTestCleanup  = "test-cleanup"  // TestFailoverCleanup
	OpFailover     = "failover"      // UnplannedFailover
	OpChangePoint  = "change-point"  // ChangePit
	OpCommit       = "commit"        // Commit
	// OpFailback is the failover back to on-premises of machines
	// reprotected to a master target (ASR's unplanned failover in the
	// recovery-to-primary direction): Point is PointLatest (each machine
	// its own newest failback point) or PointLatestApp (each its newest
	// app-consistent one; the members of a group their newest common
	// app-consistent one). OpCommit of failed-back machines deletes their
	// Azure VMs and resources.
	OpFailback = "failback"
)

// Recovery point choices (PointChoice.Kind).
const (
	PointLatestProcessed  = "latest-processed"   // the newest existing point
	PointLatest           = "latest"             // process pending data into a point first
	PointLatestApp        = "latest-app"         // the newest app-consistent point
	PointLatestMultiVM    = "latest-multivm"     // plans: group members on their newest common point
	PointLatestMultiVMApp = "latest-multivm-app" // plans: … newest common app-consistent point
	PointCustom           = "custom"             // a named point; a single VM only
)

// Failover directions of plan actions.
const (
	DirectionToAzure = "primary-to-recovery" // VMware/physical → Azure
	DirectionBack    = "recovery-to-primary" // failback
)

// StopReplication asks the Azure side to stop applying a machine's stream
// before a failover creates anything from it: no more points are made;
// items still arriving are consumed and dropped. It is persisted in the
// machine's catalog (Catalog.Stopped). Stopping a stopped machine is not
// an error.
type StopReplication struct {
	Req     string
	Machine string
}

func (*StopReplication) WireKind() wire.Kind { return KindStopReplication }

// MakeLatest asks the Azure side to apply everything already in the cache
// for a machine and then, only if anything was pending, to make a
// crash-consistent point of it. The Reply's Result is the point's id, or
// "" when nothing was pending (the newest point is then the latest).
type MakeLatest struct {
	Req     string
	Machine string
}

func (*MakeLatest) WireKind() wire.Kind { return KindMakeLatest }

// CommitPoint asks the Azure side to keep only Point of a failed-over
// machine: every other point and its snapshots are deleted.
type CommitPoint struct {
	Req     string
	Machine string
	Point   string
}

func (*CommitPoint) WireKind() wire.Kind { return KindCommitPoint }

// PointChoice is which recovery point a failover uses: Kind is one of the
// Point* constants; ID names the point for PointCustom (and for a change
// of point).
type PointChoice struct {
	Kind string
	ID   string
}

// NetworkChoice is a test failover's target network.
type NetworkChoice struct {
	Group string
	Name  string
}

// RecoveryPlan is an ordered set of boot groups. Every VM of group N is
// healthy before group N+1 starts; VMs of one group start in parallel.
type RecoveryPlan struct {
	Name   string
	Groups []PlanGroup
}

// VMs are the plan's machines in group order.
func (p *RecoveryPlan) VMs() []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, g.VMs...)
	}
	return out
}

// PlanGroup is one boot group with the actions run before it starts and
// after all its VMs are healthy.
type PlanGroup struct {
	VMs       []string
	Pre, Post []PlanAction
}

// PlanAction is a step of a plan that is not a VM: a script (a runbook,
// by name) or a manual action that pauses the plan until acknowledged. It
// runs only for the failover types (Op* names) and directions it lists;
// an empty list means all.
type PlanAction struct {
	Name          string
	Manual        bool
	Runbook       string // the script's runbook; "" for a manual action
	FailoverTypes []string
	Directions    []string
}

// FailoverRequest starts a job. VMs or Plan say which machines (not both);
// Network is the test failover's network; ShutdownSource asks a failover
// to power the source machines off first. JobID names the job; "" lets the
// orchestrator name it.
type FailoverRequest struct {
	Req            string
	JobID          string
	Op             string
	VMs            []string
	Plan           *RecoveryPlan
	Point          PointChoice
	Network        NetworkChoice
	ShutdownSource bool
}

func (*FailoverRequest) WireKind() wire.Kind { return KindFailoverRequest }

// Job actions (JobAction.Action), as a job's AllowedActions name them.
const (
	ActionAck    = "ack"    // acknowledge a manual action
	ActionResume = "resume" // re-run the failed action and go on
	ActionSkip   = "skip"   // mark the failed action skipped and go on
)

// JobAction acts on a waiting or failed job.
type JobAction struct {
	Req    string
	JobID  string
	Action string
}

func (*JobAction) WireKind() wire.Kind { return KindJobAction }

// SetTarget sets a machine's failover target settings (ASR's Compute &
// Network): the subnet name and private IP it should get (as the source
// had them), the VM size, the OS type, and whether its first boot needs
// hydration (Linux and physical sources).
type SetTarget struct {
	Req     string
	Machine string
	Subnet  string
	IP      string
	Size    string
	OSType  string
	Hydrate bool
}

func (*SetTarget) WireKind() wire.Kind { return KindSetTarget }

// LatestPointID is the id of the point MakeLatest makes of a machine at
// change-log position seq: "<machine>-latest-<seq>". It is neither a
// BookmarkID (whose kind letter is c or a) nor a TagID.
func LatestPointID(machine string, seq uint64) string {
	return fmt.Sprintf("%s-latest-%d", machine, seq)
}
