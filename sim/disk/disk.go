// Package disk is the simulated guest's storage: a machine's raw disks (the
// -flat.vmdk files in the vcsim datastore), the hook where the Mobility
// agent's write filter sits, and the history oracle that remembers every
// acknowledged write so that any replica image can be judged against it.
//
// Guest disks are write-through: a guest write is on stable media when it
// is acknowledged, as a hypervisor honours FUA and flushes for its guests,
// so a machine crash loses no acknowledged guest write. (The files that
// components keep — the .hrl, agent state, the process server's cache —
// live on sim/simfs disks instead, which do lose what was not fsynced.)
package disk

import (
	"fmt"
	"os"
	"time"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// Filter is where the agent's write filter sits. Capture sees every write
// before the guest's write is acknowledged, in the order the guest issued
// them, and returns the sequence number the write got in the change log (0
// when nothing is tracking yet). It must not keep data past the call.
type Filter interface {
	Capture(disk int, off int64, data []byte) (seq uint64)
}

// Gate is the part of a filter that can hold the guest's new writes (the
// multi-VM tag protocol's prepare phase). A write the gate does not admit
// waits in the machine's queue until the filter calls the release hook.
type Gate interface {
	Admit() bool
	SetReleaseHook(func())
}

// pendingWrite is a guest write waiting for the gate.
type pendingWrite struct {
	disk int
	off  int64
	data []byte
	done func(k uint64, err error)
	at   time.Duration // when the guest issued it
}

// WaitStats are the guest's view of held writes: how long writes waited
// for the filter's gate.
type WaitStats struct {
	Held    int64         // writes that had to wait
	Max     time.Duration // the longest wait
	Total   time.Duration
	Buckets [6]int64 // waits of <=1ms, <=10ms, <=100ms, <=1s, <=10s, longer
}

// WaitBucketLabels name WaitStats.Buckets.
var WaitBucketLabels = [6]string{"<=1ms", "<=10ms", "<=100ms", "<=1s", "<=10s", ">10s"}

func (s *WaitStats) add(d time.Duration) {
	s.Held++
	s.Total += d
	s.Max = max(s.Max, d)
	i := 0
	for lim := time.Millisecond; i < 5 && d > lim; lim *= 10 {
		i++
	}
	s.Buckets[i]++
}

// Machine is one protected machine's disks as its guest sees them.
type Machine struct {
	Name   string
	disks  []*blockdev.File
	paths  []string
	filter Filter
	oracle *Oracle
	clock  func() time.Duration

	written int64 // bytes the guest wrote
	writes  int64
	scratch []byte

	queue    []pendingWrite
	waits    WaitStats
	bypass   int  // >0 while an application flushes for a freeze (see Flushing)
	noGate   bool // ignore the filter's gate (negative controls only)
	draining bool
	onIdle   func() // called when the queue empties
}

// Open opens a machine's disk files (each sized to its capacity already).
// clock gives the virtual time for the oracle's records.
func Open(name string, paths []string, clock func() time.Duration) (*Machine, error) {
	m := &Machine{Name: name, paths: paths, clock: clock, scratch: make([]byte, blockdev.BlockSize)}
	for _, p := range paths {
		d, err := blockdev.OpenFile(p, true)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("disk: machine %s: %w", name, err)
		}
		if d.Size()%blockdev.BlockSize != 0 || d.Size() == 0 {
			d.Close()
			m.Close()
			return nil, fmt.Errorf("disk: machine %s: %s is %d bytes, want a positive multiple of %d", name, p, d.Size(), blockdev.BlockSize)
		}
		m.disks = append(m.disks, d)
	}
	o, err := newOracle(m)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.oracle = o
	return m, nil
}

// Close closes the disk files.
func (m *Machine) Close() error {
	for _, d := range m.disks {
		d.Close()
	}
	m.disks = nil
	return nil
}

// Disks is the number of disks.
func (m *Machine) Disks() int { return len(m.disks) }

// Device returns disk i as a block device (what the agent reads for the
// initial copy). Writes through it bypass the filter and the oracle: only
// the guest's Write path is tracked.
func (m *Machine) Device(i int) blockdev.Device { return m.disks[i] }

// Path is disk i's file.
func (m *Machine) Path(i int) string { return m.paths[i] }

// Oracle is the machine's write history.
func (m *Machine) Oracle() *Oracle { return m.oracle }

// SetFilter installs (or, with nil, removes) the write filter. A filter
// that is also a Gate gets the machine's release hook.
func (m *Machine) SetFilter(f Filter) {
	m.filter = f
	if g, ok := f.(Gate); ok {
		g.SetReleaseHook(m.drain)
	}
	if f == nil {
		m.drain()
	}
}

// IgnoreGate makes the machine write through a filter's hold: the negative
// control of the consistent-cut check (a prepare phase that holds nothing).
func (m *Machine) IgnoreGate(on bool) { m.noGate = on }

// Flushing runs fn, letting the writes it issues through a hold: an
// application flushing as it is frozen for an app-consistent point (VSS's
// freeze comes before the I/O hold, so its flush is never held).
//
// The application's writes already held are its in-flight I/O: the freeze
// completes them first, in order.
func (m *Machine) Flushing(fn func() error) error {
	m.bypass++
	defer func() { m.bypass-- }()
	m.drain()
	return fn()
}

// Waits reports how long held writes waited, so far.
func (m *Machine) Waits() WaitStats { return m.waits }

// Held is the number of guest writes waiting for the gate.
func (m *Machine) Held() int { return len(m.queue) }

// OnIdle sets a function called whenever the held-write queue empties
// (the workload driver resumes a blocked workload with it).
func (m *Machine) OnIdle(fn func()) { m.onIdle = fn }

func (m *Machine) admitted() bool {
	if m.noGate || m.bypass > 0 || m.filter == nil {
		return true
	}
	g, ok := m.filter.(Gate)
	return !ok || g.Admit()
}

// Submit is a guest write that may have to wait: if the filter holds
// writes, it queues (in order, behind any earlier held write) and done is
// called when it is acknowledged; otherwise it is written at once and done
// is called before Submit returns. done gets the write's position k in the
// machine's history.
func (m *Machine) Submit(disk int, off int64, data []byte, done func(k uint64, err error)) {
	// A write waits behind held ones, except a freeze's flush: held writes
	// are not acknowledged yet, so completing after it reorders nothing
	// the guest saw.
	if (len(m.queue) > 0 && m.bypass == 0) || !m.admitted() {
		m.queue = append(m.queue, pendingWrite{disk, off, append([]byte(nil), data...), done, m.clock()})
		return
	}
	err := m.Write(disk, off, data)
	if done != nil {
		done(m.oracle.K(), err)
	}
}

// drain writes held writes in order while the gate admits them.
func (m *Machine) drain() {
	if m.draining {
		return
	}
	m.draining = true
	defer func() { m.draining = false }()
	for len(m.queue) > 0 && m.admitted() {
		w := m.queue[0]
		m.queue = m.queue[1:]
		m.waits.add(m.clock() - w.at)
		err := m.Write(w.disk, w.off, w.data)
		if w.done != nil {
			w.done(m.oracle.K(), err)
		}
	}
	if len(m.queue) == 0 && m.onIdle != nil {
		m.onIdle()
	}
}

// Written is the bytes and writes the guest has issued.
func (m *Machine) Written() (bytes, writes int64) { return m.written, m.writes }

// Write is a guest write: the filter captures it, it reaches the disk, and
// only then is it acknowledged and recorded by the oracle. It does not
// consult the gate: guests that can be held use Submit.
func (m *Machine) Write(disk int, off int64, data []byte) error {
	if disk < 0 || disk >= len(m.disks) {
		return fmt.Errorf("disk: machine %s has no disk %d", m.Name, disk)
	}
	d := m.disks[disk]
	if err := blockdev.Check(d.Size(), off, len(data)); err != nil {
		return fmt.Errorf("disk: machine %s disk %d: %w", m.Name, disk, err)
	}
	var seq uint64
	if m.filter != nil {
		seq = m.filter.Capture(disk, off, data)
	}
	if _, err := d.WriteAt(data, off); err != nil {
		return fmt.Errorf("disk: machine %s disk %d: %w", m.Name, disk, err)
	}
	m.written += int64(len(data))
	m.writes++
	return m.oracle.ack(disk, off, data, seq)
}

// Read reads from a disk as the guest sees it.
func (m *Machine) Read(disk int, off int64, buf []byte) error {
	if disk < 0 || disk >= len(m.disks) {
		return fmt.Errorf("disk: machine %s has no disk %d", m.Name, disk)
	}
	_, err := m.disks[disk].ReadAt(buf, off)
	return err
}

// Size is disk i's capacity.
func (m *Machine) Size(i int) int64 { return m.disks[i].Size() }

// Create makes a disk file of size bytes at path, zero-filled (sparse), or
// resizes an existing one.
func Create(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("disk: size %s: %w", path, err)
	}
	return nil
}
