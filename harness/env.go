package harness

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	"github.com/v2a-dr/v2a/sim/disk"
	simnet "github.com/v2a-dr/v2a/sim/net"
	"github.com/v2a-dr/v2a/sim/sched"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
	"github.com/v2a-dr/v2a/sim/workload"
)

// Host names of the simulated deployment. Machines are hosts named after
// themselves.
const (
	HostConfigServer  = proto.HostConfigServer // configuration server (on-prem)
	HostProcessServer = "ps01"                 // process server (on-prem)
	HostStorage       = proto.HostStorage      // the storage account's public endpoint
	HostService       = proto.HostService      // Site Recovery's service endpoint
)

// Options configure New.
type Options struct {
	Target *Target // nil: DefaultTarget
	Seed   uint64
	// Dir is the working directory for disks and datastores; "" makes a
	// temporary one that Close removes.
	Dir string
	// Live receives trace lines as they happen (filtered by LiveFilter).
	Live       io.Writer
	LiveFilter func(kind string) bool
	// Machines limits which inventory machines get simulated guests
	// (nil: all of them).
	Machines []string
	// MemoryStorage replaces blob storage with an in-memory store
	// (impl/blob/memblob, which passes the same conformance suite as
	// Azurite): property tests, the swarm and `v2a run --storage
	// memblob`. Scenarios use Azurite by default.
	MemoryStorage bool
	// TraceHashOnly keeps only the trace's hash and count, not its lines
	// (long soaks and benchmarks): the `trace` view and the non-interference
	// check then have no lines to judge.
	TraceHashOnly bool
	// AllocatedMiB is how much of each disk holds data before tracking
	// starts (the guest OS); the rest is zero. 0: an eighth of the disk.
	AllocatedMiB int64
}

// Env is a built world: the scheduler, the network, vSphere, the guests
// and their workloads, and (on first use) blob storage.
type Env struct {
	Seed      uint64
	Target    *Target
	Sim       *sched.Sim
	Net       *simnet.Net
	Trace     *sched.Trace
	Inventory *simvs.Inventory
	VCSim     *simvs.World   // nil when vSphere is a URL
	VC        vsphere.Client // the impl adapter, against vcsim or vCenter
	VMs       []vsphere.VM   // as discovered
	Machines  map[string]*disk.Machine
	Workloads *workload.Driver
	// Deployment is the replication deployment, once Deploy ran.
	Deployment *Deployment

	ctx      context.Context
	store    blob.Store
	counts   *countingStore
	memStore blob.Store
	hb       causality
	orders   []orderFlow
	prefix   string
	// keepContainers: Close leaves the containers (Runner.KeepStorage).
	keepContainers bool
	dir            string
	tempDir        bool
	names          []string
	closers        []func()
	// span is what the running command advances the clock toward
	// (Progress).
	span clockSpan
}

// New builds a world as the target says.
func New(ctx context.Context, opts Options) (_ *Env, err error) {
	t := opts.Target
	if t == nil {
		if t, err = loadFixtureTarget(DefaultTarget); err != nil {
			return nil, err
		}
	}
	e := &Env{Seed: opts.Seed, Target: t, ctx: ctx, Machines: map[string]*disk.Machine{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	e.dir = opts.Dir
	if e.dir == "" {
		if e.dir, err = makeWorldDir(WorkBase()); err != nil {
			return nil, err
		}
		e.tempDir = true
	}
	if opts.MemoryStorage {
		e.memStore = memblob.New()
	}
	e.Trace = sched.NewTrace(opts.Live)
	if opts.LiveFilter != nil {
		e.Trace.SetFilter(opts.LiveFilter)
	}
	if opts.TraceHashOnly {
		e.Trace.HashOnly()
	}
	e.Net = simnet.New()
	if err := e.configureNetwork(); err != nil {
		return nil, err
	}
	e.Sim = sched.New(opts.Seed, e.Net, e.Trace)
	// A cancelled context (Ctrl-C) stops a running command at its next
	// event; the caller still judges and closes the world.
	if ctx != nil {
		stopOn := e.Sim.StopOn(ctx)
		e.closers = append(e.closers, func() { stopOn() })
	}
	e.Workloads = workload.NewDriver(e.Sim.After)
	e.Trace.Add(0, "harness", "world", fmt.Sprintf("target=%s seed=%d", t.Name, opts.Seed))

	invPath, inv, err := ReadFixture(t.Inventory)
	if err != nil {
		return nil, fmt.Errorf("vsphere: load inventory: %w", err)
	}
	if e.Inventory, err = simvs.Parse(invPath, inv); err != nil {
		return nil, err
	}
	if err := e.buildVSphere(ctx); err != nil {
		return nil, err
	}
	if err := e.buildMachines(opts); err != nil {
		return nil, err
	}
	for _, h := range []simnet.Host{
		{Name: HostConfigServer, Site: simnet.OnPrem},
		{Name: HostProcessServer, Site: simnet.OnPrem},
		{Name: HostStorage, Site: simnet.Azure, Public: true},
		{Name: HostService, Site: simnet.Azure, Public: true},
	} {
		if err := e.Net.AddHost(h); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *Env) configureNetwork() error {
	nt := e.Target.Network
	lp := simnet.DefaultInternet
	if nt.InternetLatency > 0 {
		lp.Latency = time.Duration(nt.InternetLatency)
	}
	if nt.InternetMbps > 0 {
		lp.BytesPerSec = int64(nt.InternetMbps * 1e6 / 8)
	}
	for _, dir := range [][2]simnet.Site{{simnet.OnPrem, simnet.Azure}, {simnet.Azure, simnet.OnPrem}} {
		if err := e.Net.SetLink(simnet.PathInternet, dir[0], dir[1], lp); err != nil {
			return err
		}
	}
	switch nt.VPN {
	case "up":
		e.Net.SetVPN(simnet.VPNUp)
	case "down":
		e.Net.SetVPN(simnet.VPNDown)
	}
	return nil
}

func (e *Env) buildVSphere(ctx context.Context) error {
	switch e.Target.VSphere.Mode {
	case "vcsim":
		w, err := simvs.Build(ctx, e.Inventory, filepath.Join(e.dir, "datastores"))
		if err != nil {
			return err
		}
		e.VCSim = w
		e.closers = append(e.closers, w.Close)
		e.VC = vcenter.New(w.Client())
	case "url":
		vs := e.Target.VSphere
		pw := os.Getenv(vs.PasswordEnv)
		if vs.PasswordEnv != "" && pw == "" {
			return fmt.Errorf("harness: target %s: vCenter password variable %s is not set", e.Target.File, vs.PasswordEnv)
		}
		o := vcenter.Options{Username: vs.Username, Password: pw, Insecure: vs.Insecure, Thumbprint: vs.Thumbprint}
		if vs.CAFile != "" {
			var err error
			if o.CAFile, err = Resolve(vs.CAFile); err != nil {
				return err
			}
		}
		c, err := vcenter.Open(ctx, vs.URL, o)
		if err != nil {
			return fmt.Errorf("harness: target %s: %w", e.Target.File, err)
		}
		e.closers = append(e.closers, func() {
			// Log out even after a Ctrl-C; a vCenter that no longer
			// answers gets a few seconds.
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Close(lctx)
		})
		e.VC = c
	}
	vms, err := e.VC.Discover(ctx)
	if err != nil {
		return err
	}
	e.VMs = vms
	disks := 0
	for _, vm := range vms {
		disks += len(vm.Disks)
	}
	e.Trace.Add(0, "harness", "vsphere", fmt.Sprintf("mode=%s vms=%d disks=%d", e.Target.VSphere.Mode, len(vms), disks))
	return nil
}

// buildMachines gives each chosen inventory machine a simulated guest: its
// disks (the vcsim -flat.vmdk files, or local image files for physical
// servers and real vCenters), filled with the guest's data, and a host on
// the network.
func (e *Env) buildMachines(opts Options) error {
	want, missing := map[string]bool{}, map[string]bool{}
	for _, n := range opts.Machines {
		want[n], missing[n] = true, true
	}
	discovered := map[string]vsphere.VM{}
	for _, vm := range e.VMs {
		discovered[vm.Name] = vm
	}
	for _, inv := range e.Inventory.VMs {
		if len(want) > 0 && !want[inv.Name] {
			continue
		}
		delete(missing, inv.Name)
		var paths []string
		for i, d := range inv.Disks {
			var p string
			if e.VCSim != nil && !inv.Physical {
				var err error
				if p, err = e.VCSim.DiskFile(inv.Name, i); err != nil {
					return err
				}
			} else {
				if !inv.Physical {
					if _, ok := discovered[inv.Name]; !ok {
						return fmt.Errorf("harness: machine %s is in the inventory but vCenter does not have it", inv.Name)
					}
				}
				p = filepath.Join(e.dir, "guests", inv.Name, fmt.Sprintf("disk%d.img", i))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return err
				}
				if err := disk.Create(p, d.CapacityBytes()); err != nil {
					return err
				}
			}
			if err := e.fillGuestData(inv.Name, i, p, opts.AllocatedMiB); err != nil {
				return err
			}
			paths = append(paths, p)
		}
		m, err := disk.Open(inv.Name, paths, e.Sim.Elapsed)
		if err != nil {
			return err
		}
		e.closers = append(e.closers, func() { m.Close() })
		e.Machines[inv.Name] = m
		e.names = append(e.names, inv.Name)
		if err := e.Net.AddHost(simnet.Host{Name: inv.Name, Site: simnet.OnPrem}); err != nil {
			return err
		}
		m.SetFilter(nil)
		e.Trace.Add(0, "harness", "machine", fmt.Sprintf("%s disks=%d physical=%v", inv.Name, m.Disks(), inv.Physical))
	}
	if len(missing) > 0 {
		var names []string
		for n := range missing {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("harness: no machine %s in inventory %s", strings.Join(names, ", "), e.Inventory.File)
	}
	return nil
}

// fillGuestData writes the guest's pre-existing data (OS, files) into the
// first part of a disk, from the seed, before anything tracks it.
func (e *Env) fillGuestData(vm string, i int, path string, allocMiB int64) error {
	dev, err := blockdev.OpenFile(path, true)
	if err != nil {
		return err
	}
	defer dev.Close()
	n := dev.Size() / 8
	if allocMiB > 0 {
		n = min(allocMiB<<20, dev.Size())
	}
	r := e.Sim.SubRand(fmt.Sprintf("guestdata/%s/%d", vm, i))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), n-off)]
		blockdev.FillRealistic(r, chunk)
		// Leave holes, as a real file system does: every eighth MiB-chunk's
		// second half stays unallocated.
		if (off>>20)%8 == 3 {
			clear(chunk[len(chunk)/2:])
		}
		if _, err := dev.WriteAt(chunk, off); err != nil {
			return fmt.Errorf("harness: fill %s disk %d: %w", vm, i, err)
		}
	}
	return nil
}

// WorkBase is where worlds keep their disks and datastores: $V2A_WORKDIR,
// else /dev/shm where it exists (the simulated disks then live in memory,
// and the fsyncs that the components do, correctly, cost nothing), else the
// system's temporary directory.
func WorkBase() string {
	if d := os.Getenv("V2A_WORKDIR"); d != "" {
		return d
	}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", ".v2a-probe-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return os.TempDir()
}

// MachineNames lists the simulated machines in inventory order.
func (e *Env) MachineNames() []string { return e.names }

// Context is the environment's context, for port calls made by the harness.
func (e *Env) Context() context.Context { return e.ctx }

// Dir is the working directory.
func (e *Env) Dir() string { return e.dir }

// Rand returns a seeded source for the harness's own draws (workloads,
// fault schedules), stable per name.
func (e *Env) Rand(name string) *rand.Rand { return e.Sim.SubRand("harness/" + name) }

// StartWorkload runs a workload on a machine.
func (e *Env) StartWorkload(machine string, spec workload.Spec) error {
	m := e.Machines[machine]
	if m == nil {
		return fmt.Errorf("harness: no machine %q (have %s)", machine, strings.Join(e.names, ", "))
	}
	if e.Workloads.Workload(machine) != nil {
		return fmt.Errorf("harness: machine %s already runs a workload", machine)
	}
	wl, err := workload.New(spec, &tracedWriter{e: e, m: m})
	if err != nil {
		return err
	}
	// Start at a seeded offset so machines do not write in lockstep.
	r := e.Sim.SubRand("workload/" + machine)
	e.Workloads.Start(machine, wl, r, time.Duration(r.IntN(1000))*time.Millisecond)
	e.Trace.Add(e.Sim.Elapsed(), "harness", "workload", fmt.Sprintf("%s kind=%s", machine, spec.Kind))
	return nil
}

// tracedWriter puts every guest write in the trace, so the hash covers the
// workload's whole history.
type tracedWriter struct {
	e *Env
	m *disk.Machine
}

func (w *tracedWriter) Write(d int, off int64, data []byte) error {
	if err := w.m.Write(d, off, data); err != nil {
		return err
	}
	w.e.Trace.Add(w.e.Sim.Elapsed(), w.m.Name, "write", fmt.Sprintf("d%d off=%d len=%d k=%d", d, off, len(data), w.m.Oracle().K()))
	return nil
}

// Submit is a write that may be held by the filter; it is traced when
// acknowledged.
func (w *tracedWriter) Submit(d int, off int64, data []byte, done func(uint64, error)) {
	w.m.Submit(d, off, data, func(k uint64, err error) {
		if err == nil {
			w.e.Trace.Add(w.e.Sim.Elapsed(), w.m.Name, "write", fmt.Sprintf("d%d off=%d len=%d k=%d", d, off, len(data), k))
		}
		if done != nil {
			done(k, err)
		}
	})
	if w.m.Held() > 0 && w.e.Deployment != nil {
		w.e.Deployment.armHoldExpiry(w.m.Name)
	}
}
func (w *tracedWriter) Size(d int) int64 { return w.m.Size(d) }
func (w *tracedWriter) Disks() int       { return w.m.Disks() }

// Write is a scripted guest write, traced like a workload's.
func (e *Env) Write(machine string, d int, off int64, data []byte) error {
	m := e.Machines[machine]
	if m == nil {
		return fmt.Errorf("harness: no machine %q (have %s)", machine, strings.Join(e.names, ", "))
	}
	return (&tracedWriter{e: e, m: m}).Write(d, off, data)
}

// Close releases everything the world holds.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
	if e.tempDir && e.dir != "" {
		os.RemoveAll(e.dir)
	}
}
