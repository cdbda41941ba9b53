package azuresvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	disk0Size = 8 << 20
	disk1Size = 128 << 10
)

// stream is the standard test stream of one machine: a sync of two disks
// (one chunk over 4 MiB, so page writes are split), then log items whose
// writes overlap across bookmarks, so that a point taken at the wrong
// moment shows.
func stream(m *model) []*batch.Item {
	t0 := runtimetest.Epoch
	items := []*batch.Item{
		m.syncStart(disk0Size, disk1Size),
		m.chunk(0, batch.Run{Off: 0, Data: m.data(5 << 20)}, batch.Run{Off: 6 << 20, Data: m.data(8192)}),
		m.chunk(1, batch.Run{Off: 4096, Data: m.data(1536)}),
	}
	items = append(items, m.syncEnd(2))
	items = append(items, m.log(
		m.write(0, 0, m.data(8192)),
		m.write(1, 512, m.data(1024)),
		m.bookmark(proto.Crash, m.machine+"-c-3", t0.Add(time.Minute)),
	))
	items = append(items, m.log(
		m.write(0, 4096, m.data(8192)),
		m.bookmark(proto.App, m.machine+"-a-5", t0.Add(2*time.Minute)),
		m.write(0, 0, m.data(16384)),
		m.write(1, 0, m.data(512)),
		m.bookmark(proto.Crash, m.machine+"-c-8", t0.Add(3*time.Minute)),
		m.write(0, 8192, m.data(4096)),
	))
	// Writes only: applied together with the next item (deferred).
	items = append(items, m.log(
		m.write(0, 8192, m.data(8192)),
		m.write(1, 2048, m.data(1024)),
	))
	items = append(items, m.log(
		m.write(0, 3<<20-4096, m.data(4096+(4<<20))), // over 4 MiB: a split page write
		m.bookmark(proto.Crash, m.machine+"-c-10", t0.Add(4*time.Minute)),
	))
	return items
}

func last(items []*batch.Item) uint64 { return items[len(items)-1].Seq }

func TestFullStream(t *testing.T) {
	tests := []struct {
		name    string
		deliver func(t *testing.T, d *runtimetest.Driver, store blob.Store, items []*batch.Item)
	}{
		{"all at once with a hint", func(t *testing.T, d *runtimetest.Driver, store blob.Store, items []*batch.Item) {
			upload(t, store, items...)
			hint(d, "db01", last(items))
		}},
		{"one by one with hints", func(t *testing.T, d *runtimetest.Driver, store blob.Store, items []*batch.Item) {
			for _, it := range items {
				upload(t, store, it)
				hint(d, "db01", it.Seq)
			}
		}},
		{"listing only, no hints", func(t *testing.T, d *runtimetest.Driver, store blob.Store, items []*batch.Item) {
			upload(t, store, items...)
			d.Advance(DefaultPollEvery)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			d.SetLogger(warnLogger(t))
			m := newModel("db01")
			items := stream(m)
			tt.deliver(t, d, store, items)

			evs, sums := toCS(t, d)
			want := []string{"sync-started", "sync-complete", "point:db01-c-3", "point:db01-a-5", "point:db01-c-8", "point:db01-c-10"}
			if diff := cmp.Diff(want, eventNames(evs)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			wantSums := []*proto.Checksums{
				{Machine: "db01", Gen: 1, Fresh: true, Disk: 0, BlockSize: BlockSize},
				{Machine: "db01", Gen: 1, Fresh: true, Disk: 1, BlockSize: BlockSize, Final: true},
			}
			if diff := cmp.Diff(wantSums, sums, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("checksums of a fresh replica (-want +got):\n%s", diff)
			}
			checkReplica(t, store, m)
			checkPoints(t, store, m)
			if got := cacheBlobs(t, store); len(got) != 0 {
				t.Errorf("cache still holds %v", got)
			}
			c := loadCatalog(t, store, "db01")
			if c.Applied != last(items) || c.AppliedLogSeq != m.logSeq || !c.Synced || c.Gen != 1 {
				t.Errorf("catalog applied %d log %d synced %v gen %d, want %d %d true 1", c.Applied, c.AppliedLogSeq, c.Synced, c.Gen, last(items), m.logSeq)
			}
			wantKinds := map[string]proto.Consistency{"db01-c-3": proto.Crash, "db01-a-5": proto.App, "db01-c-8": proto.Crash, "db01-c-10": proto.Crash}
			for _, p := range c.Points {
				if p.Kind != wantKinds[p.ID] || p.Gen != 1 || p.Time.Before(runtimetest.Epoch) {
					t.Errorf("point %+v", p)
				}
			}
			st := service(d).Status()
			wantSt := []MachineStatus{{Machine: "db01", Loaded: true, Gen: 1, Synced: true, Applied: last(items),
				AppliedLogSeq: m.logSeq, Points: 4, NewestPoint: runtimetest.Epoch.Add(4 * time.Minute),
				RPO: d.Now().Sub(runtimetest.Epoch.Add(4 * time.Minute)), ItemsApplied: last(items)}}
			if diff := cmp.Diff(wantSt, st.Machines); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCatalogJSONDeterministic: the catalog encodes the same way every time
// (field order), and LoadCatalog reads back what was stored.
func TestCatalogJSON(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	raw, _, err := store.Get(context.Background(), catalogContainer(testPrefix), "db01.json", blob.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := loadCatalog(t, store, "db01")
	again, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(raw), string(again)); diff != "" {
		t.Errorf("catalog re-encoding differs (-stored +again):\n%s", diff)
	}
	for _, key := range []string{`"machine"`, `"appliedLogSeq"`, `"points"`, `"snapshots"`, `"revoked"`, `"policy"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("catalog JSON has no %s", key)
		}
	}
	if _, _, err := LoadCatalog(context.Background(), store, testPrefix, "nope"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("LoadCatalog of an unknown machine: %v, want ErrNotFound", err)
	}
}

// directSums computes a disk's checksums by reading all of it.
func directSums(t *testing.T, store blob.Store, d Disk) []byte {
	img := readDisk(t, store, d, "")
	var out []byte
	for off := 0; off < len(img); off += BlockSize {
		s := proto.BlockSum(img[off:min(off+BlockSize, len(img))])
		out = append(out, s[:]...)
	}
	return out
}

func TestChecksumsOfExistingReplica(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	toCS(t, d)

	// Resync: disk 1 grows past 16384 blocks with a short last block, and a
	// third disk appears.
	big := int64(64<<20 + 3*BlockSize + 512)
	ss := m.syncStart(disk0Size, big, 64<<10)
	upload(t, store, ss)
	hint(d, "db01", ss.Seq)
	evs, sums := toCS(t, d)
	if diff := cmp.Diff([]string{"sync-started"}, eventNames(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	c := loadCatalog(t, store, "db01")
	if diff := cmp.Diff([]Disk{{Index: 0, Size: disk0Size, Blob: "db01/disk0"}, {Index: 1, Size: big, Blob: "db01/disk1"}, {Index: 2, Size: 64 << 10, Blob: "db01/disk2"}}, c.Disks); diff != "" {
		t.Errorf("disks (-want +got):\n%s", diff)
	}
	if c.Synced || c.Gen != 2 || c.SyncItem != ss.Seq {
		t.Errorf("catalog synced %v gen %d syncItem %d", c.Synced, c.Gen, c.SyncItem)
	}
	got := map[uint16][]byte{}
	var shape []string
	for i, s := range sums {
		if s.Gen != 2 || s.BlockSize != BlockSize || s.Final != (i == len(sums)-1) {
			t.Errorf("message %d: gen %d block size %d final %v", i, s.Gen, s.BlockSize, s.Final)
		}
		if s.Off != int64(len(got[s.Disk])/proto.ChecksumSize)*BlockSize {
			t.Errorf("message %d: disk %d at %d does not follow the previous one", i, s.Disk, s.Off)
		}
		if len(s.Sums) > MaxSumsPerMessage*proto.ChecksumSize {
			t.Errorf("message %d has %d sums", i, len(s.Sums)/proto.ChecksumSize)
		}
		got[s.Disk] = append(got[s.Disk], s.Sums...)
		kind := "sums"
		if s.Fresh {
			kind = "fresh"
		}
		shape = append(shape, string(rune('0'+s.Disk))+":"+kind)
	}
	if diff := cmp.Diff([]string{"0:sums", "1:sums", "1:sums", "2:fresh"}, shape); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	for i, dk := range c.Disks[:2] {
		if want := directSums(t, store, dk); !slices.Equal(got[uint16(i)], want) {
			t.Errorf("disk %d: %d checksum bytes differ from a direct computation (%d bytes)", i, len(got[uint16(i)]), len(want))
		}
	}

	// No chunk yet: the agent may have missed them, so they come again.
	d.Advance(DefaultChecksumResend)
	_, again := toCS(t, d)
	if diff := cmp.Diff(sums, again); diff != "" {
		t.Errorf("resent checksums (-first +again):\n%s", diff)
	}
	// A restarted service recomputes and sends them too.
	d2 := start(t, store)
	_, after := toCS(t, d2)
	if diff := cmp.Diff(sums, after); diff != "" {
		t.Errorf("checksums after a restart (-first +again):\n%s", diff)
	}
	// Once a chunk is applied they are stale: no more resends.
	ch := m.chunk(2, batch.Run{Off: 0, Data: m.data(4096)})
	upload(t, store, ch)
	hint(d2, "db01", ch.Seq)
	toCS(t, d2)
	d2.Advance(2 * DefaultChecksumResend)
	if _, more := toCS(t, d2); len(more) != 0 {
		t.Errorf("%d checksum messages sent after a chunk was applied", len(more))
	}
}

func TestOutOfOrderUploadWaits(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items[2], items[3])
	hint(d, "db01", items[3].Seq)
	d.Advance(DefaultPollEvery)
	want := MachineStatus{Machine: "db01", Loaded: true, Waiting: 2, Gap: true}
	if diff := cmp.Diff([]MachineStatus{want}, service(d).Status().Machines); diff != "" {
		t.Errorf("status before item 1 (-want +got):\n%s", diff)
	}
	upload(t, store, items[0])
	hint(d, "db01", 1)
	if got := service(d).Status().Machines[0]; got.Applied != 1 || !got.Gap || got.Waiting != 2 {
		t.Errorf("after item 1: applied %d gap %v waiting %d, want 1 true 2", got.Applied, got.Gap, got.Waiting)
	}
	upload(t, store, items[1])
	hint(d, "db01", 2)
	if got := service(d).Status().Machines[0]; got.Applied != items[3].Seq || got.Gap || got.Waiting != 0 {
		t.Errorf("after item 2: applied %d gap %v waiting %d, want %d false 0", got.Applied, got.Gap, got.Waiting, items[3].Seq)
	}
	upload(t, store, items[4:]...)
	d.Advance(DefaultPollEvery)
	checkReplica(t, store, m)
	checkPoints(t, store, m)
}

func TestDuplicates(t *testing.T) {
	tests := []struct {
		name string
		// dup runs after the whole stream was applied; it returns the
		// items it made (uploaded and hinted by the test).
		dup func(t *testing.T, store blob.Store, m *model, items []*batch.Item) []*batch.Item
	}{
		{"applied item uploaded again", func(t *testing.T, store blob.Store, m *model, items []*batch.Item) []*batch.Item {
			return []*batch.Item{items[4], items[1]}
		}},
		{"records already applied, with other data", func(t *testing.T, store blob.Store, m *model, items []*batch.Item) []*batch.Item {
			old := batch.Record{Seq: m.logSeq, Type: batch.RecWrite, Disk: 0, Off: 0, Data: m.data(65536)}
			it := m.log(old, m.write(1, 4096, m.data(512)))
			return []*batch.Item{it}
		}},
		{"bookmark id already a point", func(t *testing.T, store blob.Store, m *model, items []*batch.Item) []*batch.Item {
			return []*batch.Item{m.log(m.write(0, 0, m.data(512)), m.bookmark(proto.Crash, "db01-c-3", runtimetest.Epoch.Add(time.Hour)))}
		}},
		{"the same item twice before it is applied", func(t *testing.T, store blob.Store, m *model, items []*batch.Item) []*batch.Item {
			it := m.log(m.write(0, 512, m.data(1024)), m.bookmark(proto.Crash, "db01-c-x", runtimetest.Epoch.Add(5*time.Minute)))
			return []*batch.Item{it, it}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			m := newModel("db01")
			items := stream(m)
			upload(t, store, items...)
			hint(d, "db01", last(items))
			toCS(t, d)
			before := loadCatalog(t, store, "db01")
			wantPoints := len(m.points)
			dups := tt.dup(t, store, m, items)
			for _, it := range dups {
				upload(t, store, it)
				hint(d, "db01", it.Seq)
			}
			hint(d, "db01", last(items))
			// A last item of writes only waits for the next at most
			// DeferFor.
			d.Advance(DefaultDeferFor + DefaultPollEvery)
			evs, _ := toCS(t, d)
			points := 0
			for _, e := range evs {
				switch {
				case e.Event == proto.EventPoint:
					points++
				case e.Event == proto.EventSyncComplete && e.Detail == "announce":
				default:
					t.Errorf("event %s %s", e.Event, e.Detail)
				}
			}
			if want := len(m.points) - wantPoints; points != want {
				t.Errorf("%d point events, want %d: %v", points, want, eventNames(evs))
			}
			checkReplica(t, store, m)
			checkPoints(t, store, m)
			if got := cacheBlobs(t, store); len(got) != 0 {
				t.Errorf("cache still holds %v", got)
			}
			after := loadCatalog(t, store, "db01")
			if after.Applied != max(before.Applied, m.seq) {
				t.Errorf("applied %d, want %d", after.Applied, max(before.Applied, m.seq))
			}
		})
	}
}

// TestCrashConverges crashes the service at every storage call of the
// stream (every call after the k-th fails, then a new Service takes over
// the same storage) and checks that the replica, the points and the cache
// end exactly as without a crash: no wrong point, no orphan snapshot.
func TestCrashConverges(t *testing.T) {
	// Count the calls of a run without a crash.
	calls := 0
	{
		store := &hookStore{Store: memStore(), hook: func(string, string, string) error { calls++; return nil }}
		m := newModel("db01")
		items := stream(m)
		upload(t, store.Store, items...)
		calls = 0
		d := start(t, store)
		hint(d, "db01", last(items))
		checkPoints(t, store.Store, m)
	}
	if calls < 30 {
		t.Fatalf("only %d storage calls in the stream: the test would check little", calls)
	}
	for k := 1; k < calls; k++ {
		inner := memStore()
		n := 0
		var lastOp string
		store := &hookStore{Store: inner, hook: func(op, c, name string) error {
			n++
			if n > k {
				return errCrashed
			}
			lastOp = op
			return nil
		}}
		m := newModel("db01")
		items := stream(m)
		upload(t, inner, items...)
		d := start(t, store)
		hint(d, "db01", last(items))
		toCS(t, d)

		d2 := start(t, inner) // the restart: a new Service, same storage
		d2.SetLogger(warnLogger(t))
		if c, _, err := LoadCatalog(context.Background(), inner, testPrefix, "db01"); err == nil && c.Applied != last(items) {
			t.Errorf("crash after call %d (%s): a restart did not finish the stream (applied %d)", k, lastOp, c.Applied)
		}
		checkReplica(t, inner, m)
		checkPoints(t, inner, m)
		if got := cacheBlobs(t, inner); len(got) != 0 {
			t.Errorf("crash after call %d (%s): cache still holds %v", k, lastOp, got)
		}
		if t.Failed() {
			t.Fatalf("crash after call %d (%s)", k, lastOp)
		}
	}
}

// tamperings are the ways an item's blob can be damaged in storage so that
// it does not open; want is the error opening (or applying) it gives.
func tamperings() []struct {
	name    string
	corrupt func(t *testing.T, it *batch.Item, good []byte) []byte
	want    error
} {
	otherKey := [32]byte{9}
	return []struct {
		name    string
		corrupt func(t *testing.T, it *batch.Item, good []byte) []byte
		want    error
	}{
		{"flipped byte", func(t *testing.T, it *batch.Item, good []byte) []byte {
			b := slices.Clone(good)
			b[len(b)/2] ^= 0x10
			return b
		}, batch.ErrTamper},
		{"truncated", func(t *testing.T, it *batch.Item, good []byte) []byte { return good[:len(good)-7] }, batch.ErrTamper},
		{"not sealed", func(t *testing.T, it *batch.Item, good []byte) []byte { return []byte("hello") }, batch.ErrSealed},
		{"another vault's key", func(t *testing.T, it *batch.Item, good []byte) []byte {
			s, _ := batch.NewSealer(otherKey, batch.CodecS2)
			b, _ := s.Seal(nil, proto.CacheBlobName(it.Machine, it.Seq), it.Marshal())
			return b
		}, batch.ErrTamper},
		{"another item's blob", func(t *testing.T, it *batch.Item, good []byte) []byte {
			other := *it
			other.Seq++
			return sealed(t, &other)
		}, batch.ErrTamper},
		{"sealed garbage", func(t *testing.T, it *batch.Item, good []byte) []byte {
			s, _ := batch.NewSealer(testKey, batch.CodecS2)
			b, _ := s.Seal(nil, proto.CacheBlobName(it.Machine, it.Seq), []byte("not an item"))
			return b
		}, batch.ErrFormat},
	}
}

// TestTamperedItem: an item that opens but does not fit the replica is
// reported and retried at every poll (it is never skipped); an intact copy
// is then applied.
func TestTamperedItem(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, it *batch.Item, good []byte) []byte
		want    error
	}{
		{"write outside the disk", func(t *testing.T, it *batch.Item, good []byte) []byte {
			bad := *it
			bad.Runs = []batch.Run{{Off: disk1Size, Data: make([]byte, 4096)}}
			return sealed(t, &bad)
		}, ErrApply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			m := newModel("db01")
			items := stream(m)
			target := items[2] // the chunk of disk 1
			name := proto.CacheBlobName("db01", target.Seq)
			upload(t, store, items...)
			good := sealed(t, target)
			if _, err := store.Put(context.Background(), cacheContainer(testPrefix), name, tt.corrupt(t, target, good), blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			hint(d, "db01", last(items))
			for round := 1; round <= 2; round++ {
				evs, _ := toCS(t, d)
				var errs []*proto.ReplicaEvent
				for _, e := range evs {
					if e.Event == proto.EventApplyError {
						errs = append(errs, e)
					}
				}
				if len(errs) != 1 || errs[0].Seq != target.Seq || errs[0].Machine != "db01" || errs[0].Detail == "" {
					t.Fatalf("round %d: apply errors %+v, want one for item %d", round, errs, target.Seq)
				}
				if strings.Contains(errs[0].Detail, testPrefix+"cache") {
					t.Errorf("detail names the container: %s", errs[0].Detail)
				}
				st := service(d).Status().Machines[0]
				if st.Applied != target.Seq-1 || st.Failures != round || st.LastError == "" {
					t.Errorf("round %d: applied %d failures %d error %q", round, st.Applied, st.Failures, st.LastError)
				}
				if !slices.Contains(cacheBlobs(t, store), name) {
					t.Fatalf("round %d: the bad item was deleted", round)
				}
				d.Advance(DefaultPollEvery) // retried at the next poll
			}
			// The fetch error itself is the expected one.
			sl, _ := batch.NewSealer(testKey, batch.CodecS2)
			raw, _, _ := store.Get(context.Background(), cacheContainer(testPrefix), name, blob.ReadOptions{})
			plain, err := sl.Open(nil, name, raw)
			if err == nil {
				var it *batch.Item
				if it, err = batch.Unmarshal(plain); err == nil {
					err = applyOne(t, it)
				}
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}

			upload(t, store, target) // the process server uploads it again, intact
			d.Advance(DefaultPollEvery)
			checkReplica(t, store, m)
			checkPoints(t, store, m)
			if got := cacheBlobs(t, store); len(got) != 0 {
				t.Errorf("cache still holds %v", got)
			}
		})
	}
}

// TestRefusedItemResync: an item whose blob does not open (it fails AES-GCM
// authentication, or does not decode) is refused: reported as
// item-refused (once, then again every AnnounceEvery while it blocks the
// stream), never applied, never retried; the items after it are not
// applied either. The resync the configuration server then orders starts
// with a SyncStart of a newer generation numbered after them: the service
// skips ahead to it, and the resync leaves the replica exactly the source.
func TestRefusedItemResync(t *testing.T) {
	for _, tt := range tamperings() {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			m := newModel("db01")
			items := stream(m)
			target := items[5] // the second log item: points a-5 and c-8
			name := proto.CacheBlobName("db01", target.Seq)
			upload(t, store, items...)
			if _, err := store.Put(context.Background(), cacheContainer(testPrefix), name, tt.corrupt(t, target, sealed(t, target)), blob.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			hint(d, "db01", last(items))
			for round := 1; round <= 3; round++ {
				evs, _ := toCS(t, d)
				var refused []*proto.ReplicaEvent
				for _, e := range evs {
					switch e.Event {
					case proto.EventItemRefused:
						refused = append(refused, e)
					case proto.EventApplyError:
						t.Errorf("round %d: apply-error %+v: a refused item is not retried", round, e)
					}
				}
				if want := map[bool]int{true: 1, false: 0}[round == 1]; len(refused) != want {
					t.Fatalf("round %d: item-refused events %+v, want %d", round, refused, want)
				}
				if round == 1 && (refused[0].Seq != target.Seq || refused[0].Detail == "" || strings.Contains(refused[0].Detail, testPrefix+"cache")) {
					t.Errorf("refused %+v, want item %d with a detail naming no container", refused[0], target.Seq)
				}
				if st := service(d).Status().Machines[0]; st.Applied != target.Seq-1 {
					t.Fatalf("round %d: applied %d, want %d (nothing past the refused item)", round, st.Applied, target.Seq-1)
				}
				d.Advance(DefaultPollEvery)
			}
			// Reported again while it blocks the stream (a configuration
			// server that was down missed the first report: swarm seed 110).
			d.Advance(DefaultAnnounceEvery)
			evs, _ := toCS(t, d)
			if refused := eventsOf(evs, proto.EventItemRefused); len(refused) != 1 || refused[0].Seq != target.Seq || refused[0].Detail == "" {
				t.Fatalf("after %v: item-refused events %+v, want item %d again", DefaultAnnounceEvery, refused, target.Seq)
			}
			// Refused for the expected reason.
			sl, _ := batch.NewSealer(testKey, batch.CodecS2)
			raw, _, _ := store.Get(context.Background(), cacheContainer(testPrefix), name, blob.ReadOptions{})
			plain, err := sl.Open(nil, name, raw)
			if err == nil {
				_, err = batch.Unmarshal(plain)
			}
			if !errors.Is(err, tt.want) || !refusable(err) {
				t.Errorf("error %v, want %v (refusable)", err, tt.want)
			}
			// The refused item's and the skipped item's bookmarks never
			// become points.
			for _, id := range []string{"db01-a-5", "db01-c-8", "db01-c-10"} {
				delete(m.points, id)
			}
			// The resync: the source as it is now, sent again whole.
			resync := []*batch.Item{m.syncStart(disk0Size, disk1Size)}
			resync = append(resync,
				m.chunk(0, batch.Run{Off: 0, Data: bytes.Clone(m.disks[0][:8<<20])}),
				m.chunk(1, batch.Run{Off: 0, Data: bytes.Clone(m.disks[1][:8192])}))
			resync = append(resync, m.syncEnd(2), m.log(
				m.write(0, 4096, m.data(4096)),
				m.bookmark(proto.Crash, "db01-c-20", runtimetest.Epoch.Add(10*time.Minute))))
			upload(t, store, resync...)
			hint(d, "db01", last(resync))
			d.Advance(DefaultPollEvery)
			evs, _ = toCS(t, d)
			if names := eventNames(evs); !slices.Contains(names, "point:db01-c-20") || slices.Contains(names, proto.EventItemRefused) {
				t.Errorf("events after the resync: %v", names)
			}
			// The resync replaced the refused item: no more reports of it.
			d.Advance(DefaultAnnounceEvery)
			if evs, _ := toCS(t, d); len(eventsOf(evs, proto.EventItemRefused)) != 0 {
				t.Errorf("item-refused reported after the resync: %v", eventNames(evs))
			}
			c := loadCatalog(t, store, "db01")
			if c.Gen != 2 || !c.Synced || c.Applied != last(resync) {
				t.Errorf("catalog gen %d synced %v applied %d, want gen 2, synced, %d", c.Gen, c.Synced, c.Applied, last(resync))
			}
			checkReplica(t, store, m)
			checkPoints(t, store, m)
			d.Advance(DefaultPollEvery)
			if got := cacheBlobs(t, store); len(got) != 0 {
				t.Errorf("cache still holds %v", got)
			}
		})
	}
}

// TestSnapshotLost: a point whose snapshot disappeared from storage is
// found when the catalog is verified, dropped, and reported (point-lost);
// its snapshots of the other disks are deleted; the other points stay.
func TestSnapshotLost(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	checkPoints(t, store, m)
	toCS(t, d)
	c := loadCatalog(t, store, "db01")
	var lost Point
	for _, p := range c.Points {
		if p.ID == "db01-c-8" {
			lost = p
		}
	}
	if lost.ID == "" {
		t.Fatalf("no point db01-c-8 in %+v", c.Points)
	}
	if err := store.DeleteSnapshot(context.Background(), replicaContainer(testPrefix), c.Disks[1].Blob, lost.Snapshots[1]); err != nil {
		t.Fatal(err)
	}
	d.Advance(DefaultVerifyEvery)
	evs, _ := toCS(t, d)
	var got []*proto.ReplicaEvent
	for _, e := range evs {
		if e.Event == proto.EventPointLost {
			got = append(got, e)
		}
	}
	if len(got) != 1 || got[0].PointID != "db01-c-8" || got[0].Detail == "" || !got[0].PointTime.Equal(lost.Time) {
		t.Fatalf("point-lost events %+v, want one for db01-c-8", got)
	}
	delete(m.points, "db01-c-8")
	checkPoints(t, store, m) // also: no snapshot of the lost point left on disk 0
	d.Advance(DefaultVerifyEvery)
	if evs, _ := toCS(t, d); slices.Contains(eventNames(evs), proto.EventPointLost+":db01-c-8") {
		t.Errorf("the lost point was reported again: %v", eventNames(evs))
	}
}

// TestSnapshotLostWhileRunWaits: a machine whose stream is nearly always a
// run of deferred write items waiting for its next item (a steady writer)
// is still verified: a point whose snapshot is gone is dropped and reported
// within VerifyEvery while the run still waits (swarm seeds 16, 22, 23 and
// 37: the verification starved behind deferred runs, and the catalog kept
// a point that could no longer be read).
func TestSnapshotLostWhileRunWaits(t *testing.T) {
	store := memStore()
	d := runtimetest.New(t, azAddr, New(Config{Store: store, ContainerPrefix: testPrefix, Key: testKey, DeferFor: time.Hour}))
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	checkPoints(t, store, m)
	toCS(t, d)
	waiting := m.log(m.write(0, 0, m.data(4096)))
	upload(t, store, waiting)
	hint(d, "db01", waiting.Seq)
	c := loadCatalog(t, store, "db01")
	lost := c.Points[0]
	if err := store.DeleteSnapshot(context.Background(), replicaContainer(testPrefix), c.Disks[0].Blob, lost.Snapshots[0]); err != nil {
		t.Fatal(err)
	}
	d.Advance(DefaultVerifyEvery + DefaultPollEvery)
	if got := service(d).Status().Machines[0]; got.Waiting == 0 {
		t.Fatalf("no run waiting (applied %d): nothing to judge", got.Applied)
	}
	evs, _ := toCS(t, d)
	if names := eventNames(evs); !slices.Contains(names, proto.EventPointLost+":"+lost.ID) {
		t.Fatalf("events %v, want %s:%s while the run waits", names, proto.EventPointLost, lost.ID)
	}
}

// applyOne applies a chunk to the standard stream's replica after its
// SyncStart, to classify an item's error without the actor.
func applyOne(t *testing.T, it *batch.Item) error {
	store := memStore()
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items[0])
	start(t, store).Receive(psAddr, &proto.Uploaded{Machine: "db01", UpTo: 1})
	c, etag, err := LoadCatalog(context.Background(), store, testPrefix, "db01")
	if err != nil {
		t.Fatal(err)
	}
	c.Applied = it.Seq - 1
	a := &applier{ctx: context.Background(), st: storage{store: store, prefix: testPrefix}, cat: c, etag: etag}
	return a.apply(it)
}

func TestRevoke(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	t0 := runtimetest.Epoch
	items := []*batch.Item{m.syncStart(64 << 10), m.chunk(0, batch.Run{Off: 0, Data: m.data(8192)}), m.syncEnd(1)}
	items = append(items, m.log(m.write(0, 0, m.data(4096)), m.bookmark(proto.Crash, "b1", t0), m.write(0, 4096, m.data(4096))))
	items = append(items, m.log(m.revoke("b1"), m.write(0, 512, m.data(512)), m.revoke("b2"),
		m.bookmark(proto.Crash, "b2", t0.Add(time.Second)), m.bookmark(proto.App, "b3", t0.Add(2*time.Second))))
	items = append(items, m.log(m.bookmark(proto.Crash, "b1", t0.Add(3*time.Second))))
	upload(t, store, items...)
	hint(d, "db01", last(items))
	evs, _ := toCS(t, d)
	if diff := cmp.Diff([]string{"sync-started", "sync-complete", "point:b1", "pruned:b1", "point:b3"}, eventNames(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for _, e := range evs {
		if e.Event == proto.EventPruned && e.Detail != "revoked" {
			t.Errorf("pruned event detail %q, want revoked", e.Detail)
		}
	}
	c := loadCatalog(t, store, "db01")
	if diff := cmp.Diff([]string{"b1", "b2"}, c.Revoked); diff != "" {
		t.Errorf("revoked (-want +got):\n%s", diff)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
}

// TestRetention replays a day and more of crash-consistent points every
// five minutes and checks retention and hourly thinning as properties,
// independently of how the service prunes.
func TestRetention(t *testing.T) {
	sixHours := proto.DefaultPolicy()
	sixHours.Name, sixHours.Retention = "short", 6*time.Hour
	tests := []struct {
		name      string
		policy    *proto.Policy // sent with PolicyFor after policyAt
		policyAt  time.Duration
		retention time.Duration
	}{
		{"default 24 h", nil, 0, 24 * time.Hour},
		{"6 h from the start", &sixHours, 0, 6 * time.Hour},
		{"shortened to 6 h after 10 h", &sixHours, 10 * time.Hour, 6 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memStore()
			d := start(t, store)
			m := newModel("db01")
			items := []*batch.Item{m.syncStart(64 << 10), m.syncEnd(0)}
			upload(t, store, items...)
			hint(d, "db01", last(items))
			times := map[string]time.Time{}
			pruned := map[string]bool{}
			begin := d.Now()
			policySent := tt.policy == nil
			for d.Now().Sub(begin) < 26*time.Hour {
				if !policySent && d.Now().Sub(begin) >= tt.policyAt {
					d.Receive(csAddr, &proto.PolicyFor{Machine: "db01", Policy: *tt.policy})
					policySent = true
					c := loadCatalog(t, store, "db01")
					for _, p := range c.Points {
						if p.Time.Before(d.Now().Add(-tt.retention)) {
							t.Fatalf("point %s at %v kept after the policy change at %v", p.ID, p.Time, d.Now())
						}
					}
					if c.Policy != *tt.policy {
						t.Errorf("catalog policy %+v", c.Policy)
					}
				}
				id := "db01-c-" + d.Now().Format("150405-02")
				it := m.log(m.write(0, 0, m.data(512)), m.bookmark(proto.Crash, id, d.Now()))
				times[id] = d.Now()
				upload(t, store, it)
				hint(d, "db01", it.Seq)
				evs, _ := toCS(t, d)
				for _, e := range evs {
					if e.Event == proto.EventPruned {
						if pruned[e.PointID] {
							t.Errorf("%s pruned twice", e.PointID)
						}
						pruned[e.PointID] = true
					}
				}
				d.Advance(5 * time.Minute)
			}
			d.Advance(DefaultPollEvery)
			evs, _ := toCS(t, d)
			for _, e := range evs {
				if e.Event == proto.EventPruned {
					pruned[e.PointID] = true
				}
			}

			now := service(d).Status().Now
			c := loadCatalog(t, store, "db01")
			kept := map[string]bool{}
			perHour := map[time.Time][]string{}
			for _, p := range c.Points {
				kept[p.ID] = true
				if !p.Time.Equal(times[p.ID]) {
					t.Errorf("point %s time %v, want %v", p.ID, p.Time, times[p.ID])
				}
				if p.Time.Before(now.Add(-tt.retention)) {
					t.Errorf("point %s at %v is older than the retention at %v", p.ID, p.Time, now)
				}
				if p.Time.Before(now.Add(-KeepAllFor)) {
					h := p.Time.Truncate(time.Hour)
					perHour[h] = append(perHour[h], p.ID)
				}
			}
			firstOfHour := map[time.Time]time.Time{}
			for _, at := range times {
				h := at.Truncate(time.Hour)
				if f, ok := firstOfHour[h]; !ok || at.Before(f) {
					firstOfHour[h] = at
				}
			}
			for id, at := range times {
				h := at.Truncate(time.Hour)
				switch {
				case !at.Before(now.Add(-KeepAllFor)) && !kept[id]:
					t.Errorf("point %s at %v within the last 2 hours was pruned", id, at)
				case kept[id] && at.Before(now.Add(-KeepAllFor)) && !at.Equal(firstOfHour[h]) && !h.Before(now.Add(-tt.retention)):
					t.Errorf("point %s at %v is not the first of its hour (%v)", id, at, firstOfHour[h])
				case at.Equal(firstOfHour[h]) && !h.Before(now.Add(-tt.retention)) && h.Add(time.Hour).Before(now.Add(-KeepAllFor)) && !kept[id]:
					t.Errorf("point %s at %v, the first of a whole hour within retention, was pruned", id, at)
				}
				if kept[id] == pruned[id] {
					t.Errorf("point %s kept %v pruned-event %v", id, kept[id], pruned[id])
				}
			}
			for h, ids := range perHour {
				if len(ids) > 1 {
					t.Errorf("hour %v keeps %d points: %v", h, len(ids), ids)
				}
			}
			if hours := int(tt.retention / time.Hour); len(c.Points) < hours-3+24 || len(c.Points) > hours+25 {
				t.Errorf("%d points kept", len(c.Points))
			}
			checkNoOrphans(t, store, c)
			st := service(d).Status().Machines[0]
			if st.Points != len(c.Points) || st.RPO != now.Sub(st.NewestPoint) || st.RPO <= 0 {
				t.Errorf("status points %d RPO %v newest %v", st.Points, st.RPO, st.NewestPoint)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 30, 0, 0, time.UTC)
	pt := func(id string, ago time.Duration) Point { return Point{ID: id, Time: now.Add(-ago)} }
	tests := []struct {
		name      string
		points    []Point
		retention time.Duration
		keep      []string
	}{
		{"none", nil, 24 * time.Hour, nil},
		{"recent kept", []Point{pt("a", time.Minute), pt("b", 119*time.Minute)}, 24 * time.Hour, []string{"a", "b"}},
		{"older than retention", []Point{pt("a", 25*time.Hour), pt("b", time.Hour)}, 24 * time.Hour, []string{"b"}},
		// 09:05, 09:35 and 09:55 share an hour; 10:05 and 10:20 another
		// (both before now−2h = 10:30); 10:40 is recent.
		{"thinned per clock hour", []Point{pt("0905", 205*time.Minute), pt("0935", 175*time.Minute), pt("0955", 155*time.Minute),
			pt("1005", 145*time.Minute), pt("1020", 130*time.Minute), pt("1040", 110*time.Minute)},
			24 * time.Hour, []string{"0905", "1005", "1040"}},
		{"first of the hour by time, not order", []Point{pt("late", 170*time.Minute), pt("early", 200*time.Minute)}, 24 * time.Hour, []string{"early"}},
		{"zero retention is the default", []Point{pt("old", 25*time.Hour), pt("new", time.Minute)}, 0, []string{"new"}},
		{"short retention", []Point{pt("a", 7*time.Hour), pt("b", 5*time.Hour), pt("c", time.Minute)}, 6 * time.Hour, []string{"b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keep, drop := prune(tt.points, now, tt.retention, 0, thinning{})
			var got []string
			for _, p := range keep {
				got = append(got, p.ID)
			}
			if diff := cmp.Diff(tt.keep, got); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
			if len(keep)+len(drop) != len(tt.points) {
				t.Errorf("kept %d + dropped %d of %d", len(keep), len(drop), len(tt.points))
			}
			if again, more := prune(keep, now, tt.retention, 0, thinning{}); len(more) != 0 || len(again) != len(keep) {
				t.Errorf("pruning again drops %d more", len(more))
			}
		})
	}
}

// TestPruneContinuous: under a crash interval under ContinuousUnder the
// minute tier thins points between KeepEveryFor and KeepAllFor to one per
// clock minute, an app point first; under the default interval the same
// points are all kept (no minute tier).
func TestPruneContinuous(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 30, 0, 0, time.UTC)
	pt := func(id string, ago time.Duration, k proto.Consistency) Point {
		return Point{ID: id, Time: now.Add(-ago), Kind: k, Seq: uint64(10_000 - ago/time.Second)}
	}
	c, a := proto.Crash, proto.App
	points := []Point{
		// 10:05:xx, 10:20:xx: the hour tier (before now−2h = 10:30).
		pt("1005:00", 145*time.Minute, c), pt("1005:05", 145*time.Minute-5*time.Second, c), pt("1020:00", 130*time.Minute, c),
		// 11:00:00-11:00:10: the minute tier; the app point at 11:00:05 is
		// kept rather than the earlier crash point of its minute.
		pt("1100:00", 90*time.Minute, c), pt("1100:05a", 90*time.Minute-5*time.Second, a), pt("1100:10", 90*time.Minute-10*time.Second, c),
		// 11:01:55 and 11:02:00 are in two minutes: both kept.
		pt("1101:55", 88*time.Minute+5*time.Second, c), pt("1102:00", 88*time.Minute, c),
		// 12:14:55, 12:15:00: the newest 15 minutes start at 12:15:00.
		pt("1214:50", 15*time.Minute+10*time.Second, c), pt("1214:55", 15*time.Minute+5*time.Second, c),
		pt("1215:00", 15*time.Minute, c), pt("1215:05", 15*time.Minute-5*time.Second, c), pt("1229:55", 5*time.Second, c),
	}
	ids := func(ps []Point) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	for _, tt := range []struct {
		name  string
		every time.Duration
		keep  []string
	}{
		{"5s", 5 * time.Second, []string{"1005:00", "1100:05a", "1101:55", "1102:00", "1214:50", "1215:00", "1215:05", "1229:55"}},
		{"59s", 59 * time.Second, []string{"1005:00", "1100:05a", "1101:55", "1102:00", "1214:50", "1215:00", "1215:05", "1229:55"}},
		{"1m: no minute tier", time.Minute, []string{"1005:00", "1100:00", "1100:05a", "1100:10", "1101:55", "1102:00", "1214:50", "1214:55", "1215:00", "1215:05", "1229:55"}},
		{"default", 0, []string{"1005:00", "1100:00", "1100:05a", "1100:10", "1101:55", "1102:00", "1214:50", "1214:55", "1215:00", "1215:05", "1229:55"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			keep, drop := prune(points, now, 24*time.Hour, tt.every, thinning{})
			if d := cmp.Diff(tt.keep, ids(keep)); d != "" {
				t.Errorf("kept (-want +got):\n%s", d)
			}
			if len(keep)+len(drop) != len(points) {
				t.Errorf("kept %d + dropped %d of %d", len(keep), len(drop), len(points))
			}
			if _, more := prune(keep, now, 24*time.Hour, tt.every, thinning{}); len(more) != 0 {
				t.Errorf("pruning again drops %v", ids(more))
			}
		})
	}
	// Bounded: a day of 5-s points pruned every 5 s keeps 180 + 105 + one
	// an hour.
	var pts []Point
	start := now.Add(-24 * time.Hour)
	for i := 0; i < 24*720; i++ {
		at := start.Add(time.Duration(i) * 5 * time.Second)
		pts = append(pts, Point{ID: fmt.Sprintf("p%d", i), Time: at, Kind: c, Seq: uint64(i + 1)})
		if i%12 == 0 || i == 24*720-1 {
			pts, _ = prune(pts, at, 24*time.Hour, 5*time.Second, thinning{})
		}
	}
	if n := len(pts); n < 180+105+21 || n > 180+105+24+12 {
		t.Errorf("a day of 5-s points keeps %d, want about 307", n)
	}
}

func TestCatalogConflictRetried(t *testing.T) {
	// interfere changes the catalog under the service before its n-th
	// catalog put (or before every put), as another writer would.
	interfere := func(inner blob.Store, every bool, n int) func(op, c, name string) error {
		puts := 0
		return func(op, c, name string) error {
			if op != "Put" || c != catalogContainer(testPrefix) {
				return nil
			}
			puts++
			if !every && puts != n {
				return nil
			}
			ctx := context.Background()
			data, _, err := inner.Get(ctx, c, name, blob.ReadOptions{})
			if errors.Is(err, blob.ErrNotFound) {
				data, _ = json.Marshal(newCatalog(strings.TrimSuffix(name, ".json")))
			}
			if _, err := inner.Put(ctx, c, name, data, blob.WriteOptions{}); err != nil {
				return err
			}
			return nil
		}
	}
	type tc struct {
		name  string
		every bool
		n     int
	}
	tests := []tc{{"always", true, 0}}
	for n := 1; n <= 12; n++ {
		tests = append(tests, tc{"put " + string(rune('0'+n/10)) + string(rune('0'+n%10)), false, n})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := memStore()
			store := &hookStore{Store: inner}
			store.hook = interfere(inner, tt.every, tt.n)
			d := start(t, store)
			m := newModel("db01")
			items := stream(m)
			upload(t, inner, items...)
			hint(d, "db01", last(items))
			evs, _ := toCS(t, d)
			if tt.every {
				st := service(d).Status().Machines[0]
				if st.Failures == 0 || !strings.Contains(st.LastError, "etag") || st.Applied != 0 {
					t.Fatalf("endless conflicts: status %+v", st)
				}
				store.mu.Lock()
				store.hook = nil
				store.mu.Unlock()
				d.Advance(DefaultPollEvery)
			} else {
				for _, e := range evs {
					if e.Event == proto.EventApplyError {
						t.Errorf("apply error after one conflict: %s", e.Detail)
					}
				}
			}
			checkReplica(t, inner, m)
			checkPoints(t, inner, m)
			if c := loadCatalog(t, inner, "db01"); c.Applied != last(items) {
				t.Errorf("applied %d, want %d", c.Applied, last(items))
			}
		})
	}
}

// TestTransientPageWriteRetried: every other page write fails with a
// transient error. Each is retried at once, so every item applies at the
// first poll; retrying only whole items would never get one with two page
// writes through.
func TestTransientPageWriteRetried(t *testing.T) {
	inner := memStore()
	writes := 0
	store := &hookStore{Store: inner, hook: func(op, _, _ string) error {
		if op != "WritePages" {
			return nil
		}
		writes++
		if writes%2 == 1 {
			return errors.New("503 Server Busy")
		}
		return nil
	}}
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, inner, items...)
	hint(d, "db01", last(items))
	evs, _ := toCS(t, d)
	for _, e := range evs {
		if e.Event == proto.EventApplyError {
			t.Errorf("apply error despite the retry: %s", e.Detail)
		}
	}
	if writes < 4 {
		t.Fatalf("only %d page writes: the test judged little", writes)
	}
	checkReplica(t, inner, m)
	checkPoints(t, inner, m)
	if c := loadCatalog(t, inner, "db01"); c.Applied != last(items) {
		t.Errorf("applied %d, want %d", c.Applied, last(items))
	}
}

func TestCorruptFrameDropped(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	good := wire.Encode(&proto.Uploaded{Machine: "db01", UpTo: last(items)})
	flipped := slices.Clone(good)
	flipped[len(flipped)-6] ^= 1
	for _, frame := range [][]byte{nil, []byte("garbage"), good[:len(good)-3], flipped,
		wire.Encode(&proto.Heartbeat{Machine: "db01"}), wire.Encode(&proto.Uploaded{})} {
		d.ReceiveFrame(psAddr, frame)
	}
	if sent := d.Sent(); len(sent) != 0 {
		t.Errorf("sent %v in answer to bad frames", sent)
	}
	upload(t, store, items...)
	d.ReceiveFrame(psAddr, good)
	checkReplica(t, store, m)
	checkPoints(t, store, m)
}

func TestMachinesIndependent(t *testing.T) {
	store := memStore()
	d := start(t, store)
	a, b := newModel("app01"), newModel("db01")
	ia, ib := stream(a), stream(b)
	upload(t, store, ia...)
	upload(t, store, ib[:2]...)
	upload(t, store, ib[3:]...) // db01 waits for its item 3; app01 goes on
	d.Advance(DefaultPollEvery)
	st := service(d).Status().Machines
	if len(st) != 2 || st[0].Machine != "app01" || st[1].Machine != "db01" {
		t.Fatalf("status machines %+v", st)
	}
	if st[0].Applied != last(ia) || st[1].Applied != 2 || !st[1].Gap {
		t.Errorf("app01 applied %d, db01 applied %d gap %v", st[0].Applied, st[1].Applied, st[1].Gap)
	}
	upload(t, store, ib[2])
	d.Advance(DefaultPollEvery)
	for _, m := range []*model{a, b} {
		checkReplica(t, store, m)
		checkPoints(t, store, m)
	}
}

// TestAnnounce: a synced machine's sync-complete is sent again, for a
// configuration server that lost it.
func TestAnnounce(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	toCS(t, d)
	d.Advance(DefaultAnnounceEvery)
	evs, _ := toCS(t, d)
	if len(evs) != 1 || evs[0].Event != proto.EventSyncComplete || evs[0].Gen != 1 || evs[0].Applied != last(items) {
		t.Errorf("announcements %+v", evs)
	}
}

// TestResyncPastLostItems: items a process server lost with its cache
// never arrive; the agent's resync numbers its SyncStart past them, and the
// Azure side applies it (and the sync after it) past the gap. A listed item
// past a gap that is not a newer sync's SyncStart is not applied.
func TestResyncPastLostItems(t *testing.T) {
	store := memStore()
	d := start(t, store)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items[:5]...) // items[5:] were lost with the cache
	hint(d, "db01", items[4].Seq)
	stray := m.log(m.write(0, 0, m.data(4096))) // a log item past the gap: must wait
	upload(t, store, stray)
	d.Advance(DefaultPollEvery)
	if got := service(d).Status().Machines[0]; got.Applied != items[4].Seq || !got.Gap {
		t.Fatalf("before the resync: applied %d gap %v, want %d true", got.Applied, got.Gap, items[4].Seq)
	}
	resync := []*batch.Item{m.syncStart(disk0Size, disk1Size)}
	for i := range m.disks {
		resync = append(resync, m.chunk(uint16(i), batch.Run{Off: 0, Data: append([]byte(nil), m.disks[i]...)}))
	}
	resync = append(resync, m.syncEnd(uint64(len(m.disks))))
	upload(t, store, resync...)
	d.Advance(DefaultPollEvery)
	got := service(d).Status().Machines[0]
	if last := resync[len(resync)-1].Seq; got.Applied != last || got.Gen != 2 || !got.Synced {
		t.Fatalf("after the resync: %+v, want applied %d, gen 2, synced", got, last)
	}
	checkReplica(t, store, m)
}

// eventsOf are the events of evs named event.
func eventsOf(evs []*proto.ReplicaEvent, event string) []*proto.ReplicaEvent {
	var out []*proto.ReplicaEvent
	for _, e := range evs {
		if e.Event == event {
			out = append(out, e)
		}
	}
	return out
}
