package azuresvc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// GroupCatalog is a replication group's recovery points, stored as JSON in
// `<prefix>catalog/group-<group>.json` and updated only with ETag
// conditions. A group point is a tag id of the group (proto.TagID) that
// is a recovery point (not revoked) of every member; it is recorded when
// the last member's point appears and dropped as soon as one member's point is gone (revoked or
// pruned). It is derived state: the members' catalogs are the truth, and
// the service recomputes it from them after a restart, so a crash between
// a member's point and the group update loses nothing.
//
// Machine names starting with "group-" are reserved by this layout (their
// catalog blob would be a group's).
//
// Field order is the JSON order, so the encoding is deterministic.
type GroupCatalog struct {
	Group string `json:"group"`
	// Members are the group's machines (sorted) as the last PolicyFor of a
	// member said; a new group point needs a point of every one of them.
	Members []string `json:"members"`
	// Points are sorted by Time, then ID.
	Points []GroupPoint `json:"points"`
}

// GroupPoint is a multi-VM consistent recovery point: the same tag, one
// point per member.
type GroupPoint struct {
	ID string `json:"id"` // the tag id, the bookmark id on every member
	// Kind is App when every member's point is app-consistent, else
	// Crash (stored as its text).
	Kind proto.Consistency `json:"kind"`
	// Time is the earliest of the members' point times (each member's agent
	// stamps the bookmark with its own clock). It is also the time hourly
	// thinning uses for the tag on every member.
	Time time.Time `json:"time"`
	// Members holds each member's point, sorted by machine: read a member's
	// disk i at Snapshots[i] (see Catalog.Disks).
	Members []MemberPoint `json:"members"`
}

// MemberPoint is one member's recovery point of a group point.
type MemberPoint struct {
	Machine   string   `json:"machine"`
	Seq       uint64   `json:"seq"`       // the bookmark's change-log record on that member
	Snapshots []string `json:"snapshots"` // per disk, as in the member's Point
}

// groupPrefix marks group catalogs among the machine catalogs.
const groupPrefix = "group-"

func groupBlob(group string) string { return groupPrefix + group + ".json" }

func (g *GroupCatalog) clone() *GroupCatalog {
	n := *g
	n.Members = slices.Clone(g.Members)
	n.Points = make([]GroupPoint, len(g.Points))
	for i, p := range g.Points {
		n.Points[i] = p.clone()
	}
	return &n
}

func (p GroupPoint) clone() GroupPoint {
	p.Members = slices.Clone(p.Members)
	for i, m := range p.Members {
		p.Members[i].Snapshots = slices.Clone(m.Snapshots)
	}
	return p
}

func (g *GroupCatalog) point(id string) (GroupPoint, bool) {
	for _, p := range g.Points {
		if p.ID == id {
			return p, true
		}
	}
	return GroupPoint{}, false
}

func compareGroupPoints(a, b GroupPoint) int {
	if c := a.Time.Compare(b.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// LoadGroupCatalog reads a group's catalog and its ETag. A group with no
// catalog yet gives an error wrapping blob.ErrNotFound.
func LoadGroupCatalog(ctx context.Context, store blob.Store, prefix, group string) (*GroupCatalog, string, error) {
	data, props, err := store.Get(ctx, catalogContainer(prefix), groupBlob(group), blob.ReadOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("azuresvc: load catalog of group %s: %w", group, err)
	}
	var c GroupCatalog
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, "", fmt.Errorf("%w: group %s: %v", ErrCatalog, group, err)
	}
	if c.Group != group {
		return nil, "", fmt.Errorf("%w: group %s holds group %q", ErrCatalog, group, c.Group)
	}
	return &c, props.ETag, nil
}

// loadGroupOrNew is LoadGroupCatalog for the service: a missing catalog
// reads as an empty one (ETag "": the first put creates it), and so does a
// malformed one, under the malformed blob's ETag so that the next put
// replaces it (rebuilt says so). A group catalog is derived from the
// members' catalogs: rebuilding it loses nothing, while refusing it would
// stop the group for good.
func loadGroupOrNew(ctx context.Context, store blob.Store, prefix, group string) (c *GroupCatalog, etag string, rebuilt bool, err error) {
	c, etag, err = LoadGroupCatalog(ctx, store, prefix, group)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return &GroupCatalog{Group: group}, "", false, nil
	case errors.Is(err, ErrCatalog):
		props, perr := store.Properties(ctx, catalogContainer(prefix), groupBlob(group))
		if perr != nil {
			return nil, "", false, fmt.Errorf("azuresvc: catalog of group %s: %w", group, perr)
		}
		return &GroupCatalog{Group: group}, props.ETag, true, nil
	}
	return c, etag, false, err
}

// putGroupCatalog writes c if the stored one still has etag ("" = must not
// exist yet) and returns the new ETag.
func putGroupCatalog(ctx context.Context, store blob.Store, prefix string, c *GroupCatalog, etag string) (string, error) {
	data, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		return "", fmt.Errorf("azuresvc: encode catalog of group %s: %w", c.Group, err)
	}
	opts := blob.WriteOptions{IfMatch: etag}
	if etag == "" {
		opts = blob.WriteOptions{IfNoneMatch: "*"}
	}
	next, err := store.Put(ctx, catalogContainer(prefix), groupBlob(c.Group), data, opts)
	if errors.Is(err, blob.ErrConditionFailed) {
		return "", fmt.Errorf("%w: group %s: %v", errConflict, c.Group, err)
	}
	if err != nil {
		return "", fmt.Errorf("azuresvc: put catalog of group %s: %w", c.Group, err)
	}
	return next, nil
}

// groupChange is what one group update makes of the stored group catalog.
// It is a delta, not a whole catalog, so that it can be applied again to a
// catalog reloaded after an ETag conflict; applying it twice changes
// nothing the second time.
type groupChange struct {
	Members []string          // the membership to record; nil: leave it
	Add     []GroupPoint      // group points to record (those already recorded are left)
	Drop    map[string]string // group point id -> why it goes
	By      string            // the machine whose change led to Add (for the event)
}

func (c groupChange) empty(g *GroupCatalog) bool {
	return (c.Members == nil || slices.Equal(c.Members, g.Members)) && len(c.Add) == 0 && len(c.Drop) == 0
}

// applyTo returns g changed by c, with the points it actually added and the
// ids it actually dropped.
func (c groupChange) applyTo(g *GroupCatalog) (next *GroupCatalog, added []GroupPoint, dropped []string) {
	next = g.clone()
	if c.Members != nil {
		next.Members = slices.Clone(c.Members)
	}
	next.Points = slices.DeleteFunc(next.Points, func(p GroupPoint) bool {
		if _, ok := c.Drop[p.ID]; ok {
			dropped = append(dropped, p.ID)
			return true
		}
		return false
	})
	for _, p := range c.Add {
		if _, ok := c.Drop[p.ID]; ok {
			continue
		}
		if _, ok := next.point(p.ID); ok {
			continue
		}
		next.Points = append(next.Points, p.clone())
		added = append(added, p.clone())
	}
	slices.SortFunc(next.Points, compareGroupPoints)
	return next, added, dropped
}

// groupResult is what a group Op returns (as its Value, also on error; cat
// nil means the stored state is unknown: reload).
type groupResult struct {
	cat     *GroupCatalog
	etag    string
	rebuilt bool // load: the stored catalog was malformed and is rebuilt
	added   []GroupPoint
	dropped []string
	retries int // ETag conflicts met
}

// updateGroup applies ch to the stored group catalog (cat under etag),
// reloading and applying it again after an ETag conflict.
func updateGroup(ctx context.Context, st storage, cat *GroupCatalog, etag string, ch groupChange) (groupResult, error) {
	for round := 0; ; round++ {
		next, added, dropped := ch.applyTo(cat)
		if ch.empty(cat) {
			// Nothing to change (or, with no catalog yet, nothing worth
			// creating): a retried update ends here.
			return groupResult{cat: cat, etag: etag, retries: round}, nil
		}
		tag, err := putGroupCatalog(ctx, st.store, st.prefix, next, etag)
		if errors.Is(err, errConflict) && round < maxConflicts {
			c, e, _, lerr := loadGroupOrNew(ctx, st.store, st.prefix, cat.Group)
			if lerr != nil {
				return groupResult{}, lerr
			}
			cat, etag = c, e
			continue
		}
		if err != nil {
			return groupResult{cat: cat, etag: etag, retries: round}, err
		}
		return groupResult{cat: next, etag: tag, added: added, dropped: dropped, retries: round}, nil
	}
}

// isGroupCatalog says whether a catalog blob name is a group's, and whose.
func isGroupCatalog(blobName string) (string, bool) {
	name, ok := strings.CutSuffix(blobName, ".json")
	if !ok {
		return "", false
	}
	g, ok := strings.CutPrefix(name, groupPrefix)
	return g, ok && g != ""
}
