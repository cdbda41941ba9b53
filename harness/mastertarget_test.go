package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/mastertarget"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
)

// TestMasterTargetOnVCSim runs the master target against vcsim through the
// vcenter adapter over HTTP: the items it applies land in the VM's
// -flat.vmdk in the simulated datastore — the very file the simulated disk
// layer opens as the VM's disk — and its block sums are those of that file.
func TestMasterTargetOnVCSim(t *testing.T) {
	ctx := context.Background()
	inv, err := simvs.Load("../fixtures/inventory/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w, err := simvs.Build(ctx, inv, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	u := w.URL()
	u.User = nil
	vc, err := vcenter.Dial(ctx, u.String(), simvs.User, simvs.Password, true)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close(ctx)
	vms, err := vc.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var disk vsphere.Disk
	for _, vm := range vms {
		if vm.Name == "db01" {
			disk = vm.Disks[0]
		}
	}
	flat, err := vsphere.FlatExtentPath(disk.Path)
	if err != nil {
		t.Fatal(err)
	}
	hostFile, err := w.DiskFile("db01", 0)
	if err != nil {
		t.Fatal(err)
	}

	tg, err := mastertarget.New(mastertarget.Config{VC: vc, FS: fsys.OS{}, RetentionDir: filepath.Join(t.TempDir(), "retention")})
	if err != nil {
		t.Fatal(err)
	}
	const from = runtime.Addr("ps-azure:9443")
	d := runtimetest.New(t, "mt01:9443", tg)
	d.Receive(from, &proto.AttachTarget{Req: "a", Machine: "db01", Disks: []proto.TargetDisk{{Path: flat, CapacityBytes: disk.CapacityBytes}}})
	if got := d.SentTo(from); len(got) != 1 || !got[0].(*proto.Reply).OK {
		t.Fatalf("attach: %v", got)
	}
	chunk := bytes.Repeat([]byte{0xab}, 8192)
	logw := bytes.Repeat([]byte{0xcd}, 512)
	items := []*batch.Item{
		{Machine: "db01", Seq: 1, Kind: batch.KindSyncStart, Gen: 1, DiskSizes: []int64{disk.CapacityBytes}},
		{Machine: "db01", Seq: 2, Kind: batch.KindChunk, Gen: 1, Runs: []batch.Run{{Off: 1 << 20, Data: chunk}}},
		{Machine: "db01", Seq: 3, Kind: batch.KindLog, First: 1, Last: 1, Records: []batch.Record{
			{Seq: 1, Type: batch.RecWrite, Off: 1<<20 + 4096, Data: logw}}},
	}
	for _, it := range items {
		d.Receive(from, &proto.ItemMsg{Machine: "db01", Seq: it.Seq, Data: it.Marshal()})
		got := d.SentTo(from)
		if len(got) != 1 || got[0].(*proto.ItemAck).Status != proto.AckOK || got[0].(*proto.ItemAck).Acked != it.Seq {
			t.Fatalf("item %d: %v", it.Seq, got)
		}
	}
	img, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), chunk[:4096]...), logw...), chunk[4096+512:]...)
	if got := img[1<<20 : 1<<20+8192]; !bytes.Equal(got, want) {
		t.Errorf("the flat extent in the datastore does not hold the applied items")
	}
	if int64(len(img)) != disk.CapacityBytes {
		t.Errorf("flat extent is %d bytes, the disk %d", len(img), disk.CapacityBytes)
	}

	d.Receive(from, &proto.BlockSumRequest{Req: "s", Machine: "db01", Off: 1<<20 - 4096, Blocks: 3})
	got := d.SentTo(from)
	if len(got) != 1 {
		t.Fatalf("block sums: %v", got)
	}
	rep := got[0].(*proto.BlockSumReply)
	var wantSums []byte
	for b := int64(0); b < 3; b++ {
		off := 1<<20 - 4096 + b*proto.ChecksumBlockSize
		s := proto.BlockSum(img[off : off+proto.ChecksumBlockSize])
		wantSums = append(wantSums, s[:]...)
	}
	if rep.Err != "" || !bytes.Equal(rep.Sums, wantSums) || rep.Applied != 3 {
		t.Errorf("block sums %+v differ from the flat extent's", rep)
	}
	if bytes.Equal(rep.Sums[:proto.ChecksumSize], rep.Sums[proto.ChecksumSize:2*proto.ChecksumSize]) {
		t.Errorf("a written block and an unwritten one have the same sum")
	}
}
