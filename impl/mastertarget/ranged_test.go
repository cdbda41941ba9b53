package mastertarget

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vsphere/memds"
)

// wholeImage is the master target's apply as it was before ranged
// datastore I/O, kept as the reference: read each disk whole, apply the
// writes in memory in stream order noting the bytes each journaled one
// overwrites, write the disks back whole. A flat extent shorter than its
// disk reads as zeros past its end and grows with a write past it.
func wholeImage(imgs [][]byte, ws []diskWrite) [][]byte {
	put := func(img []byte, off int64, data []byte) []byte {
		if end := off + int64(len(data)); end > int64(len(img)) {
			img = append(img, make([]byte, end-int64(len(img)))...)
		}
		copy(img[off:], data)
		return img
	}
	var undo [][]byte
	for _, w := range ws {
		if w.journal {
			old := make([]byte, len(w.data))
			if w.off < int64(len(imgs[w.disk])) {
				copy(old, imgs[w.disk][w.off:])
			}
			undo = append(undo, old)
		}
		imgs[w.disk] = put(imgs[w.disk], w.off, w.data)
	}
	return undo
}

// TestRangedApplyMatchesWholeImage: the ranged apply leaves the disks and
// the undo journal exactly as the whole-image apply did — writes that
// overlap within a job, that cross or start past a short flat extent's
// end, journaled or not — and a rollback through the journal brings the
// disks back byte for byte to where they were before the first journaled
// write.
func TestRangedApplyMatchesWholeImage(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		const capBytes = 32 << 10
		vc := memds.New()
		vc.AddDatastore("ds1", 1<<30)
		var disks []proto.TargetDisk
		var ref [][]byte
		for i := range 2 {
			path := fmt.Sprintf("[ds1] vm/vm_%d-flat.vmdk", i)
			img := rapid.SliceOfN(rapid.Byte(), 0, capBytes).Draw(rt, fmt.Sprintf("disk%d", i))
			if err := vc.WriteFile(ctx, path, img); err != nil {
				rt.Fatal(err)
			}
			disks = append(disks, proto.TargetDisk{Path: path, CapacityBytes: capBytes})
			ref = append(ref, append([]byte(nil), img...))
		}
		before := [][]byte{append([]byte(nil), ref[0]...), append([]byte(nil), ref[1]...)}
		ret := retention{fs: newCrashFS(), dir: "/ret", reach: 3}
		st := state{Machine: "m", Disks: disks}
		write := func(label string) (uint16, int64, []byte) {
			d := uint16(rapid.IntRange(0, 1).Draw(rt, label+"-disk"))
			off := rapid.Int64Range(0, capBytes-1).Draw(rt, label+"-off")
			n := rapid.IntRange(1, int(min(4096, capBytes-off))).Draw(rt, label+"-len")
			return d, off, bytes.Repeat([]byte{byte(rapid.IntRange(1, 255).Draw(rt, label+"-byte"))}, n)
		}
		var jour jinfo
		var journaled int
		seq := uint64(0)
		for job := range rapid.IntRange(1, 4).Draw(rt, "jobs") {
			var items []*batch.Item
			for range rapid.IntRange(1, 3).Draw(rt, fmt.Sprintf("job%d-items", job)) {
				seq++
				label := fmt.Sprintf("item%d", seq)
				it := &batch.Item{Machine: "m", Seq: seq, Kind: batch.KindLog}
				if rapid.Bool().Draw(rt, label+"-chunk") {
					it.Kind = batch.KindChunk
				}
				for r := range rapid.IntRange(1, 4).Draw(rt, label+"-writes") {
					d, off, data := write(fmt.Sprintf("%s-%d", label, r))
					if it.Kind == batch.KindChunk {
						it.Disk = 0
						it.Runs = append(it.Runs, batch.Run{Off: off, Data: data})
					} else {
						it.Records = append(it.Records, batch.Record{Type: batch.RecWrite, Disk: d, Off: off, Data: data})
					}
				}
				items = append(items, it)
			}
			j := applyJob{disks: disks, items: items, plan: plan{next: st, journal: true, from: pos{Item: 1}}, jour: jour}
			ws := j.writes()
			wantUndo := wholeImage(ref, ws)
			res, err := j.run(ctx, vc, ret)
			if err != nil {
				rt.Fatal(err)
			}
			jour = res.jour
			entries, err := ret.readJournal("m", jour.Bytes)
			if err != nil {
				rt.Fatal(err)
			}
			var gotUndo [][]byte
			for _, e := range entries[journaled:] {
				gotUndo = append(gotUndo, e.Data)
			}
			journaled = len(entries)
			if diff := cmp.Diff(wantUndo, gotUndo); diff != "" {
				rt.Fatalf("job %d: undo entries differ from the whole-image apply's (-want +got):\n%s", job, diff)
			}
			for i, d := range disks {
				got, err := vc.ReadFile(ctx, d.Path)
				if err != nil {
					rt.Fatal(err)
				}
				if !bytes.Equal(got, ref[i]) {
					rt.Fatalf("job %d: disk %d after the ranged apply differs from the whole-image apply (%d bytes, want %d)", job, i, len(got), len(ref[i]))
				}
			}
		}
		// Roll back to before the first item: every write undone.
		done := st.clone()
		done.FailedBack = "p0"
		rb := rollbackJob{disks: disks, to: point{ID: "p0"}, mark: st, done: done, jour: jour}
		if _, err := rb.run(ctx, vc, ret); err != nil {
			rt.Fatal(err)
		}
		for i, d := range disks {
			got, err := vc.ReadFile(ctx, d.Path)
			if err != nil {
				rt.Fatal(err)
			}
			// A write past the end grew the file: the rollback puts zeros
			// back there, which is what the shorter file read as.
			want := append(before[i], make([]byte, len(got)-len(before[i]))...)
			if !bytes.Equal(got, want) {
				rt.Fatalf("disk %d after rollback is not as before the first write", i)
			}
		}
	})
}

// TestBlockSumsRanged: block sums read a disk piece by piece give what
// summing the whole image block by block gives — a short flat extent
// (zeros past its end), zero blocks (the constant, not hashed), a range
// that starts mid-disk and one that ends at a short last block.
func TestBlockSumsRanged(t *testing.T) {
	ctx := context.Background()
	vc := memds.New()
	vc.AddDatastore("ds1", 1<<30)
	const capBytes = 3*sumChunk + 3*512  // a short last block
	img := make([]byte, 2*sumChunk+5000) // shorter than the disk
	for i := range img {
		if (i/proto.ChecksumBlockSize)%3 != 0 { // every third block zero
			img[i] = byte(i*7 + 1)
		}
	}
	if err := vc.WriteFile(ctx, "[ds1] d-flat.vmdk", img); err != nil {
		t.Fatal(err)
	}
	disk := proto.TargetDisk{Path: "[ds1] d-flat.vmdk", CapacityBytes: capBytes}
	whole := make([]byte, capBytes)
	copy(whole, img)
	blocks := int64(capBytes+proto.ChecksumBlockSize-1) / proto.ChecksumBlockSize
	for _, c := range []struct{ first, n int64 }{{0, blocks}, {100, blocks - 100}, {blocks - 1, 1}, {7, 300}} {
		var want []byte
		for b := c.first; b < c.first+c.n; b++ {
			s := proto.BlockSum(whole[b*proto.ChecksumBlockSize : min((b+1)*proto.ChecksumBlockSize, capBytes)])
			want = append(want, s[:]...)
		}
		got, err := blockSums(ctx, vc, disk, c.first*proto.ChecksumBlockSize, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("blocks [%d, +%d): ranged sums differ from the whole image's", c.first, c.n)
		}
	}
	if _, err := blockSums(ctx, vc, proto.TargetDisk{Path: "[ds1] missing", CapacityBytes: capBytes}, 0, 1); err == nil || err == io.EOF {
		t.Errorf("sums of a missing disk: %v, want an error", err)
	}
}
