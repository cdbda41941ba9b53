// Package vspheretest is the conformance suite of the vSphere port's
// datastore file calls (ReadFile, WriteFile, FileSize, ReadAt, WriteAt):
// the vcenter adapter against
// vcsim over HTTP (sim/vsphere's tests) and the in-memory stand-in memds
// both pass it, so that a component tested over memds meets the same
// contract as over vCenter.
package vspheretest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/v2a-dr/v2a/impl/vsphere"
)

// Files runs the datastore file suite. dir is an existing directory on a
// datastore of c ("[ds1] db01") that the suite may create files in.
func Files(t *testing.T, c vsphere.Client, dir vsphere.DatastorePath) {
	ctx := context.Background()
	file := func(name string) string {
		return vsphere.DatastorePath{Datastore: dir.Datastore, Path: dir.Path + "/" + name}.String()
	}
	t.Run("WriteReadBack", func(t *testing.T) {
		data := make([]byte, 64<<10+3)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		data[0], data[len(data)-1] = 0, 0
		if err := c.WriteFile(ctx, file("conf-a-flat.vmdk"), data); err != nil {
			t.Fatal(err)
		}
		got, err := c.ReadFile(ctx, file("conf-a-flat.vmdk"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("ReadFile after WriteFile: %d bytes, want the %d written", len(got), len(data))
		}
	})
	t.Run("WriteReplaces", func(t *testing.T) {
		p := file("conf-b")
		if err := c.WriteFile(ctx, p, bytes.Repeat([]byte("long"), 1000)); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteFile(ctx, p, []byte("short")); err != nil {
			t.Fatal(err)
		}
		got, err := c.ReadFile(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "short" {
			t.Errorf("ReadFile after a shorter WriteFile = %d bytes %.20q, want \"short\"", len(got), got)
		}
	})
	t.Run("Ranged", func(t *testing.T) {
		p := file("conf-c-flat.vmdk")
		base := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
		if err := c.WriteFile(ctx, p, base); err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), base...)
		// In place, then across the end, then far past it (a hole of zeros).
		for _, w := range []struct {
			off  int64
			data []byte
		}{
			{100, []byte("in place")},
			{int64(len(base)) - 3, []byte("across the end")},
			{64 << 10, []byte("past a hole")},
		} {
			if err := c.WriteAt(ctx, p, w.data, w.off); err != nil {
				t.Fatalf("WriteAt %d: %v", w.off, err)
			}
			if end := w.off + int64(len(w.data)); end > int64(len(want)) {
				want = append(want, make([]byte, end-int64(len(want)))...)
			}
			copy(want[w.off:], w.data)
		}
		size, err := c.FileSize(ctx, p)
		if err != nil || size != int64(len(want)) {
			t.Fatalf("FileSize = %d, %v; want %d", size, err, len(want))
		}
		whole, err := c.ReadFile(ctx, p)
		if err != nil || !bytes.Equal(whole, want) {
			t.Fatalf("ReadFile after WriteAt: %d bytes (%v), want the %d expected", len(whole), err, len(want))
		}
		reads := []struct {
			name    string
			off     int64
			n       int
			wantN   int
			wantEOF bool
		}{
			{"inside", 90, 40, 40, false},
			{"the whole file", 0, len(want), len(want), false},
			{"short at the end", int64(len(want)) - 5, 64, 5, true},
			{"at the end", int64(len(want)), 8, 0, true},
			{"past the end", int64(len(want)) + 4096, 8, 0, true},
			{"in the hole", 40 << 10, 512, 512, false},
			{"nothing", 10, 0, 0, false},
		}
		for _, r := range reads {
			buf := bytes.Repeat([]byte{0xee}, r.n)
			n, err := c.ReadAt(ctx, p, buf, r.off)
			if n != r.wantN || (err == io.EOF) != r.wantEOF || (err != nil && err != io.EOF) {
				t.Errorf("ReadAt %s (%d bytes at %d) = %d, %v; want %d, EOF %v", r.name, r.n, r.off, n, err, r.wantN, r.wantEOF)
				continue
			}
			if lo := min(r.off, int64(len(want))); !bytes.Equal(buf[:n], want[lo:lo+int64(n)]) {
				t.Errorf("ReadAt %s: wrong bytes", r.name)
			}
		}
	})
	t.Run("RangedErrors", func(t *testing.T) {
		p := file("conf-d")
		if err := c.WriteFile(ctx, p, []byte("short file")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		errs := []struct {
			name string
			err  error
			want error
		}{
			{"size missing file", func() error { _, err := c.FileSize(ctx, file("conf-nope")); return err }(), vsphere.ErrNotFound},
			{"size bad path", func() error { _, err := c.FileSize(ctx, "nope"); return err }(), vsphere.ErrInvalidArgument},
			{"read missing file", func() error { _, err := c.ReadAt(ctx, file("conf-nope"), buf, 0); return err }(), vsphere.ErrNotFound},
			{"read missing datastore", func() error { _, err := c.ReadAt(ctx, "[conf-no-such-ds] a", buf, 0); return err }(), vsphere.ErrNotFound},
			{"read bad path", func() error { _, err := c.ReadAt(ctx, dir.Datastore+"/a", buf, 0); return err }(), vsphere.ErrInvalidArgument},
			{"read no file", func() error { _, err := c.ReadAt(ctx, "["+dir.Datastore+"]", buf, 0); return err }(), vsphere.ErrInvalidArgument},
			{"read negative offset", func() error { _, err := c.ReadAt(ctx, p, buf, -1); return err }(), vsphere.ErrInvalidArgument},
			{"write missing file", c.WriteAt(ctx, file("conf-nope"), buf, 0), vsphere.ErrNotFound},
			{"write bad path", c.WriteAt(ctx, dir.Datastore+"/a", buf, 0), vsphere.ErrInvalidArgument},
			{"write missing datastore", c.WriteAt(ctx, "[conf-no-such-ds] a", buf, 0), vsphere.ErrNotFound},
			{"write negative offset", c.WriteAt(ctx, p, buf, -8), vsphere.ErrInvalidArgument},
		}
		for _, e := range errs {
			if !errors.Is(e.err, e.want) {
				t.Errorf("%s: error = %v, want %v", e.name, e.err, e.want)
			}
		}
		// A refused write leaves the file as it was, and makes none.
		if got, err := c.ReadFile(ctx, p); err != nil || string(got) != "short file" {
			t.Errorf("file after refused writes = %q, %v", got, err)
		}
		if _, err := c.FileSize(ctx, file("conf-nope")); !errors.Is(err, vsphere.ErrNotFound) {
			t.Errorf("a refused WriteAt made a file: %v", err)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		errs := []struct {
			name string
			err  error
			want error
		}{
			{"missing file", func() error { _, err := c.ReadFile(ctx, file("conf-nope")); return err }(), vsphere.ErrNotFound},
			{"missing datastore", func() error { _, err := c.ReadFile(ctx, "[conf-no-such-ds] a"); return err }(), vsphere.ErrNotFound},
			{"read bad path", func() error { _, err := c.ReadFile(ctx, dir.Datastore+"/a"); return err }(), vsphere.ErrInvalidArgument},
			{"read no file", func() error { _, err := c.ReadFile(ctx, "["+dir.Datastore+"]"); return err }(), vsphere.ErrInvalidArgument},
			{"write bad path", c.WriteFile(ctx, dir.Datastore+"/a", []byte("x")), vsphere.ErrInvalidArgument},
			{"write missing datastore", c.WriteFile(ctx, "[conf-no-such-ds] a", []byte("x")), vsphere.ErrNotFound},
		}
		for _, e := range errs {
			if !errors.Is(e.err, e.want) {
				t.Errorf("%s: error = %v, want %v", e.name, e.err, e.want)
			}
		}
	})
}
