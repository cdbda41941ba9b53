// Script commands that are views: the portal's status, points, alerts, jobs and
// agent, and the harness's trace and network.

package harness

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"

	simnet "github.com/v2a-dr/v2a/sim/net"
)

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

// StatusRow is one machine's row of the portal's replication table, the
// numbers `status` prints: Written is what the guest wrote and Sent the
// payload its agent sent (bytes); Ratio the true compression of its items
// ("-" before any); Crash and App its points by kind; RPO the virtual time
// since its newest point ("-" before any).
type StatusRow struct {
	Machine, State, Mode string
	Written, Sent        int64
	Ratio, Codec         string
	Crash, App           int
	RPO                  string
}

// WrittenMiB and SentMiB are Written and Sent as `status` prints them.
func (s StatusRow) WrittenMiB() string { return mib(s.Written) }

// SentMiB is Sent as `status` prints it.
func (s StatusRow) SentMiB() string { return mib(s.Sent) }

// liveStatus is the deployment and the configuration server's status
// behind a live view (StatusRows, GroupRounds): an error when there is no
// world yet, nothing deployed, or the configuration server is down. It
// reads state and runs no virtual time.
func (r *Runner) liveStatus() (*Deployment, configsrv.Status, error) {
	if r.Env == nil {
		return nil, configsrv.Status{}, fmt.Errorf("no world yet")
	}
	d, err := r.deployment()
	if err != nil {
		return nil, configsrv.Status{}, err
	}
	st, err := d.csStatus()
	if err != nil {
		return nil, configsrv.Status{}, err
	}
	return d, st, nil
}

// StatusRows is the portal's per-machine table (what `status` prints), one
// row per machine with a policy or a registered agent, in the
// configuration server's order. It reads state and runs no virtual time.
func (r *Runner) StatusRows() ([]StatusRow, error) {
	d, st, err := r.liveStatus()
	if err != nil {
		return nil, err
	}
	// ratio is the compression the process server achieved on the machine's
	// items since it started: item bytes before sealing over sealed bytes
	// uploaded (compressed, plus 34 bytes of header and AES-GCM tag an
	// item); codec is the compression of its latest item (the policy's).
	ratios, codecs := map[string]string{}, map[string]string{}
	if ps, err := d.ProcessStatus(); err == nil {
		for _, m := range ps.Machines {
			if m.SealedBytes > 0 {
				ratios[m.Machine] = fmt.Sprintf("%.2f", float64(m.RawBytes)/float64(m.SealedBytes))
				codecs[m.Machine] = m.Codec
			}
		}
	}
	var rows []StatusRow
	for _, m := range st.Machines {
		if m.Policy == "" && !m.Registered {
			continue
		}
		row := StatusRow{Machine: m.Name, State: string(m.State), Mode: m.CaptureMode, Sent: m.SentBytes,
			Ratio: ratios[m.Name], Codec: codecs[m.Name], RPO: "-"}
		if mach := r.Env.Machines[m.Name]; mach != nil {
			row.Written, _ = mach.Written()
		}
		if row.Ratio == "" {
			row.Ratio = "-"
		}
		if row.Codec == "" {
			row.Codec = "-"
		}
		if cat, err := d.Catalog(m.Name); err == nil {
			for _, p := range cat.Points {
				if p.Kind == proto.App {
					row.App++
				} else {
					row.Crash++
				}
			}
		}
		if !m.NewestPoint.IsZero() {
			row.RPO = fmtDur(r.Env.Sim.Now().Sub(m.NewestPoint))
		}
		if row.Mode == "" {
			row.Mode = "-"
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// status prints the per-machine replication table.
func (r *Runner) status(a argMap) (string, error) {
	rows, err := r.StatusRows()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %-15s %-6s %10s %10s %6s %-5s %6s %5s %9s\n", "machine", "state", "mode", "written", "sent", "ratio", "codec", "crash", "app", "rpo")
	for _, m := range rows {
		fmt.Fprintf(&b, "%-10s %-15s %-6s %10s %10s %6s %-5s %6d %5d %9s\n", m.Machine, m.State, m.Mode, mib(m.Written), mib(m.Sent), m.Ratio, m.Codec, m.Crash, m.App, m.RPO)
	}
	return b.String(), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

// points lists a machine's recovery points from its catalog:
//
//	points vm=NAME [last=N]
func (r *Runner) points(a argMap) (string, error) {
	d, vm, err := r.deployedMachine("points", a)
	if err != nil {
		return "", err
	}
	last, err := a.intIn("last", 8, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	cat, err := d.Catalog(vm)
	if errors.Is(err, blob.ErrNotFound) {
		// Not an error: the answer is that there are none, and why.
		return noReplica(d, vm), nil
	}
	if err != nil {
		return "", err
	}
	if id := a.str("point", ""); id != "" {
		// One point: it, or what became of it.
		for _, p := range cat.Points {
			if p.ID == id {
				return fmt.Sprintf("%s: point %s %s %s seq=%d gen=%d, %d snapshot(s)\n", vm, p.ID, p.Kind, fmtTime(r.Env, p.Time), p.Seq, p.Gen, len(p.Snapshots)), nil
			}
		}
		return d.pointGone(vm, id, len(cat.Points)) + "\n", nil
	}
	var b strings.Builder
	pts := cat.Points
	fmt.Fprintf(&b, "%s: %d points, gen %d, synced=%v, applied item %d, log seq %d\n", vm, len(pts), cat.Gen, cat.Synced, cat.Applied, cat.AppliedLogSeq)
	if int64(len(pts)) > last {
		pts = pts[int64(len(pts))-last:]
	}
	for _, p := range pts {
		fmt.Fprintf(&b, "  %-18s %-5s %s seq=%d\n", p.ID, p.Kind, fmtTime(r.Env, p.Time), p.Seq)
	}
	return b.String(), nil
}

// alerts lists the configuration server's alerts.
func (r *Runner) alerts(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	st, err := d.csStatus()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, al := range st.Alerts {
		cleared := "active"
		if !al.Active() {
			cleared = "cleared " + fmtTime(r.Env, al.Cleared)
		}
		fmt.Fprintf(&b, "%-24s %-10s raised %s %s: %s\n", al.Name, al.Subject, fmtTime(r.Env, al.Raised), cleared, al.Detail)
	}
	if len(st.Alerts) == 0 {
		b.WriteString("no alerts\n")
	}
	return b.String(), nil
}

// jobs lists the configuration server's jobs.
func (r *Runner) jobs(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	st, err := d.csStatus()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	only := a.str("vm", "")
	if only != "" {
		if err := r.knownMachine("jobs", only); err != nil {
			return "", err
		}
	}
	shown := 0
	for _, j := range st.Jobs {
		if only != "" && j.Machine != only {
			continue
		}
		shown++
		fmt.Fprintf(&b, "job %d %s %s: %s", j.ID, j.Kind, j.Machine, j.Status)
		if j.Reason != "" {
			fmt.Fprintf(&b, " (%s)", j.Reason)
		}
		b.WriteByte('\n')
		for _, s := range j.Steps {
			fmt.Fprintf(&b, "  %-22s %s", s.Name, s.Status)
			if s.Detail != "" {
				fmt.Fprintf(&b, " %s", s.Detail)
			}
			b.WriteByte('\n')
		}
	}
	switch {
	case len(st.Jobs) == 0:
		b.WriteString("no jobs\n")
	case shown == 0:
		// Not empty output: say why there are none for this machine.
		state := "the configuration server does not know it"
		if ms, ok := d.MachineStatus(only); ok {
			state = string(ms.State)
		}
		fmt.Fprintf(&b, "no jobs for %s: nothing was ever asked of it (%s)\n", only, state)
	}
	return b.String(), nil
}

// agentCmd prints a machine's agent as it sees itself:
//
//	agent vm=NAME
func (r *Runner) agentCmd(a argMap) (string, error) {
	d, vm, err := r.deployedMachine("agent", a)
	if err != nil {
		return "", err
	}
	s, err := d.AgentStatus(vm)
	if err != nil {
		// An answer: whether an agent was ever installed, and the state.
		state := "the configuration server does not know it"
		if ms, ok := d.MachineStatus(vm); ok {
			state = string(ms.State)
		}
		if g := d.guests[vm]; g == nil || !g.installed {
			return fmt.Sprintf("%s: no agent: the Mobility service is not installed (%s; `protect` pushes it, `install` puts it on by hand)\n", vm, state), nil
		}
		return fmt.Sprintf("%s: no agent running: its agent process is down (%s)\n", vm, state), nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: phase=%s mode=%s gen=%d policy=%s registered=%v\n", vm, s.Phase, s.Mode, s.Gen, s.Policy, s.Registered)
	if s.RegisterRefused != "" {
		fmt.Fprintf(&b, "  registration refused: %s\n", s.RegisterRefused)
	}
	fmt.Fprintf(&b, "  log: pending %s in %d records, last seq %d, trimmed to %d\n", mib(s.PendingBytes), s.PendingRecords, s.LogLastSeq, s.LogTrimSeq)
	fmt.Fprintf(&b, "  stream: items built %d, acked %d, sent %d (retransmits %d, go-backs %d, back-offs %d), payload %s\n",
		s.ItemsBuilt, s.ItemsAcked, s.ItemsSent, s.Retransmits, s.GoBacks, s.Backoffs, mib(s.PayloadBytesSent))
	if s.PSLosses > 0 {
		fmt.Fprintf(&b, "  the process server lost items it had acknowledged %d time(s)\n", s.PSLosses)
	}
	sy := s.Sync
	if sy.Gen > 0 {
		kind := "resync (checksum comparison)"
		if sy.FreshDisks > 0 {
			kind = "initial copy (fresh replica: non-zero blocks only)"
		}
		fmt.Fprintf(&b, "  sync gen %d, %s: read %s of %s, sent %s in %d chunks\n", sy.Gen, kind, mib(sy.BytesRead), mib(sy.TotalBytes), mib(sy.ChunkBytes), sy.Chunks)
	}
	var ins, skip []string
	for _, c := range s.BookmarksInserted {
		ins = append(ins, fmt.Sprintf("%s=%d", c.Kind, c.Count))
	}
	for _, c := range s.BookmarksSkipped {
		skip = append(skip, fmt.Sprintf("%s/%s=%d", c.Kind, c.Reason, c.Count))
	}
	fmt.Fprintf(&b, "  bookmarks: inserted %s; skipped %s\n", orNone(ins), orNone(skip))
	if s.LastError != "" {
		fmt.Fprintf(&b, "  last error: %s\n", s.LastError)
	}
	return b.String(), nil
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, " ")
}

// noReplica says why a machine has no replica in Azure (no catalog): it
// was never enabled, or replication never reached the Azure side.
func noReplica(d *Deployment, vm string) string {
	ms, ok := d.MachineStatus(vm)
	switch {
	case !ok:
		return fmt.Sprintf("%s: no recovery points: the configuration server does not know it\n", vm)
	case ms.State == configsrv.StateUnprotected && ms.LastRefusal == "":
		return fmt.Sprintf("%s: no recovery points: it is not protected (replication was never enabled for it: see protect)\n", vm)
	case ms.LastRefusal != "":
		return fmt.Sprintf("%s: no recovery points: it never replicated (%s; its agent's registration was %s)\n", vm, ms.State, ms.LastRefusal)
	default:
		return fmt.Sprintf("%s: no recovery points: nothing of it has reached the Azure side yet (%s)\n", vm, ms.State)
	}
}
