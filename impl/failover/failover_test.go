package failover_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
)

// invOpts compares inventories (netip values are comparable).
var invOpts = cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})

var fabricLatency = memfabric.Latency{CreateNIC: 10 * time.Second, CreateDisk: time.Minute, CreateVM: 3 * time.Minute,
	Hydrate: 9 * time.Minute, Start: time.Minute, Deallocate: time.Minute, Delete: 30 * time.Second}

// standard replicates web01 (one disk, its own points), and db01 and
// app01 (two disks each), members of replication group g1 with two group
// tags; db01 also has a newer point of its own.
func standard(t *testing.T, opts options) *env {
	e := newEnv(t, opts)
	e.replicate("web01", "", 1, pt{"web01-c-1", proto.Crash}, pt{"web01-a-2", proto.App}, pt{"web01-c-3", proto.Crash})
	e.replicate("db01", "g1", 2, pt{"g1:a:100", proto.App}, pt{"g1:c:200", proto.Crash}, pt{"db01-c-3", proto.Crash})
	e.replicate("app01", "g1", 2, pt{"app01-a-1", proto.App}, pt{"g1:a:100", proto.App}, pt{"g1:c:200", proto.Crash})
	e.send(&proto.SetTarget{Req: "t1", Machine: "web01", Subnet: "app", IP: "10.0.1.10", OSType: "Linux", Hydrate: true})
	e.send(&proto.SetTarget{Req: "t2", Machine: "db01", Subnet: "db", IP: "10.0.2.20", OSType: "Windows"})
	e.send(&proto.SetTarget{Req: "t3", Machine: "app01", Subnet: "nosuch", IP: "10.0.9.9"})
	for _, r := range e.replies {
		if !r.OK {
			t.Fatalf("set target refused: %s", r.Reason)
		}
	}
	return e
}

// names is the task names of j for vm, in order.
func names(j failover.Job, vm string) []string {
	var out []string
	for _, t := range j.Tasks {
		if t.VM == vm {
			out = append(out, t.Name)
		}
	}
	return out
}

func TestTestFailoverAndCleanup(t *testing.T) {
	e := standard(t, options{latency: fabricLatency, copies: 2})
	before := e.inventory()
	id := e.start(&proto.FailoverRequest{Req: "r1", Op: proto.OpTestFailover, VMs: []string{"web01"},
		Point: proto.PointChoice{Kind: proto.PointLatestApp}, Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	j := e.wait(id, time.Hour)
	if j.State != failover.JobSucceeded {
		t.Fatalf("test failover %s: %v%s", j.State, j.Errors, taskList(j))
	}
	want := []string{failover.TaskCopy, failover.TaskDisks, failover.TaskNIC, failover.TaskVM, failover.TaskHealth}
	if diff := cmp.Diff(want, names(j, "web01")); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
	if j.Point["web01"] != "web01-a-2" {
		t.Errorf("point %q, want the newest app-consistent web01-a-2", j.Point["web01"])
	}
	// The VM is <name>-test, in the test network, subnet and IP as the source.
	inv := e.inventory()
	if len(inv.VMs) != 1 || inv.VMs[0].Ref.Name != "web01-test" || !inv.VMs[0].Guest.Ready {
		t.Fatalf("VMs %+v", inv.VMs)
	}
	vm := inv.VMs[0]
	wantTags := map[string]string{compute.TagSource: "web01", compute.TagPoint: "web01-a-2", compute.TagJob: id, compute.TagHydrate: "true"}
	if diff := cmp.Diff(wantTags, vm.Tags); diff != "" {
		t.Errorf("VM tags (-want +got):\n%s", diff)
	}
	if len(inv.NICs) != 1 || inv.NICs[0].Network != testNet || inv.NICs[0].Subnet != "app" || inv.NICs[0].IP != netip.MustParseAddr("10.0.1.10") {
		t.Errorf("NIC %+v, want test network, subnet app, 10.0.1.10", inv.NICs)
	}
	// The booted disk is the point, byte for byte.
	if got := e.booted["web01-test"]; len(got) != 1 || !bytes.Equal(got[0], image("web01", "web01-a-2", 0)) {
		t.Errorf("booted disk is not point web01-a-2")
	}
	// Hydration (Linux) was waited for: at least create + hydrate.
	if rto := j.VMRTO("web01"); rto < 12*time.Minute || rto != j.RTO() || j.GroupRTO(1) != rto {
		t.Errorf("RTO vm %s group %s job %s, want ≥ 12m and equal", rto, j.GroupRTO(1), j.RTO())
	}
	if st := e.machine("web01"); st.State != failover.StateTest || st.Point != "web01-a-2" {
		t.Errorf("machine %+v", st)
	}
	// Replication is untouched: the Azure side was not asked anything.
	if len(e.vaultIn) != 0 || e.catalog("web01").Stopped {
		t.Errorf("a test failover asked the Azure side %v", e.vaultIn)
	}

	cid := e.start(&proto.FailoverRequest{Req: "r2", Op: proto.OpTestCleanup, VMs: []string{"web01"}})
	cj := e.wait(cid, time.Hour)
	if cj.State != failover.JobSucceeded {
		t.Fatalf("cleanup %s: %v%s", cj.State, cj.Errors, taskList(cj))
	}
	want = []string{failover.TaskDeleteVM, failover.TaskDeleteNICs, failover.TaskDeleteDisks, failover.TaskDeleteBlobs}
	if diff := cmp.Diff(want, names(cj, "web01")); diff != "" {
		t.Errorf("cleanup tasks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, e.inventory(), invOpts); diff != "" {
		t.Errorf("leftovers after cleanup (-before +after):\n%s", diff)
	}
	if b := e.blobs(); len(b) != 0 {
		t.Errorf("copied blobs left: %v", b)
	}
	if st := e.machine("web01"); st.State != failover.StateReplicating || st.VM != (compute.Ref{}) || len(st.Disks)+len(st.NICs)+len(st.Blobs) != 0 {
		t.Errorf("machine after cleanup %+v", st)
	}
}

// TestLeftoversNegative: the leftovers comparison sees a resource a
// cleanup did not delete (its negative control).
func TestLeftoversNegative(t *testing.T) {
	e := standard(t, options{})
	before := e.inventory()
	id := e.start(&proto.FailoverRequest{Req: "r1", Op: proto.OpTestFailover, VMs: []string{"web01"},
		Point: proto.PointChoice{Kind: proto.PointLatestProcessed}, Network: proto.NetworkChoice{Group: rg, Name: "test"}})
	e.wait(id, time.Hour)
	if diff := cmp.Diff(before, e.inventory(), invOpts); diff == "" {
		t.Fatalf("a test failover left the inventory unchanged")
	}
}

func TestRefusals(t *testing.T) {
	e := standard(t, options{})
	big := &proto.RecoveryPlan{Name: "big", Groups: []proto.PlanGroup{{}}}
	for i := range 101 {
		big.Groups[0].VMs = append(big.Groups[0].VMs, "vm"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
	}
	eight := &proto.RecoveryPlan{Name: "eight"}
	for i := range 8 {
		eight.Groups = append(eight.Groups, proto.PlanGroup{VMs: []string{"m" + string(rune('a'+i))}})
	}
	net := proto.NetworkChoice{Group: rg, Name: "test"}
	latest := proto.PointChoice{Kind: proto.PointLatestProcessed}
	tests := []struct {
		name string
		req  *proto.FailoverRequest
		want string
	}{
		{"unknown op", &proto.FailoverRequest{Op: "teleport", VMs: []string{"web01"}}, `unknown operation "teleport"`},
		{"no VM", &proto.FailoverRequest{Op: proto.OpFailover, Point: latest}, "no VM and no plan"},
		{"VMs and plan", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Plan: eight, Point: latest}, "both VMs and a plan"},
		{"101 VMs", &proto.FailoverRequest{Op: proto.OpFailover, Plan: big, Point: latest}, "plan big has 101 VMs in 1 groups (at most 100 VMs in 7 groups)"},
		{"8 groups", &proto.FailoverRequest{Op: proto.OpFailover, Plan: eight, Point: latest}, "plan eight has 8 VMs in 8 groups"},
		{"custom for a plan", &proto.FailoverRequest{Op: proto.OpFailover, Plan: &proto.RecoveryPlan{Name: "p", Groups: []proto.PlanGroup{{VMs: []string{"web01"}}}},
			Point: proto.PointChoice{Kind: proto.PointCustom, ID: "web01-c-1"}}, "a custom point is for a single VM, never a plan"},
		{"custom for two VMs", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01", "db01"},
			Point: proto.PointChoice{Kind: proto.PointCustom, ID: "web01-c-1"}}, "never a plan"},
		{"multi-VM without a plan", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"db01"},
			Point: proto.PointChoice{Kind: proto.PointLatestMultiVM}}, "point latest-multivm is for recovery plans only"},
		{"unknown point kind", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"db01"}, Point: proto.PointChoice{Kind: "best"}}, `unknown point choice "best"`},
		{"test without network", &proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: latest}, "a test failover needs its network"},
		{"twice the same VM", &proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01", "web01"}, Point: latest, Network: net}, `machine "web01" empty or named twice`},
		{"shutdown in a test", &proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: latest, Network: net, ShutdownSource: true}, "source shutdown is part of a failover only"},
		{"cleanup without a test", &proto.FailoverRequest{Op: proto.OpTestCleanup, VMs: []string{"web01"}}, "no test failover to clean up: web01 is replicating"},
		{"change point not failed over", &proto.FailoverRequest{Op: proto.OpChangePoint, VMs: []string{"web01"}, Point: latest}, "not failed over: web01 is replicating"},
		{"commit not failed over", &proto.FailoverRequest{Op: proto.OpCommit, VMs: []string{"web01"}}, "commit needs a failed-over VM"},
		{"pruned custom point", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: proto.PointChoice{Kind: proto.PointCustom, ID: "web01-c-0"}},
			`failover: recovery point not available: web01 has no point "web01-c-0" (pruned by retention, or never made)`},
		{"no catalog", &proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"ghost"}, Point: proto.PointChoice{Kind: proto.PointCustom, ID: "x"}},
			"recovery point not available: ghost"},
	}
	before := e.inventory()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := len(e.replies)
			e.send(tc.req)
			if len(e.replies) != n+1 {
				t.Fatalf("%d replies, want one", len(e.replies)-n)
			}
			r := e.lastReply()
			if r.OK || !strings.Contains(r.Reason, tc.want) || !strings.HasPrefix(r.Reason, "failover: ") {
				t.Errorf("reply %+v, want refused with %q", r, tc.want)
			}
		})
	}
	if jobs := e.o.Jobs(); len(jobs) != 0 {
		t.Errorf("refused requests made jobs: %v", jobs)
	}
	if diff := cmp.Diff(before, e.inventory(), invOpts); diff != "" {
		t.Errorf("refused requests changed the fabric (-before +after):\n%s", diff)
	}
	if len(e.vaultIn) != 0 || len(e.blobs()) != 0 {
		t.Errorf("refused requests reached the Azure side %v or storage %v", e.vaultIn, e.blobs())
	}
	// Bad job actions and targets.
	e.send(&proto.JobAction{Req: "a", JobID: "nosuch", Action: proto.ActionAck})
	if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, `no such job: "nosuch"`) {
		t.Errorf("action on no job: %+v", r)
	}
	e.send(&proto.SetTarget{Req: "s", Machine: "web01", IP: "10.0.1.999"})
	if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, `IP "10.0.1.999"`) {
		t.Errorf("bad IP: %+v", r)
	}
	e.send(&proto.SetTarget{Req: "s", Machine: "web01", OSType: "BeOS"})
	if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, `OS type "BeOS"`) {
		t.Errorf("bad OS: %+v", r)
	}
}

// TestRefusalsWhileTesting: during a test, a failover or a second test of
// the VM is refused; after the test ended a failover is still refused
// until cleanup; a test of a failed-over VM is refused.
func TestRefusalsWhileTesting(t *testing.T) {
	e := standard(t, options{latency: fabricLatency})
	net := proto.NetworkChoice{Group: rg, Name: "test"}
	latest := proto.PointChoice{Kind: proto.PointLatestProcessed}
	id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: latest, Network: net})
	refused := func(req *proto.FailoverRequest, want string) {
		t.Helper()
		e.send(req)
		if r := e.lastReply(); r.OK || !strings.Contains(r.Reason, want) {
			t.Errorf("%s: %+v, want refused with %q", req.Op, r, want)
		}
	}
	refused(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: latest}, "an operation is in progress: web01: job "+id)
	e.wait(id, time.Hour)
	refused(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"web01"}, Point: latest}, "failover could not be initiated since test failover is in progress")
	refused(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"web01"}, Point: latest, Network: net}, "web01 is in a test failover")
	fid := e.start(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"db01"}, Point: latest})
	e.wait(fid, time.Hour)
	refused(&proto.FailoverRequest{Op: proto.OpTestFailover, VMs: []string{"db01"}, Point: latest, Network: net}, "no test failover of a failed-over VM")
	refused(&proto.FailoverRequest{Op: proto.OpFailover, VMs: []string{"db01"}, Point: latest}, "already failed over: db01")
}
