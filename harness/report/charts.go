package report

import (
	"fmt"
	"strings"
	"time"
)

// worldSVG draws the two sites with their hosts, and the links between
// them (the LAN inside a site, the internet and the VPN across).
func worldSVG(w World) string {
	var sites = []string{"onprem", "azure"}
	bySite := map[string][]Host{}
	for _, h := range w.Hosts {
		bySite[h.Site] = append(bySite[h.Site], h)
	}
	rows := 1
	for _, s := range sites {
		if n := (len(bySite[s]) + 2) / 3; n > rows {
			rows = n
		}
	}
	const boxW, hostW, hostH, gap = 400, 122, 26, 8
	boxH := 40 + rows*(hostH+gap) + 10
	h := boxH + 30 + 22*len(w.Links) + 40
	s := newSVG(h, "the world: sites, hosts, links and the VPN")
	boxX := map[string]int{"onprem": 20, "azure": chartW - 20 - boxW}
	for _, site := range sites {
		x0 := boxX[site]
		s.f(`<g class="site" data-site="%s">`, esc(site))
		s.f(`<rect class="site-box" x="%d" y="10" width="%d" height="%d" rx="10"/>`, x0, boxW, boxH)
		s.f(`<text class="site-name" x="%d" y="30">%s</text>`, x0+12, esc(site))
		for i, host := range bySite[site] {
			hx := x0 + 12 + (i%3)*(hostW+gap)
			hy := 40 + (i/3)*(hostH+gap)
			cls := "host"
			if host.Public {
				cls += " public"
			}
			s.f(`<g class="%s" data-host="%s"><rect x="%d" y="%d" width="%d" height="%d" rx="4"/><text x="%d" y="%d" text-anchor="middle">%s</text></g>`,
				cls, esc(host.Name), hx, hy, hostW, hostH, hx+hostW/2, hy+17, esc(host.Name))
		}
		s.f(`</g>`)
	}
	// The crossing: the internet always, the VPN when it is up.
	midY := 10 + boxH/2
	lx1, lx2 := boxX["onprem"]+boxW, boxX["azure"]
	vpnUp := len(w.VPN) >= 2 && w.VPN[:2] == "up"
	s.f(`<line class="wan" x1="%d" y1="%d" x2="%d" y2="%d"/>`, lx1, midY-12, lx2, midY-12)
	s.f(`<text class="wan-label" x="%d" y="%d" text-anchor="middle">internet</text>`, (lx1+lx2)/2, midY-18)
	vcls := "vpn down"
	if vpnUp {
		vcls = "vpn up"
	}
	s.f(`<line class="%s" x1="%d" y1="%d" x2="%d" y2="%d"/>`, vcls, lx1, midY+14, lx2, midY+14)
	s.f(`<text class="wan-label" x="%d" y="%d" text-anchor="middle">VPN %s</text>`, (lx1+lx2)/2, midY+30, esc(w.VPN))
	y := boxH + 36
	s.f(`<text class="legend" x="20" y="%d">links</text>`, y)
	for i, l := range w.Links {
		ly := y + 20 + i*22
		s.f(`<text class="link" x="20" y="%d" data-path="%s">%s %s→%s: latency %s, %.0f Mbit/s, loss %g</text>`,
			ly, esc(l.Path), esc(l.Path), esc(l.From), esc(l.To), esc(l.Latency.String()), l.Mbps, l.Loss)
	}
	return s.String()
}

// rpoSVG draws a machine's RPO over the run: the samples, the policy's
// threshold, the alerts, and its recovery points on a lane below.
func rpoSVG(m Machine, elapsed time.Duration) string {
	const top, plotH, laneH = 24, 150, 36
	h := top + plotH + 24 + laneH + 26
	s := newSVG(h, "RPO of "+m.Name)
	a := axis{0, elapsed}
	yMax := m.Max.RPO
	thresholdOn := m.Threshold > 0 && m.Threshold <= 3*m.Max.RPO
	if thresholdOn && m.Threshold > yMax {
		yMax = m.Threshold
	}
	yMax = max(yMax*11/10, time.Minute)
	// A round top, cut in at most 4 round steps.
	step := niceSteps[len(niceSteps)-1]
	for _, st := range niceSteps {
		if yMax/st < 4 {
			step = st
			break
		}
	}
	yMax = (yMax + step - 1) / step * step
	y := func(d time.Duration) float64 { return float64(top+plotH) - float64(d)/float64(yMax)*plotH }
	// Alerts first, under the curve.
	for _, al := range m.Alerts {
		end := al.Cleared
		if al.Active {
			end = elapsed
		}
		x1, x2 := a.x(al.Raised), a.x(end)
		s.f(`<rect class="alert-band" x="%.1f" y="%d" width="%.1f" height="%d" data-alert="%s"><title>%s raised %s%s: %s</title></rect>`,
			x1, top, max(x2-x1, 1), plotH, esc(al.Name), esc(al.Name), At(al.Raised), clearedText(al), esc(al.Detail))
	}
	s.timeAxis(a, top+plotH, top)
	// y axis: 0, half, top.
	for d := time.Duration(0); d <= yMax; d += step {
		if d > 0 {
			s.f(`<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, padL, y(d), padL+plotW, y(d))
		}
		s.f(`<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, y(d)+4, esc(short(d)))
	}
	if thresholdOn {
		s.f(`<line class="threshold" x1="%d" y1="%.1f" x2="%d" y2="%.1f" data-threshold="%s"/>`, padL, y(m.Threshold), padL+plotW, y(m.Threshold), Dur(m.Threshold))
		s.f(`<text class="threshold-label" x="%d" y="%.1f" text-anchor="end">threshold %s</text>`, padL+plotW, y(m.Threshold)-4, Dur(m.Threshold))
	} else if m.Threshold > 0 {
		s.f(`<text class="threshold-label" x="%d" y="%d" text-anchor="end" data-threshold="%s">threshold %s (above the chart)</text>`, padL+plotW, top-6, Dur(m.Threshold), Dur(m.Threshold))
	}
	// The curve: one polyline per run of known samples.
	var pts []string
	flush := func() {
		if len(pts) > 0 {
			s.f(`<polyline class="rpo" points="%s"/>`, strings.Join(pts, " "))
			pts = nil
		}
	}
	for _, sm := range m.RPO {
		if !sm.Known {
			flush()
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", a.x(sm.At), y(sm.RPO)))
	}
	flush()
	if m.Max.Known {
		s.f(`<circle class="rpo-max-mark" cx="%.1f" cy="%.1f" r="3"/>`, a.x(m.Max.At), y(m.Max.RPO))
	}
	s.f(`<text class="rpo-max" x="%d" y="%d" data-rpo="%s">max %s at %s</text>`, padL, top-8, sampleText(m.Max), sampleText(m.Max), At(m.Max.At))
	s.f(`<text class="rpo-final" x="%d" y="%d" data-rpo="%s">end %s</text>`, padL+260, top-8, sampleText(m.Final), sampleText(m.Final))
	// The points lane.
	ly := top + plotH + 24
	s.f(`<text class="lane-label" x="%d" y="%d" text-anchor="end">points</text>`, padL-6, ly+laneH/2+4)
	s.f(`<line class="lane" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, ly+laneH/2, padL+plotW, ly+laneH/2)
	for _, p := range m.Points {
		pointMark(s, a, p, ly+laneH/2)
	}
	return s.String()
}

func clearedText(al Alert) string {
	if al.Active {
		return ", still active"
	}
	return ", cleared " + At(al.Cleared)
}

func sampleText(sm Sample) string {
	if !sm.Known {
		return "-"
	}
	return Dur(sm.RPO)
}

// pointMark draws one point: app points above the lane, crash ones on it,
// gone ones grey.
func pointMark(s *svg, a axis, p Point, cy int) {
	state := "live"
	if p.Gone != "" {
		state = "gone"
	}
	r, dy := 3, 0
	if p.Kind == "app" {
		r, dy = 5, -10
	}
	title := fmt.Sprintf("%s %s %s", p.ID, p.Kind, At(p.At))
	if p.Gone != "" {
		title += " (gone: " + p.Gone + ")"
	}
	s.f(`<circle class="pt %s %s" cx="%.1f" cy="%d" r="%d" data-point="%s" data-kind="%s"><title>%s</title></circle>`,
		esc(p.Kind), state, a.x(p.At), cy+dy, r, esc(p.ID), esc(p.Kind), esc(title))
}

// groupSVG draws a group's points and its rounds: each round a bar from
// its start to its report, the members' write holds under it.
func groupSVG(g Group, elapsed time.Duration) string {
	const top, laneH = 20, 36
	rowH := 10 + 6*len(g.Members)
	h := top + laneH + 30 + rowH + 40
	s := newSVG(h, "group "+g.Name)
	a := axis{0, elapsed}
	s.f(`<text class="lane-label" x="%d" y="%d" text-anchor="end">points</text>`, padL-6, top+laneH/2+4)
	s.f(`<line class="lane" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, top+laneH/2, padL+plotW, top+laneH/2)
	for _, p := range g.Points {
		pointMark(s, a, p, top+laneH/2)
	}
	ry := top + laneH + 14
	s.f(`<text class="lane-label" x="%d" y="%d" text-anchor="end">rounds</text>`, padL-6, ry+10)
	for _, r := range g.Shown {
		x1, x2 := a.x(r.Started), a.x(r.Reported)
		s.f(`<g class="round %s" data-tag="%s"><title>%s %s %s, %s → %s%s%s</title>`, esc(r.Outcome), esc(r.Tag), esc(r.Tag), esc(r.Kind), esc(r.Outcome),
			At(r.Started), At(r.Reported), holdsText(r.Holds), reasonText(r.Reason))
		s.f(`<rect class="round-bar" x="%.1f" y="%d" width="%.1f" height="6"/>`, x1, ry, max(x2-x1, 2))
		for i, hd := range r.Holds {
			if hd.Hold < 0 {
				continue
			}
			s.f(`<rect class="hold" x="%.1f" y="%d" width="%.1f" height="4" data-machine="%s" data-hold="%s"/>`, x1, ry+10+6*i, max(a.x(r.Started+hd.Hold)-x1, 1), esc(hd.Machine), hd.Hold)
		}
		s.f(`</g>`)
	}
	s.timeAxis(a, h-24, top)
	return s.String()
}

func holdsText(hs []Hold) string {
	out := ""
	for _, h := range hs {
		if h.Hold < 0 {
			out += fmt.Sprintf("; %s hold unknown", h.Machine)
			continue
		}
		out += fmt.Sprintf("; %s held writes %s", h.Machine, h.Hold)
	}
	return out
}

func reasonText(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

// ganttSVG draws jobs as bars on their own time axis; under each job one
// row per VM (and one for the steps of no VM) with its steps end to end.
func ganttSVG(jobs []Job, end time.Duration) string {
	if len(jobs) == 0 {
		return ""
	}
	from, to := jobs[0].Start, time.Duration(0)
	rows := 0
	for _, j := range jobs {
		from = min(from, j.Start)
		to = max(to, jobEnd(j, end))
		rows += 1 + len(stepRows(j.Steps))
	}
	pad := (to - from) / 40
	a := axis{max(from-pad, 0), to + pad}
	const top, rowH = 10, 16
	h := top + rows*rowH + 34
	s := newSVG(h, "jobs")
	s.timeAxis(a, h-24, top)
	y := top
	for _, j := range jobs {
		e := jobEnd(j, end)
		x1, x2 := a.x(j.Start), a.x(e)
		label := fmt.Sprintf("%s %s %s: %s, %s", j.ID, j.Kind, j.Subject, j.Status, Dur(e-j.Start))
		if j.RTO > 0 {
			label += ", RTO " + Dur(j.RTO)
		}
		s.f(`<g class="job %s" data-job="%s" data-kind="%s" data-rto="%s">`, esc(j.Status), esc(j.ID), esc(j.Kind), Dur(j.RTO))
		s.f(`<rect class="job-bar" x="%.1f" y="%d" width="%.1f" height="12"><title>%s</title></rect>`, x1, y, max(x2-x1, 2), esc(label))
		s.f(`<text class="job-label" x="%d" y="%d" text-anchor="end">%s</text>`, padL-6, y+10, esc(j.ID))
		tx, anchor := x2+4, "start"
		if tx > chartW-320 {
			tx, anchor = x1-4, "end"
		}
		s.f(`<text class="job-text" x="%.1f" y="%d" text-anchor="%s">%s</text>`, tx, y+10, anchor, esc(label))
		y += rowH
		for _, row := range stepRows(j.Steps) {
			name := row.vm
			if name == "" {
				name = "steps"
			}
			s.f(`<text class="step-label" x="%d" y="%d" text-anchor="end">%s</text>`, padL-6, y+9, esc(name))
			for i, st := range row.steps {
				se := st.End
				if se == 0 {
					se = e
				}
				sx1, sx2 := a.x(st.Start), a.x(se)
				s.f(`<rect class="step %s s%d" x="%.1f" y="%d" width="%.1f" height="9" data-step="%s"><title>%s%s: %s, %s → %s</title></rect>`,
					esc(st.Status), i%2, sx1, y+1, max(sx2-sx1, 1), esc(st.Name), esc(st.Name), vmText(st.VM), esc(st.Status), At(st.Start), At(se))
			}
			y += rowH
		}
		s.f(`</g>`)
	}
	return s.String()
}

func jobEnd(j Job, end time.Duration) time.Duration {
	if j.End == 0 {
		return end
	}
	return j.End
}

func vmText(vm string) string {
	if vm == "" {
		return ""
	}
	return " " + vm
}

// stepRow is one row of a job's Gantt: a VM's steps, or those of none.
type stepRow struct {
	vm    string
	steps []Step
}

// stepRows groups steps by VM, rows in the order the VMs first appear.
func stepRows(steps []Step) []stepRow {
	var rows []stepRow
	at := map[string]int{}
	for _, st := range steps {
		i, ok := at[st.VM]
		if !ok {
			i = len(rows)
			at[st.VM] = i
			rows = append(rows, stepRow{vm: st.VM})
		}
		rows[i].steps = append(rows[i].steps, st)
	}
	return rows
}
