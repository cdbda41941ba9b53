package processsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	psAddr    = runtime.Addr("ps01:9443")
	agentAddr = runtime.Addr("db01:20004")
	azureAddr = runtime.Addr("asr.azure:443")
	csAddr    = runtime.Addr("cs01:443")
	prefix    = "v2a-test-"
	itemBytes = 8192 // payload of the test items
)

var testKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}

// store wraps a blob.Store: it records the Puts tried and fails the first
// failPuts of them, and the first failCreates container creations.
type store struct {
	blob.Store
	mu          sync.Mutex
	failPuts    int
	failCreates int
	puts        []string // blob names, in the order tried
}

func (s *store) Put(ctx context.Context, c, name string, data []byte, o blob.WriteOptions) (string, error) {
	s.mu.Lock()
	s.puts = append(s.puts, name)
	fail := s.failPuts > 0
	if fail {
		s.failPuts--
	}
	s.mu.Unlock()
	if fail {
		return "", blob.Errorf("put", c, name, errors.New("injected: connection reset"), "")
	}
	return s.Store.Put(ctx, c, name, data, o)
}

func (s *store) CreateContainer(ctx context.Context, c string) error {
	s.mu.Lock()
	fail := s.failCreates > 0
	if fail {
		s.failCreates--
	}
	s.mu.Unlock()
	if fail {
		return blob.Errorf("create container", c, "", errors.New("injected: timeout"), "")
	}
	return s.Store.CreateContainer(ctx, c)
}

// env is a process server under a runtimetest driver, with its cache
// directory and store kept across restarts.
type env struct {
	t     *testing.T
	cfg   Config
	store *store
	srv   *Server
	d     *runtimetest.Driver
	logs  *bytes.Buffer
}

func newEnv(t *testing.T, tweak func(*Config)) *env {
	t.Helper()
	e := &env{t: t, store: &store{Store: memblob.New()}}
	e.cfg = Config{Name: "ps01", CacheDir: t.TempDir(), Store: e.store, ContainerPrefix: prefix,
		Key: testKey, Azure: azureAddr, ConfigServer: csAddr, MaxUploads: 4, HealthEvery: time.Minute}
	if tweak != nil {
		tweak(&e.cfg)
	}
	e.start(nil)
	return e
}

// start builds a new Server on the same cache directory (a restart); hook
// runs on the server before Started.
func (e *env) start(hook func(*Server)) {
	e.t.Helper()
	e.srv = New(e.cfg)
	if hook != nil {
		hook(e.srv)
	}
	e.d = runtimetest.New(e.t, psAddr, e.srv)
	e.logs = &bytes.Buffer{}
	e.d.SetLogger(slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// hold stops delivering op completions (seals and uploads stall) until
// release; group commits still complete when send lets them (commit).
func (e *env) hold()    { e.d.AutoDeliverOps = false }
func (e *env) release() { e.d.AutoDeliverOps = true; e.d.DeliverOps() }

// makeItem is machine m's item seq: a chunk of itemBytes realistic bytes.
func makeItem(m string, seq uint64) []byte {
	data := make([]byte, itemBytes)
	blockdev.FillRealistic(rand.New(rand.NewPCG(seq, uint64(len(m)))), data)
	it := &batch.Item{Machine: m, Seq: seq, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: int64(seq) * itemBytes, Data: data}}}
	return it.Marshal()
}

// send delivers an item message, lets the group commit run, and returns
// the acks the agent got.
func (e *env) send(msg *proto.ItemMsg) []*proto.ItemAck {
	e.t.Helper()
	e.d.Receive(agentAddr, msg)
	e.d.Advance(e.srv.cfg.GroupCommit)
	e.commit()
	return e.acks()
}

// commit delivers the completions of group commits held by hold.
func (e *env) commit() {
	e.t.Helper()
	e.d.DeliverOpsWhere(func(d runtime.Done) bool { return d.Name == "cache-commit" })
}

func (e *env) sendItem(m string, seq uint64) []*proto.ItemAck {
	e.t.Helper()
	return e.send(&proto.ItemMsg{Machine: m, Seq: seq, Data: makeItem(m, seq)})
}

func (e *env) acks() []*proto.ItemAck {
	var out []*proto.ItemAck
	for _, m := range e.d.SentTo(agentAddr) {
		a, ok := m.(*proto.ItemAck)
		if !ok {
			e.t.Fatalf("agent got %T", m)
		}
		out = append(out, a)
	}
	return out
}

func (e *env) hints() []proto.Uploaded {
	var out []proto.Uploaded
	for _, m := range e.d.SentTo(azureAddr) {
		out = append(out, *m.(*proto.Uploaded))
	}
	return out
}

// blobs lists the cache container's blob names.
func (e *env) blobs() []string {
	e.t.Helper()
	items, err := e.store.List(context.Background(), prefix+proto.ContainerCache, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, it := range items {
		names = append(names, it.Name)
	}
	return names
}

// cacheFiles lists the files under the cache directory.
func (e *env) cacheFiles() []string {
	e.t.Helper()
	var out []string
	err := filepath.WalkDir(e.cfg.CacheDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(e.cfg.CacheDir, p)
		if rel == epochFile { // the disk's epoch: TestEpoch pins it
			return nil
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func names(m string, seqs ...uint64) []string {
	var out []string
	for _, s := range seqs {
		out = append(out, proto.CacheBlobName(m, s))
	}
	return out
}

// ack is the part of an ItemAck a test pins; Reason is checked to contain
// a word.
type ack struct {
	Acked  uint64
	Status string
	Reason string
}

func summarize(as []*proto.ItemAck) []ack {
	var out []ack
	for _, a := range as {
		out = append(out, ack{a.Acked, a.Status, a.Reason})
	}
	return out
}

// reasonHas compares acks with want, whose Reason is a substring that the
// real reason must contain.
var reasonHas = cmp.Comparer(func(a, b ack) bool {
	if a.Acked != b.Acked || a.Status != b.Status {
		return false
	}
	return strings.Contains(a.Reason, b.Reason) && (b.Reason == "") == (a.Reason == "") ||
		strings.Contains(b.Reason, a.Reason) && (a.Reason == "") == (b.Reason == "")
})

func TestStreamAcks(t *testing.T) {
	good := func(seq uint64) *proto.ItemMsg {
		return &proto.ItemMsg{Machine: "db01", Seq: seq, Data: makeItem("db01", seq)}
	}
	for _, tc := range []struct {
		name  string
		steps []*proto.ItemMsg // nil: a StreamHello
		want  []ack
	}{
		{"hello on a new stream", []*proto.ItemMsg{nil}, []ack{{0, proto.AckOK, ""}}},
		{"in order, cumulative", []*proto.ItemMsg{good(1), good(2), good(3), nil},
			[]ack{{1, proto.AckOK, ""}, {2, proto.AckOK, ""}, {3, proto.AckOK, ""}, {3, proto.AckOK, ""}}},
		{"duplicate re-acked", []*proto.ItemMsg{good(1), good(2), good(1), good(2)},
			[]ack{{1, proto.AckOK, ""}, {2, proto.AckOK, ""}, {2, proto.AckOK, ""}, {2, proto.AckOK, ""}}},
		{"gap", []*proto.ItemMsg{good(1), good(3), good(4), good(2), good(3)},
			[]ack{{1, proto.AckOK, ""}, {1, proto.AckGap, "expected item 2"}, {1, proto.AckGap, "expected item 2"},
				{2, proto.AckOK, ""}, {3, proto.AckOK, ""}}},
		{"first item not 1", []*proto.ItemMsg{good(2)}, []ack{{0, proto.AckGap, "expected item 1"}}},
		{"undecodable item", []*proto.ItemMsg{good(1), {Machine: "db01", Seq: 2, Data: []byte("not an item")}, good(2)},
			[]ack{{1, proto.AckOK, ""}, {1, proto.AckRefused, "malformed item"}, {2, proto.AckOK, ""}}},
		{"item of another machine", []*proto.ItemMsg{{Machine: "db01", Seq: 1, Data: makeItem("web01", 1)}},
			[]ack{{0, proto.AckRefused, "item is web01/1, message says db01/1"}}},
		{"item with another seq", []*proto.ItemMsg{{Machine: "db01", Seq: 1, Data: makeItem("db01", 7)}},
			[]ack{{0, proto.AckRefused, "item is db01/7, message says db01/1"}}},
		{"invalid item (unaligned run)", []*proto.ItemMsg{{Machine: "db01", Seq: 1, Data: (&batch.Item{Machine: "db01", Seq: 1,
			Kind: batch.KindChunk, Runs: []batch.Run{{Off: 3, Data: make([]byte, 512)}}}).Marshal()}},
			[]ack{{0, proto.AckRefused, "not sector-aligned"}}},
		{"machine name with a slash", []*proto.ItemMsg{{Machine: "../etc", Seq: 1, Data: makeItem("../etc", 1)}},
			[]ack{{0, proto.AckRefused, "unusable machine name"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			var got []*proto.ItemAck
			for _, m := range tc.steps {
				if m == nil {
					e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
					got = append(got, e.acks()...)
					continue
				}
				got = append(got, e.send(m)...)
			}
			if diff := cmp.Diff(tc.want, summarize(got), reasonHas); diff != "" {
				t.Errorf("acks (-want +got):\n%s", diff)
			}
			for _, a := range got {
				if a.Machine != "db01" && a.Machine != "../etc" {
					t.Errorf("ack names machine %q", a.Machine)
				}
			}
			// Everything acknowledged ok was uploaded, in order, and nothing else.
			var acked uint64
			for _, a := range got {
				acked = max(acked, a.Acked)
			}
			var want []string
			for s := uint64(1); s <= acked; s++ {
				want = append(want, proto.CacheBlobName("db01", s))
			}
			if diff := cmp.Diff(want, e.blobs(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("blobs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCacheFullBackPressure(t *testing.T) {
	fileBytes := int64(recordHeaderLen + len(makeItem("db01", 1)))
	e := newEnv(t, func(c *Config) { c.CacheCapBytes = 3 * fileBytes })
	e.hold() // uploads stall: the cache fills
	var got []*proto.ItemAck
	for s := uint64(1); s <= 4; s++ {
		got = append(got, e.sendItem("db01", s)...)
	}
	got = append(got, e.sendItem("db01", 4)...) // the agent's retry: still full
	want := []ack{{1, proto.AckOK, ""}, {2, proto.AckOK, ""}, {3, proto.AckOK, ""},
		{3, proto.AckCacheFull, "cache full"}, {3, proto.AckCacheFull, "cache full"}}
	if diff := cmp.Diff(want, summarize(got), reasonHas); diff != "" {
		t.Errorf("acks while full (-want +got):\n%s", diff)
	}
	if st := e.srv.Status(); !st.CacheFull || st.CacheUsedBytes != 3*fileBytes || st.BacklogItems != 3 {
		t.Errorf("status while full: full=%v used=%d backlog=%d", st.CacheFull, st.CacheUsedBytes, st.BacklogItems)
	}
	if n := strings.Count(e.logs.String(), `msg="processsrv: cache full`); n != 1 {
		t.Errorf("%d log lines say cache full, want exactly one per episode:\n%s", n, e.logs)
	}

	e.release() // uploads finish and free the cache
	if st := e.srv.Status(); st.CacheUsedBytes != 0 || st.BacklogItems != 0 {
		t.Errorf("after uploads: used=%d backlog=%d", st.CacheUsedBytes, st.BacklogItems)
	}
	if diff := cmp.Diff([]ack{{4, proto.AckOK, ""}}, summarize(e.sendItem("db01", 4)), reasonHas); diff != "" {
		t.Errorf("ack after recovery (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(names("db01", 1, 2, 3, 4), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	if st := e.srv.Status(); st.CacheFull {
		t.Error("still reports cache full after accepting")
	}
}

// tinyDisk makes the cache disk behave as a file system of capBytes: a
// write that would go past it writes what fits and fails with ENOSPC, as
// the OS does.
func tinyDisk(dir string, capBytes int64) func(f fsys.File, p []byte) (int, error) {
	return func(f fsys.File, p []byte) (int, error) {
		var used int64
		filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					used += info.Size()
				}
			}
			return nil
		})
		if free := capBytes - used; int64(len(p)) > free {
			n, _ := f.Write(p[:max(free, 0)])
			return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.Write(p)
	}
}

func TestDiskFullENOSPC(t *testing.T) {
	fileBytes := int64(recordHeaderLen + len(makeItem("db01", 1)))
	e := newEnv(t, nil) // CacheCapBytes is 2 GiB: the disk fills first
	e.srv.disk.write = tinyDisk(e.cfg.CacheDir, 3*fileBytes+fileBytes/2)
	e.hold()
	var got []*proto.ItemAck
	for s := uint64(1); s <= 4; s++ {
		got = append(got, e.sendItem("db01", s)...)
	}
	want := []ack{{1, proto.AckOK, ""}, {2, proto.AckOK, ""}, {3, proto.AckOK, ""},
		{3, proto.AckCacheFull, "no space left on device"}}
	if diff := cmp.Diff(want, summarize(got), reasonHas); diff != "" {
		t.Errorf("acks (-want +got):\n%s", diff)
	}
	// The partial write was removed: only the three acknowledged items are there.
	wantFiles := []string{"db01/00000000000000000001.item", "db01/00000000000000000002.item", "db01/00000000000000000003.item"}
	if diff := cmp.Diff(wantFiles, e.cacheFiles()); diff != "" {
		t.Errorf("cache files (-want +got):\n%s", diff)
	}
	st := e.srv.Status()
	if !st.CacheFull || !strings.Contains(st.LastError, "processsrv: cache full: disk full: item 4 of db01: processsrv: write: no space left on device") || strings.Contains(st.LastError, e.cfg.CacheDir) {
		t.Errorf("status: full=%v last error %q (want the cause, without the cache path)", st.CacheFull, st.LastError)
	}
	if !strings.Contains(e.logs.String(), "cache full") {
		t.Errorf("no log line says the cache is full:\n%s", e.logs)
	}

	e.release() // uploads delete the files; the state file fits again
	if diff := cmp.Diff([]ack{{4, proto.AckOK, ""}}, summarize(e.sendItem("db01", 4)), reasonHas); diff != "" {
		t.Errorf("ack after recovery (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(names("db01", 1, 2, 3, 4), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	e.start(nil) // and the acknowledged position survives a restart
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	if diff := cmp.Diff([]ack{{4, proto.AckOK, ""}}, summarize(e.acks())); diff != "" {
		t.Errorf("hello after restart (-want +got):\n%s", diff)
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.hold()
	for s := uint64(1); s <= 3; s++ {
		e.sendItem("db01", s)
	}
	e.sendItem("web01", 1)
	if got := e.blobs(); len(got) != 0 {
		t.Fatalf("uploads happened while held: %v", got)
	}
	// A write the crash interrupted.
	if err := os.WriteFile(filepath.Join(e.cfg.CacheDir, "db01", itemName(4)+tmpSuffix), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}

	e.start(nil) // crash: the held completions are lost with the old server
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "web01"})
	if diff := cmp.Diff([]ack{{3, proto.AckOK, ""}, {1, proto.AckOK, ""}}, summarize(e.acks())); diff != "" {
		t.Errorf("hellos after restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(append(names("db01", 1, 2, 3), names("web01", 1)...), e.blobs()); diff != "" {
		t.Errorf("uploads resumed (-want +got):\n%s", diff)
	}
	// The uploaded files are kept to be written over (recycled), renamed.
	if diff := cmp.Diff([]string{"db01/00000000000000000001.free", "db01/00000000000000000002.free", "db01/00000000000000000003.free",
		"db01/acked", "web01/00000000000000000001.free", "web01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files after uploads (-want +got):\n%s", diff)
	}
	last := map[string]uint64{}
	for _, h := range e.hints() {
		if h.UpTo <= last[h.Machine] {
			t.Errorf("hint %v does not advance", h)
		}
		last[h.Machine] = h.UpTo
	}
	if diff := cmp.Diff(map[string]uint64{"db01": 3, "web01": 1}, last); diff != "" {
		t.Errorf("last hints (-want +got):\n%s", diff)
	}

	e.start(nil) // the acknowledged seq survives with no item file left
	if diff := cmp.Diff([]string{"db01/acked", "web01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files after a restart's scan (-want +got):\n%s", diff)
	}
	want := []ack{{3, proto.AckOK, ""}, {3, proto.AckOK, ""}, {4, proto.AckOK, ""}}
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	got := e.acks()
	got = append(got, e.sendItem("db01", 3)...)
	got = append(got, e.sendItem("db01", 4)...)
	if diff := cmp.Diff(want, summarize(got)); diff != "" {
		t.Errorf("after second restart (-want +got):\n%s", diff)
	}
	st := e.srv.Status()
	if diff := cmp.Diff([]MachineStatus{
		{Machine: "db01", Acked: 4, UploadedUpTo: 4, UploadedItems: 1, RawBytes: int64(len(makeItem("db01", 4))), SealedBytes: st.Machines[0].SealedBytes, Ratio: st.Machines[0].Ratio, Codec: "s2"},
		{Machine: "web01", Acked: 1, UploadedUpTo: 1},
	}, st.Machines); diff != "" {
		t.Errorf("machines (-want +got):\n%s", diff)
	}
}

// A crash after the upload but before the file was deleted uploads the
// item again: the same bytes under the same name.
func TestRestartAfterUploadBeforeDelete(t *testing.T) {
	e := newEnv(t, nil)
	srv := e.srv
	e.d.Actor = actorFunc(func(ctx runtime.Context, ev runtime.Event) {
		if dn, ok := ev.(runtime.Done); ok && strings.HasPrefix(dn.Name, "upload ") {
			return // the crash comes after the Put, before its completion is applied
		}
		srv.Handle(ctx, ev)
	})
	e.sendItem("db01", 1)
	first, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, proto.CacheBlobName("db01", 1), blob.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.start(nil)
	second, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, proto.CacheBlobName("db01", 1), blob.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Error("re-upload after restart changed the sealed bytes")
	}
	if diff := cmp.Diff([]string{"db01/00000000000000000001.free", "db01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files (-want +got):\n%s", diff)
	}
	if got := len(e.store.puts); got != 2 {
		t.Errorf("%d puts, want 2", got)
	}
}

func TestSealedBlobOpens(t *testing.T) {
	for _, codec := range []batch.Codec{batch.CodecNone /* the default: s2 */, batch.CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Codec = codec })
			plain := makeItem("db01", 1)
			e.sendItem("db01", 1)
			sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, proto.CacheBlobName("db01", 1), blob.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			open := func(key [32]byte, name string) ([]byte, error) {
				s, err := batch.NewSealer(key, batch.CodecS2)
				if err != nil {
					t.Fatal(err)
				}
				return s.Open(nil, name, sealed)
			}
			got, err := open(testKey, proto.CacheBlobName("db01", 1))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Error("opened blob differs from the item sent")
			}
			if it, err := batch.Unmarshal(got); err != nil || it.Seq != 1 || it.Machine != "db01" {
				t.Errorf("unmarshal opened blob: %v, %v", it, err)
			}
			if len(sealed) >= len(plain) {
				t.Errorf("sealed %d bytes for %d plain: not compressed", len(sealed), len(plain))
			}
			other := testKey
			other[0] ^= 1
			if _, err := open(other, proto.CacheBlobName("db01", 1)); !errors.Is(err, batch.ErrTamper) {
				t.Errorf("open with another key: %v, want ErrTamper", err)
			}
			if _, err := open(testKey, proto.CacheBlobName("db01", 2)); !errors.Is(err, batch.ErrTamper) {
				t.Errorf("open under another name: %v, want ErrTamper", err)
			}
		})
	}
}

// TestItemCodec: each item is sealed with the compression its message names
// (the machine's policy), also after a restart that finds it in the cache;
// an item naming none takes the server's; an unknown one is refused and
// nothing is cached.
func TestItemCodec(t *testing.T) {
	e := newEnv(t, nil) // the server's default: s2
	codecOf := func(seq uint64) batch.Codec {
		t.Helper()
		sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, proto.CacheBlobName("db01", seq), blob.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := batch.NewSealer(testKey, batch.CodecS2)
		plain, err := s.Open(nil, proto.CacheBlobName("db01", seq), sealed)
		if err != nil || !bytes.Equal(plain, makeItem("db01", seq)) {
			t.Fatalf("item %d does not open to what was sent: %v", seq, err)
		}
		return batch.Codec(sealed[5]) // the sealed header's codec byte
	}
	send := func(seq uint64, codec string) []*proto.ItemAck {
		return e.send(&proto.ItemMsg{Machine: "db01", Seq: seq, Data: makeItem("db01", seq), Codec: codec})
	}
	send(1, "zstd")
	send(2, "s2")
	send(3, "")
	for seq, want := range map[uint64]batch.Codec{1: batch.CodecZstd, 2: batch.CodecS2, 3: batch.CodecS2} {
		if got := codecOf(seq); got != want {
			t.Errorf("item %d sealed with %v, want %v", seq, got, want)
		}
	}
	if got := e.srv.Status().Machines[0].Codec; got != "s2" {
		t.Errorf("status codec %q after an s2 item, want s2", got)
	}
	// Cached under zstd, sealed after a restart: still zstd.
	e.hold()
	send(4, "zstd")
	e.start(nil)
	if got := codecOf(4); got != batch.CodecZstd {
		t.Errorf("item 4, sealed after a restart, with %v, want zstd", got)
	}
	if got := e.srv.Status().Machines[0].Codec; got != "zstd" {
		t.Errorf("status codec %q after a zstd item, want zstd", got)
	}
	got := summarize(send(5, "lz4"))
	if diff := cmp.Diff([]ack{{4, proto.AckRefused, "processsrv: unknown compression"}}, got, reasonHas); diff != "" {
		t.Errorf("item with an unknown codec (-want +got):\n%s", diff)
	}
	for _, f := range e.cacheFiles() {
		if strings.Contains(f, itemName(5)) {
			t.Errorf("refused item left a cache file: %s", f)
		}
	}
}

func TestUploadRetried(t *testing.T) {
	e := newEnv(t, nil)
	e.store.failPuts = 2
	if got := summarize(e.sendItem("db01", 1)); got[0].Acked != 1 {
		t.Fatalf("ack = %v", got) // acked from the cache disk, whatever storage does
	}
	st := e.srv.Status()
	if len(e.blobs()) != 0 || st.BacklogItems != 1 || !strings.Contains(st.LastError, "upload item 1 of db01") {
		t.Fatalf("after a failed upload: blobs %v, status %+v", e.blobs(), st)
	}
	if strings.Contains(st.LastError, prefix) || strings.Contains(e.logs.String(), prefix) {
		t.Errorf("the container name leaked into errors or logs: %q", st.LastError)
	}
	if !strings.Contains(e.logs.String(), "upload failed; retrying") {
		t.Errorf("no log line for the failure:\n%s", e.logs)
	}
	e.d.Advance(10 * time.Second) // back-off 1 s then 2 s (±20 %)
	if diff := cmp.Diff(names("db01", 1), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(names("db01", 1, 1, 1), e.store.puts); diff != "" {
		t.Errorf("put attempts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]proto.Uploaded{{Machine: "db01", UpTo: 1}}, e.hints()); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}
	if st := e.srv.Status(); st.BacklogItems != 0 || st.Errors != 2 {
		t.Errorf("status: backlog %d errors %d", st.BacklogItems, st.Errors)
	}
}

func TestContainerCreatedAndRetried(t *testing.T) {
	e := newEnv(t, func(c *Config) {})
	if !e.srv.Status().ContainerReady {
		t.Fatal("container not ready after start")
	}
	// A second server on the same store: creating the container again is fine.
	e.store.failCreates = 1
	e.start(nil)
	if e.srv.Status().ContainerReady {
		t.Fatal("container ready although creation failed")
	}
	e.sendItem("db01", 1) // accepted while the container is not there
	if len(e.store.puts) != 0 {
		t.Fatalf("uploaded before the container was created: %v", e.store.puts)
	}
	e.d.Advance(5 * time.Second)
	if !e.srv.Status().ContainerReady {
		t.Fatal("container creation not retried")
	}
	if diff := cmp.Diff(names("db01", 1), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
}

// probe records the pipeline's in-flight count after every event.
type probe struct {
	s                         *Server
	maxInFlight, maxUploading int
}

func (p *probe) Handle(ctx runtime.Context, ev runtime.Event) {
	p.s.Handle(ctx, ev)
	p.maxInFlight = max(p.maxInFlight, p.s.Status().InFlight)
	p.maxUploading = max(p.maxUploading, p.s.uploading)
}

func TestMaxUploads(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 2 })
	p := &probe{s: e.srv}
	e.d.Actor = p
	e.hold()
	for s := uint64(1); s <= 3; s++ {
		e.sendItem("db01", s)
		e.sendItem("web01", s)
	}
	if n, st := e.d.PendingOps(), e.srv.Status(); n != 2 || st.InFlight != 2 || st.BacklogItems != 6 {
		t.Errorf("held: %d ops pending, status in flight %d backlog %d; want 2, 2, 6", n, st.InFlight, st.BacklogItems)
	}
	e.release()
	if p.maxInFlight != 2 {
		t.Errorf("max in flight %d, want MaxUploads 2", p.maxInFlight)
	}
	// Per machine, uploads start in seq order; machines take turns.
	want := []string{proto.CacheBlobName("db01", 1), proto.CacheBlobName("web01", 1), proto.CacheBlobName("db01", 2), proto.CacheBlobName("web01", 2), proto.CacheBlobName("db01", 3), proto.CacheBlobName("web01", 3)}
	if diff := cmp.Diff(want, e.store.puts); diff != "" {
		t.Errorf("put order (-want +got):\n%s", diff)
	}
	st := e.srv.Status()
	if st.BacklogItems != 0 || st.UploadedItems != 6 || st.InFlight != 0 || st.PipelineBytes != 0 {
		t.Errorf("after: %+v", st)
	}
	// At most MaxUploads items (read or sealed) were ever in memory at once.
	if limit := int64(2 * (recordHeaderLen + len(makeItem("db01", 1)) + 64)); st.PeakPipelineBytes == 0 || st.PeakPipelineBytes > limit {
		t.Errorf("peak pipeline bytes %d, want in (0, %d]", st.PeakPipelineBytes, limit)
	}
}

// TestSealedBuffersReused: the buffers of finished uploads are sealed into
// again; every blob still opens to its own item, the last ones too (a
// buffer reused while its upload still read it would give an earlier
// blob a later item's bytes).
func TestSealedBuffersReused(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 2 })
	e.hold()
	const n = 5
	for seq := uint64(1); seq <= n; seq++ {
		e.sendItem("db01", seq)
		e.sendItem("web01", seq)
	}
	e.release()
	if st := e.srv.Status(); st.UploadedItems != 2*n {
		t.Fatalf("uploaded %d items, want %d", st.UploadedItems, 2*n)
	}
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"db01", "web01"} {
		for seq := uint64(1); seq <= n; seq++ {
			name := proto.CacheBlobName(m, seq)
			sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, name, blob.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Open(nil, name, sealed)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(got, makeItem(m, seq)) {
				t.Errorf("%s opens to another item's bytes", name)
			}
		}
	}
	if len(e.srv.spare) != 2 {
		t.Errorf("%d spare buffers, want MaxUploads 2", len(e.srv.spare))
	}
}

func TestUploadedHints(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 1 })
	e.sendItem("db01", 1)
	e.sendItem("db01", 2)
	if diff := cmp.Diff([]proto.Uploaded{{Machine: "db01", UpTo: 1}, {Machine: "db01", UpTo: 2}}, e.hints()); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}
	// A failed upload holds the hint back until it is uploaded.
	e.store.failPuts = 1
	e.sendItem("db01", 3)
	if got := e.hints(); len(got) != 0 {
		t.Errorf("hint for a failed upload: %v", got)
	}
	e.d.Advance(5 * time.Second)
	if diff := cmp.Diff([]proto.Uploaded{{Machine: "db01", UpTo: 3}}, e.hints()); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}
}

func TestPSHealth(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 1; c.CacheCapBytes = 1 << 20 })
	e.hold()
	raw := func(m string, s uint64) int64 { return int64(len(makeItem(m, s))) }
	e.sendItem("web01", 1)
	e.sendItem("db01", 1)
	e.sendItem("db01", 2)
	e.d.Advance(time.Minute)
	stalled := &proto.PSHealth{Server: "ps01", CacheCapBytes: 1 << 20,
		CacheUsedBytes: raw("web01", 1) + raw("db01", 1) + raw("db01", 2) + 3*recordHeaderLen,
		BacklogItems:   3, BacklogBytes: raw("web01", 1) + raw("db01", 1) + raw("db01", 2),
		EstimateUpload: EstimateUnknown,
		Machines: []proto.MachineBacklog{{Machine: "db01", Items: 2, Bytes: raw("db01", 1) + raw("db01", 2)},
			{Machine: "web01", Items: 1, Bytes: raw("web01", 1)}}}
	if diff := cmp.Diff([]wire.Msg{stalled}, e.d.SentTo(csAddr)); diff != "" {
		t.Errorf("health with stalled uploads (-want +got):\n%s", diff)
	}

	e.release() // uploads complete at t=1m, so the recent rate is 3 items over 1 minute
	e.sendItem("db01", 3)
	e.hold()
	e.sendItem("db01", 4)
	e.d.Advance(time.Minute)
	st := e.srv.Status()
	rawUp := raw("web01", 1) + raw("db01", 1) + raw("db01", 2) + raw("db01", 3)
	rate := float64(rawUp) / 120 // uploaded in the two minutes since start
	busy := &proto.PSHealth{Server: "ps01", CacheCapBytes: 1 << 20, CacheUsedBytes: raw("db01", 4) + recordHeaderLen,
		BacklogItems: 1, BacklogBytes: raw("db01", 4), RawBytes: rawUp, UploadedBytes: st.SealedBytes,
		EstimateUpload: time.Duration(float64(raw("db01", 4)) / rate * float64(time.Second)),
		Machines:       []proto.MachineBacklog{{Machine: "db01", Items: 1, Bytes: raw("db01", 4)}, {Machine: "web01"}}}
	if diff := cmp.Diff([]wire.Msg{busy}, e.d.SentTo(csAddr)); diff != "" {
		t.Errorf("health (-want +got):\n%s", diff)
	}
	var sealed int64
	items, _ := e.store.List(context.Background(), prefix+proto.ContainerCache, "")
	for _, it := range items {
		sealed += it.Size
	}
	if st.SealedBytes != sealed || st.RawBytes != rawUp || st.Ratio <= 1 {
		t.Errorf("status sealed %d (store has %d), raw %d (want %d), ratio %.2f", st.SealedBytes, sealed, st.RawBytes, rawUp, st.Ratio)
	}
}

func TestCorruptFrameDropped(t *testing.T) {
	e := newEnv(t, nil)
	frame := wire.Encode(&proto.ItemMsg{Machine: "db01", Seq: 1, Data: makeItem("db01", 1)})
	flipped := bytes.Clone(frame)
	flipped[len(flipped)/2] ^= 0xff
	for name, data := range map[string][]byte{
		"garbage":   []byte("hello, world"),
		"empty":     nil,
		"truncated": frame[:len(frame)-7],
		"flipped":   flipped,
	} {
		e.d.ReceiveFrame(agentAddr, data)
		if got := e.d.Sent(); len(got) != 0 {
			t.Errorf("%s: sent %v", name, got)
		}
	}
	e.d.Receive(agentAddr, &proto.Heartbeat{Machine: "db01"}) // not for a process server
	if got := e.d.Sent(); len(got) != 0 {
		t.Errorf("unexpected message answered: %v", got)
	}
	if n := strings.Count(e.logs.String(), "dropped"); n != 5 {
		t.Errorf("%d drop log lines, want 5:\n%s", n, e.logs)
	}
	// Still serving.
	if diff := cmp.Diff([]ack{{1, proto.AckOK, ""}}, summarize(e.sendItem("db01", 1))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A cached file damaged on disk is not uploaded: the seal fails its CRC,
// the error is reported and retried (it may be a transient read error).
// The file is read only when the item's bytes are not retained (as after a
// restart): RetainBytes -1 keeps none.
func TestCorruptCacheFile(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 1; c.RetainBytes = -1 })
	e.hold()
	e.sendItem("db01", 1) // sealing
	e.sendItem("db01", 2) // waits on disk
	p := filepath.Join(e.cfg.CacheDir, "db01", itemName(2))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.release()
	if diff := cmp.Diff(names("db01", 1), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	st := e.srv.Status()
	if !strings.Contains(st.LastError, "corrupt cache file") || st.BacklogItems != 1 || st.Machines[0].UploadedUpTo != 1 {
		t.Errorf("status: %+v", st)
	}
	if len(e.d.Timers()) < 2 { // health and retry
		t.Errorf("no retry timer: %v", e.d.Timers())
	}
}

// TestSealFromRetained: within RetainBytes an item is sealed from the bytes
// as received (no read of its cache file: a seal op with no disk work, and
// a cache file damaged after the fsync does not matter); past the budget,
// from its cache file (read and checked: the damage is found). Every
// upload confirmed gives its bytes back.
func TestSealFromRetained(t *testing.T) {
	item := int64(len(makeItem("db01", 1)))
	e := newEnv(t, func(c *Config) { c.MaxUploads = 1; c.RetainBytes = 2 * item })
	e.hold()
	for seq := uint64(1); seq <= 3; seq++ {
		e.sendItem("db01", seq)
	}
	if got := e.srv.Status().RetainedBytes; got != 2*item {
		t.Fatalf("retained %d bytes, want the budget's %d (items 1 and 2)", got, 2*item)
	}
	for _, seq := range []uint64{2, 3} { // damage items 2 (retained) and 3 (not)
		p := filepath.Join(e.cfg.CacheDir, "db01", itemName(seq))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-1] ^= 1
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var disk []bool
	for i := 0; i < 20 && e.d.PendingOps() > 0; i++ { // one op at a time, oldest first
		op := e.d.Ops()[0]
		if strings.HasPrefix(op.Name, "seal ") {
			disk = append(disk, op.Disk != nil)
		}
		e.d.DeliverOpsWhere(func(d runtime.Done) bool { return d.Name == op.Name })
	}
	if diff := cmp.Diff([]bool{false, false, true}, disk); diff != "" {
		t.Errorf("seal ops reading the cache file, items 1-3 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(names("db01", 1, 2), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		name := proto.CacheBlobName("db01", seq)
		sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, name, blob.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Open(nil, name, sealed)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, makeItem("db01", seq)) {
			t.Errorf("%s opens to other bytes than the item received", name)
		}
	}
	st := e.srv.Status()
	if !strings.Contains(st.LastError, "corrupt cache file") || st.RetainedBytes != 0 || st.Machines[0].UploadedUpTo != 2 {
		t.Errorf("status: retained %d, uploaded up to %d, last error %q; want 0, 2, a corrupt cache file",
			st.RetainedBytes, st.Machines[0].UploadedUpTo, st.LastError)
	}
}

func TestBackoff(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		attempt int
		base    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {50, time.Minute}} {
		for range 50 {
			if d := backoff(tc.attempt, r); d < tc.base*4/5 || d > tc.base*6/5 {
				t.Errorf("backoff(%d) = %v, want %v ± 20%%", tc.attempt, d, tc.base)
			}
		}
	}
}

func TestEstimate(t *testing.T) {
	for _, tc := range []struct {
		backlog int64
		rate    float64
		want    time.Duration
	}{
		{0, 0, 0},
		{100, 0, EstimateUnknown},
		{100 << 20, 1 << 20, 100 * time.Second},
		{1 << 62, 1e-9, EstimateUnknown},
	} {
		if got := estimate(tc.backlog, tc.rate); got != tc.want {
			t.Errorf("estimate(%d, %v) = %v, want %v", tc.backlog, tc.rate, got, tc.want)
		}
	}
}

func TestOpenRecord(t *testing.T) {
	item := []byte("some item bytes")
	h := recordHeader(item, batch.CodecZstd)
	good := append(h[:], item...)
	for _, tc := range []struct {
		name string
		rec  []byte
		ok   bool
	}{
		{"good", good, true},
		{"short", good[:10], false},
		{"truncated", good[:len(good)-1], false},
		{"bit flip", func() []byte { b := bytes.Clone(good); b[20] ^= 4; return b }(), false},
		{"bad magic", func() []byte { b := bytes.Clone(good); b[0] = 'X'; return b }(), false},
	} {
		got, codec, err := openRecord(tc.rec)
		if (err == nil) != tc.ok || (tc.ok && (!bytes.Equal(got, item) || codec != batch.CodecZstd)) || (!tc.ok && !errors.Is(err, ErrCorrupt)) {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
}

func TestCheckMachineName(t *testing.T) {
	for name, ok := range map[string]bool{
		"db01": true, "Web Server 01": true, "sql-02.contoso.local": true, "": false, ".": false,
		"..": false, "a/b": false, `a\b`: false, "tab\there": false, strings.Repeat("x", 201): false,
	} {
		if err := checkMachineName(name); (err == nil) != ok {
			t.Errorf("checkMachineName(%q) = %v", name, err)
		}
	}
	// Names that need escaping round-trip through the cache directory.
	e := newEnv(t, nil)
	e.hold()
	e.sendItem("Web Server 01", 1)
	e.start(nil)
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "Web Server 01"})
	if diff := cmp.Diff([]ack{{1, proto.AckOK, ""}}, summarize(e.acks())); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(names("Web Server 01", 1), e.blobs()); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
}

func TestStatusIsACopy(t *testing.T) {
	e := newEnv(t, nil)
	e.sendItem("db01", 1)
	st := e.srv.Status()
	st.Machines[0].Acked = 99
	if got := e.srv.Status().Machines[0].Acked; got != 1 {
		t.Errorf("Status shares memory with the server: acked %d", got)
	}
	if fmt.Sprint(st.Server) != "ps01" {
		t.Errorf("server name %q", st.Server)
	}
}

type actorFunc func(runtime.Context, runtime.Event)

func (f actorFunc) Handle(c runtime.Context, ev runtime.Event) { f(c, ev) }

// When the acked state cannot be written (the disk is full), the highest
// uploaded file is kept — deleting it would lose the acknowledged position —
// and deleted on a later retry.
func TestStateWriteFailureKeepsFile(t *testing.T) {
	e := newEnv(t, nil)
	fails := 2
	e.srv.disk.write = func(f fsys.File, p []byte) (int, error) {
		if strings.HasSuffix(f.Name(), stateFile+tmpSuffix) && fails > 0 {
			fails--
			return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.Write(p)
	}
	e.sendItem("db01", 1)
	if diff := cmp.Diff([]string{"db01/00000000000000000001.item"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files (-want +got):\n%s", diff)
	}
	st := e.srv.Status()
	if st.BacklogItems != 0 || st.Machines[0].UploadedUpTo != 1 || !strings.Contains(st.LastError, "cannot persist acked seq") {
		t.Errorf("status: %+v", st)
	}
	if diff := cmp.Diff([]proto.Uploaded{{Machine: "db01", UpTo: 1}}, e.hints()); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}
	e.d.Advance(10 * time.Second) // two retries: the second one succeeds
	if diff := cmp.Diff([]string{"db01/00000000000000000001.free", "db01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files after retry (-want +got):\n%s", diff)
	}
	if st := e.srv.Status(); st.CacheUsedBytes != 0 {
		t.Errorf("cache used %d after deletion", st.CacheUsedBytes)
	}
	e.start(nil)
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	if diff := cmp.Diff([]ack{{1, proto.AckOK, ""}}, summarize(e.acks())); diff != "" {
		t.Errorf("hello after restart (-want +got):\n%s", diff)
	}
	if got := len(e.store.puts); got != 1 {
		t.Errorf("%d puts, want 1 (no re-upload)", got)
	}
}

// TestItemLargerThanTheCache: an item bigger than the whole cache is
// refused while other items are cached (back-pressure) and accepted once
// the cache is empty, so that its stream can never stall for good.
func TestItemLargerThanTheCache(t *testing.T) {
	fileBytes := int64(recordHeaderLen + len(makeItem("db01", 1)))
	e := newEnv(t, func(c *Config) { c.CacheCapBytes = fileBytes / 2 })
	e.hold()
	// The cache is empty: the oversized item is taken.
	got := e.sendItem("db01", 1)
	// Now it is in use: the next oversized item waits.
	got = append(got, e.sendItem("db01", 2)...)
	want := []ack{{1, proto.AckOK, ""}, {1, proto.AckCacheFull, "cache full"}}
	if diff := cmp.Diff(want, summarize(got), reasonHas); diff != "" {
		t.Fatalf("acks (-want +got):\n%s", diff)
	}
	e.release() // item 1 uploads; the cache empties
	if diff := cmp.Diff([]ack{{2, proto.AckOK, ""}}, summarize(e.sendItem("db01", 2)), reasonHas); diff != "" {
		t.Fatalf("ack once the cache is empty (-want +got):\n%s", diff)
	}
}

// TestEpoch: the cache disk's epoch is in every ack, survives restarts, and
// changes when the disk is lost; a stream the cache has no record of may
// start at a SyncStart of any seq (an agent that resyncs after its
// acknowledged items were lost), but a known stream may not jump.
func TestEpoch(t *testing.T) {
	e := newEnv(t, nil)
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	first := e.acks()[0].Epoch
	if first == 0 {
		t.Fatal("ack without an epoch")
	}
	e.sendItem("db01", 1)
	e.start(nil)
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	if a := e.acks()[0]; a.Epoch != first || a.Acked != 1 {
		t.Fatalf("after a restart: %+v, want acked 1 in epoch %d", a, first)
	}
	syncStart := func(seq uint64) *proto.ItemMsg {
		it := &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindSyncStart, Gen: 2, DiskSizes: []int64{1 << 20}}
		return &proto.ItemMsg{Machine: "db01", Seq: seq, Data: it.Marshal()}
	}
	if diff := cmp.Diff([]ack{{1, proto.AckGap, "expected item 2"}}, summarize(e.send(syncStart(9))), reasonHas); diff != "" {
		t.Fatalf("a known stream jumped (-want +got):\n%s", diff)
	}

	if err := os.RemoveAll(e.cfg.CacheDir); err != nil { // the cache disk is lost
		t.Fatal(err)
	}
	e.srv = New(e.cfg)
	e.d = runtimetest.NewSeeded(t, psAddr, e.srv, 2)
	e.d.Receive(agentAddr, &proto.StreamHello{Machine: "db01"})
	a := e.acks()[0]
	if a.Epoch == first || a.Epoch == 0 || a.Acked != 0 {
		t.Fatalf("after losing the disk: %+v, want acked 0 in a new epoch", a)
	}
	if diff := cmp.Diff([]ack{{0, proto.AckGap, "expected item 1"}}, summarize(e.sendItem("db01", 9)), reasonHas); diff != "" {
		t.Fatalf("a log item at seq 9 on an unknown stream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]ack{{9, proto.AckOK, ""}}, summarize(e.send(syncStart(9))), reasonHas); diff != "" {
		t.Fatalf("a SyncStart at seq 9 on an unknown stream (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]ack{{10, proto.AckOK, ""}}, summarize(e.sendItem("db01", 10))); diff != "" {
		t.Fatalf("the stream goes on (-want +got):\n%s", diff)
	}
}

// TestAckOnlyAfterCommitOp: the group commit's disk work is an op, and no
// item is acknowledged before that op's completion arrives; a commit that
// falls due while one runs waits for it (acks stay in order).
func TestAckOnlyAfterCommitOp(t *testing.T) {
	e := newEnv(t, nil)
	e.hold()
	commits := func() int {
		n := 0
		for _, op := range e.d.Ops() {
			if op.Name == "cache-commit" {
				n++
			}
		}
		return n
	}
	e.d.Receive(agentAddr, &proto.ItemMsg{Machine: "db01", Seq: 1, Data: makeItem("db01", 1)})
	e.d.Advance(e.srv.cfg.GroupCommit)
	if got := e.acks(); len(got) != 0 {
		t.Fatalf("acks before the commit op completed: %v", summarize(got))
	}
	if n := commits(); n != 1 {
		t.Fatalf("%d commit ops started, want 1", n)
	}
	for _, op := range e.d.Ops() {
		if op.Name == "cache-commit" && (op.Disk == nil || op.Disk.Device != runtime.DeviceCache || op.Disk.Syncs < 2 || op.Disk.Bytes == 0) {
			t.Errorf("commit op declares disk work %+v: want the cache device, the item's bytes, its fsync and its directory's", op.Disk)
		}
	}
	e.d.Receive(agentAddr, &proto.ItemMsg{Machine: "db01", Seq: 2, Data: makeItem("db01", 2)})
	e.d.Advance(e.srv.cfg.GroupCommit) // due, but the first commit still runs
	if n := commits(); n != 1 {
		t.Fatalf("%d commit ops in flight, want 1: commits must not overlap", n)
	}
	if got := e.acks(); len(got) != 0 {
		t.Fatalf("acks before any commit op completed: %v", summarize(got))
	}
	e.commit()
	want := []ack{{1, proto.AckOK, ""}, {2, proto.AckOK, ""}}
	if diff := cmp.Diff(want, summarize(e.acks())); diff != "" {
		t.Errorf("acks after the commits (-want +got):\n%s", diff)
	}
}

// TestDiskFullMidBatch: one group commit holds two items and the disk has
// room for one: the first is acknowledged, the second answered cache-full
// and its partial file removed.
func TestDiskFullMidBatch(t *testing.T) {
	fileBytes := int64(recordHeaderLen + len(makeItem("db01", 1)))
	e := newEnv(t, nil)
	e.srv.disk.write = tinyDisk(e.cfg.CacheDir, fileBytes+fileBytes/2)
	e.hold()
	e.d.Receive(agentAddr, &proto.ItemMsg{Machine: "db01", Seq: 1, Data: makeItem("db01", 1)})
	e.d.Receive(agentAddr, &proto.ItemMsg{Machine: "db01", Seq: 2, Data: makeItem("db01", 2)})
	e.d.Advance(e.srv.cfg.GroupCommit)
	e.commit()
	want := []ack{{1, proto.AckOK, ""}, {1, proto.AckCacheFull, "no space left on device"}}
	if diff := cmp.Diff(want, summarize(e.acks()), reasonHas); diff != "" {
		t.Errorf("acks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"db01/00000000000000000001.item"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files (-want +got):\n%s", diff)
	}
	if st := e.srv.Status(); st.CacheUsedBytes != fileBytes {
		t.Errorf("cache used %d bytes, want %d (the refused item's are given back)", st.CacheUsedBytes, fileBytes)
	}
}

// makeItemSized is machine m's item seq with n bytes of realistic data.
func makeItemSized(m string, seq uint64, n int) []byte {
	data := make([]byte, n)
	blockdev.FillRealistic(rand.New(rand.NewPCG(seq, uint64(n))), data)
	it := &batch.Item{Machine: m, Seq: seq, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: int64(seq) * itemBytes, Data: data}}}
	return it.Marshal()
}

// TestRecycledFiles: uploaded files are kept (at most RecycleFiles) and
// later items written over them — a smaller item cut to its length, a
// larger one grown — and sealed from them (RetainBytes -1: read back) to
// their own bytes.
func TestRecycledFiles(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RecycleFiles = 2; c.RetainBytes = -1 })
	e.hold()
	for seq := uint64(1); seq <= 3; seq++ {
		e.sendItem("db01", seq)
	}
	e.release()
	var free []string
	for _, f := range e.cacheFiles() {
		if strings.HasSuffix(f, freeSuffix) {
			free = append(free, f)
		} else if f != "db01/acked" {
			t.Errorf("cache file %s left after the uploads", f)
		}
	}
	if len(free) != 2 {
		t.Fatalf("free files after 3 uploads: %v, want RecycleFiles 2", free)
	}
	e.hold()
	items := map[uint64][]byte{4: makeItemSized("db01", 4, itemBytes/4), 5: makeItemSized("db01", 5, 2*itemBytes)}
	for seq := uint64(4); seq <= 5; seq++ {
		if diff := cmp.Diff([]ack{{seq, proto.AckOK, ""}}, summarize(e.send(&proto.ItemMsg{Machine: "db01", Seq: seq, Data: items[seq]}))); diff != "" {
			t.Fatalf("ack of item %d (-want +got):\n%s", seq, diff)
		}
	}
	if diff := cmp.Diff([]string{"db01/00000000000000000004.item", "db01/00000000000000000005.item", "db01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files: the free files became the items (-want +got):\n%s", diff)
	}
	for seq, it := range items {
		b, err := os.ReadFile(filepath.Join(e.cfg.CacheDir, "db01", itemName(seq)))
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := openRecord(b); err != nil || !bytes.Equal(got, it) {
			t.Errorf("item %d's recycled file: %v, holds the item: %v", seq, err, bytes.Equal(got, it))
		}
	}
	e.release()
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	for seq, it := range items {
		name := proto.CacheBlobName("db01", seq)
		sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, name, blob.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.Open(nil, name, sealed); err != nil || !bytes.Equal(got, it) {
			t.Errorf("%s does not open to its item: %v", name, err)
		}
	}
	if st := e.srv.Status(); st.Errors != 0 || st.CacheUsedBytes != 0 || st.RecycledItems != 2 {
		t.Errorf("status: %d errors (%s), %d cache bytes used, %d items recycled (want 2)", st.Errors, st.LastError, st.CacheUsedBytes, st.RecycledItems)
	}
	if e.srv.freeFiles != 2 {
		t.Errorf("%d free files counted, want 2", e.srv.freeFiles)
	}
}

// syncFailFS fails the fsync of directories.
type syncFailFS struct{ fsys.FS }

func (f syncFailFS) Open(name string) (fsys.File, error) {
	fl, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if st, err := fl.Stat(); err == nil && st.IsDir() {
		return syncFailFile{fl}, nil
	}
	return fl, nil
}

type syncFailFile struct{ fsys.File }

func (syncFailFile) Sync() error { return syscall.EIO }

// TestRecycleNeedsDurableRename: a file is recycled only once its rename
// from .item is durable (the machine directory fsynced); when that fsync
// fails, the free files are removed, never reused (a crash could bring
// the old name back on bytes written over).
func TestRecycleNeedsDurableRename(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("dir-fsync-fails=%v", fail), func(t *testing.T) {
			dir := t.TempDir()
			c := newCacheDisk(fsys.OS{}, dir).cacheFiles
			for seq := uint64(1); seq <= 2; seq++ {
				f, from, err := c.stageItem("db01", seq, makeItem("db01", seq), batch.CodecS2, crc32.Checksum(makeItem("db01", seq), castagnoli), seq > 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.commitItem("db01", seq, from, f); err != nil {
					t.Fatal(err)
				}
			}
			if fail {
				c.fs = syncFailFS{c.fs}
			}
			res := c.removeUploaded("db01", []uploadedFile{{1, true}, {2, false}}, 0, true)
			want := removed{deleted: []uint64{1, 2}, recycled: []uint64{1}, planned: 1}
			wantFiles := []string{"00000000000000000001.free"}
			if fail {
				want.recycled, wantFiles = nil, nil
			}
			if diff := cmp.Diff(want, res, cmp.AllowUnexported(removed{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			ents, err := os.ReadDir(filepath.Join(dir, "db01"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			if diff := cmp.Diff(wantFiles, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDiskFullDropsFreeFiles: a full disk gives back the space of every
// recycled file, whichever machine's it was, and recycles no more until
// an item is taken again.
func TestDiskFullDropsFreeFiles(t *testing.T) {
	e := newEnv(t, nil)
	e.sendItem("web01", 1)
	if diff := cmp.Diff([]string{"web01/00000000000000000001.free", "web01/acked"}, e.cacheFiles()); diff != "" {
		t.Fatalf("cache files (-want +got):\n%s", diff)
	}
	e.srv.disk.write = func(f fsys.File, p []byte) (int, error) {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	got := summarize(e.sendItem("db01", 1))
	if diff := cmp.Diff([]ack{{0, proto.AckCacheFull, "no space left on device"}}, got, reasonHas); diff != "" {
		t.Errorf("acks (-want +got):\n%s", diff)
	}
	e.d.DeliverOps() // the removal
	if diff := cmp.Diff([]string{"web01/acked"}, e.cacheFiles()); diff != "" {
		t.Errorf("cache files after the disk filled (-want +got):\n%s", diff)
	}
	if e.srv.freeFiles != 0 || len(e.srv.machines["web01"].free) != 0 {
		t.Errorf("free files still counted: %d, web01's %v", e.srv.freeFiles, e.srv.machines["web01"].free)
	}
}

// The cache record's CRC-32C of an item is taken from the frame it came in
// (wire.SpanCRC), not computed over the item again; and it is the item's:
// the file reads back. A staged item without one (not from a frame) has it
// computed by the commit.
func TestRecordCRCFromFrame(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RetainBytes = -1 })
	e.hold()
	item := makeItem("db01", 1)
	e.d.Receive(agentAddr, &proto.ItemMsg{Machine: "db01", Seq: 1, Data: item})
	if len(e.srv.pending) != 1 || !e.srv.pending[0].crcKnown || e.srv.pending[0].crc != crc32.Checksum(item, castagnoli) {
		t.Fatalf("pending %+v: want one item with its CRC known from the frame, %08x", e.srv.pending, crc32.Checksum(item, castagnoli))
	}
	e.d.Advance(e.srv.cfg.GroupCommit)
	e.commit()
	rec, err := os.ReadFile(filepath.Join(e.cfg.CacheDir, "db01", itemName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := openRecord(rec); err != nil || !bytes.Equal(got, item) {
		t.Errorf("record of item 1: %v", err)
	}

	c := newCacheDisk(fsys.OS{}, t.TempDir()).cacheFiles
	res := c.commitBatch([]stagedItem{{machine: "web01", seq: 1, data: item, codec: batch.CodecS2}})
	if len(res) != 1 || res[0].err != nil || res[0].upTo != 1 {
		t.Fatalf("commit without a CRC: %+v", res)
	}
	rec, err = os.ReadFile(c.itemPath("web01", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := openRecord(rec); err != nil {
		t.Errorf("record of an item committed without a CRC: %v", err)
	}
}

// With SealAhead, items are sealed beyond the upload slots and wait,
// sealed, for one: an upload that ends hands its slot to the item sealed
// first at once, without a seal in between; never more than MaxUploads
// upload, nor MaxUploads+SealAhead are in the pipeline; every blob opens
// to its own item.
func TestSealAhead(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploads = 2; c.SealAhead = 1 })
	p := &probe{s: e.srv}
	e.d.Actor = p
	e.hold()
	const n = 6
	for seq := uint64(1); seq <= n; seq++ {
		e.sendItem("db01", seq)
	}
	isSeal := func(d runtime.Done) bool { return strings.HasPrefix(d.Name, "seal ") }
	isPut := func(d runtime.Done) bool { return strings.HasPrefix(d.Name, "upload ") }
	e.d.DeliverOpsWhere(isSeal)
	if st := e.srv.Status(); st.InFlight != 3 || e.srv.uploading != 2 || len(e.srv.sealedQ) != 1 || e.srv.sealedQ[0].seq != 3 {
		t.Fatalf("after the first seals: in flight %d, uploading %d, sealed waiting %v; want 3, 2, item 3", st.InFlight, e.srv.uploading, e.srv.sealedQ)
	}
	// One upload ends: item 3 takes its slot at once (no seal between),
	// and item 4's seal starts.
	var first runtime.Done
	e.d.DeliverOpsWhere(func(d runtime.Done) bool {
		if first.Name == "" && isPut(d) {
			first = d
			return true
		}
		return false
	})
	if e.srv.uploading != 2 || len(e.srv.sealedQ) != 0 {
		t.Errorf("after an upload ended: uploading %d, sealed waiting %d; want 2, 0", e.srv.uploading, len(e.srv.sealedQ))
	}
	var sealing []string
	for _, op := range e.d.Ops() {
		if strings.HasPrefix(op.Name, "seal ") {
			sealing = append(sealing, op.Name)
		}
	}
	if diff := cmp.Diff([]string{"seal " + proto.CacheBlobName("db01", 4)}, sealing); diff != "" {
		t.Errorf("seals running (-want +got):\n%s", diff)
	}
	e.release()
	st := e.srv.Status()
	if st.UploadedItems != n || st.InFlight != 0 || st.PipelineBytes != 0 || e.srv.uploading != 0 {
		t.Errorf("after: %+v, uploading %d", st, e.srv.uploading)
	}
	if p.maxInFlight != 3 || p.maxUploading != 2 {
		t.Errorf("max in flight %d, uploading %d; want MaxUploads+SealAhead 3, MaxUploads 2", p.maxInFlight, p.maxUploading)
	}
	s, err := batch.NewSealer(testKey, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= n; seq++ {
		name := proto.CacheBlobName("db01", seq)
		sealed, _, err := e.store.Get(context.Background(), prefix+proto.ContainerCache, name, blob.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.Open(nil, name, sealed); err != nil || !bytes.Equal(got, makeItem("db01", seq)) {
			t.Errorf("%s does not open to its item: %v", name, err)
		}
	}
}
