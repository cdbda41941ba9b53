package azuresvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// What failover asks of the Azure side (proto.StopReplication, MakeLatest,
// CommitPoint), and what reprotect to Azure asks after a failback
// (proto.ResumeReplication). Requests for one machine are served one at a time, in
// arrival order, between the machine's other Ops (kick calls
// serveFailover before anything else), and each is answered with a
// proto.Reply to its sender, Req echoed:
//
//   - StopReplication persists Catalog.Stopped. From then on the machine's
//     stream is consumed and dropped (its cache items deleted, with a log
//     line) and nothing else is done for it: no apply, no point, no
//     retention — its points wait for CommitPoint.
//   - MakeLatest lists the machine's cache items (so that what is "already
//     in the cache" is what storage holds after the request), lets the
//     machine apply everything it can in order, and then — only if a
//     change-log record was applied after the newest point — snapshots the
//     replica disks as a crash-consistent point, proto.LatestPointID. It
//     is crash-consistent because items are applied whole and in order:
//     the replica is the source after a prefix of its writes. The Reply's
//     Result is the point's id, "" when nothing was pending.
//   - CommitPoint, for a stopped machine only, keeps the named point and
//     deletes every other one with its snapshots (catalog first, then the
//     snapshots, as retention does).
//   - ResumeReplication clears Catalog.Stopped and is answered once the
//     catalog without it is stored; a machine that is not stopped is
//     answered OK at once. The replica disks, the generation and the
//     points are kept as they are: the next generation's SyncStart gets
//     the checksums of the replica as it stands (not Fresh), so its sync
//     sends only the blocks that differ, and from its SyncEnd on
//     bookmarks become points again. Items of the old stream that were
//     dropped while stopped leave a gap that the new SyncStart is found
//     past (see kick's probing), as after a lost cache.

// ErrFailoverRequest is a failover request the Azure side refuses.
var ErrFailoverRequest = errors.New("azuresvc: failover request refused")

// Request kinds of foRequest.
const (
	foStop   = "stop"
	foLatest = "latest"
	foCommit = "commit"
	foResume = "resume"
)

// foRequest is one failover request of a machine.
type foRequest struct {
	kind  string
	msg   wire.Msg
	req   string
	from  runtime.Addr
	point string // foCommit
	// foLatest: listed is set once the cache was listed after the
	// request; target is the last item that listing found.
	listed bool
	target uint64
}

func (s *Service) failoverRequest(ctx runtime.Context, from runtime.Addr, msg wire.Msg) {
	r := foRequest{msg: msg, from: from}
	var machine string
	switch m := msg.(type) {
	case *proto.StopReplication:
		r.kind, r.req, machine = foStop, m.Req, m.Machine
	case *proto.MakeLatest:
		r.kind, r.req, machine = foLatest, m.Req, m.Machine
	case *proto.CommitPoint:
		r.kind, r.req, r.point, machine = foCommit, m.Req, m.Point, m.Machine
	case *proto.ResumeReplication:
		r.kind, r.req, machine = foResume, m.Req, m.Machine
	}
	if machine == "" {
		s.reply(ctx, r, "", "", fmt.Errorf("%w: no machine named", ErrFailoverRequest))
		return
	}
	ctx.Log().Info("azuresvc: failover request", "machine", machine, "request", r.kind, "req", r.req, "point", r.point)
	m := s.machine(machine)
	m.fo = append(m.fo, r)
	s.kick(ctx, m)
}

// reply answers r: OK with result when err is nil.
func (s *Service) reply(ctx runtime.Context, r foRequest, machine, result string, err error) {
	rep := &proto.Reply{Request: wire.KindName(r.msg.WireKind()), Subject: machine, OK: err == nil, Req: r.req, Result: result}
	if err != nil {
		rep.Reason = s.scrub(err.Error())
		ctx.Log().Warn("azuresvc: failover request failed", "machine", machine, "request", r.kind, "req", r.req, "err", rep.Reason)
	}
	ctx.Send(r.from, wire.Encode(rep))
}

// pop answers the head request and removes it.
func (s *Service) pop(ctx runtime.Context, m *machine, result string, err error) {
	r := m.fo[0]
	m.fo = m.fo[1:]
	s.reply(ctx, r, m.name, result, err)
}

// serveFailover serves m's head request, or drops a stopped machine's
// items; it reports whether it started an Op or m must do nothing else.
// m is loaded and idle.
func (s *Service) serveFailover(ctx runtime.Context, m *machine) bool {
	for len(m.fo) > 0 {
		r := &m.fo[0]
		if m.etag == "" {
			s.pop(ctx, m, "", fmt.Errorf("%w: %s has no replica (no catalog)", ErrFailoverRequest, m.name))
			if len(m.fo) == 0 && len(m.listed) == 0 && m.cat.Applied == 0 {
				// A name the service never replicated: forget it, so
				// that a request cannot add a machine to its status.
				delete(s.machines, m.name)
				return true
			}
			continue
		}
		switch r.kind {
		case foStop:
			if m.cat.Stopped {
				s.pop(ctx, m, "", nil)
				continue
			}
			s.startFailoverOp(ctx, m, opStop, func(a *applier) (string, error) {
				err := a.update(func(next *Catalog) (bool, error) {
					changed := !next.Stopped
					next.Stopped = true
					return changed, nil
				})
				if err == nil {
					a.note(slog.LevelInfo, "azuresvc: replication stopped for failover", "applied", a.cat.Applied, "points", len(a.cat.Points))
				}
				return "", err
			})
			return true
		case foResume:
			if !m.cat.Stopped {
				s.pop(ctx, m, "", nil)
				continue
			}
			s.startFailoverOp(ctx, m, opResume, func(a *applier) (string, error) {
				err := a.update(func(next *Catalog) (bool, error) {
					changed := next.Stopped
					next.Stopped = false
					return changed, nil
				})
				if err == nil {
					a.note(slog.LevelInfo, "azuresvc: replication resumed", "applied", a.cat.Applied, "gen", a.cat.Gen, "points", len(a.cat.Points))
				}
				return "", err
			})
			return true
		case foCommit:
			if !m.cat.Stopped {
				s.pop(ctx, m, "", fmt.Errorf("%w: commit of %s: its replication was not stopped by a failover", ErrFailoverRequest, m.name))
				continue
			}
			if _, ok := m.cat.FindPoint(r.point); !ok {
				s.pop(ctx, m, "", fmt.Errorf("%w: commit of %s: no point %q", ErrFailoverRequest, m.name, r.point))
				continue
			}
			keep := r.point
			s.startFailoverOp(ctx, m, opCommit, func(a *applier) (string, error) {
				var drop []Point
				err := a.update(func(next *Catalog) (bool, error) {
					drop = nil
					next.Points = slices.DeleteFunc(next.Points, func(p Point) bool {
						if p.ID != keep {
							drop = append(drop, p)
							return true
						}
						return false
					})
					return len(drop) > 0, nil
				})
				if err != nil {
					return "", err
				}
				a.dropped(drop, "commit")
				a.note(slog.LevelInfo, "azuresvc: point committed", "point", keep, "deleted", len(drop))
				return keep, nil
			})
			return true
		case foLatest:
			switch {
			case m.cat.Stopped:
				s.pop(ctx, m, "", fmt.Errorf("%w: latest of %s: its replication is stopped", ErrFailoverRequest, m.name))
				continue
			case !m.cat.Synced:
				s.pop(ctx, m, "", fmt.Errorf("%w: latest of %s: the replica is not synced", ErrFailoverRequest, m.name))
				continue
			case !r.listed:
				s.startLatestList(ctx, m)
				return true
			}
			return false // apply what is listed; finishLatest ends it
		}
	}
	if m.cat.Stopped {
		var drop []uint64
		for seq := range m.listed {
			drop = append(drop, seq)
		}
		if len(drop) > 0 {
			slices.Sort(drop)
			ctx.Log().Info("azuresvc: replication stopped: items dropped", "machine", m.name, "items", len(drop), "first", drop[0], "last", drop[len(drop)-1])
			s.startCleanup(ctx, m, drop)
		}
		return true
	}
	return false
}

// finishLatest ends a MakeLatest once m has applied everything it can of
// what was listed; it reports whether it started an Op.
func (s *Service) finishLatest(ctx runtime.Context, m *machine) bool {
	if len(m.fo) == 0 || m.fo[0].kind != foLatest || !m.fo[0].listed {
		return false
	}
	// The newest point of this generation. A point of an older one may be
	// of an older log (a resync sets AppliedLogSeq to its LogFrom−1, and a
	// fresh agent's log numbers from 1 again: a physical server failed
	// back to a new VM), whose positions say nothing of what of this log
	// is in a point. Without a point of this generation, the synced
	// replica (the source at AppliedLogSeq) is made one.
	var newest uint64
	for _, p := range m.cat.Points {
		if p.Gen == m.cat.Gen {
			newest = max(newest, p.Seq)
		}
	}
	if m.cat.AppliedLogSeq <= newest {
		ctx.Log().Info("azuresvc: latest: nothing pending, no point made", "machine", m.name, "applied_log_seq", m.cat.AppliedLogSeq)
		s.pop(ctx, m, "", nil)
		return false
	}
	if m.cat.Applied < m.fo[0].target {
		ctx.Log().Warn("azuresvc: latest: items missing, point made of what was applied", "machine", m.name, "applied", m.cat.Applied, "listed", m.fo[0].target)
	}
	s.startFailoverOp(ctx, m, opLatest, func(a *applier) (string, error) {
		// A point stands before its log position (a bookmark's record
		// follows the writes it covers): this one covers every record
		// applied, so it stands right after the last.
		seq := a.cat.AppliedLogSeq + 1
		id := proto.LatestPointID(a.cat.Machine, seq)
		pt := Point{ID: id, Kind: proto.Crash, Time: a.now, Seq: seq, Gen: a.cat.Gen}
		md := map[string]string{mdPoint: id, mdKind: pt.Kind.String(), mdTime: strconv.FormatInt(a.now.UnixNano(), 10), mdGen: strconv.FormatUint(a.cat.Gen, 10)}
		rc := replicaContainer(a.st.prefix)
		for _, d := range a.cat.Disks {
			snap, err := a.st.store.Snapshot(a.ctx, rc, d.Blob, md)
			if err != nil {
				return "", fmt.Errorf("azuresvc: snapshot disk %d of %s for %s: %w", d.Index, a.cat.Machine, id, err)
			}
			pt.Snapshots = append(pt.Snapshots, snap)
		}
		err := a.update(func(next *Catalog) (bool, error) {
			if _, ok := next.FindPoint(id); ok {
				return false, nil
			}
			next.Points = append(next.Points, pt)
			return true, nil
		})
		if err != nil {
			return "", err
		}
		a.note(slog.LevelInfo, "azuresvc: recovery point", "point", id, "kind", pt.Kind, "seq", seq, "gen", pt.Gen, "reason", "latest")
		a.event(&proto.ReplicaEvent{Event: proto.EventPoint, PointID: id, Kind: pt.Kind, PointTime: pt.Time, Seq: seq})
		return id, nil
	})
	return true
}

// foResult is a failover Op's value.
type foResult struct {
	applyResult
	result string
}

// startFailoverOp runs fn in an Op on a clone of m's catalog.
func (s *Service) startFailoverOp(ctx runtime.Context, m *machine, kind opKind, fn func(a *applier) (string, error)) {
	m.busy = true
	st, now, cat, etag, th := s.st, s.now, m.cat.Clone(), m.etag, s.thinningFor(m)
	s.start(ctx, pending{kind: kind, machine: m.name}, runtime.Op{Name: "azuresvc-failover-" + m.fo[0].kind, Run: func(ctx context.Context) (any, error) {
		a := &applier{ctx: ctx, st: st, now: now, cat: cat, etag: etag, th: th}
		res, err := fn(a)
		return foResult{applyResult: a.result(), result: res}, err
	}})
}

// latestListed is the machine's cache items a MakeLatest listing found.
type latestListed map[uint64]int64

func (s *Service) startLatestList(ctx runtime.Context, m *machine) {
	m.busy = true
	st, name := s.st, m.name
	s.start(ctx, pending{kind: opLatestList, machine: name}, runtime.Op{Name: "azuresvc-failover-list", Run: func(ctx context.Context) (any, error) {
		items, err := st.store.List(ctx, cacheContainer(st.prefix), name+"/")
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return nil, err
		}
		out := latestListed{}
		for _, it := range items {
			if mc, seq, err := proto.ParseCacheBlobName(it.Name); err == nil && mc == name && seq > 0 {
				out[seq] = it.Size
			}
		}
		return out, nil
	}})
}

// failoverDone ends a failover Op of p.machine and answers its request.
func (s *Service) failoverDone(ctx runtime.Context, p pending, ev runtime.Done) {
	m := s.machines[p.machine]
	m.busy = false
	defer s.kick(ctx, m)
	if p.kind == opLatestList {
		if ev.Err != nil {
			s.pop(ctx, m, "", fmt.Errorf("azuresvc: latest of %s: list the cache: %w", m.name, ev.Err))
			return
		}
		r := &m.fo[0]
		r.listed, r.target = true, m.cat.Applied
		for seq, size := range ev.Value.(latestListed) {
			if seq > m.cat.Applied {
				m.listed[seq] = size
				r.target = max(r.target, seq)
			}
		}
		ctx.Log().Info("azuresvc: latest: applying what the cache holds", "machine", m.name, "applied", m.cat.Applied, "up_to", r.target)
		return
	}
	res, ok := ev.Value.(foResult)
	if ok && res.cat != nil {
		m.cat, m.etag = res.cat, res.etag
		s.report(ctx, res.applyResult)
	} else {
		m.cat = nil // unknown outcome: reload
	}
	if ev.Err != nil {
		m.held = true
		s.pop(ctx, m, "", ev.Err)
		return
	}
	s.pop(ctx, m, res.result, nil)
}
