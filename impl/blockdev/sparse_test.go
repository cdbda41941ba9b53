package blockdev

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDataExtentsNeverMissData: whatever the file system answers, every
// non-zero byte of a sparse file lies in an extent DataExtents gives, and
// reading the file with the rest taken as zeros gives the file.
func TestDataExtentsNeverMissData(t *testing.T) {
	const size = 64 << 20
	p := filepath.Join(t.TempDir(), "d.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	writes := map[int64][]byte{0: []byte("boot"), 5 << 20: bytes.Repeat([]byte{7}, 70000), size - 512: bytes.Repeat([]byte{9}, 512)}
	for off, b := range writes {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	d, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	whole, _ := os.ReadFile(p)
	for _, r := range []struct{ off, n int64 }{{0, size}, {4 << 20, 2 << 20}, {size - 4096, 4096}, {10 << 20, 1 << 20}, {size, 0}} {
		ext, err := d.DataExtents(r.off, r.n)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, r.n)
		last := r.off
		for _, e := range ext {
			if e.Off < last || e.End() > r.off+r.n || e.Len <= 0 {
				t.Fatalf("[%d,+%d): extent %+v out of order or out of range", r.off, r.n, e)
			}
			if _, err := d.ReadAt(got[e.Off-r.off:e.End()-r.off], e.Off); err != nil {
				t.Fatal(err)
			}
			last = e.End()
		}
		if !bytes.Equal(got, whole[r.off:r.off+r.n]) {
			t.Errorf("[%d,+%d): the extents %v miss data", r.off, r.n, ext)
		}
	}
	if _, err := d.DataExtents(-1, 10); err == nil {
		t.Error("DataExtents at -1: no error")
	}
	if _, err := d.DataExtents(size+1, 10); err == nil {
		t.Error("DataExtents past the end: no error")
	}
}
