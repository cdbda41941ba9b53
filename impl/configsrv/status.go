package configsrv

import (
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
)

// Status is the configuration server's portal view, a deep copy: the
// caller may keep and modify it.
type Status struct {
	Machines       []MachineStatus // sorted by Name
	Groups         []GroupStatus   // replication groups, sorted by Name (disabled ones included)
	Jobs           []JobStatus     // in the order they started (ID order)
	Alerts         []AlertStatus   // in the order they were raised, cleared ones included
	Policies       []proto.Policy  // sorted by Name
	ProcessServers []PSStatus      // sorted by Server
	LastDiscovery  time.Time       // end of the last successful vCenter discovery; zero before
	DiscoveredVMs  int             // VMs the last successful discovery returned
	DiscoveryError string          // the last discovery's error; "" after a success
}

// MachineStatus is one machine as the configuration server knows it.
type MachineStatus struct {
	Name      string
	InVCenter bool   // seen by the last discovery
	Physical  bool   // not a vCenter VM: known from its agent's registration
	Ref       string // vCenter reference ("vm-42"); "" for physical servers
	GuestOS   string // vSphere guest OS id; "" for physical servers

	State   State
	History []Transition // every state change, oldest first, with its reason
	Policy  string       // policy name; "" before the first enablement
	Gen     uint64       // current sync generation (1 = first initial sync)
	Group   string       // the replication group it is a member of; "" when none

	Registered    bool      // an agent proved the vault passphrase
	AgentAddr     string    // where that agent is ("" when none)
	RegisteredAt  time.Time // its first accepted registration
	LastRefusal   string    // why the last refused registration was refused; "" after an acceptance
	DiskSizes     []int64   // as the agent registered them
	LastHeartbeat time.Time // zero before the first

	// From the last heartbeat.
	Phase          string // agent phase: idle, syncing, replicating, resync-required
	CaptureMode    string // data, metadata, bitmap
	PendingBytes   int64  // change-log bytes the process server has not acknowledged
	PendingRecords int64
	SyncedBytes    int64 // sync progress of the current generation
	SyncTotalBytes int64
	SentBytes      int64 // replication payload the agent sent since it started

	EnabledAt   time.Time     // when replication was last enabled
	Points      int           // live recovery points (point events minus pruned)
	NewestPoint time.Time     // time of the newest recovery point; zero before the first
	RPO         time.Duration // now − NewestPoint (before it, now − EnabledAt), as of RPOAt
	RPOAt       time.Time     // when RPO was last evaluated (every CheckEvery and on each point)
	Applied     uint64        // stream items the Azure side (in failback, the master target) reports applied
	LastError   string        // its last apply error for the machine

	// Failover and failback.
	Direction    string    // DirectionForward or DirectionFailback; "" before the first enablement
	AzureVM      string    // the Azure VM the last failover made; "" before
	FailedOverAt time.Time // when the last failover was reported
	// FailbackVM is the on-premises VM the failback stream is written to
	// (the original or a created one), and after a failback the VM the
	// machine runs in.
	FailbackVM   string
	FailedBackAt time.Time // when the last failback was reported
	MasterTarget string    // the master target of the last reprotect to on-premises
	// FailbackProcessServer is the process server in Azure of the last
	// reprotect to on-premises.
	FailbackProcessServer string
}

// JobStatus is one job: an enablement, a resync, a disablement or a
// reprotect.
type JobStatus struct {
	ID      int
	Kind    string // JobEnable, JobResync, JobDisable, JobReprotect, JobReprotectAzure
	Machine string
	Status  string // JobRunning, JobSucceeded, JobFailed
	Started time.Time
	Ended   time.Time // zero while running
	Reason  string    // why it failed
	Steps   []StepStatus
}

// StepStatus is one step of a job.
type StepStatus struct {
	Name    string
	Status  string // JobRunning, JobSucceeded, JobFailed, JobSkipped
	Started time.Time
	Ended   time.Time
	Detail  string
}

// AlertStatus is one raising of an alert.
type AlertStatus struct {
	Name    string // AlertRPO, AlertHeartbeatLost, ...
	Subject string // machine name, or process server for ps-* alerts
	Detail  string // what was measured when it was raised
	Raised  time.Time
	Cleared time.Time // zero while active
}

// Active reports whether the alert's condition still holds.
func (a AlertStatus) Active() bool { return a.Cleared.IsZero() }

// PSStatus is the last health report of a process server.
type PSStatus struct {
	Server         string
	ReportedAt     time.Time
	CacheUsedBytes int64
	CacheCapBytes  int64
	BacklogItems   int64
	BacklogBytes   int64
	EstimateUpload time.Duration
}

// Status returns a deep copy of the server's state. Call it on the
// server's turn: from Handle's goroutine, or through the runtime's Inspect.
func (s *Server) Status() Status {
	st := Status{LastDiscovery: s.lastDiscovery, DiscoveredVMs: s.discoveredVMs, DiscoveryError: s.discoveryError}
	for _, m := range s.sortedMachines() {
		st.Machines = append(st.Machines, MachineStatus{
			Name: m.name, InVCenter: m.inVCenter, Physical: m.physical, Ref: string(m.vm.Ref), GuestOS: m.vm.GuestOS,
			State: m.state, History: append([]Transition(nil), m.history...), Policy: m.policy, Gen: m.gen,
			Group:      groupName(s.memberGroup(m)),
			Registered: m.registered, AgentAddr: string(m.agent), RegisteredAt: m.registeredAt,
			LastRefusal: m.lastRefusal, DiskSizes: append([]int64(nil), m.diskSizes...), LastHeartbeat: m.lastHeartbeat,
			Phase: m.hb.Phase, CaptureMode: m.hb.Mode, PendingBytes: m.hb.PendingBytes, PendingRecords: m.hb.PendingRecords,
			SyncedBytes: m.hb.SyncedBytes, SyncTotalBytes: m.hb.SyncTotalBytes, SentBytes: m.hb.SentBytes,
			EnabledAt: m.enabledAt, Points: len(m.points), NewestPoint: m.newestPoint, RPO: m.rpo, RPOAt: m.rpoAt,
			Applied: m.applied, LastError: m.lastError,
			Direction: m.direction, AzureVM: m.azureVM, FailedOverAt: m.failedOverAt, FailbackVM: m.failbackVM,
			FailedBackAt: m.failedBackAt, MasterTarget: string(m.masterTarget), FailbackProcessServer: string(m.failbackPS),
		})
	}
	for _, g := range s.sortedGroups() {
		st.Groups = append(st.Groups, s.groupStatus(g))
	}
	for _, j := range s.jobs {
		js := JobStatus{ID: j.id, Kind: j.kind, Machine: j.machine, Status: j.status, Started: j.started,
			Ended: j.ended, Reason: j.reason}
		for _, x := range j.steps {
			js.Steps = append(js.Steps, StepStatus{Name: x.name, Status: x.status, Started: x.started, Ended: x.ended, Detail: x.detail})
		}
		st.Jobs = append(st.Jobs, js)
	}
	for _, a := range s.alerts {
		st.Alerts = append(st.Alerts, AlertStatus{Name: a.name, Subject: a.subject, Detail: a.detail, Raised: a.raised, Cleared: a.cleared})
	}
	for _, p := range s.policies {
		st.Policies = append(st.Policies, p)
	}
	sort.Slice(st.Policies, func(i, j int) bool { return st.Policies[i].Name < st.Policies[j].Name })
	for name, r := range s.ps {
		st.ProcessServers = append(st.ProcessServers, PSStatus{Server: name, ReportedAt: r.at,
			CacheUsedBytes: r.h.CacheUsedBytes, CacheCapBytes: r.h.CacheCapBytes, BacklogItems: r.h.BacklogItems,
			BacklogBytes: r.h.BacklogBytes, EstimateUpload: r.h.EstimateUpload})
	}
	sort.Slice(st.ProcessServers, func(i, j int) bool { return st.ProcessServers[i].Server < st.ProcessServers[j].Server })
	return st
}

// GroupStatus is one replication group: its members, its tag rounds as the
// master reports them, and its group recovery points as the Azure side
// reports them.
type GroupStatus struct {
	Name      string
	Members   []GroupMemberStatus // sorted by Machine; of a disabled group, as those machines are now
	Master    string              // the member whose agent runs the rounds
	Policy    string              // the group's policy: every member's, and the group schedule
	Version   uint64              // the GroupConfig version members must apply
	State     GroupState
	EnabledAt time.Time
	// ProtectedSince is when every member last became protected; zero
	// while one is not.
	ProtectedSince time.Time

	Stats GroupStats

	Points           int           // live group recovery points
	LatestPoint      GroupPoint    // newest group point of any kind (the latest multi-VM processed point)
	LatestCrashPoint GroupPoint    // newest crash-consistent group point
	LatestAppPoint   GroupPoint    // newest app-consistent group point
	RPO              time.Duration // now − LatestPoint.Time (before it, now − EnabledAt), as of RPOAt
	RPOAt            time.Time     // when RPO was last evaluated (every CheckEvery and on each group point)

	// Alert is the group's latest multi-vm-consistency alert (Name "" when
	// it was never raised); Alerting says whether it is active.
	Alert    AlertStatus
	Alerting bool
}

// GroupMemberStatus is one member of a group.
type GroupMemberStatus struct {
	Machine string
	State   State // the machine's replication state
	// AgentGroup and AgentGroupVersion are what the member's last heartbeat
	// reported; ConfigApplied says they match the group's current config.
	AgentGroup        string
	AgentGroupVersion uint64
	ConfigApplied     bool
}

// GroupStats are a group's tag rounds as its master reported them
// (TagRound). Holds come from every round, committed or revoked.
type GroupStats struct {
	Rounds             int           // reported rounds (duplicates excluded)
	Committed          int           // rounds every member committed
	Revoked            int           // rounds revoked
	CommittedCrash     int           // committed crash-consistent rounds
	CommittedApp       int           // committed app-consistent rounds
	RevokedBy          []ReasonCount // revoked rounds by the master's reason, sorted by Reason
	ConsecutiveRevoked int           // revoked rounds since the last committed one (or group point, or the group becoming protected)
	LastRevokeReason   string
	LastCommitted      time.Time // when the last committed round was reported; zero before
	Duplicates         int       // duplicated TagRound reports dropped
	// Unreported is how many rounds the masters finished (by their own
	// count in later reports) whose reports were lost, and
	// UnreportedRevoked how many of those they revoked: Rounds and Revoked
	// count only reports received.
	Unreported, UnreportedRevoked int
	Recent                        []RoundStatus
	Holds                         HoldStats // every member's hold in every round
	CrashHolds                    HoldStats // holds in crash-consistent rounds
	AppHolds                      HoldStats // holds in app-consistent rounds (they include the quiesce)
}

// ReasonCount is how many revoked rounds had one reason.
type ReasonCount struct {
	Reason string
	Count  int
}

// RoundStatus is one finished round, as the master reported it.
type RoundStatus struct {
	TagID    string
	Kind     proto.Consistency
	Outcome  string // proto.RoundCommitted or proto.RoundRevoked
	Reason   string // for a revoked round: the phase and member that failed
	Started  time.Time
	Reported time.Time          // when the report arrived
	Holds    []proto.MemberHold // per member, sorted by machine (-1: unknown)
	// Phases are the master's phases of the round, in order, with the
	// virtual times it saw them (none from a master older than the field).
	Phases []proto.RoundPhase
}

// HoldStats is a distribution of write holds: how long members held their
// guests' writes in rounds.
type HoldStats struct {
	Count     int           // holds reported
	Unknown   int           // members that reported no hold (-1)
	Max       time.Duration // longest hold
	P50, P99  time.Duration // nearest-rank percentiles over the last HoldWindow holds
	Histogram []HoldBucket  // fixed buckets, smallest first; always all of them
}

// HoldBucket is one bar of a hold histogram: the holds over the previous
// bucket's UpTo and at most its own; the last bucket (UpTo 0) counts holds
// over the largest bound.
type HoldBucket struct {
	Label string // "<=1ms", ..., ">1m0s"
	UpTo  time.Duration
	Count int
}

func groupName(g *group) string {
	if g == nil {
		return ""
	}
	return g.name
}

func (s *Server) groupStatus(g *group) GroupStatus {
	gs := GroupStatus{Name: g.name, Master: g.master, Policy: g.policy, Version: g.version, State: g.state,
		EnabledAt: g.enabledAt, ProtectedSince: g.protectedSince, Stats: g.rounds.status(), Points: len(g.points),
		LatestPoint: g.latest, LatestCrashPoint: g.crash, LatestAppPoint: g.app, RPO: g.rpo, RPOAt: g.rpoAt}
	for _, name := range g.members {
		ms := GroupMemberStatus{Machine: name}
		if m := s.machines[name]; m != nil {
			ms.State, ms.AgentGroup, ms.AgentGroupVersion = m.state, m.hb.Group, m.hb.GroupVersion
			ms.ConfigApplied = m.hb.Group == g.name && m.hb.GroupVersion >= g.version
		}
		gs.Members = append(gs.Members, ms)
	}
	for _, a := range s.alerts {
		if a.name == AlertMultiVM && a.subject == g.name {
			gs.Alert = AlertStatus{Name: a.name, Subject: a.subject, Detail: a.detail, Raised: a.raised, Cleared: a.cleared}
		}
	}
	gs.Alerting = gs.Alert.Name != "" && gs.Alert.Active()
	return gs
}
