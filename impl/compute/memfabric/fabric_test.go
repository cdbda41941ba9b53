package memfabric_test

// Fabric-specific tests: what only the simulated fabric does (latency,
// jitter, boot hook, fault injection, reachability), beyond the port.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
)

const rg = "rg"

// world is a fabric on a virtual clock with a network "prod" (10.1.0.0/16,
// subnet "app" 10.1.1.0/24) and a page blob "c/src" to import.
type world struct {
	t     *testing.T
	ctx   context.Context
	clock *clock
	store *memblob.Store
	f     *memfabric.Fabric
	net   compute.Ref
}

func newWorld(t *testing.T, opts memfabric.Options) *world {
	t.Helper()
	w := &world{t: t, ctx: context.Background(), clock: newClock(), store: memblob.New()}
	opts.Clock = w.clock.Now
	f, err := memfabric.New(w.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.f = f
	if err := f.CreateGroup(w.ctx, rg); err != nil {
		t.Fatal(err)
	}
	w.net = w.network("prod", "10.1.0.0/16", "10.1.1.0/24")
	if err := w.store.CreateContainer(w.ctx, "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.CreatePageBlob(w.ctx, "src", "src", 8192, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.WritePages(w.ctx, "src", "src", 512, []byte(strings.Repeat("v2a!", 128)), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) network(name, space, sub string) compute.Ref {
	w.t.Helper()
	err := w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: name, AddressSpace: netip.MustParsePrefix(space),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix(sub)}}})
	if err != nil {
		w.t.Fatal(err)
	}
	return compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: name}
}

// elapsed runs p to its end, moving the clock as Poll suggests, and
// returns how much virtual time it took and how it ended.
func (w *world) elapsed(p compute.Pending, err error) (time.Duration, error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatalf("Begin: %v", err)
	}
	start := w.clock.now
	for i := 0; i < 1000; i++ {
		r, err := w.f.Poll(w.ctx, p)
		if err != nil {
			w.t.Fatalf("Poll(%s): %v", p, err)
		}
		if r.Done {
			return w.clock.now.Sub(start), r.Err
		}
		w.clock.Advance(r.After)
	}
	w.t.Fatalf("%s never done", p)
	return 0, nil
}

// ok returns a function that runs an operation to its end, which must be
// a success, and returns how long it took.
func (w *world) ok(what string) func(compute.Pending, error) time.Duration {
	return func(p compute.Pending, err error) time.Duration {
		w.t.Helper()
		d, err := w.elapsed(p, err)
		if err != nil {
			w.t.Fatalf("%s: %v", what, err)
		}
		return d
	}
}

func (w *world) nic(name string, n compute.Ref) compute.Ref {
	w.t.Helper()
	w.ok("nic " + name)(w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: name, Network: n, Subnet: "app"}))
	return compute.Ref{Kind: compute.KindNIC, Group: rg, Name: name}
}

func (w *world) disk(name string) compute.Ref {
	w.t.Helper()
	w.ok("disk " + name)(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: name, SourceContainer: "src", SourceBlob: "src", OSType: compute.Linux}))
	return compute.Ref{Kind: compute.KindDisk, Group: rg, Name: name}
}

func (w *world) vmSpec(name string, hydrate bool) compute.VMSpec {
	w.t.Helper()
	spec := compute.VMSpec{Group: rg, Name: name, Size: "Standard_D2s_v3", OSType: compute.Linux,
		NICs: []compute.Ref{w.nic(name+"-nic", w.net)}, OSDisk: w.disk(name + "-os"),
		Tags: map[string]string{compute.TagSource: name}}
	if hydrate {
		spec.Tags[compute.TagHydrate] = "true"
	}
	return spec
}

func (w *world) vm(ref compute.Ref) compute.VM {
	w.t.Helper()
	v, err := w.f.VM(w.ctx, ref)
	if err != nil {
		w.t.Fatal(err)
	}
	return v
}

func vmRef(name string) compute.Ref { return compute.Ref{Kind: compute.KindVM, Group: rg, Name: name} }

// TestLatency: every operation takes its modelled time, and hydration adds
// its time only to VMs tagged for it.
func TestLatency(t *testing.T) {
	lat := memfabric.Latency{CreateNIC: secs(10), CreateDisk: secs(60), CreateVM: mins(3), Hydrate: mins(9),
		Start: secs(50), Deallocate: secs(40), Delete: secs(30)}
	w := newWorld(t, memfabric.Options{Latency: lat})
	check := func(what string, got, want time.Duration) {
		t.Helper()
		if got != want {
			t.Errorf("%s took %s, want %s", what, got, want)
		}
	}
	check("create NIC", w.ok("nic")(w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: "n", Network: w.net, Subnet: "app"})), lat.CreateNIC)
	check("create disk", w.ok("disk")(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: "d", SourceContainer: "src", SourceBlob: "src"})), lat.CreateDisk)
	check("create VM not tagged for hydration", w.ok("vm")(w.f.BeginCreateVM(w.ctx, w.vmSpec("plain", false))), lat.CreateVM)
	check("create VM tagged for hydration", w.ok("vm")(w.f.BeginCreateVM(w.ctx, w.vmSpec("hyd", true))), lat.CreateVM+lat.Hydrate)
	check("deallocate", w.ok("deallocate")(w.f.BeginDeallocate(w.ctx, vmRef("hyd"))), lat.Deallocate)
	check("start (no second hydration)", w.ok("start")(w.f.BeginStart(w.ctx, vmRef("hyd"))), lat.Start)
	check("delete", w.ok("delete")(w.f.BeginDelete(w.ctx, vmRef("hyd"))), lat.Delete)
	check("delete of nothing", w.ok("delete")(w.f.BeginDelete(w.ctx, vmRef("never"))), 0)
}

// TestStatesWhilePending: while an operation runs, the resource shows it
// (Creating/starting, Deleting), and Poll suggests waiting no longer than
// PollInterval nor past the end.
func TestStatesWhilePending(t *testing.T) {
	w := newWorld(t, memfabric.Options{Latency: memfabric.Latency{CreateVM: secs(100), Delete: secs(30)}, PollInterval: secs(40)})
	p, err := w.f.BeginCreateVM(w.ctx, w.vmSpec("vm", false))
	if err != nil {
		t.Fatal(err)
	}
	var afters []time.Duration
	for {
		v := w.vm(vmRef("vm"))
		r, err := w.f.Poll(w.ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Done {
			if v.Provisioning != "Succeeded" || v.Power != compute.Running {
				t.Errorf("done VM: %s/%s", v.Provisioning, v.Power)
			}
			break
		}
		if v.Provisioning != "Creating" || v.Power != compute.Starting {
			t.Errorf("VM while creating: %s/%s, want Creating/starting", v.Provisioning, v.Power)
		}
		afters = append(afters, r.After)
		w.clock.Advance(r.After)
	}
	if diff := cmp.Diff([]time.Duration{secs(40), secs(40), secs(20)}, afters); diff != "" {
		t.Errorf("Poll After (-want +got):\n%s", diff)
	}
	if _, err := w.f.BeginDelete(w.ctx, vmRef("vm")); err != nil {
		t.Fatal(err)
	}
	if v := w.vm(vmRef("vm")); v.Provisioning != "Deleting" {
		t.Errorf("VM being deleted: provisioning %s", v.Provisioning)
	}
	_, err = w.f.BeginStart(w.ctx, vmRef("vm"))
	if !errors.Is(err, compute.ErrConflict) {
		t.Errorf("BeginStart of a VM being deleted: %v, want ErrConflict", err)
	}
	_, err = w.f.BeginDelete(w.ctx, vmRef("vm"))
	if !errors.Is(err, compute.ErrConflict) {
		t.Errorf("BeginDelete of a VM being deleted: %v, want ErrConflict", err)
	}
}

// TestJitter: the same seed gives the same timings, another seed others,
// each within the spread.
func TestJitter(t *testing.T) {
	run := func(seed uint64) []time.Duration {
		lat := latencies(mins(1))
		lat.Jitter = 0.5
		w := newWorld(t, memfabric.Options{Latency: lat, Rand: rand.New(rand.NewPCG(seed, 0))})
		var out []time.Duration
		for i := 0; i < 4; i++ {
			out = append(out, w.ok("vm")(w.f.BeginCreateVM(w.ctx, w.vmSpec(fmt.Sprintf("vm%d", i), i%2 == 0))))
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different timings (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, c) {
		t.Errorf("seeds 1 and 2 gave the same timings %v", a)
	}
	for i, d := range a {
		lo, hi := mins(3)/2, mins(3)*3/2
		if i%2 == 0 {
			lo, hi = lo+mins(4)/2, hi+mins(4)*3/2
		}
		if d < lo || d >= hi {
			t.Errorf("VM %d took %s, outside [%s, %s)", i, d, lo, hi)
		}
	}
}

// TestBooter: the boot hook sees the VM and its disks; a guest that fails
// leaves the VM running with the failure as its message; a start boots
// again; a start of a running VM does not.
func TestBooter(t *testing.T) {
	var boots []string
	healthy := true
	booter := func(_ context.Context, vm compute.VM, disks []io.ReaderAt) error {
		buf := make([]byte, 4)
		if _, err := disks[0].ReadAt(buf, 512); err != nil {
			return err
		}
		boots = append(boots, fmt.Sprintf("%s:%s:%d:%s", vm.Ref.Name, vm.Tags[compute.TagSource], len(disks), buf))
		if !healthy {
			return errors.New("bank: account page 3 is torn")
		}
		return nil
	}
	w := newWorld(t, memfabric.Options{Booter: booter})
	spec := w.vmSpec("vm", false)
	spec.DataDisks = []compute.Ref{w.disk("data")}
	if d, err := w.elapsed(w.f.BeginCreateVM(w.ctx, spec)); err != nil || d != 0 {
		t.Fatalf("create: %s, %v", d, err)
	}
	if g := w.vm(vmRef("vm")).Guest; g != (compute.GuestStatus{Ready: true}) {
		t.Errorf("guest after a healthy boot: %+v", g)
	}
	w.ok("start running")(w.f.BeginStart(w.ctx, vmRef("vm")))
	w.ok("deallocate")(w.f.BeginDeallocate(w.ctx, vmRef("vm")))
	healthy = false
	w.ok("start")(w.f.BeginStart(w.ctx, vmRef("vm")))
	v := w.vm(vmRef("vm"))
	if v.Power != compute.Running || v.Provisioning != "Succeeded" || v.Guest != (compute.GuestStatus{Message: "bank: account page 3 is torn"}) {
		t.Errorf("after an unhealthy boot: %s/%s guest %+v; want a running VM whose guest says why it is not ready", v.Provisioning, v.Power, v.Guest)
	}
	if diff := cmp.Diff([]string{"vm:vm:2:v2a!", "vm:vm:2:v2a!"}, boots); diff != "" {
		t.Errorf("boots (-want +got):\n%s", diff)
	}
}

// TestFaults: each kind of injected fault, by ASR error code, fails the
// operation it names, as many times as it says, and nothing else.
func TestFaults(t *testing.T) {
	lat := latencies(secs(10))
	tests := []struct {
		name  string
		fault memfabric.Fault
		do    func(w *world) (compute.Pending, error)
		// begin is the error the Begin call must give; done the
		// operation's failure.
		begin, done error
		code        string
		check       func(t *testing.T, w *world)
	}{
		{
			name: "28031 quota on VM create", fault: memfabric.Quota("vm*"),
			do:    func(w *world) (compute.Pending, error) { return w.f.BeginCreateVM(w.ctx, w.vmSpec("vm1", false)) },
			begin: compute.ErrFailed, code: compute.CodeQuota,
			check: func(t *testing.T, w *world) {
				inv, _ := w.f.Inventory(w.ctx)
				if len(inv.VMs) != 0 || inv.NICs[0].VM != (compute.Ref{}) {
					t.Errorf("a refused VM left something: VMs %v, NIC attached to %v", inv.VMs, inv.NICs[0].VM)
				}
			},
		},
		{
			name: "28092 on NIC create", fault: memfabric.NICFailed(""),
			do: func(w *world) (compute.Pending, error) {
				return w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: "n", Network: w.net, Subnet: "app"})
			},
			begin: compute.ErrFailed, code: compute.CodeNICFailed,
			check: func(t *testing.T, w *world) {
				n, _ := w.f.Network(w.ctx, w.net)
				if len(n.Subnets[0].Used) != 0 {
					t.Errorf("a failed NIC holds an address: %v", n.Subnets[0].Used)
				}
			},
		},
		{
			name: "170010 hydration", fault: memfabric.HydrationFailed("vm1"),
			do:   func(w *world) (compute.Pending, error) { return w.f.BeginCreateVM(w.ctx, w.vmSpec("vm1", true)) },
			done: compute.ErrFailed, code: compute.CodeBootFailed,
			check: func(t *testing.T, w *world) {
				v := w.vm(vmRef("vm1"))
				if v.Provisioning != "Failed" || v.Guest.Ready || !strings.Contains(v.Guest.Message, "170010") {
					t.Errorf("after failed hydration: %s guest %+v", v.Provisioning, v.Guest)
				}
				if d, err := w.elapsed(w.f.BeginDelete(w.ctx, vmRef("vm1"))); err != nil || d != lat.Delete {
					t.Errorf("delete of the failed VM: %s %v", d, err)
				}
			},
		},
		{
			name: "429 on any Begin", fault: memfabric.Throttle(memfabric.OpAny, "", secs(7), 1),
			do:    func(w *world) (compute.Pending, error) { return w.f.BeginDelete(w.ctx, vmRef("nothing")) },
			begin: compute.ErrThrottled, code: compute.CodeThrottled,
			check: func(t *testing.T, w *world) {
				if _, err := w.f.BeginDelete(w.ctx, vmRef("nothing")); err != nil {
					t.Errorf("second call, past the fault's count: %v", err)
				}
			},
		},
		{
			name: "async VM create failure", fault: memfabric.Fault{Op: memfabric.OpCreateVM, Status: 200, Code: compute.CodeProvisionFailed, Message: "allocation failed", Async: true, Count: 1},
			do:   func(w *world) (compute.Pending, error) { return w.f.BeginCreateVM(w.ctx, w.vmSpec("vm1", false)) },
			done: compute.ErrFailed, code: compute.CodeProvisionFailed,
			check: func(t *testing.T, w *world) {
				if v := w.vm(vmRef("vm1")); v.Provisioning != "Failed" {
					t.Errorf("after an async create failure: %s", v.Provisioning)
				}
				_, err := w.f.BeginStart(w.ctx, vmRef("vm1"))
				if !errors.Is(err, compute.ErrConflict) {
					t.Errorf("start of a failed VM: %v", err)
				}
			},
		},
		{
			name: "async disk import failure", fault: memfabric.Fault{Op: memfabric.OpCreateDisk, Status: 500, Code: compute.CodeProvisionFailed, Message: "import failed", Async: true, Count: 1},
			do: func(w *world) (compute.Pending, error) {
				return w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: "d", SourceContainer: "src", SourceBlob: "src"})
			},
			done: compute.ErrFailed, code: compute.CodeProvisionFailed,
			check: func(t *testing.T, w *world) {
				if inv, _ := w.f.Inventory(w.ctx); len(inv.Disks) != 0 {
					t.Errorf("failed import left disks %v", inv.Disks)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, memfabric.Options{Latency: lat})
			if err := w.f.Inject(tc.fault); err != nil {
				t.Fatal(err)
			}
			p, err := tc.do(w)
			var got error
			if tc.begin != nil {
				got = err
			} else {
				if err != nil {
					t.Fatalf("Begin: %v", err)
				}
				_, got = w.elapsed(p, nil)
			}
			want := tc.begin
			if want == nil {
				want = tc.done
			}
			var e *compute.Error
			if !errors.Is(got, want) || !errors.As(got, &e) || e.Code != tc.code {
				t.Fatalf("got %v, want %v with code %s", got, want, tc.code)
			}
			if tc.fault.Status == 429 && e.RetryAfter != tc.fault.RetryAfter {
				t.Errorf("429 RetryAfter %s, want %s", e.RetryAfter, tc.fault.RetryAfter)
			}
			if left := w.f.Faults(); len(left) != 0 {
				t.Errorf("faults left after one use: %+v", left)
			}
			tc.check(t, w)
		})
	}
}

// TestFaultMatchAndOrder: a fault meets only its operation and names, and
// faults are used up in call order.
func TestFaultMatchAndOrder(t *testing.T) {
	w := newWorld(t, memfabric.Options{})
	for _, ft := range []memfabric.Fault{
		memfabric.Quota("web-*"),
		memfabric.Throttle(memfabric.OpCreateVM, "", secs(1), 2),
	} {
		if err := w.f.Inject(ft); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, name := range []string{"db-1", "web-1", "web-2", "web-3", "db-2"} {
		_, err := w.f.BeginCreateVM(w.ctx, w.vmSpec(name, true))
		var e *compute.Error
		switch {
		case err == nil:
			got = append(got, name+": ok")
		case errors.As(err, &e):
			got = append(got, fmt.Sprintf("%s: %d %s", name, e.Status, e.Code))
		default:
			t.Fatal(err)
		}
	}
	want := []string{"db-1: 429 TooManyRequests", "web-1: 429 TooManyRequests", "web-2: 409 OperationNotAllowed", "web-3: ok", "db-2: ok"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestBadInput: options and faults that cannot work are refused with a
// reason; refused requests change nothing.
func TestBadInput(t *testing.T) {
	st := memblob.New()
	clk := newClock()
	for _, tc := range []struct {
		what string
		opts memfabric.Options
		want string
	}{
		{"latency without a clock", memfabric.Options{Latency: memfabric.Latency{CreateVM: 1}}, "needs a Clock"},
		{"negative latency", memfabric.Options{Clock: clk.Now, Latency: memfabric.Latency{Delete: -1}}, "negative"},
		{"jitter without a source", memfabric.Options{Clock: clk.Now, Latency: memfabric.Latency{Jitter: 0.1}}, "needs a seeded Rand"},
		{"jitter of 1", memfabric.Options{Clock: clk.Now, Latency: memfabric.Latency{Jitter: 1}, Rand: rand.New(rand.NewPCG(1, 1))}, "outside [0, 1)"},
	} {
		if _, err := memfabric.New(st, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with %s: %v, want an error saying %q", tc.what, err, tc.want)
		}
	}
	if _, err := memfabric.New(nil, memfabric.Options{}); err == nil {
		t.Error("New without a store: no error")
	}
	w := newWorld(t, memfabric.Options{})
	for _, tc := range []struct {
		what  string
		fault memfabric.Fault
	}{
		{"unknown op", memfabric.Fault{Op: "reboot", Status: 500, Code: "X", Count: 1}},
		{"zero count", memfabric.Fault{Op: memfabric.OpStart, Status: 500, Code: "X"}},
		{"no code", memfabric.Fault{Op: memfabric.OpStart, Status: 500, Count: 1}},
		{"async 429", memfabric.Fault{Op: memfabric.OpStart, Status: 429, Code: "X", RetryAfter: 1, Count: 1, Async: true}},
		{"429 without Retry-After", memfabric.Fault{Op: memfabric.OpStart, Status: 429, Code: "X", Count: 1}},
		{"a success status at Begin", memfabric.Fault{Op: memfabric.OpStart, Status: 200, Code: "X", Count: 1}},
		{"bad glob", memfabric.Fault{Op: memfabric.OpStart, Match: "[", Status: 500, Code: "X", Count: 1}},
	} {
		if err := w.f.Inject(tc.fault); err == nil || !strings.HasPrefix(err.Error(), "memfabric: ") {
			t.Errorf("Inject with %s: %v, want a memfabric error", tc.what, err)
		}
	}
	if left := w.f.Faults(); len(left) != 0 {
		t.Errorf("refused faults were kept: %+v", left)
	}
	before, _ := w.f.Inventory(w.ctx)
	for _, tc := range []struct {
		what string
		err  error
		want error
	}{
		{"network with an uncanonical prefix", w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: "x", AddressSpace: netip.MustParsePrefix("10.9.0.1/16")}), compute.ErrInvalid},
		{"network with a /30 subnet", w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: "x", AddressSpace: netip.MustParsePrefix("10.9.0.0/16"),
			Subnets: []compute.SubnetSpec{{Name: "s", Prefix: netip.MustParsePrefix("10.9.0.0/30")}}}), compute.ErrInvalid},
		{"network in a missing group", w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: "nope", Name: "x", AddressSpace: netip.MustParsePrefix("10.9.0.0/16")}), compute.ErrNotFound},
		{"empty group name", w.f.CreateGroup(w.ctx, ""), compute.ErrInvalid},
		{"peer with itself", w.f.Peer(w.ctx, w.net, w.net), compute.ErrInvalid},
		{"peer overlapping spaces", func() error {
			_ = w.f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: "twin", AddressSpace: netip.MustParsePrefix("10.1.0.0/16")})
			defer func() {
				_, _ = w.elapsed(w.f.BeginDelete(w.ctx, compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "twin"}))
			}()
			return w.f.Peer(w.ctx, w.net, compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "twin"})
		}(), compute.ErrInvalid},
		{"NIC in a missing subnet", second(w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: "n", Network: w.net, Subnet: "nope"})), compute.ErrInvalid},
		{"disk of a block blob", func() error {
			_, _ = w.store.Put(w.ctx, "src", "block", []byte("x"), blob.WriteOptions{})
			return second(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: "d", SourceContainer: "src", SourceBlob: "block"}))
		}(), compute.ErrInvalid},
		{"disk smaller than its blob", second(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: "d", SourceContainer: "src", SourceBlob: "src", SizeBytes: 4096})), compute.ErrInvalid},
		{"disk of an odd size", second(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: "d", SourceContainer: "src", SourceBlob: "src", SizeBytes: 10000})), compute.ErrInvalid},
		{"VM without NICs", second(w.f.BeginCreateVM(w.ctx, compute.VMSpec{Group: rg, Name: "v", OSType: compute.Linux})), compute.ErrInvalid},
		{"VM of an unknown OS", second(w.f.BeginCreateVM(w.ctx, compute.VMSpec{Group: rg, Name: "v", OSType: "BeOS"})), compute.ErrInvalid},
		{"delete of an unknown kind", second(w.f.BeginDelete(w.ctx, compute.Ref{Kind: "lb", Group: rg, Name: "x"})), compute.ErrInvalid},
		{"delete in a missing group", second(w.f.BeginDelete(w.ctx, compute.Ref{Kind: compute.KindVM, Group: "nope", Name: "x"})), compute.ErrNotFound},
	} {
		if !errors.Is(tc.err, tc.want) || !strings.HasPrefix(fmt.Sprint(tc.err), "compute: ") {
			t.Errorf("%s: %v, want %v", tc.what, tc.err, tc.want)
		}
	}
	after, _ := w.f.Inventory(w.ctx)
	if diff := cmp.Diff(before, after, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("refused requests changed the fabric (-before +after):\n%s", diff)
	}
}

func second[T any](_ T, err error) error { return err }

// TestReachable: NICs, VMs and networks reach each other in one network
// or across a peering (not transitively), never across unpeered networks;
// a deleted NIC reaches nothing.
func TestReachable(t *testing.T) {
	w := newWorld(t, memfabric.Options{})
	test := w.network("test", "10.2.0.0/16", "10.2.1.0/24")
	hub := w.network("hub", "10.3.0.0/16", "10.3.1.0/24")
	p1, p2 := w.nic("p1", w.net), w.nic("p2", w.net)
	t1 := w.nic("t1", test)
	h1 := w.nic("h1", hub)
	check := func(when string, a, b compute.Ref, want bool) {
		t.Helper()
		if got := w.f.Reachable(w.ctx, a, b); got != want {
			t.Errorf("%s: Reachable(%s, %s) = %v, want %v", when, a.Name, b.Name, got, want)
		}
	}
	check("same network", p1, p2, true)
	check("isolated", p1, t1, false)
	check("isolated", t1, p1, false)
	if err := w.f.Peer(w.ctx, w.net, hub); err != nil {
		t.Fatal(err)
	}
	if err := w.f.Peer(w.ctx, hub, test); err != nil {
		t.Fatal(err)
	}
	check("peered", p1, h1, true)
	check("peered", h1, p1, true)
	check("not transitive", p1, t1, false)
	vm := w.vmSpec("tvm", false) // its NIC is in prod
	vm.NICs = append(vm.NICs, w.nic("tvm-nic1", test))
	w.ok("vm")(w.f.BeginCreateVM(w.ctx, vm))
	check("a VM by its second NIC", vmRef("tvm"), t1, true)
	check("a VM by its first NIC", vmRef("tvm"), p2, true)
	check("a network and a NIC in it", test, t1, true)
	check("a network and an isolated NIC", test, p1, false)
	check("a network and a peered network", w.net, hub, true)
	check("a missing VM", vmRef("nope"), p1, false)
	w.ok("delete h1")(w.f.BeginDelete(w.ctx, h1))
	check("deleted", p1, h1, false)
	w.ok("delete hub")(w.f.BeginDelete(w.ctx, hub))
	n, _ := w.f.Network(w.ctx, w.net)
	if len(n.Peers) != 0 {
		t.Errorf("a deleted network is still a peer: %v", n.Peers)
	}
}
