// Package swarm is swarm testing for v2a, as TigerBeetle's VOPR and
// FoundationDB's simulation do it: each seed draws its own world and its
// own fault mix, runs it with the safety checks live, heals every fault
// and demands that the system converge.
//
// Generate is a pure function of the seed, and its product is a .scn
// script made only of existing harness commands, so a failing seed is its
// own reproducer: `v2a run seed-N.scn --storage memblob`. Run runs one
// seed in-process on the same runner and verdict as `v2a run`.
//
// Faults are limited to what the system must survive (every one is undone
// before the liveness phase), so a failed check is a bug, not noise.
package swarm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
)

// Inventory is the fixture the swarm's worlds are drawn from
// (fixtures/inventory/swarm.yaml).
const Inventory = "swarm"

// VMs and Physical are the machines of the swarm inventory.
var (
	VMs      = []string{"sw01", "sw02", "sw03", "sw04", "sw05", "sw06", "sw07", "sw08", "sw09", "sw10", "sw11", "sw12"}
	Physical = []string{"px01", "px02", "px03", "px04"}
)

// Fault kinds a seed may enable. Each names a family of script commands;
// the summary counts seeds and failures per kind.
const (
	KindAgentCrash     = "agent-crash"     // fault crash/restart host=<machine>
	KindPSCrash        = "ps-crash"        // fault crash/restart host=ps01
	KindCSCrash        = "cs-crash"        // fault crash/restart host=cs01
	KindAzureCrash     = "azure-crash"     // fault crash/restart host=asr.azure
	KindMachineCrash   = "machine-crash"   // fault machine-crash/machine-restart
	KindTornHRL        = "torn-hrl"        // machine-crash, tear-hrl, machine-restart
	KindCorruptHRL     = "corrupt-hrl"     // machine-crash, corrupt-hrl, machine-restart
	KindPartition      = "partition"       // fault partition, fault heal
	KindClog           = "clog"            // fault clog, fault heal
	KindLoss           = "loss"            // fault loss p>0, then p=0
	KindDuplicate      = "duplicate"       // fault duplicate p>0, then p=0
	KindReorder        = "reorder"         // fault reorder p>0, then p=0
	KindJitter         = "jitter"          // fault jitter max>0, then max=0
	KindCorruptBlob    = "corrupt-blob"    // fault corrupt-blob (AES-GCM refuses it, a resync follows)
	KindDeleteSnapshot = "delete-snapshot" // fault delete-snapshot point=oldest
	KindLoseCache      = "lose-cache"      // fault lose-cache host=ps01
	KindFullCache      = "full-cache"      // deploy cache=16–48 MiB, the upload clogged
	// KindTestFailover is no fault but a drill on the healed world: a
	// test failover of 1–2 machines into an isolated network, judged
	// (image, isolation), then cleaned up (leftovers).
	KindTestFailover = "test-failover"
	// KindFailback is no fault either but the round trip on the healed
	// world: an unplanned failover of 1–2 ungrouped machines or of one
	// whole group, image, commit, a reprotect to on-premises over the
	// VPN (perhaps through VPN drops, or a crash of the master target or
	// of the process server in Azure), a failback to the latest point
	// (round-trip, vpn-bytes, path), commit, a reprotect to Azure, and
	// the liveness and safety checks again.
	KindFailback = "failback"
)

// Kinds is every fault kind, in the summary's order.
var Kinds = []string{KindAgentCrash, KindPSCrash, KindCSCrash, KindAzureCrash, KindMachineCrash, KindTornHRL, KindCorruptHRL,
	KindPartition, KindClog, KindLoss, KindDuplicate, KindReorder, KindJitter, KindCorruptBlob, KindDeleteSnapshot, KindLoseCache, KindFullCache, KindTestFailover, KindFailback}

// drills are the kinds that are no fault of the safety phase but a drill
// on the healed world, each drawn from a stream of its own (so that
// adding one left every other seed's script as it was).
var drills = []string{KindTestFailover, KindFailback}

// Plan is what a seed drew.
type Plan struct {
	Seed     uint64
	Machines []string   // every machine of the world, sorted
	Physical []string   // those of them that are physical servers
	Groups   [][]string // multi-VM groups (VMs only), each sorted
	Kinds    []string   // fault kinds the seed enabled, in Kinds order
	Used     []string   // fault kinds the script actually injects, in Kinds order
	// Simulated is the virtual time the script advances by `run` (waits
	// not counted).
	Simulated time.Duration
	Script    string // the .scn text
}

// judgeSlack is what the generator runs past one crash interval after
// every machine is protected before a points check: the harness's
// schedule slack (a minute: a machine without points is judged once
// protected for longer than a crash interval and that slack) and a
// minute more, so that a machine without a point is a failure, not
// "nothing to judge yet".
const judgeSlack = 2 * time.Minute

// genStream is the second word of the generator's PCG state: the seed is
// the first, so seed N draws the same plan whoever asks.
const genStream = 0x5357_4152_4d5f_7631 // "SWARM_v1"

// Streams of the drills: the test failover's and the failback's, each the
// seed's own (see drills).
const (
	drillStream    = genStream + 1
	failbackStream = genStream + 2
)

// Generate draws the plan of seed: a world, a policy, workloads, groups
// and a fault mix, written as a .scn script. Same seed, same script.
func Generate(seed uint64) Plan {
	g := &gen{r: rand.New(rand.NewPCG(seed, genStream)), p: Plan{Seed: seed}}
	g.draw()
	return g.p
}

type gen struct {
	r *rand.Rand
	// drill is the test failover's own random stream; fb the failback's.
	drill, fb *rand.Rand
	// prodNet: the production network is made (by the first drill).
	prodNet bool
	// faults is the enabled fault kinds the episodes pick from.
	faults []string
	p      Plan
	b      strings.Builder
	// enabled is the seed's fault mix; used what was injected.
	enabled, used map[string]bool
	// linkFaults are the (kind, path) link faults to switch off when healing.
	linkFaults [][2]string
	crash      time.Duration // the policy's crash interval
	hrlOK      []string      // machines with a busy workload (a change log worth damaging)
}

func (g *gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) between(lo, hi time.Duration) time.Duration {
	step := time.Minute
	n := int64((hi - lo) / step)
	return lo + time.Duration(g.r.Int64N(n+1))*step
}

func (g *gen) directive(format string, args ...any) {
	fmt.Fprintf(&g.b, format+"\n----\n\n", args...)
}

func (g *gen) run(d time.Duration) {
	g.p.Simulated += d
	g.directive("run for=%s", fmtDur(d))
}

func (g *gen) draw() {
	r := g.r
	// The world: mostly small (1–3 machines), one seed in eight large
	// (4–16), drawn from VMs and physical servers alike.
	n := 1 + r.IntN(3)
	if r.IntN(8) == 0 {
		n = 4 + r.IntN(13)
	}
	pool := append(append([]string{}, VMs...), Physical...)
	r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	ms := append([]string{}, pool[:n]...)
	sort.Strings(ms)
	g.p.Machines = ms
	var vms []string
	for _, m := range ms {
		if slices.Contains(Physical, m) {
			g.p.Physical = append(g.p.Physical, m)
		} else {
			vms = append(vms, m)
		}
	}
	// The fault mix: each kind on with probability 1/3 (swarm testing:
	// a seed that leaves a fault out explores what others mask).
	g.enabled, g.used = map[string]bool{}, map[string]bool{}
	for _, k := range Kinds[:len(Kinds)-len(drills)] {
		if r.IntN(3) == 0 {
			g.enabled[k] = true
			g.p.Kinds = append(g.p.Kinds, k)
		}
	}
	g.faults = append([]string{}, g.p.Kinds...)
	// The drill draws from its own stream, so that adding it left every
	// seed's world and faults as they were.
	g.drill = rand.New(rand.NewPCG(g.p.Seed, drillStream))
	if g.drill.IntN(4) == 0 {
		g.enabled[KindTestFailover] = true
		g.p.Kinds = append(g.p.Kinds, KindTestFailover)
	}
	g.fb = rand.New(rand.NewPCG(g.p.Seed, failbackStream))
	if g.fb.IntN(4) == 0 {
		g.enabled[KindFailback] = true
		g.p.Kinds = append(g.p.Kinds, KindFailback)
	}
	// Groups: 0–2, of 2–4 VMs each, disjoint.
	free := append([]string{}, vms...)
	for ng := r.IntN(3); ng > 0 && len(free) >= 2; ng-- {
		size := 2 + r.IntN(min(3, len(free)-1))
		grp := append([]string{}, free[:size]...)
		free = free[size:]
		sort.Strings(grp)
		g.p.Groups = append(g.p.Groups, grp)
	}

	g.header()
	g.directive("world seed=%d inventory=%s machines=(%s) allocated=1", g.p.Seed, Inventory, strings.Join(ms, ","))
	for _, m := range ms {
		switch k := r.IntN(8); {
		case k < 4:
			g.directive("workload kind=bank machines=(%s) tx=%d", m, 1+r.IntN(3))
			g.hrlOK = append(g.hrlOK, m)
		case k < 6:
			g.directive("workload kind=random machines=(%s) churn=%d", m, 4096*(1+r.IntN(8)))
			g.hrlOK = append(g.hrlOK, m)
		case k < 7:
			g.directive("workload kind=fs machines=(%s) tx=%d", m, 1+r.IntN(2))
			g.hrlOK = append(g.hrlOK, m)
		default:
			g.directive("workload kind=idle machines=(%s)", m)
		}
	}
	if g.enabled[KindFullCache] {
		g.used[KindFullCache] = true
		g.directive("deploy cache=%d", (16+16*r.IntN(3))<<20)
	} else {
		g.directive("deploy")
	}
	g.crash = []time.Duration{5 * time.Minute, 10 * time.Minute, 15 * time.Minute}[r.IntN(3)]
	app := []string{"0s", "30m", "1h", "2h"}[r.IntN(4)]
	retention := []string{"2h", "4h", "24h"}[r.IntN(3)]
	g.directive("policy name=swarm crash=%s app=%s retention=%s", fmtDur(g.crash), app, retention)
	for _, m := range g.p.Physical {
		g.directive("install vm=%s", m)
	}
	grouped := map[string]bool{}
	for i, grp := range g.p.Groups {
		g.directive("protect-group group=g%d vms=(%s) policy=swarm", i+1, strings.Join(grp, ","))
		for _, m := range grp {
			grouped[m] = true
		}
	}
	var single []string
	for _, m := range ms {
		if !grouped[m] {
			single = append(single, m)
		}
	}
	if len(single) > 0 {
		g.directive("protect vms=(%s) policy=swarm", strings.Join(single, ","))
	}
	g.directive("wait state=protected timeout=2h")
	g.run(g.between(5*time.Minute, 15*time.Minute))

	// The safety phase: episodes of one to three faults, each undone at
	// the episode's end so the next starts from a world that is up.
	episodes := 1 + r.IntN(3)
	if len(g.faults) == 0 {
		episodes = 0
	}
	for i := 0; i < episodes; i++ {
		g.episode()
	}
	// The safety check judges every point made so far, but a machine that
	// an episode made resync (a lost cache, a corrupt item, a partition)
	// has no point to judge until a crash interval after it is protected
	// again, and nothing to judge fails the check. So: heal what could
	// keep it from being protected (partitions; clogs, the full cache's
	// may outlast its episode), wait until every machine is, and run one
	// crash interval, the schedule's slack and a minute more. The LAN's
	// link faults stay on: the check still runs under them.
	safety := "holds"
	if len(g.p.Groups) > 0 {
		safety += ",cut"
	}
	g.directive("fault heal")
	g.directive("wait state=protected timeout=2h")
	g.run(g.crash + judgeSlack)
	g.directive("check what=(points,%s)%s", safety, g.groupArg())

	// The liveness phase: switch the link faults off, run on, demand
	// convergence.
	for _, lf := range g.linkFaults {
		switch lf[0] {
		case KindJitter:
			g.directive("fault jitter path=%s from=onprem to=onprem max=0s", lf[1])
		case KindLoss:
			g.directive("fault loss path=%s from=onprem to=onprem p=0", lf[1])
		default:
			g.directive("fault %s path=%s from=onprem to=onprem p=0", lf[0], lf[1])
		}
	}
	settle := 20*time.Minute + 2*g.crash
	g.run(settle)
	if g.enabled[KindDeleteSnapshot] {
		g.used[KindDeleteSnapshot] = true
		g.directive("fault delete-snapshot vm=%s point=oldest", g.pick(ms))
		// The Azure side finds a deleted snapshot when it verifies the
		// catalog (every VerifyEvery, at a poll): until then the point is
		// listed and cannot be read, so the checks wait for that and a
		// poll more (15m exactly raced the verification: seeds 16, 22,
		// 23 and 37).
		g.run(azuresvc.DefaultVerifyEvery + 2*time.Minute)
	}
	bound := 2*g.crash + 5*time.Minute
	g.directive("check what=(converged) bound=%s", fmtDur(bound))
	g.directive("check what=(points,rpo,disks,invariants,%s) bound=%s%s", safety, fmtDur(bound), g.groupArg())
	if g.enabled[KindTestFailover] {
		g.used[KindTestFailover] = true
		g.testFailover()
	}
	if g.enabled[KindFailback] {
		g.used[KindFailback] = true
		g.failback(single, safety, bound)
	}
	for _, k := range Kinds {
		if g.used[k] {
			g.p.Used = append(g.p.Used, k)
		}
	}
	g.p.Script = g.b.String()
}

func (g *gen) groupArg() string {
	if len(g.p.Groups) == 0 {
		return ""
	}
	var names []string
	for i := range g.p.Groups {
		names = append(names, fmt.Sprintf("g%d", i+1))
	}
	return " group=(" + strings.Join(names, ",") + ")"
}

func (g *gen) header() {
	fmt.Fprintf(&g.b, "# swarm seed=%d: %d machine(s) (%s)", g.p.Seed, len(g.p.Machines), strings.Join(g.p.Machines, ","))
	if len(g.p.Physical) > 0 {
		fmt.Fprintf(&g.b, ", physical %s", strings.Join(g.p.Physical, ","))
	}
	for i, grp := range g.p.Groups {
		fmt.Fprintf(&g.b, ", group g%d=(%s)", i+1, strings.Join(grp, ","))
	}
	kinds := "none"
	if len(g.p.Kinds) > 0 {
		kinds = strings.Join(g.p.Kinds, ",")
	}
	fmt.Fprintf(&g.b, "\n# faults enabled: %s\n", kinds)
	fmt.Fprintf(&g.b, "# drawn by harness/swarm from the seed; reproduce: v2a run THIS-FILE --storage memblob\n\n")
}

// episode injects one to three of the enabled faults, runs, undoes them,
// and runs on.
func (g *gen) episode() {
	r := g.r
	var undo []string
	picked := map[string]bool{}
	for n := 1 + r.IntN(3); n > 0; n-- {
		k := g.pick(g.faults)
		if picked[k] || k == KindDeleteSnapshot || k == KindFullCache || slices.Contains(drills, k) {
			continue // delete-snapshot and the drills come after healing; full-cache is the deployment's
		}
		picked[k] = true
		g.used[k] = true
		undo = append(undo, g.inject(k)...)
	}
	if g.enabled[KindFullCache] && r.IntN(2) == 0 {
		// A full cache needs an upload slower than the churn.
		g.directive("fault clog path=internet from=onprem to=azure factor=%d for=%s", 20+r.IntN(80), fmtDur(g.between(5*time.Minute, 20*time.Minute)))
	}
	g.run(g.between(1*time.Minute, 15*time.Minute))
	for _, u := range undo {
		g.directive("%s", u)
	}
	g.run(g.between(3*time.Minute, 10*time.Minute))
}

// inject writes a fault's commands and returns the commands that undo it.
func (g *gen) inject(k string) (undo []string) {
	r := g.r
	ms := g.p.Machines
	switch k {
	case KindAgentCrash:
		m := g.pick(ms)
		g.directive("fault crash host=%s", m)
		return []string{"fault restart host=" + m}
	case KindPSCrash, KindCSCrash, KindAzureCrash:
		h := map[string]string{KindPSCrash: "ps01", KindCSCrash: "cs01", KindAzureCrash: "asr.azure"}[k]
		g.directive("fault crash host=%s", h)
		return []string{"fault restart host=" + h}
	case KindLoseCache:
		g.directive("fault lose-cache host=ps01")
		return nil
	case KindMachineCrash:
		m := g.pick(ms)
		g.directive("fault machine-crash vm=%s", m)
		return []string{"fault machine-restart vm=" + m}
	case KindTornHRL, KindCorruptHRL:
		if len(g.hrlOK) == 0 {
			return nil
		}
		m := g.pick(g.hrlOK)
		g.directive("fault machine-crash vm=%s", m)
		if k == KindTornHRL {
			g.directive("fault tear-hrl vm=%s bytes=%d", m, 1+r.IntN(200))
		} else {
			g.directive("fault corrupt-hrl vm=%s", m)
		}
		g.directive("fault machine-restart vm=%s", m)
		return nil
	case KindPartition:
		var a, b string
		switch r.IntN(4) {
		case 0:
			a, b = "onprem", "azure"
		case 1:
			a, b = g.pick(ms), "ps01"
		case 2:
			a, b = g.pick(ms), "cs01"
		default:
			a, b = "ps01", "storage.azure"
		}
		g.directive("fault partition a=%s b=%s", a, b)
		return []string{"fault heal"}
	case KindClog:
		g.directive("fault clog path=internet from=onprem to=azure factor=%d for=%s", 2+r.IntN(50), fmtDur(g.between(2*time.Minute, 30*time.Minute)))
		return []string{"fault heal"}
	case KindLoss:
		g.linkFault(k)
		g.directive("fault loss path=lan from=onprem to=onprem p=%.2f", 0.01+0.01*float64(r.IntN(10)))
		g.linkFault(k)
		return []string{"fault loss path=lan from=onprem to=onprem p=0"}
	case KindDuplicate:
		g.directive("fault duplicate path=lan from=onprem to=onprem p=%.2f", 0.01+0.01*float64(r.IntN(10)))
		g.linkFault(k)
		return nil // left on until the liveness phase
	case KindReorder:
		g.directive("fault reorder path=lan from=onprem to=onprem p=%.2f window=%dms", 0.05+0.05*float64(r.IntN(4)), 1+r.IntN(20))
		g.linkFault(k)
		return nil
	case KindJitter:
		g.directive("fault jitter path=lan from=onprem to=onprem max=%dms", 1+r.IntN(30))
		g.linkFault(k)
		return nil
	case KindCorruptBlob:
		// Armed on the machine's next upload, which always comes: the
		// machine is protected, and it uploads at least a crash point's
		// tag every crash interval while the script runs on for at least
		// the settle time; one that never came would fail `converged`
		// too. So no unfired=ok: a corrupt-blob that never fired (or
		// fired and found nothing to corrupt) fails the seed.
		g.directive("fault corrupt-blob vm=%s", g.pick(g.hrlOK0()))
		return nil
	}
	panic("swarm: no injector for fault kind " + k)
}

// testFailover drills 1–2 machines into an isolated network once the
// world converged: their test VMs must boot on their points byte for byte
// and stay isolated, and the cleanup must leave nothing behind.
func (g *gen) testFailover() {
	ms := append([]string{}, g.p.Machines...)
	g.drill.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	ms = ms[:1+g.drill.IntN(min(2, len(ms)))]
	sort.Strings(ms)
	g.prodNetwork()
	g.directive("azure-network name=drill cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24)")
	for i, m := range ms {
		g.directive("target vm=%s subnet=app ip=10.0.1.%d%s", m, 10+i, hydrate(m))
	}
	vms := strings.Join(ms, ",")
	g.directive("test-failover vms=(%s) point=latest network=drill", vms)
	g.directive("check what=(image,isolation)")
	g.directive("cleanup vms=(%s)", vms)
	g.directive("check what=(leftovers)")
}

// hydrate is the target option a machine's failover needs: hydration for
// Linux and physical sources, none for the Windows VMs (every third VM of
// fixtures/inventory/swarm.yaml).
func hydrate(m string) string {
	if n := slices.Index(VMs, m); n >= 0 && (n+1)%3 == 0 {
		return ""
	}
	return " hydrate"
}

// prodNetwork makes the production network once, for whichever drill
// comes first.
func (g *gen) prodNetwork() {
	if !g.prodNet {
		g.directive("azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24) production")
		g.prodNet = true
	}
}

// Faults of the failback leg, drawn from the failback's stream.
const (
	fbNoFault  = iota
	fbVPNDrops // the VPN drops once or twice for 20 s while the syncs run
	fbMTCrash  // the configuration server's host (the master target's) crashes mid-sync
	fbPSCrash  // the process server in Azure crashes mid-sync
	fbFaults
)

// failback is the round trip of 1–2 ungrouped machines (single) or of one
// whole group, once the world converged: an unplanned failover to the
// latest processed point (image), commit, the guests change data in
// Azure, a reprotect to on-premises over the VPN (the original VM for a
// VM, a new VM for a physical server, which has no other way back),
// perhaps through a fault, a failback to the latest point (round-trip,
// vpn-bytes, path), commit, a reprotect to Azure, a few writes on
// premises; then the world must converge again and every point (those
// made before the round trip judged by the history they came from) pass
// the safety checks.
func (g *gen) failback(single []string, safety string, bound time.Duration) {
	r := g.fb
	var ms []string
	if len(g.p.Groups) > 0 && (len(single) == 0 || r.IntN(3) == 0) {
		ms = append(ms, g.p.Groups[r.IntN(len(g.p.Groups))]...)
	} else {
		ms = append(ms, single...)
		r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		ms = ms[:1+r.IntN(min(2, len(ms)))]
		sort.Strings(ms)
	}
	vms := strings.Join(ms, ",")
	var orig, alt []string
	for _, m := range ms {
		if slices.Contains(g.p.Physical, m) {
			alt = append(alt, m)
		} else {
			orig = append(orig, m)
		}
	}
	g.prodNetwork()
	for i, m := range ms {
		g.directive("target vm=%s subnet=app ip=10.0.1.%d%s", m, 20+i, hydrate(m))
	}
	g.directive("failover vms=(%s) point=latest-processed shutdown", vms)
	g.directive("check what=(image)")
	g.directive("commit vms=(%s)", vms)
	churn := []int{1024, 4096, 16384}[r.IntN(3)]
	g.directive("azure-workload vms=(%s) churn=%d", vms, churn)
	g.run(g.fbBetween(5*time.Minute, 30*time.Minute))
	g.directive("failback-infra")
	g.directive("vpn state=up")
	// The agents in the Azure VMs register again within a retry (30 s).
	g.run(2 * time.Minute)
	fault := r.IntN(fbFaults)
	wait := ""
	if fault != fbNoFault {
		// A slow VPN, so that the syncs are running when the fault comes.
		g.directive("fault clog path=vpn from=azure to=onprem factor=%d for=1h", 20+r.IntN(60))
		wait = " wait=0"
	}
	if len(orig) > 0 {
		g.directive("reprotect vms=(%s) location=original%s", strings.Join(orig, ","), wait)
	}
	if len(alt) > 0 {
		g.directive("reprotect vms=(%s) location=alternate%s", strings.Join(alt, ","), wait)
	}
	switch fault {
	case fbVPNDrops:
		for n := 1 + r.IntN(2); n > 0; n-- {
			g.run(time.Duration(5+r.IntN(20)) * time.Second)
			g.directive("vpn state=down")
			g.run(time.Duration(10+r.IntN(50)) * time.Second)
			g.directive("vpn state=up")
		}
	case fbMTCrash, fbPSCrash:
		h := map[int]string{fbMTCrash: "cs01", fbPSCrash: "ps-azure"}[fault]
		g.run(time.Duration(5+r.IntN(30)) * time.Second)
		g.directive("fault crash host=%s", h)
		g.run(time.Duration(10+r.IntN(110)) * time.Second)
		g.directive("fault restart host=%s", h)
	}
	if fault != fbNoFault {
		g.directive("wait state=protected vms=(%s) timeout=2h", vms)
		g.directive("fault heal")
	}
	// Failback replication: points every 5 minutes (the failback policy).
	g.run(g.fbBetween(10*time.Minute, 20*time.Minute))
	g.directive("failback vms=(%s) point=latest", vms)
	judge := "round-trip,vpn-bytes,path"
	if fault == fbMTCrash {
		// The master target's crash loses the items it had received and
		// not applied: they are sent again, rightly, and vpn-bytes's bound
		// (the changed blocks, once) is not theirs (seeds 52 and 64).
		judge = "round-trip,path"
	}
	g.directive("check what=(%s) vms=(%s)", judge, vms)
	g.directive("commit vms=(%s)", vms)
	g.directive("reprotect-azure vms=(%s)", vms)
	// The guests write on premises again (below the applications'
	// regions, as the Azure workload did), so that the new history has
	// writes for its points to be judged by.
	for _, m := range ms {
		for n := 1 + r.IntN(3); n > 0; n-- {
			g.directive("write vm=%s off=%d len=%d byte=0x%02x", m, (8+r.IntN(24))<<20, 4096*(1+r.IntN(4)), 1+r.IntN(255))
		}
	}
	g.directive("wait state=protected timeout=2h")
	g.run(g.crash + judgeSlack)
	g.directive("check what=(converged) bound=%s", fmtDur(bound))
	g.directive("check what=(points,rpo,disks,invariants,%s) bound=%s%s", safety, fmtDur(bound), g.groupArg())
	g.directive("check what=(round-trip) vms=(%s)", vms)
}

// fbBetween is between from the failback's stream.
func (g *gen) fbBetween(lo, hi time.Duration) time.Duration {
	n := int64((hi - lo) / time.Minute)
	return lo + time.Duration(g.fb.Int64N(n+1))*time.Minute
}

// linkFault remembers a LAN fault to switch off before the liveness phase.
func (g *gen) linkFault(k string) {
	lf := [2]string{k, "lan"}
	if !slices.Contains(g.linkFaults, lf) {
		g.linkFaults = append(g.linkFaults, lf)
	}
}

// hrlOK0 is the machines with a busy workload, or all of them.
func (g *gen) hrlOK0() []string {
	if len(g.hrlOK) > 0 {
		return g.hrlOK
	}
	return g.p.Machines
}

// fmtDur writes a duration as a script accepts it: whole hours as "2h",
// whole minutes as "25m", anything else as time.Duration prints it.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
