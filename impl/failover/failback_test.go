package failover_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
)

// failedOver is the standard world with vCenter (every on-premises VM
// off) and vms failed over to Azure by plan pl (VMs when pl is nil); it
// checks that the failover succeeded.
func failedOver(t *testing.T, pl *proto.RecoveryPlan, vms ...string) (*env, *vcenter) {
	t.Helper()
	vc := &vcenter{on: map[string]bool{}, fail: map[string]bool{}}
	e := standard(t, options{latency: fabricLatency, vsphere: vc})
	req := &proto.FailoverRequest{Op: proto.OpFailover, VMs: vms, Plan: pl, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}}
	if pl != nil {
		req.Point.Kind = proto.PointLatestMultiVM
	}
	id := e.start(req)
	if j := e.wait(id, 2*time.Hour); j.State != failover.JobSucceeded {
		t.Fatalf("failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	return e, vc
}

// azurePower is the power state of an Azure VM.
func (e *env) azurePower(name string) compute.PowerState {
	vm, err := e.fabric.VM(context.Background(), compute.Ref{Kind: compute.KindVM, Group: rg, Name: name})
	if err != nil {
		return "gone"
	}
	return vm.Power
}

func TestFailbackOneVM(t *testing.T) {
	for _, alreadyOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "already-on"}[alreadyOn], func(t *testing.T) {
			e, vc := failedOver(t, nil, "web01")
			if diff := cmp.Diff([]string{"failed-over web01 web01 job-1/3"}, e.csIn); diff != "" {
				t.Errorf("configuration server got (-want +got):\n%s", diff)
			}
			e.backPoints("web01", pt{"fb-c-1", proto.Crash}, pt{"fb-a-2", proto.App}, pt{"fb-c-3", proto.Crash})
			vc.on["web01"] = alreadyOn
			// When the on-premises VM comes up, the Azure VM is down.
			var azureAtPowerOn []compute.PowerState
			vc.beforeOn = func(string) { azureAtPowerOn = append(azureAtPowerOn, e.azurePower("web01")) }

			id := e.start(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}})
			j := e.wait(id, time.Hour)
			if j.State != failover.JobSucceeded {
				t.Fatalf("failback %s: %v%s", j.State, j.Errors, taskList(j))
			}
			want := []string{failover.TaskTargetPoints, failover.TaskDeallocate, failover.TaskFailbackPoint, failover.TaskPowerOn, failover.TaskOnPremHealth}
			if diff := cmp.Diff(want, names(j, "web01")); diff != "" {
				t.Errorf("tasks (-want +got):\n%s", diff)
			}
			if j.Op != proto.OpFailback || j.Point["web01"] != "fb-c-3" {
				t.Errorf("job %s point %v, want failback to the newest, fb-c-3", j.Op, j.Point)
			}
			if diff := cmp.Diff([]string{"points web01", "failback web01 fb-c-3"}, e.mtIn); diff != "" {
				t.Errorf("master target got (-want +got):\n%s", diff)
			}
			if p := e.azurePower("web01"); p != compute.Deallocated {
				t.Errorf("Azure VM %s, want deallocated", p)
			}
			if !vc.on["web01"] || e.mtAt["web01"] != "fb-c-3" || !slices.Equal(e.onPrem, []string{"web01 web01"}) {
				t.Errorf("on premises: on %v, disks at %q, checked %v", vc.on, e.mtAt["web01"], e.onPrem)
			}
			wantOn, wantNote := []string{"web01"}, "powered on"
			if alreadyOn {
				wantOn, wantNote = nil, "already on"
			}
			if !slices.Equal(vc.powered, wantOn) || j.Tasks[taskIndex(j, failover.TaskPowerOn, "web01")].Reason != wantNote {
				t.Errorf("powered on %v, task %+v", vc.powered, j.Tasks[taskIndex(j, failover.TaskPowerOn, "web01")])
			}
			if !alreadyOn && !slices.Equal(azureAtPowerOn, []compute.PowerState{compute.Deallocated}) {
				t.Errorf("the Azure VM was %v when the on-premises VM was powered on", azureAtPowerOn)
			}
			if fp := j.Tasks[taskIndex(j, failover.TaskFailbackPoint, "web01")]; fp.Reason != "point fb-c-3 on VM web01" {
				t.Errorf("failback point task %+v", fp)
			}
			if j.VMRTO("web01") == 0 || j.GroupRTO(1) != j.VMRTO("web01") {
				t.Errorf("RTO vm %s group %s", j.VMRTO("web01"), j.GroupRTO(1))
			}
			st := e.machine("web01")
			if st.State != failover.StateFailedBack || st.Job != id || st.BackPoint != "fb-c-3" || st.OnPremVM != "web01" {
				t.Errorf("machine %+v", st)
			}
			// Failed back, not committed: no failover, no second failback.
			for _, req := range []*proto.FailoverRequest{
				{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}},
				{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}},
				{Op: proto.OpChangePoint, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}},
			} {
				e.send(req)
				if r := e.lastReply(); r.OK || !strings.HasPrefix(r.Reason, "failover: ") {
					t.Errorf("%s of a failed-back VM: %+v", req.Op, r)
				}
			}

			// Commit: the Azure VM, its NIC, its disk and blobs go; the cs is told.
			vaultBefore := len(e.vaultIn)
			kid := e.start(&proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"web01"}})
			kj := e.wait(kid, time.Hour)
			if kj.State != failover.JobSucceeded {
				t.Fatalf("commit %s: %v%s", kj.State, kj.Errors, taskList(kj))
			}
			want = []string{failover.TaskDeleteVM, failover.TaskDeleteNICs, failover.TaskDeleteDisks, failover.TaskDeleteBlobs, failover.TaskTellCS}
			if diff := cmp.Diff(want, names(kj, "web01")); diff != "" {
				t.Errorf("commit tasks (-want +got):\n%s", diff)
			}
			if inv := e.inventory(); len(inv.VMs)+len(inv.NICs)+len(inv.Disks) != 0 || len(e.blobs()) != 0 {
				t.Errorf("left after the commit: %+v, blobs %v", inv, e.blobs())
			}
			if got := e.csIn[len(e.csIn)-1]; !strings.HasPrefix(got, "failed-back web01 web01 ") {
				t.Errorf("configuration server last got %q", got)
			}
			if len(e.vaultIn) != vaultBefore {
				t.Errorf("a failback commit asked the Azure side %v", e.vaultIn[vaultBefore:])
			}
			if st := e.machine("web01"); st.State != failover.StateOnPrem || st.VM != (compute.Ref{}) || len(st.NICs)+len(st.Disks)+len(st.Blobs) != 0 {
				t.Errorf("machine after commit %+v", st)
			}
			e.send(&proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"web01"}})
			if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "commit needs a failed-over VM") {
				t.Errorf("second commit: %+v", r)
			}
		})
	}
}

// TestFailbackGroup: a plan's replication group fails back to its common
// app-consistent point though the members' newest app points differ
// (latest-app), or each to its own newest (latest); groups in order, only
// the failback direction's actions.
func TestFailbackGroup(t *testing.T) {
	tests := []struct {
		kind string
		want map[string]string
	}{
		{proto.PointLatestApp, map[string]string{"db01": "g1:a:5", "app01": "g1:a:5", "web01": "web01-a-2"}},
		{proto.PointLatest, map[string]string{"db01": "db01-a-8", "app01": "g1:c:6", "web01": "web01-c-3"}},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			pl := plan(
				[]proto.PlanAction{{Name: "back", Runbook: "rb-back", Directions: []string{proto.DirectionBack}},
					{Name: "forward", Runbook: "rb-forward", Directions: []string{proto.DirectionToAzure}},
					{Name: "unplanned", Runbook: "rb-unplanned", FailoverTypes: []string{proto.OpFailover}},
					{Name: "test-only", Runbook: "rb-test", FailoverTypes: []string{proto.OpTestFailover}}},
				[]proto.PlanAction{{Name: "check", Runbook: "rb-check", Directions: []string{proto.DirectionBack}}}, nil)
			e, vc := failedOver(t, pl)
			if diff := cmp.Diff([]string{"rb-forward failover g1 []", "rb-unplanned failover g1 []"}, e.runbooks.ran); diff != "" {
				t.Errorf("failover's runbooks (-want +got):\n%s", diff)
			}
			e.runbooks.ran = nil
			e.backPoints("db01", pt{"g1:a:5", proto.App}, pt{"g1:c:6", proto.Crash}, pt{"g1:a:7", proto.App}, pt{"db01-a-8", proto.App})
			e.backPoints("app01", pt{"g1:a:5", proto.App}, pt{"app01-a-6", proto.App}, pt{"g1:c:6", proto.Crash})
			e.backPoints("web01", pt{"web01-c-1", proto.Crash}, pt{"web01-a-2", proto.App}, pt{"web01-c-3", proto.Crash})
			e.runbooks.fails["rb-check"] = 1

			id := e.start(&proto.FailoverRequest{Op: proto.OpFailback, Plan: pl, Point: proto.PointChoice{Kind: tc.kind}})
			j := e.wait(id, 2*time.Hour)
			// The post action fails once: resumable, like a forward plan.
			if j.State != failover.JobFailed || !slices.Equal(j.AllowedActions, []string{proto.ActionResume, proto.ActionSkip}) {
				t.Fatalf("job %s allowed %v, want stopped by the action%s", j.State, j.AllowedActions, taskList(j))
			}
			if taskIndex(j, failover.TaskDeallocate, "web01") >= 0 {
				t.Errorf("group 2 started before group 1's post action succeeded")
			}
			e.send(&proto.JobAction{JobID: id, Action: proto.ActionResume})
			j = e.wait(id, 2*time.Hour)
			if j.State != failover.JobSucceeded {
				t.Fatalf("failback %s: %v%s", j.State, j.Errors, taskList(j))
			}
			if diff := cmp.Diff(tc.want, j.Point); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, e.mtAt); diff != "" {
				t.Errorf("disks brought to (-want +got):\n%s", diff)
			}
			wantRan := []string{"rb-back failback g1 []", "rb-unplanned failback g1 []", "rb-check failback g1 [db01 app01]", "rb-check failback g1 [db01 app01]"}
			if diff := cmp.Diff(wantRan, e.runbooks.ran); diff != "" {
				t.Errorf("failback's runbooks (-want +got):\n%s", diff)
			}
			// Group 2 is shut down only after group 1 is healthy on premises.
			var g1Healthy time.Time
			for _, tk := range j.Tasks {
				if tk.Group == 1 && tk.Name == failover.TaskOnPremHealth && tk.End.After(g1Healthy) {
					g1Healthy = tk.End
				}
			}
			if s := j.Tasks[taskIndex(j, failover.TaskDeallocate, "web01")].Start; g1Healthy.IsZero() || s.Before(g1Healthy) {
				t.Errorf("web01 shut down at %s, group 1 healthy at %s", s, g1Healthy)
			}
			if diff := cmp.Diff([]string{"db01", "app01", "web01"}, vc.powered); diff != "" {
				t.Errorf("powered on (-want +got):\n%s", diff)
			}
			for _, vm := range []string{"db01", "app01", "web01"} {
				if e.azurePower(vm) != compute.Deallocated || e.machine(vm).State != failover.StateFailedBack {
					t.Errorf("%s: Azure %s, state %s", vm, e.azurePower(vm), e.machine(vm).State)
				}
			}
			if j.GroupRTO(1) == 0 || j.GroupRTO(2) <= j.GroupRTO(1) {
				t.Errorf("RTO group 1 %s group 2 %s", j.GroupRTO(1), j.GroupRTO(2))
			}
		})
	}
}

// TestFailbackNothingShutDown: a failback that cannot choose a point for
// every VM fails with the reason before any Azure VM is shut down; one
// the request itself cannot serve is refused at once.
func TestFailbackNothingShutDown(t *testing.T) {
	tests := []struct {
		name   string
		kind   string
		points map[string][]pt
		want   string
	}{
		{"no point", proto.PointLatest, map[string][]pt{"db01": {{"g1:a:5", proto.App}}, "app01": nil},
			"failover: failback points of app01: failover: recovery point not available: no failback point yet"},
		{"not attached", proto.PointLatest, map[string][]pt{"db01": {{"g1:a:5", proto.App}}},
			"failover: failback points of app01: the master target has none: machine not attached"},
		{"no app point", proto.PointLatestApp, map[string][]pt{"db01": {{"x", proto.Crash}}, "app01": {{"y", proto.Crash}}},
			"no app-consistent failback point common to the members of group g1"},
		{"no common app point", proto.PointLatestApp, map[string][]pt{"db01": {{"g1:a:5", proto.App}}, "app01": {{"g1:a:7", proto.App}}},
			"no app-consistent failback point common to the members of group g1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, vc := failedOver(t, nil, "db01", "app01")
			for vm, ps := range tc.points {
				e.backPoints(vm, ps...)
			}
			id := e.start(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"db01", "app01"}, Point: proto.PointChoice{Kind: tc.kind}})
			j := e.wait(id, time.Hour)
			if j.State != failover.JobFailed || len(j.Errors) != 1 || !strings.Contains(j.Errors[0], tc.want) {
				t.Fatalf("job %s errors %v, want failed with %q%s", j.State, j.Errors, tc.want, taskList(j))
			}
			for _, vm := range []string{"db01", "app01"} {
				if p := e.azurePower(vm); p != compute.Running || e.machine(vm).State != failover.StateFailedOver {
					t.Errorf("%s: Azure VM %s, state %s: want still running, failed over", vm, p, e.machine(vm).State)
				}
			}
			if taskIndex(j, failover.TaskDeallocate, "db01") >= 0 || len(vc.powered) != 0 ||
				slices.ContainsFunc(e.mtIn, func(s string) bool { return strings.HasPrefix(s, "failback ") }) {
				t.Errorf("something was shut down or moved: master target got %v, powered on %v%s", e.mtIn, vc.powered, taskList(j))
			}
			// Still failed over: the forward commit is still allowed.
			kid := e.start(&proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"db01"}})
			if kj := e.wait(kid, time.Hour); kj.State != failover.JobSucceeded {
				t.Errorf("forward commit after a failed failback: %s %v", kj.State, kj.Errors)
			}
		})
	}
}

func TestFailbackRefusals(t *testing.T) {
	e, _ := failedOver(t, nil, "web01")
	e.backPoints("web01", pt{"fb-c-1", proto.Crash})
	tests := []struct {
		name string
		req  *proto.FailoverRequest
		want string
	}{
		{"not failed over", &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01", "db01"}, Point: proto.PointChoice{Kind: proto.PointLatest}},
			"not failed over: db01 is replicating: failback needs a VM failed over by this orchestrator"},
		{"unknown machine", &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"ghost"}, Point: proto.PointChoice{Kind: proto.PointLatest}},
			"not failed over: ghost is replicating"},
		{"latest-processed", &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}},
			`failback point "latest-processed": want latest or latest-app`},
		{"custom", &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointCustom, ID: "fb-c-1"}},
			`failback point "custom"`},
		{"shutdown source", &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}, ShutdownSource: true},
			"source shutdown is part of a failover only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jobs := len(e.o.Jobs())
			e.send(tc.req)
			if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, tc.want) || !strings.HasPrefix(r.Reason, "failover: ") {
				t.Errorf("reply %+v, want refused with %q", r, tc.want)
			}
			if len(e.o.Jobs()) != jobs || len(e.mtIn) != 0 || e.azurePower("web01") != compute.Running {
				t.Errorf("a refused failback did something: jobs %d→%d, master target got %v", jobs, len(e.o.Jobs()), e.mtIn)
			}
		})
	}

	t.Run("no master target", func(t *testing.T) {
		e := standard(t, options{noMT: true})
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
		e.wait(id, time.Hour)
		e.send(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}})
		if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "failback: no master target configured") {
			t.Errorf("reply %+v", r)
		}
	})
	t.Run("failover never brought the VM up", func(t *testing.T) {
		e := standard(t, options{latency: fabricLatency})
		e.replicate("bad01", "", 1, pt{"CORRUPT", proto.Crash})
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"bad01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
		if j := e.wait(id, time.Hour); j.State != failover.JobFailed {
			t.Fatalf("failover of a corrupt point %s", j.State)
		}
		e.send(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"bad01"}, Point: proto.PointChoice{Kind: proto.PointLatest}})
		if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "never brought the Azure VM up") {
			t.Errorf("reply %+v", r)
		}
	})
}

// TestFailbackFailedRunsAgain: a failback that fails after the Azure VM
// was shut down (the master target refuses the point, the on-premises
// guest is unhealthy) leaves the machine failed back, not committable; it
// may run again, and then be committed.
func TestFailbackFailedRunsAgain(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(e *env)
		heal   func(e *env)
		task   string
		want   string
	}{
		{"master target refuses", func(e *env) { e.mtRefuse["fb-c-1"] = "mastertarget: the datastore is full" },
			func(e *env) { delete(e.mtRefuse, "fb-c-1") }, failover.TaskFailbackPoint,
			"failover: failback point fb-c-1 of web01: the master target refused: mastertarget: the datastore is full"},
		{"guest unhealthy", func(e *env) { e.onPremFail["web01"] = errors.New("bank replay: balance check failed") },
			func(e *env) { delete(e.onPremFail, "web01") }, failover.TaskOnPremHealth,
			"failover: on-premises VM web01 of web01 is not healthy: bank replay: balance check failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := failedOver(t, nil, "web01")
			e.backPoints("web01", pt{"fb-c-1", proto.Crash})
			tc.break_(e)
			back := &proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}}
			id := e.start(back)
			j := e.wait(id, time.Hour)
			tk := j.Tasks[taskIndex(j, tc.task, "web01")]
			if j.State != failover.JobFailed || tk.State != failover.TaskFailed || tk.Reason != tc.want || len(j.AllowedActions) != 0 {
				t.Fatalf("job %s task %+v allowed %v%s", j.State, tk, j.AllowedActions, taskList(j))
			}
			if st := e.machine("web01"); st.State != failover.StateFailedBack || e.azurePower("web01") != compute.Deallocated {
				t.Errorf("machine %s, Azure VM %s", st.State, e.azurePower("web01"))
			}
			e.send(&proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"web01"}})
			if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "failed back: web01: its failback (job "+id+") did not succeed: run the failback again first") {
				t.Errorf("commit of a failed failback: %+v", r)
			}
			tc.heal(e)
			id2 := e.start(back)
			if j := e.wait(id2, time.Hour); j.State != failover.JobSucceeded {
				t.Fatalf("failback again %s: %v%s", j.State, j.Errors, taskList(j))
			}
			kid := e.start(&proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"web01"}})
			if kj := e.wait(kid, time.Hour); kj.State != failover.JobSucceeded || e.machine("web01").State != failover.StateOnPrem {
				t.Errorf("commit %s %v, machine %s", kj.State, kj.Errors, e.machine("web01").State)
			}
		})
	}
}

// TestLostMessages: FailedOver, TargetPointsRequest and FailbackPoint are
// sent again every 30 s while unanswered; a configuration server that
// never answers, or refuses, is a warning after the bound, not a stuck
// job; a master target that never answers fails the step.
func TestLostMessages(t *testing.T) {
	t.Run("resent", func(t *testing.T) {
		vc := &vcenter{on: map[string]bool{}, fail: map[string]bool{}}
		e := standard(t, options{vsphere: vc})
		e.csLose, e.mtLose = 1, 2
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
		j := e.wait(id, time.Hour)
		tk := j.Tasks[taskIndex(j, failover.TaskTellCS, "web01")]
		if j.State != failover.JobSucceeded || tk.State != failover.TaskSucceeded || len(j.Warnings) != 0 {
			t.Fatalf("job %s task %+v warnings %v", j.State, tk, j.Warnings)
		}
		if len(e.csIn) != 2 || e.csIn[0] != e.csIn[1] || !strings.HasPrefix(e.csIn[0], "failed-over web01 web01 ") {
			t.Errorf("configuration server got %v, want the same FailedOver twice", e.csIn)
		}
		if took := tk.End.Sub(tk.Start); took < failover.ResendEvery || took > failover.ResendEvery+5*time.Second {
			t.Errorf("told after %s, want one resend after %s", took, failover.ResendEvery)
		}
		e.backPoints("web01", pt{"fb-c-1", proto.Crash})
		bid := e.start(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}})
		if bj := e.wait(bid, time.Hour); bj.State != failover.JobSucceeded {
			t.Fatalf("failback %s: %v%s", bj.State, bj.Errors, taskList(bj))
		}
		if diff := cmp.Diff([]string{"points web01", "points web01", "points web01", "failback web01 fb-c-1"}, e.mtIn); diff != "" {
			t.Errorf("master target got (-want +got):\n%s", diff)
		}
	})
	for _, tc := range []struct {
		name         string
		silent       bool
		refuse, warn string
		minTook      time.Duration
	}{
		{"silent", true, "", "the configuration server did not answer failed-over in 5m0s (sent every 30s): it was not told", failover.DefaultNotifyTimeout},
		{"refuses", false, "configsrv: unknown machine web01", "the configuration server refused failed-over: configsrv: unknown machine web01", 0},
	} {
		t.Run("cs "+tc.name, func(t *testing.T) {
			e := standard(t, options{})
			e.csSilent, e.csRefuse = tc.silent, tc.refuse
			id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
			j := e.wait(id, time.Hour)
			tk := j.Tasks[taskIndex(j, failover.TaskTellCS, "web01")]
			if j.State != failover.JobSucceeded || tk.State != failover.TaskWarning || !strings.Contains(tk.Reason, tc.warn) ||
				len(j.Warnings) != 1 || !strings.HasPrefix(j.Warnings[0], "web01: failover: ") {
				t.Fatalf("job %s task %+v warnings %v", j.State, tk, j.Warnings)
			}
			if took := tk.End.Sub(tk.Start); took < tc.minTook || took > tc.minTook+5*time.Second {
				t.Errorf("warning after %s, want %s", took, tc.minTook)
			}
			if tc.silent && len(e.csIn) != int(failover.DefaultNotifyTimeout/failover.ResendEvery) {
				t.Errorf("sent %d times in %s, want every %s", len(e.csIn), failover.DefaultNotifyTimeout, failover.ResendEvery)
			}
			if j.VMRTO("web01") >= tc.minTook && tc.silent {
				t.Errorf("VM RTO %s counts the configuration server's silence", j.VMRTO("web01"))
			}
		})
	}
	t.Run("mt silent", func(t *testing.T) {
		e, _ := failedOver(t, nil, "web01")
		e.backPoints("web01", pt{"fb-c-1", proto.Crash})
		e.mtLose = 1 << 30
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailback, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatest}})
		j := e.wait(id, time.Hour)
		if j.State != failover.JobFailed || !strings.Contains(j.Errors[0], "no answer from the master target mt.onprem:9080 in 10m0s") {
			t.Errorf("job %s errors %v", j.State, j.Errors)
		}
		if e.azurePower("web01") != compute.Running {
			t.Errorf("Azure VM shut down without a failback point")
		}
	})
}

// TestPropertyFailbackPoints: for random failback points of a replication
// group's members (and a machine of no group), kind latest or latest-app,
// a failback either brings each machine to the point the rule names — its
// newest (latest), its newest app-consistent one, for group members the
// newest app-consistent id every member has — with every Azure VM shut
// down and every on-premises VM on, or fails with a reason having shut
// nothing down.
func TestPropertyFailbackPoints(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		vc := &vcenter{on: map[string]bool{}, fail: map[string]bool{}}
		e := newEnvFor(t, rt, options{vsphere: vc})
		e.replicate("web01", "", 1, pt{"web01-c-1", proto.Crash})
		e.replicate("db01", "g1", 1, pt{"g1:c:1", proto.Crash})
		e.replicate("app01", "g1", 1, pt{"g1:c:1", proto.Crash})
		vms := []string{"db01", "app01", "web01"}
		id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: vms, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
		if j := e.wait(id, time.Hour); j.State != failover.JobSucceeded {
			rt.Fatalf("failover %s: %v", j.State, j.Errors)
		}
		ids := []string{"p1", "p2", "p3", "p4", "p5", "p6"}
		drawn := map[string][]pt{}
		for _, vm := range vms {
			var ps []pt
			for _, id := range ids {
				if rapid.IntRange(0, 2).Draw(rt, vm+" has "+id) > 0 {
					ps = append(ps, pt{id, rapid.SampledFrom([]proto.Consistency{proto.Crash, proto.App}).Draw(rt, vm+" kind "+id)})
				}
			}
			drawn[vm] = ps
			e.backPoints(vm, ps...)
		}
		kind := rapid.SampledFrom([]string{proto.PointLatest, proto.PointLatestApp}).Draw(rt, "kind")

		// The rule, stated over the drawn points.
		isApp := func(vm, id string) bool {
			return slices.ContainsFunc(drawn[vm], func(p pt) bool { return p.id == id && p.kind == proto.App })
		}
		want := map[string]string{}
		for _, vm := range vms {
			for _, p := range drawn[vm] {
				if kind == proto.PointLatest || p.kind == proto.App {
					want[vm] = p.id
				}
			}
		}
		if kind == proto.PointLatestApp {
			delete(want, "db01")
			delete(want, "app01")
			for _, p := range drawn["db01"] {
				if isApp("db01", p.id) && isApp("app01", p.id) {
					want["db01"], want["app01"] = p.id, p.id
				}
			}
		}

		bid := e.start(&proto.FailoverRequest{Op: proto.OpFailback, VMs: vms, Point: proto.PointChoice{Kind: kind}})
		j := e.wait(bid, time.Hour)
		if len(want) < len(vms) {
			if j.State != failover.JobFailed || len(j.Errors) == 0 || !strings.Contains(j.Errors[0], "recovery point not available") {
				rt.Fatalf("want failed (points %v), got %s %v%s", want, j.State, j.Errors, taskList(j))
			}
			for _, vm := range vms {
				if e.azurePower(vm) != compute.Running {
					rt.Fatalf("%s shut down by a failback that had no point", vm)
				}
			}
			if len(vc.powered)+len(e.mtAt) != 0 {
				rt.Fatalf("powered on %v, disks moved %v", vc.powered, e.mtAt)
			}
			return
		}
		if j.State != failover.JobSucceeded {
			rt.Fatalf("failback %s: %v%s", j.State, j.Errors, taskList(j))
		}
		if diff := cmp.Diff(want, j.Point); diff != "" {
			rt.Fatalf("points (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, e.mtAt); diff != "" {
			rt.Fatalf("disks at (-want +got):\n%s", diff)
		}
		for _, vm := range vms {
			if e.azurePower(vm) != compute.Deallocated || !vc.on[vm] {
				rt.Fatalf("%s: Azure %s, on premises on %v", vm, e.azurePower(vm), vc.on[vm])
			}
		}
	})
}
