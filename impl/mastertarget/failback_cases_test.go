package mastertarget

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
)

// sumsOf computes, independently of the target, the block sums of the
// first size bytes of img.
func sumsOf(img []byte, size int64) []byte {
	var out []byte
	for off := int64(0); off < size; off += proto.ChecksumBlockSize {
		s := proto.BlockSum(img[off:min(off+proto.ChecksumBlockSize, size)])
		out = append(out, s[:]...)
	}
	return out
}

func TestSyncChecksums(t *testing.T) {
	big := int64(MaxSumsPerMessage+3) * proto.ChecksumBlockSize
	bigDisks := []proto.TargetDisk{{Path: "[ds1] db01/db01-flat.vmdk", CapacityBytes: big}, {Path: "[ds1] db01/db01_1-flat.vmdk", CapacityBytes: big}}
	tests := []struct {
		name     string
		disks    []proto.TargetDisk
		fresh    bool
		before   []byte               // written to disk 0 before the attach
		items    func() []*batch.Item // sent before the SyncStart checked
		sizes    []int64
		messages []int // per disk; 0 means one Fresh message
	}{
		{name: "fresh", disks: disks, fresh: true, sizes: []int64{diskSize, diskSize}, messages: []int{0, 0}},
		{name: "existing disks", disks: disks, before: fill(5000, 7), sizes: []int64{diskSize, diskSize}, messages: []int{1, 1}},
		{name: "sync size under capacity", disks: disks, before: fill(9000, 7), sizes: []int64{10000, diskSize}, messages: []int{1, 1}},
		{name: "split over messages", disks: bigDisks, before: fill(5000, 9), sizes: []int64{big, big}, messages: []int{2, 2}},
		{name: "fresh, then written: a resync sums", disks: disks, fresh: true, sizes: []int64{diskSize, diskSize}, messages: []int{1, 1},
			items: func() []*batch.Item {
				return []*batch.Item{
					{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, Gen: 1, DiskSizes: []int64{diskSize, diskSize}},
					{Machine: "db01", Seq: 2, Kind: batch.KindChunk, Gen: 1, Disk: 1, Runs: []batch.Run{{Off: 4096, Data: fill(512, 3)}}},
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, tt.disks)
			if tt.before != nil {
				if err := w.vc.WriteFile(context.Background(), tt.disks[0].Path, tt.before); err != nil {
					t.Fatal(err)
				}
			}
			w.attach(tt.fresh)
			var pre []*batch.Item
			if tt.items != nil {
				pre = tt.items()
				w.send(pre...)
				w.toCS()
			}
			start := &batch.Item{Machine: "db01", Seq: uint64(len(pre)) + 1, Kind: batch.KindSyncStart, Gen: uint64(len(pre)) + 7, DiskSizes: tt.sizes}
			if acked, _ := w.send(start); acked != start.Seq {
				t.Fatalf("SyncStart acked %d", acked)
			}
			msgs := w.toCS()
			if len(msgs) == 0 {
				t.Fatal("nothing sent to the configuration server")
			}
			ev, ok := msgs[0].(*proto.ReplicaEvent)
			if !ok || ev.Event != proto.EventSyncStarted || ev.Machine != "db01" || ev.Gen != start.Gen {
				t.Errorf("first message %+v, want sync-started of gen %d", msgs[0], start.Gen)
			}
			var sums []*proto.Checksums
			for _, m := range msgs[1:] {
				c, ok := m.(*proto.Checksums)
				if !ok {
					t.Fatalf("%T after the sync-started event", m)
				}
				sums = append(sums, c)
			}
			got := map[uint16][]byte{}
			count := make([]int, len(tt.disks))
			for i, c := range sums {
				if c.Final != (i == len(sums)-1) {
					t.Errorf("message %d of %d: Final %v", i, len(sums), c.Final)
				}
				if c.Machine != "db01" || c.Gen != start.Gen || c.BlockSize != proto.ChecksumBlockSize || len(c.Sums) > MaxSumsPerMessage*proto.ChecksumSize {
					t.Errorf("message %d: %+v", i, c)
				}
				if c.Fresh {
					if len(c.Sums) != 0 {
						t.Errorf("a Fresh message with sums")
					}
					continue
				}
				count[c.Disk]++
				if c.Off != int64(len(got[c.Disk])/proto.ChecksumSize)*proto.ChecksumBlockSize {
					t.Errorf("disk %d message at %d, sums so far end at block %d", c.Disk, c.Off, len(got[c.Disk])/proto.ChecksumSize)
				}
				got[c.Disk] = append(got[c.Disk], c.Sums...)
			}
			for i := range tt.disks {
				if tt.messages[i] == 0 {
					if count[i] != 0 || !slices.ContainsFunc(sums, func(c *proto.Checksums) bool { return c.Fresh && int(c.Disk) == i }) {
						t.Errorf("disk %d: want one Fresh message", i)
					}
					continue
				}
				if count[i] != tt.messages[i] {
					t.Errorf("disk %d: %d messages, want %d", i, count[i], tt.messages[i])
				}
				if want := sumsOf(w.image(i), tt.sizes[i]); !bytes.Equal(got[uint16(i)], want) {
					t.Errorf("disk %d: sums differ from the disk's (%d vs %d bytes)", i, len(got[uint16(i)]), len(want))
				}
			}
			// Negative control: the sums are of the disk, not of zeros.
			if tt.before != nil && bytes.Equal(got[0][:proto.ChecksumSize], proto.ZeroBlockSum[:]) {
				t.Errorf("disk 0's first block summed as zeros")
			}
			// A resent SyncStart (its sender waits for the checksums) gets
			// them again; so does the configuration server after a restart
			// with nothing applied since.
			w.send(start)
			if again := w.toCS(); len(again) != len(sums) {
				t.Errorf("resent SyncStart: %d messages, want the %d checksums", len(again), len(sums))
			}
			w.restart()
			if again := w.toCS(); len(again) != len(sums) {
				t.Errorf("after a restart: %d messages, want the %d checksums", len(again), len(sums))
			}
		})
	}
}

func TestEventsAndPoints(t *testing.T) {
	w := newWorld(t, disks)
	w.attach(false)
	items := fbStream()
	var events []string
	for _, it := range items {
		if acked, _ := w.send(it); acked != it.Seq {
			t.Fatalf("item %d: acked %d", it.Seq, acked)
		}
		events = append(events, eventsOf(w.toCS())...)
		if it.Seq == 4 {
			if p := w.points(); len(p.Points) != 0 || p.Err != "" {
				t.Errorf("points before the sync completed: %+v", p)
			}
		}
	}
	want := []string{"sync-started", "checksums 0 final=false", "checksums 1 final=true", "sync-complete",
		"point a0", "point a1", "point c2", "point a2", "point a3", "pruned a0", "point c4"}
	if d := cmp.Diff(want, events); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	min := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	wantPts := &proto.TargetPoints{Req: "p", Machine: "db01", VM: vmName, Applied: 10, Points: []proto.TargetPoint{
		{ID: "a1", Kind: proto.App, Time: min(3), Seq: 6},
		{ID: "c2", Kind: proto.Crash, Time: min(4), Seq: 9},
		{ID: "a2", Kind: proto.App, Time: min(5), Seq: 11},
		{ID: "a3", Kind: proto.App, Time: min(6), Seq: 14},
		{ID: "c4", Kind: proto.Crash, Time: min(7), Seq: 17},
	}}
	if d := cmp.Diff(wantPts, w.points()); d != "" {
		t.Errorf("target points (-want +got):\n%s", d)
	}
	// The points survive a restart.
	w.restart()
	if d := cmp.Diff(wantPts, w.points()); d != "" {
		t.Errorf("target points after a restart (-want +got):\n%s", d)
	}
	w.d.Receive(fbAddr, &proto.TargetPointsRequest{Req: "q", Machine: "web01"})
	if got := w.d.SentTo(fbAddr); len(got) != 1 || !strings.HasPrefix(got[0].(*proto.TargetPoints).Err, ErrNotAttached.Error()) {
		t.Errorf("points of an unknown machine: %v", got)
	}
	// A point's event carries what the configuration server records.
	w2 := newWorld(t, disks)
	w2.attach(false)
	w2.send(items[:6]...)
	var pt *proto.ReplicaEvent
	for _, m := range w2.toCS() {
		if e, ok := m.(*proto.ReplicaEvent); ok && e.Event == proto.EventPoint {
			pt = e
		}
	}
	if d := cmp.Diff(&proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, Gen: 1, PointID: "a1", Kind: proto.App,
		PointTime: min(3), Seq: 6, Applied: 6}, pt); d != "" {
		t.Errorf("point event (-want +got):\n%s", d)
	}
}

func TestRollback(t *testing.T) {
	tests := []struct {
		choice, want string
	}{
		{proto.PointLatest, "c4"},
		{proto.PointLatestApp, "a3"},
		{"a2", "a2"},
		{"a3", "a3"},
	}
	for _, tt := range tests {
		t.Run(tt.choice, func(t *testing.T) {
			w := newWorld(t, disks)
			w.attach(false)
			items := fbStream()
			w.send(items...)
			head := expect(disks, items, "")
			for i := range disks {
				if !bytes.Equal(w.image(i), head[i]) {
					t.Fatalf("disk %d is not the stream applied", i)
				}
			}
			rep := w.failback(tt.choice)
			if d := cmp.Diff(&proto.Reply{Request: "failback-point", Req: "f-" + tt.choice, Subject: vmName, OK: true, Result: tt.want}, rep); d != "" {
				t.Fatalf("reply (-want +got):\n%s", d)
			}
			at := expect(disks, items, tt.want)
			check := func(when string) {
				t.Helper()
				for i := range disks {
					if !bytes.Equal(w.image(i), at[i]) {
						t.Errorf("%s: disk %d is not the disk at %s", when, i, tt.want)
					}
				}
			}
			check("after the rollback")
			// Negative control: the point's disks differ from the head's.
			if bytes.Equal(at[0], head[0]) && bytes.Equal(at[1], head[1]) {
				t.Fatalf("the test's point %s is the head: it proves nothing", tt.want)
			}
			if st := w.status(); st.FailedBack != tt.want || st.JournalBytes != 0 || st.RollingBack != "" {
				t.Errorf("status: %+v", st)
			}
			next := logItem(11, wr(20, 0, 0, 512, 99))
			_, acks := w.send(next)
			if len(acks) != 1 || acks[0].Status != proto.AckRefused || !strings.HasPrefix(acks[0].Reason, ErrFailedBack.Error()) || !strings.Contains(acks[0].Reason, tt.want) {
				t.Errorf("item after the failback: %+v", acks)
			}
			check("after a refused item")
			for _, again := range []func(){func() {}, w.restart} {
				again()
				if rep := w.failback(tt.want); !rep.OK || rep.Result != tt.want {
					t.Errorf("the same point again: %+v", rep)
				}
				other := "a2"
				if tt.want == "a2" {
					other = proto.PointLatest + "-nope"
				}
				if rep := w.failback(other); rep.OK || rep.Reason == "" {
					t.Errorf("another point after the failback: %+v", rep)
				}
				p := w.points()
				if len(p.Points) != 1 || p.Points[0].ID != tt.want || p.VM != vmName {
					t.Errorf("points after the failback: %+v", p)
				}
				check("after asking again")
			}
		})
	}
}

func TestRollbackRefused(t *testing.T) {
	items := fbStream()
	onlyCrash := []*batch.Item{items[0], items[4], logItem(6, wr(1, 0, 0, 512, 1), bm(2, proto.Crash, "c", 1), wr(3, 0, 0, 512, 2))}
	onlyCrash[1] = &batch.Item{Machine: "db01", Seq: 2, Kind: batch.KindSyncEnd, Gen: 1, LogFrom: 1}
	onlyCrash[2].Seq = 3
	tests := []struct {
		name   string
		items  []*batch.Item
		choice string
		listed string
	}{
		{"pruned point", items, "a0", "a1 (app), c2 (crash), a2 (app), a3 (app), c4 (crash)"},
		{"unknown id", items, "nope", "a1 (app), c2 (crash), a2 (app), a3 (app), c4 (crash)"},
		{"no app point", onlyCrash, proto.PointLatestApp, "c (crash)"},
		{"no point yet", items[:5], proto.PointLatest, "none"},
		{"bookmark during the sync", items[:5], "early", "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, disks)
			w.attach(false)
			w.send(tt.items...)
			before := w.status()
			writes := w.vc.Writes()
			rep := w.failback(tt.choice)
			if rep.OK || !strings.HasPrefix(rep.Reason, ErrNoPoint.Error()) || !strings.Contains(rep.Reason, "its points: "+tt.listed) || rep.Subject != vmName {
				t.Errorf("reply %+v, want refused listing %q", rep, tt.listed)
			}
			if w.vc.Writes() != writes {
				t.Errorf("a refused rollback wrote the datastore")
			}
			if d := cmp.Diff(before, w.status()); d != "" {
				t.Errorf("a refused rollback changed the status (-before +after):\n%s", d)
			}
			head := expect(disks, tt.items, "")
			for i := range disks {
				if !bytes.Equal(w.image(i), head[i]) {
					t.Errorf("disk %d changed", i)
				}
			}
			// The stream goes on.
			last := tt.items[len(tt.items)-1]
			next := logItem(last.Seq+1, wr(100, 0, 0, 512, 77))
			if acked, _ := w.send(next); acked != next.Seq {
				t.Errorf("the next item after a refused rollback: acked %d", acked)
			}
		})
	}
	w := newWorld(t, disks)
	w.d.Receive(fbAddr, &proto.FailbackPoint{Req: "x", Machine: "db01", Point: proto.PointLatest})
	if got := w.d.SentTo(fbAddr); len(got) != 1 || !strings.HasPrefix(got[0].(*proto.Reply).Reason, ErrNotAttached.Error()) {
		t.Errorf("failback of a machine not attached: %v", got)
	}
}

// TestApplyErrorOncePerStreak: a failing datastore is reported once per
// run of failures, not at every retry.
func TestApplyErrorOncePerStreak(t *testing.T) {
	w := newWorld(t, disks)
	w.attach(false)
	items := fbStream()
	w.send(items[0])
	w.toCS()
	errs := func() []string {
		var out []string
		for _, m := range w.toCS() {
			if e, ok := m.(*proto.ReplicaEvent); ok && e.Event == proto.EventApplyError {
				out = append(out, e.Detail)
			}
		}
		return out
	}
	w.vc.FailWrites(errors.New("datastore unreachable"))
	w.send(items[1])
	w.d.Advance(DefaultRetryEvery)
	w.d.Advance(DefaultRetryEvery)
	if got := errs(); len(got) != 1 || !strings.HasPrefix(got[0], ErrDatastore.Error()) || !strings.Contains(got[0], "datastore unreachable") {
		t.Errorf("apply errors of one streak: %q", got)
	}
	w.vc.FailWrites(nil)
	w.d.Advance(DefaultRetryEvery)
	if got := errs(); len(got) != 0 {
		t.Errorf("apply errors once healed: %q", got)
	}
	w.vc.FailWrites(errors.New("datastore full"))
	w.send(items[2])
	if got := errs(); len(got) != 1 || !strings.Contains(got[0], "datastore full") {
		t.Errorf("apply errors of a second streak: %q", got)
	}
}

// TestCrashAnywhere: the power fails at every step of applying the
// stream's points and rolling back, one step further each run; after the
// restart the sender resends what was not acknowledged and failback is
// asked again. The disks always end at the point, byte for byte, and no
// acknowledged item is lost.
func TestCrashAnywhere(t *testing.T) {
	items := fbStream()
	choices := []struct{ choice, want string }{{proto.PointLatestApp, "a3"}, {proto.PointLatest, "c4"}, {"a2", "a2"}}
	crashes := 0
	for k := int64(0); ; k++ {
		c := choices[k%int64(len(choices))]
		w := newWorld(t, disks)
		w.attach(false)
		if acked, _ := w.send(items[:5]...); acked != 5 {
			t.Fatalf("sync acked %d", acked)
		}
		w.sw.armed = true
		w.sw.left.Store(k)
		var acked uint64 = 5
		for _, it := range items[5:] {
			a, _ := w.send(it)
			acked = max(acked, a)
		}
		var rep *proto.Reply
		if !w.sw.dead() {
			w.d.Receive(fbAddr, &proto.FailbackPoint{Req: "f", Machine: "db01", Point: c.choice})
			if got := w.d.SentTo(fbAddr); len(got) == 1 {
				rep = got[0].(*proto.Reply)
			}
		}
		crashed := w.sw.dead()
		if crashed {
			crashes++
			w.crash()
			st := w.status()
			if st.Applied < acked {
				t.Fatalf("k=%d: acknowledged %d, durable %d after the crash", k, acked, st.Applied)
			}
			if st.FailedBack == "" && st.RollingBack == "" && st.Applied < uint64(len(items)) {
				if a, _ := w.send(items[st.Applied:]...); a != uint64(len(items)) {
					t.Fatalf("k=%d: resent items acked to %d", k, a)
				}
			}
			rep = w.failback(c.choice)
		}
		if rep == nil || !rep.OK || rep.Result != c.want {
			t.Fatalf("k=%d (crashed %v): failback %s: %+v", k, crashed, c.choice, rep)
		}
		at := expect(disks, items, c.want)
		for i := range disks {
			if !bytes.Equal(w.image(i), at[i]) {
				t.Fatalf("k=%d (crashed %v): disk %d is not the disk at %s", k, crashed, i, c.want)
			}
		}
		if !crashed {
			break // the run had fewer steps than k: every step was cut once
		}
	}
	if crashes < 20 {
		t.Errorf("only %d crashes: the test cuts too few steps", crashes)
	}
	t.Logf("%d crash points", crashes)
}

// TestJournalBounded: as points move on, the journal is trimmed to what
// the kept points need.
func TestJournalBounded(t *testing.T) {
	w := newWorld(t, disks)
	w.attach(false)
	items := fbStream()[:5]
	seq, logSeq := uint64(5), uint64(2)
	var peak int64
	for round := range 60 {
		seq++
		recs := []batch.Record{wr(logSeq+1, uint16(round%2), int64(round%16)*4096, 4096, byte(round))}
		kind := proto.Crash
		if round%5 == 0 {
			kind = proto.App
		}
		recs = append(recs, bm(logSeq+2, kind, fmt.Sprintf("p%d", round), round))
		logSeq += 2
		items = append(items, logItem(seq, recs...))
	}
	for _, it := range items {
		w.send(it)
		peak = max(peak, w.status().JournalBytes)
	}
	st := w.status()
	// The journal reaches the third-newest app point (round 45): fifteen
	// rounds of one 4 KiB write each, plus framing.
	if st.JournalBytes == 0 || st.JournalBytes > 15*(4096+64) || peak > 17*(4096+64) {
		t.Errorf("journal %d bytes (peak %d), want about fifteen writes' worth", st.JournalBytes, peak)
	}
	if p := w.points(); len(p.Points) != 15 || p.Points[0].ID != "p45" {
		t.Errorf("points: %+v", p.Points)
	}
	if rep := w.failback("p45"); !rep.OK {
		t.Fatalf("rollback to the oldest kept point: %+v", rep)
	}
	at := expect(disks, items, "p45")
	for i := range disks {
		if !bytes.Equal(w.image(i), at[i]) {
			t.Errorf("disk %d is not the disk at p45", i)
		}
	}
}

// TestJournalTornTail: a journal append cut short by a crash is dropped
// at load; damage before good records is reported, never guessed.
func TestJournalTornTail(t *testing.T) {
	e1 := jentry{At: pos{Item: 3, Rec: 1}, Disk: 1, Off: 512, Data: fill(100, 1)}
	e2 := jentry{At: pos{Item: 4, Rec: 0}, Disk: 0, Off: 0, Data: fill(50, 2)}
	good := e2.appendTo(e1.appendTo(nil))
	n1 := len(e1.appendTo(nil))
	tests := []struct {
		name    string
		b       []byte
		entries int
		good    int
		err     error
	}{
		{"whole", good, 2, len(good), nil},
		{"torn length", append(slices.Clone(good), 0, 0), 2, len(good), nil},
		{"torn record", good[:len(good)-3], 1, n1, nil},
		{"bad last checksum", append(slices.Clone(good[:len(good)-1]), good[len(good)-1]^1), 1, n1, nil},
		{"damage before a good record", append([]byte{good[0], good[1], good[2], good[3], good[4] ^ 1}, good[5:]...), 0, 0, ErrStateCorrupt},
		{"out of order", append(slices.Clone(good[n1:]), good[:n1]...), 1, len(good) - n1, ErrStateCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, n, err := parseJournal(tt.b)
			if len(entries) != tt.entries || int(n) != tt.good || !errors.Is(err, tt.err) {
				t.Errorf("got %d entries, %d good bytes, %v; want %d, %d, %v", len(entries), n, err, tt.entries, tt.good, tt.err)
			}
		})
	}
	// A machine whose journal is damaged is reported and refused.
	w := newWorld(t, disks)
	w.attach(false)
	w.send(fbStream()...)
	f, err := w.fs.OpenFile("/retention/db01.journal", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(tests[4].b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	w.restart()
	st := w.d.Actor.(*Target).Status()
	if len(st.Machines) != 0 || len(st.Broken) != 1 || !strings.Contains(st.Broken[0], "journal") {
		t.Errorf("status with a damaged journal: %+v", st)
	}
}

// TestAttachDropsOrphanJournal: a journal an earlier attach of the same
// name left (its state file removed by an operator) is not believed.
func TestAttachDropsOrphanJournal(t *testing.T) {
	w := newWorld(t, disks)
	w.attach(false)
	items := fbStream()
	w.send(items...)
	if w.status().JournalBytes == 0 {
		t.Fatal("the stream left no journal: the test proves nothing")
	}
	if err := w.fs.Remove("/retention/db01.state"); err != nil {
		t.Fatal(err)
	}
	w.restart()
	w.attach(false)
	w.restart()
	if st := w.status(); st.JournalBytes != 0 || st.Points != 0 {
		t.Errorf("after attaching again: %+v", st)
	}
	if _, err := w.fs.Stat("/retention/db01.journal"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old journal is still there: %v", err)
	}
}

// TestDefaultReachKeepsAnHour: by default the journal reaches the newest
// hour of crash points (12 at the failback policy's 5 minutes, one to
// spare), so a point a failback job chose is still there when a plan's
// later boot group rolls back to it minutes later.
func TestDefaultReachKeepsAnHour(t *testing.T) {
	var pts []point
	for i := range 20 {
		pts = append(pts, point{ID: fmt.Sprintf("c%d", i), Kind: proto.Crash, Seq: uint64(i + 1), At: pos{Item: uint64(i + 1)}})
	}
	keep, drop, _ := keepPoints(pts, 0)
	if len(keep) != DefaultReachPoints || keep[0].ID != "c7" || len(drop) != 20-DefaultReachPoints {
		t.Errorf("kept %d (oldest %s), dropped %d; want the newest %d", len(keep), keep[0].ID, len(drop), DefaultReachPoints)
	}
}
