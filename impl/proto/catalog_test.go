package proto_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestLoadCatalog: a stored catalog reads back equal; a missing one is
// blob.ErrNotFound; one that does not decode or names another machine is
// ErrCatalog.
func TestLoadCatalog(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	const prefix = "t-"
	if err := s.CreateContainer(ctx, prefix+proto.ContainerCatalog); err != nil {
		t.Fatal(err)
	}
	c := proto.NewCatalog("db01")
	c.Disks = []proto.Disk{{Index: 0, Size: 4096, Blob: "db01/disk0"}}
	c.Points = []proto.Point{{ID: "p1", Kind: proto.App, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Seq: 3, Snapshots: []string{"s1"}}}
	put := func(name string, v any) {
		data, ok := v.([]byte)
		if !ok {
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Put(ctx, prefix+proto.ContainerCatalog, name, data, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(proto.CatalogBlobName("db01"), c)
	put(proto.CatalogBlobName("bad"), []byte("{not json"))
	put(proto.CatalogBlobName("other"), c)

	got, etag, err := proto.LoadCatalog(ctx, s, prefix, "db01")
	if err != nil || etag == "" {
		t.Fatalf("LoadCatalog(db01): %v (etag %q)", err, etag)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("catalog (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		machine string
		want    error
	}{{"missing", blob.ErrNotFound}, {"bad", proto.ErrCatalog}, {"other", proto.ErrCatalog}} {
		if _, _, err := proto.LoadCatalog(ctx, s, prefix, tc.machine); !errors.Is(err, tc.want) {
			t.Errorf("LoadCatalog(%s): %v, want %v", tc.machine, err, tc.want)
		}
	}
}

// TestCatalogClone: a clone shares no slice with its original.
func TestCatalogClone(t *testing.T) {
	c := proto.NewCatalog("db01")
	c.Points = []proto.Point{{ID: "p1", Snapshots: []string{"s1"}}}
	c.Revoked = []string{"r"}
	n := c.Clone()
	n.Points[0].Snapshots[0] = "changed"
	n.Revoked[0] = "changed"
	if c.Points[0].Snapshots[0] != "s1" || c.Revoked[0] != "r" {
		t.Errorf("Clone shares memory: %+v", c)
	}
	if _, ok := c.FindPoint("p1"); !ok || !c.IsRevoked("r") || c.IsRevoked("p1") {
		t.Errorf("FindPoint/IsRevoked wrong on %+v", c)
	}
}
