package mastertarget

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestPropertyNothingLost: whatever order of datastore failures, restarts
// of the master target and go-back-N resends, once the faults heal the
// disks hold exactly the stream applied in order, and the durable position
// is its last item.
func TestPropertyNothingLost(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		r := newRig(t)
		if rep := r.attach("db01", disks); !rep.OK {
			rt.Fatal(rep.Reason)
		}
		n := rapid.IntRange(1, 25).Draw(rt, "items")
		items := []*batch.Item{{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, DiskSizes: []int64{diskSize, diskSize}}}
		want := [2][]byte{make([]byte, diskSize), make([]byte, diskSize)}
		logSeq := uint64(0)
		for seq := uint64(2); seq <= uint64(n)+1; seq++ {
			it := &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindLog}
			recs := rapid.IntRange(1, 3).Draw(rt, fmt.Sprintf("records%d", seq))
			it.First = logSeq + 1
			for range recs {
				logSeq++
				disk := uint16(rapid.IntRange(0, 1).Draw(rt, "disk"))
				off := int64(rapid.IntRange(0, diskSize/512-2).Draw(rt, "sector")) * 512
				size := rapid.IntRange(1, 2).Draw(rt, "sectors") * 512
				v := byte(rapid.IntRange(1, 255).Draw(rt, "byte"))
				it.Records = append(it.Records, batch.Record{Seq: logSeq, Type: batch.RecWrite, Disk: disk, Off: off, Data: fill(size, v)})
				copy(want[disk][off:], fill(size, v))
			}
			it.Last = logSeq
			items = append(items, it)
		}
		total := uint64(len(items))
		var acked uint64
		next := uint64(1)
		send := func() {
			if next > total {
				return
			}
			it := items[next-1]
			next++
			r.d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: it.Seq, Data: it.Marshal()})
			for _, a := range r.acks() {
				if a.Status == proto.AckRefused {
					rt.Fatalf("a good item refused: %+v", a)
				}
				acked = max(acked, a.Acked)
				if a.Status == proto.AckGap {
					next = acked + 1
				}
			}
		}
		steps := rapid.IntRange(0, 60).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 5).Draw(rt, "action") {
			case 0, 1:
				send()
			case 2:
				r.vc.FailWrites(errors.New("datastore unreachable"))
			case 3:
				r.vc.FailWrites(nil)
			case 4:
				r.restart()
				next = acked + 1
			case 5:
				r.d.Advance(DefaultRetryEvery)
				for _, a := range r.acks() {
					acked = max(acked, a.Acked)
				}
				next = min(next, acked+1) // go-back-N on the sender's timer
			}
		}
		// Heal, then let the sender finish.
		r.vc.FailWrites(nil)
		for range 4 * total {
			if acked == total {
				break
			}
			r.d.Advance(DefaultRetryEvery)
			for _, a := range r.acks() {
				acked = max(acked, a.Acked)
			}
			next = acked + 1
			for next <= total {
				send()
			}
		}
		if acked != total {
			rt.Fatalf("acked %d of %d after healing", acked, total)
		}
		for i := range 2 {
			got := r.disk(i)
			got = append(got, make([]byte, diskSize-len(got))...)
			if d := cmp.Diff(want[i], got); d != "" {
				rt.Fatalf("disk %d differs from the stream applied in order", i)
			}
		}
		r.restart()
		if st := r.status().Machines[0]; st.Applied != total {
			rt.Fatalf("durable position %d, want %d", st.Applied, total)
		}
	})
}
