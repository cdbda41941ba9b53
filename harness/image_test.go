package harness

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/sim/disk"
)

// TestImageReadAt: an Image reads as the flat disk it stands for (its
// ranges' bytes, zeros elsewhere), whatever the read's offset and length,
// into a buffer that held anything before.
func TestImageReadAt(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		size := rapid.Int64Range(1, 64<<10).Draw(t, "size")
		flat := make([]byte, size)
		im := &Image{Size: size}
		for off := rapid.Int64Range(0, 4096).Draw(t, "first"); off < size; {
			ln := min(rapid.Int64Range(1, 8192).Draw(t, "len"), size-off)
			b := rapid.SliceOfN(rapid.Byte(), int(ln), int(ln)).Draw(t, "data")
			copy(flat[off:], b)
			im.Ranges = append(im.Ranges, disk.ByteRange{Off: off, Len: ln})
			im.data = append(im.data, b)
			off += ln + rapid.Int64Range(0, 8192).Draw(t, "gap")
		}
		off := rapid.Int64Range(0, size-1).Draw(t, "off")
		n := rapid.Int64Range(0, size-off).Draw(t, "n")
		p := bytes.Repeat([]byte{0xa5}, int(n)) // stale content must not show
		if got, err := im.ReadAt(p, off); err != nil || got != int(n) {
			t.Fatalf("ReadAt: %d, %v", got, err)
		}
		if !bytes.Equal(p, flat[off:off+n]) {
			t.Fatalf("read %d+%d of ranges %v: not the flat image", off, n, im.Ranges)
		}
	})
}
