package agent

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
)

// sparseDev is a memDev that reports data extents: exact ones, or ones
// that also cover some zeros (a conservative file system).
type sparseDev struct {
	memDev
	ext []blockdev.Extent
}

func (d sparseDev) DataExtents(off, n int64) ([]blockdev.Extent, error) {
	var out []blockdev.Extent
	for _, e := range d.ext {
		lo, hi := max(e.Off, off), min(e.End(), off+n)
		if lo < hi {
			out = append(out, blockdev.Extent{Off: lo, Len: hi - lo})
		}
	}
	return out, nil
}

// TestCompareRegionSparse: on a device that says where its data is, the
// comparison reads only there and finds exactly the runs that reading
// every byte finds — fresh replica or not, known or unknown sums, the
// replica's blocks equal, different or zero.
func TestCompareRegionSparse(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const blocks = 64
		bs := int64(proto.ChecksumBlockSize)
		size := blocks*bs - rapid.SampledFrom([]int64{0, 3 * 512}).Draw(rt, "short")
		dev := make(memDev, size)
		var ext []blockdev.Extent
		for i := range rapid.IntRange(0, 6).Draw(rt, "extents") {
			off := rapid.Int64Range(0, size/512-1).Draw(rt, fmt.Sprintf("ext%d-off", i)) * 512
			n := rapid.Int64Range(1, (size-off)/512).Draw(rt, fmt.Sprintf("ext%d-len", i)) * 512
			// Data in the extent, some of it zeros.
			for b := off; b < off+n; b += 512 {
				if rapid.Bool().Draw(rt, fmt.Sprintf("ext%d-%d", i, b)) {
					dev[b] = byte(b/512) | 1
				}
			}
			ext = append(ext, blockdev.Extent{Off: off, Len: n})
		}
		// The extents a file system would give: sorted, merged.
		var merged []blockdev.Extent
		for b := int64(0); b < size; b += 512 {
			in := false
			for _, e := range ext {
				in = in || (e.Off <= b && b < e.End())
			}
			if !in {
				continue
			}
			if k := len(merged) - 1; k >= 0 && merged[k].End() == b {
				merged[k].Len += 512
			} else {
				merged = append(merged, blockdev.Extent{Off: b, Len: 512})
			}
		}
		fresh := rapid.Bool().Draw(rt, "fresh")
		var sums []byte
		var known []bool
		if !fresh {
			for b := range int64(blocks) {
				blk := dev[b*bs : min((b+1)*bs, size)]
				s := proto.BlockSum(blk)
				switch rapid.IntRange(0, 3).Draw(rt, fmt.Sprintf("replica%d", b)) {
				case 1:
					s[0] ^= 1 // differs
				case 2:
					s = proto.ZeroBlockSum
				}
				sums = append(sums, s[:]...)
				known = append(known, rapid.IntRange(0, 5).Draw(rt, fmt.Sprintf("known%d", b)) > 0)
			}
		}
		off := rapid.Int64Range(0, blocks-1).Draw(rt, "from") * bs
		n := size - off
		var s2 []byte
		var k2 []bool
		if !fresh {
			s2, k2 = sums[off/bs*proto.ChecksumSize:], known[off/bs:]
		}
		want, err := compareRegion(dev, off, n, fresh, s2, k2)
		if err != nil {
			rt.Fatal(err)
		}
		got, err := compareRegion(sparseDev{dev, merged}, off, n, fresh, s2, k2)
		if err != nil {
			rt.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b batch.Run) bool { return a.Off == b.Off && string(a.Data) == string(b.Data) })); diff != "" {
			rt.Fatalf("runs differ (-read everything +sparse):\n%s", diff)
		}
	})
}
