// Package vspheretest is the conformance suite of the vSphere port's
// datastore file calls (ReadFile, WriteFile): the vcenter adapter against
// vcsim over HTTP (sim/vsphere's tests) and the in-memory stand-in memds
// both pass it, so that a component tested over memds meets the same
// contract as over vCenter.
package vspheretest

import (
	"bytes"
	"context"
	"errors"
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
