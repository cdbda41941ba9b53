package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

// propertyChecks is how many random cases the property tests run by
// default (each is a whole world for about an hour of virtual time), and
// propertySeed the seed they draw them from, so that `make test` checks the
// same cases every time and CI cannot turn red by the luck of a draw.
// -rapid.checks=N runs more; -rapid.seed=0 draws fresh ones. Failing cases
// are saved by rapid under testdata/rapid/ and replayed first on every run:
// commit them (they are the regression seeds).
const (
	propertyChecks = "6"
	propertySeed   = "20261125"
)

func init() {
	for name, v := range map[string]string{"rapid.checks": propertyChecks, "rapid.seed": propertySeed} {
		if f := flag.Lookup(name); f != nil && f.Value.String() == f.DefValue {
			flag.Set(name, v)
		}
	}
}

// flakyStore fails a fraction of blob-storage calls, from its own seed:
// the components must retry, and nothing may be lost or applied twice.
type flakyStore struct {
	blob.Store
	mu sync.Mutex
	r  *rand.Rand
	p  float64
	n  int
}

var errFlaky = errors.New("injected storage fault: 503 Server Busy")

func (f *flakyStore) fail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.r.Float64() < f.p {
		f.n++
		return true
	}
	return false
}

func (f *flakyStore) Put(ctx context.Context, c, n string, d []byte, o blob.WriteOptions) (string, error) {
	if f.fail() {
		return "", errFlaky
	}
	return f.Store.Put(ctx, c, n, d, o)
}
func (f *flakyStore) Get(ctx context.Context, c, n string, o blob.ReadOptions) ([]byte, blob.Props, error) {
	if f.fail() {
		return nil, blob.Props{}, errFlaky
	}
	return f.Store.Get(ctx, c, n, o)
}
func (f *flakyStore) WritePages(ctx context.Context, c, n string, off int64, d []byte, o blob.WriteOptions) (string, error) {
	if f.fail() {
		return "", errFlaky
	}
	return f.Store.WritePages(ctx, c, n, off, d, o)
}
func (f *flakyStore) List(ctx context.Context, c, p string) ([]blob.Item, error) {
	if f.fail() {
		return nil, errFlaky
	}
	return f.Store.List(ctx, c, p)
}
func (f *flakyStore) Snapshot(ctx context.Context, c, n string, md map[string]string) (string, error) {
	if f.fail() {
		return "", errFlaky
	}
	return f.Store.Snapshot(ctx, c, n, md)
}

// fault is one scripted fault: it starts at At and is healed after For.
type fault struct {
	At, For time.Duration
	Kind    string
	Host    string
	Factor  int64
}

func (f fault) String() string {
	s := fmt.Sprintf("%s@%s/%s", f.Kind, f.At, f.For)
	if f.Host != "" {
		s += ":" + f.Host
	}
	return s
}

var faultKinds = []string{"agent-crash", "ps-crash", "azure-crash", "clog", "partition", "lan-loss", "machine-crash"}

// TestReplicationProperties runs the whole pipeline — agents, process
// server, Azure side, configuration server — under random workloads,
// policies and fault schedules, then heals everything and demands
// convergence. In every case every recovery point must be exactly the
// writes logged before its bookmark, recover to the workload's invariant,
// and come in order within retention; after healing, every machine must
// make new points again.
func TestReplicationProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64Range(1, 1<<40).Draw(rt, "seed")
		kind := rapid.SampledFrom([]string{"bank", "random"}).Draw(rt, "workload")
		crashEvery := rapid.SampledFrom([]time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute}).Draw(rt, "crashInterval")
		cacheCap := rapid.SampledFrom([]int64{0, 2 << 20}).Draw(rt, "cacheCap")
		flaky := rapid.SampledFrom([]float64{0, 0.02}).Draw(rt, "storageFaults")
		dup := rapid.SampledFrom([]float64{0, 0.2}).Draw(rt, "lanDuplicates")
		faults := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) fault {
			f := fault{
				At:   time.Duration(rapid.IntRange(5, 35).Draw(t, "at")) * time.Minute,
				For:  time.Duration(rapid.IntRange(1, 8).Draw(t, "for")) * time.Minute,
				Kind: rapid.SampledFrom(faultKinds).Draw(t, "kind"),
			}
			f.Host = rapid.SampledFrom([]string{"db01", "app01"}).Draw(t, "host")
			f.Factor = int64(rapid.SampledFrom([]int{10, 1000}).Draw(t, "factor"))
			return f
		}), 0, 4).Draw(rt, "faults")

		e, err := New(context.Background(), Options{Seed: seed, Machines: []string{"db01", "app01"}, MemoryStorage: true, AllocatedMiB: 1})
		if err != nil {
			rt.Fatal(err)
		}
		defer e.Close()
		spec := workloadSpecFor(kind)
		spec.ChurnBps = 16 << 10
		for _, m := range e.MachineNames() {
			if err := e.StartWorkload(m, spec); err != nil {
				rt.Fatal(err)
			}
		}
		opts := DeployOptions{CacheCapBytes: cacheCap, AgentDrain: 10 * time.Second}
		if flaky > 0 {
			opts.WrapStore = func(s blob.Store) blob.Store {
				return &flakyStore{Store: s, r: rand.New(rand.NewPCG(seed, 7)), p: flaky}
			}
		}
		if dup > 0 {
			lp, _ := e.Net.Link(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem)
			lp.Dup, lp.Jitter = dup, 5*time.Millisecond
			e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, lp)
		}
		d, err := e.Deploy(opts)
		if err != nil {
			rt.Fatal(err)
		}
		pol := proto.DefaultPolicy()
		pol.Name, pol.CrashInterval, pol.AppInterval = "prop", crashEvery, 20*time.Minute
		e.Sim.RunFor(time.Second)
		d.Request(&proto.CreatePolicy{Policy: pol})
		e.Sim.RunFor(time.Second)
		for _, m := range e.MachineNames() {
			d.Request(&proto.EnableReplication{Machine: m, Policy: pol.Name})
		}
		for _, f := range faults {
			scheduleFault(e, d, f)
		}
		// Safety phase under faults, then heal and demand convergence.
		e.Sim.RunFor(45 * time.Minute)
		healAll(e, d)
		healedAt := e.Sim.Now()
		e.Sim.RunFor(2*crashEvery + 10*time.Minute)

		repro := fmt.Sprintf("seed=%d workload=%s crash=%s cache=%d storageFaults=%g dup=%g faults=%v", seed, kind, crashEvery, cacheCap, flaky, dup, faults)
		var bad []string
		for _, r := range append(d.CheckPoints(e.MachineNames(), PointChecks{}), e.CheckLiveDisks()...) {
			if r.Verdict != OK {
				bad = append(bad, r.String())
			}
		}
		for _, m := range e.MachineNames() {
			cat, err := d.Catalog(m)
			if err != nil {
				bad = append(bad, fmt.Sprintf("liveness %s: no catalog: %v", m, err))
				continue
			}
			fresh := false
			for _, p := range cat.Points {
				fresh = fresh || p.Time.After(healedAt)
			}
			if !fresh {
				st, _ := d.MachineStatus(m)
				bad = append(bad, fmt.Sprintf("liveness %s: no recovery point after healing at %s (state %s, %d points)", m, fmtTime(e, healedAt), st.State, len(cat.Points)))
			}
		}
		if len(bad) > 0 {
			rt.Fatalf("%s\n%s", repro, strings.Join(bad, "\n"))
		}
	})
}

func scheduleFault(e *Env, d *Deployment, f fault) {
	start, end := func() {}, func() {}
	switch f.Kind {
	case "agent-crash":
		start, end = func() { e.Sim.Crash(f.Host) }, func() { e.Sim.Restart(f.Host) }
	case "ps-crash":
		start, end = func() { e.Sim.Crash(HostProcessServer) }, func() { e.Sim.Restart(HostProcessServer) }
	case "azure-crash":
		start, end = func() { e.Sim.Crash(HostService) }, func() { e.Sim.Restart(HostService) }
	case "machine-crash":
		start, end = func() { d.MachineCrash(f.Host) }, func() { d.MachineRestart(f.Host) }
	case "clog":
		start = func() {
			e.Net.Clog(simnet.PathInternet, simnet.OnPrem, simnet.Azure, f.Factor, e.Sim.Now().Add(f.For))
		}
	case "partition":
		start, end = func() { e.Net.Partition("onprem", "azure") }, func() { e.Net.Heal() }
	case "lan-loss":
		var saved simnet.LinkParams
		start = func() {
			saved, _ = e.Net.Link(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem)
			lp := saved
			lp.Loss = 0.2
			e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, lp)
		}
		end = func() { e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, saved) }
	}
	e.Sim.After(f.At, "fault/"+f.String(), func() {
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", f.String())
		start()
	})
	e.Sim.After(f.At+f.For, "heal/"+f.String(), func() {
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", "end "+f.String())
		end()
	})
}

// healAll ends every fault still in force: hosts up, links healed and
// lossless.
func healAll(e *Env, d *Deployment) {
	e.Net.Heal()
	lp, _ := e.Net.Link(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem)
	lp.Loss = 0
	e.Net.SetLink(simnet.PathLAN, simnet.OnPrem, simnet.OnPrem, lp)
	for _, h := range []string{HostProcessServer, HostService, HostConfigServer} {
		e.Sim.Restart(h)
	}
	for _, m := range e.MachineNames() {
		if e.Sim.Down(m) {
			d.MachineRestart(m)
		}
	}
}
