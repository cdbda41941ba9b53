package configsrv

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// reply answers a management request. err nil is success with note as the
// Reason (what happens next), otherwise err is the Reason.
func reply(ctx runtime.Context, to runtime.Addr, req wire.Msg, subject, note string, err error) {
	r := &proto.Reply{Request: wire.KindName(req.WireKind()), Subject: subject, OK: err == nil, Reason: note}
	if err != nil {
		r.Reason = err.Error()
		ctx.Log().Info("configsrv: request refused", "request", r.Request, "subject", subject, "reason", r.Reason)
	}
	send(ctx, to, r)
}

// addPolicy adds or replaces p, and creates its failback twin if it has
// none (the twin's values are fixed: replacing p leaves it as it is).
func (s *Server) addPolicy(p proto.Policy) {
	s.policies[p.Name] = p
	fb := proto.FailbackPolicy(p.Name)
	if _, ok := s.policies[fb.Name]; !ok {
		s.policies[fb.Name] = fb
	}
}

// checkNotFailback refuses a policy name reserved for failback twins: the
// user may not create, replace or protect with one. why says which.
func checkNotFailback(name, why string) error {
	base, ok := proto.FailbackOf(name)
	if !ok {
		return nil
	}
	fb := proto.FailbackPolicy(base)
	return fmt.Errorf("%w: %s is the failback policy of %s, made with it and fixed (RPO threshold %v, retention %v, app-consistent every %v): "+
		"%s (names ending in %s are reserved for failback policies)",
		ErrFailbackPolicy, name, base, fb.RPOThreshold, fb.Retention, fb.AppInterval, why, proto.FailbackSuffix)
}

// createPolicy adds or replaces a policy, with its failback twin. Machines
// using a replaced policy get it through PolicyFor again (retention on the
// Azure side); their agents keep the bookmark intervals of the Protect they
// have until the next one. A failback policy is refused (ErrFailbackPolicy).
func (s *Server) createPolicy(ctx runtime.Context, from runtime.Addr, req *proto.CreatePolicy) {
	p := req.Policy
	if err := checkNotFailback(p.Name, "it cannot be edited"); err != nil {
		reply(ctx, from, req, p.Name, "", err)
		return
	}
	if err := p.Validate(); err != nil {
		reply(ctx, from, req, p.Name, "", fmt.Errorf("%w: %w", ErrInvalidPolicy, err))
		return
	}
	old, exists := s.policies[p.Name]
	s.addPolicy(p)
	note := "created"
	if exists {
		note = "replaced"
	}
	if !exists || old != p {
		ctx.Log().Info("configsrv: policy "+note, "policy", p.Name)
	}
	if exists && old != p {
		for _, m := range s.sortedMachines() {
			if m.policy == p.Name && m.state.watched() && m.direction != DirectionFailback {
				m.policyPending = true
				s.sendPolicyFor(ctx, m)
			}
		}
		if old.CrashInterval != p.CrashInterval || old.AppInterval != p.AppInterval {
			s.groupPolicyReplaced(ctx, p.Name)
		}
	}
	reply(ctx, from, req, p.Name, note, nil)
}

// enable starts protecting a machine: push install when no agent is
// registered (VMs only), then Protect once the agent registers. A request
// repeated after the machine is enabled is refused with ErrAlreadyProtected
// and changes nothing.
//
// A member of a replication group that still replicates (its other members
// enabled) is enabled again within its group, with the group's policy; a
// machine whose group was disabled has left it and is enabled alone.
func (s *Server) enable(ctx runtime.Context, from runtime.Addr, req *proto.EnableReplication) {
	name := req.Machine
	m, ok := s.machines[name]
	if err := enableable(name, m, ok); err != nil {
		reply(ctx, from, req, name, "", err)
		return
	}
	g := s.memberGroup(m)
	policy := req.Policy
	if g != nil && policy == "" {
		policy = g.policy
	}
	if policy == "" {
		policy = proto.DefaultPolicy().Name
	}
	if _, ok := s.policies[policy]; !ok {
		reply(ctx, from, req, name, "", fmt.Errorf("%w %q", ErrUnknownPolicy, policy))
		return
	}
	if err := checkNotFailback(policy, "only reprotect (Azure to on-premises) uses it"); err != nil {
		reply(ctx, from, req, name, "", err)
		return
	}
	if m.state.enabled() {
		reply(ctx, from, req, name, "", fmt.Errorf("%w: %s is %s with policy %s", ErrAlreadyProtected, name, m.state, m.policy))
		return
	}
	if g != nil && policy != g.policy {
		reply(ctx, from, req, name, "", fmt.Errorf("%w: %s is a member of group %s, whose policy is %s (not %s)",
			ErrInGroup, name, g.name, g.policy, policy))
		return
	}
	if g == nil {
		m.group = ""
	}
	reply(ctx, from, req, name, s.enableMachine(ctx, m, policy), nil)
}

// enableable says why a machine cannot be enabled at all (unknown, or a
// physical server without an agent), nil when it can.
func enableable(name string, m *machine, ok bool) error {
	switch {
	case !ok:
		return fmt.Errorf("%w %s: not in vCenter and no agent has registered for it "+
			"(a physical server needs the Mobility service installed by hand)", ErrUnknownMachine, name)
	case !m.inVCenter && !m.registered:
		return fmt.Errorf("%w for %s: it is not in vCenter, so there is no push install; "+
			"install the Mobility service by hand with the vault's passphrase (last registration: %s)",
			ErrNoAgent, name, orNone(m.lastRefusal))
	}
	return nil
}

// enableMachine starts replication of m with policy (both checked): a new
// generation and job, PolicyFor, then Protect at once when its agent is
// registered, or push install. It returns what happens next.
func (s *Server) enableMachine(ctx runtime.Context, m *machine, policy string) string {
	name := m.name
	now := ctx.Now()
	m.policy = policy
	m.direction = DirectionForward
	m.gen++ // a new enablement starts a new generation, so the Azure side never mixes it with an old one
	m.enabledAt = now
	m.points = map[string]time.Time{}
	m.newestPoint, m.rpo, m.rpoAt, m.lastError = time.Time{}, 0, time.Time{}, ""
	j := s.newJob(ctx, JobEnable, name)
	m.job = j
	j.stepEnd(now, StepPrerequisites, JobSucceeded, "policy "+policy)
	s.setState(ctx, m, StateEnabling, "replication enabled with policy "+policy)
	m.policyPending = true
	s.sendPolicyFor(ctx, m)

	if m.registered {
		j.stepEnd(now, StepInstall, JobSkipped, "agent already registered")
		j.stepEnd(now, StepRegister, JobSucceeded, "agent at "+string(m.agent))
		s.protect(ctx, m, StateInitialSync, fmt.Sprintf("Protect gen %d sent", m.gen))
		return "agent registered; initial replication started"
	}
	s.pushInstall(ctx, m)
	return "push install of the Mobility service started"
}

// disable stops protecting a machine: the agent is told to stop and the
// machine's health alerts end.
func (s *Server) disable(ctx runtime.Context, from runtime.Addr, req *proto.DisableReplication) {
	m, ok := s.machines[req.Machine]
	if !ok {
		reply(ctx, from, req, req.Machine, "", fmt.Errorf("%w %s", ErrUnknownMachine, req.Machine))
		return
	}
	if !m.state.enabled() {
		reply(ctx, from, req, m.name, "", fmt.Errorf("%w for %s (state %s)", ErrNotProtected, m.name, m.state))
		return
	}
	s.finish(ctx, m.job, JobFailed, "replication disabled")
	m.job, m.await = nil, nil
	j := s.newJob(ctx, JobDisable, m.name)
	now := ctx.Now()
	s.setState(ctx, m, StateDisabled, "replication disabled by request")
	m.policyPending = false
	if m.registered {
		send(ctx, m.agent, &proto.Unprotect{Machine: m.name})
		j.stepEnd(now, StepStop, JobSucceeded, "Unprotect sent to the agent")
	} else {
		j.stepEnd(now, StepStop, JobSkipped, "no agent registered")
	}
	s.finish(ctx, j, JobSucceeded, "")
	s.clear(ctx, AlertRPO, m.name)
	s.clear(ctx, AlertHeartbeatLost, m.name)
	reply(ctx, from, req, m.name, "replication disabled", nil)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
