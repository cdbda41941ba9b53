package configsrv

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// GroupState is a replication group's state, derived from its members'.
//
//	enabling -> protected <-> degraded
//	any -> disabled (no member enabled any more)
type GroupState string

// The states of a replication group.
const (
	// GroupEnabling: members are enabled but have not all been protected
	// together yet (push install, registration, initial sync).
	GroupEnabling GroupState = "enabling"
	// GroupProtected: every member is protected, so group rounds can commit.
	GroupProtected GroupState = "protected"
	// GroupDegraded: every member was protected once and at least one is not
	// any more (resync, disabled, install failed on a re-enable).
	GroupDegraded GroupState = "degraded"
	// GroupDisabled: no member is enabled. The group no longer replicates:
	// its name may be enabled again with new machines, and its machines may
	// join another group or be enabled alone.
	GroupDisabled GroupState = "disabled"
)

// AlertMultiVM is raised for a protected group (subject: the group) that
// has had no committed round for MultiVMSilence × its crash interval, or
// MultiVMRevokes consecutive revoked rounds; a committed round or a group
// recovery point clears it.
const AlertMultiVM = "multi-vm-consistency"

// Thresholds of the multi-vm-consistency alert.
const (
	// MultiVMSilence: the alert is raised once a protected group has gone
	// more than this many crash intervals without a committed round or a
	// group point.
	MultiVMSilence = 2
	// MultiVMRevokes: the alert is raised at this many consecutive revoked
	// rounds of a protected group.
	MultiVMRevokes = 2
)

// group is the configuration server's record of one replication group.
// Membership is fixed for the group's lifetime: machines join only by
// EnableGroup, and only while no group of that name replicates.
type group struct {
	name      string
	members   []string // sorted
	master    string
	policy    string
	version   uint64 // GroupConfig version; grows across re-creations of the name
	enabledAt time.Time
	state     GroupState

	// protectedSince is when every member last became protected (zero
	// while not all are); the silence of the alert counts from it at most.
	protectedSince time.Time
	// lastEvidence is when the last committed round or group point was
	// reported: proof that the group's tags work.
	lastEvidence time.Time

	rounds roundStats
	points map[string]GroupPoint // live group recovery points by tag id
	latest GroupPoint            // newest of any kind
	crash  GroupPoint            // newest crash-consistent
	app    GroupPoint            // newest app-consistent
	rpo    time.Duration
	rpoAt  time.Time
}

// GroupPoint is a group recovery point: a tag every member has as a point.
// The zero value (ID "") means none.
type GroupPoint struct {
	ID   string
	Kind proto.Consistency
	Time time.Time
}

// memberGroup is the group m is a member of, nil when none (or when its
// group was disabled: then m is free).
func (s *Server) memberGroup(m *machine) *group {
	if m == nil || m.group == "" {
		return nil
	}
	g := s.groups[m.group]
	if g == nil || g.state == GroupDisabled {
		return nil
	}
	return g
}

// sortedGroups lists groups by name, for deterministic sweeps.
func (s *Server) sortedGroups() []*group {
	out := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// enableGroup validates a group as a whole (nothing changes when any part
// is refused), then enables each member as EnableReplication does. Each
// member's agent gets the GroupConfig after its Protect.
func (s *Server) enableGroup(ctx runtime.Context, from runtime.Addr, req *proto.EnableGroup) {
	members, master, policy, err := s.validateGroup(req)
	if err != nil {
		reply(ctx, from, req, req.Group, "", err)
		return
	}
	version := uint64(1)
	old := s.groups[req.Group]
	if old != nil {
		version = old.version + 1
		for _, name := range old.members {
			if m := s.machines[name]; m != nil && m.group == old.name {
				m.group = ""
			}
		}
	}
	g := &group{name: req.Group, members: members, master: master, policy: policy, version: version,
		enabledAt: ctx.Now(), state: GroupEnabling, points: map[string]GroupPoint{}, rounds: newRoundStats()}
	s.groups[g.name] = g
	ctx.Log().Info("configsrv: replication group enabled", "group", g.name, "members", strings.Join(members, ","),
		"master", master, "policy", policy, "version", version)
	// Every member belongs to the group before any is enabled, so that a
	// member whose install fails at once does not leave the group looking
	// disabled to the others.
	for _, name := range members {
		s.machines[name].group = g.name
	}
	installs, registered := 0, 0
	for _, name := range members {
		m := s.machines[name]
		if m.registered {
			registered++
		} else {
			installs++
		}
		s.enableMachine(ctx, m, policy)
	}
	s.refreshGroup(ctx, g)
	reply(ctx, from, req, g.name, fmt.Sprintf("replication group %s enabled with %d machines, master %s, policy %s: "+
		"%d push installs started, %d agents already registered", g.name, len(members), master, policy, installs, registered), nil)
}

// validateGroup checks an EnableGroup and returns its members sorted, its
// master and its policy.
func (s *Server) validateGroup(req *proto.EnableGroup) (members []string, master, policy string, err error) {
	name := req.Group
	if name == "" {
		return nil, "", "", fmt.Errorf("%w: no group name", ErrInvalidGroup)
	}
	if old := s.groups[name]; old != nil && old.state != GroupDisabled {
		return nil, "", "", fmt.Errorf("%w: group %s is %s (members %s)", ErrGroupReplicating, name, old.state,
			strings.Join(old.members, ", "))
	}
	if n := len(req.Machines); n > proto.MaxGroupMembers || n < 2 {
		return nil, "", "", fmt.Errorf("%w: group %s lists %d machines; a replication group holds 2 to %d machines",
			ErrGroupSize, name, n, proto.MaxGroupMembers)
	}
	members = slices.Clone(req.Machines)
	sort.Strings(members)
	for i, mn := range members {
		if mn == "" {
			return nil, "", "", fmt.Errorf("%w: group %s lists a machine without a name", ErrInvalidGroup, name)
		}
		if i > 0 && members[i-1] == mn {
			return nil, "", "", fmt.Errorf("%w: group %s lists %s twice", ErrInvalidGroup, name, mn)
		}
	}
	master = req.Master
	if master == "" {
		master = members[0]
	} else if !slices.Contains(members, master) {
		return nil, "", "", fmt.Errorf("%w: group %s: master %s is not one of its machines", ErrInvalidGroup, name, master)
	}
	policy = req.Policy
	if policy == "" {
		policy = proto.DefaultPolicy().Name
	}
	if _, ok := s.policies[policy]; !ok {
		return nil, "", "", fmt.Errorf("%w %q", ErrUnknownPolicy, policy)
	}
	if err := checkNotFailback(policy, "only reprotect (Azure to on-premises) uses it"); err != nil {
		return nil, "", "", err
	}
	for _, mn := range members {
		m, ok := s.machines[mn]
		if err := enableable(mn, m, ok); err != nil {
			return nil, "", "", err
		}
		if m.state.enabled() {
			return nil, "", "", fmt.Errorf("%w: %s is %s with policy %s; disable its replication before it joins group %s",
				ErrAlreadyProtected, mn, m.state, m.policy, name)
		}
		if g := s.memberGroup(m); g != nil && g.name != name {
			return nil, "", "", fmt.Errorf("%w: %s is a member of group %s", ErrInOtherGroup, mn, g.name)
		}
	}
	return members, master, policy, nil
}

// refreshGroup derives g's state from its members' after any of them
// changed state, and keeps what depends on the change: when every member
// becomes protected the silence and the revoke streak start afresh (rounds
// revoked during the initial sync say nothing about the protected group);
// a disabled group's alert ends.
func (s *Server) refreshGroup(ctx runtime.Context, g *group) {
	all, any := true, false
	for _, name := range g.members {
		m := s.machines[name]
		if m == nil || m.group != g.name {
			all = false
			continue
		}
		if m.state.enabled() {
			any = true
		}
		if m.state != StateProtected {
			all = false
		}
	}
	next := GroupEnabling
	switch {
	case !any:
		next = GroupDisabled
	case all:
		next = GroupProtected
	case g.state == GroupProtected || g.state == GroupDegraded:
		next = GroupDegraded
	}
	if next == g.state {
		return
	}
	ctx.Log().Info("configsrv: group state", "group", g.name, "from", string(g.state), "to", string(next))
	g.state = next
	g.protectedSince = time.Time{}
	switch next {
	case GroupProtected:
		g.protectedSince = ctx.Now()
		g.rounds.consecutiveRevoked = 0
	case GroupDisabled:
		s.clear(ctx, AlertMultiVM, g.name)
		g.rpo, g.rpoAt = 0, ctx.Now()
	}
}

// groupConfig is the GroupConfig of g as its members' agents must apply it.
func (s *Server) groupConfig(g *group) *proto.GroupConfig {
	p, ok := s.policies[g.policy]
	if !ok {
		p = proto.DefaultPolicy()
	}
	gc := &proto.GroupConfig{Group: g.name, Version: g.version, Members: slices.Clone(g.members), Master: g.master,
		CrashInterval: p.CrashInterval, AppInterval: p.AppInterval, Crash: proto.CrashTagTimeouts, App: proto.AppTagTimeouts}
	// Where each member's agent is, when it is not on its machine's own
	// host (a failed-over group's agents run in Azure VMs).
	moved := false
	addrs := make([]string, len(g.members))
	for i, n := range g.members {
		if m, ok := s.machines[n]; ok && m.registered && m.agent.Host() != n {
			addrs[i], moved = string(m.agent), true
		}
	}
	if moved {
		gc.Addrs = addrs
	}
	return gc
}

// sendGroupConfig sends m's group config to its agent, when m is a member.
func (s *Server) sendGroupConfig(ctx runtime.Context, m *machine) {
	if g := s.memberGroup(m); g != nil && m.registered {
		send(ctx, m.agent, s.groupConfig(g))
	}
}

// groupConfigStale reports whether m's agent, by its heartbeat, has not
// applied its group's current config.
func (s *Server) groupConfigStale(m *machine, hb *proto.Heartbeat) bool {
	g := s.memberGroup(m)
	return g != nil && (hb.Group != g.name || hb.GroupVersion < g.version)
}

// groupPolicyReplaced gives the members of groups using policy p a new
// GroupConfig version (the group schedule follows the policy's intervals).
func (s *Server) groupPolicyReplaced(ctx runtime.Context, p string) {
	for _, g := range s.sortedGroups() {
		if g.policy != p || g.state == GroupDisabled {
			continue
		}
		g.version++
		ctx.Log().Info("configsrv: group policy replaced; GroupConfig resent", "group", g.name, "version", g.version)
		for _, name := range g.members {
			if m := s.machines[name]; m != nil && m.group == g.name && m.state.replicating() {
				s.sendGroupConfig(ctx, m)
			}
		}
	}
}

// groupPoint records a group recovery point the Azure side reports.
// Duplicates change nothing.
func (s *Server) groupPoint(ctx runtime.Context, ev *proto.ReplicaEvent) {
	g := s.groups[ev.Group]
	if g == nil || ev.PointID == "" {
		ctx.Log().Warn("configsrv: group point for an unknown group dropped", "group", ev.Group, "point", ev.PointID)
		return
	}
	if _, dup := g.points[ev.PointID]; dup {
		return
	}
	p := GroupPoint{ID: ev.PointID, Kind: ev.Kind, Time: ev.PointTime}
	g.points[p.ID] = p
	g.newest(p)
	ctx.Log().Info("configsrv: group point", "group", g.name, "point", p.ID, "kind", p.Kind)
	g.lastEvidence = ctx.Now()
	g.rounds.consecutiveRevoked = 0
	s.clear(ctx, AlertMultiVM, g.name)
	s.evalGroupRPO(g, ctx.Now())
}

// groupPointPruned forgets a group point the Azure side deleted.
func (s *Server) groupPointPruned(ctx runtime.Context, ev *proto.ReplicaEvent) {
	g := s.groups[ev.Group]
	if g == nil {
		ctx.Log().Warn("configsrv: pruned group point of an unknown group dropped", "group", ev.Group, "point", ev.PointID)
		return
	}
	if _, ok := g.points[ev.PointID]; !ok {
		return
	}
	delete(g.points, ev.PointID)
	g.latest, g.crash, g.app = GroupPoint{}, GroupPoint{}, GroupPoint{}
	for _, p := range g.points {
		g.newest(p)
	}
}

// newest keeps p if it is the newest of its kind (ties: the larger id, so
// the result does not depend on map order).
func (g *group) newest(p GroupPoint) {
	later := func(a, b GroupPoint) bool {
		return b.ID == "" || a.Time.After(b.Time) || (a.Time.Equal(b.Time) && a.ID > b.ID)
	}
	if later(p, g.latest) {
		g.latest = p
	}
	switch {
	case p.Kind == proto.App && later(p, g.app):
		g.app = p
	case p.Kind != proto.App && later(p, g.crash):
		g.crash = p
	}
}

// evalGroupRPO is the group's RPO: now − its newest group point (before
// the first, now − when the group was enabled).
func (s *Server) evalGroupRPO(g *group, now time.Time) {
	if g.state == GroupDisabled {
		g.rpo, g.rpoAt = 0, now
		return
	}
	base := g.enabledAt
	if g.latest.ID != "" {
		base = g.latest.Time
	}
	g.rpo, g.rpoAt = max(now.Sub(base), 0), now
}

// evalGroupAlert raises multi-vm-consistency for a protected group whose
// tags stopped working. It never clears: only a committed round or a group
// point does (or the group's disablement).
func (s *Server) evalGroupAlert(ctx runtime.Context, g *group, now time.Time) {
	if g.state != GroupProtected {
		return
	}
	last := ""
	if g.rounds.lastRevokeReason != "" {
		last = "; last revoke: " + g.rounds.lastRevokeReason
	}
	if n := g.rounds.consecutiveRevoked; n >= MultiVMRevokes {
		s.raise(ctx, AlertMultiVM, g.name, fmt.Sprintf("%d consecutive revoked rounds%s", n, last))
		return
	}
	since := g.protectedSince
	if g.lastEvidence.After(since) {
		since = g.lastEvidence
	}
	limit := MultiVMSilence * s.groupCrashInterval(g)
	if silent := now.Sub(since); silent > limit {
		s.raise(ctx, AlertMultiVM, g.name, fmt.Sprintf("no committed round for %v (over %d × the crash interval %v)%s",
			silent, MultiVMSilence, s.groupCrashInterval(g), last))
	}
}

func (s *Server) groupCrashInterval(g *group) time.Duration {
	if p, ok := s.policies[g.policy]; ok {
		return p.CrashInterval
	}
	return proto.DefaultPolicy().CrashInterval
}
