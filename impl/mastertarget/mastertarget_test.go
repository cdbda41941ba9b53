package mastertarget

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/memds"
)

const (
	mtAddr   = runtime.Addr("mt01:9443")
	sender   = runtime.Addr("ps-azure:9443")
	diskSize = 64 << 10
)

var disks = []proto.TargetDisk{
	{Path: "[ds1] db01/db01-flat.vmdk", CapacityBytes: diskSize},
	{Path: "[ds1] db01/db01_1-flat.vmdk", CapacityBytes: diskSize},
}

type rig struct {
	t   *testing.T
	vc  *memds.Client
	dir string
	d   *runtimetest.Driver
}

// newRig starts a target over a memds datastore holding db01's two empty
// flat extents, as CreateVM leaves them.
func newRig(t *testing.T) *rig {
	vc := memds.New()
	vc.AddDatastore("ds1", 1<<20)
	for _, d := range disks {
		if err := vc.WriteFile(context.Background(), d.Path, nil); err != nil {
			t.Fatal(err)
		}
	}
	r := &rig{t: t, vc: vc, dir: filepath.Join(t.TempDir(), "retention")}
	r.restart()
	return r
}

// restart builds a new Target on the same datastore and retention volume.
func (r *rig) restart() {
	tg, err := New(Config{VC: r.vc, RetentionDir: r.dir})
	if err != nil {
		r.t.Fatal(err)
	}
	r.d = runtimetest.New(r.t, mtAddr, tg)
}

func (r *rig) status() Status { return r.d.Actor.(*Target).Status() }

func (r *rig) attach(machine string, ds []proto.TargetDisk) *proto.Reply {
	r.t.Helper()
	r.d.Receive(sender, &proto.AttachTarget{Req: "a1", Machine: machine, Disks: ds})
	got := r.d.SentTo(sender)
	if len(got) != 1 {
		r.t.Fatalf("attach %s: %d answers, want 1: %v", machine, len(got), got)
	}
	return got[0].(*proto.Reply)
}

// send delivers one item and returns the acks it drew.
func (r *rig) send(it *batch.Item) []*proto.ItemAck {
	r.t.Helper()
	r.d.Receive(sender, &proto.ItemMsg{Machine: it.Machine, Seq: it.Seq, Data: it.Marshal()})
	return r.acks()
}

func (r *rig) acks() []*proto.ItemAck {
	var out []*proto.ItemAck
	for _, m := range r.d.SentTo(sender) {
		a, ok := m.(*proto.ItemAck)
		if !ok {
			r.t.Fatalf("unexpected %T", m)
		}
		out = append(out, a)
	}
	return out
}

func (r *rig) disk(i int) []byte {
	b, err := r.vc.ReadFile(context.Background(), disks[i].Path)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func fill(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

// stream is a resync followed by change-log records: what a reprotect
// sends.
func stream() []*batch.Item {
	return []*batch.Item{
		{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, Gen: 1, DiskSizes: []int64{diskSize, diskSize}},
		{Machine: "db01", Seq: 2, Kind: batch.KindChunk, Gen: 1, Disk: 0, Runs: []batch.Run{{Off: 0, Data: fill(4096, 1)}, {Off: 8192, Data: fill(512, 2)}}},
		{Machine: "db01", Seq: 3, Kind: batch.KindChunk, Gen: 1, Disk: 1, Runs: []batch.Run{{Off: 4096, Data: fill(1024, 3)}}},
		{Machine: "db01", Seq: 4, Kind: batch.KindSyncEnd, Gen: 1, LogFrom: 1, Chunks: 2},
		{Machine: "db01", Seq: 5, Kind: batch.KindLog, First: 1, Last: 3, Records: []batch.Record{
			{Seq: 1, Type: batch.RecWrite, Disk: 0, Off: 512, Data: fill(512, 4)},
			{Seq: 2, Type: batch.RecWrite, Disk: 1, Off: 4096, Data: fill(512, 5)},
			{Seq: 3, Type: batch.RecBookmark, BookmarkKind: proto.App, BookmarkID: "db01-a-3"},
		}},
	}
}

// model is the disks after stream(), written out by hand.
func model() [2][]byte {
	d0 := make([]byte, 8192+512)
	copy(d0, fill(4096, 1))
	copy(d0[8192:], fill(512, 2))
	copy(d0[512:], fill(512, 4))
	d1 := make([]byte, 4096+1024)
	copy(d1[4096:], fill(1024, 3))
	copy(d1[4096:], fill(512, 5))
	return [2][]byte{d0, d1}
}

func TestApplyInOrderAckAndRestart(t *testing.T) {
	r := newRig(t)
	if rep := r.attach("db01", disks); !rep.OK {
		t.Fatalf("attach refused: %s", rep.Reason)
	}
	for _, it := range stream() {
		want := []*proto.ItemAck{{Machine: "db01", Acked: it.Seq, Status: proto.AckOK}}
		if d := cmp.Diff(want, r.send(it)); d != "" {
			t.Fatalf("item %d acks (-want +got):\n%s", it.Seq, d)
		}
	}
	m := model()
	for i := range 2 {
		if d := cmp.Diff(m[i], r.disk(i)); d != "" {
			t.Errorf("disk %d (-model +datastore):\n%s", i, d)
		}
	}
	// The position is on the retention volume: a new incarnation knows it,
	// acknowledges a resent item without writing, and takes the next one.
	r.restart()
	st := r.status()
	if got := st.Machines[0]; got.Applied != 5 || got.LastBookmark != "db01-a-3" || got.Disks != 2 {
		t.Fatalf("after restart: %+v", got)
	}
	writes := r.vc.Writes()
	if d := cmp.Diff([]*proto.ItemAck{{Machine: "db01", Acked: 5, Status: proto.AckOK}}, r.send(stream()[4])); d != "" {
		t.Errorf("resent item after restart (-want +got):\n%s", d)
	}
	if r.vc.Writes() != writes {
		t.Errorf("a resent applied item was written again")
	}
	next := &batch.Item{Machine: "db01", Seq: 6, Kind: batch.KindLog, First: 4, Last: 4, Records: []batch.Record{
		{Seq: 4, Type: batch.RecWrite, Disk: 1, Off: 0, Data: fill(512, 6)}}}
	if acks := r.send(next); len(acks) != 1 || acks[0].Acked != 6 || acks[0].Status != proto.AckOK {
		t.Errorf("item 6 after restart: %+v", acks)
	}
	if got := r.disk(1)[:512]; !bytes.Equal(got, fill(512, 6)) {
		t.Errorf("item 6 not on disk 1")
	}
}

// TestAckAfterFsync: the ack waits for the op that writes the disks and
// fsyncs the position; the op says it fsyncs the retention volume.
func TestAckAfterFsync(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	r.d.AutoDeliverOps = false
	it := stream()[1]
	r.d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: 1, Data: stream()[0].Marshal()})
	r.d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: 2, Data: it.Marshal()})
	if acks := r.acks(); len(acks) != 0 {
		t.Fatalf("acked before the apply op completed: %+v", acks)
	}
	ops := r.d.Ops()
	if len(ops) != 1 || ops[0].Disk == nil || ops[0].Disk.Device != DeviceRetention || ops[0].Disk.Syncs < 1 {
		t.Fatalf("apply op does not declare its retention fsync: %+v", ops)
	}
	r.d.DeliverOps()
	// Item 2 queued behind item 1's op; both acked in order.
	acks := r.acks()
	if len(acks) == 0 || acks[len(acks)-1].Acked != 2 {
		t.Fatalf("acks after the ops: %+v", acks)
	}
	for i := 1; i < len(acks); i++ {
		if acks[i].Acked < acks[i-1].Acked {
			t.Errorf("acks go back: %+v", acks)
		}
	}
}

func TestRefusals(t *testing.T) {
	good := stream()[0]
	tests := []struct {
		name   string
		msg    func() *proto.ItemMsg
		status string
		err    error
		reason string
	}{
		{"gap", func() *proto.ItemMsg {
			it := *stream()[2]
			return &proto.ItemMsg{Machine: "db01", Seq: 3, Data: it.Marshal()}
		},
			proto.AckGap, ErrGap, "expected item 1, got 3"},
		{"corrupt", func() *proto.ItemMsg { return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: []byte("garbage")} },
			proto.AckRefused, ErrCorrupt, ""},
		{"truncated", func() *proto.ItemMsg {
			b := good.Marshal()
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: b[:len(b)-2]}
		}, proto.AckRefused, ErrCorrupt, ""},
		{"foreign machine", func() *proto.ItemMsg {
			it := *good
			it.Machine = "web01"
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrForeign, "carries web01 item 1"},
		{"seq mismatch", func() *proto.ItemMsg {
			it := *good
			it.Seq = 9
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrForeign, ""},
		{"disk out of range", func() *proto.ItemMsg {
			it := batch.Item{Machine: "db01", Seq: 1, Kind: batch.KindChunk, Disk: 2, Runs: []batch.Run{{Off: 0, Data: fill(512, 1)}}}
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrForeign, "disk 2 of 2"},
		{"past capacity", func() *proto.ItemMsg {
			it := batch.Item{Machine: "db01", Seq: 1, Kind: batch.KindLog, First: 1, Last: 1, Records: []batch.Record{
				{Seq: 1, Type: batch.RecWrite, Disk: 1, Off: diskSize, Data: fill(512, 1)}}}
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrForeign, "past disk 1"},
		{"sync of other disks", func() *proto.ItemMsg {
			it := batch.Item{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, DiskSizes: []int64{diskSize}}
			return &proto.ItemMsg{Machine: "db01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrForeign, "sync of 1 disks, 2 attached"},
		{"not attached", func() *proto.ItemMsg {
			it := *good
			it.Machine = "web01"
			return &proto.ItemMsg{Machine: "web01", Seq: 1, Data: it.Marshal()}
		}, proto.AckRefused, ErrNotAttached, "web01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			r.attach("db01", disks)
			msg := tt.msg()
			r.d.Receive(sender, msg)
			acks := r.acks()
			if len(acks) != 1 {
				t.Fatalf("%d answers, want 1", len(acks))
			}
			a := acks[0]
			if a.Status != tt.status || a.Acked != 0 || !strings.HasPrefix(a.Reason, tt.err.Error()) || !strings.Contains(a.Reason, tt.reason) {
				t.Errorf("answer %+v, want status %s, acked 0, reason %q…%q", a, tt.status, tt.err, tt.reason)
			}
			if r.vc.Writes() != 2 {
				t.Errorf("a refused item wrote the datastore (%d writes)", r.vc.Writes())
			}
			// Nothing was lost or half-taken: the stream goes on from item 1.
			for _, it := range stream() {
				if acks := r.send(it); len(acks) != 1 || acks[0].Status != proto.AckOK || acks[0].Acked != it.Seq {
					t.Fatalf("item %d after the refusal: %+v", it.Seq, acks)
				}
			}
			if d := cmp.Diff(model()[0], r.disk(0)); d != "" {
				t.Errorf("disk 0 (-model +datastore):\n%s", d)
			}
		})
	}
}

func TestForeignFrameIgnored(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	r.d.ReceiveFrame(sender, []byte{0xde, 0xad, 0xbe, 0xef})
	r.d.Receive(sender, &proto.Heartbeat{Machine: "db01"})
	if got := r.d.Sent(); len(got) != 0 {
		t.Errorf("a foreign frame drew answers: %v", got)
	}
	if acks := r.send(stream()[0]); len(acks) != 1 || acks[0].Acked != 1 {
		t.Errorf("stream after a foreign frame: %+v", acks)
	}
}

func manyDisks(machine string, n int) []proto.TargetDisk {
	out := make([]proto.TargetDisk, n)
	for i := range out {
		out[i] = proto.TargetDisk{Path: fmt.Sprintf("[ds1] %s/%s_%d-flat.vmdk", machine, machine, i), CapacityBytes: diskSize}
	}
	return out
}

func TestDiskLimit(t *testing.T) {
	r := newRig(t)
	if rep := r.attach("big", manyDisks("big", 61)); rep.OK || !strings.Contains(rep.Reason, "61 disks, over the 60") {
		t.Errorf("61 disks at once: %+v", rep)
	}
	if rep := r.attach("a", manyDisks("a", 40)); !rep.OK {
		t.Fatalf("40 disks: %+v", rep)
	}
	rep := r.attach("b", manyDisks("b", 21))
	if rep.OK || !strings.HasPrefix(rep.Reason, ErrTooManyDisks.Error()) || !strings.Contains(rep.Reason, "would make 61, over the 60") {
		t.Errorf("40+21 disks: %+v", rep)
	}
	if st := r.status(); st.DisksUsed != 40 || len(st.Machines) != 1 {
		t.Errorf("a refused attach was kept: %+v", st)
	}
	if rep := r.attach("c", manyDisks("c", 20)); !rep.OK {
		t.Errorf("40+20 disks: %+v", rep)
	}
	if _, err := New(Config{VC: r.vc, RetentionDir: r.dir, MaxDisks: 61}); !errors.Is(err, ErrTooManyDisks) {
		t.Errorf("New with MaxDisks 61: %v", err)
	}
}

func TestAttachChecks(t *testing.T) {
	r := newRig(t)
	if rep := r.attach("db01", disks); !rep.OK {
		t.Fatal(rep.Reason)
	}
	if rep := r.attach("db01", disks); !rep.OK {
		t.Errorf("the same attach again (a lost reply): %+v", rep)
	}
	tests := []struct {
		name    string
		machine string
		disks   []proto.TargetDisk
		err     error
	}{
		{"other disks", "db01", disks[:1], ErrAttached},
		{"no disks", "web01", nil, ErrBadAttach},
		{"bad path", "web01", []proto.TargetDisk{{Path: "db01-flat.vmdk", CapacityBytes: 1}}, ErrBadAttach},
		{"no capacity", "web01", []proto.TargetDisk{{Path: "[ds1] w/w-flat.vmdk"}}, ErrBadAttach},
		{"another's disk", "web01", disks[1:], ErrBadAttach},
		{"bad name", "../x", manyDisks("x", 1), ErrBadAttach},
	}
	for _, tt := range tests {
		rep := r.attach(tt.machine, tt.disks)
		if rep.OK || !strings.HasPrefix(rep.Reason, tt.err.Error()) {
			t.Errorf("%s: %+v, want refused with %v", tt.name, rep, tt.err)
		}
	}
}

// TestDatastoreFull: an apply the datastore cannot take is not
// acknowledged; the target says why at once and applies it on its own once
// there is room.
func TestDatastoreFull(t *testing.T) {
	r := newRig(t)
	r.vc.SetCapacity("ds1", 1000)
	r.attach("db01", disks)
	r.send(stream()[0])
	acks := r.send(stream()[1])
	if len(acks) != 1 || acks[0].Status != proto.AckWriteFailed || acks[0].Acked != 1 || !strings.Contains(acks[0].Reason, vsphere.ErrNoSpace.Error()) {
		t.Fatalf("apply into a full datastore: %+v", acks)
	}
	if st := r.status().Machines[0]; !st.Retrying || st.Applied != 1 || st.Queued != 1 {
		t.Errorf("status after a failed apply: %+v", st)
	}
	// Item 3 queues behind it; nothing is applied out of order.
	if acks := r.send(stream()[2]); len(acks) != 0 {
		t.Errorf("item 3 behind a failed item 2 answered: %+v", acks)
	}
	r.d.Advance(DefaultRetryEvery)
	if acks := r.acks(); len(acks) != 1 || acks[0].Status != proto.AckWriteFailed {
		t.Fatalf("retry while still full: %+v", acks)
	}
	r.vc.SetCapacity("ds1", 1<<20)
	r.d.Advance(DefaultRetryEvery)
	if acks := r.acks(); len(acks) != 1 || acks[0].Status != proto.AckOK || acks[0].Acked != 3 {
		t.Fatalf("after room was made: %+v", acks)
	}
	for _, it := range stream()[3:] {
		r.send(it)
	}
	if d := cmp.Diff(model()[1], r.disk(1)); d != "" {
		t.Errorf("disk 1 (-model +datastore):\n%s", d)
	}
}

// TestRetentionFailureNotAcked: a position that cannot be made durable is
// not acknowledged, even though the disks were written; the retry applies
// the same items again and the disks come out the same.
func TestRetentionFailureNotAcked(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	// A file where the state file's temporary would go makes its create fail.
	tmp := filepath.Join(r.dir, stateName("db01")+tmpSuffix)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	acks := r.send(stream()[0])
	if len(acks) != 1 || acks[0].Status != proto.AckWriteFailed || !strings.HasPrefix(acks[0].Reason, ErrRetention.Error()) {
		t.Fatalf("apply whose position cannot be written: %+v", acks)
	}
	if acks := r.send(stream()[1]); len(acks) != 0 {
		t.Fatalf("item 2 behind a failed item 1 answered: %+v", acks)
	}
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	r.d.Advance(DefaultRetryEvery)
	// A SyncStart ends an apply (its checksums are of the disks it finds):
	// items 1 and 2 are acknowledged in two steps.
	if acks := r.acks(); len(acks) != 2 || acks[0].Acked != 1 || acks[1].Acked != 2 || acks[1].Status != proto.AckOK {
		t.Fatalf("after the retention volume healed: %+v", acks)
	}
	for _, it := range stream()[2:] {
		r.send(it)
	}
	if d := cmp.Diff(model()[0], r.disk(0)); d != "" {
		t.Errorf("disk 0 (-model +datastore):\n%s", d)
	}
}

func TestBlockSums(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	for _, it := range stream() {
		r.send(it)
	}
	want := func(img []byte, off, n int64) []byte {
		var out []byte
		for b := range n {
			start := off + b*proto.ChecksumBlockSize
			var blk []byte
			if start < int64(len(img)) {
				blk = img[start:min(start+proto.ChecksumBlockSize, int64(len(img)))]
			}
			s := proto.BlockSum(blk)
			out = append(out, s[:]...)
		}
		return out
	}
	ask := func(req proto.BlockSumRequest) *proto.BlockSumReply {
		t.Helper()
		r.d.Receive(sender, &req)
		got := r.d.SentTo(sender)
		if len(got) != 1 {
			t.Fatalf("%d answers to %+v", len(got), req)
		}
		return got[0].(*proto.BlockSumReply)
	}
	m := model()
	all := ask(proto.BlockSumRequest{Req: "s1", Machine: "db01", Disk: 0})
	if d := cmp.Diff(&proto.BlockSumReply{Req: "s1", Machine: "db01", Disk: 0, BlockSize: proto.ChecksumBlockSize, Applied: 5,
		Sums: want(m[0], 0, diskSize/proto.ChecksumBlockSize), Final: true}, all); d != "" {
		t.Errorf("whole disk (-want +got):\n%s", d)
	}
	// Negative control: the sums tell a block that differs from one that
	// does not, so a reprotect sends only what differs.
	zero := proto.ZeroBlockSum
	if bytes.Equal(all.Sums[:proto.ChecksumSize], zero[:]) || !bytes.Equal(all.Sums[4*proto.ChecksumSize:5*proto.ChecksumSize], zero[:]) {
		t.Errorf("sums do not tell written blocks from zero ones")
	}
	part := ask(proto.BlockSumRequest{Req: "s2", Machine: "db01", Disk: 1, Off: 4096, Blocks: 2})
	if !bytes.Equal(part.Sums, want(m[1], 4096, 2)) || part.Final || part.Err != "" {
		t.Errorf("two blocks of disk 1: %+v", part)
	}
	for _, bad := range []proto.BlockSumRequest{
		{Machine: "db01", Disk: 2},
		{Machine: "db01", Disk: 0, Off: 100},
		{Machine: "db01", Disk: 0, Off: diskSize},
		{Machine: "web01"},
	} {
		if rep := ask(bad); rep.Err == "" || len(rep.Sums) != 0 {
			t.Errorf("%+v answered %+v, want an error", bad, rep)
		}
	}
}

// TestBlockSumsWaitForApply: a checksum request that arrives during an
// apply is answered after it, with the sums of the disk the apply left.
func TestBlockSumsWaitForApply(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	r.d.AutoDeliverOps = false
	r.d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: 1, Data: stream()[0].Marshal()})
	r.d.DeliverOps()
	r.acks()
	r.d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: 2, Data: stream()[1].Marshal()})
	r.d.Receive(sender, &proto.BlockSumRequest{Req: "s", Machine: "db01", Disk: 0, Blocks: 1})
	if got := r.d.SentTo(sender); len(got) != 0 {
		t.Fatalf("answered during the apply: %v", got)
	}
	r.d.DeliverOps()
	var rep *proto.BlockSumReply
	for _, m := range r.d.SentTo(sender) {
		if b, ok := m.(*proto.BlockSumReply); ok {
			rep = b
		}
	}
	want := proto.BlockSum(fill(4096, 1))
	if rep == nil || rep.Applied != 2 || !bytes.Equal(rep.Sums, want[:]) {
		t.Errorf("sums after the apply: %+v", rep)
	}
}

// TestRestartWaitsForLoad: messages that arrive while the retention
// volume loads are handled after it, against the restored position.
func TestRestartWaitsForLoad(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	r.send(stream()[0])
	tg, err := New(Config{VC: r.vc, RetentionDir: r.dir})
	if err != nil {
		t.Fatal(err)
	}
	// Build the driver with completions held: Started's load op waits.
	d := runtimetest.New(t, mtAddr, &holdFirst{Target: tg})
	d.AutoDeliverOps = false
	d.Deliver(runtime.Started{})
	if len(d.Ops()) != 1 {
		t.Fatalf("Started began %d ops, want the load", len(d.Ops()))
	}
	d.Receive(sender, &proto.ItemMsg{Machine: "db01", Seq: 2, Data: stream()[1].Marshal()})
	if got := d.SentTo(sender); len(got) != 0 {
		t.Fatalf("answered before the retention volume loaded: %v", got)
	}
	d.DeliverOps()
	got := d.SentTo(sender)
	if len(got) != 1 || got[0].(*proto.ItemAck).Acked != 2 {
		t.Errorf("after load: %v", got)
	}
}

// holdFirst swallows the Started that runtimetest.New delivers (with its
// ops completed at once), so that the test can deliver Started itself with
// completions held.
type holdFirst struct {
	*Target
	started bool
}

func (h *holdFirst) Handle(ctx runtime.Context, ev runtime.Event) {
	if _, ok := ev.(runtime.Started); ok && !h.started {
		h.started = true
		return
	}
	h.Target.Handle(ctx, ev)
}

func TestBrokenState(t *testing.T) {
	r := newRig(t)
	r.attach("db01", disks)
	if err := os.WriteFile(filepath.Join(r.dir, stateName("db01")), []byte("not a state file"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.restart()
	st := r.status()
	if len(st.Broken) != 1 || !strings.Contains(st.Broken[0], ErrStateCorrupt.Error()) || len(st.Machines) != 0 {
		t.Fatalf("status with a damaged state file: %+v", st)
	}
	if acks := r.send(stream()[0]); len(acks) != 1 || acks[0].Status != proto.AckRefused {
		t.Errorf("item of a machine whose state is damaged: %+v", acks)
	}
	if rep := r.attach("db01", disks); rep.OK || !strings.Contains(rep.Reason, "remove the file") {
		t.Errorf("attach over a damaged state: %+v", rep)
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := state{Machine: "db01", Disks: disks, Applied: 9, LastBookmark: "b"}
	got, err := unmarshalState(s.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	b := s.marshal()
	b[3] ^= 1
	if _, err := unmarshalState(b); !errors.Is(err, ErrStateCorrupt) {
		t.Errorf("flipped bit: %v", err)
	}
}

// TestStreamHello: an agent opening its stream learns the durable
// position (the numbering is the target's); a machine not attached is
// refused.
func TestStreamHello(t *testing.T) {
	r := newRig(t)
	hello := func(machine string) *proto.ItemAck {
		t.Helper()
		r.d.Receive(sender, &proto.StreamHello{Machine: machine})
		acks := r.acks()
		if len(acks) != 1 {
			t.Fatalf("hello %s: %d answers, want 1", machine, len(acks))
		}
		return acks[0]
	}
	if a := hello("db01"); a.Status != proto.AckRefused || !strings.Contains(a.Reason, ErrNotAttached.Error()) {
		t.Errorf("hello before attach: %+v, want refused as not attached", a)
	}
	if rep := r.attach("db01", disks); !rep.OK {
		t.Fatal(rep.Reason)
	}
	if a := hello("db01"); a.Status != proto.AckOK || a.Acked != 0 {
		t.Errorf("hello after attach: %+v, want OK at 0", a)
	}
	for _, it := range stream()[:2] {
		r.send(it)
	}
	r.restart()
	if a := hello("db01"); a.Status != proto.AckOK || a.Acked != 2 {
		t.Errorf("hello after two items and a restart: %+v, want OK at 2", a)
	}
}

// TestStreamHelloWithItemsQueued: a hello that finds items queued (they
// came before it, on the same path) is answered by their applies' acks,
// not at once at the applied position: a probing agent would take that
// answer for "nothing more arrived" and send them all again (over a slow
// VPN each resend queued behind the last: swarm seed 13). With nothing
// queued it is answered at once (the control).
func TestStreamHelloWithItemsQueued(t *testing.T) {
	r := newRig(t)
	if rep := r.attach("db01", disks); !rep.OK {
		t.Fatal(rep.Reason)
	}
	items := stream()
	r.send(items[0])
	r.d.AutoDeliverOps = false
	for _, it := range items[1:3] {
		if acks := r.send(it); len(acks) != 0 {
			t.Fatalf("item %d answered before its apply: %+v", it.Seq, acks)
		}
	}
	r.d.Receive(sender, &proto.StreamHello{Machine: "db01"})
	if acks := r.acks(); len(acks) != 0 {
		t.Fatalf("hello with items 2-3 queued answered at once: %+v", acks)
	}
	r.d.DeliverOps()
	acks := r.acks()
	if len(acks) == 0 || acks[len(acks)-1].Acked != 3 || acks[len(acks)-1].Status != proto.AckOK {
		t.Fatalf("after the applies: %+v, want OK at 3", acks)
	}
	r.d.Receive(sender, &proto.StreamHello{Machine: "db01"})
	if acks := r.acks(); len(acks) != 1 || acks[0].Acked != 3 || acks[0].Status != proto.AckOK {
		t.Fatalf("hello with nothing queued: %+v, want one answer, OK at 3", acks)
	}
}
