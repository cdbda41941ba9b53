package azuresvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// Catalog is one machine's replica state and recovery points, stored as
// JSON in `<prefix>catalog/<machine>.json` and updated only with ETag
// conditions. It is the Azure side's durable memory: after a restart the
// service trusts the catalog and nothing else, and the harness reads it
// (LoadCatalog) to find the recovery points.
//
// Field order is the JSON order, so the encoding is deterministic.
type Catalog struct {
	Machine string `json:"machine"`
	// Gen is the sync generation of the last SyncStart applied.
	Gen uint64 `json:"gen"`
	// Synced is true once SyncEnd of Gen was applied: the replica then
	// follows the source in log order and bookmarks become points.
	Synced bool `json:"synced"`
	// SyncItem is the stream item of Gen's SyncStart. While Applied equals
	// it (no chunk applied yet), the replica's checksums are still valid and
	// are (re)sent to the configuration server.
	SyncItem uint64 `json:"syncItem"`
	// Applied is the last stream item applied in full; the next one to
	// apply is Applied+1.
	Applied uint64 `json:"applied"`
	// AppliedLogSeq is the last change-log record applied. It may run ahead
	// of Applied's last record: the catalog is persisted at every bookmark
	// and revoke inside a Log item (see applier.bookmark).
	AppliedLogSeq uint64  `json:"appliedLogSeq"`
	Disks         []Disk  `json:"disks"`
	Points        []Point `json:"points"`
	// Revoked are bookmark ids revoked by the agents (multi-VM tags that
	// did not commit everywhere): such an id never becomes a point.
	Revoked []string     `json:"revoked"`
	Policy  proto.Policy `json:"policy"`
	// Group is the replication group the machine is a member of, "" for
	// none, and Members all of the group's machines (sorted), as the last
	// PolicyFor said. A restarted service rebuilds its groups from them.
	Group   string   `json:"group"`
	Members []string `json:"members"`
}

// Disk is one replica disk: a page blob in `<prefix>replica`.
type Disk struct {
	Index int    `json:"index"`
	Size  int64  `json:"size"`
	Blob  string `json:"blob"` // `<machine>/disk<i>`
}

// Point is a recovery point: one snapshot of every replica disk of the
// machine, taken when the bookmark ID was applied.
type Point struct {
	ID   string            `json:"id"`   // the bookmark id
	Kind proto.Consistency `json:"kind"` // stored as its text, "crash" or "app"
	Time time.Time         `json:"time"` // the bookmark's time (the guest's clock)
	Seq  uint64            `json:"seq"`  // the bookmark's change-log record
	Gen  uint64            `json:"gen"`  // the sync generation it belongs to
	// Snapshots holds a snapshot ID per disk, in Disks order: read point
	// data with blob.ReadOptions{Snapshot: Snapshots[i]} on Disks[i].Blob.
	Snapshots []string `json:"snapshots"`
}

// newCatalog is the state of a machine nothing was applied for yet.
func newCatalog(machine string) *Catalog {
	return &Catalog{Machine: machine, Policy: proto.DefaultPolicy()}
}

// clone is a deep copy: Ops get a clone so that they never share memory
// with the actor.
func (c *Catalog) clone() *Catalog {
	n := *c
	n.Disks = slices.Clone(c.Disks)
	n.Revoked = slices.Clone(c.Revoked)
	n.Members = slices.Clone(c.Members)
	n.Points = make([]Point, len(c.Points))
	for i, p := range c.Points {
		p.Snapshots = slices.Clone(p.Snapshots)
		n.Points[i] = p
	}
	return &n
}

func (c *Catalog) point(id string) (Point, bool) {
	for _, p := range c.Points {
		if p.ID == id {
			return p, true
		}
	}
	return Point{}, false
}

func (c *Catalog) revoked(id string) bool { return slices.Contains(c.Revoked, id) }

// newest is the latest point time, zero without points.
func (c *Catalog) newest() time.Time {
	var t time.Time
	for _, p := range c.Points {
		if p.Time.After(t) {
			t = p.Time
		}
	}
	return t
}

// Container names under a prefix.
func cacheContainer(prefix string) string   { return prefix + proto.ContainerCache }
func replicaContainer(prefix string) string { return prefix + proto.ContainerReplica }
func catalogContainer(prefix string) string { return prefix + proto.ContainerCatalog }

func catalogBlob(machine string) string { return machine + ".json" }

// ErrCatalog is a catalog blob that does not decode.
var ErrCatalog = errors.New("azuresvc: malformed catalog")

// LoadCatalog reads a machine's catalog and its ETag. A machine with no
// catalog yet gives an error wrapping blob.ErrNotFound.
func LoadCatalog(ctx context.Context, store blob.Store, prefix, machine string) (*Catalog, string, error) {
	data, props, err := store.Get(ctx, catalogContainer(prefix), catalogBlob(machine), blob.ReadOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("azuresvc: load catalog of %s: %w", machine, err)
	}
	var c Catalog
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, "", fmt.Errorf("%w: %s: %v", ErrCatalog, machine, err)
	}
	if c.Machine != machine {
		return nil, "", fmt.Errorf("%w: %s holds machine %q", ErrCatalog, machine, c.Machine)
	}
	return &c, props.ETag, nil
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
