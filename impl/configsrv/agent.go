package configsrv

import (
	"context"
	"fmt"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Agent phases as Heartbeat.Phase reports them.
const (
	PhaseIdle           = "idle"
	PhaseSyncing        = "syncing"
	PhaseReplicating    = "replicating"
	PhaseResyncRequired = "resync-required"
)

// pushInstall runs the Mobility service installer in the VM's guest.
func (s *Server) pushInstall(ctx runtime.Context, m *machine) {
	client, ref, auth := s.cfg.VSphere, m.vm.Ref, s.cfg.InstallAuth
	program := installer(m.vm.GuestOS)
	args := fmt.Sprintf("--cs %s --vault %s", ctx.Self(), s.cfg.VaultID)
	m.job.stepRun(ctx.Now(), StepInstall, program)
	if client == nil {
		s.installFailed(ctx, m, "no vCenter client configured")
		return
	}
	ctx.Log().Info("configsrv: push install", "machine", m.name, "program", program)
	s.ops.Start(ctx, runtime.Op{Name: "push install " + m.name, Run: func(ctx context.Context) (any, error) {
		return client.RunInGuest(ctx, ref, auth, program, args)
	}}, pendingOp{kind: opInstall, machine: m.name, job: m.job.id})
}

// installed applies a push install's result. The agent may have registered
// before the result arrives (the installer starts it): then Protect is out
// already and only the step is recorded.
func (s *Server) installed(ctx runtime.Context, op pendingOp, ev runtime.Done) {
	m := s.machines[op.machine]
	if m == nil || m.job == nil || m.job.id != op.job {
		ctx.Log().Info("configsrv: stale push install result dropped", "machine", op.machine, "job", op.job)
		return
	}
	code, _ := ev.Value.(int)
	if ev.Err != nil || code != 0 {
		if m.state != StateEnabling {
			// The agent registered and replication began: the installer's
			// verdict no longer decides anything.
			m.job.stepEnd(ctx.Now(), StepInstall, JobFailed, describeErr(code, ev.Err))
			return
		}
		s.installFailed(ctx, m, describeErr(code, ev.Err))
		return
	}
	m.job.stepEnd(ctx.Now(), StepInstall, JobSucceeded, "installer exited with code 0")
	if !m.registered {
		m.job.stepRun(ctx.Now(), StepRegister, "waiting for the agent to register")
	}
	s.clear(ctx, AlertPushInstallFailed, m.name)
}

func (s *Server) installFailed(ctx runtime.Context, m *machine, why string) {
	reason := "push install failed: " + why
	m.job.stepEnd(ctx.Now(), StepInstall, JobFailed, why)
	s.finish(ctx, m.job, JobFailed, reason)
	m.job = nil
	m.policyPending = false
	s.setState(ctx, m, StateUnprotected, reason)
	s.raise(ctx, AlertPushInstallFailed, m.name, why)
}

// register verifies an agent's proof of the vault passphrase and remembers
// where the agent is. Registering again (retries, agent restarts) is
// answered the same way and changes nothing else.
func (s *Server) register(ctx runtime.Context, from runtime.Addr, r *proto.Register) {
	if r.Machine == "" {
		send(ctx, from, &proto.RegisterReply{OK: false, Reason: "no machine name", VaultID: s.cfg.VaultID})
		return
	}
	m, ok := s.machines[r.Machine]
	if !ok {
		m = newMachine(r.Machine)
		m.physical = true
		s.known(ctx, m, "agent registered from a machine not in vCenter (physical server)")
	}
	why := ""
	switch {
	case s.keysErr != nil:
		why = fmt.Errorf("%w: %w", ErrNoVault, s.keysErr).Error()
	case !s.keys.Verify(r.Machine, r.Proof):
		why = ReasonWrongPassphrase
	}
	if why != "" {
		m.lastRefusal = "refused: " + why
		send(ctx, from, &proto.RegisterReply{Machine: r.Machine, OK: false, Reason: why, VaultID: s.cfg.VaultID})
		s.raise(ctx, AlertRegistrationRefused, m.name, why)
		if m.registered {
			// A machine whose agent was accepted before keeps it: a refused
			// impostor does not unregister it.
			return
		}
		if m.state == StateEnabling {
			reason := "agent registration refused: " + why
			m.job.stepEnd(ctx.Now(), StepRegister, JobFailed, why)
			s.finish(ctx, m.job, JobFailed, reason)
			m.job = nil
			m.policyPending = false
			s.setState(ctx, m, StateUnprotected, reason)
		}
		return
	}
	send(ctx, from, &proto.RegisterReply{Machine: r.Machine, OK: true, VaultID: s.cfg.VaultID})
	if from == m.staleAgent {
		// The agent of the side the machine left (the source VM after a
		// failover, the Azure VM after a failback): it knows the
		// passphrase, but the machine does not run there.
		ctx.Log().Info("configsrv: agent of the side the machine left registered; ignored", "machine", m.name,
			"agent", string(from), "state", string(m.state))
		// During a failback the on-premises VM powers on (and its agent
		// registers) before the failback is committed: remembered, it
		// becomes the machine's agent at the commit (failedBack).
		m.lateReg = from
		return
	}
	m.regs++
	s.clear(ctx, AlertRegistrationRefused, m.name)
	if !m.inVCenter {
		m.physical = true
	}
	m.lastRefusal = ""
	m.diskSizes = append([]int64(nil), r.DiskSizes...)
	if !m.registered || m.agent != from {
		ctx.Log().Info("configsrv: agent registered", "machine", m.name, "agent", string(from), "physical", m.physical)
	}
	if !m.registered {
		m.registeredAt = ctx.Now()
	}
	m.registered, m.agent = true, from
	if m.state == StateEnabling {
		m.job.stepEnd(ctx.Now(), StepRegister, JobSucceeded, "agent at "+string(from))
		s.protect(ctx, m, StateInitialSync, fmt.Sprintf("agent registered; Protect gen %d sent", m.gen))
	}
}

// protect sends Protect for the machine's current generation and moves it to
// st (initial-sync or resyncing).
func (s *Server) protect(ctx runtime.Context, m *machine, st State, reason string) {
	s.sendProtect(ctx, m)
	if m.job != nil {
		m.job.stepRun(ctx.Now(), StepReplicate, fmt.Sprintf("gen %d", m.gen))
	}
	s.setState(ctx, m, st, reason)
}

// sendProtect sends Protect for m's current generation and, to a member of
// a replication group, the GroupConfig after it (an agent joins its group
// once it knows what to replicate).
//
// In failback the Protect names the failback policy and the process server
// in Azure the reprotect chose.
func (s *Server) sendProtect(ctx runtime.Context, m *machine) {
	ps := s.cfg.ProcessServer
	if m.direction == DirectionFailback {
		ps = m.failbackPS
	}
	send(ctx, m.agent, &proto.Protect{Machine: m.name, Policy: s.policyOf(m),
		ProcessServer: string(ps), Gen: m.gen})
	s.sendGroupConfig(ctx, m)
}

// heartbeat records an agent's report and reacts to what it shows the
// agent missed: a lost Protect (idle, still resync-required after a resync
// was ordered, or working on a generation below the machine's while the
// Azure side has not seen that generation start) is sent again; a lost Unprotect likewise; change
// tracking that broke orders a resync; a group member that reports another
// group or an older GroupVersion gets its GroupConfig again.
func (s *Server) heartbeat(ctx runtime.Context, from runtime.Addr, hb *proto.Heartbeat) {
	m, ok := s.machines[hb.Machine]
	if !ok || !m.registered {
		ctx.Log().Warn("configsrv: heartbeat from an unregistered agent dropped", "machine", hb.Machine, "from", string(from))
		return
	}
	if from == m.staleAgent {
		ctx.Log().Info("configsrv: heartbeat from the side the machine left dropped", "machine", hb.Machine, "from", string(from))
		return
	}
	m.lastHeartbeat = ctx.Now()
	m.hb = *hb
	s.clear(ctx, AlertHeartbeatLost, m.name)
	// Bitmap mode is not broken: the agent resyncs its dirty blocks itself
	// once drained; an agent that needs a full resync says so (its phase).
	broken := hb.Phase == PhaseResyncRequired
	protectSent := true // every Protect is followed by the GroupConfig
	switch {
	case m.state == StateDisabled:
		if hb.Phase != PhaseIdle && hb.Phase != "" {
			ctx.Log().Info("configsrv: agent still replicating a disabled machine; Unprotect resent", "machine", m.name)
			send(ctx, m.agent, &proto.Unprotect{Machine: m.name})
		}
	case !m.state.replicating():
		protectSent = false
	case hb.Phase == PhaseIdle:
		ctx.Log().Info("configsrv: agent idle; Protect resent", "machine", m.name, "gen", m.gen)
		s.sendProtect(ctx, m)
	case broken && m.state == StateResyncing:
		// Until the Azure side saw this generation start, the agent may
		// simply not have received its Protect.
		if m.syncStartedGen < m.gen {
			ctx.Log().Info("configsrv: agent has not started the resync; Protect resent", "machine", m.name, "gen", m.gen)
			s.sendProtect(ctx, m)
		} else {
			protectSent = false
		}
	case hb.Gen < m.gen && m.syncStartedGen < m.gen:
		// A resync this server ordered (the Azure side refused an item)
		// whose Protect was lost: the agent, not knowing, replicates its
		// older generation and never asks for one (swarm seed 130: the
		// Protect gen 2 lost on the LAN, the machine resyncing forever).
		ctx.Log().Info("configsrv: agent works on an older generation; Protect resent", "machine", m.name,
			"gen", m.gen, "agent_gen", hb.Gen)
		s.sendProtect(ctx, m)
	case broken:
		s.orderResync(ctx, m, fmt.Sprintf("agent reports phase %s, capture mode %s", hb.Phase, hb.Mode))
	default:
		protectSent = false
	}
	if !protectSent && m.state.replicating() && s.groupConfigStale(m, hb) {
		ctx.Log().Info("configsrv: agent has not applied its group config; GroupConfig resent", "machine", m.name,
			"group", m.group, "agent_group", hb.Group, "agent_version", hb.GroupVersion)
		s.sendGroupConfig(ctx, m)
	}
}

// resyncNeeded handles an agent's request for a resync. The agent repeats it
// until it receives a Protect with a higher generation, so while a resync
// is ordered and has not started on the Azure side the same Protect is sent
// again rather than a third generation ordered.
func (s *Server) resyncNeeded(ctx runtime.Context, from runtime.Addr, r *proto.ResyncNeeded) {
	m, ok := s.machines[r.Machine]
	if !ok || !m.registered || from == m.staleAgent {
		ctx.Log().Warn("configsrv: resync request from an unregistered agent dropped", "machine", r.Machine)
		return
	}
	switch {
	case m.state == StateResyncing && m.syncStartedGen < m.gen:
		s.sendProtect(ctx, m)
	case m.state.replicating():
		s.orderResync(ctx, m, "agent: "+r.Reason)
	default:
		ctx.Log().Info("configsrv: resync request ignored", "machine", m.name, "state", string(m.state))
	}
}

// orderResync starts a new generation: resync-required, then Protect gen+1
// at once (resyncing).
func (s *Server) orderResync(ctx runtime.Context, m *machine, reason string) {
	s.finish(ctx, m.job, JobFailed, "resync required: "+reason)
	s.setState(ctx, m, StateResyncRequired, reason)
	m.gen++
	j := s.newJob(ctx, JobResync, m.name)
	m.job = j
	j.stepEnd(ctx.Now(), StepOrderResync, JobSucceeded, fmt.Sprintf("gen %d: %s", m.gen, reason))
	s.protect(ctx, m, StateResyncing, fmt.Sprintf("Protect gen %d sent", m.gen))
}
