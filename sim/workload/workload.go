// Package workload drives simulated guests: seeded write patterns that run on
// a machine's disks in virtual time, and the invariant checks that tell a
// usable recovered image from a corrupt one.
package workload

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/sim/disk"
)

// Writer is what a workload writes through: a guest machine
// (disk.Machine). Submit calls done when the write is acknowledged: at once,
// or later if the machine's filter holds writes.
type Writer interface {
	Submit(disk int, off int64, data []byte, done func(k uint64, err error))
	Size(disk int) int64
	Disks() int
}

// Blocker is a workload that waits for a held write before its next step.
// The driver gives it an unblock function to call when the write is
// acknowledged.
type Blocker interface {
	Blocked() bool
	SetUnblock(func())
}

// Workload is a guest application. Step does the next piece of work at the
// current virtual time and says how long until the following one.
type Workload interface {
	Name() string
	Step(r *rand.Rand) (next time.Duration, err error)
	// Freeze brings the application to a consistent state on disk (flushes,
	// finishes what is in flight) and stops it writing, as a VSS writer does
	// for an app-consistent snapshot. Thaw lets it go on.
	Freeze() error
	Thaw()
	// Check runs the application's own recovery on a disk image (read-only:
	// the replay happens in memory) and its invariant on the result. With
	// clean set, the image must be consistent without any replay, as an
	// app-consistent image is.
	Check(images []io.ReaderAt, clean bool) (Report, error)
}

// Report is what a check found, for traces and tables.
type Report struct {
	Formatted bool   // false: the application had not written its store yet
	Replayed  int    // log records recovery had to replay
	Summary   string // e.g. "accounts=2048 total=204800000"
}

// Spec names a workload and its parameters, as fixtures and scenario
// scripts give them.
type Spec struct {
	Kind        string  // "random", "bank", "fs" or "idle"
	ChurnBps    int64   // random: bytes written per second
	TxPerSec    float64 // bank: transactions per second; fs: operations per second
	Disk        int     // which disk it writes
	RegionStart int64   // first byte of the region it owns
	RegionLen   int64   // 0: to the end of the disk
}

// New builds a workload on w from spec.
func New(spec Spec, w Writer) (Workload, error) {
	if spec.Disk < 0 || spec.Disk >= w.Disks() {
		return nil, fmt.Errorf("workload: %s: no disk %d (machine has %d)", spec.Kind, spec.Disk, w.Disks())
	}
	size := w.Size(spec.Disk)
	if spec.RegionLen == 0 {
		spec.RegionLen = size - spec.RegionStart
	}
	if spec.RegionStart < 0 || spec.RegionStart%4096 != 0 || spec.RegionLen <= 0 || spec.RegionStart+spec.RegionLen > size {
		return nil, fmt.Errorf("workload: %s: region [%d, +%d) does not fit disk %d of %d bytes", spec.Kind, spec.RegionStart, spec.RegionLen, spec.Disk, size)
	}
	switch spec.Kind {
	case "random":
		if spec.ChurnBps <= 0 {
			return nil, fmt.Errorf("workload: random: churn must be positive, got %d bytes/s", spec.ChurnBps)
		}
		return &Random{w: w, spec: spec}, nil
	case "bank":
		if spec.TxPerSec <= 0 {
			spec.TxPerSec = 2
		}
		return NewBank(w, spec)
	case "fs":
		if spec.TxPerSec <= 0 {
			spec.TxPerSec = 2
		}
		return NewFS(w, spec)
	case "idle":
		return idle{}, nil
	default:
		return nil, fmt.Errorf("workload: unknown kind %q (want random, bank, fs or idle)", spec.Kind)
	}
}

// Driver runs workloads on a scheduler: each machine's workload steps at the
// times it asks for, with its own random stream.
type Driver struct {
	after   func(d time.Duration, name string, fn func())
	running map[string]*run
}

type run struct {
	wl      Workload
	r       *rand.Rand
	stopped bool
	paused  bool
	idle    bool // paused or blocked with no step scheduled
	next    time.Duration
	err     error
	steps   int64
	step    func()
}

// NewDriver returns a driver that schedules with after (sched.Sim.After).
func NewDriver(after func(d time.Duration, name string, fn func())) *Driver {
	return &Driver{after: after, running: map[string]*run{}}
}

// Start runs wl for the machine name, first step after d.
func (d *Driver) Start(name string, wl Workload, r *rand.Rand, first time.Duration) {
	rn := &run{wl: wl, r: r}
	d.running[name] = rn
	var step func()
	step = func() {
		if rn.stopped || rn.err != nil {
			return
		}
		if rn.paused {
			rn.idle = true
			return
		}
		next, err := rn.wl.Step(rn.r)
		rn.steps++
		if err != nil {
			rn.err = fmt.Errorf("workload %s on %s: %w", wl.Name(), name, err)
			return
		}
		if b, ok := rn.wl.(Blocker); ok && b.Blocked() {
			// A write is held: the application waits for it.
			rn.idle, rn.next = true, next
			return
		}
		d.after(next, "workload/"+name, step)
	}
	rn.step = step
	if b, ok := wl.(Blocker); ok {
		b.SetUnblock(func() {
			if rn.idle && !rn.paused && !rn.stopped {
				rn.idle = false
				d.after(rn.next, "workload/"+name, step)
			}
		})
	}
	d.after(first, "workload/"+name, step)
}

// Pause stops the machine's workload (its machine crashed) until Resume.
func (d *Driver) Pause(name string) {
	if rn := d.running[name]; rn != nil {
		rn.paused = true
	}
}

// Resume lets a paused workload go on from now.
func (d *Driver) Resume(name string) {
	rn := d.running[name]
	if rn == nil || !rn.paused {
		return
	}
	rn.paused = false
	if rn.idle {
		rn.idle = false
		d.after(0, "workload/"+name, rn.step)
	}
}

// Stop stops the machine's workload after its current step.
func (d *Driver) Stop(name string) {
	if rn := d.running[name]; rn != nil {
		rn.stopped = true
	}
}

// Running returns the machine's workload if it runs (started, not
// stopped; a paused one runs: its machine crashed and it goes on once the
// machine is back), or nil. A stopped workload's application is gone from
// the guest (its machine was powered off): there is nothing to quiesce,
// and its memory is a past incarnation's.
func (d *Driver) Running(name string) Workload {
	if rn := d.running[name]; rn != nil && !rn.stopped {
		return rn.wl
	}
	return nil
}

// Workload returns the machine's workload, or nil.
func (d *Driver) Workload(name string) Workload {
	if rn := d.running[name]; rn != nil {
		return rn.wl
	}
	return nil
}

// Err reports the first workload failure, by machine name order.
func (d *Driver) Err() error {
	names := make([]string, 0, len(d.running))
	for n := range d.running {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := d.running[n].err; err != nil {
			return err
		}
	}
	return nil
}

// Random writes uniformly over its region at a given churn: blocks of 4 to
// 64 KiB of realistic data at 4 KiB-aligned offsets.
type Random struct {
	w       Writer
	spec    Spec
	frozen  bool
	buf     []byte
	blocked bool
	unblock func()
	err     error
}

// Blocked implements Blocker.
func (wl *Random) Blocked() bool { return wl.blocked }

// SetUnblock implements Blocker.
func (wl *Random) SetUnblock(f func()) { wl.unblock = f }

// Name implements Workload.
func (*Random) Name() string { return "random" }

// Step implements Workload.
func (wl *Random) Step(r *rand.Rand) (time.Duration, error) {
	n := int64(4096 * (1 + r.IntN(16)))
	if n > wl.spec.RegionLen {
		n = wl.spec.RegionLen - wl.spec.RegionLen%4096
	}
	next := time.Duration(float64(n) / float64(wl.spec.ChurnBps) * float64(time.Second))
	if wl.frozen {
		return next, nil
	}
	blocks := (wl.spec.RegionLen - n) / 4096
	off := wl.spec.RegionStart + 4096*r.Int64N(blocks+1)
	if cap(wl.buf) < int(n) {
		wl.buf = make([]byte, n)
	}
	buf := wl.buf[:n]
	fillRandomish(r, buf)
	wl.blocked = true
	wl.w.Submit(wl.spec.Disk, off, buf, func(_ uint64, err error) {
		wl.blocked = false
		if err != nil && wl.err == nil {
			wl.err = err
		}
		if wl.unblock != nil {
			wl.unblock()
		}
	})
	if wl.err != nil {
		return next, wl.err
	}
	return next, nil
}

// Freeze implements Workload: random writes have nothing in flight.
func (wl *Random) Freeze() error { wl.frozen = true; return nil }

// Thaw implements Workload.
func (wl *Random) Thaw() { wl.frozen = false }

// Check implements Workload: random data has no invariant.
func (*Random) Check([]io.ReaderAt, bool) (Report, error) {
	return Report{Formatted: true, Summary: "no invariant"}, nil
}

type idle struct{}

func (idle) Name() string                           { return "idle" }
func (idle) Step(*rand.Rand) (time.Duration, error) { return time.Hour, nil }
func (idle) Freeze() error                          { return nil }
func (idle) Thaw()                                  {}
func (idle) Check([]io.ReaderAt, bool) (Report, error) {
	return Report{Formatted: true, Summary: "idle"}, nil
}

// Machine is the writer interface disk.Machine satisfies.
var _ Writer = (*disk.Machine)(nil)

func fillRandomish(r *rand.Rand, buf []byte) { blockdev.FillRealistic(r, buf) }
