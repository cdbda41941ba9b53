package configsrv

import (
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
)

// State is a protected item's replication state.
//
//	unprotected -> enabling -> initial-sync -> protected
//	protected | initial-sync -> resync-required -> resyncing -> protected
//	enabling -> unprotected (push install failed, registration refused)
//	any -> disabled (DisableReplication); disabled -> enabling (enabled again)
//
// Failover and failback (see reprotect.go):
//
//	replicating forward -> failed-over (FailedOver)
//	failed-over -> initial-sync -> protected, direction failback (Reprotect to on-premises)
//	failback -> failed-back (FailedBack)
//	failed-back -> initial-sync -> protected, direction forward (Reprotect to Azure)
type State string

// The states of a protected item.
const (
	StateUnprotected    State = "unprotected"     // known, not replicating
	StateEnabling       State = "enabling"        // push install running or waiting for the agent to register
	StateInitialSync    State = "initial-sync"    // Protect sent for the first generation of this enablement
	StateProtected      State = "protected"       // the current generation's sync completed on the Azure side
	StateResyncRequired State = "resync-required" // change tracking broke; a new generation is being ordered
	StateResyncing      State = "resyncing"       // Protect sent for a new generation
	StateDisabled       State = "disabled"        // replication disabled by the portal
	// StateFailedOver: the machine runs in Azure (a committed failover);
	// nothing replicates until a reprotect to on-premises.
	StateFailedOver State = "failed-over"
	// StateFailedBack: the machine runs on premises again (a committed
	// failback); nothing replicates until a reprotect to Azure.
	StateFailedBack State = "failed-back"
)

// Replication directions (MachineStatus.Direction), proto's names.
const (
	DirectionForward  = proto.DirectionToAzure // on-premises -> Azure
	DirectionFailback = proto.DirectionBack    // Azure -> on-premises (master target)
)

// enabled reports whether replication was asked for the machine.
func (st State) enabled() bool {
	return st != StateUnprotected && st != StateDisabled && st != ""
}

// watched reports whether the machine's RPO and heartbeats are watched:
// enabled and not waiting between a failover and a reprotect.
func (st State) watched() bool {
	return st.enabled() && st != StateFailedOver && st != StateFailedBack
}

// replicating reports whether a Protect is out for the current generation.
func (st State) replicating() bool {
	return st == StateInitialSync || st == StateResyncing || st == StateProtected
}

// Transition is one state change of a machine and why it happened.
type Transition struct {
	At     time.Time
	From   State // "" for the first entry (the machine became known)
	To     State
	Reason string
}

// machine is the configuration server's record of one machine.
type machine struct {
	name      string
	inVCenter bool
	vm        vsphere.VM // as last discovered; zero for physical servers

	state   State
	history []Transition
	policy  string // policy name; policies are never deleted
	gen     uint64 // current sync generation; 0 before the first enablement
	job     *job   // the running enable/resync job, nil when none
	group   string // the replication group it was enabled in; see Server.memberGroup

	enabledAt      time.Time
	syncStartedGen uint64 // highest gen the Azure side reported sync-started for
	refusedItem    uint64 // highest stream item the Azure side refused (a resync was ordered for it)
	policyPending  bool   // PolicyFor not yet confirmed by any report from the Azure side

	agent         runtime.Addr
	registered    bool
	registeredAt  time.Time
	diskSizes     []int64
	physical      bool
	lastRefusal   string
	lastHeartbeat time.Time
	hb            proto.Heartbeat // the last heartbeat

	points      map[string]time.Time // live recovery points by id
	newestPoint time.Time
	applied     uint64
	rpo         time.Duration
	rpoAt       time.Time
	lastError   string

	// Failover and failback (reprotect.go).
	direction    string    // DirectionForward or DirectionFailback; "" before the first enablement
	azureVM      string    // the Azure VM a failover made (FailedOver)
	failedOverAt time.Time // when FailedOver came
	failedBackAt time.Time // when FailedBack came
	failbackVM   string    // the on-premises VM failback writes to and fails back into
	masterTarget runtime.Addr
	failbackPS   runtime.Addr // the process server in Azure of the failback stream
	// staleAgent is the agent of the side the machine left at the last
	// failover or failback: its registrations and reports are not the
	// running machine's and are answered but ignored.
	staleAgent runtime.Addr
	// regs counts accepted registrations (of agents other than staleAgent);
	// regsAt is its value at the last failover or failback, so regs >
	// regsAt says an agent registered since.
	regs, regsAt uint64
	// lateReg is the last agent of the side the machine left that
	// registered (ignored then); see failedBack.
	lateReg runtime.Addr
	// checking: a reprotect request naming the machine waits for its
	// vCenter check (nothing changed yet); another is refused meanwhile.
	checking bool
	// await is the request the running reprotect job waits a Reply to
	// (AttachTarget to the master target, ResumeReplication to Azure),
	// resent every CheckEvery until it comes; nil when none.
	await *awaiting
}

func newMachine(name string) *machine {
	return &machine{name: name, points: map[string]time.Time{}}
}

// setState moves m to st, recording why, and logs the change.
func (s *Server) setState(ctx runtime.Context, m *machine, st State, reason string) {
	if m.state == st {
		return
	}
	m.history = append(m.history, Transition{At: ctx.Now(), From: m.state, To: st, Reason: reason})
	ctx.Log().Info("configsrv: machine state", "machine", m.name, "from", string(m.state), "to", string(st),
		"gen", m.gen, "reason", reason)
	m.state = st
	if g := s.groups[m.group]; g != nil && m.group != "" && g.state != GroupDisabled {
		s.refreshGroup(ctx, g)
	}
}

// known makes m's first history entry, when it becomes known.
func (s *Server) known(ctx runtime.Context, m *machine, reason string) {
	s.machines[m.name] = m
	s.setState(ctx, m, StateUnprotected, reason)
}

// policyOf is m's current policy (replaced policies apply at once); in
// failback, its policy's failback twin.
func (s *Server) policyOf(m *machine) proto.Policy {
	if m.direction == DirectionFailback {
		if p, ok := s.policies[m.policy+proto.FailbackSuffix]; ok {
			return p
		}
		return proto.FailbackPolicy(m.policy)
	}
	if p, ok := s.policies[m.policy]; ok {
		return p
	}
	return proto.DefaultPolicy()
}
