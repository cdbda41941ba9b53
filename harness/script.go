package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/v2a-dr/v2a/impl/proto"

	simnet "github.com/v2a-dr/v2a/sim/net"
	"github.com/v2a-dr/v2a/sim/sched"
	"github.com/v2a-dr/v2a/sim/workload"
)

// Directive is one command of a scenario script: `cmd key=val ...`, an
// optional input block, and (in files) the expected output after `----`.
type Directive struct {
	Pos      string // file:line, for errors
	Cmd      string
	Args     []datadriven.CmdArg
	Input    string
	Expected string
}

// ParseScript splits a .scn file (cockroachdb/datadriven format) into
// directives. The CLI runs them; `go test` runs the same files through
// datadriven, which also compares outputs.
func ParseScript(name string, data []byte) ([]Directive, error) {
	var out []Directive
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	var cur *Directive
	state := 0 // 0 between directives, 1 input, 2 expected output
	var buf []string
	flush := func() {
		if cur == nil {
			return
		}
		text := strings.Join(buf, "\n")
		if state == 1 {
			cur.Input = text
		} else if state == 2 {
			cur.Expected = text
		}
		out = append(out, *cur)
		cur, buf, state = nil, nil, 0
	}
	for sc.Scan() {
		line++
		l := sc.Text()
		switch {
		case cur == nil:
			t := strings.TrimSpace(l)
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			cmd, args, err := datadriven.ParseLine(t)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, line, err)
			}
			cur = &Directive{Pos: fmt.Sprintf("%s:%d", name, line), Cmd: cmd, Args: args}
			state = 1
		case l == "----":
			if state == 1 {
				cur.Input = strings.Join(buf, "\n")
				buf = nil
				state = 2
			}
		case l == "" && state == 2:
			flush()
		case l == "" && state == 1 && len(buf) == 0:
			flush()
		default:
			buf = append(buf, l)
		}
	}
	flush()
	return out, sc.Err()
}

// Runner executes scenario directives on an environment it builds with the
// `world` command. Every command prints something; errors are printed as
// output (`error: ...`), never thrown, so that scripts can assert them.
type Runner struct {
	Ctx context.Context
	// Target overrides the default target for `world`.
	Target *Target
	// Seed, when set, overrides the seed= of `world` (the CLI's --seed).
	Seed *uint64
	// Live and LiveFilter receive the trace as it happens.
	Live       io.Writer
	LiveFilter func(kind string) bool
	// Script is the path of the script being run, for the reproduce line.
	Script string

	Env       *Env
	traceMark int
	Tally     Tally
	// interruptSaid: the interrupt was reported (once, by the command it
	// stopped).
	interruptSaid bool
	// SetupFailed is set by Step when a command failed, unexpectedly,
	// because the script is malformed (an unknown command, a command
	// before `world`, `world` twice, a world that cannot be built): the run
	// could not be set up. An expected one (errors.scn) is output.
	SetupFailed bool
	// lastSetup: the last Exec's error was a setup error.
	lastSetup bool
}

// setupError is an error in the script's structure rather than in the
// system under test: an unknown command, a command before `world`, `world`
// twice, a world that cannot be built. The CLI exits 2 for these.
type setupError struct{ error }

func (e setupError) Unwrap() error { return e.error }

// Close releases the environment.
func (r *Runner) Close() {
	if r.Env != nil {
		r.Env.Close()
		r.Env = nil
	}
}

// Exec runs one directive and returns its output.
//
// Paths under the module root are printed relative to it, so that outputs
// are the same in every checkout.
func (r *Runner) Exec(d Directive) string {
	out, err := r.exec(d)
	r.lastSetup = false
	var ae argError
	if errors.As(err, &ae) {
		err = fmt.Errorf("%s: %w", d.Cmd, err)
	}
	if err != nil {
		out += "error: " + err.Error() + "\n"
		var se setupError
		if errors.As(err, &se) {
			r.lastSetup = true
		}
	}
	if r.Env != nil && r.Env.Sim.Interrupted() && !r.interruptSaid {
		// The context was cancelled (Ctrl-C): the command stopped at an
		// event boundary, and what it printed is as far as it got.
		r.interruptSaid = true
		out += fmt.Sprintf("error: interrupted at %s of virtual time\n", sched.FormatElapsed(r.Env.Sim.Elapsed()))
	}
	if root, rerr := ModuleRoot(); rerr == nil {
		out = strings.ReplaceAll(out, root+string(filepath.Separator), "")
	}
	if r.Env != nil && r.Env.prefix != "" {
		// The world's container prefix is random (worlds share one Azurite).
		out = strings.ReplaceAll(out, r.Env.prefix, "<prefix>-")
	}
	return out
}

func (r *Runner) exec(d Directive) (string, error) {
	if _, ok := commandNamed(d.Cmd); !ok {
		return "", setupError{fmt.Errorf("unknown command %q (known: %s)", d.Cmd, strings.Join(Commands, ", "))}
	}
	if err := checkArgs(d.Cmd, d.Args); err != nil {
		return "", err
	}
	a := args(d.Args)
	if d.Cmd != "world" && r.Env == nil {
		return "", setupError{fmt.Errorf("%s: no world yet: start the script with `world`", d.Cmd)}
	}
	c, _ := commandNamed(d.Cmd) // known: commandKeys has it
	return c.run(r, a)
}

// world builds the environment:
//
//	world [seed=N] [target=PATH] [inventory=NAME|PATH] [machines=(a,b)] [workload=KIND] [tx=N] [churn=BYTES]
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
		rp, err := Resolve(p)
		if err != nil {
			return "", err
		}
		if t, err = LoadTarget(rp); err != nil {
			return "", err
		}
	}
	if t == nil {
		rp, err := Resolve(DefaultTarget)
		if err != nil {
			return "", err
		}
		if t, err = LoadTarget(rp); err != nil {
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
	env, err := New(ctx, Options{Target: t, Seed: uint64(seed), Live: r.Live, LiveFilter: r.LiveFilter, Machines: a.list("machines")})
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
	return workload.Spec{Kind: kind, ChurnBps: churn, TxPerSec: tx, RegionStart: 32 << 20}, nil
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

// trace prints trace lines since the last `trace`:
//
//	trace [grep=SUBSTR] [last=N]    lines (filtered, the last N)
//	trace hash                       the count and SHA-256 so far
func (r *Runner) trace(a argMap) (string, error) {
	t := r.Env.Trace
	if _, ok := a["storage"]; ok {
		return r.Env.StorageRequests() + "\n", nil
	}
	if _, ok := a["hash"]; ok {
		return fmt.Sprintf("trace-lines: %d\ntrace-sha256: %s\n", t.Len(), t.Sum()), nil
	}
	lines := t.Lines(r.traceMark)
	r.traceMark = t.Len()
	grep := a.list("grep")
	if len(grep) > 0 {
		var kept []string
		for _, l := range lines {
			for _, g := range grep {
				if strings.Contains(l, g) {
					kept = append(kept, l)
					break
				}
			}
		}
		lines = kept
	}
	last, err := a.intIn("last", 20, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if int64(len(lines)) > last {
		fmt.Fprintf(&b, "(%d earlier lines)\n", int64(len(lines))-last)
		lines = lines[int64(len(lines))-last:]
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if len(lines) == 0 {
		b.WriteString("(no new lines)\n")
	}
	return b.String(), nil
}

// checkNames are the checks `check what=` runs.
var checkNames = []string{"disks", "invariants", "points", "catalog", "schedule", "rpo", "cut", "groups", "holds", "round-holds"}

// check runs property checks and counts them:
//
//	check [what=(disks,invariants)]
func (r *Runner) check(a argMap) (string, error) {
	what := a.list("what")
	if len(what) == 0 {
		what = []string{"disks", "invariants"}
	}
	// Arguments first: a bad one changes nothing, whatever is deployed.
	for _, w := range what {
		if !slices.Contains(checkNames, w) {
			return "", fmt.Errorf("check: unknown check %q (want %s)", w, orList(checkNames))
		}
	}
	limit, err := a.durMin("limit", proto.CrashTagTimeouts.Hold(), 1)
	if err != nil {
		return "", err
	}
	bound, err := a.durMin("bound", 10*time.Minute, 1)
	if err != nil {
		return "", err
	}
	var rs []Result
	for _, w := range what {
		before := len(rs)
		switch w {
		case "disks":
			rs = append(rs, r.Env.CheckLiveDisks()...)
		case "invariants":
			rs = append(rs, r.Env.CheckLiveInvariants()...)
		case "points", "catalog":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckPoints(a.list("vms"), PointChecks{SkipImages: w == "catalog"})...)
		case "cut", "groups":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			gs := a.list("group")
			if len(gs) == 0 {
				for _, f := range r.Env.orders {
					gs = append(gs, f.group)
				}
			}
			for _, g := range gs {
				rs = append(rs, d.CheckGroupPoints(g)...)
			}
		case "holds":
			rs = append(rs, r.Env.CheckHolds(limit)...)
		case "round-holds":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckRoundHolds(limit)...)
		case "schedule":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckSchedule(a.list("vms"))...)
		case "rpo":
			d, err := r.deployment()
			if err != nil {
				return "", err
			}
			rs = append(rs, d.CheckRPO(a.list("vms"), bound)...)
		default:
			return "", fmt.Errorf("check: unknown check %q (want disks, invariants, points, catalog, schedule, rpo, cut, holds or round-holds)", w)
		}
		if len(rs) == before {
			// A check that judged nothing must not pass: no protected
			// machine, no group, no workload is a wrong script or a
			// broken system, and either way nothing was shown.
			rs = append(rs, Result{Check: w, Subject: "-", Verdict: Unknown, Evidence: "nothing to judge (no machine, group or workload this check applies to)"})
		}
	}
	r.Tally.Add(rs...)
	for _, res := range rs {
		r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "check", fmt.Sprintf("%s %s %s", res.Check, res.Subject, res.Verdict))
	}
	if _, verbose := a["verbose"]; verbose || len(rs) <= 12 {
		return FormatResults(rs), nil
	}
	return SummarizeResults(rs), nil
}

// fault changes the network or crashes hosts:
//
//	fault partition a=X b=Y          X, Y: hosts or sites
//	fault clog [path=internet] [from=onprem] [to=azure] factor=N for=DURATION
//	fault loss [path=lan] [from=onprem] [to=onprem] p=0.1
//	fault jitter [path=lan] [from=onprem] [to=onprem] max=20ms
//	fault duplicate [path=lan] [from=onprem] [to=onprem] p=0.05
//	fault reorder [path=lan] [from=onprem] [to=onprem] p=0.1 window=10ms
//	fault corrupt-blob vm=X [container=cache]
//	fault delete-snapshot vm=X [point=ID|oldest]
//	fault vpn state=up|down|absent
//	fault crash host=X               a protected machine: its agent process (the
//	                                 filter and page cache live on); any other
//	                                 host: the host, whose disk loses what was
//	                                 not fsynced
//	fault restart host=X
//	fault lose-cache host=ps01       the process server crashes and comes back
//	                                 on a new, empty cache disk
//	fault heal
func (r *Runner) fault(a argMap) (string, error) {
	e := r.Env
	if len(a) == 0 {
		return "", fmt.Errorf("fault: say which: partition, clog, loss, vpn, crash, restart or heal")
	}
	// The fault is the one bare word (a key without a value). Two are
	// refused: ranging over the arguments would pick one at random.
	var bare []string
	for _, k := range sortedKeys(a) {
		if len(a[k]) == 0 {
			bare = append(bare, k)
		}
	}
	if len(bare) != 1 {
		return "", fmt.Errorf("fault: name exactly one fault, got %d (%s)", len(bare), strings.Join(bare, ", "))
	}
	kind := bare[0]
	// Values first, also for a fault armed to fire later: a bad one is
	// refused now, not found when the trigger fires.
	if err := checkFaultValues(kind, a); err != nil {
		return "", err
	}
	if on := a.str("on", ""); on != "" {
		// A fault triggered by an event: it happens right after the first
		// event whose trace line (from onhost, default host=) contains on,
		// with '-' read as a space — e.g. on=group-tag onhost=ord-db.
		who := a.str("onhost", a.str("host", ""))
		if who != "" {
			who += ":"
		}
		rest := argMap{}
		for k, v := range a {
			if k != "on" && k != "onhost" {
				rest[k] = v
			}
		}
		text := strings.ReplaceAll(on, "-", " ")
		e.Trace.OnLine(who, text, func() {
			e.Sim.After(0, "fault/"+kind, func() {
				if _, err := r.fault(rest); err != nil {
					e.Trace.Add(e.Sim.Elapsed(), "harness", "error", "triggered fault: "+err.Error())
				}
			})
		})
		return fmt.Sprintf("armed: %s after the next %q of %s\n", kind, text, strings.TrimSuffix(who, ":")), nil
	}
	var msg string
	switch kind {
	case "partition":
		x, err := a.need("a")
		if err != nil {
			return "", err
		}
		y, err := a.need("b")
		if err != nil {
			return "", err
		}
		e.Net.Partition(x, y)
		msg = fmt.Sprintf("partition %s | %s", x, y)
	case "heal":
		e.Net.Heal()
		msg = "healed: partitions and clogs removed"
	case "clog", "loss":
		p := simnet.Path(a.str("path", map[string]string{"clog": "internet", "loss": "lan"}[kind]))
		from, to := simnet.Site(a.str("from", "onprem")), simnet.Site(a.str("to", map[string]string{"clog": "azure", "loss": "onprem"}[kind]))
		if kind == "clog" {
			f, err := a.intIn("factor", 10, 1, 1<<20)
			if err != nil {
				return "", err
			}
			d, err := a.durMin("for", time.Hour, 1)
			if err != nil {
				return "", err
			}
			if err := e.Net.Clog(p, from, to, f, e.Sim.Now().Add(d)); err != nil {
				return "", err
			}
			msg = fmt.Sprintf("clog %s %s->%s bandwidth/%d for %s", p, from, to, f, d)
		} else {
			prob, err := a.floatIn("p", 0.1, 0, 1)
			if err != nil {
				return "", err
			}
			lp, ok := e.Net.Link(p, from, to)
			if !ok {
				return "", fmt.Errorf("fault loss: no %s link %s->%s", p, from, to)
			}
			lp.Loss = prob
			if err := e.Net.SetLink(p, from, to, lp); err != nil {
				return "", err
			}
			msg = fmt.Sprintf("loss %s %s->%s p=%g", p, from, to, prob)
		}
	case "jitter", "duplicate", "reorder":
		m, err := r.linkFault(kind, a)
		if err != nil {
			return "", err
		}
		msg = m
	case "vpn":
		st, err := a.need("state")
		if err != nil {
			return "", err
		}
		m := map[string]simnet.VPNState{"up": simnet.VPNUp, "down": simnet.VPNDown, "absent": simnet.VPNAbsent}
		s, ok := m[st]
		if !ok {
			return "", fmt.Errorf("fault vpn: state=%s, want up, down or absent", st)
		}
		e.Net.SetVPN(s)
		msg = "vpn " + st
	case "machine-crash", "machine-restart":
		d, err := r.deployment()
		if err != nil {
			return "", err
		}
		vm, err := a.need("vm")
		if err != nil {
			return "", err
		}
		if kind == "machine-crash" {
			err = d.MachineCrash(vm)
		} else {
			err = d.MachineRestart(vm)
		}
		if err != nil {
			return "", err
		}
		msg = kind + " " + vm
	case "corrupt-blob":
		return r.corruptBlob(a)
	case "delete-snapshot":
		return r.deleteSnapshot(a)
	case "tear-hrl", "corrupt-hrl":
		out, err := r.hrlFault(kind, a)
		if err != nil {
			return "", err
		}
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", strings.TrimSpace(out))
		return out, nil
	case "lose-cache":
		d, err := r.deployment()
		if err != nil {
			return "", err
		}
		h, err := a.need("host")
		if err != nil {
			return "", err
		}
		if h != HostProcessServer {
			return "", fmt.Errorf("fault lose-cache: host=%s has no cache disk (want host=%s)", h, HostProcessServer)
		}
		if err := d.LoseCache(); err != nil {
			return "", err
		}
		msg = "lose-cache " + h + ": restarted on an empty cache disk"
	case "crash", "restart":
		h, err := a.need("host")
		if err != nil {
			return "", err
		}
		if _, ok := e.Net.Host(h); !ok {
			return "", fmt.Errorf("fault %s: no host %q", kind, h)
		}
		if kind == "crash" {
			e.Sim.Crash(h)
		} else {
			e.Sim.Restart(h)
		}
		msg = kind + " " + h
	default:
		return "", fmt.Errorf("fault: unknown fault %q (want partition, clog, loss, jitter, duplicate, reorder, vpn, crash, restart, lose-cache, machine-crash, machine-restart, tear-hrl, corrupt-hrl, corrupt-blob, delete-snapshot or heal)", kind)
	}
	e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", msg)
	return msg + "\n", nil
}

// network prints the network: hosts, links, VPN.
func (r *Runner) network() (string, error) {
	e := r.Env
	var b strings.Builder
	for _, h := range e.Net.Hosts() {
		pub := ""
		if h.Public {
			pub = " public"
		}
		fmt.Fprintf(&b, "host %-14s %s%s\n", h.Name, h.Site, pub)
	}
	type lk struct {
		p        simnet.Path
		from, to simnet.Site
	}
	var ls []lk
	for _, p := range []simnet.Path{simnet.PathLAN, simnet.PathInternet, simnet.PathVPN} {
		for _, f := range []simnet.Site{simnet.OnPrem, simnet.Azure} {
			for _, t := range []simnet.Site{simnet.OnPrem, simnet.Azure} {
				if _, ok := e.Net.Link(p, f, t); ok {
					ls = append(ls, lk{p, f, t})
				}
			}
		}
	}
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].p < ls[j].p })
	for _, l := range ls {
		lp, _ := e.Net.Link(l.p, l.from, l.to)
		fmt.Fprintf(&b, "link %-8s %s->%s latency=%s bandwidth=%.0fMbps loss=%g%s\n", l.p, l.from, l.to, lp.Latency, float64(lp.BytesPerSec)*8/1e6, lp.Loss, linkExtras(lp))
	}
	fmt.Fprintf(&b, "vpn %s\n", e.Net.VPN())
	return b.String(), nil
}
