package azuresvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// Catalog, Disk and Point are the catalog format, defined once in proto
// (proto.Catalog): azuresvc is its one writer.
type (
	Catalog = proto.Catalog
	Disk    = proto.Disk
	Point   = proto.Point
)

// newCatalog is the state of a machine nothing was applied for yet.
func newCatalog(machine string) *Catalog { return proto.NewCatalog(machine) }

// Container names under a prefix.
func cacheContainer(prefix string) string   { return prefix + proto.ContainerCache }
func replicaContainer(prefix string) string { return prefix + proto.ContainerReplica }
func catalogContainer(prefix string) string { return prefix + proto.ContainerCatalog }

func catalogBlob(machine string) string { return proto.CatalogBlobName(machine) }

// ErrCatalog is a catalog blob that does not decode (proto.ErrCatalog).
var ErrCatalog = proto.ErrCatalog

// LoadCatalog reads a machine's catalog and its ETag (proto.LoadCatalog).
// A machine with no catalog yet gives an error wrapping blob.ErrNotFound.
func LoadCatalog(ctx context.Context, store blob.Store, prefix, machine string) (*Catalog, string, error) {
	return proto.LoadCatalog(ctx, store, prefix, machine)
}

// loadOrNew is LoadCatalog with a missing catalog read as a fresh one (ETag
// "", which makes the first put create-only).
func loadOrNew(ctx context.Context, store blob.Store, prefix, machine string) (*Catalog, string, error) {
	c, etag, err := LoadCatalog(ctx, store, prefix, machine)
	if errors.Is(err, blob.ErrNotFound) {
		return newCatalog(machine), "", nil
	}
	return c, etag, err
}

// errConflict is a catalog put that lost an ETag race: reload and retry.
var errConflict = errors.New("azuresvc: catalog changed underneath (etag)")

// putCatalog writes c if the stored catalog still has etag ("" = must not
// exist yet) and returns the new ETag.
func putCatalog(ctx context.Context, store blob.Store, prefix string, c *Catalog, etag string) (string, error) {
	data, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		return "", fmt.Errorf("azuresvc: encode catalog of %s: %w", c.Machine, err)
	}
	opts := blob.WriteOptions{IfMatch: etag}
	if etag == "" {
		opts = blob.WriteOptions{IfNoneMatch: "*"}
	}
	next, err := store.Put(ctx, catalogContainer(prefix), catalogBlob(c.Machine), data, opts)
	if errors.Is(err, blob.ErrConditionFailed) {
		return "", fmt.Errorf("%w: %s: %v", errConflict, c.Machine, err)
	}
	if err != nil {
		return "", fmt.Errorf("azuresvc: put catalog of %s: %w", c.Machine, err)
	}
	return next, nil
}
