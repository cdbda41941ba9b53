package memfabric

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blockdev"
)

// TestImageDataExtents: an imported disk reports its page blob's extents,
// clipped to the range asked and merged where they touch; everything else
// reads as zeros.
func TestImageDataExtents(t *testing.T) {
	im := &image{size: 1 << 20, extents: []extent{
		{off: 0, data: make([]byte, 4096)},
		{off: 4096, data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, // touches the first
		{off: 64 << 10, data: make([]byte, 8192)},
	}}
	cases := []struct {
		off, n int64
		want   []blockdev.Extent
	}{
		{0, 1 << 20, []blockdev.Extent{{Off: 0, Len: 4104}, {Off: 64 << 10, Len: 8192}}},
		{100, 50, []blockdev.Extent{{Off: 100, Len: 50}}},
		{8192, 32 << 10, nil},
		{68 << 10, 1 << 20, []blockdev.Extent{{Off: 68 << 10, Len: 4096}}},
	}
	for _, c := range cases {
		got, err := im.DataExtents(c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("DataExtents(%d, %d) (-want +got):\n%s", c.off, c.n, diff)
		}
	}
	if _, err := im.DataExtents(-1, 1); err == nil {
		t.Error("DataExtents at -1: no error")
	}
}
