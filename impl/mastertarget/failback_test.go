package mastertarget

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/memds"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	csAddr = runtime.Addr("cs:443")
	fbAddr = runtime.Addr("failover:1")
	vmName = "db01-vm"
)

// world is a master target over a memds datastore and a crashFS retention
// volume, both behind a crash switch: once armed, the steps that change
// them (a datastore write; a file create, write, truncate, fsync, rename or
// remove) count down, and when the count runs out the machine "loses
// power": every later step fails, as if it never ran.
type world struct {
	t     *testing.T
	vc    *memds.Client
	fs    *crashFS
	sw    *crashSwitch
	d     *runtimetest.Driver
	disks []proto.TargetDisk
}

type crashSwitch struct {
	armed bool
	left  atomic.Int64
	steps atomic.Int64 // counted while not armed too: the size of a run
}

var errPowerLost = errors.New("test: power lost")

// step reports whether the next mutating step may run.
func (c *crashSwitch) step() error {
	c.steps.Add(1)
	if !c.armed {
		return nil
	}
	if c.left.Add(-1) < 0 {
		return errPowerLost
	}
	return nil
}

func (c *crashSwitch) dead() bool { return c.armed && c.left.Load() < 0 }

type swVC struct {
	vsphere.Client
	sw *crashSwitch
}

func (v swVC) WriteFile(ctx context.Context, path string, data []byte) error {
	if err := v.sw.step(); err != nil {
		return err
	}
	return v.Client.WriteFile(ctx, path, data)
}

func (v swVC) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if v.sw.dead() {
		return nil, errPowerLost
	}
	return v.Client.ReadFile(ctx, path)
}

type swFS struct {
	fsys.FS
	sw *crashSwitch
}

func (f swFS) OpenFile(name string, flag int, perm fs.FileMode) (fsys.File, error) {
	if err := f.sw.step(); err != nil {
		return nil, err
	}
	h, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return swFile{h, f.sw}, nil
}
func (f swFS) Open(name string) (fsys.File, error) {
	if f.sw.dead() {
		return nil, errPowerLost
	}
	h, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return swFile{h, f.sw}, nil
}
func (f swFS) ReadFile(name string) ([]byte, error) {
	if f.sw.dead() {
		return nil, errPowerLost
	}
	return f.FS.ReadFile(name)
}
func (f swFS) Rename(a, b string) error {
	if err := f.sw.step(); err != nil {
		return err
	}
	return f.FS.Rename(a, b)
}
func (f swFS) Remove(name string) error {
	if err := f.sw.step(); err != nil {
		return err
	}
	return f.FS.Remove(name)
}
func (f swFS) Truncate(name string, size int64) error {
	if err := f.sw.step(); err != nil {
		return err
	}
	return f.FS.Truncate(name, size)
}

type swFile struct {
	fsys.File
	sw *crashSwitch
}

func (f swFile) Write(b []byte) (int, error) {
	if err := f.sw.step(); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}
func (f swFile) WriteAt(b []byte, off int64) (int, error) {
	if err := f.sw.step(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(b, off)
}
func (f swFile) Sync() error {
	if err := f.sw.step(); err != nil {
		return err
	}
	return f.File.Sync()
}
func (f swFile) Truncate(size int64) error {
	if err := f.sw.step(); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func newWorld(t *testing.T, ds []proto.TargetDisk) *world {
	vc := memds.New()
	vc.AddDatastore("ds1", 1<<30)
	for _, d := range ds {
		if err := vc.WriteFile(context.Background(), d.Path, nil); err != nil {
			t.Fatal(err)
		}
	}
	w := &world{t: t, vc: vc, fs: newCrashFS(), sw: &crashSwitch{}, disks: ds}
	if err := w.fs.MkdirAll("/retention", 0o755); err != nil { // as the deployment makes it
		t.Fatal(err)
	}
	w.restart()
	return w
}

// restart builds a new Target on the same datastore and retention volume.
func (w *world) restart() {
	tg, err := New(Config{VC: swVC{w.vc, w.sw}, FS: swFS{w.fs, w.sw}, RetentionDir: "/retention", ConfigServer: csAddr,
		// The cases below were written for a short reach: a point is pruned
		// after two newer ones (the default keeps an hour of them).
		ReachPoints: 2})
	if err != nil {
		w.t.Fatal(err)
	}
	w.d = runtimetest.New(w.t, mtAddr, tg)
}

// crash cuts the power: the retention volume loses what was not synced,
// the target is built again, and the switch is off.
func (w *world) crash() {
	w.fs.Crash()
	w.sw.armed = false
	w.restart()
}

func (w *world) status() MachineStatus {
	w.t.Helper()
	st := w.d.Actor.(*Target).Status()
	if len(st.Machines) != 1 {
		w.t.Fatalf("status: %+v", st)
	}
	return st.Machines[0]
}

func (w *world) attach(fresh bool) {
	w.t.Helper()
	w.d.Receive(sender, &proto.AttachTarget{Req: "a", Machine: "db01", Disks: w.disks, VM: vmName, Fresh: fresh})
	got := w.d.SentTo(sender)
	if len(got) != 1 || !got[0].(*proto.Reply).OK {
		w.t.Fatalf("attach: %+v", got[0])
	}
}

// send delivers items and returns the highest acknowledged and every ack.
func (w *world) send(items ...*batch.Item) (acked uint64, acks []*proto.ItemAck) {
	for _, it := range items {
		w.d.Receive(sender, &proto.ItemMsg{Machine: it.Machine, Seq: it.Seq, Data: it.Marshal()})
	}
	for _, m := range w.d.SentTo(sender) {
		a := m.(*proto.ItemAck)
		acks = append(acks, a)
		if a.Status == proto.AckOK {
			acked = max(acked, a.Acked)
		}
	}
	return acked, acks
}

// toCS is what the target sent the configuration server.
func (w *world) toCS() []wire.Msg { return w.d.SentTo(csAddr) }

func (w *world) failback(point string) *proto.Reply {
	w.t.Helper()
	w.d.Receive(fbAddr, &proto.FailbackPoint{Req: "f-" + point, Machine: "db01", Point: point})
	got := w.d.SentTo(fbAddr)
	if len(got) != 1 {
		w.t.Fatalf("failback %s: %d answers: %v", point, len(got), got)
	}
	return got[0].(*proto.Reply)
}

func (w *world) points() *proto.TargetPoints {
	w.t.Helper()
	w.d.Receive(fbAddr, &proto.TargetPointsRequest{Req: "p", Machine: "db01"})
	got := w.d.SentTo(fbAddr)
	if len(got) != 1 {
		w.t.Fatalf("points: %d answers", len(got))
	}
	return got[0].(*proto.TargetPoints)
}

// image is disk i as a guest reads it: the flat extent, zeros past its end
// up to the capacity.
func (w *world) image(i int) []byte {
	w.t.Helper()
	b, err := w.vc.ReadFile(context.Background(), w.disks[i].Path)
	if err != nil {
		w.t.Fatal(err)
	}
	return append(b, make([]byte, w.disks[i].CapacityBytes-int64(len(b)))...)
}

// expect computes, independently of the target, the disks the stream
// leaves when applied up to (not including) the bookmark record with id
// upTo, or to its end for "".
func expect(ds []proto.TargetDisk, items []*batch.Item, upTo string) [][]byte {
	imgs := make([][]byte, len(ds))
	for i, d := range ds {
		imgs[i] = make([]byte, d.CapacityBytes)
	}
	for _, it := range items {
		for _, r := range it.Runs {
			copy(imgs[it.Disk][r.Off:], r.Data)
		}
		for _, r := range it.Records {
			if r.Type == batch.RecBookmark && r.BookmarkID == upTo {
				return imgs
			}
			if r.Type == batch.RecWrite {
				copy(imgs[r.Disk][r.Off:], r.Data)
			}
		}
	}
	if upTo != "" {
		panic("no bookmark " + upTo)
	}
	return imgs
}

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func wr(seq uint64, disk uint16, off int64, n int, v byte) batch.Record {
	return batch.Record{Seq: seq, Type: batch.RecWrite, Disk: disk, Off: off, Data: fill(n, v)}
}

func bm(seq uint64, kind proto.Consistency, id string, min int) batch.Record {
	return batch.Record{Seq: seq, Type: batch.RecBookmark, BookmarkKind: kind, BookmarkID: id, UnixNano: t0.Add(time.Duration(min) * time.Minute).UnixNano()}
}

func logItem(seq uint64, recs ...batch.Record) *batch.Item {
	return &batch.Item{Machine: "db01", Seq: seq, Kind: batch.KindLog, First: recs[0].Seq, Last: recs[len(recs)-1].Seq, Records: recs}
}

// fbStream is a failback stream: a sync with a bookmark in the middle of
// it (no point: the sync is not complete), then rounds of writes, crash
// and app bookmarks, with writes after the last one.
func fbStream() []*batch.Item {
	return []*batch.Item{
		{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, Gen: 1, DiskSizes: []int64{diskSize, diskSize}},
		{Machine: "db01", Seq: 2, Kind: batch.KindChunk, Gen: 1, Disk: 0, Runs: []batch.Run{{Off: 0, Data: fill(8192, 1)}}},
		{Machine: "db01", Seq: 3, Kind: batch.KindChunk, Gen: 1, Disk: 1, Runs: []batch.Run{{Off: 4096, Data: fill(4096, 2)}}},
		logItem(4, wr(1, 0, 512, 512, 3), bm(2, proto.Crash, "early", 1)),
		{Machine: "db01", Seq: 5, Kind: batch.KindSyncEnd, Gen: 1, LogFrom: 1, Chunks: 2},
		logItem(6, wr(3, 0, 1024, 1024, 4), bm(4, proto.App, "a0", 2), wr(5, 0, 3072, 512, 14), bm(6, proto.App, "a1", 3)),
		logItem(7, wr(7, 1, 4096, 512, 5), wr(8, 0, 1536, 1024, 6), bm(9, proto.Crash, "c2", 4)),
		logItem(8, wr(10, 0, 0, 512, 7), bm(11, proto.App, "a2", 5), wr(12, 1, 8192, 2048, 8)),
		logItem(9, wr(13, 0, 1024, 4096, 9), bm(14, proto.App, "a3", 6), wr(15, 0, 40960, 512, 10)),
		logItem(10, wr(16, 1, 4608, 512, 11), bm(17, proto.Crash, "c4", 7), wr(18, 0, 0, 8192, 12), wr(19, 1, 0, 512, 13)),
	}
}

func eventsOf(msgs []wire.Msg) []string {
	var out []string
	for _, m := range msgs {
		switch m := m.(type) {
		case *proto.ReplicaEvent:
			s := m.Event
			if m.PointID != "" {
				s += " " + m.PointID
			}
			out = append(out, s)
		case *proto.Checksums:
			out = append(out, fmt.Sprintf("checksums %d final=%v", m.Disk, m.Final))
		}
	}
	return out
}
