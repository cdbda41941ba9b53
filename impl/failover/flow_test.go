package failover_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
)

// taskIndex is the index of the first task name of vm, -1 if none.
func taskIndex(j failover.Job, name, vm string) int {
	for i, t := range j.Tasks {
		if t.Name == name && t.VM == vm {
			return i
		}
	}
	return -1
}

func TestFailoverChangePointCommit(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	e.latest["web01"] = true // data pending: MakeLatest makes a point
	id := e.start(&proto.FailoverRequest{Req: "r1", Op: proto.OpFailover, VMs: []string{"web01"},
		Point: proto.PointChoice{Kind: proto.PointLatest}, ShutdownSource: true})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobSucceeded {
		t.Fatalf("failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	want := []string{failover.TaskShutdown, failover.TaskLatest, failover.TaskStop, failover.TaskCopy, failover.TaskDisks,
		failover.TaskNIC, failover.TaskVM, failover.TaskHealth, failover.TaskTellCS}
	if diff := cmp.Diff(want, names(j, "web01")); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
	// No vCenter: the shutdown is a warning and the failover went on.
	if sd := j.Tasks[taskIndex(j, failover.TaskShutdown, "web01")]; sd.State != failover.TaskWarning || len(j.Warnings) != 1 ||
		!strings.Contains(j.Warnings[0], "no vCenter connection") {
		t.Errorf("shutdown task %+v, warnings %v", sd, j.Warnings)
	}
	// Replication stopped before anything was created.
	if stop, cp := j.Tasks[taskIndex(j, failover.TaskStop, "web01")], j.Tasks[taskIndex(j, failover.TaskCopy, "web01")]; stop.End.After(cp.Start) {
		t.Errorf("stop ended %s after the copy started %s", stop.End, cp.Start)
	}
	if diff := cmp.Diff([]string{"latest web01", "stop web01"}, e.vaultIn); diff != "" {
		t.Errorf("Azure side got (-want +got):\n%s", diff)
	}
	latest := proto.LatestPointID("web01", 35)
	if j.Point["web01"] != latest {
		t.Errorf("point %q, want the one latest made, %s", j.Point["web01"], latest)
	}
	inv := e.inventory()
	if len(inv.VMs) != 1 || inv.VMs[0].Ref.Name != "web01" || inv.NICs[0].Network != prodNet || inv.NICs[0].IP != netip.MustParseAddr("10.0.1.10") {
		t.Fatalf("VM %+v NICs %+v: want web01 in production at 10.0.1.10", inv.VMs, inv.NICs)
	}
	oldDisks := inv.Disks

	// Change the recovery point to an older one.
	cid := e.start(&proto.FailoverRequest{Req: "r2", Op: proto.OpChangePoint, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointCustom, ID: "web01-c-1"}})
	cj := e.wait(cid, time.Hour)
	if cj.State != failover.JobSucceeded {
		t.Fatalf("change point %s: %v%s", cj.State, cj.Errors, taskList(cj))
	}
	want = []string{failover.TaskCopy, failover.TaskDisks, failover.TaskDeleteVM, failover.TaskVM, failover.TaskHealth, failover.TaskDeleteDisks, failover.TaskDeleteBlobs}
	if diff := cmp.Diff(want, names(cj, "web01")); diff != "" {
		t.Errorf("change point tasks (-want +got):\n%s", diff)
	}
	if got := e.booted["web01"]; !bytes.Equal(got[0], image("web01", "web01-c-1", 0)) {
		t.Errorf("after change point the booted disk is not web01-c-1")
	}
	inv = e.inventory()
	for _, d := range inv.Disks {
		if slices.ContainsFunc(oldDisks, func(o compute.Disk) bool { return o.Ref == d.Ref }) {
			t.Errorf("old disk %s still there", d.Ref)
		}
	}
	if len(inv.Disks) != 1 || len(inv.VMs) != 1 || inv.VMs[0].Tags[compute.TagPoint] != "web01-c-1" {
		t.Errorf("after change point: disks %v VMs %v", inv.Disks, inv.VMs)
	}
	if st := e.machine("web01"); st.Point != "web01-c-1" || st.State != failover.StateFailedOver || len(st.Blobs) != 1 || !slices.Equal(e.blobs(), st.Blobs) {
		t.Errorf("machine %+v, blobs %v", st, e.blobs())
	}

	// Commit: the Azure side keeps only the point; then no change, no second commit.
	kid := e.start(&proto.FailoverRequest{Req: "r3", Op: proto.OpCommit, VMs: []string{"web01"}})
	if kj := e.wait(kid, time.Hour); kj.State != failover.JobSucceeded {
		t.Fatalf("commit %s: %v", kj.State, kj.Errors)
	}
	if got := e.vaultIn[len(e.vaultIn)-1]; got != "commit web01 web01-c-1" {
		t.Errorf("Azure side got %q", got)
	}
	if c := e.catalog("web01"); len(c.Points) != 1 || c.Points[0].ID != "web01-c-1" {
		t.Errorf("points after commit: %+v", c.Points)
	}
	for _, req := range []*proto.FailoverRequest{
		{Op: proto.OpChangePoint, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}},
		{Op: proto.OpCommit, VMs: []string{"web01"}},
		{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}},
	} {
		e.send(req)
		if r := e.lastReply(); r.OK {
			t.Errorf("%s after commit accepted", req.Op)
		}
	}
	if st := e.machine("web01"); st.State != failover.StateCommitted {
		t.Errorf("state %s, want committed", st.State)
	}
}

// TestLatestNothingPending: with nothing pending, latest makes no point
// and the newest existing one is used.
func TestLatestNothingPending(t *testing.T) {
	e := standard(t, options{})
	id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest},
		Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobSucceeded || j.Point["web01"] != "web01-c-3" {
		t.Fatalf("%s point %s: %v", j.State, j.Point["web01"], j.Errors)
	}
	if lt := j.Tasks[taskIndex(j, failover.TaskLatest, "web01")]; lt.Reason != "nothing pending: no new point" {
		t.Errorf("latest task %+v", lt)
	}
}

// plan is a two-group plan: db01 and app01 (replication group g1), then
// web01, with actions.
func plan(pre1, post1, pre2 []proto.PlanAction) *proto.RecoveryPlan {
	return &proto.RecoveryPlan{Name: "erp", Groups: []proto.PlanGroup{
		{VMs: []string{"db01", "app01"}, Pre: pre1, Post: post1},
		{VMs: []string{"web01"}, Pre: pre2},
	}}
}

func TestPlanTestFailover(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	pl := plan(
		[]proto.PlanAction{{Name: "dns", Runbook: "set-dns", FailoverTypes: []string{proto.OpTestFailover}},
			{Name: "only-real", Runbook: "real", FailoverTypes: []string{proto.OpFailover}},
			{Name: "only-back", Runbook: "back", Directions: []string{proto.DirectionBack}}},
		[]proto.PlanAction{{Name: "check", Runbook: "check-db"}},
		[]proto.PlanAction{{Name: "lb", Runbook: "add-to-lb"}})
	before := e.inventory()
	id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, Plan: pl, Point: proto.PointChoice{Kind: proto.PointLatestMultiVMApp},
		Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	j := e.wait(id, 2*time.Hour)
	if j.State != failover.JobSucceeded {
		t.Fatalf("plan %s: %v%s", j.State, j.Errors, taskList(j))
	}
	// Group members on their common app-consistent tag; web01 its own.
	wantPoints := map[string]string{"db01": "g1:a:100", "app01": "g1:a:100", "web01": "web01-a-2"}
	if diff := cmp.Diff(wantPoints, j.Point); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	for vm, p := range wantPoints {
		disks := e.booted[vm+"-test"]
		for i, d := range disks {
			if !bytes.Equal(d, image(vm, p, i)) {
				t.Errorf("%s disk %d is not point %s", vm, i, p)
			}
		}
	}
	// Only the actions for a test, in order; params as runbooks get them.
	wantRan := []string{"set-dns test-failover g1 []", "check-db test-failover g1 [db01 app01]", "add-to-lb test-failover g2 []"}
	if diff := cmp.Diff(wantRan, e.runbooks.ran); diff != "" {
		t.Errorf("runbooks (-want +got):\n%s", diff)
	}
	// Group 2 starts only after every VM of group 1 is healthy.
	var g1Healthy, g2Start time.Time
	for _, tk := range j.Tasks {
		if tk.Group == 1 && tk.Name == failover.TaskHealth && tk.End.After(g1Healthy) {
			g1Healthy = tk.End
		}
		if tk.Group == 2 && tk.Name == failover.TaskVM {
			g2Start = tk.Start
		}
	}
	if g2Start.Before(g1Healthy) || g2Start.IsZero() {
		t.Errorf("group 2 started %s, before group 1 was healthy %s", g2Start, g1Healthy)
	}
	// Within group 1 the VMs started together.
	if a, b := j.Tasks[taskIndex(j, failover.TaskVM, "db01")], j.Tasks[taskIndex(j, failover.TaskVM, "app01")]; !a.Start.Equal(b.Start) {
		t.Errorf("group 1 VMs started at %s and %s", a.Start, b.Start)
	}
	if j.GroupRTO(1) == 0 || j.GroupRTO(2) <= j.GroupRTO(1) || j.RTO() < j.GroupRTO(2) {
		t.Errorf("RTO group1 %s group2 %s plan %s", j.GroupRTO(1), j.GroupRTO(2), j.RTO())
	}
	// app01's target subnet does not exist in the test network: first subnet by name, next free IP.
	for _, n := range e.inventory().NICs {
		want := map[string]string{"db01-test-nic": "db 10.0.2.20", "app01-test-nic": "app 10.0.1.4", "web01-test-nic": "app 10.0.1.10"}[n.Ref.Name]
		if got := n.Subnet + " " + n.IP.String(); got != want {
			t.Errorf("%s at %s, want %s", n.Ref.Name, got, want)
		}
	}
	cid := e.start(&proto.FailoverRequest{Op: proto.OpTestCleanup, Plan: pl})
	if cj := e.wait(cid, time.Hour); cj.State != failover.JobSucceeded {
		t.Fatalf("cleanup %s: %v", cj.State, cj.Errors)
	}
	if diff := cmp.Diff(before, e.inventory(), invOpts); diff != "" {
		t.Errorf("leftovers (-before +after):\n%s", diff)
	}
}

func TestPlanActionResumeSkipAck(t *testing.T) {
	for _, action := range []string{proto.ActionResume, proto.ActionSkip} {
		t.Run(action, func(t *testing.T) {
			e := standard(t, options{latency: fabricLatency})
			e.runbooks.fails["add-to-lb"] = 1
			pl := plan(nil, []proto.PlanAction{{Name: "approve", Manual: true}}, []proto.PlanAction{{Name: "lb", Runbook: "add-to-lb"}})
			id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, Plan: pl, Point: proto.PointChoice{Kind: proto.PointLatestMultiVM}})
			j := e.wait(id, 2*time.Hour)
			if j.State != failover.JobWaiting || !slices.Equal(j.AllowedActions, []string{proto.ActionAck}) {
				t.Fatalf("job %s allowed %v, want waiting for ack%s", j.State, j.AllowedActions, taskList(j))
			}
			// Unacknowledged, it stays waiting: nothing of group 2 starts.
			e.d.Advance(3 * time.Hour)
			e.pump()
			if j := e.job(id); j.State != failover.JobWaiting || taskIndex(j, failover.TaskVM, "web01") >= 0 {
				t.Fatalf("job went on without the ack: %s%s", j.State, taskList(j))
			}
			e.send(&proto.JobAction{JobID: id, Action: proto.ActionResume})
			if r := e.lastReply(); r.OK {
				t.Errorf("resume of a waiting job accepted")
			}
			e.send(&proto.JobAction{JobID: id, Action: proto.ActionAck})
			j = e.wait(id, time.Hour)
			if j.State != failover.JobFailed || !slices.Equal(j.AllowedActions, []string{proto.ActionResume, proto.ActionSkip}) ||
				!strings.Contains(j.Errors[0], "action lb (runbook add-to-lb) failed: runbook add-to-lb: exit code 1") {
				t.Fatalf("job %s allowed %v errors %v, want failed by the action, resumable", j.State, j.AllowedActions, j.Errors)
			}
			done := len(j.Tasks)
			e.send(&proto.JobAction{JobID: id, Action: action})
			j = e.wait(id, time.Hour)
			if j.State != failover.JobSucceeded {
				t.Fatalf("after %s: %s %v%s", action, j.State, j.Errors, taskList(j))
			}
			// Nothing finished was done again: one task per VM step, and
			// the action's own task reused.
			for _, vm := range []string{"db01", "app01", "web01"} {
				for _, n := range []string{failover.TaskStop, failover.TaskCopy, failover.TaskVM, failover.TaskHealth} {
					c := 0
					for _, tk := range j.Tasks {
						if tk.VM == vm && tk.Name == n {
							c++
						}
					}
					if c != 1 {
						t.Errorf("%s %q ran %d times", vm, n, c)
					}
				}
			}
			lb := j.Tasks[done-1]
			wantState, wantRan := failover.TaskSucceeded, 2
			if action == proto.ActionSkip {
				wantState, wantRan = failover.TaskSkipped, 1
			}
			if !strings.Contains(lb.Name, "lb") || lb.State != wantState || len(e.runbooks.ran) != wantRan {
				t.Errorf("action task %+v, runbook ran %v", lb, e.runbooks.ran)
			}
			if e.inventory().VMs[2].Ref.Name != "web01" || !e.inventory().VMs[2].Guest.Ready {
				t.Errorf("web01 not running after %s", action)
			}
		})
	}
}

func TestFabricFaults(t *testing.T) {
	net := proto.NetworkChoice{Group: rg, Name: "test"}
	tests := []struct {
		name   string
		fault  memfabric.Fault
		state  failover.JobState
		task   string
		code   int
		reason string
	}{
		{"28031 VM create", memfabric.Quota("web01*"), failover.JobFailed, failover.TaskVM, failover.CodeVMCreate, "28031: failed to create the virtual machine"},
		{"28092 NIC create", memfabric.NICFailed("*"), failover.JobFailed, failover.TaskNIC, failover.CodeNICCreate, "28092: failed to create the network interface"},
		{"170010 hydration", memfabric.HydrationFailed("*"), failover.JobFailed, failover.TaskVM, failover.CodeHydration, "170010: hydration failed"},
		{"429 storm", memfabric.Throttle(memfabric.OpAny, "", 20*time.Second, 12), failover.JobSucceeded, "", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := standard(t, options{latency: fabricLatency})
			must(t, e.fabric.Inject(tc.fault))
			id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}, Network: net})
			j := e.wait(id, 3*time.Hour)
			if j.State != tc.state {
				t.Fatalf("job %s, want %s: %v%s", j.State, tc.state, j.Errors, taskList(j))
			}
			if left := e.fabric.Faults(); len(left) != 0 {
				t.Errorf("faults not met: %+v", left)
			}
			if tc.task == "" {
				return
			}
			tk := j.Tasks[taskIndex(j, tc.task, "web01")]
			if tk.State != failover.TaskFailed || tk.Code != tc.code || !strings.Contains(tk.Reason, tc.reason) || !strings.Contains(j.Errors[0], tc.reason) {
				t.Errorf("task %+v, errors %v: want failed with %d %q", tk, j.Errors, tc.code, tc.reason)
			}
			// Whatever the failed test made, cleanup removes.
			cid := e.start(&proto.FailoverRequest{Op: proto.OpTestCleanup, VMs: []string{"web01"}})
			if cj := e.wait(cid, time.Hour); cj.State != failover.JobSucceeded {
				t.Fatalf("cleanup after a failed test: %s %v%s", cj.State, cj.Errors, taskList(cj))
			}
			if inv := e.inventory(); len(inv.VMs)+len(inv.NICs)+len(inv.Disks) != 0 {
				t.Errorf("left after cleanup: %+v", inv)
			}
		})
	}
}

// TestUnhealthyGuest: a guest whose application does not recover fails
// the health step with the guest's reason.
func TestUnhealthyGuest(t *testing.T) {
	e := standard(t, options{})
	e.replicate("bad01", "", 1, pt{"CORRUPT", proto.Crash})
	id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"bad01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed},
		Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	j := e.wait(id, time.Hour)
	tk := j.Tasks[taskIndex(j, failover.TaskHealth, "bad01")]
	if j.State != failover.JobFailed || tk.State != failover.TaskFailed || !strings.Contains(tk.Reason, "bank replay: balance check failed") {
		t.Errorf("job %s task %+v", j.State, tk)
	}
}

// TestVaultSilent: a request the Azure side never answers fails the step
// after the timeout, with a reason: never stuck.
func TestVaultSilent(t *testing.T) {
	e := standard(t, options{})
	e.vaultSilent = true
	id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobFailed || !strings.Contains(fmt.Sprint(j.Errors), "no answer from the Azure service in 10m0s") {
		t.Errorf("job %s errors %v", j.State, j.Errors)
	}
	if len(e.inventory().VMs)+len(e.inventory().Disks) != 0 {
		t.Errorf("created something without replication stopped")
	}
}
