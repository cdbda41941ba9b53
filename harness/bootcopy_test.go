package harness

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/sim/disk"
)

// extImage is an Azure disk image that reports its data extents.
type extImage struct {
	b   []byte
	ext []blockdev.Extent
}

func (im extImage) ReadAt(p []byte, off int64) (int, error) { return copy(p, im.b[off:]), nil }
func (im extImage) DataExtents(off, n int64) ([]blockdev.Extent, error) {
	var out []blockdev.Extent
	for _, e := range im.ext {
		if lo, hi := max(e.Off, off), min(e.End(), off+n); lo < hi {
			out = append(out, blockdev.Extent{Off: lo, Len: hi - lo})
		}
	}
	return out, nil
}

// TestCopyAzureDisk: the sparse boot copy of an Azure disk holds what the
// Azure disk holds, and finds exactly the blocks where the on-premises
// disk differs — those a whole read of both finds — whether the Azure
// image reports its extents or not.
func TestCopyAzureDisk(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	srcPath := filepath.Join(dir, "src.img")
	if err := disk.Create(srcPath, size); err != nil {
		t.Fatal(err)
	}
	src, err := blockdev.OpenFile(srcPath, true)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	az := make([]byte, size)
	put := func(b []byte, off int64, v byte, n int) { copy(b[off:], bytes.Repeat([]byte{v}, n)) }
	srcImg := make([]byte, size)
	put(srcImg, 0, 1, 1<<20)      // the same in both
	put(az, 0, 1, 1<<20)          //
	put(srcImg, 5<<20, 2, 8192)   // only on premises (written after the failover point)
	put(az, 9<<20, 3, 4096*3)     // only in Azure
	put(srcImg, 12<<20, 4, 4096)  // both, different
	put(az, 12<<20+4096, 5, 4096) //
	if _, err := src.WriteAt(srcImg, 0); err != nil {
		t.Fatal(err)
	}
	want := map[int64]bool{}
	for b := int64(0); b < size/4096; b++ {
		if !bytes.Equal(srcImg[b*4096:(b+1)*4096], az[b*4096:(b+1)*4096]) {
			want[b] = true
		}
	}
	ext := []blockdev.Extent{{Off: 0, Len: 1 << 20}, {Off: 9 << 20, Len: 3 * 4096}, {Off: 12<<20 + 4096, Len: 4096}}
	for name, img := range map[string]interface {
		ReadAt([]byte, int64) (int, error)
	}{"extents": extImage{az, ext}, "no extents": bytes.NewReader(az)} {
		p := filepath.Join(dir, "az.img")
		got, err := copyAzureDisk(p, img, size, src)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: blocks that differ (-whole read +sparse copy):\n%s", name, diff)
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, az) {
			t.Errorf("%s: the guest's disk file is not the Azure disk (%v)", name, err)
		}
	}
}
