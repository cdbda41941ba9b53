package mastertarget

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// TestPropertyRollback: for any stream of writes, bookmarks (crash or app)
// and revokes, applied in batches the sender chooses, with the power cut
// at any one step and datastore outages along the way, a rollback to any
// point the target lists gives the disks as the stream left them at that
// bookmark, byte for byte; the newest point and the two newest
// app-consistent ones are always listed; the journal holds no more than
// the writes after the oldest listed point; and a choice no listed point
// matches is refused with the disks untouched.
func TestPropertyRollback(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		w := newWorld(t, disks)
		w.attach(rapid.Bool().Draw(rt, "fresh"))
		items := []*batch.Item{
			{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, Gen: 1, DiskSizes: []int64{diskSize, diskSize}},
			{Machine: "db01", Seq: 2, Kind: batch.KindSyncEnd, Gen: 1, LogFrom: 1},
		}
		type bmk struct {
			id      string
			kind    proto.Consistency
			revoked bool
		}
		var bms []bmk
		logSeq := uint64(0)
		n := rapid.IntRange(1, 30).Draw(rt, "items")
		for seq := uint64(3); seq < uint64(n)+3; seq++ {
			var recs []batch.Record
			for range rapid.IntRange(1, 4).Draw(rt, "records") {
				logSeq++
				switch rapid.IntRange(0, 9).Draw(rt, "type") {
				case 0, 1, 2:
					kind := proto.Crash
					if rapid.Bool().Draw(rt, "app") {
						kind = proto.App
					}
					id := fmt.Sprintf("b%d", logSeq)
					bms = append(bms, bmk{id: id, kind: kind})
					recs = append(recs, bm(logSeq, kind, id, int(logSeq)))
				case 3:
					if len(bms) > 0 {
						b := &bms[len(bms)-1]
						b.revoked = true
						recs = append(recs, batch.Record{Seq: logSeq, Type: batch.RecRevoke, BookmarkID: b.id})
						continue
					}
					fallthrough
				default:
					disk := uint16(rapid.IntRange(0, 1).Draw(rt, "disk"))
					off := int64(rapid.IntRange(0, diskSize/512-4).Draw(rt, "sector")) * 512
					size := rapid.IntRange(1, 4).Draw(rt, "sectors") * 512
					recs = append(recs, wr(logSeq, disk, off, size, byte(rapid.IntRange(1, 255).Draw(rt, "byte"))))
				}
			}
			items = append(items, logItem(seq, recs...))
		}
		total := uint64(len(items))
		crashAt := rapid.Int64Range(-1, 200).Draw(rt, "crash step")
		if crashAt >= 0 {
			w.sw.armed = true
			w.sw.left.Store(crashAt)
		}
		acked := uint64(0)
		for acked < total {
			if w.sw.dead() {
				w.crash()
				if st := w.status(); st.Applied < acked {
					rt.Fatalf("acknowledged %d, durable %d after the crash", acked, st.Applied)
				}
			}
			if rapid.IntRange(0, 5).Draw(rt, "outage") == 0 {
				w.vc.FailWrites(errors.New("datastore unreachable"))
			}
			batchN := rapid.IntRange(1, 5).Draw(rt, "batch")
			a, acks := w.send(items[acked:min(acked+uint64(batchN), total)]...)
			for _, x := range acks {
				if x.Status == proto.AckRefused {
					rt.Fatalf("a good item refused: %+v", x)
				}
			}
			acked = max(acked, a)
			w.vc.FailWrites(nil)
			w.d.Advance(DefaultRetryEvery)
			a, _ = w.send()
			acked = max(acked, a)
		}
		if w.sw.dead() {
			w.crash()
		}
		w.sw.armed = false
		listed := w.points().Points
		// What must be listed: the newest live bookmark and the two
		// newest app-consistent ones (all within a day of each other).
		var must []string
		apps := 0
		for i := len(bms) - 1; i >= 0; i-- {
			b := bms[i]
			if b.revoked {
				continue
			}
			if len(must) == 0 || (b.kind == proto.App && apps < 2) {
				must = append(must, b.id)
			}
			if b.kind == proto.App {
				apps++
				if apps == 2 {
					break
				}
			}
		}
		for _, id := range must {
			if !slices.ContainsFunc(listed, func(p proto.TargetPoint) bool { return p.ID == id }) {
				rt.Fatalf("point %s not listed: %+v", id, listed)
			}
		}
		// The journal holds the writes after the oldest listed point, no
		// more (entries carry about 40 bytes of framing).
		if len(listed) > 0 {
			var bound int64
			after := false
			for _, it := range items {
				for _, r := range it.Records {
					if r.Type == batch.RecBookmark && r.BookmarkID == listed[0].ID {
						after = true
					}
					if after && r.Type == batch.RecWrite {
						bound += int64(len(r.Data)) + 64
					}
				}
			}
			if jb := w.status().JournalBytes; jb > bound {
				rt.Fatalf("journal %d bytes, the writes after %s make %d", jb, listed[0].ID, bound)
			}
		}
		choice := proto.PointLatest
		switch rapid.IntRange(0, 3).Draw(rt, "choice") {
		case 1:
			choice = proto.PointLatestApp
		case 2:
			if len(listed) > 0 {
				choice = listed[rapid.IntRange(0, len(listed)-1).Draw(rt, "point")].ID
			}
		case 3:
			choice = "nope"
		}
		var want string
		for _, p := range listed {
			if p.ID == choice || choice == proto.PointLatest || (choice == proto.PointLatestApp && p.Kind == proto.App) {
				want = p.ID
			}
		}
		rep := w.failback(choice)
		wantDisks := expect(disks, items, want)
		if want == "" {
			if rep.OK || !strings.HasPrefix(rep.Reason, ErrNoPoint.Error()) {
				rt.Fatalf("failback %s with points %+v: %+v", choice, listed, rep)
			}
		} else if !rep.OK || rep.Result != want {
			rt.Fatalf("failback %s: %+v, want %s", choice, rep, want)
		}
		for i := range disks {
			if !bytes.Equal(w.image(i), wantDisks[i]) {
				rt.Fatalf("disk %d is not the disk at %q (choice %s)", i, want, choice)
			}
		}
	})
}
