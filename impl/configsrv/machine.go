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
)

// enabled reports whether replication was asked for the machine.
func (st State) enabled() bool {
	return st != StateUnprotected && st != StateDisabled && st != ""
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

// policyOf is m's current policy (replaced policies apply at once).
func (s *Server) policyOf(m *machine) proto.Policy {
	if p, ok := s.policies[m.policy]; ok {
		return p
	}
	return proto.DefaultPolicy()
}
