package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// Durable state (Config.Store). The orchestrator keeps one JSON blob per
// machine (its MachineState: state, job, point, and what its test or
// failover created and has not deleted yet; its target settings) and one
// per job (Job: state, tasks, errors, allowed actions) in the container
// ContainerPrefix+ContainerRecovery. The rules, in the order it follows
// them (raft's Ready: save before you send):
//
//  1. At Started it loads every record before it serves anything; the
//     messages that arrive meanwhile wait and are handled in arrival order
//     once the load is applied. A load that fails (an I/O error, a record
//     that does not decode, a record of another version) is logged and
//     tried again every storeRetry: it never serves, nor overwrites, a
//     state it could not read.
//  2. After each event, every record the event changed is written, in one
//     Op; one write is in flight at a time, and what changes meanwhile goes
//     in the next one. A write that fails is tried again every storeRetry.
//  3. What a job creates (copied blobs, managed disks, NICs, VMs) is
//     recorded in its machine's record, and that record written and the
//     write confirmed, before the create is asked of the fabric; a record
//     drops a resource only after its delete ended. So whatever point a
//     crash comes at, the stored record names at least everything that
//     exists (deleting what does not exist is not an error on ARM).
//  4. A reply to the portal (a job accepted, target settings, a job
//     action) is sent once what the request changed is written: the
//     portal never learns of a change a crash could take back.
//
// At the load, a job that was running (or waiting for a manual action, or
// for resume or skip) when the service stopped is failed with the reason
// "interrupted: the recovery service restarted during <task>"; its
// in-flight tasks fail with it (their end, and the job's, is the load's
// time: when the service learnt of it), and its machines are free. What it created
// stays recorded in its machines, and its AllowedActions name the
// operation that makes sense next (see interruptedActions).

// ContainerRecovery is the suffix of the container (under
// ContainerPrefix) that holds the orchestrator's records.
const ContainerRecovery = "recovery"

// RecordVersion is the version of the records this orchestrator writes
// and reads; a record of another version is refused at the load.
const RecordVersion = 1

// storeRetry is the pause before a failed load or write is tried again.
const storeRetry = 5 * time.Second

// ErrRecord: a record in the store does not decode, or is of another
// version; the orchestrator refuses to start on it rather than overwrite it.
var ErrRecord = errors.New("failover: unreadable record in the store")

// Operations a job's AllowedActions may name besides the JobActions
// (ack, resume, skip): they are requested as a new FailoverRequest of
// that operation, on the job's machines, not as a JobAction.
//
// interruptedActions are what an interrupted job of op offers:
//
//   - a test failover: its cleanup (proto.OpTestCleanup), which deletes
//     exactly what the test recorded as created.
//   - a failover: a change of recovery point (proto.OpChangePoint). The
//     machine stays failed over: replication may already be stopped, and
//     FAILOVER.md says a failover cancelled midway leaves the VM unable to
//     replicate again, so it is never quietly put back. Change point
//     brings the Azure VM up from a point of the user's choice; on a
//     machine whose VM never came up it first deletes whatever the
//     interrupted failover recorded, then makes disks, NIC and VM anew.
//     Commit is refused until the VM has come up.
//   - any other operation (cleanup, change point, commit, failback): the
//     same operation again; each of its steps is idempotent.
func interruptedActions(op string) []string {
	switch op {
	case proto.OpTestFailover:
		return []string{proto.OpTestCleanup}
	case proto.OpFailover:
		return []string{proto.OpChangePoint}
	}
	return []string{op}
}

// machineRecord is a machine's stored record.
type machineRecord struct {
	Version int           `json:"version"`
	Machine MachineState  `json:"machine"`
	Target  *targetRecord `json:"target,omitempty"`
}

type targetRecord struct {
	Subnet  string `json:"subnet,omitempty"`
	IP      string `json:"ip,omitempty"`
	Size    string `json:"size"`
	OS      string `json:"os"`
	Hydrate bool   `json:"hydrate,omitempty"`
}

// jobRecord is a job's stored record. Order is its place among the jobs
// (oldest first).
type jobRecord struct {
	Version int `json:"version"`
	Order   int `json:"order"`
	Job     Job `json:"job"`
}

func machineBlob(name string) string { return "machine/" + name + ".json" }
func jobBlob(id string) string       { return "job/" + id + ".json" }

// persister is the orchestrator's side of its store.
type persister struct {
	loaded bool
	early  []runtime.Message // messages that came during the load

	latest   map[string][]byte // each record as last encoded (written or pending)
	pending  map[string][]byte // encoded, not written yet
	inflight bool
	retrying bool
	// failingSince is when the writes began to fail (zero: they do not).
	failingSince time.Time
	// final: jobs that succeeded, as written: they never change again and
	// are not encoded again.
	final   map[string]bool
	ver     int // bumped by each event that changed a record
	durable int // the newest ver whose records are all written
	waiters []waiter
	fresh   []func(runtime.Context) // registered during this event
}

type waiter struct {
	ver int
	fn  func(runtime.Context)
}

// record is one encoded record to write.
type record struct {
	name string
	data []byte
}

// encodeRecords encodes every machine and job record, by blob name.
func (o *Orchestrator) encodeRecords() (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, m := range o.machines {
		rec := machineRecord{Version: RecordVersion, Machine: m.clone()}
		if t, ok := o.targets[name]; ok {
			tr := &targetRecord{Subnet: t.subnet, Size: t.size, OS: string(t.os), Hydrate: t.hydrate}
			if t.ip.IsValid() {
				tr.IP = t.ip.String()
			}
			rec.Target = tr
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("failover: encode machine %s: %w", name, err)
		}
		out[machineBlob(name)] = b
	}
	for i, j := range o.jobs {
		if o.p.final[j.ID] {
			continue
		}
		b, err := json.Marshal(jobRecord{Version: RecordVersion, Order: i, Job: j.Job})
		if err != nil {
			return nil, fmt.Errorf("failover: encode job %s: %w", j.ID, err)
		}
		out[jobBlob(j.ID)] = b
	}
	return out, nil
}

// saved runs fn once every record as it stands at the end of the current
// event is written (at once, at the end of the event, when that is so
// already). Without a store it runs fn at the end of the event.
func (o *Orchestrator) saved(fn func(runtime.Context)) {
	o.p.fresh = append(o.p.fresh, fn)
}

// savedFor is saved for a step of job j: fn does not run if the job moved
// on (failed, or resumed into a new attempt) meanwhile.
func (o *Orchestrator) savedFor(j *job, fn func(runtime.Context)) {
	gen := j.gen
	o.saved(func(ctx runtime.Context) {
		if j.gen == gen && j.State == JobInProgress {
			fn(ctx)
		}
	})
}

// flush ends an event: it queues what the event changed for writing, starts
// a write if none is in flight, and runs the waiters whose records are
// written (which may change more: it loops).
func (o *Orchestrator) flush(ctx runtime.Context) {
	p := &o.p
	for {
		if o.cfg.Store != nil {
			recs, err := o.encodeRecords()
			if err != nil {
				// A bug, not a condition: the types are plain data.
				ctx.Log().Error("failover: records not encoded", "err", err.Error())
				return
			}
			changed := false
			for _, name := range sortedKeys(recs) {
				if !bytes.Equal(p.latest[name], recs[name]) {
					p.latest[name], p.pending[name], changed = recs[name], recs[name], true
				}
			}
			for _, j := range o.jobs {
				if j.State == JobSucceeded {
					p.final[j.ID] = true
				}
			}
			if changed {
				p.ver++
			}
		} else {
			p.durable = p.ver
		}
		for _, fn := range p.fresh {
			p.waiters = append(p.waiters, waiter{p.ver, fn})
		}
		p.fresh = nil
		o.startWrite(ctx)
		var ready []waiter
		rest := p.waiters[:0:0]
		for _, w := range p.waiters {
			if w.ver <= p.durable {
				ready = append(ready, w)
			} else {
				rest = append(rest, w)
			}
		}
		p.waiters = rest
		if len(ready) == 0 {
			return
		}
		for _, w := range ready {
			w.fn(ctx)
		}
	}
}

// startWrite writes the pending records, unless a write is in flight or
// waits for its retry.
func (o *Orchestrator) startWrite(ctx runtime.Context) {
	p := &o.p
	if p.inflight || p.retrying || len(p.pending) == 0 {
		return
	}
	var recs []record
	var n int64
	for _, name := range sortedKeys(p.pending) {
		recs = append(recs, record{name, p.pending[name]})
		n += int64(len(p.pending[name]))
	}
	p.pending = map[string][]byte{}
	p.inflight = true
	ver := p.ver
	store, c := o.cfg.Store, o.cfg.ContainerPrefix+ContainerRecovery
	o.ops.Go(ctx, runtime.Op{Name: "failover-save", Peer: o.cfg.StoragePeer, Bytes: n, Run: func(ctx context.Context) (any, error) {
		return nil, saveRecords(ctx, store, c, recs)
	}}, func(ctx runtime.Context, d runtime.Done) {
		p.inflight = false
		if d.Err != nil {
			// Put back what a newer change did not replace; tried again.
			for _, r := range recs {
				if _, newer := p.pending[r.name]; !newer {
					p.pending[r.name] = r.data
				}
			}
			p.retrying = true
			if p.failingSince.IsZero() {
				p.failingSince = ctx.Now()
			}
			ctx.Log().Warn("failover: records not written; retrying", "records", len(recs), "after", storeRetry.String(), "err", o.errText(d.Err))
			o.after(ctx, storeRetry, "failover-save-retry", func(ctx runtime.Context) { p.retrying = false })
			if ctx.Now().Sub(p.failingSince) >= o.cfg.VaultTimeout {
				// No create may start unrecorded: the running jobs
				// cannot go on. They fail (their machines keep what
				// they recorded); the records are still retried.
				reason := fmt.Sprintf("failover: the recovery service could not write its records for %s: %s", ctx.Now().Sub(p.failingSince), o.errText(d.Err))
				for _, j := range o.jobs {
					if j.State == JobInProgress {
						o.fail(ctx, j, reason, false)
					}
				}
			}
			return
		}
		// The write took everything pending when it started (a failed
		// one's records were put back before): all up to ver is written.
		p.durable, p.failingSince = ver, time.Time{}
	})
}

// saveRecords writes recs to container c (made if missing).
func saveRecords(ctx context.Context, store blob.Store, c string, recs []record) error {
	for i, r := range recs {
		_, err := store.Put(ctx, c, r.name, r.data, blob.WriteOptions{})
		if errors.Is(err, blob.ErrNotFound) && i == 0 {
			if err = store.CreateContainer(ctx, c); err == nil {
				_, err = store.Put(ctx, c, r.name, r.data, blob.WriteOptions{})
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// loaded is what a load read: every record, by blob name.
type loaded struct {
	raw      map[string][]byte
	machines []machineRecord
	jobs     []jobRecord
}

// loadRecords reads and decodes every record of the orchestrator whose
// container is prefix+ContainerRecovery. A missing container is no
// records. A record that does not decode, or is of another version than
// RecordVersion, is an error wrapping ErrRecord that names it.
func loadRecords(ctx context.Context, store blob.Store, prefix string) (*loaded, error) {
	c := prefix + ContainerRecovery
	items, err := store.List(ctx, c, "")
	if errors.Is(err, blob.ErrNotFound) {
		return &loaded{raw: map[string][]byte{}}, nil
	}
	if err != nil {
		return nil, err
	}
	l := &loaded{raw: map[string][]byte{}}
	for _, it := range items {
		data, _, err := store.Get(ctx, c, it.Name, blob.ReadOptions{})
		if err != nil {
			return nil, err
		}
		if err := l.add(it.Name, data); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(l.jobs, func(a, b jobRecord) int { return a.Order - b.Order })
	return l, nil
}

// add decodes one record.
func (l *loaded) add(name string, data []byte) error {
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRecord, name, err)
	}
	if head.Version == nil {
		return fmt.Errorf("%w: %s: no version: not a record of the failover orchestrator", ErrRecord, name)
	}
	if *head.Version != RecordVersion {
		return fmt.Errorf("%w: %s: version %d, this orchestrator reads version %d", ErrRecord, name, *head.Version, RecordVersion)
	}
	var err error
	switch {
	case strings.HasPrefix(name, "machine/") && strings.HasSuffix(name, ".json"):
		l.machines, err = decodeRecord(l.machines, name, data, "machine",
			func(r machineRecord) (string, string) { return r.Machine.Machine, machineBlob(r.Machine.Machine) })
	case strings.HasPrefix(name, "job/") && strings.HasSuffix(name, ".json"):
		l.jobs, err = decodeRecord(l.jobs, name, data, "job",
			func(r jobRecord) (string, string) { return r.Job.ID, jobBlob(r.Job.ID) })
	default:
		err = fmt.Errorf("%w: %s: not a machine/ or job/ record", ErrRecord, name)
	}
	if err != nil {
		return err
	}
	l.raw[name] = data
	return nil
}

// decodeRecord decodes the record blob name (strictly: no unknown field)
// and appends it to rs, unless it is not the record its name says (key
// gives the record's id and the blob name that id belongs in).
func decodeRecord[R any](rs []R, name string, data []byte, what string, key func(R) (id, blob string)) ([]R, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r R
	if err := dec.Decode(&r); err != nil {
		return rs, fmt.Errorf("%w: %s: %v", ErrRecord, name, err)
	}
	if id, want := key(r); want != name {
		return rs, fmt.Errorf("%w: %s holds %s %q (want %s)", ErrRecord, name, what, id, want)
	}
	return append(rs, r), nil
}

// State is the orchestrator's durable state: its machines by name, its
// jobs oldest first, as stored.
type State struct {
	Machines []MachineState
	Jobs     []Job
}

// LoadState reads the records of the orchestrator whose container prefix
// is prefix, as it would at start (before it fails the jobs that were
// running). A missing container is an empty State; an error wrapping
// ErrRecord names the record that does not decode or is of another
// version.
func LoadState(ctx context.Context, store blob.Store, prefix string) (State, error) {
	l, err := loadRecords(ctx, store, prefix)
	if err != nil {
		return State{}, err
	}
	var st State
	for _, m := range l.machines {
		st.Machines = append(st.Machines, m.Machine)
	}
	slices.SortFunc(st.Machines, func(a, b MachineState) int { return strings.Compare(a.Machine, b.Machine) })
	for _, j := range l.jobs {
		st.Jobs = append(st.Jobs, j.Job)
	}
	return st, nil
}

// startLoad reads the records; on success the orchestrator serves.
func (o *Orchestrator) startLoad(ctx runtime.Context) {
	store, prefix := o.cfg.Store, o.cfg.ContainerPrefix
	o.ops.Go(ctx, runtime.Op{Name: "failover-load", Peer: o.cfg.StoragePeer, Run: func(ctx context.Context) (any, error) {
		return loadRecords(ctx, store, prefix)
	}}, func(ctx runtime.Context, d runtime.Done) {
		if d.Err != nil {
			ctx.Log().Error("failover: records not loaded; not serving, retrying", "after", storeRetry.String(), "err", o.errText(d.Err), "waiting", len(o.p.early))
			o.after(ctx, storeRetry, "failover-load-retry", o.startLoad)
			return
		}
		o.restore(ctx, d.Value.(*loaded))
	})
}

// restore applies a load, fails the jobs it interrupted and handles the
// messages that waited.
func (o *Orchestrator) restore(ctx runtime.Context, l *loaded) {
	p := &o.p
	for _, r := range l.machines {
		m := r.Machine.clone()
		o.machines[m.Machine] = &m
		if t := r.Target; t != nil {
			tg := target{subnet: t.Subnet, size: t.Size, os: compute.OSType(t.OS), hydrate: t.Hydrate}
			if t.IP != "" {
				tg.ip, _ = netip.ParseAddr(t.IP) // written by String
			}
			o.targets[m.Machine] = tg
		}
	}
	for _, r := range l.jobs {
		j := &job{Job: r.Job.clone(), vms: map[string]*vmRun{}}
		if j.Point == nil {
			j.Point = map[string]string{}
		}
		o.jobs = append(o.jobs, j)
		o.byID[j.ID] = j
		if n, ok := strings.CutPrefix(j.ID, "job-"); ok {
			if v, err := strconv.Atoi(n); err == nil {
				o.seq = max(o.seq, v)
			}
		}
	}
	for name, data := range l.raw {
		p.latest[name] = data
	}
	interrupted := 0
	for _, j := range o.jobs {
		if o.interrupt(ctx, j) {
			interrupted++
		}
	}
	// No job runs now: every machine is free.
	for _, m := range o.machines {
		m.Busy = ""
	}
	p.loaded = true
	ctx.Log().Info("failover: records loaded", "machines", len(l.machines), "jobs", len(l.jobs), "interrupted", interrupted)
	early := p.early
	p.early = nil
	for _, m := range early {
		o.message(ctx, m)
	}
}

// interrupt fails a job the restart stopped, and reports whether it was
// one: running, waiting for a manual action, or failed and waiting for
// resume or skip (which the restart cannot honour: what the attempt held
// in memory is gone).
func (o *Orchestrator) interrupt(ctx runtime.Context, j *job) bool {
	var reason string
	switch {
	case j.State == JobInProgress || j.State == JobWaiting:
		reason = "interrupted: the recovery service restarted during " + runningTask(j.Job)
	case j.State == JobFailed && j.Ended.IsZero():
		reason = "interrupted: the recovery service restarted while the job waited for " + strings.Join(j.AllowedActions, " or ") + ": it can no longer be resumed"
	default:
		return false
	}
	j.State = JobFailed
	j.Errors = append(j.Errors, reason)
	for i := range j.Tasks {
		if s := j.Tasks[i].State; s == TaskInProgress || s == TaskWaiting {
			o.taskEnd(ctx, j, i, TaskFailed, 0, reason)
		}
	}
	j.Ended = ctx.Now()
	j.AllowedActions = interruptedActions(j.Op)
	ctx.Log().Warn("failover: job failed", "job", j.ID, "op", j.Op, "plan", j.Plan, "reason", reason, "allowed", strings.Join(j.AllowedActions, ","))
	return true
}

// runningTask names what a job was doing: its newest task in progress (or
// waiting), else the phase after its last task.
func runningTask(j Job) string {
	for i := len(j.Tasks) - 1; i >= 0; i-- {
		t := j.Tasks[i]
		if t.State == TaskInProgress || t.State == TaskWaiting {
			if t.VM != "" {
				return fmt.Sprintf("%q of %s", t.Name, t.VM)
			}
			return strconv.Quote(t.Name)
		}
	}
	if n := len(j.Tasks); n > 0 {
		return fmt.Sprintf("the step after %q", j.Tasks[n-1].Name)
	}
	return "its start"
}
