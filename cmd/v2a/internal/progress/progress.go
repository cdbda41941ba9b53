// Package progress shows how far long work has got: a bar per task on a
// terminal (github.com/vbauerster/mpb/v8), and plain lines at a modest
// rate when the output is not a terminal, so a CI log stays readable.
// Progress goes to stderr only; a command's stdout (a trace, a table) is
// the same bytes with and without it.
//
// The generic API is a Counter: a named task with a total, moved on by
// Inc, Add or Set, finished by Done (or Abort). `v2a run`, `demo` and
// `certify` feed a Script from the scenario runner's harness.Progress; a
// command with its own loop (`v2a swarm`: seeds done) makes a Counter:
//
//	p := progress.New(progress.Options{Mode: mode, Err: os.Stderr, Out: os.Stdout})
//	defer p.Close()
//	out := p.Out() // write the command's stdout here
//	seeds := p.Counter("seeds", int64(n))
//	for range n {
//		runOneSeed(out)
//		seeds.Inc()
//	}
//
// Counters are safe for use by several goroutines. Mode none shows
// nothing; plain prints a line for a counter when it passes another tenth
// of its total, at most every Options.Every (10 s) of wall time otherwise,
// and when it ends: `progress: NAME 3/10 (30%)` (its first Set, Inc or
// Add prints its first line).
package progress

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Mode says how progress is shown.
type Mode string

// The modes, as --progress takes them.
const (
	Auto  Mode = "auto"  // bars when Err is a terminal (with a size), else plain
	Bar   Mode = "bar"   // bars, even when Err is not a terminal
	Plain Mode = "plain" // plain lines
	None  Mode = "none"  // nothing
)

// ErrMode is returned by ParseMode for an unknown mode.
var ErrMode = errors.New("progress: unknown mode")

// ParseMode reads a --progress value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, Bar, Plain, None:
		return m, nil
	}
	return "", fmt.Errorf("%w %q: want auto, bar, plain or none", ErrMode, s)
}

// DefaultEvery is the most wall time between two plain lines of a counter
// that moves without passing another tenth.
const DefaultEvery = 10 * time.Second

// barRefresh is how often bars are redrawn.
const barRefresh = 150 * time.Millisecond

// Options configure a Progress.
type Options struct {
	Mode Mode
	// Err is where progress goes (os.Stderr).
	Err io.Writer
	// Out is the command's stdout; write it through Progress.Out.
	Out io.Writer
	// Every is the most wall time between two plain lines of a moving
	// counter (default DefaultEvery).
	Every time.Duration
	// Now is the wall clock for Every (default time.Now); tests fix it.
	Now func() time.Time
	// Width of the bars' lines when Err is not a terminal (default 100).
	Width int
}

// Progress shows counters. Close it when the work ends.
type Progress struct {
	mode  Mode
	err   io.Writer
	out   io.Writer
	every time.Duration
	now   func() time.Time

	// mu guards open and closed, and orders plain lines' writes. Lock
	// order: a Counter's mu, then this one.
	mu     sync.Mutex
	open   []*Counter
	closed bool

	bars    *mpb.Progress // bar mode
	refresh chan any
	stop    chan struct{}
	ticker  sync.WaitGroup
}

// New starts showing progress as o says. In Auto mode it shows bars when
// Err is a terminal (an *os.File on a TTY that has a size), else plain
// lines.
func New(o Options) *Progress {
	p := &Progress{mode: o.Mode, err: o.Err, out: o.Out, every: o.Every, now: o.Now}
	if p.err == nil {
		p.err = io.Discard
	}
	if p.out == nil {
		p.out = io.Discard
	}
	if p.every <= 0 {
		p.every = DefaultEvery
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.mode == "" || p.mode == Auto {
		p.mode = Plain
		if drawable(p.err) {
			p.mode = Bar
		}
	}
	if p.mode == Bar {
		p.refresh, p.stop = make(chan any), make(chan struct{})
		p.bars = mpb.New(mpb.WithOutput(p.err), mpb.ForceTTY(), mpb.WithWidth(cmpOr(o.Width, 100)), mpb.WithManualRefresh(p.refresh))
		p.ticker.Add(1)
		go p.tick()
	}
	return p
}

func cmpOr(a, b int) int {
	if a > 0 {
		return a
	}
	return b
}

// Mode is the mode in use (Auto resolved).
func (p *Progress) Mode() Mode { return p.mode }

// drawable: w is a terminal with a size (a pseudo-terminal some CI
// runners give has none, and bars there would draw nothing).
func drawable(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	cols, rows, err := term.GetSize(int(f.Fd()))
	return err == nil && cols > 0 && rows > 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// tick redraws the bars until Close.
func (p *Progress) tick() {
	defer p.ticker.Done()
	t := time.NewTicker(barRefresh)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.refresh <- nil
		}
	}
}

// Out is where the command writes its stdout. It is Options.Out itself,
// except with bars when Out and Err are both terminals (the same screen):
// then its lines are printed above the bars, not through them.
func (p *Progress) Out() io.Writer {
	if p.bars != nil && isTerminal(p.out) {
		return p.bars
	}
	return p.out
}

// Close ends every counter still open (as Abort does) and, with bars,
// draws them a last time. Counters used after Close do nothing.
func (p *Progress) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	open := append([]*Counter(nil), p.open...)
	p.mu.Unlock()
	for _, c := range open {
		c.Abort()
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.bars != nil {
		close(p.stop)
		p.ticker.Wait()
		// A last redraw prints what was written to Out since the one
		// before: mpb holds it until a redraw, and Wait alone drops it.
		p.refresh <- nil
		p.bars.Wait()
	}
}

// Unit is what a counter counts, for its numbers.
type Unit int

// The units.
const (
	Count    Unit = iota // things: 3/10
	Bytes                // 12.0 MiB/64.0 MiB
	Duration             // nanoseconds of (virtual) time: 12m0s/30m0s
)

func (u Unit) format(n int64) string {
	switch u {
	case Bytes:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case Duration:
		return time.Duration(n).Round(time.Second).String()
	}
	return fmt.Sprint(n)
}

// CounterOption configures a counter.
type CounterOption func(*Counter)

// WithUnit makes a counter count u (default Count).
func WithUnit(u Unit) CounterOption { return func(c *Counter) { c.unit = u } }

// Transient makes a counter's bar vanish when it ends (a step among
// many); plain lines are the same.
func Transient() CounterOption { return func(c *Counter) { c.transient = true } }

// Counter is one task's progress: Current of Total.
type Counter struct {
	p         *Progress
	name      string
	unit      Unit
	transient bool

	mu        sync.Mutex
	total     int64
	current   int64
	ended     bool
	lastTenth int64 // the tenth of the total the last plain line showed; -1 before
	lastLine  time.Time
	lineAt    int64 // current at the last plain line
	bar       *mpb.Bar
}

// Counter starts a task named name with total steps (a total of 0 or
// less is unknown: the counter shows its current value alone).
func (p *Progress) Counter(name string, total int64, opts ...CounterOption) *Counter {
	c := &Counter{p: p, name: name, total: max(total, 0), lastTenth: -1}
	for _, o := range opts {
		o(c)
	}
	p.mu.Lock()
	if p.closed || p.mode == None {
		p.mu.Unlock()
		c.ended = true
		return c
	}
	p.open = append(p.open, c)
	p.mu.Unlock()
	switch p.mode {
	case Bar:
		var bo []mpb.BarOption
		if c.transient {
			bo = append(bo, mpb.BarRemoveOnComplete())
		}
		bo = append(bo,
			mpb.PrependDecorators(decor.Name(name, decor.WC{W: 28, C: decor.DindentRight | decor.DextraSpace})),
			mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string {
				return c.unit.format(s.Current) + "/" + c.unit.format(s.Total)
			}, decor.WC{W: 24}), decor.Percentage(decor.WC{W: 6})))
		c.bar = p.bars.AddBar(c.total, bo...)
	}
	return c
}

// Name is the counter's name.
func (c *Counter) Name() string { return c.name }

// Inc adds one.
func (c *Counter) Inc() { c.Add(1) }

// Add adds n.
func (c *Counter) Add(n int64) {
	c.mu.Lock()
	v := c.current + n
	c.mu.Unlock()
	c.Set(v)
}

// Set moves the counter to n (negative n counts as 0). A counter that
// reaches its total ends, as Done.
func (c *Counter) Set(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.current = max(n, 0)
	if c.total > 0 && c.current >= c.total {
		c.current = c.total
		c.end(false)
		return
	}
	switch {
	case c.bar != nil:
		c.bar.SetCurrent(c.current)
	case c.p.mode == Plain:
		c.plainLine(false)
	}
}

// SetTotal changes the total (the work turned out larger or smaller); a
// counter already at the new total ends, as Done. It prints no line of
// its own: the next move shows the new total.
func (c *Counter) SetTotal(total int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	total = max(total, 0)
	if c.ended || total == c.total {
		return
	}
	c.total = total
	if c.total > 0 && c.current >= c.total {
		c.current = c.total
		c.end(false)
		return
	}
	if c.bar != nil {
		c.bar.SetTotal(c.total, false)
	}
}

// Done ends the counter where it stands: the task is finished, maybe
// short of its total (a wait whose goal came before its limit).
func (c *Counter) Done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.end(false)
	}
}

// Abort ends the counter as stopped before it finished (an interrupted
// run): its bar stays where it was.
func (c *Counter) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.end(true)
	}
}

// end finishes the counter; c.mu is held.
func (c *Counter) end(aborted bool) {
	c.ended = true
	switch {
	case c.bar != nil && aborted:
		c.bar.Abort(c.transient)
	case c.bar != nil:
		c.bar.SetCurrent(c.current)
		c.bar.SetTotal(-1, true) // complete at current
	case c.p.mode == Plain:
		c.plainEnd(aborted)
	}
	p := c.p
	p.mu.Lock()
	for i, o := range p.open {
		if o == c {
			p.open = append(p.open[:i], p.open[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
}

// tenth is how many tenths of the total current is (-1: no total).
func (c *Counter) tenth() int64 {
	if c.total <= 0 {
		return -1
	}
	return c.current * 10 / c.total
}

func (c *Counter) status() string {
	if c.total <= 0 && c.current == 0 {
		return "started" // nothing known yet
	}
	if c.total <= 0 {
		return c.unit.format(c.current)
	}
	return fmt.Sprintf("%s/%s (%d%%)", c.unit.format(c.current), c.unit.format(c.total), c.current*100/c.total)
}

// plainLine prints a line when the counter passed another tenth, or when
// it moved and Every has passed since the last line; c.mu is held.
func (c *Counter) plainLine(force bool) {
	now := c.p.now()
	t := c.tenth()
	moved := c.current != c.lineAt && now.Sub(c.lastLine) >= c.p.every
	if !force && t <= c.lastTenth && !moved && !c.lastLine.IsZero() {
		return
	}
	c.lastTenth, c.lastLine, c.lineAt = max(t, c.lastTenth), now, c.current
	c.p.writeLine(fmt.Sprintf("progress: %s %s\n", c.name, c.status()))
}

// plainEnd prints a counter's last line; c.mu is held.
func (c *Counter) plainEnd(aborted bool) {
	switch {
	case aborted:
		c.p.writeLine(fmt.Sprintf("progress: %s stopped at %s\n", c.name, c.status()))
	case c.total > 0 && c.current < c.total:
		c.p.writeLine(fmt.Sprintf("progress: %s done at %s of %s\n", c.name, c.unit.format(c.current), c.unit.format(c.total)))
	case c.total <= 0 && c.current == 0:
		c.p.writeLine(fmt.Sprintf("progress: %s done\n", c.name))
	case c.total <= 0:
		c.p.writeLine(fmt.Sprintf("progress: %s done at %s\n", c.name, c.unit.format(c.current)))
	default:
		c.p.writeLine(fmt.Sprintf("progress: %s %s\n", c.name, c.status()))
	}
}

func (p *Progress) writeLine(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.err, s)
}
