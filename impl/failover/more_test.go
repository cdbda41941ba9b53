package failover_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vsphere"
)

// vcenter is a vSphere client that knows powered-on VMs and can power
// them off; PowerOff of a name in fail fails.
type vcenter struct {
	vsphere.Client // the rest is not used: calling it panics
	mu             sync.Mutex
	on             map[string]bool
	fail           map[string]bool
	off            []string
	powered        []string // PowerOn calls that powered a VM on
	// beforeOn, when set, runs at each PowerOn (what the world is like
	// when an on-premises VM comes up).
	beforeOn func(name string)
}

func (v *vcenter) PowerOn(_ context.Context, ref vsphere.VMRef) error {
	name := strings.TrimPrefix(string(ref), "vm-")
	if v.beforeOn != nil {
		v.beforeOn(name)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.on[name] {
		return fmt.Errorf("vsphere: power on %s: %w", ref, vsphere.ErrInvalidPowerState)
	}
	v.on[name] = true
	v.powered = append(v.powered, name)
	return nil
}

func (v *vcenter) VM(_ context.Context, ref vsphere.VMRef) (vsphere.VM, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := strings.TrimPrefix(string(ref), "vm-")
	st := vsphere.PoweredOff
	if v.on[name] {
		st = vsphere.PoweredOn
	}
	return vsphere.VM{Name: name, Ref: ref, PowerState: st}, nil
}

func (v *vcenter) Discover(context.Context) ([]vsphere.VM, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []vsphere.VM
	for _, n := range []string{"app01", "db01", "web01"} {
		st := vsphere.PoweredOff
		if v.on[n] {
			st = vsphere.PoweredOn
		}
		out = append(out, vsphere.VM{Name: n, Ref: vsphere.VMRef("vm-" + n), PowerState: st})
	}
	return out, nil
}

func (v *vcenter) PowerOff(_ context.Context, ref vsphere.VMRef) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	name := strings.TrimPrefix(string(ref), "vm-")
	if v.fail[name] {
		return fmt.Errorf("vsphere: power off %s: %w: the host is not responding", ref, vsphere.ErrInvalidPowerState)
	}
	v.on[name] = false
	v.off = append(v.off, name)
	return nil
}

// TestSourceShutdown: sources are powered off before the failover; one
// that fails to power off is a warning, and its failover goes on.
func TestSourceShutdown(t *testing.T) {
	vc := &vcenter{on: map[string]bool{"db01": true, "app01": true, "web01": true}, fail: map[string]bool{"app01": true}}
	e := standard(t, options{vsphere: vc})
	id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, Plan: plan(nil, nil, nil), Point: proto.PointChoice{Kind: proto.PointLatestMultiVM}, ShutdownSource: true})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobSucceeded {
		t.Fatalf("failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	if diff := cmp.Diff([]string{"db01", "web01"}, vc.off); diff != "" {
		t.Errorf("powered off (-want +got):\n%s", diff)
	}
	if len(j.Warnings) != 1 || !strings.Contains(j.Warnings[0], "app01: failover: source shutdown failed, failover goes on: vsphere: power off vm-app01") {
		t.Errorf("warnings %v", j.Warnings)
	}
	for _, vm := range []string{"db01", "app01", "web01"} {
		sd, stop := j.Tasks[taskIndex(j, failover.TaskShutdown, vm)], j.Tasks[taskIndex(j, failover.TaskStop, vm)]
		if sd.End.After(stop.Start) {
			t.Errorf("%s: stop replication started before the shutdown ended", vm)
		}
		if j.VMRTO(vm) == 0 {
			t.Errorf("%s never healthy", vm)
		}
	}
	if j.Point["db01"] != "g1:c:200" || j.Point["app01"] != "g1:c:200" || j.Point["web01"] != "web01-c-3" {
		t.Errorf("points %v", j.Point)
	}
}

// TestPlanSkipsDeployedVM: a VM another job failed over is skipped by a
// plan, with a task that says so; a plan of only such VMs is refused.
func TestPlanSkipsDeployedVM(t *testing.T) {
	e := standard(t, options{})
	first := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
	e.wait(first, time.Hour)
	id := e.start(&proto.FailoverRequest{Op: proto.OpFailover, Plan: plan(nil, nil, nil), Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobSucceeded {
		t.Fatalf("plan %s: %v%s", j.State, j.Errors, taskList(j))
	}
	if diff := cmp.Diff([]string{failover.TaskSkipVM}, names(j, "web01")); diff != "" {
		t.Errorf("web01 tasks (-want +got):\n%s", diff)
	}
	if sk := j.Tasks[taskIndex(j, failover.TaskSkipVM, "web01")]; sk.State != failover.TaskSkipped || sk.Reason != "deployed by job "+first {
		t.Errorf("skip task %+v", sk)
	}
	if st := e.machine("web01"); st.Job != first {
		t.Errorf("web01 now belongs to %s", st.Job)
	}
	e.send(&proto.FailoverRequest{Op: proto.OpFailover, Plan: &proto.RecoveryPlan{Name: "again", Groups: []proto.PlanGroup{{VMs: []string{"web01"}}}},
		Point: proto.PointChoice{Kind: proto.PointLatestProcessed}})
	if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, "every VM of plan again already failed over") {
		t.Errorf("plan of deployed VMs: %+v", r)
	}
}

// TestDeterministic: the same requests on the same state give the same
// jobs and the same log, line for line.
func TestDeterministic(t *testing.T) {
	run := func() (string, []failover.Job) {
		var log bytes.Buffer
		e := standard(t, options{latency: fabricLatency, copies: 1})
		e.d.SetLogger(slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})))
		e.runbooks.fails["add-to-lb"] = 1
		id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, Plan: plan(nil, nil, []proto.PlanAction{{Name: "lb", Runbook: "add-to-lb"}}),
			Point: proto.PointChoice{Kind: proto.PointLatestMultiVMApp}, Network: proto.NetworkChoice{Group: rg, Name: "test"}})
		e.wait(id, 2*time.Hour)
		e.send(&proto.JobAction{JobID: id, Action: proto.ActionResume})
		e.wait(id, 2*time.Hour)
		return log.String(), e.o.Jobs()
	}
	log1, jobs1 := run()
	log2, jobs2 := run()
	if diff := cmp.Diff(jobs1, jobs2); diff != "" {
		t.Errorf("jobs differ (-first +second):\n%s", diff)
	}
	if log1 != log2 || !strings.Contains(log1, "failover: job succeeded") {
		t.Errorf("logs differ or the job did not succeed:\n%s\n----\n%s", log1, log2)
	}
}

// TestBadFrame: an undecodable frame is dropped; the actor goes on.
func TestBadFrame(t *testing.T) {
	e := standard(t, options{})
	e.d.ReceiveFrame(portal, []byte("garbage"))
	e.pump()
	id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointLatestProcessed},
		Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	if j := e.wait(id, time.Hour); j.State != failover.JobSucceeded {
		t.Errorf("after a bad frame: %s %v", j.State, j.Errors)
	}
}
