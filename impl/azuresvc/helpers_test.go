package azuresvc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	testPrefix = "t-"
	csAddr     = runtime.Addr("cs01:443")
	psAddr     = runtime.Addr("ps01:9443")
	azAddr     = runtime.Addr("asr.azure:443")
)

var testKey = [32]byte{7, 1, 2, 3}

// model is the agent side of a test: it numbers items and log records as
// the agent does, keeps the source disks' images, and knows which recovery
// points must exist with which images.
type model struct {
	machine string
	seq     uint64 // items made
	logSeq  uint64
	gen     uint64
	synced  bool
	disks   [][]byte
	points  map[string][][]byte // expected point images by id
	revoked map[string]bool
	rnd     *rand.Rand
}

func newModel(machine string) *model {
	return &model{machine: machine, points: map[string][][]byte{}, revoked: map[string]bool{},
		rnd: rand.New(rand.NewPCG(uint64(len(machine)), 99))}
}

func (m *model) next(it batch.Item) *batch.Item {
	m.seq++
	it.Machine, it.Seq = m.machine, m.seq
	return &it
}

func (m *model) syncStart(sizes ...int64) *batch.Item {
	m.gen++
	m.synced = false
	for i, s := range sizes {
		if i >= len(m.disks) {
			m.disks = append(m.disks, nil)
		}
		d := make([]byte, s)
		copy(d, m.disks[i])
		m.disks[i] = d
	}
	return m.next(batch.Item{Kind: batch.KindSyncStart, Gen: m.gen, DiskSizes: sizes})
}

func (m *model) chunk(disk uint16, runs ...batch.Run) *batch.Item {
	for _, r := range runs {
		copy(m.disks[disk][r.Off:], r.Data)
	}
	return m.next(batch.Item{Kind: batch.KindChunk, Gen: m.gen, Disk: disk, Runs: runs})
}

func (m *model) syncEnd(chunks uint64) *batch.Item {
	m.synced = true
	return m.next(batch.Item{Kind: batch.KindSyncEnd, Gen: m.gen, LogFrom: m.logSeq + 1, Chunks: chunks})
}

// data is n bytes of seeded random data.
func (m *model) data(n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], m.rnd.Uint64())
	}
	return b[:n:n]
}

func (m *model) write(disk uint16, off int64, data []byte) batch.Record {
	m.logSeq++
	copy(m.disks[disk][off:], data)
	return batch.Record{Seq: m.logSeq, Type: batch.RecWrite, Disk: disk, Off: off, Data: data}
}

func (m *model) snapshotImages() [][]byte {
	out := make([][]byte, len(m.disks))
	for i, d := range m.disks {
		out[i] = bytes.Clone(d)
	}
	return out
}

func (m *model) bookmark(kind proto.Consistency, id string, at time.Time) batch.Record {
	m.logSeq++
	if m.synced && !m.revoked[id] && m.points[id] == nil {
		m.points[id] = m.snapshotImages()
	}
	return batch.Record{Seq: m.logSeq, Type: batch.RecBookmark, BookmarkKind: kind, BookmarkID: id, UnixNano: at.UnixNano()}
}

func (m *model) revoke(id string) batch.Record {
	m.logSeq++
	m.revoked[id] = true
	delete(m.points, id)
	return batch.Record{Seq: m.logSeq, Type: batch.RecRevoke, BookmarkID: id}
}

func (m *model) log(recs ...batch.Record) *batch.Item {
	return m.next(batch.Item{Kind: batch.KindLog, First: recs[0].Seq, Last: recs[len(recs)-1].Seq, Records: recs})
}

// sealed is the cache blob of it, as the process server uploads it.
func sealed(t testing.TB, it *batch.Item) []byte {
	t.Helper()
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Seal(nil, proto.CacheBlobName(it.Machine, it.Seq), it.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// upload puts items into the cache container as the process server does.
func upload(t testing.TB, store blob.Store, items ...*batch.Item) {
	t.Helper()
	ctx := context.Background()
	if err := store.CreateContainer(ctx, cacheContainer(testPrefix)); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if _, err := store.Put(ctx, cacheContainer(testPrefix), proto.CacheBlobName(it.Machine, it.Seq), sealed(t, it), blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs a Service (a new one: a restart after a crash is just this
// again on the same store).
func start(t testing.TB, store blob.Store) *runtimetest.Driver {
	t.Helper()
	return runtimetest.New(t, azAddr, New(Config{Store: store, ContainerPrefix: testPrefix, Key: testKey}))
}

// service is the driver's actor.
func service(d *runtimetest.Driver) *Service { return d.Actor.(*Service) }

func hint(d *runtimetest.Driver, machine string, upTo uint64) {
	d.Receive(psAddr, &proto.Uploaded{Machine: machine, UpTo: upTo})
}

// toCS splits what the service sent to the configuration server.
func toCS(t testing.TB, d *runtimetest.Driver) (events []*proto.ReplicaEvent, sums []*proto.Checksums) {
	t.Helper()
	for _, s := range d.Sent() {
		if s.To != csAddr {
			t.Errorf("message to %s: %#v", s.To, s.Msg)
			continue
		}
		switch m := s.Msg.(type) {
		case *proto.ReplicaEvent:
			events = append(events, m)
		case *proto.Checksums:
			sums = append(sums, m)
		default:
			t.Errorf("unexpected message %s to the configuration server", wire.KindName(s.Msg.WireKind()))
		}
	}
	return events, sums
}

// eventNames is "event:point" for each event, for compact comparisons.
func eventNames(evs []*proto.ReplicaEvent) []string {
	var out []string
	for _, e := range evs {
		s := e.Event
		if e.PointID != "" {
			s += ":" + e.PointID
		}
		out = append(out, s)
	}
	return out
}

func loadCatalog(t testing.TB, store blob.Store, machine string) *Catalog {
	t.Helper()
	c, _, err := LoadCatalog(context.Background(), store, testPrefix, machine)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// diffImage describes how got differs from want, "" if equal.
func diffImage(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	if len(got) != len(want) {
		return fmt.Sprintf("size %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	return ""
}

func readDisk(t testing.TB, store blob.Store, d Disk, snapshot string) []byte {
	t.Helper()
	b, _, err := store.Get(context.Background(), replicaContainer(testPrefix), d.Blob, blob.ReadOptions{Snapshot: snapshot})
	if err != nil {
		t.Fatalf("read %s snapshot %q: %v", d.Blob, snapshot, err)
	}
	return b
}

// checkReplica compares the replica disks with the model's.
func checkReplica(t testing.TB, store blob.Store, m *model) {
	t.Helper()
	c := loadCatalog(t, store, m.machine)
	if len(c.Disks) != len(m.disks) {
		t.Fatalf("catalog has %d disks, want %d", len(c.Disks), len(m.disks))
	}
	for i, d := range c.Disks {
		if diff := diffImage(readDisk(t, store, d, ""), m.disks[i]); diff != "" {
			t.Errorf("replica disk %d: %s", i, diff)
		}
	}
}

// checkPoints compares the catalog's points with the model's: the same ids,
// and every snapshot reads back exactly the expected image. It also checks
// that no snapshot exists that no point references.
func checkPoints(t testing.TB, store blob.Store, m *model) {
	t.Helper()
	c := loadCatalog(t, store, m.machine)
	var got, want []string
	for _, p := range c.Points {
		got = append(got, p.ID)
	}
	for id := range m.points {
		want = append(want, id)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("points %v, want %v", got, want)
	}
	for _, p := range c.Points {
		img := m.points[p.ID]
		if img == nil || len(p.Snapshots) != len(c.Disks) {
			continue
		}
		for i, d := range c.Disks {
			if diff := diffImage(readDisk(t, store, d, p.Snapshots[i]), img[i]); diff != "" {
				t.Errorf("point %s disk %d: %s", p.ID, i, diff)
			}
		}
	}
	checkNoOrphans(t, store, c)
}

func checkNoOrphans(t testing.TB, store blob.Store, c *Catalog) {
	t.Helper()
	for i, d := range c.Disks {
		snaps, err := store.Snapshots(context.Background(), replicaContainer(testPrefix), d.Blob)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) != len(c.Points) {
			t.Errorf("disk %d has %d snapshots for %d points", i, len(snaps), len(c.Points))
		}
	}
}

func cacheBlobs(t testing.TB, store blob.Store) []string {
	t.Helper()
	items, err := store.List(context.Background(), cacheContainer(testPrefix), "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

// hookStore wraps a Store and calls hook before every call (op is the
// method's name); an error from hook is the call's result.
type hookStore struct {
	blob.Store
	mu   sync.Mutex
	hook func(op, container, name string) error
}

func (h *hookStore) before(op, c, n string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hook == nil {
		return nil
	}
	return h.hook(op, c, n)
}

func (h *hookStore) CreateContainer(ctx context.Context, c string) error {
	if err := h.before("CreateContainer", c, ""); err != nil {
		return err
	}
	return h.Store.CreateContainer(ctx, c)
}
func (h *hookStore) List(ctx context.Context, c, prefix string) ([]blob.Item, error) {
	if err := h.before("List", c, prefix); err != nil {
		return nil, err
	}
	return h.Store.List(ctx, c, prefix)
}
func (h *hookStore) Put(ctx context.Context, c, n string, data []byte, o blob.WriteOptions) (string, error) {
	if err := h.before("Put", c, n); err != nil {
		return "", err
	}
	return h.Store.Put(ctx, c, n, data, o)
}
func (h *hookStore) Get(ctx context.Context, c, n string, o blob.ReadOptions) ([]byte, blob.Props, error) {
	if err := h.before("Get", c, n); err != nil {
		return nil, blob.Props{}, err
	}
	return h.Store.Get(ctx, c, n, o)
}
func (h *hookStore) Properties(ctx context.Context, c, n string) (blob.Props, error) {
	if err := h.before("Properties", c, n); err != nil {
		return blob.Props{}, err
	}
	return h.Store.Properties(ctx, c, n)
}
func (h *hookStore) Delete(ctx context.Context, c, n string, o blob.WriteOptions) error {
	if err := h.before("Delete", c, n); err != nil {
		return err
	}
	return h.Store.Delete(ctx, c, n, o)
}
func (h *hookStore) DeleteBatch(ctx context.Context, c string, names []string) []error {
	errs := make([]error, len(names))
	for i, n := range names {
		errs[i] = h.Delete(ctx, c, n, blob.WriteOptions{})
	}
	return errs
}
func (h *hookStore) CreatePageBlob(ctx context.Context, c, n string, size int64, o blob.WriteOptions) (string, error) {
	if err := h.before("CreatePageBlob", c, n); err != nil {
		return "", err
	}
	return h.Store.CreatePageBlob(ctx, c, n, size, o)
}
func (h *hookStore) Resize(ctx context.Context, c, n string, size int64, o blob.WriteOptions) (string, error) {
	if err := h.before("Resize", c, n); err != nil {
		return "", err
	}
	return h.Store.Resize(ctx, c, n, size, o)
}
func (h *hookStore) WritePages(ctx context.Context, c, n string, off int64, data []byte, o blob.WriteOptions) (string, error) {
	if err := h.before("WritePages", c, n); err != nil {
		return "", err
	}
	return h.Store.WritePages(ctx, c, n, off, data, o)
}
func (h *hookStore) PageRanges(ctx context.Context, c, n, snap string) ([]blob.Range, error) {
	if err := h.before("PageRanges", c, n); err != nil {
		return nil, err
	}
	return h.Store.PageRanges(ctx, c, n, snap)
}
func (h *hookStore) Snapshot(ctx context.Context, c, n string, md map[string]string) (string, error) {
	if err := h.before("Snapshot", c, n); err != nil {
		return "", err
	}
	return h.Store.Snapshot(ctx, c, n, md)
}
func (h *hookStore) Snapshots(ctx context.Context, c, n string) ([]blob.Snapshot, error) {
	if err := h.before("Snapshots", c, n); err != nil {
		return nil, err
	}
	return h.Store.Snapshots(ctx, c, n)
}
func (h *hookStore) DeleteSnapshot(ctx context.Context, c, n, snap string) error {
	if err := h.before("DeleteSnapshot", c, n); err != nil {
		return err
	}
	return h.Store.DeleteSnapshot(ctx, c, n, snap)
}

// errCrashed is what a "crashed" store answers.
var errCrashed = fmt.Errorf("test: crashed")

// memStore is a fresh in-memory store.
func memStore() *memblob.Store { return memblob.New() }

// warnLogger writes warnings and errors to the test log.
func warnLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
