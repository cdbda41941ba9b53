package failover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

var stateOpts = cmp.Options{cmpopts.EquateEmpty()}

func (e *env) stored() failover.State {
	e.t.Helper()
	st, err := failover.LoadState(context.Background(), e.store, prefix)
	must(e.t, err)
	return st
}

func testRequest(req string, vms ...string) *proto.FailoverRequest {
	return &proto.FailoverRequest{Req: req, Op: proto.OpTestFailover, VMs: vms,
		Point: proto.PointChoice{Kind: proto.PointLatestProcessed}, Network: proto.NetworkChoice{Group: rg, Name: testNet.Name}}
}

// TestRecordsRoundTrip: what the orchestrator stores is what it holds, and
// a new orchestrator on the same storage account holds it again, target
// settings included.
func TestRecordsRoundTrip(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	id := e.start(testRequest("r1", "web01", "db01"))
	if j := e.wait(id, time.Hour); j.State != failover.JobSucceeded {
		t.Fatalf("test failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	jobs, machines := e.o.Jobs(), e.o.Machines()
	st := e.stored()
	if diff := cmp.Diff(jobs, st.Jobs, stateOpts); diff != "" {
		t.Errorf("stored jobs (-held +stored):\n%s", diff)
	}
	if diff := cmp.Diff(machines, st.Machines, stateOpts); diff != "" {
		t.Errorf("stored machines (-held +stored):\n%s", diff)
	}
	if m := e.machine("web01"); m.VM.Name != "web01-test" || len(m.NICs) != 1 || len(m.Disks) != 1 || len(m.Blobs) != 1 {
		t.Fatalf("web01's record %+v: want its test VM, NIC, disk and blob", m)
	}

	e.restart()
	if diff := cmp.Diff(jobs, e.o.Jobs(), stateOpts); diff != "" {
		t.Errorf("jobs after a restart (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(machines, e.o.Machines(), stateOpts); diff != "" {
		t.Errorf("machines after a restart (-before +after):\n%s", diff)
	}
	// A finished job is not touched by the restart.
	if j := e.job(id); j.State != failover.JobSucceeded || len(j.AllowedActions) != 0 {
		t.Errorf("finished job after restart: %s %v", j.State, j.AllowedActions)
	}
	// The restarted orchestrator cleans up what the first one made, and
	// its next test still has web01's target settings (IP 10.0.1.10).
	cl := e.start(&proto.FailoverRequest{Req: "r2", Op: proto.OpTestCleanup, VMs: []string{"web01", "db01"}})
	if j := e.wait(cl, time.Hour); j.State != failover.JobSucceeded {
		t.Fatalf("cleanup %s: %v%s", j.State, j.Errors, taskList(j))
	}
	if inv := e.inventory(); len(inv.VMs)+len(inv.NICs)+len(inv.Disks) != 0 || len(e.blobs()) != 0 {
		t.Fatalf("after cleanup: %d VMs, %d NICs, %d disks, blobs %v", len(inv.VMs), len(inv.NICs), len(inv.Disks), e.blobs())
	}
	e.restart()
	id2 := e.start(testRequest("r3", "web01"))
	if id2 == id || id2 == cl {
		t.Fatalf("job id %s reused after a restart", id2)
	}
	if j := e.wait(id2, time.Hour); j.State != failover.JobSucceeded {
		t.Fatalf("second test failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	if inv := e.inventory(); len(inv.NICs) != 1 || inv.NICs[0].IP.String() != "10.0.1.10" {
		t.Errorf("NICs %+v: want web01's target IP 10.0.1.10 kept across the restart", inv.NICs)
	}
}

// TestRestartInterruptsJob crashes the orchestrator at each point of a
// test failover: the restarted one fails the job as interrupted, with
// cleanup allowed; its stored records name everything that exists in the
// fabric and the failover container (an over-approximation); and the
// cleanup leaves nothing.
func TestRestartInterruptsJob(t *testing.T) {
	reasons := map[string]bool{}
	var at []time.Duration
	for d := time.Duration(0); d <= 14*time.Minute; d += map[bool]time.Duration{true: 5 * time.Second, false: 50 * time.Second}[d < 2*time.Minute] {
		at = append(at, d)
	}
	for _, crashAt := range at {
		t.Run(crashAt.String(), func(t *testing.T) {
			e := standard(t, options{latency: fabricLatency})
			id := e.start(testRequest("r1", "web01", "db01"))
			for end := e.d.Now().Add(crashAt); e.d.Now().Before(end); {
				e.d.Advance(5 * time.Second)
				e.pump()
			}
			running := e.job(id).State == failover.JobInProgress
			e.restart()
			j := e.job(id)
			if !running {
				if j.State != failover.JobSucceeded {
					t.Fatalf("job ended %s before the crash, %s after", failover.JobSucceeded, j.State)
				}
				return
			}
			if j.State != failover.JobFailed || len(j.Errors) == 0 ||
				!strings.HasPrefix(j.Errors[len(j.Errors)-1], "interrupted: the recovery service restarted ") {
				t.Fatalf("interrupted job: %s %v", j.State, j.Errors)
			}
			reasons[j.Errors[len(j.Errors)-1]] = true
			if diff := cmp.Diff([]string{proto.OpTestCleanup}, j.AllowedActions); diff != "" {
				t.Errorf("allowed actions (-want +got):\n%s", diff)
			}
			for _, tk := range j.Tasks {
				if tk.State == failover.TaskInProgress {
					t.Errorf("task %q of %s still in progress", tk.Name, tk.VM)
				}
			}
			for _, m := range e.o.Machines() {
				if m.Busy != "" {
					t.Errorf("%s still busy with %s", m.Machine, m.Busy)
				}
			}
			recorded := map[string]bool{}
			for _, m := range e.stored().Machines {
				for _, r := range append(append([]compute.Ref{m.VM}, m.NICs...), m.Disks...) {
					recorded[r.String()] = true
				}
				for _, b := range m.Blobs {
					recorded["blob "+b] = true
				}
			}
			var exists []string
			inv := e.inventory()
			for _, v := range inv.VMs {
				exists = append(exists, v.Ref.String())
			}
			for _, n := range inv.NICs {
				exists = append(exists, n.Ref.String())
			}
			for _, d := range inv.Disks {
				exists = append(exists, d.Ref.String())
			}
			for _, b := range e.blobs() {
				exists = append(exists, "blob "+b)
			}
			for _, x := range exists {
				if !recorded[x] {
					t.Errorf("%s exists and no stored record names it", x)
				}
			}
			// The cleanup starts at once: what the fabric is still making
			// for the interrupted job is deleted once made.
			cl := e.start(&proto.FailoverRequest{Req: "r2", Op: proto.OpTestCleanup, VMs: []string{"web01", "db01"}})
			if cj := e.wait(cl, time.Hour); cj.State != failover.JobSucceeded {
				t.Fatalf("cleanup %s: %v%s", cj.State, cj.Errors, taskList(cj))
			}
			if inv := e.inventory(); len(inv.VMs)+len(inv.NICs)+len(inv.Disks) != 0 || len(e.blobs()) != 0 {
				t.Errorf("after cleanup: VMs %v, NICs %v, disks %v, blobs %v", inv.VMs, inv.NICs, inv.Disks, e.blobs())
			}
		})
	}
	// The crashes met the job in several of its steps.
	if len(reasons) < 3 {
		t.Errorf("the crashes interrupted the job in %d different steps, want 3 or more: %v", len(reasons), reasons)
	}
	for r := range reasons {
		t.Log(r)
	}
}

// recStore and recFabric log, in one sequence with the deliveries of the
// orchestrator's op completions, each record written and each resource
// asked for.
type recStore struct {
	blob.Store
	log *[]string
}

func (s recStore) Put(ctx context.Context, c, name string, data []byte, opts blob.WriteOptions) (string, error) {
	if c == prefix+failover.ContainerRecovery {
		*s.log = append(*s.log, "put "+name+" "+string(data))
	}
	return s.Store.Put(ctx, c, name, data, opts)
}

func (s recStore) StartCopy(ctx context.Context, dc, dst, sc, src, snap string) (string, error) {
	*s.log = append(*s.log, "create "+dst)
	return s.Store.StartCopy(ctx, dc, dst, sc, src, snap)
}

type recFabric struct {
	compute.Fabric
	log *[]string
}

func (f recFabric) BeginCreateDisk(ctx context.Context, spec compute.DiskSpec) (compute.Pending, error) {
	*f.log = append(*f.log, "create "+spec.Name)
	return f.Fabric.BeginCreateDisk(ctx, spec)
}

func (f recFabric) BeginCreateNIC(ctx context.Context, spec compute.NICSpec) (compute.Pending, error) {
	*f.log = append(*f.log, "create "+spec.Name)
	return f.Fabric.BeginCreateNIC(ctx, spec)
}

func (f recFabric) BeginCreateVM(ctx context.Context, spec compute.VMSpec) (compute.Pending, error) {
	*f.log = append(*f.log, "create "+spec.Name)
	return f.Fabric.BeginCreateVM(ctx, spec)
}

// TestRecordedBeforeCreate: every create (a blob copy, a disk, a NIC, a
// VM) is asked for only after a write of a machine record naming it has
// completed. Completions are delivered one at a time, so a create that
// did not wait for its write would show here, though in the simulator an
// op runs the moment it starts.
func TestRecordedBeforeCreate(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	var log []string
	e.cfg.Store = recStore{Store: e.store, log: &log}
	e.cfg.Fabric = recFabric{Fabric: e.fabric, log: &log}
	e.restart()
	e.d.AutoDeliverOps = false
	e.d.Receive(portal, testRequest("r1", "web01", "db01"))
	for range 2000 {
		if e.d.PendingOps() > 0 {
			first := true
			e.d.DeliverOpsWhere(func(d runtime.Done) bool {
				if first {
					first = false
					log = append(log, "delivered "+d.Name)
					return true
				}
				return false
			})
		} else {
			e.d.Advance(5 * time.Second)
		}
		e.pump()
	}
	js := e.o.Jobs()
	if len(js) != 1 || js[0].State != failover.JobSucceeded {
		t.Fatalf("jobs %+v", js)
	}
	creates := 0
	for i, l := range log {
		name, ok := strings.CutPrefix(l, "create ")
		if !ok {
			continue
		}
		creates++
		put := slices.IndexFunc(log[:i], func(s string) bool {
			return strings.HasPrefix(s, "put machine/") && strings.Contains(s, fmt.Sprintf("%q", name))
		})
		if put < 0 {
			t.Errorf("create %s: no record named it before", name)
			continue
		}
		if !slices.Contains(log[put:i], "delivered failover-save") {
			t.Errorf("create %s: asked for before the write naming it completed", name)
		}
	}
	// web01: 1 blob, 1 disk, NIC, VM; db01: 2 blobs, 2 disks, NIC, VM.
	if creates != 10 {
		t.Errorf("%d creates, want 10:\n%s", creates, strings.Join(log, "\n"))
	}
}

// TestLoadRefusesBadRecords: a record that does not decode, or is of
// another version, is refused with an error naming it; the orchestrator
// does not serve on it, nor overwrite it.
func TestLoadRefusesBadRecords(t *testing.T) {
	good := `{"version":1,"order":0,"job":{"ID":"job-1","Op":"test-failover"}}`
	for _, tc := range []struct {
		name, blob, data, want string
	}{
		{"corrupt", "job/job-1.json", `{"version":1,"job":{`, "job/job-1.json: unexpected end of JSON input"},
		{"foreign version", "job/job-1.json", `{"version":7,"job":{"ID":"job-1"}}`, "job/job-1.json: version 7, this orchestrator reads version 1"},
		{"no version", "machine/web01.json", `{"machine":{"Machine":"web01"}}`, "machine/web01.json: no version"},
		{"unknown field", "job/job-1.json", `{"version":1,"job":{"ID":"job-1","Flavour":"x"}}`, `unknown field "Flavour"`},
		{"misplaced", "job/job-2.json", good, `job/job-2.json holds job "job-1"`},
		{"stranger", "notes.txt", good, "notes.txt: not a machine/ or job/ record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, options{})
			ctx := context.Background()
			c := prefix + failover.ContainerRecovery
			must(t, e.store.CreateContainer(ctx, c))
			_, err := e.store.Put(ctx, c, tc.blob, []byte(tc.data), blob.WriteOptions{})
			must(t, err)
			_, err = failover.LoadState(ctx, e.store, prefix)
			if !errors.Is(err, failover.ErrRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadState: %v, want ErrRecord with %q", err, tc.want)
			}
			e.restart()
			e.send(&proto.SetTarget{Req: "t1", Machine: "web01", Subnet: "app"})
			e.d.Advance(time.Minute) // load retries
			e.pump()
			if len(e.replies) != 0 {
				t.Errorf("served on an unreadable store: %+v", e.replies[0])
			}
			data, _, err := e.store.Get(ctx, c, tc.blob, blob.ReadOptions{})
			must(t, err)
			if string(data) != tc.data {
				t.Errorf("the record was overwritten: %s", data)
			}
			items, err := e.store.List(ctx, c, "")
			must(t, err)
			if len(items) != 1 {
				t.Errorf("records written on an unreadable store: %v", items)
			}
		})
	}
}

// TestInterruptMarking: a job running, waiting for a manual action, or
// waiting for resume or skip when the service stopped is failed with the
// reason naming where it was, and the operation that makes sense next;
// its machines are free.
func TestInterruptMarking(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		job     failover.Job
		reason  string
		allowed []string
	}{
		{"running VM create", failover.Job{ID: "job-1", Op: proto.OpTestFailover, State: failover.JobInProgress,
			Tasks: []failover.Task{{Name: failover.TaskDisks, VM: "web01", State: failover.TaskSucceeded}, {Name: failover.TaskVM, VM: "web01", State: failover.TaskInProgress}}},
			`interrupted: the recovery service restarted during "Create and start the virtual machine" of web01`, []string{proto.OpTestCleanup}},
		{"between steps of a failover", failover.Job{ID: "job-1", Op: proto.OpFailover, State: failover.JobInProgress,
			Tasks: []failover.Task{{Name: failover.TaskPoint, State: failover.TaskSucceeded}}},
			`interrupted: the recovery service restarted during the step after "Choose the recovery point"`, []string{proto.OpChangePoint}},
		{"waiting for ack", failover.Job{ID: "job-1", Op: proto.OpFailover, Plan: "erp", State: failover.JobWaiting, AllowedActions: []string{proto.ActionAck},
			Tasks: []failover.Task{{Name: "Group 1 pre-action call (manual)", Group: 1, State: failover.TaskWaiting}}},
			`interrupted: the recovery service restarted during "Group 1 pre-action call (manual)"`, []string{proto.OpChangePoint}},
		{"waiting for resume", failover.Job{ID: "job-1", Op: proto.OpTestFailover, Plan: "erp", State: failover.JobFailed, AllowedActions: []string{proto.ActionResume, proto.ActionSkip}},
			"interrupted: the recovery service restarted while the job waited for resume or skip: it can no longer be resumed", []string{proto.OpTestCleanup}},
		{"a cleanup", failover.Job{ID: "job-1", Op: proto.OpTestCleanup, State: failover.JobInProgress},
			"interrupted: the recovery service restarted during its start", []string{proto.OpTestCleanup}},
		{"a commit", failover.Job{ID: "job-1", Op: proto.OpCommit, State: failover.JobInProgress},
			"interrupted: the recovery service restarted during its start", []string{proto.OpCommit}},
		{"ended", failover.Job{ID: "job-1", Op: proto.OpCommit, State: failover.JobFailed, Errors: []string{"x"}, Ended: at}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, options{})
			ctx := context.Background()
			c := prefix + failover.ContainerRecovery
			must(t, e.store.CreateContainer(ctx, c))
			tc.job.Requested, tc.job.VMs = at, []string{"web01"}
			rec := fmt.Sprintf(`{"version":1,"order":0,"job":%s}`, mustJSON(t, tc.job))
			_, err := e.store.Put(ctx, c, "job/job-1.json", []byte(rec), blob.WriteOptions{})
			must(t, err)
			m := fmt.Sprintf(`{"version":1,"machine":{"Machine":"web01","State":"test-failover","Job":"job-1","Busy":%q}}`, "job-1")
			_, err = e.store.Put(ctx, c, "machine/web01.json", []byte(m), blob.WriteOptions{})
			must(t, err)
			e.restart()
			j := e.job("job-1")
			if tc.reason == "" {
				if diff := cmp.Diff(tc.job.Errors, j.Errors); diff != "" || j.State != failover.JobFailed {
					t.Errorf("an ended job changed: %s (-want +got):\n%s", j.State, diff)
				}
				return
			}
			if j.State != failover.JobFailed || len(j.Errors) == 0 || j.Errors[len(j.Errors)-1] != tc.reason {
				t.Errorf("job %s %q\nwant failed %q", j.State, j.Errors, tc.reason)
			}
			if diff := cmp.Diff(tc.allowed, j.AllowedActions); diff != "" {
				t.Errorf("allowed (-want +got):\n%s", diff)
			}
			if j.Ended.IsZero() {
				t.Errorf("interrupted job has no end")
			}
			for _, tk := range j.Tasks {
				if tk.State == failover.TaskInProgress || tk.State == failover.TaskWaiting {
					t.Errorf("task %q left %s", tk.Name, tk.State)
				}
			}
			if b := e.machine("web01").Busy; b != "" {
				t.Errorf("web01 still busy with %s", b)
			}
			// The marking is written: a second restart reads it as is.
			if st := e.stored(); len(st.Jobs) != 1 || st.Jobs[0].State != failover.JobFailed {
				t.Errorf("stored after the restart: %+v", st.Jobs)
			}
			// An operation named in AllowedActions is not a job action.
			e.send(&proto.JobAction{Req: "a1", JobID: "job-1", Action: tc.allowed[0]})
			if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "an operation, not a job action") {
				t.Errorf("job action %s: %+v", tc.allowed[0], r)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return string(b)
}

// failingStore fails every write of the orchestrator's records while
// *down is set.
type failingStore struct {
	blob.Store
	down *bool
}

func (s failingStore) Put(ctx context.Context, c, name string, data []byte, opts blob.WriteOptions) (string, error) {
	if *s.down && c == prefix+failover.ContainerRecovery {
		return "", fmt.Errorf("memblob: put %s/%s: %w", c, name, blob.ErrNotFound)
	}
	return s.Store.Put(ctx, c, name, data, opts)
}

// TestRecordsUnwritable: while the records cannot be written no create
// starts; past VaultTimeout the running job fails with the reason, and
// once storage is back the records catch up with it.
func TestRecordsUnwritable(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	down := false
	e.cfg.Store = failingStore{Store: e.store, down: &down}
	e.restart()
	id := e.start(testRequest("r1", "web01"))
	down = true
	for range 12 * 15 {
		e.d.Advance(5 * time.Second)
		e.pump()
	}
	j := e.job(id)
	if j.State != failover.JobFailed || len(j.Errors) == 0 || !strings.Contains(j.Errors[0], "could not write its records for 10m") {
		t.Fatalf("job %s %v: want failed, records unwritable for 10m%s", j.State, j.Errors, taskList(j))
	}
	// The copy and the disk were recorded before storage went away; the
	// NIC and the VM, asked for later, were not made.
	inv := e.inventory()
	if len(inv.NICs)+len(inv.VMs) != 0 || len(inv.Disks) != 1 {
		t.Errorf("made while nothing could be recorded: NICs %v, VMs %v (disks %v)", inv.NICs, inv.VMs, inv.Disks)
	}
	down = false
	e.d.Advance(10 * time.Second)
	e.pump()
	st := e.stored()
	if len(st.Jobs) != 1 || st.Jobs[0].State != failover.JobFailed {
		t.Errorf("stored once storage is back: %+v", st.Jobs)
	}
	if len(st.Machines) == 0 || !slices.ContainsFunc(st.Machines[len(st.Machines)-1].Disks, func(r compute.Ref) bool { return r == inv.Disks[0].Ref }) {
		t.Errorf("stored machines %+v do not name disk %s", st.Machines, inv.Disks[0].Ref)
	}
}

// TestInterruptedFailoverChangePoint: a failover the restart interrupted
// before its VM came up leaves the machine failed over; commit is refused
// until a VM has come up; change point deletes whatever the failover
// recorded and brings the VM up from the new point, and the configuration
// server is told.
func TestInterruptedFailoverChangePoint(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	id := e.start(&proto.FailoverRequest{Req: "r1", Op: proto.OpFailover, VMs: []string{"db01"},
		Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
	for e.job(id).State == failover.JobInProgress && taskIndex(e.job(id), failover.TaskVM, "db01") < 0 {
		e.d.Advance(5 * time.Second)
		e.pump()
	}
	e.d.Advance(5 * time.Second) // the VM create is under way
	e.pump()
	e.restart()
	j := e.job(id)
	if j.State != failover.JobFailed || !slices.Equal(j.AllowedActions, []string{proto.OpChangePoint}) {
		t.Fatalf("interrupted failover: %s, allowed %v, errors %v", j.State, j.AllowedActions, j.Errors)
	}
	if m := e.machine("db01"); m.State != failover.StateFailedOver || m.Point != "" || m.VM.Name != "db01" {
		t.Fatalf("db01 after the restart: %+v", m)
	}
	e.send(&proto.FailoverRequest{Req: "r2", Op: proto.OpCommit, VMs: []string{"db01"}})
	if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "never brought the Azure VM up") {
		t.Errorf("commit of a VM that never came up: %+v", r)
	}
	cp := e.start(&proto.FailoverRequest{Req: "r3", Op: proto.OpChangePoint, VMs: []string{"db01"},
		Point: proto.PointChoice{Kind: proto.PointCustom, ID: "g1:a:100"}})
	cj := e.wait(cp, time.Hour)
	if cj.State != failover.JobSucceeded {
		t.Fatalf("change point %s: %v%s", cj.State, cj.Errors, taskList(cj))
	}
	want := []string{failover.TaskDeleteVM, failover.TaskDeleteNICs, failover.TaskDeleteDisks, failover.TaskDeleteBlobs,
		failover.TaskCopy, failover.TaskDisks, failover.TaskNIC, failover.TaskVM, failover.TaskHealth, failover.TaskTellCS}
	if diff := cmp.Diff(want, names(cj, "db01")); diff != "" {
		t.Errorf("change point tasks (-want +got):\n%s", diff)
	}
	inv := e.inventory()
	if len(inv.VMs) != 1 || len(inv.NICs) != 1 || len(inv.Disks) != 2 {
		t.Fatalf("after change point: VMs %v NICs %v disks %v: want db01's one VM, NIC and two disks", inv.VMs, inv.NICs, inv.Disks)
	}
	for _, d := range inv.Disks {
		if d.Tags[compute.TagJob] != cp || d.Tags[compute.TagPoint] != "g1:a:100" {
			t.Errorf("disk %s tags %v: want made by %s from g1:a:100", d.Ref, d.Tags, cp)
		}
	}
	if !slices.ContainsFunc(e.csIn, func(s string) bool { return strings.HasPrefix(s, "failed-over db01 db01 ") }) {
		t.Errorf("configuration server got %v: want failed-over db01", e.csIn)
	}
	if m := e.machine("db01"); m.Point != "g1:a:100" || m.State != failover.StateFailedOver {
		t.Errorf("db01 after change point: %+v", m)
	}
	c := e.start(&proto.FailoverRequest{Req: "r4", Op: proto.OpCommit, VMs: []string{"db01"}})
	if cj := e.wait(c, time.Hour); cj.State != failover.JobSucceeded {
		t.Errorf("commit after change point %s: %v", cj.State, cj.Errors)
	}
}
