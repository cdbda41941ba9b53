package configsrv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The server's records in its store (csstore): one JSON document per
// machine, policy, group, job and alert. A record has durable fields —
// whose change is written before any message the change caused is sent —
// and volatile ones (the last heartbeat and what it reported, the applied
// count, the RPO as last evaluated): written with the record whenever it
// is written, and otherwise at most once per CheckEvery. A restarted
// server therefore shows heartbeat figures up to CheckEvery old until the
// agents' next heartbeats. Not kept at all: process servers' health
// reports and the discovery's status (both come again within a minute of
// a start), a reprotect's vCenter check in progress (the request is
// refused by the crash: the orchestrator asks again).

// machineRec is a machine's record.
type machineRec struct {
	Name           string
	InVCenter      bool
	VM             vsphere.VM
	State          State
	History        []Transition
	Policy         string
	Gen            uint64
	Job            int // the running job's id; 0 when none
	Group          string
	EnabledAt      time.Time
	SyncStartedGen uint64
	RefusedItem    uint64
	PolicyPending  bool
	Agent          runtime.Addr
	Registered     bool
	RegisteredAt   time.Time
	DiskSizes      []int64
	Physical       bool
	LastRefusal    string
	Points         map[string]time.Time
	NewestPoint    time.Time
	LastError      string
	Direction      string
	AzureVM        string
	FailedOverAt   time.Time
	FailedBackAt   time.Time
	FailbackVM     string
	MasterTarget   runtime.Addr
	FailbackPS     runtime.Addr
	StaleAgent     runtime.Addr
	Regs, RegsAt   uint64
	LateReg        runtime.Addr
	Await          *awaitRec

	// Volatile.
	LastHeartbeat time.Time
	HB            proto.Heartbeat
	Applied       uint64
	RPO           time.Duration
	RPOAt         time.Time
}

// awaitRec is a reprotect job's awaited request; Msg is its wire frame.
type awaitRec struct {
	To    runtime.Addr
	Req   string
	Step  string
	Msg   []byte
	Since time.Time
	Fresh bool
	VM    string
}

func (m *machine) record() machineRec {
	r := machineRec{Name: m.name, InVCenter: m.inVCenter, VM: m.vm, State: m.state, History: m.history, Policy: m.policy,
		Gen: m.gen, Group: m.group, EnabledAt: m.enabledAt, SyncStartedGen: m.syncStartedGen, RefusedItem: m.refusedItem,
		PolicyPending: m.policyPending, Agent: m.agent, Registered: m.registered, RegisteredAt: m.registeredAt,
		DiskSizes: m.diskSizes, Physical: m.physical, LastRefusal: m.lastRefusal, Points: m.points, NewestPoint: m.newestPoint,
		LastError: m.lastError, Direction: m.direction, AzureVM: m.azureVM, FailedOverAt: m.failedOverAt,
		FailedBackAt: m.failedBackAt, FailbackVM: m.failbackVM, MasterTarget: m.masterTarget, FailbackPS: m.failbackPS,
		StaleAgent: m.staleAgent, Regs: m.regs, RegsAt: m.regsAt, LateReg: m.lateReg,
		LastHeartbeat: m.lastHeartbeat, HB: m.hb, Applied: m.applied, RPO: m.rpo, RPOAt: m.rpoAt}
	if m.job != nil {
		r.Job = m.job.id
	}
	if a := m.await; a != nil {
		r.Await = &awaitRec{To: a.to, Req: a.req, Step: a.step, Msg: wire.Encode(a.msg), Since: a.since, Fresh: a.fresh, VM: a.vm}
	}
	return r
}

func (r *machineRec) zeroVolatile() {
	r.LastHeartbeat, r.HB, r.Applied, r.RPO, r.RPOAt = time.Time{}, proto.Heartbeat{}, 0, 0, time.Time{}
}

// machine rebuilds the machine; jobs are the restored jobs by id.
func (r machineRec) machine(jobs map[int]*job) (*machine, error) {
	m := &machine{name: r.Name, inVCenter: r.InVCenter, vm: r.VM, state: r.State, history: r.History, policy: r.Policy,
		gen: r.Gen, group: r.Group, enabledAt: r.EnabledAt, syncStartedGen: r.SyncStartedGen, refusedItem: r.RefusedItem,
		policyPending: r.PolicyPending, agent: r.Agent, registered: r.Registered, registeredAt: r.RegisteredAt,
		diskSizes: r.DiskSizes, physical: r.Physical, lastRefusal: r.LastRefusal, points: r.Points, newestPoint: r.NewestPoint,
		lastError: r.LastError, direction: r.Direction, azureVM: r.AzureVM, failedOverAt: r.FailedOverAt,
		failedBackAt: r.FailedBackAt, failbackVM: r.FailbackVM, masterTarget: r.MasterTarget, failbackPS: r.FailbackPS,
		staleAgent: r.StaleAgent, regs: r.Regs, regsAt: r.RegsAt, lateReg: r.LateReg,
		lastHeartbeat: r.LastHeartbeat, hb: r.HB, applied: r.Applied, rpo: r.RPO, rpoAt: r.RPOAt}
	if m.points == nil {
		m.points = map[string]time.Time{}
	}
	if r.Job != 0 {
		if m.job = jobs[r.Job]; m.job == nil {
			return nil, fmt.Errorf("machine %s names job %d, which is not in the store", r.Name, r.Job)
		}
	}
	if a := r.Await; a != nil {
		msg, err := wire.Decode(a.Msg)
		if err != nil {
			return nil, fmt.Errorf("machine %s: awaited request %s: %w", r.Name, a.Req, err)
		}
		m.await = &awaiting{to: a.To, req: a.Req, step: a.Step, msg: msg, since: a.Since, fresh: a.Fresh, vm: a.VM}
	}
	return m, nil
}

// jobRec is a job's record.
type jobRec struct {
	ID      int
	Kind    string
	Machine string
	Status  string
	Started time.Time
	Ended   time.Time
	Reason  string
	Steps   []StepStatus
}

func (j *job) record() jobRec {
	r := jobRec{ID: j.id, Kind: j.kind, Machine: j.machine, Status: j.status, Started: j.started, Ended: j.ended, Reason: j.reason}
	for _, st := range j.steps {
		r.Steps = append(r.Steps, StepStatus{Name: st.name, Status: st.status, Started: st.started, Ended: st.ended, Detail: st.detail})
	}
	return r
}

func (r jobRec) job() *job {
	j := &job{id: r.ID, kind: r.Kind, machine: r.Machine, status: r.Status, started: r.Started, ended: r.Ended, reason: r.Reason}
	for _, st := range r.Steps {
		j.steps = append(j.steps, &step{name: st.Name, status: st.Status, started: st.Started, ended: st.Ended, detail: st.Detail})
	}
	return j
}

// alertRec is an alert's record; ID is its position in raising order, from 1.
type alertRec struct {
	ID int
	AlertStatus
}

// groupRec is a replication group's record, its round statistics whole
// (duplicate detection and the hold window included).
type groupRec struct {
	Name           string
	Members        []string
	Master         string
	Policy         string
	Version        uint64
	EnabledAt      time.Time
	State          GroupState
	ProtectedSince time.Time
	LastEvidence   time.Time
	Rounds         roundsRec
	Points         map[string]GroupPoint
	Latest         GroupPoint
	Crash          GroupPoint
	App            GroupPoint

	// Volatile.
	RPO   time.Duration
	RPOAt time.Time
}

type roundsRec struct {
	Committed, Revoked           int
	CommittedCrash, CommittedApp int
	RevokedBy                    map[string]int
	ConsecutiveRevoked           int
	LastRevokeReason             string
	LastCommitted                time.Time
	Recent                       []RoundStatus
	Holds, CrashHolds, AppHolds  holdRec
	SeenOrder                    []string // the remembered tag ids, oldest first
	Duplicates                   int
	Masters                      map[string]masterRec
	MasterOrder                  []string
}

type holdRec struct {
	Count, Unknown int
	Max            time.Duration
	Buckets        []int
	Window         []time.Duration
	Next           int
}

func (h *holdDist) record() holdRec {
	return holdRec{Count: h.count, Unknown: h.unknown, Max: h.max, Buckets: h.buckets[:], Window: h.window, Next: h.next}
}

func (r holdRec) dist() (holdDist, error) {
	h := holdDist{count: r.Count, unknown: r.Unknown, max: r.Max, window: r.Window, next: r.Next}
	if len(r.Buckets) != len(h.buckets) {
		return h, fmt.Errorf("hold histogram has %d buckets, want %d", len(r.Buckets), len(h.buckets))
	}
	copy(h.buckets[:], r.Buckets)
	return h, nil
}

// masterRec is a masterTally's record.
type masterRec struct {
	Received, ReceivedRevoked int
	Finished, Revoked         uint64
}

func (g *group) record() groupRec {
	r := &g.rounds
	rr := roundsRec{Committed: r.committed, Revoked: r.revoked, CommittedCrash: r.committedCrash, CommittedApp: r.committedApp,
		RevokedBy: r.revokedBy, ConsecutiveRevoked: r.consecutiveRevoked, LastRevokeReason: r.lastRevokeReason,
		LastCommitted: r.lastCommitted, Recent: r.recent, Holds: r.holds.record(), CrashHolds: r.crashHolds.record(),
		AppHolds: r.appHolds.record(), SeenOrder: r.seenOrder, Duplicates: r.duplicates, MasterOrder: r.masterOrder}
	if len(r.masters) > 0 {
		rr.Masters = map[string]masterRec{}
		for k, t := range r.masters {
			rr.Masters[k] = masterRec{Received: t.received, ReceivedRevoked: t.receivedRevoked, Finished: t.finished, Revoked: t.revoked}
		}
	}
	return groupRec{Name: g.name, Members: g.members, Master: g.master, Policy: g.policy, Version: g.version,
		EnabledAt: g.enabledAt, State: g.state, ProtectedSince: g.protectedSince, LastEvidence: g.lastEvidence,
		Rounds: rr, Points: g.points, Latest: g.latest, Crash: g.crash, App: g.app, RPO: g.rpo, RPOAt: g.rpoAt}
}

func (r groupRec) group() (*group, error) {
	g := &group{name: r.Name, members: r.Members, master: r.Master, policy: r.Policy, version: r.Version,
		enabledAt: r.EnabledAt, state: r.State, protectedSince: r.ProtectedSince, lastEvidence: r.LastEvidence,
		points: r.Points, latest: r.Latest, crash: r.Crash, app: r.App, rpo: r.RPO, rpoAt: r.RPOAt, rounds: newRoundStats()}
	if g.points == nil {
		g.points = map[string]GroupPoint{}
	}
	rr, rs := r.Rounds, &g.rounds
	rs.committed, rs.revoked, rs.committedCrash, rs.committedApp = rr.Committed, rr.Revoked, rr.CommittedCrash, rr.CommittedApp
	if rr.RevokedBy != nil {
		rs.revokedBy = rr.RevokedBy
	}
	rs.consecutiveRevoked, rs.lastRevokeReason, rs.lastCommitted = rr.ConsecutiveRevoked, rr.LastRevokeReason, rr.LastCommitted
	rs.recent, rs.duplicates, rs.masterOrder = rr.Recent, rr.Duplicates, rr.MasterOrder
	for _, id := range rr.SeenOrder {
		rs.seen[id] = true
	}
	rs.seenOrder = rr.SeenOrder
	for _, k := range rr.MasterOrder {
		t, ok := rr.Masters[k]
		if !ok {
			return nil, fmt.Errorf("group %s: master tally %s missing", r.Name, k)
		}
		rs.masters[k] = &masterTally{received: t.Received, receivedRevoked: t.ReceivedRevoked, finished: t.Finished, revoked: t.Revoked}
	}
	var err error
	for _, p := range []struct {
		d *holdDist
		r holdRec
	}{{&rs.holds, rr.Holds}, {&rs.crashHolds, rr.CrashHolds}, {&rs.appHolds, rr.AppHolds}} {
		if *p.d, err = p.r.dist(); err != nil {
			return nil, fmt.Errorf("group %s: %w", r.Name, err)
		}
	}
	return g, nil
}

func (r *groupRec) zeroVolatile() { r.RPO, r.RPOAt = 0, time.Time{} }

// encoded is a record as the store keeps it (full) and its durable part,
// which decides whether it must be written before messages go out.
type encoded struct {
	ref     csstore.Ref
	full    []byte
	durable []byte
	final   bool // a finished job or cleared alert: it never changes again
	// val is the durable part as a Go value (a record with its volatile
	// fields zeroed), of the type that durable decodes into: see snapshot.
	val any
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Every record is plain data: a failure is a bug in this file.
		panic(fmt.Sprintf("configsrv: encoding a record: %v", err))
	}
	return b
}

func jobKey(id int) string { return strconv.Itoa(id) }

// unchanged reports whether a record whose durable part is val is known,
// without encoding it, to encode to the committed durable bytes: it holds
// only when val deeply equals the committed snapshot (see snapshot), and
// equal values encode alike. false means "encode and compare".
type unchanged func(ref csstore.Ref, val any) bool

// records encodes every record the store must hold, except finished jobs
// and cleared alerts already in final (their records never change) and,
// when same is not nil, the records same says are unchanged (leaving them
// out saves encoding every machine after every event: only the records an
// event changed are encoded).
func (s *Server) records(final map[csstore.Ref]bool, same unchanged) []encoded {
	var out []encoded
	for _, m := range s.sortedMachines() {
		ref := csstore.Ref{Kind: csstore.KindMachine, Key: m.name}
		r := m.record()
		d := r
		d.zeroVolatile()
		if same != nil && same(ref, d) {
			continue
		}
		out = append(out, encoded{ref: ref, full: mustJSON(r), durable: mustJSON(d), val: d})
	}
	names := make([]string, 0, len(s.policies))
	for n := range s.policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ref := csstore.Ref{Kind: csstore.KindPolicy, Key: n}
		if same != nil && same(ref, s.policies[n]) {
			continue
		}
		b := mustJSON(s.policies[n])
		out = append(out, encoded{ref: ref, full: b, durable: b, val: s.policies[n]})
	}
	for _, g := range s.sortedGroups() {
		ref := csstore.Ref{Kind: csstore.KindGroup, Key: g.name}
		r := g.record()
		d := r
		d.zeroVolatile()
		if same != nil && same(ref, d) {
			continue
		}
		out = append(out, encoded{ref: ref, full: mustJSON(r), durable: mustJSON(d), val: d})
	}
	for _, j := range s.jobs {
		ref := csstore.Ref{Kind: csstore.KindJob, Key: jobKey(j.id)}
		if final[ref] {
			continue
		}
		r := j.record()
		if same != nil && same(ref, r) {
			continue
		}
		b := mustJSON(r)
		out = append(out, encoded{ref: ref, full: b, durable: b, final: j.status != JobRunning, val: r})
	}
	for i, a := range s.alerts {
		ref := csstore.Ref{Kind: csstore.KindAlert, Key: jobKey(i + 1)}
		if final[ref] {
			continue
		}
		r := alertRec{ID: i + 1, AlertStatus: AlertStatus{Name: a.name, Subject: a.subject, Detail: a.detail,
			Raised: a.raised, Cleared: a.cleared}}
		if same != nil && same(ref, r) {
			continue
		}
		b := mustJSON(r)
		out = append(out, encoded{ref: ref, full: b, durable: b, final: !a.cleared.IsZero(), val: r})
	}
	return out
}

// snapshot is a deep copy of a committed record's durable part, for
// unchanged: the committed bytes decoded into a fresh value of val's type
// (so it shares no map or slice with the live state). It is nil — no fast
// path for that record, every event encodes it — when the bytes do not
// decode back to a value that encodes to the same bytes: equality with
// the snapshot must imply equal bytes.
func snapshot(e encoded) any {
	if e.val == nil {
		return nil
	}
	p := reflect.New(reflect.TypeOf(e.val))
	if err := json.Unmarshal(e.durable, p.Interface()); err != nil {
		return nil
	}
	v := p.Elem().Interface()
	if b, err := json.Marshal(v); err != nil || !bytes.Equal(b, e.durable) {
		return nil
	}
	return v
}

// restore replaces the server's machines, policies, groups, jobs and
// alerts with the store's records (policies merge: the store's win over
// the configuration's). A record that does not decode, or jobs and alerts
// whose ids are not 1..n, fail the whole restore: nothing is changed then.
func (s *Server) restore(recs []csstore.Record) error {
	var (
		jobs     []*job
		arecs    []alertRec
		groups   = map[string]*group{}
		policies = map[string]proto.Policy{}
		mrecs    []machineRec
	)
	for _, rec := range recs {
		var err error
		switch rec.Kind {
		case csstore.KindMachine:
			var r machineRec
			if err = json.Unmarshal(rec.Data, &r); err == nil {
				mrecs = append(mrecs, r)
			}
		case csstore.KindPolicy:
			var p proto.Policy
			if err = json.Unmarshal(rec.Data, &p); err == nil {
				policies[p.Name] = p
			}
		case csstore.KindGroup:
			var r groupRec
			if err = json.Unmarshal(rec.Data, &r); err == nil {
				var g *group
				if g, err = r.group(); err == nil {
					groups[g.name] = g
				}
			}
		case csstore.KindJob:
			var r jobRec
			if err = json.Unmarshal(rec.Data, &r); err == nil {
				jobs = append(jobs, r.job())
			}
		case csstore.KindAlert:
			var r alertRec
			if err = json.Unmarshal(rec.Data, &r); err == nil {
				arecs = append(arecs, r)
			}
		default:
			err = fmt.Errorf("unknown kind")
		}
		if err != nil {
			return fmt.Errorf("%w: %s %s: %w", ErrStoreRecord, rec.Kind, rec.Key, err)
		}
	}
	slices.SortFunc(jobs, func(a, b *job) int { return a.id - b.id })
	byID := map[int]*job{}
	for i, j := range jobs {
		if j.id != i+1 {
			return fmt.Errorf("%w: jobs are not numbered 1 to %d (job %d at position %d)", ErrStoreRecord, len(jobs), j.id, i+1)
		}
		byID[j.id] = j
	}
	slices.SortFunc(arecs, func(a, b alertRec) int { return a.ID - b.ID })
	var alerts []*alert
	for i, r := range arecs {
		if r.ID != i+1 {
			return fmt.Errorf("%w: alerts are not numbered 1 to %d (alert %d at position %d)", ErrStoreRecord, len(arecs), r.ID, i+1)
		}
		alerts = append(alerts, &alert{name: r.Name, subject: r.Subject, detail: r.Detail, raised: r.Raised, cleared: r.Cleared})
	}
	machines := map[string]*machine{}
	for _, r := range mrecs {
		m, err := r.machine(byID)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStoreRecord, err)
		}
		machines[m.name] = m
	}
	s.machines, s.groups, s.jobs, s.alerts = machines, groups, jobs, alerts
	for _, p := range policies {
		s.policies[p.Name] = p
	}
	return nil
}
