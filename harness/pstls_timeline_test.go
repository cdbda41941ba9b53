package harness

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// putLog is a blob.Store that records when each Put began and ended, so
// that the benchmark can tell how busy it kept the storage: the mean
// number of uploads in flight over a leg, and how long fewer than the
// pipeline's width were.
type putLog struct {
	blob.Store
	mu    sync.Mutex
	spans []putSpan
}

// putSpan is one Put: its blob name, and when it began and returned.
type putSpan struct {
	name       string
	start, end time.Time
}

func (p *putLog) Put(ctx context.Context, container, name string, data []byte, opts blob.WriteOptions) (string, error) {
	t0 := time.Now()
	etag, err := p.Store.Put(ctx, container, name, data, opts)
	t1 := time.Now()
	p.mu.Lock()
	p.spans = append(p.spans, putSpan{name: name, start: t0, end: t1})
	p.mu.Unlock()
	return etag, err
}

// take returns the spans recorded since the last take, and forgets them.
func (p *putLog) take() []putSpan {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.spans
	p.spans = nil
	return s
}

// occupancy is how busy spans kept the storage over [from, to]: the mean
// number of Puts in flight, and the share of the time fewer than width
// were.
func occupancy(spans []putSpan, from, to time.Time, width int) (mean, under float64) {
	if !to.After(from) {
		return 0, 0
	}
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, s := range spans {
		a, b := maxTime(s.start, from), minTime(s.end, to)
		if b.After(a) {
			es = append(es, edge{a, 1}, edge{b, -1})
		}
	}
	slices.SortFunc(es, func(x, y edge) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.d - y.d // ends before starts at the same instant
	})
	var area, short time.Duration
	n, at := 0, from
	for _, e := range es {
		dt := e.at.Sub(at)
		area += time.Duration(n) * dt
		if n < width {
			short += dt
		}
		n, at = n+e.d, e.at
	}
	if n < width {
		short += to.Sub(at)
	}
	total := to.Sub(from)
	return float64(area) / float64(total), float64(short) / float64(total)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// writeTimeline writes a leg of the process server benchmark as a table
// (V2A_BENCH_PS_TIMELINE): per item, in milliseconds from the leg's start,
// when it was acknowledged to the agent and when its upload began and
// ended.
func writeTimeline(b *testing.B, path string, leg psLeg, spans []putSpan) {
	b.Helper()
	put := map[string]putSpan{}
	for _, s := range spans {
		put[s.name] = s
	}
	ms := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return strconv.FormatFloat(float64(t.Sub(leg.start))/1e6, 'f', 2, 64)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "seq\tacked_ms\tput_start_ms\tput_end_ms\n")
	for i, at := range leg.ackedAt {
		p := put[proto.CacheBlobName(psBenchMachine, uint64(i+1))]
		fmt.Fprintf(&buf, "%d\t%s\t%s\t%s\n", i+1, ms(at), ms(p.start), ms(p.end))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
}

// schedTimes is how long a thread ran on a CPU and how long it waited,
// runnable, for one (/proc/PID/schedstat): for Azurite's main thread,
// where its JavaScript runs, the part of a leg it was busy, the part it was
// kept from a CPU by the load (v2a's included), and the rest, idle for
// want of a request.
type schedTimes struct{ run, wait time.Duration }

func (s schedTimes) add(o schedTimes) schedTimes { return schedTimes{s.run + o.run, s.wait + o.wait} }
func (s schedTimes) sub(o schedTimes) schedTimes { return schedTimes{s.run - o.run, s.wait - o.wait} }

// readSched reads the schedstat of the process pid's main thread; zero
// when there is none to read (pid 0, or a kernel without schedstats).
func readSched(pid int) schedTimes {
	if pid == 0 {
		return schedTimes{}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return schedTimes{}
	}
	var run, wait int64
	if _, err := fmt.Sscan(string(b), &run, &wait); err != nil {
		return schedTimes{}
	}
	return schedTimes{time.Duration(run), time.Duration(wait)}
}

// occupancy's mean is the time-weighted count of spans in flight, clipped
// to the window; under is the share of the window with fewer than width.
func TestOccupancy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	span := func(a, b int) putSpan { return putSpan{start: at(a), end: at(b)} }
	for _, tc := range []struct {
		name        string
		spans       []putSpan
		from, to    int
		width       int
		mean, under float64
	}{
		{"none", nil, 0, 100, 1, 0, 1},
		{"one all along", []putSpan{span(0, 100)}, 0, 100, 1, 1, 0},
		{"two halves", []putSpan{span(0, 50), span(50, 100)}, 0, 100, 1, 1, 0},
		{"two overlapping", []putSpan{span(0, 100), span(50, 100)}, 0, 100, 2, 1.5, 0.5},
		{"clipped to the window", []putSpan{span(-50, 50), span(90, 200)}, 0, 100, 1, 0.6, 0.4},
		{"empty window", []putSpan{span(0, 100)}, 50, 50, 1, 0, 0},
	} {
		mean, under := occupancy(tc.spans, at(tc.from), at(tc.to), tc.width)
		if math.Abs(mean-tc.mean) > 1e-9 || math.Abs(under-tc.under) > 1e-9 {
			t.Errorf("%s: occupancy = %.3f, %.3f; want %.3f, %.3f", tc.name, mean, under, tc.mean, tc.under)
		}
	}
}
