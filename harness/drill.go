// The DR drill `v2a certify` runs: a scenario script built from options,
// stepped by the one runner (RunScript) with the same commands and checks
// as every .scn file, and the facts a drill certificate records, read from
// the world once the steps ran.

package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
)

// DrillDefaultMachines is how many machines a drill protects when none are
// named: the first powered-on VMs of the inventory, in its order.
const DrillDefaultMachines = 2

// DrillOptions configure a drill.
type DrillOptions struct {
	// Machines to protect; nil: the inventory's first
	// DrillDefaultMachines powered-on VMs (DrillMachines).
	Machines []string
	// Destructive adds a failover (sources shut down), its commit, a
	// reprotect over the VPN and a failback to the original location.
	Destructive bool
	// Seed of the world.
	Seed uint64
}

// Drill names in the script (a plan, its networks, the policy).
const (
	DrillPlan    = "certify"
	DrillPolicy  = "certify"
	drillProd    = "prod"
	drillNetwork = "drill"
)

// DrillMachines picks the machines of a drill: the named ones, each a
// powered-on VM of the inventory (a physical server has no vCenter to
// discover it: it is refused), or by default the inventory's first
// DrillDefaultMachines powered-on VMs.
func DrillMachines(inv *simvs.Inventory, named []string) ([]string, error) {
	byName := map[string]simvs.VM{}
	var on []string
	for _, vm := range inv.VMs {
		byName[vm.Name] = vm
		if vm.On() && !vm.Physical {
			on = append(on, vm.Name)
		}
	}
	if len(named) == 0 {
		if len(on) == 0 {
			return nil, fmt.Errorf("harness: drill: inventory %s has no powered-on VM to protect", inv.File)
		}
		return on[:min(DrillDefaultMachines, len(on))], nil
	}
	seen := map[string]bool{}
	for _, n := range named {
		vm, ok := byName[n]
		switch {
		case !ok:
			return nil, fmt.Errorf("harness: drill: machine %q is not in inventory %s (powered-on VMs: %s)", n, inv.File, strings.Join(on, ", "))
		case vm.Physical:
			return nil, fmt.Errorf("harness: drill: machine %q is a physical server: the drill protects vCenter VMs (powered-on VMs: %s)", n, strings.Join(on, ", "))
		case !vm.On():
			return nil, fmt.Errorf("harness: drill: machine %q is powered off (powered-on VMs: %s)", n, strings.Join(on, ", "))
		case seen[n]:
			return nil, fmt.Errorf("harness: drill: machine %q named twice", n)
		}
		seen[n] = true
	}
	return slices.Clone(named), nil
}

// DrillScript is the drill as a scenario script: discovery (world), the
// bank workload on every machine, deploy, protect, wait protected, 30
// minutes of replication, every point judged (points, schedule); a test
// failover of a one-group plan to the latest point into an isolated
// network with a smoke-test post-action, judged (image, isolation,
// plan-order), cleaned up and judged
// again (leftovers). Destructive adds a failover with the sources shut
// down (image), its commit, the failback infrastructure, the VPN, a
// reprotect to the original location, 25 minutes of failback replication
// and a failback (round-trip, path).
func DrillScript(o DrillOptions) (string, error) {
	if len(o.Machines) == 0 {
		return "", fmt.Errorf("harness: drill: no machines")
	}
	vms := "(" + strings.Join(o.Machines, ",") + ")"
	var b strings.Builder
	fmt.Fprintf(&b, "# v2a certify: the DR drill (destructive=%t)\n", o.Destructive)
	line := func(format string, args ...any) { fmt.Fprintf(&b, "\n"+format+"\n", args...) } // a blank line ends a directive
	line("world seed=%d machines=%s workload=bank", o.Seed, vms)
	line("deploy")
	line("policy name=%s crash=5m app=15m", DrillPolicy)
	line("protect vms=%s policy=%s", vms, DrillPolicy)
	line("wait state=protected vms=%s timeout=1h", vms)
	line("run for=30m")
	line("check what=(points,schedule)")
	line("azure-network name=%s cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production", drillProd)
	line("azure-network name=%s cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24)", drillNetwork)
	for _, m := range o.Machines {
		line("target vm=%s subnet=app", m)
	}
	line("plan name=%s group1=%s", DrillPlan, vms)
	line("plan-action plan=%s group=1 when=post name=smoke runbook=smoke-test types=(test-failover)", DrillPlan)
	line("test-failover plan=%s point=latest-processed network=%s", DrillPlan, drillNetwork)
	line("check what=(image,isolation,plan-order)")
	line("cleanup plan=%s", DrillPlan)
	line("check what=(leftovers)")
	if o.Destructive {
		line("failover plan=%s point=latest shutdown", DrillPlan)
		line("check what=(image)")
		line("commit plan=%s", DrillPlan)
		line("failback-infra")
		line("vpn state=up")
		line("run for=2m")
		line("reprotect vms=%s location=original wait=2h", vms)
		line("run for=25m")
		line("failback vms=%s point=latest", vms)
		line("check what=(round-trip,path)")
	}
	return b.String(), nil
}

// DrillImage is one VM a failover booted, as the drill saw it while it
// ran: the point it came from and the SHA-256 of each of its disks (the
// image check compares them with the point byte for byte).
type DrillImage struct {
	VM     string   `json:"vm"`
	Source string   `json:"source"`
	Point  string   `json:"point"`
	Job    string   `json:"job"`
	SHA256 []string `json:"sha256"`
}

// FailoverImages hashes the disks of every VM a failover made that the
// fabric holds now, sorted by VM.
func (r *Runner) FailoverImages() ([]DrillImage, error) {
	fo, err := r.failoverSide()
	if err != nil {
		return nil, err
	}
	ctx := fo.d.e.ctx
	inv, err := fo.Fabric.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	disks := map[compute.Ref]compute.Disk{}
	for _, d := range inv.Disks {
		disks[d.Ref] = d
	}
	var out []DrillImage
	for _, vm := range inv.VMs {
		src, pt := vm.Tags[compute.TagSource], vm.Tags[compute.TagPoint]
		if src == "" || pt == "" {
			continue
		}
		im := DrillImage{VM: vm.Ref.Name, Source: src, Point: pt, Job: vm.Tags[compute.TagJob]}
		for _, ref := range append([]compute.Ref{vm.OSDisk}, vm.DataDisks...) {
			d, ok := disks[ref]
			if !ok {
				return nil, fmt.Errorf("harness: VM %s: disk %s is not in the inventory", vm.Ref.Name, ref)
			}
			b, err := readManagedDisk(ctx, fo.Fabric, d)
			if err != nil {
				return nil, fmt.Errorf("harness: VM %s: %w", vm.Ref.Name, err)
			}
			sum := sha256.Sum256(b)
			im.SHA256 = append(im.SHA256, hex.EncodeToString(sum[:]))
		}
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out, nil
}

// DrillJob is a failover job as a certificate records it.
type DrillJob struct {
	ID    string            `json:"id"`
	Op    string            `json:"op"`
	State string            `json:"state"`
	RTO   string            `json:"rto"` // the job's, virtual time
	VMRTO map[string]string `json:"vmRTO,omitempty"`
	Point map[string]string `json:"point,omitempty"`
}

// DrillFacts are what a drill's world holds at its end.
type DrillFacts struct {
	// Points is every recovery point id in storage, by machine, in log
	// order.
	Points map[string][]string
	// Jobs are the failover jobs in order.
	Jobs []DrillJob
	// TraceSHA256 is the run's trace hash.
	TraceSHA256 string
	// Elapsed is the virtual time the drill took.
	Elapsed time.Duration
}

// DrillFacts reads the facts of the machines' drill from the world.
func (r *Runner) DrillFacts(machines []string) (DrillFacts, error) {
	var f DrillFacts
	if r.Env == nil {
		return f, fmt.Errorf("harness: drill: no world")
	}
	f.TraceSHA256, f.Elapsed = r.Env.Trace.Sum(), r.Env.Sim.Elapsed()
	d, err := r.deployment()
	if err != nil {
		return f, err
	}
	f.Points = map[string][]string{}
	for _, m := range machines {
		cat, err := d.Catalog(m)
		if err != nil {
			return f, fmt.Errorf("harness: drill: %s: %w", m, err)
		}
		pts := slices.Clone(cat.Points)
		sort.Slice(pts, func(i, j int) bool { return pts[i].Seq < pts[j].Seq })
		ids := []string{}
		for _, p := range pts {
			ids = append(ids, p.ID)
		}
		f.Points[m] = ids
	}
	if d.fo == nil {
		return f, nil
	}
	js, err := d.fo.Jobs()
	if err != nil {
		return f, err
	}
	for _, j := range js {
		dj := DrillJob{ID: j.ID, Op: j.Op, State: string(j.State), RTO: j.RTO().String(), Point: j.Point}
		if j.Op == proto.OpTestFailover || j.Op == proto.OpFailover {
			dj.VMRTO = map[string]string{}
			for _, vm := range j.VMs {
				dj.VMRTO[vm] = j.VMRTO(vm).String()
			}
		}
		f.Jobs = append(f.Jobs, dj)
	}
	return f, nil
}

// StoragePrefix is the world's container prefix in blob storage (random:
// worlds share a storage account), "" before storage was used.
func (r *Runner) StoragePrefix() string {
	if r.Env == nil {
		return ""
	}
	return r.Env.prefix
}

// KeepStorage leaves the world's containers in storage when it closes (an
// audit of a drill's points); by default a world removes them.
func (r *Runner) KeepStorage() {
	if r.Env != nil {
		r.Env.keepContainers = true
	}
}
