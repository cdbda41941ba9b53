package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/sim/sched"
)

// The non-interference check: a test failover must leave replication
// exactly as it was. The check replays the script so far in a fresh world
// with the same seed, leaving out every failover command (Command.Failover)
// but letting the virtual time each took pass, and demands that the two
// traces agree byte for byte on every line of a replication actor (the
// guests' writes, agents, configuration server, process server, Azure
// side). Only the harness's own lines, the portal and the failover actors
// (failoverHosts) may differ.
//
// It is the one check that reruns the world, so a scenario pays for it
// once, at the end.

// failoverCmds are the names of the Failover commands (filled by init:
// the table refers to the check that reads it).
var failoverCmds = map[string]bool{}

func init() { failoverCmds = failoverNames(commands) }

func failoverNames(cs []Command) map[string]bool {
	m := map[string]bool{}
	for _, c := range cs {
		if c.Failover {
			m[c.Name] = true
		}
	}
	return m
}

// stepRecord is one executed directive and the virtual time around it.
type stepRecord struct {
	d          Directive
	start, end time.Duration
	failed     bool
}

// failoverHosts are the hosts of the actors that make a failover; their
// lines are what a test failover adds to the trace.
var failoverHosts = []string{HostPortal, HostRecovery, HostFabric}

// replicationLine reports whether a trace line belongs to replication (and
// must be the same with and without a test failover).
func replicationLine(line string) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	who := f[1]
	if who == "harness" {
		return false
	}
	host := who
	if i := strings.LastIndexByte(who, ':'); i >= 0 {
		host = who[:i]
	}
	for _, h := range failoverHosts {
		if host == h {
			return false
		}
	}
	return true
}

// CheckNonInterference judges the run so far against a control run of the
// same script and seed without its failover commands.
func (r *Runner) CheckNonInterference() Result {
	res := Result{Check: "non-interference", Subject: "replication"}
	var acted int
	for _, h := range r.history {
		if failoverCmds[h.d.Cmd] && !h.failed {
			acted++
		}
	}
	if acted == 0 {
		res.Verdict, res.Evidence = Unknown, "nothing to judge: no failover command ran, so there is nothing replication could have been disturbed by"
		return res
	}
	ctl, err := r.controlRun()
	if ctl != nil {
		defer ctl.Close()
	}
	if err != nil {
		res.Verdict, res.Evidence = Unknown, "control run: "+err.Error()
		return res
	}
	got := replicationLines(r.Env.Trace.Lines(0), r.Env.prefix)
	want := replicationLines(ctl.Env.Trace.Lines(0), ctl.Env.prefix)
	for i := 0; i < min(len(got), len(want)); i++ {
		if got[i] != want[i] {
			res.Verdict = Illegal
			res.Evidence = fmt.Sprintf("replication line %d differs from the control run without failover:\n  with:    %s\n  control: %s", i+1, got[i], want[i])
			return res
		}
	}
	if len(got) != len(want) {
		res.Verdict = Illegal
		res.Evidence = fmt.Sprintf("replication has %d trace lines, the control run without failover %d", len(got), len(want))
		return res
	}
	res.Verdict = OK
	res.Detail = fmt.Sprintf("%d replication lines identical to a control run without the %d failover command(s)", len(got), acted)
	return res
}

// replicationLines keeps a trace's replication lines, with the world's
// random container prefix spelt the same in every world.
func replicationLines(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if !replicationLine(l) {
			continue
		}
		if prefix != "" {
			l = strings.ReplaceAll(l, prefix, "<prefix>-")
		}
		out = append(out, l)
	}
	return out
}

// controlRun replays the history in a fresh world, without failover
// commands and checks, up to the current virtual time.
func (r *Runner) controlRun() (*Runner, error) {
	ctl := &Runner{Ctx: r.Ctx, Target: r.Target, Seed: r.Seed, Script: r.Script, MemoryStorage: r.MemoryStorage}
	for _, h := range r.history {
		if failoverCmds[h.d.Cmd] || h.d.Cmd == "check" {
			if ctl.Env != nil && h.end > h.start {
				ctl.Env.Sim.RunFor(h.end - h.start)
			}
			continue
		}
		out := ctl.Exec(h.d)
		if hasError(out) && !h.failed {
			return ctl, fmt.Errorf("%s: %s failed without the failover commands: %s", h.d.Pos, h.d.Cmd, strings.TrimSpace(out))
		}
		if ctl.Env == nil {
			return ctl, fmt.Errorf("%s: no world after %s", h.d.Pos, h.d.Cmd)
		}
	}
	if ctl.Env == nil {
		return ctl, fmt.Errorf("no world")
	}
	if now, at := r.Env.Sim.Elapsed(), ctl.Env.Sim.Elapsed(); at < now {
		ctl.Env.Sim.RunFor(now - at)
	} else if at > now {
		return ctl, fmt.Errorf("the control run is at %s, past the run's %s", sched.FormatElapsed(at), sched.FormatElapsed(now))
	}
	return ctl, nil
}
