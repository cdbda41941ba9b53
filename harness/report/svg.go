package report

import (
	"fmt"
	"html"
	"strings"
	"time"
)

// The charts are hand-drawn SVG: a fixed width, a time axis in virtual
// time, classes the stylesheet colours, and data- attributes that say
// what each mark is (the tests read them back).

const (
	chartW = 960 // px
	padL   = 70  // left margin: the y labels
	padR   = 20
	plotW  = chartW - padL - padR
)

// axis maps virtual time onto x.
type axis struct{ from, to time.Duration }

func (a axis) x(t time.Duration) float64 {
	span := a.to - a.from
	if span <= 0 {
		return padL
	}
	if t < a.from {
		t = a.from
	}
	if t > a.to {
		t = a.to
	}
	return padL + float64(t-a.from)/float64(span)*plotW
}

// niceSteps are the tick intervals an axis picks from.
var niceSteps = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	48 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour,
}

// ticks are at most ~10 round times in [from, to].
func (a axis) ticks() []time.Duration {
	span := a.to - a.from
	step := niceSteps[len(niceSteps)-1]
	for _, s := range niceSteps {
		if span/s <= 10 {
			step = s
			break
		}
	}
	var out []time.Duration
	for t := (a.from + step - 1) / step * step; t <= a.to; t += step {
		out = append(out, t)
	}
	return out
}

// Dur formats a duration as the harness's views do: rounded to the second.
func Dur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

// short is a tick label: "1h30m", "5m", "45s".
func short(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// At formats a virtual time as the trace does: +hh:mm:ss.
func At(d time.Duration) string {
	d = d.Round(time.Second)
	h := d / time.Hour
	m := (d % time.Hour) / time.Minute
	s := (d % time.Minute) / time.Second
	return fmt.Sprintf("+%02d:%02d:%02d", h, m, s)
}

func esc(s string) string { return html.EscapeString(s) }

type svg struct {
	b strings.Builder
	h int
}

func newSVG(h int, label string) *svg {
	s := &svg{h: h}
	fmt.Fprintf(&s.b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`, chartW, h, chartW, h, esc(label))
	return s
}

func (s *svg) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

func (s *svg) String() string { return s.b.String() + "</svg>" }

// timeAxis draws the x axis at y with its ticks and, when grid, the
// vertical grid lines up to top.
func (s *svg) timeAxis(a axis, y, top int) {
	s.f(`<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, padL, y, padL+plotW, y)
	for _, t := range a.ticks() {
		x := a.x(t)
		s.f(`<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`, x, top, x, y)
		s.f(`<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, y+14, esc(short(t)))
	}
}
