package failover_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestPropertyTestFailover: for random plans, point choices, plan actions
// and fabric faults, a test failover always ends — succeeded, or failed
// with a reason — within bounded virtual time; every VM it booted runs
// exactly its chosen point; and after cleanup the fabric's inventory and
// the copied blobs are what they were before the test.
func TestPropertyTestFailover(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		e := newEnvFor(t, rt, options{latency: fabricLatency, copies: rapid.IntRange(0, 3).Draw(rt, "pendingCopies")})
		e.replicate("web01", "", 1, pt{"web01-c-1", proto.Crash}, pt{"web01-a-2", proto.App}, pt{"web01-c-3", proto.Crash})
		e.replicate("db01", "g1", 2, pt{"g1:a:100", proto.App}, pt{"g1:c:200", proto.Crash}, pt{"db01-c-3", proto.Crash})
		e.replicate("app01", "g1", 2, pt{"app01-a-1", proto.App}, pt{"g1:a:100", proto.App}, pt{"g1:c:200", proto.Crash})
		e.replicate("log01", "", 1, pt{"log01-c-1", proto.Crash})

		vms := rapid.Permutation([]string{"web01", "db01", "app01", "log01"}).Draw(rt, "order")
		vms = vms[:rapid.IntRange(1, 4).Draw(rt, "vms")]
		pl := &proto.RecoveryPlan{Name: "p"}
		for i, vm := range vms {
			if i == 0 || rapid.Bool().Draw(rt, "newGroup") {
				pl.Groups = append(pl.Groups, proto.PlanGroup{})
			}
			g := &pl.Groups[len(pl.Groups)-1]
			g.VMs = append(g.VMs, vm)
		}
		for gi := range pl.Groups {
			if rapid.IntRange(0, 3).Draw(rt, "action") == 0 {
				pl.Groups[gi].Pre = append(pl.Groups[gi].Pre, proto.PlanAction{Name: fmt.Sprintf("a%d", gi), Runbook: "rb"})
			}
		}
		e.runbooks.fails["rb"] = rapid.IntRange(0, 1).Draw(rt, "runbookFails")
		kind := rapid.SampledFrom([]string{proto.PointLatestProcessed, proto.PointLatest, proto.PointLatestApp,
			proto.PointLatestMultiVM, proto.PointLatestMultiVMApp}).Draw(rt, "point")
		faults := []memfabric.Fault{
			memfabric.Quota("*"), memfabric.NICFailed("*"), memfabric.HydrationFailed("*"),
			memfabric.Throttle(memfabric.OpAny, "", 20*time.Second, 5),
			{Op: memfabric.OpCreateDisk, Status: 500, Code: "InternalError", Message: "disk import failed", Async: true, Count: 1},
			{Op: memfabric.OpCreateVM, Status: 409, Code: "OperationNotAllowed", Message: "28031 async", Async: true, Count: 1},
		}
		for range rapid.IntRange(0, 2).Draw(rt, "faults") {
			ft := rapid.SampledFrom(faults).Draw(rt, "fault")
			ft.Match = rapid.SampledFrom([]string{"", "*", vms[0] + "*"}).Draw(rt, "match")
			must(rt, e.fabric.Inject(ft))
		}
		for _, vm := range vms {
			if rapid.Bool().Draw(rt, "hydrate") {
				e.send(&proto.SetTarget{Machine: vm, Hydrate: true})
			}
		}

		before := e.inventory()
		id := e.start(&proto.FailoverRequest{Op: proto.OpTestFailover, Plan: pl, Point: proto.PointChoice{Kind: kind},
			Network: proto.NetworkChoice{Group: rg, Name: "test"}})
		j := e.wait(id, 6*time.Hour) // fails the case if still in progress
		if j.State == failover.JobFailed && len(j.AllowedActions) > 0 {
			// A failed action: resume once (the runbook fails once at most).
			e.send(&proto.JobAction{JobID: id, Action: proto.ActionResume})
			j = e.wait(id, 6*time.Hour)
		}
		switch j.State {
		case failover.JobSucceeded:
			for _, vm := range vms {
				for i, d := range e.booted[vm+"-test"] {
					if !bytes.Equal(d, image(vm, j.Point[vm], i)) {
						rt.Fatalf("%s disk %d is not its point %s", vm, i, j.Point[vm])
					}
				}
			}
		case failover.JobFailed:
			if len(j.Errors) == 0 || j.Errors[len(j.Errors)-1] == "" {
				rt.Fatalf("failed without a reason%s", taskList(j))
			}
		default:
			rt.Fatalf("job ended %s%s", j.State, taskList(j))
		}

		cid := e.start(&proto.FailoverRequest{Op: proto.OpTestCleanup, Plan: pl})
		if cj := e.wait(cid, 6*time.Hour); cj.State != failover.JobSucceeded {
			rt.Fatalf("cleanup %s: %v%s", cj.State, cj.Errors, taskList(cj))
		}
		if diff := cmp.Diff(before, e.inventory(), invOpts); diff != "" {
			rt.Fatalf("leftovers (-before +after):\n%s", diff)
		}
		if b := e.blobs(); len(b) != 0 {
			rt.Fatalf("copied blobs left: %v", b)
		}
	})
}
