package harness

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
	"github.com/v2a-dr/v2a/sim/sched"
)

const testDiskBytes = 64 << 10

// bootFrom makes a fabric VM named vm (tagged as failed over from src at
// point) whose one disk is imported from data, and returns the fabric.
func bootFrom(t *testing.T, data []byte, src, point string) *memfabric.Fabric {
	t.Helper()
	ctx := context.Background()
	store := memblob.New()
	if err := store.CreateContainer(ctx, "fodisks"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreatePageBlob(ctx, "fodisks", "d0", int64(len(data)), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.WritePages(ctx, "fodisks", "d0", 0, data, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := memfabric.New(store, memfabric.Options{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(p compute.Pending, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := f.Poll(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if r.Done {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
				return
			}
		}
	}
	if err := f.CreateGroup(ctx, "rg"); err != nil {
		t.Fatal(err)
	}
	net := compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "drill"}
	if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg", Name: "drill", AddressSpace: netip.MustParsePrefix("10.9.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.9.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	must(f.BeginCreateDisk(ctx, compute.DiskSpec{Group: "rg", Name: src + "-d0", SourceContainer: "fodisks", SourceBlob: "d0", SizeBytes: int64(len(data)), OSType: compute.Linux}))
	must(f.BeginCreateNIC(ctx, compute.NICSpec{Group: "rg", Name: src + "-nic", Network: net, Subnet: "app"}))
	must(f.BeginCreateVM(ctx, compute.VMSpec{Group: "rg", Name: src + "-test", Size: "Standard_D2s_v3", OSType: compute.Linux,
		NICs:   []compute.Ref{{Kind: compute.KindNIC, Group: "rg", Name: src + "-nic"}},
		OSDisk: compute.Ref{Kind: compute.KindDisk, Group: "rg", Name: src + "-d0"},
		Tags:   map[string]string{compute.TagSource: src, compute.TagPoint: point, compute.TagJob: "job-1"}}))
	return f
}

// TestImageCheck: the image check passes a VM booted from exactly its
// point, and its negative controls catch a booted disk that differs from
// the point, a point that is no state the source ever had, and say
// unknown (a failure) for a point no longer in storage.
func TestImageCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d0.img")
	if err := disk.Create(path, testDiskBytes); err != nil {
		t.Fatal(err)
	}
	m, err := disk.Open("web01", []string{path}, func() time.Duration { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range 5 {
		if err := m.Write(0, int64(i)*4096, bytes.Repeat([]byte{byte(i + 1)}, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	img := make([]byte, testDiskBytes)
	if _, err := m.Device(0).ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, at int) []byte { c := bytes.Clone(b); c[at] ^= 0xff; return c }
	oracle := func(string) *disk.Oracle { return m.Oracle() }
	cases := []struct {
		name       string
		booted, pt []byte
		pruned     bool
		want       Verdict
		evidence   string
	}{
		{"exactly the point", img, img, false, OK, "k=5"},
		{"booted disk differs from the point", flip(img, 5000), img, false, Illegal, "differs from the point's disk 0 first at byte 5000"},
		{"point is no state the source had", flip(img, 30000), flip(img, 30000), false, Illegal, "no state the source ever had"},
		{"point pruned", img, img, true, Unknown, "no longer in storage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := bootFrom(t, c.booted, "web01", "p1")
			inv, err := f.Inventory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lookup := func(machine, id string) ([]io.ReaderAt, uint64, proto.Consistency, bool, error) {
				if c.pruned || machine != "web01" || id != "p1" {
					return nil, 0, 0, false, nil
				}
				return []io.ReaderAt{bytes.NewReader(c.pt)}, math.MaxUint64, proto.Crash, true, nil
			}
			rs, _ := judgeImages(ctx, f, inv, lookup, oracle, nil)
			if len(rs) != 1 {
				t.Fatalf("%d results, want 1: %v", len(rs), rs)
			}
			if rs[0].Verdict != c.want || !strings.Contains(rs[0].Evidence+rs[0].Detail, c.evidence) {
				t.Fatalf("got %s, want %s with %q", rs[0], c.want, c.evidence)
			}
		})
	}
}

// TestLeftoversAndIsolation: leftovers passes an inventory equal to the
// one before the test and names what is left otherwise; isolation passes
// a test VM in its own network and catches one whose network is peered
// with production.
func TestLeftoversAndIsolation(t *testing.T) {
	ctx := context.Background()
	f := bootFrom(t, make([]byte, testDiskBytes), "web01", "p1")
	inv, err := f.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	empty := compute.Inventory{Groups: inv.Groups, Networks: inv.Networks}
	if r := judgeLeftovers("job-1", empty, empty); r.Verdict != OK {
		t.Fatalf("equal inventories: %s", r)
	}
	if r := judgeLeftovers("job-1", empty, inv); r.Verdict != Illegal || !strings.Contains(r.Evidence, "web01-test") {
		t.Fatalf("a VM left behind: %s", r)
	}
	drill := compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "drill"}
	prod := compute.Ref{Kind: compute.KindNetwork, Group: "rg", Name: "prod"}
	if err := f.CreateNetwork(ctx, compute.NetworkSpec{Group: "rg", Name: "prod", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	isTest := func(job string) bool { return job == "job-1" }
	judge := func() Result {
		t.Helper()
		inv, err := f.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs := judgeIsolation(inv, prod, isTest)
		if len(rs) != 1 {
			t.Fatalf("%d results, want 1", len(rs))
		}
		return rs[0]
	}
	if r := judge(); r.Verdict != OK || r.Detail != "only in drill" {
		t.Fatalf("isolated: %s", r)
	}
	if err := f.Peer(ctx, drill, prod); err != nil {
		t.Fatal(err)
	}
	if r := judge(); r.Verdict != Illegal || !strings.Contains(r.Evidence, "reaches the production network prod") {
		t.Fatalf("peered with production: %s", r)
	}
	if rs := judgeIsolation(inv, prod, func(string) bool { return false }); len(rs) != 0 {
		t.Fatalf("no test VM: %v", rs)
	}
}

// TestPlanOrder: the plan-order check passes a plan job that ran as the
// plan says, and its negative controls catch a group booting before the
// previous one is healthy, a group's VMs created one after another, an
// action that ran for a failover type it does not name, a task done twice,
// and a runbook run again after it succeeded.
func TestPlanOrder(t *testing.T) {
	at := func(min int) time.Time { return sched.Epoch.Add(time.Duration(min) * time.Minute) }
	plan := &proto.RecoveryPlan{Name: "erp", Groups: []proto.PlanGroup{
		{VMs: []string{"db"}},
		{VMs: []string{"web", "rep"}, Pre: []proto.PlanAction{
			{Name: "dns", Runbook: "update-dns", FailoverTypes: []string{proto.OpFailover}},
			{Name: "check", Manual: true, FailoverTypes: []string{proto.OpTestFailover}},
		}},
	}}
	task := func(name, vm string, g, start, end int) failover.Task {
		return failover.Task{Name: name, VM: vm, Group: g, State: failover.TaskSucceeded, Start: at(start), End: at(end)}
	}
	good := func() failover.Job {
		return failover.Job{ID: "job-1", Op: proto.OpFailover, Plan: "erp", State: failover.JobSucceeded, Tasks: []failover.Task{
			task(failover.TaskCopy, "db", 1, 0, 1), task(failover.TaskCopy, "web", 2, 0, 1), task(failover.TaskCopy, "rep", 2, 0, 1),
			task(failover.TaskVM, "db", 1, 1, 4), task(failover.TaskHealth, "db", 1, 4, 4),
			task("Group 2 pre-action dns (script)", "", 2, 4, 5),
			task(failover.TaskVM, "web", 2, 5, 8), task(failover.TaskVM, "rep", 2, 5, 9),
			task(failover.TaskHealth, "web", 2, 8, 8), task(failover.TaskHealth, "rep", 2, 9, 9),
		}}
	}
	runs := []runbookRun{{Runbook: "update-dns", Plan: "erp", Op: proto.OpFailover, Group: 2, OK: true}}
	verdicts := func(j failover.Job, runs []runbookRun) map[string]Result {
		m := map[string]Result{}
		for _, r := range judgePlanOrder(j, plan, runs) {
			m[strings.TrimPrefix(r.Subject, "job-1 plan erp ")] = r
		}
		return m
	}
	for name, r := range verdicts(good(), runs) {
		if r.Verdict != OK {
			t.Errorf("good job: %s: %s", name, r)
		}
	}
	cases := []struct {
		name, which, evidence string
		mutate                func(j *failover.Job, runs *[]runbookRun)
	}{
		{"group 2 before group 1 is healthy", "groups", "group 2 started", func(j *failover.Job, _ *[]runbookRun) {
			j.Tasks[3].End, j.Tasks[4].Start, j.Tasks[4].End = at(6), at(6), at(6)
		}},
		{"a group's VMs one after another", "parallel", "not in parallel", func(j *failover.Job, _ *[]runbookRun) { j.Tasks[7].Start, j.Tasks[7].End = at(9), at(12) }},
		{"an action for another failover type", "actions", "action check ran in a failover", func(j *failover.Job, _ *[]runbookRun) {
			j.Tasks = append(j.Tasks, task("Group 2 pre-action check (manual)", "", 2, 5, 5))
		}},
		{"an action that applies never ran", "actions", "never ran", func(j *failover.Job, _ *[]runbookRun) { j.Tasks = slices.Delete(j.Tasks, 5, 6) }},
		{"a task done twice", "once", "appears twice", func(j *failover.Job, _ *[]runbookRun) { j.Tasks = append(j.Tasks, j.Tasks[6]) }},
		{"a runbook run again after success", "once", "ran again", func(_ *failover.Job, r *[]runbookRun) { *r = append(*r, (*r)[0]) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, rs := good(), slices.Clone(runs)
			c.mutate(&j, &rs)
			got := verdicts(j, rs)[c.which]
			if got.Verdict != Illegal || !strings.Contains(got.Evidence, c.evidence) {
				t.Fatalf("%s: got %s, want ILLEGAL with %q", c.which, got, c.evidence)
			}
		})
	}
	if r := judgePlanOrder(failover.Job{ID: "job-1", Op: proto.OpFailover}, plan, nil)[0]; r.Verdict != Unknown {
		t.Fatalf("no group ran: %s, want unknown", r)
	}
}

// TestAzureTarget: a target whose azure.mode is arm builds the real
// adapter from the AZURE_* variables and says which one is missing; an
// unknown mode is refused by name. (Nothing here reaches Azure.)
func TestAzureTarget(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ mode, want string }{
		{"arm", "AZURE_SUBSCRIPTION_ID"},
		{"cloud", `azure.mode "cloud": want sim or arm`},
	} {
		t.Run(c.mode, func(t *testing.T) {
			t.Setenv("AZURE_SUBSCRIPTION_ID", "")
			p := filepath.Join(t.TempDir(), "t.yaml")
			tgt := "name: t\nworld: sim\ninventory: " + filepath.Join(root, "fixtures/inventory/lab.yaml") + "\nvsphere:\n  mode: vcsim\nstorage:\n  mode: auto\nazure:\n  mode: " + c.mode + "\n"
			if err := os.WriteFile(p, []byte(tgt), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := NewScript("t.scn", []byte("world machines=(web01) target="+p+"\n----\n\ndeploy\n----\n\nazure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production\n----\n"))
			if err != nil {
				t.Fatal(err)
			}
			r := &Runner{Ctx: context.Background()}
			defer r.Close()
			var last string
			r.RunScript(s, func(_ Directive, out string) { last = out })
			if !strings.Contains(last, "error: ") || !strings.Contains(last, c.want) {
				t.Fatalf("azure-network said %q, want an error with %q", last, c.want)
			}
		})
	}
}
