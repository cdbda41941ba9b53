package sched

import (
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// DiskModel is the simulator's model of a local disk: what an Op's declared
// disk work (runtime.Op.Disk) costs in virtual time. An op on a device
// costs
//
//	OpLatency + Syncs × SyncLatency + Bytes / BytesPerSec
//
// and the ops of one device (per host) are served one at a time, in the
// order they were started: an op waits for the device to finish the ones
// before it. Ops of different devices, or of different hosts, do not wait
// for each other.
//
// The model is deliberately small: no read/write asymmetry, no queue depth,
// no write cache. Its point is that an fsync on the acknowledgement path
// (the process server's group commit, the agent's state file) and the
// bytes it flushes take time that shows in RPO and hold figures, and that
// two fsyncs on one disk do not overlap.
type DiskModel struct {
	// OpLatency is the fixed cost of one op: a system call and one device
	// round trip.
	OpLatency time.Duration
	// SyncLatency is the cost of one fsync (a cache flush / FUA write and
	// its completion).
	SyncLatency time.Duration
	// BytesPerSec is the device's sequential throughput.
	BytesPerSec int64
}

// DefaultDisk is a datacenter SATA/NVMe SSD of the kind a process server's
// cache disk and a protected server's system disk are in practice: fsync
// (flush) latency of 0.5–2 ms on SSDs without power-loss-protected write
// cache (measured with fio --fsync=1 and pg_test_fsync in many published
// benchmarks; enterprise drives with PLP are faster, consumer drives
// slower), sequential throughput of 200–500 MB/s for SATA SSDs and Azure
// Premium SSD P30-class disks (200 MB/s), and ~100 µs for one small
// random I/O. We take the middle: 1 ms per fsync, 300 MB/s, 100 µs per op.
var DefaultDisk = DiskModel{
	OpLatency:   100 * time.Microsecond,
	SyncLatency: time.Millisecond,
	BytesPerSec: 300_000_000,
}

// Cost is the virtual time the model charges io, not counting waiting for
// the device.
func (m DiskModel) Cost(io runtime.DiskIO) time.Duration {
	d := m.OpLatency + time.Duration(io.Syncs)*m.SyncLatency
	if m.BytesPerSec > 0 && io.Bytes > 0 {
		d += time.Duration(float64(io.Bytes) / float64(m.BytesPerSec) * float64(time.Second))
	}
	return d
}

// SetDiskModel replaces the disk model (DefaultDisk unless set). Devices
// busy under the old model stay busy until they would have been.
func (s *Sim) SetDiskModel(m DiskModel) { s.disk = m }

// DiskModel is the disk model in use.
func (s *Sim) DiskModel() DiskModel { return s.disk }

// diskDone charges io, started now on host's device, and returns when it
// completes: after the device finished the ops queued before it.
func (s *Sim) diskDone(host string, io runtime.DiskIO) time.Time {
	key := host + "/" + io.Device
	start := s.now
	if busy, ok := s.diskBusy[key]; ok && busy.After(start) {
		start = busy
	}
	done := start.Add(s.disk.Cost(io))
	s.diskBusy[key] = done
	return done
}
