package fabric_test

import (
	"bytes"
	"context"
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
	"github.com/v2a-dr/v2a/sim/fabric"
	"github.com/v2a-dr/v2a/sim/workload"
)

const (
	rg        = "rg"
	container = "disks"
	diskBytes = 1 << 20
)

// world is the simulated fabric on a hand-moved virtual clock.
type world struct {
	t     *testing.T
	ctx   context.Context
	now   time.Time
	store *memblob.Store
	f     *memfabric.Fabric
	net   compute.Ref
}

func newWorld(t *testing.T, seed uint64, booter memfabric.Booter) *world {
	t.Helper()
	w := &world{t: t, ctx: context.Background(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), store: memblob.New()}
	f, err := fabric.New(w.store, fabric.Config{Clock: func() time.Time { return w.now }, Rand: rand.New(rand.NewPCG(seed, 7)), Booter: booter})
	if err != nil {
		t.Fatal(err)
	}
	w.f = f
	if err := f.CreateGroup(w.ctx, rg); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateNetwork(w.ctx, compute.NetworkSpec{Group: rg, Name: "net", AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
		Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	w.net = compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "net"}
	if err := w.store.CreateContainer(w.ctx, container); err != nil {
		t.Fatal(err)
	}
	return w
}

// run polls p to its end, moving the clock as suggested, and returns the
// virtual time it took.
func (w *world) run(what string) func(compute.Pending, error) time.Duration {
	return func(p compute.Pending, err error) time.Duration {
		w.t.Helper()
		if err != nil {
			w.t.Fatalf("%s: %v", what, err)
		}
		start := w.now
		for i := 0; i < 1000; i++ {
			r, err := w.f.Poll(w.ctx, p)
			if err != nil {
				w.t.Fatalf("%s: Poll: %v", what, err)
			}
			if r.Done {
				if r.Err != nil {
					w.t.Fatalf("%s: %v", what, r.Err)
				}
				return w.now.Sub(start)
			}
			w.now = w.now.Add(r.After)
		}
		w.t.Fatalf("%s: never done", what)
		return 0
	}
}

// vm makes a VM of machine src from image img and returns the times its
// NIC, disk and VM took.
func (w *world) vm(name, src string, img []byte, hydrate bool) [3]time.Duration {
	w.t.Helper()
	if _, err := w.store.CreatePageBlob(w.ctx, container, name, int64(len(img)), blob.WriteOptions{}); err != nil {
		w.t.Fatal(err)
	}
	if _, err := blob.WritePagesSplit(w.ctx, w.store, container, name, 0, img, blob.WriteOptions{}); err != nil {
		w.t.Fatal(err)
	}
	var out [3]time.Duration
	out[0] = w.run("nic")(w.f.BeginCreateNIC(w.ctx, compute.NICSpec{Group: rg, Name: name + "-nic", Network: w.net, Subnet: "app"}))
	out[1] = w.run("disk")(w.f.BeginCreateDisk(w.ctx, compute.DiskSpec{Group: rg, Name: name + "-os", SourceContainer: container, SourceBlob: name, OSType: compute.Linux}))
	tags := map[string]string{compute.TagSource: src}
	if hydrate {
		tags[compute.TagHydrate] = "true"
	}
	out[2] = w.run("vm")(w.f.BeginCreateVM(w.ctx, compute.VMSpec{Group: rg, Name: name, Size: "Standard_D2s_v3", OSType: compute.Linux, Tags: tags,
		NICs: []compute.Ref{{Kind: compute.KindNIC, Group: rg, Name: name + "-nic"}}, OSDisk: compute.Ref{Kind: compute.KindDisk, Group: rg, Name: name + "-os"}}))
	return out
}

func (w *world) guest(name string) compute.GuestStatus {
	w.t.Helper()
	v, err := w.f.VM(w.ctx, compute.Ref{Kind: compute.KindVM, Group: rg, Name: name})
	if err != nil {
		w.t.Fatal(err)
	}
	return v.Guest
}

// TestModelTimes: each operation takes its modelled time within the
// jitter, hydration only for tagged VMs, and the same seed gives the same
// timings while another seed gives others.
func TestModelTimes(t *testing.T) {
	m := fabric.Model()
	within := func(what string, got, base time.Duration) {
		t.Helper()
		lo, hi := time.Duration(float64(base)*(1-fabric.Jitter)), time.Duration(float64(base)*(1+fabric.Jitter))
		if got < lo || got >= hi {
			t.Errorf("%s took %s, outside the model's [%s, %s)", what, got, lo, hi)
		}
	}
	run := func(seed uint64) [][3]time.Duration {
		w := newWorld(t, seed, nil)
		var out [][3]time.Duration
		for i := 0; i < 6; i++ {
			hydrate := i%2 == 1
			got := w.vm(fmt.Sprintf("vm%d", i), "m", make([]byte, 64<<10), hydrate)
			within("create NIC", got[0], m.CreateNIC)
			within("import disk", got[1], m.CreateDisk)
			if hydrate {
				lo := time.Duration(float64(m.CreateVM+m.Hydrate) * (1 - fabric.Jitter))
				hi := time.Duration(float64(m.CreateVM+m.Hydrate) * (1 + fabric.Jitter))
				if got[2] < lo || got[2] >= hi || got[2] < 8*time.Minute+m.CreateVM*8/9 {
					t.Errorf("hydrated VM create took %s, want create (2.7–3.3 min) plus 8–10 min", got[2])
				}
			} else {
				within("create VM", got[2], m.CreateVM)
			}
			out = append(out, got)
		}
		w2 := newWorld(t, seed, nil)
		w2.vm("x", "m", make([]byte, 4096), false)
		ref := compute.Ref{Kind: compute.KindVM, Group: rg, Name: "x"}
		within("deallocate", w2.run("deallocate")(w2.f.BeginDeallocate(w2.ctx, ref)), m.Deallocate)
		within("start", w2.run("start")(w2.f.BeginStart(w2.ctx, ref)), m.Start)
		within("delete", w2.run("delete")(w2.f.BeginDelete(w2.ctx, ref)), m.Delete)
		return out
	}
	a, b, c := run(42), run(42), run(43)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("seed 42 twice, different timings (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, c) {
		t.Errorf("seeds 42 and 43 gave the same timings: %v", a)
	}
}

// TestNew: the simulated fabric needs the virtual clock and, with jitter,
// a seeded source.
func TestNew(t *testing.T) {
	st := memblob.New()
	if _, err := fabric.New(st, fabric.Config{}); err == nil || !strings.Contains(err.Error(), "no clock") {
		t.Errorf("New without a clock: %v", err)
	}
	now := func() time.Time { return time.Time{} }
	if _, err := fabric.New(st, fabric.Config{Clock: now}); err == nil || !strings.Contains(err.Error(), "seeded Rand") {
		t.Errorf("New without a source for the jitter: %v", err)
	}
	exact := fabric.Model()
	exact.Jitter = 0
	if _, err := fabric.New(st, fabric.Config{Clock: now, Latency: &exact}); err != nil {
		t.Errorf("New with an exact model needs no source: %v", err)
	}
}

// memWriter is a machine with one in-memory disk: every write lands at
// once.
type memWriter struct {
	disk []byte
	k    uint64
}

func (m *memWriter) Submit(_ int, off int64, data []byte, done func(uint64, error)) {
	copy(m.disk[off:], data)
	m.k++
	done(m.k, nil)
}
func (m *memWriter) Size(int) int64 { return int64(len(m.disk)) }
func (m *memWriter) Disks() int     { return 1 }

// bankImage runs a bank workload for a while and returns it with its disk.
func bankImage(t *testing.T) (workload.Workload, []byte) {
	t.Helper()
	mw := &memWriter{disk: make([]byte, diskBytes)}
	wl, err := workload.New(workload.Spec{Kind: "bank", TxPerSec: 10}, mw)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		if _, err := wl.Step(r); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := wl.Check([]io.ReaderAt{bytes.NewReader(mw.disk)}, false); err != nil || !rep.Formatted {
		t.Fatalf("the bank's own image does not check: %+v %v", rep, err)
	}
	return wl, mw.disk
}

// TestBootRunsTheGuestCheck: a VM boots by running its source's workload
// check on the imported disk: a good image gives a healthy guest, a
// corrupt one a running VM whose guest reports the check's exact failure,
// and a source with no check is not called healthy.
func TestBootRunsTheGuestCheck(t *testing.T) {
	wl, img := bankImage(t)
	// A corruption the bank's recovery must notice: the first byte flip,
	// block by block, that its check rejects.
	bad := bytes.Clone(img)
	var want error
	for off := 0; off < len(bad) && want == nil; off += 4096 {
		if bytes.Equal(bad[off:off+4096], make([]byte, 4096)) {
			continue
		}
		bad[off+100] ^= 0xff
		if _, err := wl.Check([]io.ReaderAt{bytes.NewReader(bad)}, false); err != nil {
			want = err
		} else {
			bad[off+100] ^= 0xff
		}
	}
	if want == nil {
		t.Fatal("no single-byte corruption fails the bank check: the test has nothing to show")
	}
	w := newWorld(t, 1, fabric.Boot(map[string]fabric.Check{"bank-vm": fabric.WorkloadCheck(wl)}))
	w.vm("good", "bank-vm", img, true)
	w.vm("bad", "bank-vm", bad, true)
	w.vm("stranger", "unknown-vm", img, false)
	if g := w.guest("good"); g != (compute.GuestStatus{Ready: true}) {
		t.Errorf("guest booted from the bank's image: %+v, want ready", g)
	}
	if g := w.guest("bad"); g.Ready || g.Message != want.Error() {
		t.Errorf("guest booted from a corrupt image: %+v, want not ready with %q", g, want)
	}
	if g := w.guest("stranger"); g.Ready || !strings.Contains(g.Message, fabric.ErrNoCheck.Error()) || !strings.Contains(g.Message, "unknown-vm") {
		t.Errorf("guest of a source with no check: %+v, want not ready naming the source", g)
	}
}
