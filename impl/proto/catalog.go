package proto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
)

// Catalog is one machine's replica state and recovery points, stored as
// JSON in the catalog container under CatalogBlobName(machine) and updated
// only with ETag conditions. The Azure side (azuresvc) is its one writer:
// after a restart it trusts the catalog and nothing else. Readers — the
// failover orchestrator choosing a point, the harness's checks — call
// LoadCatalog and never write it, so that reading points perturbs nothing.
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
	// and revoke inside a Log item.
	AppliedLogSeq uint64  `json:"appliedLogSeq"`
	Disks         []Disk  `json:"disks"`
	Points        []Point `json:"points"`
	// Revoked are bookmark ids revoked by the agents (multi-VM tags that
	// did not commit everywhere): such an id never becomes a point.
	Revoked []string `json:"revoked"`
	Policy  Policy   `json:"policy"`
	// Group is the replication group the machine is a member of, "" for
	// none, and Members all of the group's machines (sorted), as the last
	// PolicyFor said. A restarted service rebuilds its groups from them.
	Group   string   `json:"group"`
	Members []string `json:"members"`
	// Stopped is set when failover stopped the machine's replication
	// (StopReplication): the Azure side applies nothing more for it and
	// makes no more points. Omitted while false, so catalogs written
	// before failover existed encode as they did.
	Stopped bool `json:"stopped,omitempty"`
}

// Disk is one replica disk: a page blob in the replica container.
type Disk struct {
	Index int    `json:"index"`
	Size  int64  `json:"size"`
	Blob  string `json:"blob"` // `<machine>/disk<i>`
}

// Point is a recovery point: one snapshot of every replica disk of the
// machine, taken when the bookmark ID was applied.
type Point struct {
	ID   string      `json:"id"`   // the bookmark id (a TagID for a group round)
	Kind Consistency `json:"kind"` // stored as its text, "crash" or "app"
	Time time.Time   `json:"time"` // the bookmark's time (the guest's clock)
	Seq  uint64      `json:"seq"`  // the bookmark's change-log record
	Gen  uint64      `json:"gen"`  // the sync generation it belongs to
	// Snapshots holds a snapshot ID per disk, in Disks order: read point
	// data with blob.ReadOptions{Snapshot: Snapshots[i]} on Disks[i].Blob.
	Snapshots []string `json:"snapshots"`
}

// NewCatalog is the state of a machine nothing was applied for yet.
func NewCatalog(machine string) *Catalog {
	return &Catalog{Machine: machine, Policy: DefaultPolicy()}
}

// Clone is a deep copy, so that an Op never shares memory with its actor.
func (c *Catalog) Clone() *Catalog {
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

// FindPoint returns the point with bookmark id.
func (c *Catalog) FindPoint(id string) (Point, bool) {
	for _, p := range c.Points {
		if p.ID == id {
			return p, true
		}
	}
	return Point{}, false
}

// IsRevoked reports whether bookmark id was revoked.
func (c *Catalog) IsRevoked(id string) bool { return slices.Contains(c.Revoked, id) }

// Newest is the latest point time, zero without points.
func (c *Catalog) Newest() time.Time {
	var t time.Time
	for _, p := range c.Points {
		if p.Time.After(t) {
			t = p.Time
		}
	}
	return t
}

// CatalogBlobName is the name of a machine's catalog in the catalog
// container: "<machine>.json".
func CatalogBlobName(machine string) string { return machine + ".json" }

// ErrCatalog is a catalog blob that does not decode.
var ErrCatalog = errors.New("proto: malformed catalog")

// LoadCatalog reads a machine's catalog from the catalog container under
// prefix, and its ETag. A machine with no catalog yet gives an error
// wrapping blob.ErrNotFound; one that does not decode, or names another
// machine, ErrCatalog.
func LoadCatalog(ctx context.Context, store blob.Store, prefix, machine string) (*Catalog, string, error) {
	data, props, err := store.Get(ctx, prefix+ContainerCatalog, CatalogBlobName(machine), blob.ReadOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("proto: load catalog of %s: %w", machine, err)
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
