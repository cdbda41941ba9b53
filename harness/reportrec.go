// The HTML report's recorder: what the run did, gathered as it goes.

package harness

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/harness/report"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/sched"

	simnet "github.com/v2a-dr/v2a/sim/net"
)

// DefaultSampleEvery is how often, in virtual time, the report samples
// each machine's RPO.
const DefaultSampleEvery = time.Minute

// maxSamples bounds the samples kept per machine: past it the recorder
// halves them (keeping the larger RPO of each pair, so peaks survive) and
// samples half as often. A run of 10000 h stays a report of kilobytes.
const maxSamples = 2048

// ReportRecorder gathers a run for its HTML report: each machine's RPO
// sampled on the virtual clock, and the multi-VM rounds, as the run goes
// (through sched.Sim.OnAdvance, which only observes: the trace and its
// hash are the same with or without a recorder); the points, jobs, alerts,
// world and checks at the end (Build). It reads the components' state
// through Inspect, as the views do, never by parsing their text.
type ReportRecorder struct {
	every time.Duration
	env   *Env // the world it is attached to
	next  time.Time
	// samples are each machine's RPO samples; order the machines as first
	// seen (then sorted by Build).
	samples map[string][]report.Sample
	// rounds are each group's rounds by tag, as the configuration server
	// reported them (it keeps the last configsrv.RecentRounds).
	rounds map[string]map[string]report.Round
}

// NewReportRecorder returns a recorder that samples every interval of
// virtual time (DefaultSampleEvery when 0). Give it to a Runner
// (Runner.Report) before the run.
func NewReportRecorder(every time.Duration) *ReportRecorder {
	if every <= 0 {
		every = DefaultSampleEvery
	}
	return &ReportRecorder{every: every, samples: map[string][]report.Sample{}, rounds: map[string]map[string]report.Round{}}
}

// attach hooks the recorder onto the runner's world, once per world.
func (rc *ReportRecorder) attach(e *Env) {
	if rc == nil || e == nil || rc.env == e {
		return
	}
	rc.env = e
	rc.next = e.Sim.Now().Add(rc.every)
	e.Sim.OnAdvance(rc.advance)
}

// advance samples at every grid time up to to: the world as it stood
// before the events due at to.
func (rc *ReportRecorder) advance(to time.Time) {
	if rc.next.After(to) {
		return
	}
	d := rc.env.Deployment
	if d == nil {
		for !rc.next.After(to) {
			rc.next = rc.next.Add(rc.every)
		}
		return
	}
	st, err := d.ConfigStatus()
	for ; !rc.next.After(to); rc.next = rc.next.Add(rc.every) {
		if err != nil {
			continue // the configuration server is down: a gap
		}
		rc.sample(st, rc.next)
	}
	if err == nil {
		rc.gatherRounds(st)
	}
}

// reported is the status view's filter: machines it lists.
func reported(m configsrv.MachineStatus) bool { return m.Policy != "" || m.Registered }

func (rc *ReportRecorder) sample(st configsrv.Status, at time.Time) {
	for _, m := range st.Machines {
		if !reported(m) {
			continue
		}
		s := report.Sample{At: at.Sub(sched.Epoch)}
		if !m.NewestPoint.IsZero() {
			s.RPO, s.Known = at.Sub(m.NewestPoint), true
		}
		rc.samples[m.Name] = append(rc.samples[m.Name], s)
		if len(rc.samples[m.Name]) > maxSamples {
			rc.thin()
		}
	}
}

// thin halves every machine's samples and the sampling rate.
func (rc *ReportRecorder) thin() {
	for name, ss := range rc.samples {
		out := ss[:0]
		for i := 0; i < len(ss); i += 2 {
			s := ss[i]
			if i+1 < len(ss) && higher(ss[i+1], s) {
				s = ss[i+1]
			}
			out = append(out, s)
		}
		rc.samples[name] = out
	}
	rc.every *= 2
}

// higher: a's RPO is known and above b's (or b's is unknown).
func higher(a, b report.Sample) bool {
	return a.Known && (!b.Known || a.RPO > b.RPO)
}

func (rc *ReportRecorder) gatherRounds(st configsrv.Status) {
	for _, g := range st.Groups {
		byTag := rc.rounds[g.Name]
		if byTag == nil {
			byTag = map[string]report.Round{}
			rc.rounds[g.Name] = byTag
		}
		for _, r := range g.Stats.Recent {
			byTag[r.TagID] = reportRound(r)
		}
	}
}

// reportRound is a round the configuration server keeps as the report
// draws it.
func reportRound(r configsrv.RoundStatus) report.Round {
	rd := report.Round{Tag: r.TagID, Kind: r.Kind.String(), Outcome: r.Outcome, Reason: r.Reason,
		Started: r.Started.Sub(sched.Epoch), Reported: r.Reported.Sub(sched.Epoch)}
	for _, h := range r.Holds {
		rd.Holds = append(rd.Holds, report.Hold{Machine: h.Machine, Hold: h.Held})
	}
	for _, p := range r.Phases {
		rd.Phases = append(rd.Phases, report.Phase{Name: p.Name, Start: p.Start.Sub(sched.Epoch), End: p.End.Sub(sched.Epoch), OK: p.OK})
	}
	return rd
}

// GroupRounds are the replication groups with the rounds the configuration
// server keeps (its last configsrv.RecentRounds), as the report draws them
// (report.RoundsSVG): a live view for the dashboard. It only reads the
// world.
func (r *Runner) GroupRounds() ([]report.Group, error) {
	_, st, err := r.liveStatus()
	if err != nil {
		return nil, fmt.Errorf("harness: group rounds: %w", err)
	}
	var out []report.Group
	for _, g := range st.Groups {
		rg := report.Group{Name: g.Name, State: string(g.State), Master: g.Master, Rounds: g.Stats.Rounds,
			Committed: g.Stats.Committed, Revoked: g.Stats.Revoked}
		for _, m := range g.Members {
			rg.Members = append(rg.Members, m.Machine)
		}
		for _, rs := range g.Stats.Recent {
			rg.Shown = append(rg.Shown, reportRound(rs))
		}
		out = append(out, rg)
	}
	return out, nil
}

// ReportMeta is what the report says about the run besides the world:
// the scenario, the seed and how to reproduce it.
type ReportMeta struct {
	Scenario  string
	Reproduce string
}

// Report builds the report of the run so far from the recorder and the
// runner's world. It reads the world (through Inspect and storage) and
// changes nothing of it; the same run gives the same report.
func (r *Runner) Report(rc *ReportRecorder, meta ReportMeta) (*report.Run, error) {
	e := r.Env
	if e == nil {
		return nil, fmt.Errorf("harness: report: no world was built (the script has no `world`)")
	}
	rc.attach(e)
	now := e.Sim.Now()
	run := &report.Run{Scenario: meta.Scenario, Seed: e.Sim.Seed(), TraceSHA256: e.Trace.Sum(), Reproduce: meta.Reproduce,
		Elapsed: e.Sim.Elapsed(), SampleEvery: rc.every}
	run.World = worldOf(e.Net)
	run.Checks.Passed, run.Checks.Failed = r.Tally.Passed, r.Tally.Failed
	for _, c := range r.Tally.Results {
		run.Checks.Results = append(run.Checks.Results, report.Check{Check: c.Check, Subject: c.Subject, Verdict: string(c.Verdict), Detail: c.Detail, Evidence: c.Evidence})
	}
	d := e.Deployment
	if d == nil {
		return run, nil
	}
	st, err := d.csStatus()
	if err != nil {
		return nil, fmt.Errorf("harness: report: %w", err)
	}
	rc.gatherRounds(st)
	for _, m := range st.Machines {
		if !reported(m) {
			continue
		}
		mr, err := rc.machine(d, st, m, now)
		if err != nil {
			return nil, err
		}
		run.Machines = append(run.Machines, mr)
	}
	for _, g := range st.Groups {
		gr, err := rc.group(d, g)
		if err != nil {
			return nil, err
		}
		run.Groups = append(run.Groups, gr)
	}
	for _, j := range st.Jobs {
		rj := report.Job{ID: fmt.Sprintf("cs-%d", j.ID), Kind: j.Kind, Subject: j.Machine, Status: j.Status,
			Start: since(j.Started), End: since(j.Ended)}
		for _, s := range j.Steps {
			rj.Steps = append(rj.Steps, report.Step{Name: s.Name, Status: s.Status, Start: since(s.Started), End: since(s.Ended)})
		}
		run.Jobs = append(run.Jobs, rj)
	}
	if d.fo != nil {
		js, err := d.fo.Jobs()
		if err != nil {
			return nil, fmt.Errorf("harness: report: the recovery jobs: %w", err)
		}
		for _, j := range js {
			subject := j.Plan
			if subject == "" {
				subject = strings.Join(j.VMs, ",")
			}
			rj := report.Job{ID: j.ID, Kind: j.Op, Subject: subject, Status: string(j.State), Start: since(j.Requested), End: since(j.Ended)}
			if j.Op == proto.OpFailover || j.Op == proto.OpTestFailover || j.Op == proto.OpFailback {
				rj.RTO = j.RTO()
			}
			for _, t := range j.Tasks {
				rj.Steps = append(rj.Steps, report.Step{Name: t.Name, VM: t.VM, Group: t.Group, Status: t.State, Start: since(t.Start), End: since(t.End)})
			}
			run.Jobs = append(run.Jobs, rj)
		}
	}
	return run, nil
}

// since is a time as virtual time since the epoch; 0 for the zero time.
func since(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(sched.Epoch)
}

func (rc *ReportRecorder) machine(d *Deployment, st configsrv.Status, m configsrv.MachineStatus, now time.Time) (report.Machine, error) {
	pol := d.PolicyOf(m.Name)
	mr := report.Machine{Name: m.Name, State: string(m.State), Policy: m.Policy, Threshold: pol.RPOThreshold,
		RPO: append([]report.Sample(nil), rc.samples[m.Name]...)}
	mr.Final = report.Sample{At: now.Sub(sched.Epoch)}
	if !m.NewestPoint.IsZero() {
		mr.Final.RPO, mr.Final.Known = now.Sub(m.NewestPoint), true
	}
	for _, s := range append(mr.RPO, mr.Final) {
		if higher(s, mr.Max) {
			mr.Max = s
		}
	}
	for _, al := range st.Alerts {
		if al.Subject != m.Name {
			continue
		}
		mr.Alerts = append(mr.Alerts, report.Alert{Name: al.Name, Detail: al.Detail, Raised: since(al.Raised), Cleared: since(al.Cleared), Active: al.Active()})
	}
	// Live points from the catalog (the points view's), the gone ones
	// from the harness's record of every point the Azure side made.
	live := map[string]bool{}
	cat, err := d.Catalog(m.Name)
	switch {
	case errors.Is(err, blob.ErrNotFound):
	case err != nil:
		return mr, fmt.Errorf("harness: report: %s's catalog: %w", m.Name, err)
	default:
		for _, p := range cat.Points {
			live[p.ID] = true
			mr.Points = append(mr.Points, report.Point{ID: p.ID, Kind: p.Kind.String(), At: since(p.Time)})
			if p.Kind == proto.App {
				mr.App++
			} else {
				mr.Crash++
			}
		}
	}
	for _, p := range d.made.made(m.Name) {
		if live[p.ID] {
			continue
		}
		gone := p.Removed
		if gone == "" {
			gone = "not in the catalog"
		}
		mr.Points = append(mr.Points, report.Point{ID: p.ID, Kind: p.Kind.String(), At: since(p.Time), Gone: gone})
	}
	sort.SliceStable(mr.Points, func(i, j int) bool {
		if mr.Points[i].At != mr.Points[j].At {
			return mr.Points[i].At < mr.Points[j].At
		}
		return mr.Points[i].ID < mr.Points[j].ID
	})
	return mr, nil
}

func (rc *ReportRecorder) group(d *Deployment, g configsrv.GroupStatus) (report.Group, error) {
	s := g.Stats
	gr := report.Group{Name: g.Name, State: string(g.State), Master: g.Master, Count: g.Points,
		Rounds: s.Rounds, Committed: s.Committed, Revoked: s.Revoked,
		HoldMax: s.Holds.Max, HoldP50: s.Holds.P50, HoldP99: s.Holds.P99}
	for _, m := range g.Members {
		gr.Members = append(gr.Members, m.Machine)
	}
	gc, err := d.GroupCatalog(g.Name)
	switch {
	case errors.Is(err, blob.ErrNotFound):
	case err != nil:
		return gr, fmt.Errorf("harness: report: group %s's catalog: %w", g.Name, err)
	default:
		for _, p := range gc.Points {
			gr.Points = append(gr.Points, report.Point{ID: p.ID, Kind: p.Kind.String(), At: since(p.Time), Group: g.Name})
		}
	}
	for _, tag := range sortedKeys(rc.rounds[g.Name]) {
		gr.Shown = append(gr.Shown, rc.rounds[g.Name][tag])
	}
	sort.SliceStable(gr.Shown, func(i, j int) bool { return gr.Shown[i].Started < gr.Shown[j].Started })
	return gr, nil
}

// worldOf is the network as the network view lists it.
func worldOf(n *simnet.Net) report.World {
	var w report.World
	for _, h := range n.Hosts() {
		w.Hosts = append(w.Hosts, report.Host{Name: h.Name, Site: string(h.Site), Public: h.Public})
	}
	for _, p := range []simnet.Path{simnet.PathLAN, simnet.PathInternet, simnet.PathVPN} {
		for _, f := range []simnet.Site{simnet.OnPrem, simnet.Azure} {
			for _, t := range []simnet.Site{simnet.OnPrem, simnet.Azure} {
				if lp, ok := n.Link(p, f, t); ok {
					w.Links = append(w.Links, report.Link{Path: fmt.Sprint(p), From: string(f), To: string(t), Latency: lp.Latency,
						Mbps: float64(lp.BytesPerSec) * 8 / 1e6, Loss: lp.Loss})
				}
			}
		}
	}
	w.VPN = n.VPN().String()
	return w
}
