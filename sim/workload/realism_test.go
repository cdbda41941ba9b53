package workload

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// The fixtures' guest disks: 64 MiB, workloads from 32 MiB on.
const (
	fixtureDisk   = 64 << 20
	fixtureRegion = 32 << 20
)

// timedDisk records every write with the virtual time it was issued at.
type timedDisk struct {
	size   int64
	now    *time.Duration
	writes []timedWrite
}

type timedWrite struct {
	off  int64
	data []byte
	at   time.Duration
}

func (d *timedDisk) Submit(_ int, off int64, data []byte, done func(uint64, error)) {
	d.writes = append(d.writes, timedWrite{off, append([]byte(nil), data...), *d.now})
	if done != nil {
		done(uint64(len(d.writes)), nil)
	}
}
func (d *timedDisk) Size(int) int64 { return d.size }
func (d *timedDisk) Disks() int     { return 1 }

// drive runs a workload of the given kind, as the harness's defaults make
// it (2 transactions or operations a second; the order flow at 2 orders a
// second, as the multi-VM scenarios run it), for dur of virtual time, and
// returns its disks.
func drive(t *testing.T, kind string, dur time.Duration) []*timedDisk {
	t.Helper()
	now := new(time.Duration)
	spec := Spec{Kind: kind, TxPerSec: 2, ChurnBps: 64 * 1024, RegionStart: fixtureRegion}
	var wl Workload
	var disks []*timedDisk
	if kind == "orders" {
		var ws [3]Writer
		for i := range ws {
			d := &timedDisk{size: fixtureDisk, now: now}
			disks, ws[i] = append(disks, d), d
		}
		o, err := NewOrders([3]string{"db", "web", "report"}, ws, spec, 2, func(string, uint64, string, uint64) {})
		if err != nil {
			t.Fatal(err)
		}
		wl = o
	} else {
		d := &timedDisk{size: fixtureDisk, now: now}
		disks = append(disks, d)
		var err error
		if wl, err = New(spec, d); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	for *now < dur {
		next, err := wl.Step(r)
		if err != nil {
			t.Fatal(err)
		}
		*now += next
	}
	return disks
}

// TestWriteCompression measures how the bytes each workload writes
// compress, with the process server's codecs: like real data, s2 about
// 1.4–1.6× and zstd somewhat better — not the 50× of zero-padded records.
func TestWriteCompression(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"bank", "fs", "orders", "random"} {
		t.Run(kind, func(t *testing.T) {
			var all []byte
			for _, d := range drive(t, kind, 40*time.Minute) {
				for _, w := range d.writes {
					all = append(all, w.data...)
				}
			}
			if len(all) < 4<<20 {
				t.Fatalf("only %d bytes written", len(all))
			}
			all = all[:len(all)/(1<<20)*(1<<20)]
			// In 1 MiB pieces, as the process server seals items (a minute
			// of a machine's writes).
			var s2n, zn int
			for off := 0; off < len(all); off += 1 << 20 {
				piece := all[off : off+1<<20]
				s2n += len(s2.Encode(nil, piece))
				zn += len(enc.EncodeAll(piece, nil))
			}
			s2r, zr := float64(len(all))/float64(s2n), float64(len(all))/float64(zn)
			t.Logf("%s: %.1f MiB written, s2 ratio %.2f, zstd ratio %.2f", kind, float64(len(all))/(1<<20), s2r, zr)
			if s2r < 1.35 || s2r > 1.7 {
				t.Errorf("%s: s2 ratio %.2f, want 1.35-1.7", kind, s2r)
			}
			if zr <= s2r {
				t.Errorf("%s: zstd ratio %.2f not above s2's %.2f", kind, zr, s2r)
			}
		})
	}
}

// TestLostWritesStayVisible drops, in thought, each write of a workload's
// history and asks whether the disk would still show it 5 minutes of
// workload later: whether some byte it wrote is not rewritten within 5
// minutes. A recovery point comes every 5 minutes, so a write the pipeline
// loses is seen by the write-order check at the next point only if it is.
func TestLostWritesStayVisible(t *testing.T) {
	const window = 5 * time.Minute
	for _, kind := range []string{"bank", "fs", "orders"} {
		t.Run(kind, func(t *testing.T) {
			dur := 45 * time.Minute // past at least two checkpoints
			judged, visible := 0, 0
			for _, d := range drive(t, kind, dur) {
				// Backwards: nextAt[sector] is when the sector is next written.
				nextAt := map[int64]time.Duration{}
				for i := len(d.writes) - 1; i >= 0; i-- {
					w := d.writes[i]
					first, last := w.off/512, (w.off+int64(len(w.data))-1)/512
					if w.at+window <= dur {
						judged++
						for s := first; s <= last; s++ {
							if at, ok := nextAt[s]; !ok || at > w.at+window {
								visible++
								break
							}
						}
					}
					for s := first; s <= last; s++ {
						nextAt[s] = w.at
					}
				}
			}
			frac := float64(visible) / float64(judged)
			t.Logf("%s: %d of %d writes (%.1f%%) still visible 5 minutes later", kind, visible, judged, 100*frac)
			if judged < 1000 || frac < 0.9 {
				t.Fatalf("%s: %d of %d writes visible after 5 minutes (%.1f%%), want at least 90%%", kind, visible, judged, 100*frac)
			}
		})
	}
}
