// Package proto defines the messages v2a's components exchange, each a
// wire.Msg registered under a fixed kind whose payload is a protobuf message
// (pb/v2a.proto; codec.go converts), so that adjacent versions interoperate.
//
// Flows (ports are the product's):
//
//	agent  -> cs:443     Register, Heartbeat, ResyncNeeded
//	cs     -> agent      RegisterReply, Protect, Unprotect, Checksums (relayed)
//	agent  -> ps:9443    StreamHello, ItemMsg (the replication stream)
//	ps     -> agent      ItemAck (cumulative, with back-pressure)
//	ps     -> azure:443  Uploaded (a hint: the Azure side also polls storage)
//	ps     -> cs         PSHealth
//	cs     -> azure      PolicyFor
//	azure  -> cs         ReplicaEvent, Checksums
//	portal -> cs:443     EnableReplication, EnableGroup, DisableReplication, CreatePolicy; cs answers Reply
//	cs     -> agent      GroupConfig (a member of a replication group)
//	master -> member:20004  Tag (one phase of a multi-VM round); member -> master TagAck
//	master -> cs         TagRound (a round's outcome and write holds)
//	portal -> failover   FailoverRequest, JobAction, SetTarget; failover answers Reply
//	failover -> azure    StopReplication, MakeLatest, CommitPoint; azure answers Reply
//	reprotect -> mt      AttachTarget (mt answers Reply), ItemMsg (mt answers ItemAck),
//	                     BlockSumRequest (mt answers BlockSumReply)
//
// Every message names the machine it concerns, so that one process server
// and one Azure service serve many machines.
//
// proto is also the one home of every other contract two components share,
// each defined once with its make, its parse and its tests, so that no
// component spells one of them itself:
//
//   - Consistency (consistency.go): a point's kind, crash or app, with its
//     stored number (.hrl, stream items) and its text (messages, catalogs);
//   - CacheBlobName / ParseCacheBlobName and the container names
//     (names.go): where the process server puts an item and the Azure side
//     finds it;
//   - TagID and BookmarkID (tagid.go): a group round's id and a machine's
//     own bookmark id, which can never be mistaken for each other;
//   - BlockSum (checksum.go): the replica block checksum the Azure side
//     computes and the agent compares, one rule for a short last block,
//     tested from both sides with prototest.BlockSumCases;
//   - the well-known hosts (names.go), each component's default peer;
//   - the catalog format (catalog.go): a machine's replica state and
//     recovery points, written by the Azure side only, read by failover
//     and the harness with LoadCatalog;
//   - failover's messages and choices (failover.go): the portal's
//     FailoverRequest, JobAction and SetTarget, and the orchestrator's
//     StopReplication, MakeLatest and CommitPoint to the Azure side.
package proto

import (
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Policy is a replication policy. RPOThreshold only raises an alert: it
// never changes the schedule.
type Policy struct {
	Name          string
	RPOThreshold  time.Duration
	Retention     time.Duration
	CrashInterval time.Duration
	AppInterval   time.Duration
	Compression   string // "s2" (default) or "zstd"
}

// DefaultPolicy is the product's default replication policy.
func DefaultPolicy() Policy {
	return Policy{Name: "default", RPOThreshold: 60 * time.Minute, Retention: 24 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: 60 * time.Minute, Compression: "s2"}
}

// MaxRetention is the longest recovery-point retention a policy may ask.
const MaxRetention = 15 * 24 * time.Hour

// MinCrashInterval is the shortest crash-consistent interval a policy may
// ask: continuous protection, a point every 5 seconds. ASR's own default
// (DefaultPolicy) stays 5 minutes; intervals under a minute make the agent
// drain each crash bookmark at once and the Azure side thin points by the
// minute (azuresvc.Tiers), so that RPO follows the interval and storage
// stays bounded.
const MinCrashInterval = 5 * time.Second

// MinAppInterval is the shortest app-consistent interval: a minute, as
// before continuous protection (it was bounded by the crash interval's
// minute then).
const MinAppInterval = time.Minute

// Validate checks a policy's values.
func (p Policy) Validate() error {
	switch {
	case p.Name == "":
		return fmt.Errorf("proto: policy has no name")
	case p.RPOThreshold <= 0:
		return fmt.Errorf("proto: policy %s: RPO threshold %v must be positive", p.Name, p.RPOThreshold)
	case p.Retention <= 0 || p.Retention > MaxRetention:
		return fmt.Errorf("proto: policy %s: retention %v must be in (0, 15 days]", p.Name, p.Retention)
	case p.CrashInterval < MinCrashInterval:
		return fmt.Errorf("proto: policy %s: crash-consistent frequency %v is under the minimum %v", p.Name, p.CrashInterval, MinCrashInterval)
	case p.AppInterval != 0 && p.AppInterval < MinAppInterval:
		// Continuous protection changes crash points only: quiescing a
		// guest every few seconds is not what an app point is for.
		return fmt.Errorf("proto: policy %s: app-consistent frequency %v is under the minimum %v", p.Name, p.AppInterval, MinAppInterval)
	case p.AppInterval != 0 && p.AppInterval < p.CrashInterval:
		return fmt.Errorf("proto: policy %s: app-consistent frequency %v is under the crash-consistent one", p.Name, p.AppInterval)
	case p.Compression != "" && p.Compression != "s2" && p.Compression != "zstd":
		return fmt.Errorf("proto: policy %s: compression %q (want s2 or zstd)", p.Name, p.Compression)
	}
	return nil
}

// Message kinds, 0x0100-0x01ff.
const (
	KindRegister wire.Kind = 0x0100 + iota
	KindRegisterReply
	KindHeartbeat
	KindProtect
	KindUnprotect
	KindResyncNeeded
	KindChecksums
	KindStreamHello
	KindItem
	KindItemAck
	KindUploaded
	KindPSHealth
	KindPolicyFor
	KindReplicaEvent
	KindEnableReplication
	KindDisableReplication
	KindCreatePolicy
	KindReply
	KindGroupConfig
	KindTag
	KindTagAck
	KindTagRound
	KindEnableGroup
	KindStopReplication
	KindMakeLatest
	KindCommitPoint
	KindFailoverRequest
	KindJobAction
	KindSetTarget
	KindAttachTarget
	KindBlockSumRequest
	KindBlockSumReply
	KindFailedOver
	KindReprotect
	KindFailbackPoint
	KindTargetPointsRequest
	KindTargetPoints
	KindFailedBack
	KindResumeReplication
)

func init() {
	reg := func(k wire.Kind, name string, f func() wire.Msg) { wire.Register(k, name, f) }
	reg(KindRegister, "register", func() wire.Msg { return &Register{} })
	reg(KindRegisterReply, "register-reply", func() wire.Msg { return &RegisterReply{} })
	reg(KindHeartbeat, "heartbeat", func() wire.Msg { return &Heartbeat{} })
	reg(KindProtect, "protect", func() wire.Msg { return &Protect{} })
	reg(KindUnprotect, "unprotect", func() wire.Msg { return &Unprotect{} })
	reg(KindResyncNeeded, "resync-needed", func() wire.Msg { return &ResyncNeeded{} })
	reg(KindChecksums, "checksums", func() wire.Msg { return &Checksums{} })
	reg(KindStreamHello, "stream-hello", func() wire.Msg { return &StreamHello{} })
	reg(KindItem, "item", func() wire.Msg { return &ItemMsg{} })
	reg(KindItemAck, "item-ack", func() wire.Msg { return &ItemAck{} })
	reg(KindUploaded, "uploaded", func() wire.Msg { return &Uploaded{} })
	reg(KindPSHealth, "ps-health", func() wire.Msg { return &PSHealth{} })
	reg(KindPolicyFor, "policy-for", func() wire.Msg { return &PolicyFor{} })
	reg(KindReplicaEvent, "replica-event", func() wire.Msg { return &ReplicaEvent{} })
	reg(KindEnableReplication, "enable-replication", func() wire.Msg { return &EnableReplication{} })
	reg(KindDisableReplication, "disable-replication", func() wire.Msg { return &DisableReplication{} })
	reg(KindCreatePolicy, "create-policy", func() wire.Msg { return &CreatePolicy{} })
	reg(KindReply, "reply", func() wire.Msg { return &Reply{} })
	reg(KindGroupConfig, "group-config", func() wire.Msg { return &GroupConfig{} })
	reg(KindTag, "tag", func() wire.Msg { return &Tag{} })
	reg(KindTagAck, "tag-ack", func() wire.Msg { return &TagAck{} })
	reg(KindTagRound, "tag-round", func() wire.Msg { return &TagRound{} })
	reg(KindEnableGroup, "enable-group", func() wire.Msg { return &EnableGroup{} })
	reg(KindStopReplication, "stop-replication", func() wire.Msg { return &StopReplication{} })
	reg(KindMakeLatest, "make-latest", func() wire.Msg { return &MakeLatest{} })
	reg(KindCommitPoint, "commit-point", func() wire.Msg { return &CommitPoint{} })
	reg(KindFailoverRequest, "failover-request", func() wire.Msg { return &FailoverRequest{} })
	reg(KindJobAction, "job-action", func() wire.Msg { return &JobAction{} })
	reg(KindSetTarget, "set-target", func() wire.Msg { return &SetTarget{} })
	reg(KindAttachTarget, "attach-target", func() wire.Msg { return &AttachTarget{} })
	reg(KindBlockSumRequest, "block-sum-request", func() wire.Msg { return &BlockSumRequest{} })
	reg(KindBlockSumReply, "block-sum-reply", func() wire.Msg { return &BlockSumReply{} })
	reg(KindFailedOver, "failed-over", func() wire.Msg { return &FailedOver{} })
	reg(KindReprotect, "reprotect", func() wire.Msg { return &Reprotect{} })
	reg(KindFailbackPoint, "failback-point", func() wire.Msg { return &FailbackPoint{} })
	reg(KindTargetPointsRequest, "target-points-request", func() wire.Msg { return &TargetPointsRequest{} })
	reg(KindTargetPoints, "target-points", func() wire.Msg { return &TargetPoints{} })
	reg(KindFailedBack, "failed-back", func() wire.Msg { return &FailedBack{} })
	reg(KindResumeReplication, "resume-replication", func() wire.Msg { return &ResumeReplication{} })
}

// Register is an agent announcing itself to the configuration server.
// Proof is vault.Keys.Proof(Machine): only an agent installed with the
// vault's passphrase can make it.
type Register struct {
	Machine      string
	InstanceUUID string
	Physical     bool
	DiskSizes    []int64
	Proof        []byte
	AgentVersion string
}

func (*Register) WireKind() wire.Kind { return KindRegister }

// RegisterReply accepts or refuses a registration, saying why.
type RegisterReply struct {
	Machine string
	OK      bool
	Reason  string
	VaultID string
}

func (*RegisterReply) WireKind() wire.Kind { return KindRegisterReply }

// Heartbeat is an agent's periodic report.
type Heartbeat struct {
	Machine        string
	Phase          string // "idle", "syncing", "replicating", "resync-required"
	Mode           string // capture mode: "data", "metadata", "bitmap"
	PendingBytes   int64  // change-log bytes not yet acknowledged by the process server
	PendingRecords int64
	AckedItems     uint64
	SyncedBytes    int64
	SyncTotalBytes int64
	SentBytes      int64  // replication payload sent since start
	Gen            uint64 // the sync generation the agent works on (0: none)
	Group          string // the replication group it is a member of
	GroupVersion   uint64 // the GroupConfig version it applied
}

func (*Heartbeat) WireKind() wire.Kind { return KindHeartbeat }

// Protect tells a registered agent to replicate under a policy through a
// process server. Gen is the sync generation to start (the configuration
// server increments it for every resync it orders).
type Protect struct {
	Machine       string
	Policy        Policy
	ProcessServer string // address host:port
	Gen           uint64
}

func (*Protect) WireKind() wire.Kind { return KindProtect }

// Unprotect stops replication of a machine.
type Unprotect struct{ Machine string }

func (*Unprotect) WireKind() wire.Kind { return KindUnprotect }

// ResyncNeeded is an agent saying its change tracking broke (a corrupt
// change log, bitmap mode) and the replica must be resynchronised.
type ResyncNeeded struct {
	Machine string
	Reason  string
}

func (*ResyncNeeded) WireKind() wire.Kind { return KindResyncNeeded }

// Checksums carries the replica's block checksums for one region of one
// disk, for a sync generation: the Azure side computes them when it applies
// SyncStart, and the configuration server relays them to the agent, which
// sends only the blocks whose checksum differs. Fresh says the replica was
// just created (all zero): then Sums is empty. Final marks the last region
// of the last disk.
type Checksums struct {
	Machine   string
	Gen       uint64
	Fresh     bool
	Disk      uint16
	Off       int64
	BlockSize int64
	Sums      []byte // ChecksumSize bytes per block from Off
	Final     bool
}

func (*Checksums) WireKind() wire.Kind { return KindChecksums }

// StreamHello opens (or reopens, after a restart of either side) a
// machine's replication stream; the process server answers with an ItemAck
// saying how far it has the stream.
type StreamHello struct{ Machine string }

func (*StreamHello) WireKind() wire.Kind { return KindStreamHello }

// ItemMsg carries one stream item (batch.Item, marshalled) to the process
// server. Codec is the compression the machine's policy asks for
// (Policy.Compression: "s2" or "zstd"; "" leaves it to the process server):
// the policy applies per machine, and the agent is the component on the
// data path that holds it. A decoded ItemMsg's Data aliases the frame it
// was decoded from (no copy of the item): the frame must not be modified
// while the message is in use.
type ItemMsg struct {
	Machine string
	Seq     uint64
	Data    []byte
	Codec   string
}

func (*ItemMsg) WireKind() wire.Kind { return KindItem }

// Ack statuses.
const (
	AckOK        = "ok"         // Acked is the highest item cached
	AckCacheFull = "cache-full" // back-pressure: retry later
	AckGap       = "gap"        // an item arrived ahead of Acked+1: resend from Acked+1
	AckRefused   = "refused"    // the item is malformed: Reason says why
	// AckWriteFailed: the item could not be applied (a master target's
	// datastore full or failing): it is not acknowledged, retry later.
	AckWriteFailed = "write-failed"
)

// ItemAck is the process server's cumulative acknowledgement: every item up
// to Acked of the machine's stream is on its cache disk, so the agent may
// trim its change log up to the records those items carry.
//
// Epoch names the process server's cache disk: it changes only when the
// cache is lost (a new, empty disk). Within one epoch Acked never goes
// down, so a lower Acked is a stale answer; a lower Acked in a new epoch
// means the process server lost items it had acknowledged. 0: unknown.
type ItemAck struct {
	Machine string
	Acked   uint64
	Status  string
	Reason  string
	Epoch   uint64
}

func (*ItemAck) WireKind() wire.Kind { return KindItemAck }

// Uploaded tells the Azure side that a machine's stream is in the cache
// container up to item UpTo. It is only a hint: the Azure side also lists
// the container on a timer, so a lost Uploaded delays nothing for long.
type Uploaded struct {
	Machine string
	UpTo    uint64
}

func (*Uploaded) WireKind() wire.Kind { return KindUploaded }

// PSHealth is the process server's periodic health report.
type PSHealth struct {
	Server         string
	CacheUsedBytes int64
	CacheCapBytes  int64
	BacklogItems   int64
	BacklogBytes   int64
	UploadedBytes  int64 // sealed bytes uploaded since start
	RawBytes       int64 // item bytes before compression, of what was uploaded
	EstimateUpload time.Duration
	Machines       []MachineBacklog
}

// MachineBacklog is one machine's share of a process server's backlog.
type MachineBacklog struct {
	Machine string
	Items   int64
	Bytes   int64
}

func (*PSHealth) WireKind() wire.Kind { return KindPSHealth }

// PolicyFor gives the Azure side a machine's policy (retention) and, for a
// member of a replication group, the group and all its members (so that
// the Azure side can tell when a tag is a group recovery point).
type PolicyFor struct {
	Machine string
	Policy  Policy
	Group   string
	Members []string // sorted; empty when Group is ""
}

func (*PolicyFor) WireKind() wire.Kind { return KindPolicyFor }

// Replica events.
const (
	EventSyncStarted  = "sync-started"
	EventSyncComplete = "sync-complete"
	EventPoint        = "point"
	EventPruned       = "pruned"
	EventApplyError   = "apply-error"
	EventGroupPoint   = "group-point" // a tag every member of Group has as a point
	// EventItemRefused: stream item Seq did not open (AES-GCM
	// authentication or decoding failed: corrupted or tampered in
	// storage). It is never applied; the machine needs a resync, whose
	// SyncStart the Azure side then skips ahead to.
	EventItemRefused = "item-refused"
	// EventPointLost: recovery point PointID's snapshot is gone from
	// storage; the point was dropped from the catalog.
	EventPointLost = "point-lost"
)

// ReplicaEvent reports what the Azure side did for a machine.
type ReplicaEvent struct {
	Machine   string // for group events: the member whose point completed the group point
	Group     string
	Event     string
	Gen       uint64
	PointID   string
	Kind      Consistency // of the point; zero for events about no point
	PointTime time.Time
	Seq       uint64 // change-log position of the point's bookmark
	Applied   uint64 // stream items applied so far
	Detail    string
}

func (*ReplicaEvent) WireKind() wire.Kind { return KindReplicaEvent }

// EnableReplication asks the configuration server to protect a discovered
// machine with a named policy: push-install the agent if needed, then
// replicate. Physical servers need the agent installed by hand.
type EnableReplication struct {
	Machine string
	Policy  string
}

func (*EnableReplication) WireKind() wire.Kind { return KindEnableReplication }

// DisableReplication stops protecting a machine.
type DisableReplication struct{ Machine string }

func (*DisableReplication) WireKind() wire.Kind { return KindDisableReplication }

// CreatePolicy adds or replaces a replication policy.
type CreatePolicy struct{ Policy Policy }

func (*CreatePolicy) WireKind() wire.Kind { return KindCreatePolicy }

// Reply answers a management request.
type Reply struct {
	Request string // the request's kind name
	Subject string
	OK      bool
	Reason  string
	// Req echoes the request id of a failover-era request (StopReplication,
	// MakeLatest, CommitPoint, FailoverRequest, JobAction, SetTarget), and
	// Result is what it produced (a point id, a job id), "" for nothing.
	// Like every empty field they take no bytes on the wire.
	Req    string
	Result string
}

func (*Reply) WireKind() wire.Kind { return KindReply }

// MaxGroupMembers is the most machines a replication group may hold.
const MaxGroupMembers = 16

// TagTimeouts are the per-phase acknowledgement timeouts of the multi-VM
// tag protocol. Quiesce applies to app-consistent rounds only.
type TagTimeouts struct {
	Prepare, Quiesce, Commit, Resume time.Duration
}

// Hold is the longest a member may hold its guest's writes in one round:
// from prepare until resume, whatever fails.
func (t TagTimeouts) Hold() time.Duration { return t.Prepare + t.Quiesce + t.Commit + t.Resume }

// The real product's phase timeouts.
var (
	CrashTagTimeouts = TagTimeouts{Prepare: 300 * time.Millisecond, Quiesce: 100 * time.Millisecond, Commit: 100 * time.Millisecond, Resume: 100 * time.Millisecond}
	AppTagTimeouts   = TagTimeouts{Prepare: 90 * time.Second, Quiesce: 9 * time.Second, Commit: 9 * time.Second, Resume: 40 * time.Second}
)

// GroupConfig tells a member agent its replication group: the members
// (machine names; each member's agent listens on <machine>:20004), which one
// is the master, the schedule of group tags, and the phase timeouts. The
// configuration server sends it with Protect and again whenever a member's
// heartbeat shows an older Version.
type GroupConfig struct {
	Group         string
	Version       uint64
	Members       []string // sorted
	Master        string
	CrashInterval time.Duration // group crash-consistent tags; 0: none
	AppInterval   time.Duration // group app-consistent tags; 0: none
	Crash, App    TagTimeouts
	// Addrs are the members' agents' addresses, in Members' order, where
	// the configuration server knows them (a failed-over group's agents
	// run in Azure VMs, not on their machines' hosts); an empty list or
	// entry means <member>:20004 (what an older peer, which sends no
	// Addrs, means).
	Addrs []string
}

// MemberAddr is where member's agent listens for the tag protocol.
func (m *GroupConfig) MemberAddr(member string) runtime.Addr {
	if i := slices.Index(m.Members, member); i >= 0 && i < len(m.Addrs) && m.Addrs[i] != "" {
		return runtime.Addr(m.Addrs[i])
	}
	return runtime.MakeAddr(member, runtime.PortTag)
}

func (*GroupConfig) WireKind() wire.Kind { return KindGroupConfig }

// Tag phases, in protocol order; Revoke may come at any point.
const (
	PhaseBegin   = "begin"   // the master spawns the round and sends the tag id
	PhasePrepare = "prepare" // hold new writes (in-flight ones finish)
	PhaseQuiesce = "quiesce" // app-consistent rounds: quiesce the applications
	PhaseCommit  = "commit"  // insert the tag as a bookmark in the change log
	PhaseResume  = "resume"  // release held writes, thaw the applications
	PhaseRevoke  = "revoke"  // abandon the tag: a member that inserted it logs a revoke
)

// Tag is a master's instruction to a member for one phase of a round.
type Tag struct {
	Group  string
	TagID  string // the bookmark id every member inserts: a TagID's text
	Kind   Consistency
	Phase  string
	Master string // the master's machine name
	Reason string // for revoke: why
}

func (*Tag) WireKind() wire.Kind { return KindTag }

// TagAck is a member's answer to one phase. OK false says the member could
// not do it (Reason says why: syncing, not a member, hold deadline passed,
// ...), which makes the master revoke the round. Seq is the bookmark's
// change-log position (commit); Held is how long the member held its
// writes, reported with resume and revoke.
type TagAck struct {
	Group   string
	TagID   string
	Phase   string
	Machine string
	OK      bool
	Reason  string
	Seq     uint64
	Held    time.Duration
}

func (*TagAck) WireKind() wire.Kind { return KindTagAck }

// Round outcomes.
const (
	RoundCommitted = "committed"
	RoundRevoked   = "revoked"
)

// TagRound is the master's report of a finished round to the configuration
// server: its outcome, why it was revoked, and each member's write hold.
type TagRound struct {
	Group   string
	TagID   string
	Kind    Consistency
	Outcome string
	Reason  string // for a revoked round: the phase and member that failed
	Started time.Time
	Holds   []MemberHold // sorted by machine
	// The master's own tally, so that the configuration server can tell
	// how many reports it missed (they are sent once; a partition loses
	// them): Since identifies the master's incarnation (when it started),
	// Finished counts the rounds it finished since then, this one included,
	// and RevokedSoFar how many of them it revoked.
	Since        time.Time
	Finished     uint64
	RevokedSoFar uint64
	// Phases are the phases the master drove, in order, with the times it
	// saw them (a master older than this field sends none).
	Phases []RoundPhase
}

// RoundPhase is one phase of a round as its master saw it: Start when it
// sent the phase to the members (and did it itself), End when it left the
// phase: the last member's acknowledgement arrived (OK), or it gave up on
// it (a refusal, a timeout, a member's own revoke; for revoke itself, the
// resume timeout with acknowledgements missing). Name is one of the Phase
// constants; a revoked round ends with a revoke phase.
type RoundPhase struct {
	Name       string
	Start, End time.Time
	OK         bool
}

// MemberHold is how long one member held its writes in a round (-1: the
// member did not report).
type MemberHold struct {
	Machine string
	Held    time.Duration
}

func (*TagRound) WireKind() wire.Kind { return KindTagRound }

// EnableGroup enables replication of several machines together as one
// replication group (multi-VM consistency). Machines can join a group only
// this way: a group that already replicates refuses new members.
type EnableGroup struct {
	Group    string
	Machines []string
	Policy   string
	Master   string // "" lets the configuration server pick (the first by name)
}

func (*EnableGroup) WireKind() wire.Kind { return KindEnableGroup }
