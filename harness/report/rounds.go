package report

import "time"

// GanttRounds is how many of a group's last rounds the phase chart draws
// one row each (the configuration server keeps as many,
// configsrv.RecentRounds).
const GanttRounds = 16

// PhaseCSS styles RoundsSVG's marks (the report carries it; a page that
// shows RoundsSVG elsewhere, the dashboard, includes it).
const PhaseCSS = `.phase.begin { fill: #afb8c1; }
.phase.prepare { fill: #54aeff; }
.phase.quiesce { fill: #8250df; }
.phase.commit { fill: #1a7f37; }
.phase.resume { fill: #0969da; }
.phase.revoke { fill: #cf222e; }
.phase.failed { stroke: #cf222e; stroke-width: 2; fill-opacity: 0.5; }
.hold { fill: #bf8700; }
.round-outcome { fill: #1b1f24; font-size: 10px; }
.round-row.revoked .round-outcome { fill: #cf222e; font-weight: 600; }
.round-rows .axis { stroke: #57606a; } .round-rows .grid { stroke: #eaeef2; } .round-rows .tick, .round-rows .lane-label { fill: #57606a; }
`

// phaseNames are the phases a round can have, in the protocol's order:
// the legend and the fills.
var phaseNames = []string{"begin", "prepare", "quiesce", "commit", "resume", "revoke"}

// fineSteps are the tick intervals of a round's axis (rounds last
// microseconds to minutes).
var fineSteps = []time.Duration{
	10 * time.Microsecond, 20 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 200 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
}

// fineTicks are at most ~10 ticks in [0, span].
func fineTicks(span time.Duration) []time.Duration {
	steps := append(append([]time.Duration(nil), fineSteps...), niceSteps...)
	step := steps[len(steps)-1]
	for _, s := range steps {
		if span/s <= 10 {
			step = s
			break
		}
	}
	var out []time.Duration
	for t := time.Duration(0); t <= span; t += step {
		out = append(out, t)
	}
	return out
}

// GanttShown is the tail of g.Shown the phase chart draws.
func GanttShown(g Group) []Round {
	return g.Shown[max(len(g.Shown)-GanttRounds, 0):]
}

// holdFrom is where a member's hold is drawn from: when the master sent
// prepare (the member holds from its arrival), the round's start when the
// round reported no prepare.
func holdFrom(r Round) time.Duration {
	for _, p := range r.Phases {
		if p.Name == "prepare" {
			return p.Start
		}
	}
	return r.Started
}

// RoundsSVG is roundsSVG, for pages other than the report (the dashboard);
// style it with PhaseCSS.
func RoundsSVG(g Group) string { return roundsSVG(g) }

// roundsSVG draws the group's last rounds as a Gantt chart on a common
// axis of time since each round's start: a row per round with its phases
// end to end (a fill per phase, a red outline on a phase left without
// every acknowledgement), under it each member's write hold. Every mark
// carries its times in data- attributes, since the round's start and
// exact (Duration.String), as `groups detail=rounds` prints them.
func roundsSVG(g Group) string {
	rounds := GanttShown(g)
	span := time.Millisecond
	rowH := func(r Round) int { return 14 + 6*len(r.Holds) + 8 }
	h := 30
	for _, r := range rounds {
		for _, p := range r.Phases {
			span = max(span, p.End-r.Started)
		}
		for _, hd := range r.Holds {
			span = max(span, holdFrom(r)+hd.Hold-r.Started)
		}
		h += rowH(r)
	}
	h += 30
	s := newSVG(h, "group "+g.Name+": the phases of its last rounds")
	s.f(`<g class="round-rows">`)
	a := axis{0, span}
	// The legend.
	x := padL
	for _, name := range phaseNames {
		s.f(`<rect class="phase %s" x="%d" y="6" width="12" height="10"/><text class="legend" x="%d" y="15">%s</text>`, name, x, x+16, name)
		x += 16 + 8*len(name) + 14
	}
	s.f(`<rect class="hold" x="%d" y="9" width="12" height="4"/><text class="legend" x="%d" y="15">a member's write hold (from prepare sent)</text>`, x, x+16)
	y := 30
	for _, r := range rounds {
		s.f(`<g class="round-row %s" data-tag="%s" data-kind="%s" data-outcome="%s"><title>%s %s %s, started %s%s%s</title>`,
			esc(r.Outcome), esc(r.Tag), esc(r.Kind), esc(r.Outcome), esc(r.Tag), esc(r.Kind), esc(r.Outcome), At(r.Started), holdsText(r.Holds), reasonText(r.Reason))
		s.f(`<text class="lane-label" x="%d" y="%d" text-anchor="end">%s</text>`, padL-6, y+9, At(r.Started))
		if len(r.Phases) == 0 {
			s.f(`<text class="lane-label" x="%d" y="%d">no phase times reported</text>`, padL, y+9)
		}
		start, end := float64(padL+plotW), 0.0
		for _, p := range r.Phases {
			from, to := p.Start-r.Started, p.End-r.Started
			x1, x2 := a.x(from), a.x(to)
			cls := "phase " + esc(p.Name)
			if !p.OK {
				cls += " failed"
			}
			s.f(`<rect class="%s" x="%.1f" y="%d" width="%.1f" height="10" data-phase="%s" data-from="%s" data-to="%s" data-ok="%t"><title>%s %s..%s%s</title></rect>`,
				cls, x1, y, max(x2-x1, 1), esc(p.Name), from, to, p.OK, esc(p.Name), from, to, okText(p.OK))
			start, end = min(start, x1), max(end, x2)
		}
		// The outcome after the bars, or before them when they reach the
		// right edge.
		if end+110 < chartW {
			s.f(`<text class="round-outcome" x="%.1f" y="%d">%s %s</text>`, max(end, padL)+4, y+9, esc(r.Kind), esc(r.Outcome))
		} else {
			s.f(`<text class="round-outcome" x="%.1f" y="%d" text-anchor="end">%s %s</text>`, start-4, y+9, esc(r.Kind), esc(r.Outcome))
		}
		hx := a.x(holdFrom(r) - r.Started)
		for i, hd := range r.Holds {
			if hd.Hold < 0 {
				continue
			}
			s.f(`<rect class="hold" x="%.1f" y="%d" width="%.1f" height="4" data-machine="%s" data-hold="%s"><title>%s held writes %s</title></rect>`,
				hx, y+14+6*i, max(a.x(holdFrom(r)-r.Started+hd.Hold)-hx, 1), esc(hd.Machine), hd.Hold, esc(hd.Machine), hd.Hold)
		}
		s.f(`</g>`)
		y += rowH(r)
	}
	// The axis: time since each round's start.
	s.f(`<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, y, padL+plotW, y)
	for _, t := range fineTicks(span) {
		tx := a.x(t)
		s.f(`<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`, tx, 30, tx, y)
		s.f(`<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, tx, y+14, t)
	}
	s.f(`<text class="tick" x="%d" y="%d" text-anchor="end">since the round's start</text>`, padL+plotW, y+28)
	s.f(`</g>`)
	return s.String()
}

func okText(ok bool) string {
	if ok {
		return ", every member acknowledged"
	}
	return ", left without every acknowledgement"
}
