package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/harness/report"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/sim/sched"
)

// serveWorld is the world `v2a serve` builds when given no script: three
// VMs running a bank workload, two of them protected, and the Azure
// networks and failover settings a test failover needs.
const serveWorld = `world seed=42 machines=(db01,web01,app01) workload=bank

deploy

protect vms=(db01,web01)

wait state=protected timeout=1h

azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,db:10.0.2.0/24) production

azure-network name=drill cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,db:10.0.2.0/24)

target vm=db01 subnet=db ip=10.0.2.10

target vm=web01 subnet=app ip=10.0.1.20

target vm=app01 subnet=app ip=10.0.1.30
`

type serveFlags struct {
	addr    string
	seed    uint64
	seedSet bool
	speed   float64
	paused  bool
	save    string
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve [SCENARIO] [--addr 127.0.0.1:8080] [--seed N]",
		Short: "A live web dashboard over a running scenario: the portal's views, its buttons, and virtual time",
		Long: `Serve a local web dashboard over a running scenario.

SCENARIO (a .scn file, or the name of a built-in one) is run first; with
none, a small world is built: db01, web01 and app01 running a bank
workload, db01 and web01 protected, a production and an isolated network
in Azure. Then virtual time runs on at --speed simulated seconds a real
second, and the dashboard shows the portal's views (machines with their
state and RPO, recovery points, jobs with their steps, alerts, groups, the
Azure fabric), updated live.

Its buttons do what a user does in the portal (enable replication, test
failover, cleanup, failover, commit, reprotect) by running the script
command a scenario would; time can be paused, stepped and sped up. The
"script" page shows the session as .scn lines (--save writes them on
exit): 'v2a run' on them replays the session exactly (same seed, same
trace hash).

Ctrl-C stops the server and removes the world.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.seedSet = cmd.Flags().Changed("seed")
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return serve(ctx, cmd.OutOrStdout(), name, f)
		},
	}
	c.Flags().StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on")
	c.Flags().Uint64Var(&f.seed, "seed", 0, "seed for the world (default: the scenario's own)")
	c.Flags().Float64Var(&f.speed, "speed", 60, "simulated seconds per real second")
	c.Flags().BoolVar(&f.paused, "paused", false, "start with virtual time paused")
	c.Flags().StringVar(&f.save, "save", "", "on exit, write the session as a .scn script to this file")
	return c
}

// serve builds the world, then serves the dashboard until ctx is done.
func serve(ctx context.Context, w io.Writer, name string, f serveFlags) error {
	if f.speed <= 0 || f.speed > maxSpeed {
		return fmt.Errorf("serve: --speed=%g: want (0, %g] simulated seconds a real second", f.speed, float64(maxSpeed))
	}
	path, data := "serve-world.scn", []byte(serveWorld)
	if name != "" {
		var err error
		if path, data, err = loadScript(name); err != nil {
			return err
		}
	}
	s, err := harness.NewScript(path, data)
	if err != nil {
		return err
	}
	seed := f.seed
	if !f.seedSet {
		seed = scriptSeed(s.Directives)
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer ln.Close()
	fmt.Fprintf(w, "SEED=%d scenario=%s\nbuilding the world…\n", seed, path)
	d, err := newDashboard(ctx, s, seed)
	if err != nil {
		return err
	}
	d.speed, d.paused = f.speed, f.paused
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		d.loop(ctx, realTick)
	}()
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(w, "dashboard: http://%s/ (Ctrl-C to stop)\n", ln.Addr())
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-srvErr:
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	<-loopDone
	if f.save != "" {
		if werr := os.WriteFile(f.save, []byte(scriptText(d.finalLines)), 0o644); werr != nil {
			fmt.Fprintf(w, "v2a: --save: %v\n", werr)
		} else {
			fmt.Fprintf(w, "session saved: %s (v2a run %s replays it)\n", f.save, f.save)
		}
	}
	fmt.Fprintf(w, "stopped at %s of virtual time\n%s\ntrace-sha256: %s\n", sched.FormatElapsed(d.final), d.r.Tally.Line(), d.finalSum)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

const (
	// realTick is how often a running clock advances virtual time.
	realTick = 200 * time.Millisecond
	// maxSpeed bounds --speed and the speed form (simulated seconds a real
	// second).
	maxSpeed = 86400
	// logKept is how many commands with their outputs the page shows.
	logKept = 12
)

// dashboard is the live session: one goroutine (loop) owns the Runner and
// its world, and every request reaches it through reqs, so the simulation
// stays single-threaded.
type dashboard struct {
	r    *harness.Runner
	reqs chan func()
	// stopped is closed when loop returns: requests then get 503.
	stopped chan struct{}

	// Owned by the loop goroutine:
	paused bool
	speed  float64 // simulated seconds a real second
	// lines is the session as script blocks (a line, or a line with its
	// input or expected error: directiveBlock), pending the virtual time run
	// since the last line (written as one `run for=` before the next).
	lines   []string
	pending time.Duration
	log     []logEntry
	n       int // directives run, for their Pos
	// final and finalSum are the virtual time and trace hash when the
	// loop stopped (read after it has).
	final      time.Duration
	finalSum   string
	finalLines []string
}

func (d *dashboard) traceSum() string {
	if d.r.Env == nil {
		return "none"
	}
	return d.r.Env.Trace.Sum()
}

type logEntry struct{ Line, Out string }

// newDashboard runs s (the session's first lines) and returns the
// dashboard over its world; its error is the script's first unexpected
// error (the world is then closed).
func newDashboard(ctx context.Context, s *harness.Script, seed uint64) (*dashboard, error) {
	r := &harness.Runner{Seed: &seed, Script: s.Path, Ctx: ctx}
	d := &dashboard{r: r, reqs: make(chan func()), stopped: make(chan struct{}), speed: 60}
	for _, dir := range s.Directives {
		out := r.Step(dir)
		d.record(directiveBlock(dir, seed, out), out)
		if r.SetupFailed { // an unexpected error is counted, as `v2a run` counts it
			r.Close()
			return nil, fmt.Errorf("serve: %s: %s", dir.Pos, strings.TrimSpace(out))
		}
	}
	if r.Env == nil {
		return nil, fmt.Errorf("serve: %s builds no world: start it with `world`", s.Path)
	}
	return d, nil
}

// directiveBlock is a directive as the session's script writes it: its
// line, the world's seed the one the run used; its input block; and, when
// it printed an error its script expected, that error as its expected
// output, so that a replay expects it too (an error the script did not
// expect is counted as a failure live and again in the replay).
func directiveBlock(d harness.Directive, seed uint64, out string) string {
	parts := []string{d.Cmd}
	seen := false
	for _, a := range d.Args {
		if d.Cmd == "world" && a.Key == "seed" {
			a.Vals, seen = []string{strconv.FormatUint(seed, 10)}, true
		}
		parts = append(parts, a.String())
	}
	if d.Cmd == "world" && !seen {
		parts = append(parts, "seed="+strconv.FormatUint(seed, 10))
	}
	block := strings.Join(parts, " ")
	if d.Input != "" {
		block += "\n" + d.Input
	}
	var expect []string
	if strings.Contains("\n"+d.Expected, "\nerror: ") {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "error: ") {
				expect = append(expect, l)
			}
		}
	}
	if d.Input != "" || len(expect) > 0 {
		block += "\n----"
	}
	for _, l := range expect {
		block += "\n" + l
	}
	return block
}

func (d *dashboard) record(line, out string) {
	if d.pending > 0 {
		d.lines = append(d.lines, "run for="+d.pending.String())
		d.pending = 0
	}
	d.lines = append(d.lines, line)
	d.log = append(d.log, logEntry{Line: line, Out: out})
	if len(d.log) > logKept {
		d.log = d.log[len(d.log)-logKept:]
	}
}

// loop owns the world until ctx is done: it runs requests, and, every
// tick while the clock runs, speed×tick of virtual time. A tick of 0
// never advances time by itself (tests step it). It closes the world on
// the way out.
func (d *dashboard) loop(ctx context.Context, tick time.Duration) {
	defer close(d.stopped)
	defer func() {
		d.final = d.r.Elapsed()
		d.finalSum = d.traceSum()
		d.finalLines = d.script()
		d.r.Close()
	}()
	var ticks <-chan time.Time
	if tick > 0 {
		t := time.NewTicker(tick)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-d.reqs:
			f()
		case <-ticks:
			if !d.paused {
				d.advance(time.Duration(d.speed * float64(tick)))
			}
		}
	}
}

// do runs f in the loop goroutine and waits for it; false when the loop
// has stopped.
func (d *dashboard) do(f func()) bool {
	done := make(chan struct{})
	select {
	case d.reqs <- func() { f(); close(done) }:
	case <-d.stopped:
		return false
	}
	<-done
	return true
}

// advance runs virtual time through the `run` command (so the trace and
// the non-interference check's history record it). Its line is written
// when the next command is: consecutive runs are one `run for=`, the same
// events in the same order.
func (d *dashboard) advance(by time.Duration) {
	if by <= 0 {
		return
	}
	before := d.r.Elapsed()
	out := d.step("run for=" + by.String())
	// What ran: an interrupt (Ctrl-C) stops a run short.
	d.pending += d.r.Elapsed() - before
	if strings.Contains(out, "error: ") && d.r.Ctx.Err() == nil { // not the interrupt's
		d.paused = true
		d.record("# paused: the run printed an error", out)
	}
}

// step runs one script line (parsed as a script's) and returns its output.
func (d *dashboard) step(line string) string {
	cmd, args, err := datadriven.ParseLine(line)
	if err != nil {
		return fmt.Sprintf("error: %v\n", err)
	}
	d.n++
	return d.r.Step(harness.Directive{Pos: fmt.Sprintf("serve:%d", d.n), Cmd: cmd, Args: args})
}

// command runs a user's command and records it in the session.
func (d *dashboard) command(line string) string {
	cmd, args, err := datadriven.ParseLine(line)
	if err != nil {
		out := fmt.Sprintf("error: %v\n", err)
		d.log = append(d.log, logEntry{Line: line, Out: out})
		return out
	}
	d.n++
	out := d.r.Step(harness.Directive{Pos: fmt.Sprintf("serve:%d", d.n), Cmd: cmd, Args: args})
	d.record(line, out)
	return out
}

// actions are the portal's buttons: the script line each runs for the
// chosen machines. Jobs start with wait=0: they go on as virtual time
// does, and the dashboard shows their steps as they run.
var actions = []struct {
	Name, Label string
	line        func(vms, point, network string) string
}{
	{"protect", "enable replication", func(vms, _, _ string) string { return "protect vms=(" + vms + ")" }},
	{"test-failover", "test failover", func(vms, point, network string) string {
		return "test-failover vms=(" + vms + ") point=" + point + " network=" + network + " wait=0"
	}},
	{"cleanup", "cleanup test failover", func(vms, _, _ string) string { return "cleanup vms=(" + vms + ") wait=0" }},
	{"failover", "failover", func(vms, point, _ string) string { return "failover vms=(" + vms + ") point=" + point + " wait=0" }},
	{"commit", "commit", func(vms, _, _ string) string { return "commit vms=(" + vms + ") wait=0" }},
	{"reprotect", "reprotect", func(vms, _, _ string) string { return "reprotect vms=(" + vms + ")" }},
}

// points are the recovery point choices the forms offer.
var pointChoices = []string{"latest-processed", "latest", "latest-app", "latest-multivm", "latest-multivm-app"}

// actionLine is the script line of a portal action, or an error for a
// request no button makes.
func actionLine(action string, vms []string, point, network string) (string, error) {
	if len(vms) == 0 {
		return "", fmt.Errorf("%s: choose one or more machines", action)
	}
	for _, v := range vms {
		if !wordRe(v) {
			return "", fmt.Errorf("%s: bad machine name %q", action, v)
		}
	}
	if point == "" {
		point = "latest"
	}
	if network == "" {
		network = "drill"
	}
	if !wordRe(point) || !wordRe(network) {
		return "", fmt.Errorf("%s: bad point %q or network %q", action, point, network)
	}
	for _, a := range actions {
		if a.Name == action {
			return a.line(strings.Join(vms, ","), point, network), nil
		}
	}
	return "", fmt.Errorf("unknown action %q", action)
}

// wordRe: a name that cannot smuggle another argument into a line.
func wordRe(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// view is the state the page shows, taken in the loop goroutine.
type view struct {
	Elapsed  string
	Paused   bool
	Speed    float64
	Tally    string
	Trace    string // the trace's hash: a replay of Lines has the same
	Machines []harness.StatusRow
	// MachinesErr says why there is no table (no deployment yet).
	MachinesErr string
	Names       []string
	Jobs        []jobView
	Panels      []panel
	// Groups are the replication groups' last rounds, drawn with their
	// phases and holds (report.RoundsSVG); GroupsErr says why there are
	// none (no deployment yet).
	Groups    []groupRounds
	GroupsErr string
	Log       []logEntry
	Actions   []struct{ Name, Label string }
	Points    []string
	Lines     []string
}

type panel struct{ ID, Title, Text string }

// groupRounds is a group's last rounds on the dashboard.
type groupRounds struct {
	Name   string
	Rounds int // drawn
	SVG    template.HTML
}

type jobView struct {
	ID, Op, What, State, Requested, RTO string
	Tasks                               []taskView
}

// taskView is a job's step; Detail its error code and reason, or what it
// noted.
type taskView struct{ State, Name, Where, Took, Detail string }

// snapshot is the view of the world now; run in the loop goroutine.
func (d *dashboard) snapshot() view {
	r := d.r
	v := view{Elapsed: sched.FormatElapsed(r.Elapsed()), Paused: d.paused, Speed: d.speed, Tally: r.Tally.Line(), Trace: d.traceSum(),
		Names: r.MachineNames(), Points: pointChoices, Lines: d.script()}
	for _, a := range actions {
		v.Actions = append(v.Actions, struct{ Name, Label string }{a.Name, a.Label})
	}
	rows, err := r.StatusRows()
	if err != nil {
		v.MachinesErr = err.Error()
	}
	v.Machines = rows
	js, err := r.FailoverJobs()
	if err != nil {
		v.Panels = append(v.Panels, panel{ID: "failover-error", Title: "failover jobs", Text: err.Error()})
	}
	for i := len(js) - 1; i >= 0; i-- { // newest first
		v.Jobs = append(v.Jobs, newJobView(js[i]))
	}
	add := func(id, title, line string) {
		out, err := r.View(line)
		if err != nil {
			out = err.Error()
		}
		v.Panels = append(v.Panels, panel{ID: id, Title: title, Text: out})
	}
	for _, m := range rows {
		add("points-"+m.Machine, "recovery points: "+m.Machine, "points vm="+m.Machine+" last=6")
	}
	add("alerts", "alerts", "alerts")
	add("cs-jobs", "replication jobs", "jobs")
	add("groups", "replication groups", "groups")
	gs, err := r.GroupRounds()
	if err != nil {
		v.GroupsErr = err.Error()
	}
	for _, g := range gs {
		v.Groups = append(v.Groups, groupRounds{Name: g.Name, Rounds: len(report.GanttShown(g)), SVG: template.HTML(report.RoundsSVG(g))})
	}
	add("fabric", "Azure fabric", "fabric")
	add("network", "network", "network")
	v.Log = append([]logEntry(nil), d.log...)
	return v
}

func newJobView(j failover.Job) jobView {
	what := j.Plan
	if what == "" {
		what = strings.Join(j.VMs, ",")
	} else {
		what = "plan " + what
	}
	jv := jobView{ID: j.ID, Op: j.Op, What: what, State: string(j.State), Requested: at(j.Requested), RTO: "-"}
	if !j.Ended.IsZero() {
		jv.RTO = j.RTO().Round(time.Millisecond).String()
	}
	for _, t := range j.Tasks {
		where := t.VM
		if t.Group > 0 {
			where = fmt.Sprintf("group %d %s", t.Group, t.VM)
		}
		tv := taskView{State: t.State, Name: t.Name, Where: strings.TrimSpace(where), Took: "-"}
		if !t.End.IsZero() {
			tv.Took = t.End.Sub(t.Start).Round(time.Millisecond).String()
		}
		switch {
		case t.Code != 0:
			tv.Detail = fmt.Sprintf("error %d: %s", t.Code, t.Reason)
		default:
			tv.Detail = t.Reason
		}
		jv.Tasks = append(jv.Tasks, tv)
	}
	return jv
}

func at(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return sched.FormatElapsed(t.Sub(sched.Epoch))
}

// script is the session as a script: its lines, and the virtual time run
// since the last one.
func (d *dashboard) script() []string {
	out := append([]string(nil), d.lines...)
	if d.pending > 0 {
		out = append(out, "run for="+d.pending.String())
	}
	return out
}

// scriptText is the session as a .scn file.
func scriptText(lines []string) string {
	var b strings.Builder
	b.WriteString("# A v2a serve session, as a script: `v2a run FILE` replays it.\n\n")
	for _, l := range lines {
		b.WriteString(l + "\n\n")
	}
	return b.String()
}
