package sched

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// Trace is a run's event trace: one line per event, virtual time first, no
// wall-clock values. Its SHA-256 is the run's fingerprint: the same scenario
// and seed must give the same hash.
type Trace struct {
	watch []watch
	h     hash.Hash
	out   io.Writer // optional live copy
	show  func(kind string) bool
	lines []string
	keep  bool
	n     int
}

// NewTrace returns a trace that keeps its lines in memory and, if out is not
// nil, also writes each line to out as it happens.
func NewTrace(out io.Writer) *Trace {
	return &Trace{h: sha256.New(), out: out, keep: true}
}

type watch struct {
	who, substr string
	fn          func()
}

// HashOnly stops the trace keeping its lines (Lines then returns only those
// kept before): the hash, the count, the watches and the live copy go on. A
// day-long world writes millions of lines, and keeping them all costs
// memory and the garbage collector's time.
func (t *Trace) HashOnly() { t.keep = false }

// OnLine calls fn once, from the first line added after this call whose
// actor starts with who ("" matches any) and whose text contains substr.
// fn runs inside Add: it must only schedule work (sched.Sim.After), not do
// it, since an actor may be in the middle of handling an event.
func (t *Trace) OnLine(who, substr string, fn func()) {
	t.watch = append(t.watch, watch{who, substr, fn})
}

// SetFilter limits the live copy to events whose kind show accepts (the
// hash and the kept lines always have everything). Kinds are the second
// word after the actor: "log", "warn", "recv", "timer", "write", ...
func (t *Trace) SetFilter(show func(kind string) bool) { t.show = show }

// Add records one event.
func (t *Trace) Add(at time.Duration, who, kind, detail string) {
	line := FormatElapsed(at) + " " + who + " " + kind
	if detail != "" {
		line += " " + detail
	}
	t.add(line, kind)
	for i := 0; i < len(t.watch); i++ {
		w := t.watch[i]
		if strings.HasPrefix(who, w.who) && strings.Contains(line, w.substr) {
			t.watch = append(t.watch[:i], t.watch[i+1:]...)
			i--
			w.fn()
		}
	}
}

// AddLine records a preformatted line (it must start with the virtual time).
func (t *Trace) AddLine(line string) { t.add(line, "") }

func (t *Trace) add(line, kind string) {
	t.h.Write([]byte(line))
	t.h.Write([]byte{'\n'})
	t.n++
	if t.keep {
		t.lines = append(t.lines, line)
	}
	if t.out != nil && (t.show == nil || t.show(kind)) {
		fmt.Fprintln(t.out, line)
	}
}

// Len is the number of lines so far.
func (t *Trace) Len() int { return t.n }

// Lines returns the lines from index from on.
func (t *Trace) Lines(from int) []string {
	if from >= len(t.lines) {
		return nil
	}
	return t.lines[from:]
}

// Sum is the hex SHA-256 of every line so far, each ending in '\n'.
func (t *Trace) Sum() string {
	return hex.EncodeToString(t.h.Sum(nil))
}

// FormatElapsed prints virtual time as +HH:MM:SS.mmmuuu, fixed width up to
// 99 hours, so that traces sort and diff cleanly.
func FormatElapsed(d time.Duration) string {
	us := d.Microseconds()
	h := us / 3_600_000_000
	us -= h * 3_600_000_000
	m := us / 60_000_000
	us -= m * 60_000_000
	sec := us / 1_000_000
	us -= sec * 1_000_000
	return fmt.Sprintf("+%02d:%02d:%02d.%06d", h, m, sec, us)
}

// traceHandler turns an actor's log records into trace lines stamped with
// virtual time. Attributes keep the order the actor gave them, so a
// deterministic actor writes a deterministic trace.
type traceHandler struct {
	sim    *Sim
	actor  runtime.Addr
	attrs  []slog.Attr
	groups []string
}

func (h *traceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *traceHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		if a.Equal(slog.Attr{}) {
			return true
		}
		b.WriteByte(' ')
		for _, g := range h.groups {
			b.WriteString(g)
			b.WriteByte('.')
		}
		b.WriteString(a.Key)
		b.WriteByte('=')
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " =\"") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		b.WriteString(v)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	kind := "log"
	if r.Level >= slog.LevelWarn {
		kind = strings.ToLower(r.Level.String())
	}
	h.sim.trace.Add(h.sim.Elapsed(), string(h.actor), kind, b.String())
	return nil
}

func (h *traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}
