package configsrv

import (
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// sendPolicyFor tells the Azure side a machine's policy. It is resent on
// every check until the Azure side reports anything for the machine.
// A member of a replication group's PolicyFor names the group and all its
// members, so that the Azure side can tell group recovery points.
func (s *Server) sendPolicyFor(ctx runtime.Context, m *machine) {
	pf := &proto.PolicyFor{Machine: m.name, Policy: s.policyOf(m)}
	if g := s.memberGroup(m); g != nil {
		pf.Group, pf.Members = g.name, slices.Clone(g.members)
	}
	send(ctx, s.cfg.Azure, pf)
}

// replicaEvent applies what the Azure side reports. Events are idempotent:
// a duplicate sync-complete or point changes nothing. Group events are a
// group-point (Machine is the member whose point completed it) and a
// pruned event with a Group and no Machine (a group point deleted); a
// member's own events may carry its Group and are handled as any machine's.
//
// In failback the master target reports the machine's events; the Azure
// side's (its sync-complete announcements of the stopped replica) are
// dropped then.
func (s *Server) replicaEvent(ctx runtime.Context, from runtime.Addr, ev *proto.ReplicaEvent) {
	switch {
	case ev.Event == proto.EventGroupPoint:
		s.groupPoint(ctx, ev)
		return
	case ev.Event == proto.EventPruned && ev.Group != "" && ev.Machine == "":
		s.groupPointPruned(ctx, ev)
		return
	}
	m, ok := s.machines[ev.Machine]
	if !ok {
		ctx.Log().Warn("configsrv: replica event for an unknown machine dropped", "machine", ev.Machine, "event", ev.Event)
		return
	}
	if s.fromOtherSide(m, from) {
		ctx.Log().Debug("configsrv: replica event of the side not replicated to dropped", "machine", m.name,
			"event", ev.Event, "from", string(from))
		return
	}
	m.policyPending = false
	if ev.Applied > m.applied {
		m.applied = ev.Applied
	}
	switch ev.Event {
	case proto.EventSyncStarted:
		if ev.Gen > m.syncStartedGen {
			m.syncStartedGen = ev.Gen
		}
	case proto.EventSyncComplete:
		if ev.Gen > m.syncStartedGen {
			m.syncStartedGen = ev.Gen
		}
		if ev.Gen != m.gen || (m.state != StateInitialSync && m.state != StateResyncing) {
			return
		}
		if m.job != nil {
			m.job.stepEnd(ctx.Now(), StepReplicate, JobSucceeded, fmt.Sprintf("gen %d synced", ev.Gen))
			s.finish(ctx, m.job, JobSucceeded, "")
			m.job = nil
		}
		s.setState(ctx, m, StateProtected, fmt.Sprintf("sync-complete for gen %d", ev.Gen))
		s.clear(ctx, AlertItemRefused, m.name)
	case proto.EventPoint:
		if _, dup := m.points[ev.PointID]; dup || ev.PointID == "" {
			return
		}
		m.points[ev.PointID] = ev.PointTime
		if ev.PointTime.After(m.newestPoint) {
			m.newestPoint = ev.PointTime
		}
		s.evalRPO(ctx, m, ctx.Now())
	case proto.EventPruned:
		delete(m.points, ev.PointID)
	case proto.EventItemRefused:
		m.lastError = ev.Detail
		if ev.Seq <= m.refusedItem {
			return // a duplicate, or an item a resync already replaced
		}
		m.refusedItem = ev.Seq
		s.raise(ctx, AlertItemRefused, m.name, fmt.Sprintf("item %d refused by the Azure side, never applied: %s", ev.Seq, ev.Detail))
		if m.state.enabled() {
			s.orderResync(ctx, m, fmt.Sprintf("Azure side refused item %d (does not open)", ev.Seq))
		}
	case proto.EventPointLost:
		delete(m.points, ev.PointID)
		s.raise(ctx, AlertPointLost, m.name+"/"+ev.PointID, fmt.Sprintf("recovery point %s (%s) lost: %s", ev.PointID, ev.Kind, ev.Detail))
	case proto.EventApplyError:
		m.lastError = ev.Detail
		ctx.Log().Warn("configsrv: Azure side could not apply", "machine", m.name, "detail", ev.Detail)
	}
}

// relayChecksums forwards the replica's checksums to the machine's agent.
func (s *Server) relayChecksums(ctx runtime.Context, from runtime.Addr, c *proto.Checksums) {
	m, ok := s.machines[c.Machine]
	if !ok || !m.registered || s.fromOtherSide(m, from) {
		ctx.Log().Warn("configsrv: checksums for a machine without an agent dropped", "machine", c.Machine)
		return
	}
	m.policyPending = false
	send(ctx, m.agent, c)
}

// evalRPO computes the machine's RPO (now − newest point; before the first
// point, now − when replication was enabled) and raises or clears the
// RPO alert. It changes nothing else: the threshold is a warning only.
func (s *Server) evalRPO(ctx runtime.Context, m *machine, now time.Time) {
	if !m.state.watched() {
		m.rpo, m.rpoAt = 0, now
		s.clear(ctx, AlertRPO, m.name)
		return
	}
	base := m.enabledAt
	if !m.newestPoint.IsZero() {
		base = m.newestPoint
	}
	m.rpo, m.rpoAt = max(now.Sub(base), 0), now
	threshold := s.policyOf(m).RPOThreshold
	if m.rpo > threshold {
		s.raise(ctx, AlertRPO, m.name, fmt.Sprintf("RPO %v over the threshold %v", m.rpo, threshold))
	} else {
		s.clear(ctx, AlertRPO, m.name)
	}
}

// evalHeartbeat raises agent-heartbeat-lost when an enabled machine's agent
// has been silent for HeartbeatLost (counted from its last heartbeat, its
// registration, the enablement or the server's start, whichever is latest).
// A heartbeat clears it.
func (s *Server) evalHeartbeat(ctx runtime.Context, m *machine, now time.Time) {
	if !m.state.watched() || !m.registered {
		return
	}
	last := m.lastHeartbeat
	for _, t := range []time.Time{m.registeredAt, m.enabledAt, s.startedAt} {
		if t.After(last) {
			last = t
		}
	}
	if now.Sub(last) > s.cfg.HeartbeatLost {
		s.raise(ctx, AlertHeartbeatLost, m.name, fmt.Sprintf("no heartbeat for %v", now.Sub(last)))
	}
}

// psReport is the last PSHealth of a process server.
type psReport struct {
	at time.Time
	h  proto.PSHealth
}

// psHealth records a process server's report and raises or clears the
// cache-low and backlog-high alerts.
func (s *Server) psHealth(ctx runtime.Context, from runtime.Addr, h *proto.PSHealth) {
	name := h.Server
	if name == "" {
		name = string(from)
	}
	c := *h
	c.Machines = append([]proto.MachineBacklog(nil), h.Machines...)
	s.ps[name] = &psReport{at: ctx.Now(), h: c}
	free := h.CacheCapBytes - h.CacheUsedBytes
	if h.CacheCapBytes > 0 && float64(free) < CacheLowFraction*float64(h.CacheCapBytes) {
		s.raise(ctx, AlertPSCacheLow, name, fmt.Sprintf("cache free %d of %d bytes", free, h.CacheCapBytes))
	} else {
		s.clear(ctx, AlertPSCacheLow, name)
	}
	if h.EstimateUpload > BacklogHigh {
		s.raise(ctx, AlertPSBacklogHigh, name, fmt.Sprintf("upload estimate %v", h.EstimateUpload))
	} else {
		s.clear(ctx, AlertPSBacklogHigh, name)
	}
}
