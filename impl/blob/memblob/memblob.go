// Package memblob is an in-memory blob.Store for fast unit and property
// tests. It passes the same conformance suite (impl/blob/blobtest) as the
// azblob adapter against Azurite, so code tested on it behaves the same on
// Azure storage.
//
// It is deterministic: ETags and snapshot IDs come from counters, so the
// same calls give the same values. Page blobs are sparse (only written
// pages take memory) and snapshots share unchanged pages with their base,
// so large virtual disks and many recovery points are cheap.
//
// Leases of finite duration expire only if the store was given a clock
// (WithClock); without one they last until released or broken.
package memblob

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
)

// Store is an in-memory storage account. It is safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	now     func() time.Time
	etagSeq uint64
	snapSeq uint64
	copySeq uint64
	genSeq  uint64
	// pendingCopies is how many CopyState calls a copy stays pending for.
	pendingCopies int
	containers    map[string]map[string]*object
}

var _ blob.Store = (*Store)(nil)

// Option configures New.
type Option func(*Store)

// WithClock makes finite leases expire by now (for example the simulator's
// virtual clock).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// WithPendingCopies keeps every server-side copy pending for n CopyState
// calls before it reports success, as Azure may, so that callers' polling
// is exercised. The destination's bytes are the source's from StartCopy on.
func WithPendingCopies(n int) Option {
	return func(s *Store) { s.pendingCopies = n }
}

// New returns an empty store with no containers.
func New(opts ...Option) *Store {
	s := &Store{containers: map[string]map[string]*object{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// content is one version of a blob's bytes and properties: the base blob's
// current one, or a snapshot's. Page slices are never written in place, so
// a snapshot may share them with the base.
type content struct {
	kind  blob.Kind
	size  int64
	etag  string
	md    map[string]string
	data  []byte  // block blob
	pages pageMap // page blob
}

// chunkPages is how many pages a chunk of a page map holds (64 KiB): a
// write after a snapshot copies the chunks it touches, not the blob's
// whole map of pages, so a recovery point costs memory in proportion to
// what changed since the one before.
const chunkPages = 128

// pageChunk is chunkPages consecutive pages; a nil page was never written
// (or was cleared). A chunk belongs to one blob generation (object.gen):
// only that generation may change it in place.
type pageChunk struct {
	gen   uint64
	pages [chunkPages][]byte
	n     int // non-nil pages
}

// pageMap maps a chunk's index (page index / chunkPages) to the chunk.
type pageMap map[int64]*pageChunk

func (m pageMap) get(i int64) []byte {
	if c := m[i/chunkPages]; c != nil {
		return c.pages[i%chunkPages]
	}
	return nil
}

// indices returns the written pages' indices in order.
func (m pageMap) indices() []int64 {
	var out []int64
	for _, ci := range slices.Sorted(maps.Keys(m)) {
		for j, p := range m[ci].pages {
			if p != nil {
				out = append(out, ci*chunkPages+int64(j))
			}
		}
	}
	return out
}

func (c *content) props() blob.Props {
	return blob.Props{Kind: c.kind, Size: c.size, ETag: c.etag, Metadata: maps.Clone(c.md)}
}

// read returns the bytes in r (which the caller has checked).
func (c *content) read(r blob.Range) []byte {
	if c.kind == blob.BlockBlob {
		return slices.Clone(c.data[r.Offset:r.End()])
	}
	out := make([]byte, r.Length)
	for off := r.Offset - r.Offset%blob.PageSize; off < r.End(); off += blob.PageSize {
		p := c.pages.get(off / blob.PageSize)
		if p == nil {
			continue
		}
		lo, hi := max(off, r.Offset), min(off+blob.PageSize, r.End())
		copy(out[lo-r.Offset:hi-r.Offset], p[lo-off:hi-off])
	}
	return out
}

func (c *content) ranges() []blob.Range {
	idx := c.pages.indices()
	rs := make([]blob.Range, 0, len(idx))
	for _, i := range idx {
		rs = append(rs, blob.Range{Offset: i * blob.PageSize, Length: blob.PageSize})
	}
	return blob.MergeRanges(rs)
}

type leaseState int

const (
	leaseNone leaseState = iota
	leaseHeld
	leaseBroken
)

type object struct {
	content
	lease     leaseState
	leaseID   string
	leaseDur  time.Duration // 0: infinite
	expires   time.Time     // zero: never (infinite, or no clock)
	snapshots []snapshot
	// cp is the last copy into the blob; nil when none or written since.
	cp *copyState
	// ownPages: the pages map is this blob's alone (no snapshot or copy
	// shares it), so a write may change the map in place instead of
	// cloning it — a clone per write made long simulations quadratic.
	// gen is the blob's generation: a chunk of that generation is this
	// blob's alone too. A snapshot or a copy gives the blob a new one.
	ownPages bool
	gen      uint64
}

type copyState struct {
	blob.Copy
	remaining int // CopyState calls left while pending
}

type snapshot struct {
	id string
	content
}

// unsharePages gives the blob a pages map of its own before a write, when
// a snapshot or a copy shares the current one.
func (o *object) unsharePages() {
	if !o.ownPages {
		o.pages = maps.Clone(o.pages)
		o.ownPages = true
	}
}

// chunk returns the chunk holding page i, this generation's own (copied
// if it was shared, made if create and there was none); nil when there is
// none and !create. unsharePages must have run.
func (o *object) chunk(i int64, create bool) *pageChunk {
	ci := i / chunkPages
	c := o.pages[ci]
	switch {
	case c == nil && !create:
		return nil
	case c == nil:
		c = &pageChunk{gen: o.gen}
	case c.gen != o.gen:
		cp := *c
		cp.gen = o.gen
		c = &cp
	default:
		return c
	}
	o.pages[ci] = c
	return c
}

// setPage stores page i (nil: clears it).
func (o *object) setPage(i int64, p []byte) {
	c := o.chunk(i, p != nil)
	if c == nil {
		return
	}
	j := i % chunkPages
	switch {
	case c.pages[j] == nil && p != nil:
		c.n++
	case c.pages[j] != nil && p == nil:
		c.n--
	}
	c.pages[j] = p
	if c.n == 0 {
		delete(o.pages, i/chunkPages)
	}
}

// newGen gives o a new generation: the chunks it had are shared from now.
func (s *Store) newGen(o *object) {
	s.genSeq++
	o.gen = s.genSeq
}

// leaseActive reports whether a lease holds the blob now.
func (s *Store) leaseActive(o *object) bool {
	if o.lease != leaseHeld {
		return false
	}
	return o.expires.IsZero() || s.now == nil || s.now().Before(o.expires)
}

func (s *Store) nextETag() string {
	s.etagSeq++
	return fmt.Sprintf("\"0x%015X\"", s.etagSeq)
}

func (s *Store) container(op, c, name string) (map[string]*object, error) {
	if err := blob.CheckNames(c, name); err != nil {
		return nil, blob.Errorf(op, c, name, err, "")
	}
	blobs, ok := s.containers[c]
	if !ok {
		return nil, blob.Errorf(op, c, name, blob.ErrNotFound, "container does not exist")
	}
	return blobs, nil
}

func (s *Store) object(op, c, name string) (*object, error) {
	blobs, err := s.container(op, c, name)
	if err != nil {
		return nil, err
	}
	o, ok := blobs[name]
	if !ok {
		return nil, blob.Errorf(op, c, name, blob.ErrNotFound, "")
	}
	return o, nil
}

// errCreateOnly is the create-only conflict: ErrExists and
// ErrConditionFailed at once (see blob.ExistsError).
var errCreateOnly = fmt.Errorf("if-none-match *: %w (%w)", blob.ErrExists, blob.ErrConditionFailed)

// checkWrite applies opts' conditions and lease to a write of o (nil when
// the blob does not exist yet). Its errors are not yet worded with the
// operation and names.
func (s *Store) checkWrite(o *object, opts blob.WriteOptions) error {
	if o == nil {
		if opts.IfMatch != "" {
			return fmt.Errorf("if-match on a blob that does not exist: %w", blob.ErrConditionFailed)
		}
		if opts.LeaseID != "" {
			return fmt.Errorf("lease id given for a blob that does not exist: %w", blob.ErrLeased)
		}
		return nil
	}
	if opts.IfNoneMatch == "*" {
		return errCreateOnly
	}
	if opts.IfMatch != "" && opts.IfMatch != o.etag {
		return fmt.Errorf("if-match: %w", blob.ErrConditionFailed)
	}
	switch active := s.leaseActive(o); {
	case active && opts.LeaseID == "":
		return fmt.Errorf("blob is leased and no lease id was given: %w", blob.ErrLeased)
	case active && opts.LeaseID != o.leaseID:
		return fmt.Errorf("lease id does not match: %w", blob.ErrLeased)
	case !active && opts.LeaseID != "":
		return fmt.Errorf("lease id given but the blob is not leased: %w", blob.ErrLeased)
	}
	return nil
}

// missingIfMatch is object for a write to an existing blob: with IfMatch,
// a missing blob is ErrConditionFailed rather than ErrNotFound (as Azure
// and Azurite answer).
func (s *Store) missingIfMatch(op, c, name string, opts blob.WriteOptions) (*object, error) {
	if _, err := s.container(op, c, name); err != nil {
		return nil, err
	}
	o, err := s.object(op, c, name)
	if err != nil && opts.IfMatch != "" {
		return nil, blob.Errorf(op, c, name, blob.ErrConditionFailed, "blob does not exist")
	}
	return o, err
}

// CreateContainer implements blob.Store.
func (s *Store) CreateContainer(_ context.Context, c string) error {
	if err := blob.CheckNames(c, ""); err != nil {
		return blob.Errorf("create container", c, "", err, "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[c]; !ok {
		s.containers[c] = map[string]*object{}
	}
	return nil
}

// DeleteContainer implements blob.Store.
func (s *Store) DeleteContainer(_ context.Context, c string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.container("delete container", c, ""); err != nil {
		return err
	}
	delete(s.containers, c)
	return nil
}

// List implements blob.Store.
func (s *Store) List(_ context.Context, c, prefix string) ([]blob.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	blobs, err := s.container("list", c, "")
	if err != nil {
		return nil, err
	}
	var items []blob.Item
	for _, name := range slices.Sorted(maps.Keys(blobs)) {
		if strings.HasPrefix(name, prefix) {
			items = append(items, blob.Item{Name: name, Props: s.props(blobs[name])})
		}
	}
	return items, nil
}

func (s *Store) props(o *object) blob.Props {
	p := o.content.props()
	p.Leased = s.leaseActive(o)
	return p
}

// Put implements blob.Store.
func (s *Store) Put(_ context.Context, c, name string, data []byte, opts blob.WriteOptions) (string, error) {
	return s.create("put", c, name, opts, content{kind: blob.BlockBlob, size: int64(len(data)), data: slices.Clone(data)})
}

// CreatePageBlob implements blob.Store.
func (s *Store) CreatePageBlob(_ context.Context, c, name string, sizeBytes int64, opts blob.WriteOptions) (string, error) {
	const op = "create page blob"
	if err := blob.CheckPageBlobSize(sizeBytes); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	return s.create(op, c, name, opts, content{kind: blob.PageBlob, size: sizeBytes, pages: pageMap{}})
}

// create writes a whole new version of a blob, keeping its lease and
// snapshots.
func (s *Store) create(op, c, name string, opts blob.WriteOptions, ct content) (string, error) {
	if err := blob.CheckWriteOptions(opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	blobs, err := s.container(op, c, name)
	if err != nil {
		return "", err
	}
	o := blobs[name]
	if err := s.checkWrite(o, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	if o == nil {
		o = &object{}
		blobs[name] = o
	}
	ct.md = blob.NormalizeMetadata(opts.Metadata)
	ct.etag = s.nextETag()
	o.content = ct
	o.ownPages = true // a new map (page blob) or none (block blob)
	o.cp = nil
	return ct.etag, nil
}

// Get implements blob.Store.
func (s *Store) Get(_ context.Context, c, name string, opts blob.ReadOptions) ([]byte, blob.Props, error) {
	const op = "get"
	s.mu.Lock()
	defer s.mu.Unlock()
	if opts.Offset < 0 || opts.Length < 0 {
		return nil, blob.Props{}, blob.Errorf(op, c, name, blob.ErrInvalidRange, fmt.Sprintf("negative offset %d or length %d", opts.Offset, opts.Length))
	}
	o, err := s.object(op, c, name)
	if err != nil {
		return nil, blob.Props{}, err
	}
	ct, p := &o.content, s.props(o)
	if opts.Snapshot != "" {
		sn := findSnapshot(o, opts.Snapshot)
		if sn == nil {
			return nil, blob.Props{}, blob.Errorf(op, c, name, blob.ErrNotFound, "no snapshot "+opts.Snapshot)
		}
		ct, p = &sn.content, sn.content.props()
	}
	r, err := blob.CheckRead(opts, ct.size)
	if err != nil {
		return nil, blob.Props{}, blob.Errorf(op, c, name, err, "")
	}
	return ct.read(r), p, nil
}

func findSnapshot(o *object, id string) *snapshot {
	for i := range o.snapshots {
		if o.snapshots[i].id == id {
			return &o.snapshots[i]
		}
	}
	return nil
}

// Properties implements blob.Store.
func (s *Store) Properties(_ context.Context, c, name string) (blob.Props, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object("properties", c, name)
	if err != nil {
		return blob.Props{}, err
	}
	return s.props(o), nil
}

// Delete implements blob.Store.
func (s *Store) Delete(_ context.Context, c, name string, opts blob.WriteOptions) error {
	const op = "delete"
	if err := blob.CheckWriteOptions(opts); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.missingIfMatch(op, c, name, opts)
	if err != nil {
		return err
	}
	if err := s.checkWrite(o, opts); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	delete(s.containers[c], name)
	return nil
}

// DeleteBatch implements blob.Store: Delete of each name, in order.
func (s *Store) DeleteBatch(ctx context.Context, c string, names []string) []error {
	errs := make([]error, len(names))
	for i, name := range names {
		errs[i] = s.Delete(ctx, c, name, blob.WriteOptions{})
	}
	return errs
}

// update runs fn on an existing blob after the write checks, and gives the
// blob a new ETag when fn succeeds.
func (s *Store) update(op, c, name string, opts blob.WriteOptions, fn func(o *object) error) (string, error) {
	if err := blob.CheckWriteOptions(opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.missingIfMatch(op, c, name, opts)
	if err != nil {
		return "", err
	}
	if err := fn(o); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	o.etag = s.nextETag()
	o.cp = nil
	return o.etag, nil
}

// SetMetadata implements blob.Store.
func (s *Store) SetMetadata(_ context.Context, c, name string, md map[string]string, opts blob.WriteOptions) (string, error) {
	const op = "set metadata"
	if err := blob.CheckMetadata(md); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	return s.update(op, c, name, opts, func(o *object) error {
		if err := s.checkWrite(o, opts); err != nil {
			return err
		}
		o.md = blob.NormalizeMetadata(md)
		return nil
	})
}

// pageUpdate is update for page blob operations: the blob must be a page
// blob, and check (the page rules) runs before the lease and conditions,
// as in the azblob adapter.
func (s *Store) pageUpdate(op, c, name string, opts blob.WriteOptions, check func(size int64) error, fn func(o *object)) (string, error) {
	return s.update(op, c, name, opts, func(o *object) error {
		if o.kind != blob.PageBlob {
			return fmt.Errorf("not a page blob: %w", blob.ErrInvalid)
		}
		if err := check(o.size); err != nil {
			return err
		}
		if err := s.checkWrite(o, opts); err != nil {
			return err
		}
		fn(o)
		return nil
	})
}

// Resize implements blob.Store.
func (s *Store) Resize(_ context.Context, c, name string, sizeBytes int64, opts blob.WriteOptions) (string, error) {
	return s.pageUpdate("resize", c, name, opts,
		func(int64) error { return blob.CheckPageBlobSize(sizeBytes) },
		func(o *object) {
			pages := make(pageMap, len(o.pages))
			for ci, c := range o.pages {
				if ci*chunkPages*blob.PageSize < sizeBytes {
					pages[ci] = c
				}
			}
			o.pages, o.size = pages, sizeBytes
			o.ownPages = true
			// The last chunk may reach past the new end.
			for i := sizeBytes / blob.PageSize; i%chunkPages != 0; i++ {
				if o.pages.get(i) != nil {
					o.setPage(i, nil)
				}
			}
		})
}

// WritePages implements blob.Store.
func (s *Store) WritePages(_ context.Context, c, name string, offset int64, data []byte, opts blob.WriteOptions) (string, error) {
	n := int64(len(data))
	// Alignment and the per-call limit are refused before the blob is
	// looked at, as in the adapter.
	if err := blob.CheckPageWrite(offset, n, offset+n); err != nil {
		return "", blob.Errorf("write pages", c, name, err, "")
	}
	return s.pageUpdate("write pages", c, name, opts,
		func(size int64) error { return blob.CheckPageWrite(offset, n, size) },
		func(o *object) {
			o.unsharePages()
			// One copy of the data backs all its pages (a page is never
			// written in place, so they may share it).
			buf := slices.Clone(data)
			for i := int64(0); i < n; i += blob.PageSize {
				o.setPage((offset+i)/blob.PageSize, buf[i:i+blob.PageSize:i+blob.PageSize])
			}
		})
}

// ClearPages implements blob.Store.
func (s *Store) ClearPages(_ context.Context, c, name string, offset, length int64, opts blob.WriteOptions) (string, error) {
	if err := blob.CheckPageClear(offset, length, offset+length); err != nil {
		return "", blob.Errorf("clear pages", c, name, err, "")
	}
	return s.pageUpdate("clear pages", c, name, opts,
		func(size int64) error { return blob.CheckPageClear(offset, length, size) },
		func(o *object) {
			o.unsharePages()
			for i := offset / blob.PageSize; i < (offset+length)/blob.PageSize; i++ {
				o.setPage(i, nil)
			}
		})
}

// PageRanges implements blob.Store.
func (s *Store) PageRanges(_ context.Context, c, name, snapshotID string) ([]blob.Range, error) {
	const op = "page ranges"
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object(op, c, name)
	if err != nil {
		return nil, err
	}
	ct := &o.content
	if snapshotID != "" {
		sn := findSnapshot(o, snapshotID)
		if sn == nil {
			return nil, blob.Errorf(op, c, name, blob.ErrNotFound, "no snapshot "+snapshotID)
		}
		ct = &sn.content
	}
	if ct.kind != blob.PageBlob {
		return nil, blob.Errorf(op, c, name, blob.ErrInvalid, "not a page blob")
	}
	return ct.ranges(), nil
}

// Snapshot implements blob.Store.
func (s *Store) Snapshot(_ context.Context, c, name string, md map[string]string) (string, error) {
	const op = "snapshot"
	if err := blob.CheckMetadata(md); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object(op, c, name)
	if err != nil {
		return "", err
	}
	s.snapSeq++
	sn := snapshot{id: fmt.Sprintf("snapshot-%012d", s.snapSeq), content: o.content}
	o.ownPages = false
	s.newGen(o)
	// Pages and data are never modified in place, so sharing them is safe;
	// the metadata map is replaced, never mutated, too.
	if len(md) > 0 {
		sn.md = blob.NormalizeMetadata(md)
	}
	o.snapshots = append(o.snapshots, sn)
	return sn.id, nil
}

// Snapshots implements blob.Store.
func (s *Store) Snapshots(_ context.Context, c, name string) ([]blob.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object("snapshots", c, name)
	if err != nil {
		return nil, err
	}
	var out []blob.Snapshot
	for _, sn := range o.snapshots {
		out = append(out, blob.Snapshot{ID: sn.id, Size: sn.size, Metadata: maps.Clone(sn.md)})
	}
	return out, nil
}

// DeleteSnapshot implements blob.Store.
func (s *Store) DeleteSnapshot(_ context.Context, c, name, snapshotID string) error {
	const op = "delete snapshot"
	s.mu.Lock()
	defer s.mu.Unlock()
	if snapshotID == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty snapshot id")
	}
	o, err := s.object(op, c, name)
	if err != nil {
		return err
	}
	for i := range o.snapshots {
		if o.snapshots[i].id == snapshotID {
			o.snapshots = slices.Delete(o.snapshots, i, i+1)
			return nil
		}
	}
	return blob.Errorf(op, c, name, blob.ErrNotFound, "no snapshot "+snapshotID)
}

// lease runs fn on an existing blob for a lease operation.
func (s *Store) lease(op, c, name, leaseID string, needID bool, fn func(o *object) error) error {
	if needID && leaseID == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty lease id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object(op, c, name)
	if err != nil {
		return err
	}
	if err := fn(o); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	return nil
}

// AcquireLease implements blob.Store.
func (s *Store) AcquireLease(_ context.Context, c, name, leaseID string, duration time.Duration) error {
	if err := blob.CheckLeaseDuration(duration); err != nil {
		return blob.Errorf("acquire lease", c, name, err, "")
	}
	return s.lease("acquire lease", c, name, leaseID, true, func(o *object) error {
		if s.leaseActive(o) && o.leaseID != leaseID {
			return fmt.Errorf("held under another lease id: %w", blob.ErrLeased)
		}
		o.lease, o.leaseID, o.leaseDur, o.expires = leaseHeld, leaseID, duration, time.Time{}
		if duration > 0 && s.now != nil {
			o.expires = s.now().Add(duration)
		}
		return nil
	})
}

// RenewLease implements blob.Store.
func (s *Store) RenewLease(_ context.Context, c, name, leaseID string) error {
	return s.lease("renew lease", c, name, leaseID, true, func(o *object) error {
		if o.lease != leaseHeld || o.leaseID != leaseID {
			return fmt.Errorf("not held under this lease id: %w", blob.ErrLeased)
		}
		if o.leaseDur > 0 && s.now != nil {
			o.expires = s.now().Add(o.leaseDur)
		}
		return nil
	})
}

// ReleaseLease implements blob.Store.
func (s *Store) ReleaseLease(_ context.Context, c, name, leaseID string) error {
	return s.lease("release lease", c, name, leaseID, true, func(o *object) error {
		if o.lease == leaseNone || o.leaseID != leaseID {
			return fmt.Errorf("not leased under this lease id: %w", blob.ErrLeased)
		}
		o.lease, o.leaseID, o.expires = leaseNone, "", time.Time{}
		return nil
	})
}

// BreakLease implements blob.Store.
func (s *Store) BreakLease(_ context.Context, c, name string) error {
	return s.lease("break lease", c, name, "", false, func(o *object) error {
		if o.lease == leaseNone {
			return fmt.Errorf("no lease to break: %w", blob.ErrLeased)
		}
		o.lease, o.expires = leaseBroken, time.Time{}
		return nil
	})
}

// StartCopy implements blob.Store.
func (s *Store) StartCopy(_ context.Context, dc, dst, sc, src, srcSnapshot string) (string, error) {
	const op = "start copy"
	s.mu.Lock()
	defer s.mu.Unlock()
	so, err := s.object(op, sc, src)
	if err != nil {
		return "", err
	}
	ct := so.content
	if srcSnapshot != "" {
		sn := findSnapshot(so, srcSnapshot)
		if sn == nil {
			return "", blob.Errorf(op, sc, src, blob.ErrNotFound, "no snapshot "+srcSnapshot)
		}
		ct = sn.content
	}
	blobs, err := s.container(op, dc, dst)
	if err != nil {
		return "", err
	}
	o := blobs[dst]
	if o != nil {
		if err := s.checkWrite(o, blob.WriteOptions{}); err != nil {
			return "", blob.Errorf(op, dc, dst, err, "")
		}
	} else {
		o = &object{}
		blobs[dst] = o
	}
	// Pages and data are never modified in place: sharing them is safe.
	ct.md = maps.Clone(ct.md)
	ct.etag = s.nextETag()
	o.content = ct
	so.ownPages, o.ownPages = false, false // when so is o, too
	s.newGen(so)
	s.newGen(o)
	s.copySeq++
	cp := &copyState{Copy: blob.Copy{ID: fmt.Sprintf("copy-%012d", s.copySeq), Total: ct.size}, remaining: s.pendingCopies}
	if cp.remaining > 0 {
		cp.Status = blob.CopyPending
	} else {
		cp.Status, cp.Copied = blob.CopySuccess, ct.size
	}
	o.cp = cp
	return cp.ID, nil
}

// CopyState implements blob.Store.
func (s *Store) CopyState(_ context.Context, c, name string) (blob.Copy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.object("copy state", c, name)
	if err != nil {
		return blob.Copy{}, err
	}
	if o.cp == nil {
		return blob.Copy{}, nil
	}
	cp := o.cp
	if cp.Status == blob.CopyPending {
		if cp.remaining > 0 {
			cp.remaining--
			cp.Copied = cp.Total * int64(s.pendingCopies-cp.remaining) / int64(s.pendingCopies+1)
			return cp.Copy, nil
		}
		cp.Status, cp.Copied = blob.CopySuccess, cp.Total
	}
	return cp.Copy, nil
}
