// Script commands of the world family: world, workload, run, write, power.

package harness

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/v2a-dr/v2a/impl/vsphere"

	"github.com/v2a-dr/v2a/sim/sched"
	"github.com/v2a-dr/v2a/sim/workload"
)

// world builds the environment:
//
//	world [seed=N] [target=PATH] [inventory=NAME|PATH] [machines=(a,b)] [allocated=MiB] [workload=KIND] [tx=N] [churn=BYTES] [region=BYTES]
//
// allocated is how much of each disk holds the guest's data before
// anything tracks it (0: an eighth of the disk); region how many bytes the
// workload owns from 32 MiB (0: to the end of the disk).
func (r *Runner) world(a argMap) (string, error) {
	if r.Env != nil {
		return "", setupError{fmt.Errorf("world: already built (one world per script)")}
	}
	seed, err := a.intIn("seed", 1, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	if r.Seed != nil {
		seed = int64(*r.Seed)
	}
	t := r.Target
	if p := a.str("target", ""); p != "" {
		if t, err = loadFixtureTarget(p); err != nil {
			return "", err
		}
	}
	if t == nil {
		if t, err = loadFixtureTarget(DefaultTarget); err != nil {
			return "", err
		}
	}
	if inv := a.str("inventory", ""); inv != "" {
		c := *t
		if !strings.ContainsAny(inv, "/.") {
			inv = filepath.Join("fixtures", "inventory", inv+".yaml")
		}
		c.Inventory = inv
		t = &c
	}
	ctx := r.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	allocated, err := a.intIn("allocated", 0, 0, 1<<30)
	if err != nil {
		return "", err
	}
	env, err := New(ctx, Options{Target: t, Seed: uint64(seed), Live: r.Live, LiveFilter: r.LiveFilter, Machines: a.list("machines"),
		AllocatedMiB: allocated, MemoryStorage: r.MemoryStorage})
	if err != nil {
		return "", setupError{err}
	}
	r.Env = env
	var b strings.Builder
	fmt.Fprintf(&b, "world %s seed=%d inventory=%s\n", t.Name, seed, filepath.Base(t.Inventory))
	disks := 0
	for _, vm := range env.VMs {
		disks += len(vm.Disks)
	}
	fmt.Fprintf(&b, "vsphere %s: %d VMs with %d disks discovered\n", t.VSphere.Mode, len(env.VMs), disks)
	if kind := a.str("workload", ""); kind != "" {
		spec, err := workloadSpec(kind, a)
		if err != nil {
			return b.String(), err
		}
		for _, name := range env.MachineNames() {
			if err := env.StartWorkload(name, spec); err != nil {
				return b.String(), err
			}
		}
	}
	for _, name := range env.MachineNames() {
		m := env.Machines[name]
		var sizes []string
		for i := 0; i < m.Disks(); i++ {
			sizes = append(sizes, fmt.Sprintf("%dMiB", m.Size(i)>>20))
		}
		wl := "none"
		if w := env.Workloads.Workload(name); w != nil {
			wl = w.Name()
		}
		fmt.Fprintf(&b, "machine %s disks=[%s] workload=%s\n", name, strings.Join(sizes, " "), wl)
	}
	return b.String(), nil
}

// workloadSpecFor is a workload of the given kind with the defaults.
func workloadSpecFor(kind string) workload.Spec {
	s, _ := workloadSpec(kind, argMap{})
	return s
}

// Workloads write in the second half of a machine's first disk, above the
// guest's pre-existing data.
func workloadSpec(kind string, a argMap) (workload.Spec, error) {
	churn, err := a.intIn("churn", 64*1024, 0, 1<<30)
	if err != nil {
		return workload.Spec{}, err
	}
	tx, err := a.floatIn("tx", 2, 0, 1e6)
	if err != nil {
		return workload.Spec{}, err
	}
	region, err := a.intIn("region", 0, 0, 1<<50)
	if err != nil {
		return workload.Spec{}, err
	}
	return workload.Spec{Kind: kind, ChurnBps: churn, TxPerSec: tx, RegionStart: 32 << 20, RegionLen: region}, nil
}

// workload starts a workload on some machines:
//
//	workload kind=bank machines=(db01) [tx=N] [churn=BYTES]
func (r *Runner) workload(a argMap) (string, error) {
	kind, err := a.need("kind")
	if err != nil {
		return "", err
	}
	spec, err := workloadSpec(kind, a)
	if err != nil {
		return "", err
	}
	names := a.list("machines")
	if len(names) == 0 {
		names = r.Env.MachineNames()
	}
	var b strings.Builder
	for _, n := range names {
		if err := r.Env.StartWorkload(n, spec); err != nil {
			return b.String(), err
		}
		fmt.Fprintf(&b, "workload %s on %s\n", kind, n)
	}
	return b.String(), nil
}

// run advances virtual time: run for=DURATION
func (r *Runner) run(a argMap) (string, error) {
	d, err := a.durMin("for", 0, 1)
	if err != nil {
		return "", err
	}
	if d <= 0 {
		return "", fmt.Errorf("run: want for=DURATION > 0")
	}
	e := r.Env
	e.runSpan(d)
	e.Sim.RunFor(d)
	var b strings.Builder
	fmt.Fprintf(&b, "time %s\n", sched.FormatElapsed(e.Sim.Elapsed()))
	for _, n := range e.MachineNames() {
		bytes, writes := e.Machines[n].Written()
		fmt.Fprintf(&b, "%-10s writes=%d bytes=%d\n", n, writes, bytes)
	}
	if err := e.Workloads.Err(); err != nil {
		return b.String(), err
	}
	return b.String(), nil
}

// write is a scripted guest write:
//
//	write vm=NAME [disk=0] off=BYTES len=BYTES [byte=0xNN]
func (r *Runner) write(a argMap) (string, error) {
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	d, err := a.intIn("disk", 0, 0, 63)
	if err != nil {
		return "", err
	}
	off, err := a.intIn("off", -1, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	n, err := a.intIn("len", 4096, 1, 64<<20)
	if err != nil {
		return "", err
	}
	fill, err := a.intIn("byte", 0xab, 0, 0xff)
	if err != nil {
		return "", err
	}
	if off < 0 {
		return "", fmt.Errorf("write: missing off=")
	}
	if err := r.Env.Write(vm, int(d), off, bytes.Repeat([]byte{byte(fill)}, int(n))); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s disk %d: wrote %d bytes at %d (k=%d)\n", vm, d, n, off, r.Env.Machines[vm].Oracle().K()), nil
}

// power powers a VM on or off through the vSphere port:
//
//	power vm=NAME state=on|off
func (r *Runner) power(a argMap) (string, error) {
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	st, err := a.need("state")
	if err != nil {
		return "", err
	}
	var ref string
	for _, v := range r.Env.VMs {
		if v.Name == vm {
			ref = string(v.Ref)
		}
	}
	if ref == "" {
		return "", fmt.Errorf("power: %s is not a vCenter VM", vm)
	}
	vc := r.Env.VC
	if d := r.Env.Deployment; d != nil {
		vc = d.vc // the guest goes down and up with its VM
	}
	switch st {
	case "on":
		err = vc.PowerOn(r.Env.ctx, vsphere.VMRef(ref))
	case "off":
		err = vc.PowerOff(r.Env.ctx, vsphere.VMRef(ref))
	default:
		return "", fmt.Errorf("power: state=%s, want on or off", st)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s powered %s\n", vm, st), nil
}
