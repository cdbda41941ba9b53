// The cost command: what a protection policy costs while the world runs —
// points made and kept, blob-storage transactions, and the RPO achieved.

package harness

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// CostReport is what `cost` measured over one window of virtual time.
type CostReport struct {
	Window   time.Duration
	Machines []MachineCost
	// Requests is the blob-storage requests made during the window (every
	// component's: the process server's uploads, the Azure side's reads,
	// page writes, snapshots, catalog updates, deletions), by method.
	Requests map[string]int64
}

// MachineCost is one machine's share of a CostReport.
type MachineCost struct {
	Machine       string
	CrashInterval time.Duration
	Made          int // recovery points made during the window
	Kept          int // points in its catalog at the end
	// RPO samples, taken every sampling step as the rpo check measures it
	// (now − the newest point the configuration server knows).
	RPOp50, RPOp99, RPOMax time.Duration
}

// PerHour scales a count over the window to an hourly rate.
func (c CostReport) PerHour(n int64) float64 {
	return float64(n) * float64(time.Hour) / float64(c.Window)
}

// TotalRequests is the sum of Requests.
func (c CostReport) TotalRequests() int64 {
	var t int64
	for _, n := range c.Requests {
		t += n
	}
	return t
}

// costSample is how often the RPO is sampled during `cost`.
const costSample = time.Second

// Cost runs the world for window, sampling every machine's RPO each
// second, and reports what protection cost meanwhile. The storage counts
// are taken from the requests the world's blob store served during the
// window only (no check runs inside it), so they are replication's own.
func (d *Deployment) Cost(window time.Duration, machines []string) (CostReport, error) {
	if machines == nil {
		machines = d.protectedMachines()
	}
	if len(machines) == 0 {
		return CostReport{}, fmt.Errorf("cost: no protected machine to measure")
	}
	e := d.e
	if e.counts == nil {
		return CostReport{}, fmt.Errorf("cost: the world has no counted blob store")
	}
	before := e.counts.snapshot()
	start := e.Sim.Now()
	madeBefore := map[string]map[string]bool{}
	for _, m := range machines {
		madeBefore[m] = map[string]bool{}
		for _, p := range d.made.made(m) {
			madeBefore[m][p.ID] = true
		}
	}
	samples := map[string][]time.Duration{}
	for done := time.Duration(0); done < window; {
		step := min(costSample, window-done)
		e.Sim.RunFor(step)
		done += step
		st, err := d.csStatus()
		if err != nil {
			return CostReport{}, fmt.Errorf("cost: %w", err)
		}
		for _, ms := range st.Machines {
			if !slices.Contains(machines, ms.Name) || ms.NewestPoint.IsZero() {
				continue
			}
			samples[ms.Name] = append(samples[ms.Name], e.Sim.Now().Sub(ms.NewestPoint))
		}
	}
	after := e.counts.snapshot()
	rep := CostReport{Window: e.Sim.Now().Sub(start), Requests: map[string]int64{}}
	for k, n := range after {
		if dn := n - before[k]; dn > 0 {
			rep.Requests[k] = dn
		}
	}
	for _, m := range machines {
		mc := MachineCost{Machine: m, CrashInterval: d.PolicyOf(m).CrashInterval}
		for _, p := range d.made.made(m) {
			if !madeBefore[m][p.ID] {
				mc.Made++
			}
		}
		if cat, err := d.Catalog(m); err == nil {
			mc.Kept = len(cat.Points)
		}
		s := samples[m]
		if len(s) == 0 {
			return CostReport{}, fmt.Errorf("cost: %s had no recovery point to measure its RPO by", m)
		}
		slices.Sort(s)
		mc.RPOp50, mc.RPOp99, mc.RPOMax = s[(len(s)-1)*50/100], s[(len(s)-1)*99/100], s[len(s)-1]
		rep.Machines = append(rep.Machines, mc)
	}
	return rep, nil
}

// cost runs the world and reports what protection costs:
//
//	cost for=DURATION [vms=(…)]
func (r *Runner) cost(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	window, err := a.durMin("for", 0, time.Minute)
	if err != nil {
		return "", err
	}
	if window <= 0 {
		return "", fmt.Errorf("cost: want for=DURATION of a minute or more")
	}
	rep, err := d.Cost(window, a.list("vms"))
	if err != nil {
		return "", err
	}
	return rep.String(), nil
}

// String is the report as `cost` prints it.
func (c CostReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "over %s:\n", fmtDur(c.Window))
	fmt.Fprintf(&b, "%-10s %6s %10s %6s %8s %8s %8s\n", "machine", "crash", "points/h", "kept", "rpo-p50", "rpo-p99", "rpo-max")
	made := 0
	for _, m := range c.Machines {
		made += m.Made
		fmt.Fprintf(&b, "%-10s %6s %10.0f %6d %8s %8s %8s\n", m.Machine, fmtDur(m.CrashInterval), c.PerHour(int64(m.Made)), m.Kept,
			fmtRPO(m.RPOp50), fmtRPO(m.RPOp99), fmtRPO(m.RPOMax))
	}
	total := c.TotalRequests()
	fmt.Fprintf(&b, "points/h %.0f; storage transactions/h %.0f (%.0f a machine, %.1f a point):", c.PerHour(int64(made)), c.PerHour(total),
		c.PerHour(total)/float64(max(len(c.Machines), 1)), float64(total)/float64(max(made, 1)))
	for _, k := range sortedKeys(c.Requests) {
		fmt.Fprintf(&b, " %s=%.0f", k, c.PerHour(c.Requests[k]))
	}
	b.WriteString("\n")
	return b.String()
}

// fmtRPO shows an RPO to a tenth of a second.
func fmtRPO(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
