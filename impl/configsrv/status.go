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
	Applied     uint64        // stream items the Azure side reports applied
	LastError   string        // the Azure side's last apply error for the machine
}

// JobStatus is one job: an enablement, a resync or a disablement.
type JobStatus struct {
	ID      int
	Kind    string // JobEnable, JobResync, JobDisable
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

// Status returns a deep copy of the server's state.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{LastDiscovery: s.lastDiscovery, DiscoveredVMs: s.discoveredVMs, DiscoveryError: s.discoveryError}
	for _, m := range s.sortedMachines() {
		st.Machines = append(st.Machines, MachineStatus{
			Name: m.name, InVCenter: m.inVCenter, Physical: m.physical, Ref: string(m.vm.Ref), GuestOS: m.vm.GuestOS,
			State: m.state, History: append([]Transition(nil), m.history...), Policy: m.policy, Gen: m.gen,
			Registered: m.registered, AgentAddr: string(m.agent), RegisteredAt: m.registeredAt,
			LastRefusal: m.lastRefusal, DiskSizes: append([]int64(nil), m.diskSizes...), LastHeartbeat: m.lastHeartbeat,
			Phase: m.hb.Phase, CaptureMode: m.hb.Mode, PendingBytes: m.hb.PendingBytes, PendingRecords: m.hb.PendingRecords,
			SyncedBytes: m.hb.SyncedBytes, SyncTotalBytes: m.hb.SyncTotalBytes, SentBytes: m.hb.SentBytes,
			EnabledAt: m.enabledAt, Points: len(m.points), NewestPoint: m.newestPoint, RPO: m.rpo, RPOAt: m.rpoAt,
			Applied: m.applied, LastError: m.lastError,
		})
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
