package memds

import (
	"context"
	"errors"
	"testing"

	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vspheretest"
)

func TestConformance(t *testing.T) {
	c := New()
	c.AddDatastore("ds1", 1<<30)
	vspheretest.Files(t, c, vsphere.DatastorePath{Datastore: "ds1", Path: "db01"})
}

func TestNoSpaceKeepsFile(t *testing.T) {
	ctx := context.Background()
	c := New()
	c.AddDatastore("ds1", 10)
	if err := c.WriteFile(ctx, "[ds1] a", []byte("12345678")); err != nil {
		t.Fatal(err)
	}
	// Replacing counts the new size only: 9 bytes in place of 8 fit.
	if err := c.WriteFile(ctx, "[ds1] a", []byte("123456789")); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(ctx, "[ds1] b", []byte("xx")); !errors.Is(err, vsphere.ErrNoSpace) {
		t.Fatalf("write over capacity: %v, want ErrNoSpace", err)
	}
	if _, err := c.ReadFile(ctx, "[ds1] b"); !errors.Is(err, vsphere.ErrNotFound) {
		t.Errorf("a refused write left a file: %v", err)
	}
	// Growing a file in place counts too: 9 bytes in a 10-byte datastore
	// leave room for one more, not two; a refused WriteAt changes nothing.
	if err := c.WriteAt(ctx, "[ds1] a", []byte("xy"), 9); !errors.Is(err, vsphere.ErrNoSpace) {
		t.Fatalf("WriteAt over capacity: %v, want ErrNoSpace", err)
	}
	if err := c.WriteAt(ctx, "[ds1] a", []byte("X"), 9); err != nil {
		t.Fatalf("WriteAt within capacity: %v", err)
	}
	if err := c.WriteAt(ctx, "[ds1] a", []byte("9"), 9); err != nil {
		t.Fatalf("WriteAt in place: %v", err)
	}
	boom := errors.New("boom")
	c.FailWrites(boom)
	if err := c.WriteFile(ctx, "[ds1] a", []byte("1")); !errors.Is(err, boom) {
		t.Errorf("FailWrites: %v", err)
	}
	got, _ := c.ReadFile(ctx, "[ds1] a")
	if string(got) != "1234567899" {
		t.Errorf("file after failed writes = %q", got)
	}
	if _, err := c.Discover(ctx); !errors.Is(err, vsphere.ErrUnsupported) {
		t.Errorf("Discover: %v, want ErrUnsupported", err)
	}
}
