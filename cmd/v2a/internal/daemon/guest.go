package daemon

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/sim/disk"
	"github.com/v2a-dr/v2a/sim/workload"
)

// guest is a protected machine as its agent daemon sees it (agent.Guest):
// disk image files written by an optional workload through the filter
// driver the agent installs. The workload runs on its own goroutine; mu
// serialises everything that touches the machine (its writes, a freeze,
// the release of held writes), as the guest kernel's I/O path would.
type guest struct {
	log *slog.Logger

	mu       sync.Mutex
	m        *disk.Machine
	filter   *agent.Filter
	wl       workload.Workload
	hist     *history
	attached chan struct{} // closed by the first Attach
	once     sync.Once
	err      error // the workload's first failure

	running bool // run was started
	stop    chan struct{}
	done    chan struct{}
	kick    chan struct{} // a held write was acknowledged
}

// openGuest opens (creating when missing) the machine's disk images and
// builds its workload (kind "" runs none).
func openGuest(log *slog.Logger, name string, paths []string, sizeBytes int64, kind string, rate float64, historyPath string) (*guest, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			if err := disk.Create(p, sizeBytes); err != nil {
				return nil, err
			}
		}
	}
	start := time.Now()
	m, err := disk.Open(name, paths, func() time.Duration { return time.Since(start) })
	if err != nil {
		return nil, err
	}
	g := &guest{log: log, m: m, attached: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
	switch kind {
	case "":
	case "orders":
		m.Close()
		return nil, fmt.Errorf("workload orders spans three machines (an order flow between them); one agent process runs a one-machine workload: bank, fs, random or idle")
	}
	if g.hist, err = openHistory(historyPath, name); err != nil {
		m.Close()
		return nil, err
	}
	if kind != "" {
		spec := workload.Spec{Kind: kind, TxPerSec: rate, ChurnBps: int64(rate)}
		if g.wl, err = workload.New(spec, recWriter{m: m, hist: g.hist, err: &g.err}); err != nil {
			g.hist.close()
			m.Close()
			return nil, err
		}
	}
	return g, nil
}

// Disks implements agent.Guest.
func (g *guest) Disks() []blockdev.Device {
	out := make([]blockdev.Device, g.m.Disks())
	for i := range out {
		out[i] = g.m.Device(i)
	}
	return out
}

// Filter implements agent.Guest.
func (g *guest) Filter() *agent.Filter {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.filter
}

// Attach implements agent.Guest: from now on every guest write is captured.
func (g *guest) Attach(f *agent.Filter) {
	g.mu.Lock()
	g.filter = f
	g.m.SetFilter(gateFilter{f: f, g: g})
	g.mu.Unlock()
	g.once.Do(func() { close(g.attached) })
}

// Freeze implements agent.Guest: the application flushes and stops writing.
func (g *guest) Freeze() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wl == nil {
		return nil
	}
	return g.m.Flushing(g.wl.Freeze)
}

// Thaw implements agent.Guest.
func (g *guest) Thaw() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wl != nil {
		g.wl.Thaw()
	}
}

// gateFilter is the filter as the machine's write path sees it. Its release
// hook resumes held writes on another goroutine: the gate may release from
// the agent's goroutine while the write path waits for the filter.
type gateFilter struct {
	f *agent.Filter
	g *guest
}

func (gf gateFilter) Capture(d int, off int64, data []byte) uint64 { return gf.f.Capture(d, off, data) }
func (gf gateFilter) Admit() bool                                  { return gf.f.Admit() }
func (gf gateFilter) SetReleaseHook(fn func()) {
	if fn == nil {
		gf.f.SetReleaseHook(nil)
		return
	}
	gf.f.SetReleaseHook(func() {
		go func() {
			gf.g.mu.Lock()
			defer gf.g.mu.Unlock()
			fn()
		}()
	})
}

// holdCheck is how often the filter driver's own timer looks for a hold
// past its deadline.
const holdCheck = 200 * time.Millisecond

// start starts the guest's goroutine (run).
func (g *guest) start(seed uint64) {
	g.running = true
	go g.run(seed)
}

// run is the guest's goroutine: once the agent has attached the filter
// (writes before it would go untracked), the workload steps at the times it
// asks for; the driver's hold timer runs throughout. It returns when stop
// closes.
func (g *guest) run(seed uint64) {
	defer close(g.done)
	select {
	case <-g.attached:
	case <-g.stop:
		return
	}
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	if b, ok := g.wl.(workload.Blocker); ok {
		b.SetUnblock(func() {
			select {
			case g.kick <- struct{}{}:
			default:
			}
		})
	}
	hold := time.NewTicker(holdCheck)
	defer hold.Stop()
	step := time.NewTimer(0)
	defer step.Stop()
	if g.wl == nil {
		step.Stop()
	}
	// waiting: the last step left the workload blocked on a held write; it
	// steps on after next once that write is acknowledged (kick).
	var waiting bool
	var next time.Duration
	for {
		select {
		case <-g.stop:
			return
		case <-hold.C:
			g.expireHold()
		case <-g.kick:
			// A kick of a write acknowledged at once (most are), or of
			// one acknowledged before the workload blocked again, changes
			// nothing.
			if waiting && !g.blocked() {
				waiting = false
				step.Reset(next)
			}
		case <-step.C:
			n, blocked, err := g.step(r)
			if err != nil {
				g.log.Error("guest: workload failed; it stops writing", "machine", g.m.Name, "err", err)
				g.mu.Lock()
				if g.err == nil {
					g.err = err
				}
				g.mu.Unlock()
				continue
			}
			next = n
			if blocked {
				// The write may have been released between the step and
				// now: its kick is then waiting in the channel.
				waiting = true
				continue
			}
			step.Reset(next)
		}
	}
}

// step runs one workload step under the machine's lock.
func (g *guest) step(r *rand.Rand) (next time.Duration, blocked bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0, true, nil // failed before: write nothing more
	}
	next, err = g.wl.Step(r)
	if err == nil {
		err = g.err
	}
	if ferr := g.hist.flush(); err == nil {
		err = ferr
	}
	if b, ok := g.wl.(workload.Blocker); ok && b.Blocked() {
		blocked = true
	}
	return next, blocked, err
}

// blocked says whether the workload waits for a held write.
func (g *guest) blocked() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.wl.(workload.Blocker)
	return ok && b.Blocked()
}

func (g *guest) expireHold() {
	f := g.Filter()
	if f == nil {
		return
	}
	tag, ok, err := f.Expire(time.Now())
	switch {
	case err != nil:
		g.log.Error("guest: hold past its deadline, revoke failed; still holding", "err", err)
	case ok:
		g.log.Warn("guest: filter released writes at its own deadline", "revoked", tag)
	}
}

// close stops the workload (no write after it returns), writes out the
// history, and closes the disks. The filter is the agent's: the caller
// closes it after the runtime stopped.
func (g *guest) close() error {
	close(g.stop)
	if g.running {
		<-g.done
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.hist.close()
	g.m.Close()
	return err
}

// Written is what the guest's workload wrote so far.
func (g *guest) Written() (bytes, writes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m.Written()
}

// HistoryRecord is one acknowledged guest write in a machine's history
// file (JSON lines): enough for a checker to rebuild the write order and
// every block's content after each write (sim/disk's Oracle digests).
type HistoryRecord struct {
	Boot int64  `json:"boot"` // the agent process's start (a new boot restarts K at 1)
	K    uint64 `json:"k"`    // 1-based position in this boot's write order
	Seq  uint64 `json:"seq"`  // the change log's sequence number (0: untracked)
	Disk int    `json:"disk"`
	Off  int64  `json:"off"`
	Len  int    `json:"len"`
	// AtUnixNano is when it was acknowledged.
	AtUnixNano int64 `json:"at"`
	// Blocks are the hex digests (SHA-256, first 16 bytes) of the 4 KiB
	// blocks the write touched, in order, as they were right after it.
	Blocks []string `json:"blocks"`
}

// history appends a machine's acknowledged writes to its file.
type history struct {
	f      *os.File
	w      *bufio.Writer
	boot   int64
	next   int // writes of the oracle already written out
	origin time.Time
	buf    []byte
}

func openHistory(path, machine string) (*history, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", machine, err)
	}
	// The boot number continues the file's last one.
	var boot int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r HistoryRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			boot = max(boot, r.Boot)
		}
	}
	return &history{f: f, w: bufio.NewWriter(f), boot: boot + 1, origin: time.Now(), buf: make([]byte, blockdev.BlockSize)}, nil
}

// record writes out the machine's write k, just acknowledged: the caller
// holds the machine's lock and no other write happened since, so the
// blocks read back are as that write left them.
func (h *history) record(m *disk.Machine, k uint64) error {
	ws := m.Oracle().Writes()
	if k == 0 || k > uint64(len(ws)) {
		return fmt.Errorf("history: write %d of %d acknowledged", k, len(ws))
	}
	w := ws[k-1]
	rec := HistoryRecord{Boot: h.boot, K: w.K, Seq: w.Seq, Disk: w.Disk, Off: w.Off, Len: w.Len,
		AtUnixNano: h.origin.Add(w.At).UnixNano()}
	for b := w.Off / blockdev.BlockSize; b*blockdev.BlockSize < w.Off+int64(w.Len); b++ {
		if err := m.Read(w.Disk, b*blockdev.BlockSize, h.buf); err != nil {
			return fmt.Errorf("history: read back disk %d block %d: %w", w.Disk, b, err)
		}
		s := sha256.Sum256(h.buf)
		rec.Blocks = append(rec.Blocks, hex.EncodeToString(s[:16]))
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = h.w.Write(append(line, '\n'))
	return err
}

// flush writes the buffered records to the file.
func (h *history) flush() error { return h.w.Flush() }

// recWriter is the workload's view of the machine: every acknowledged
// write is recorded in the history as it is acknowledged.
type recWriter struct {
	m    *disk.Machine
	hist *history
	err  *error
}

func (w recWriter) Size(d int) int64 { return w.m.Size(d) }
func (w recWriter) Disks() int       { return w.m.Disks() }
func (w recWriter) Submit(d int, off int64, data []byte, done func(k uint64, err error)) {
	w.m.Submit(d, off, data, func(k uint64, err error) {
		if err == nil {
			if herr := w.hist.record(w.m, k); herr != nil && *w.err == nil {
				*w.err = herr
			}
		}
		if done != nil {
			done(k, err)
		}
	})
}

func (h *history) close() error {
	if err := h.w.Flush(); err != nil {
		h.f.Close()
		return err
	}
	if err := h.f.Sync(); err != nil {
		h.f.Close()
		return err
	}
	return h.f.Close()
}
