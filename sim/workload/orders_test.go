package workload

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func runOrders(t *testing.T, steps int) (*Orders, [3]*memDisk, map[string][][2]uint64) {
	t.Helper()
	var ds [3]*memDisk
	var ws [3]Writer
	clock := new(int)
	for i := range ds {
		ds[i] = &memDisk{size: 8 << 20, clock: clock}
		ws[i] = ds[i]
	}
	deps := map[string][][2]uint64{}
	o, err := NewOrders([3]string{"db", "web", "rep"}, ws, Spec{RegionStart: 1 << 20}, 1, func(m string, k uint64, on string, onK uint64) {
		deps[m+"<-"+on] = append(deps[m+"<-"+on], [2]uint64{k, onK})
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < steps; i++ {
		if _, err := o.Step(r); err != nil {
			t.Fatal(err)
		}
	}
	return o, ds, deps
}

func TestOrdersConsistentCutsPass(t *testing.T) {
	o, ds, deps := runOrders(t, 120)
	if o.Orders() != 120 || len(deps["web<-db"]) != 120 || len(deps["rep<-web"]) == 0 || len(ds[2].writes) < 3 {
		t.Fatalf("orders %d, deps %d web<-db, %d rep<-web", o.Orders(), len(deps["web<-db"]), len(deps["rep<-web"]))
	}
	// With synchronous acks the writes of the three disks have one global
	// order: cutting every disk at the same moment is a consistent cut.
	total := len(ds[0].writes) + len(ds[1].writes) + len(ds[2].writes)
	for g := 0; g <= total; g += 5 {
		var ks [3]int
		for i, d := range ds {
			for ks[i] < len(d.at) && d.at[ks[i]] <= g {
				ks[i]++
			}
		}
		if _, err := CheckOrders(ds[0].image(nil, ks[0])[0], ds[1].image(nil, ks[1])[0], ds[2].image(nil, ks[2])[0], 1<<20, o.Slots()); err != nil {
			t.Fatalf("cut at global write %d (db=%d web=%d rep=%d): %v", g, ks[0], ks[1], ks[2], err)
		}
	}
}

// TestOrdersNegativeControl cuts the web VM later than the database VM:
// the web log then has orders the database image lacks, and the invariant
// says so.
func TestOrdersNegativeControl(t *testing.T) {
	o, ds, _ := runOrders(t, 120)
	db := ds[0].image(nil, 30)[0]
	web := ds[1].image(nil, 40)[0]
	rep := ds[2].image(nil, 0)[0]
	if _, err := CheckOrders(db, web, rep, 1<<20, o.Slots()); !errors.Is(err, ErrOrders) {
		t.Fatalf("inconsistent cut passed: %v", err)
	}
	// A report counting orders the web image does not have yet.
	if _, err := CheckOrders(ds[0].image(nil, 120)[0], ds[1].image(nil, 1)[0], ds[2].image(nil, len(ds[2].writes))[0], 1<<20, o.Slots()); !errors.Is(err, ErrOrders) {
		t.Fatalf("a report ahead of the web log passed: %v", err)
	}
}

func TestOrdersFreezeDefersWeb(t *testing.T) {
	o, ds, _ := runOrders(t, 5)
	o.FreezeMachine("web")
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 5; i++ {
		o.Step(r)
	}
	if len(ds[1].writes) != 5 || len(o.webWaiting) != 5 {
		t.Fatalf("frozen web wrote %d, waiting %d", len(ds[1].writes), len(o.webWaiting))
	}
	o.ThawMachine("web")
	if len(ds[1].writes) != 10 {
		t.Fatalf("after thaw the web VM wrote %d, want 10", len(ds[1].writes))
	}
}

func TestOrdersWrapAround(t *testing.T) {
	const slots = (8<<20 - 1<<20) / ordersRecord
	o, ds, _ := runOrders(t, slots+500)
	if o.Slots() != slots || o.Orders() != slots+500 {
		t.Fatalf("%d orders", o.Orders())
	}
	if _, err := CheckOrders(ds[0].image(nil, len(ds[0].writes))[0], ds[1].image(nil, len(ds[1].writes))[0], ds[2].image(nil, len(ds[2].writes))[0], 1<<20, o.Slots()); err != nil {
		t.Fatalf("wrapped flow: %v", err)
	}
	// The negative control still bites after wrapping: the web VM 100
	// orders ahead of the database VM.
	n := len(ds[0].writes)
	if _, err := CheckOrders(ds[0].image(nil, n-100)[0], ds[1].image(nil, n)[0], ds[2].image(nil, 0)[0], 1<<20, o.Slots()); !errors.Is(err, ErrOrders) {
		t.Fatalf("inconsistent wrapped cut passed: %v", err)
	}
}
