// Package azblob is the real blob.Store: an adapter over the Azure SDK's
// azblob v1.8.3 that speaks to a real storage account and to Azurite alike.
//
// It enforces what Azurite does not: page writes must be 512-byte aligned, at
// most 4 MiB per call and inside the blob (blob.CheckPageWrite) — refused
// before anything is sent, with ErrInvalidRange. It does not split large page
// writes itself; blob.WritePagesSplit does that on top of any Store.
//
// It relies on nothing that Azurite gets wrong: no GetPageRangesDiff (its
// prevsnapshot is ignored by Azurite), no incremental copy and no
// UploadPagesFromURL (Azurite answers 501). Its one server-side copy is
// StartCopy (Copy Blob from a URL in the same account, authorised by the
// account's own key), which Azurite finishes at once and Azure may leave
// pending.
// Metadata keys are lower-cased both ways, because Azurite returns them
// capitalised.
//
// As a port adapter it may use the SDK's goroutines, clock and retries:
// a request that fails transiently is retried by the SDK's policy (three
// tries), so a conditional write whose first answer was lost may report a
// conflict with itself; callers re-read and compare, as with any
// optimistic-concurrency loop.
package azblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	sdk "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/v2a-dr/v2a/impl/blob"
)

// Store is a blob.Store backed by one storage account.
type Store struct {
	client *sdk.Client
	// sizes caches page-blob sizes this Store created, resized or read, so
	// that the page-range check of a write needs no round trip. A write
	// beyond the cached size re-reads the size (another client may have
	// grown the blob). A blob another client shrinks is the one case the
	// cache misses: real Azure then refuses the write itself
	// (InvalidPageRange), Azurite does not.
	sizes sync.Map // container + "/" + name -> int64
}

var _ blob.Store = (*Store)(nil)

// NewFromConnectionString connects to the account a connection string names
// (Azurite's, or a real account's "DefaultEndpointsProtocol=...;AccountName=
// ...;AccountKey=...;..."). Nothing is sent until the first call.
func NewFromConnectionString(connectionString string) (*Store, error) {
	c, err := sdk.NewClientFromConnectionString(connectionString, nil)
	if err != nil {
		return nil, fmt.Errorf("blob: azblob: connection string: %w", err)
	}
	return &Store{client: c}, nil
}

// ConnectionStringField is the value of key (compared without case) in a
// storage connection string ("DefaultEndpointsProtocol=...;AccountName=...;
// ..."), or "" when the string has none. It is the one reader of a
// connection string's parts outside the SDK: callers take the account's
// name or endpoint from it, never its key.
func ConnectionStringField(conn, key string) string {
	for _, kv := range strings.Split(conn, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return v
		}
	}
	return ""
}

// NewWithSharedKey connects to the account at accountURL (for a real
// account "https://<account>.blob.core.windows.net/") with its name and one
// of its access keys.
func NewWithSharedKey(accountURL, accountName, accountKey string) (*Store, error) {
	cred, err := sdk.NewSharedKeyCredential(accountName, accountKey)
	if err != nil {
		return nil, fmt.Errorf("blob: azblob: shared key for %s: %w", accountName, err)
	}
	c, err := sdk.NewClientWithSharedKeyCredential(accountURL, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("blob: azblob: account %s: %w", accountURL, err)
	}
	return &Store{client: c}, nil
}

// New wraps an SDK client built by the caller (for example with an Entra ID
// token credential or custom retry options).
func New(client *sdk.Client) *Store { return &Store{client: client} }

// Client is the underlying SDK client, for what the port does not cover
// (benchmarks, diagnostics).
func (s *Store) Client() *sdk.Client { return s.client }

func (s *Store) container(c string) *container.Client {
	return s.client.ServiceClient().NewContainerClient(c)
}

func (s *Store) blobClient(c, name string) *sdkblob.Client {
	return s.container(c).NewBlobClient(name)
}

func (s *Store) pageClient(c, name string) *pageblob.Client {
	return s.container(c).NewPageBlobClient(name)
}

// CreateContainer implements blob.Store.
func (s *Store) CreateContainer(ctx context.Context, c string) error {
	if err := blob.CheckNames(c, ""); err != nil {
		return fmt.Errorf("blob: create container %s: %w", c, err)
	}
	_, err := s.container(c).Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return mapErr("create container", c, "", err)
	}
	return nil
}

// DeleteContainer implements blob.Store.
func (s *Store) DeleteContainer(ctx context.Context, c string) error {
	s.sizes.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), c+"/") {
			s.sizes.Delete(k)
		}
		return true
	})
	if err := blob.CheckNames(c, ""); err != nil {
		return fmt.Errorf("blob: delete container %s: %w", c, err)
	}
	_, err := s.container(c).Delete(ctx, nil)
	if bloberror.HasCode(err, bloberror.ContainerBeingDeleted) {
		// Real Azure deletes in the background; a second delete meanwhile
		// finds a container that is already going.
		return blob.Errorf("delete container", c, "", blob.ErrNotFound, "being deleted")
	}
	return mapErr("delete container", c, "", err)
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, c, prefix string) ([]blob.Item, error) {
	if err := blob.CheckNames(c, ""); err != nil {
		return nil, fmt.Errorf("blob: list %s: %w", c, err)
	}
	opts := &container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}}
	if prefix != "" {
		opts.Prefix = to.Ptr(prefix)
	}
	var items []blob.Item
	pager := s.container(c).NewListBlobsFlatPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, mapErr("list", c, "", err)
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name == nil || b.Properties == nil {
				continue
			}
			items = append(items, blob.Item{Name: *b.Name, Props: itemProps(b.Properties, b.Metadata)})
		}
	}
	// Azure lists in byte order already; sorting again makes the contract
	// hold for any server that does not.
	slices.SortFunc(items, func(a, b blob.Item) int { return strings.Compare(a.Name, b.Name) })
	return items, nil
}

func itemProps(p *container.BlobProperties, md map[string]*string) blob.Props {
	out := blob.Props{Metadata: fromSDKMetadata(md)}
	if p.BlobType != nil {
		out.Kind = blob.Kind(*p.BlobType)
	}
	if p.ContentLength != nil {
		out.Size = *p.ContentLength
	}
	if p.ETag != nil {
		out.ETag = quoteETag(string(*p.ETag))
	}
	out.Leased = p.LeaseStatus != nil && *p.LeaseStatus == lease.StatusTypeLocked
	return out
}

// Put implements blob.Store. The blob is written with one Put Blob request
// (at most 5000 MiB), so a conditional Put is all-or-nothing.
func (s *Store) Put(ctx context.Context, c, name string, data []byte, opts blob.WriteOptions) (string, error) {
	s.sizes.Delete(c + "/" + name) // a block blob replaces any page blob
	const op = "put"
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.container(c).NewBlockBlobClient(name).Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		Metadata:         toSDKMetadata(opts.Metadata),
		AccessConditions: accessConditions(opts),
	})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	return etag(resp.ETag), nil
}

// Get implements blob.Store.
func (s *Store) Get(ctx context.Context, c, name string, opts blob.ReadOptions) ([]byte, blob.Props, error) {
	const op = "get"
	if err := blob.CheckNames(c, name); err != nil {
		return nil, blob.Props{}, blob.Errorf(op, c, name, err, "")
	}
	if opts.Offset < 0 || opts.Length < 0 {
		return nil, blob.Props{}, blob.Errorf(op, c, name, blob.ErrInvalidRange, fmt.Sprintf("negative offset %d or length %d", opts.Offset, opts.Length))
	}
	bc := s.blobClient(c, name)
	if opts.Snapshot != "" {
		var err error
		if bc, err = bc.WithSnapshot(opts.Snapshot); err != nil {
			return nil, blob.Props{}, blob.Errorf(op, c, name, blob.ErrInvalid, "snapshot "+opts.Snapshot)
		}
	}
	resp, err := bc.DownloadStream(ctx, &sdkblob.DownloadStreamOptions{
		Range: sdkblob.HTTPRange{Offset: opts.Offset, Count: opts.Length},
	})
	if err != nil {
		return nil, blob.Props{}, mapErr(op, c, name, err)
	}
	body := resp.NewRetryReader(ctx, nil)
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, blob.Props{}, fmt.Errorf("blob: get %s/%s: reading body: %w", c, name, err)
	}
	p := blob.Props{
		ETag:     etag(resp.ETag),
		Size:     int64(len(data)),
		Metadata: fromSDKMetadata(resp.Metadata),
		Leased:   resp.LeaseStatus != nil && *resp.LeaseStatus == lease.StatusTypeLocked,
	}
	if resp.BlobType != nil {
		p.Kind = blob.Kind(*resp.BlobType)
	}
	if resp.ContentRange != nil {
		if total, ok := rangeTotal(*resp.ContentRange); ok {
			p.Size = total
		}
	}
	// Azure clips a range that runs past the end; the port refuses it, the
	// same in every store.
	if _, err := blob.CheckRead(opts, p.Size); err != nil {
		return nil, blob.Props{}, blob.Errorf(op, c, name, err, "")
	}
	return data, p, nil
}

// rangeTotal parses the total out of "bytes 0-511/4096".
func rangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

// Properties implements blob.Store.
func (s *Store) Properties(ctx context.Context, c, name string) (blob.Props, error) {
	const op = "properties"
	if err := blob.CheckNames(c, name); err != nil {
		return blob.Props{}, blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.blobClient(c, name).GetProperties(ctx, nil)
	if err != nil {
		return blob.Props{}, mapErr(op, c, name, err)
	}
	p := blob.Props{
		ETag:     etag(resp.ETag),
		Metadata: fromSDKMetadata(resp.Metadata),
		Leased:   resp.LeaseStatus != nil && *resp.LeaseStatus == lease.StatusTypeLocked,
	}
	if resp.BlobType != nil {
		p.Kind = blob.Kind(*resp.BlobType)
	}
	if resp.ContentLength != nil {
		p.Size = *resp.ContentLength
	}
	return p, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, c, name string, opts blob.WriteOptions) error {
	const op = "delete"
	if err := checkWrite(c, name, opts); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	_, err := s.blobClient(c, name).Delete(ctx, &sdkblob.DeleteOptions{
		DeleteSnapshots:  to.Ptr(sdkblob.DeleteSnapshotsOptionTypeInclude),
		AccessConditions: accessConditions(opts),
	})
	s.sizes.Delete(c + "/" + name)
	return mapWriteErr(op, c, name, opts, err)
}

// DeleteBatch implements blob.Store with Blob Batch requests of up to
// blob.MaxBatch deletes each (blob.BatchRequests).
func (s *Store) DeleteBatch(ctx context.Context, c string, names []string) []error {
	errs := make([]error, len(names))
	for lo := 0; lo < len(names); lo += blob.MaxBatch {
		hi := min(lo+blob.MaxBatch, len(names))
		s.deleteBatch(ctx, c, names[lo:hi], errs[lo:hi])
	}
	return errs
}

// deleteBatch deletes names (at most blob.MaxBatch) in one request and
// sets errs, one per name.
func (s *Store) deleteBatch(ctx context.Context, c string, names []string, errs []error) {
	const op = "delete"
	if len(names) == 1 {
		// A batch of one is two billed transactions: a plain delete is one.
		errs[0] = s.Delete(ctx, c, names[0], blob.WriteOptions{})
		return
	}
	all := func(err error) {
		for i, name := range names {
			errs[i] = mapErr(op, c, name, err)
		}
	}
	if err := blob.CheckNames(c, ""); err != nil {
		for i, name := range names {
			errs[i] = blob.Errorf(op, c, name, err, "")
		}
		return
	}
	cc := s.container(c)
	bb, err := cc.NewBatchBuilder()
	if err != nil {
		all(err)
		return
	}
	// Only the names that are valid go in the batch; idx maps a
	// sub-request (its Content-ID) back to its name.
	var idx []int
	for i, name := range names {
		if err := blob.CheckNames(c, name); err != nil {
			errs[i] = blob.Errorf(op, c, name, err, "")
			continue
		}
		opts := &container.BatchDeleteOptions{DeleteOptions: sdkblob.DeleteOptions{
			DeleteSnapshots: to.Ptr(sdkblob.DeleteSnapshotsOptionTypeInclude)}}
		if err := bb.Delete(name, opts); err != nil {
			errs[i] = blob.Errorf(op, c, name, blob.ErrInvalid, err.Error())
			continue
		}
		idx = append(idx, i)
		// Not known deleted until the answer says so.
		errs[i] = blob.Errorf(op, c, name, errNoAnswer, "")
	}
	if len(idx) == 0 {
		return
	}
	resp, err := cc.SubmitBatch(ctx, bb, nil)
	if err != nil {
		for _, i := range idx {
			errs[i] = mapErr(op, c, names[i], err)
		}
		return
	}
	for _, r := range resp.Responses {
		if r.ContentID == nil || *r.ContentID < 0 || *r.ContentID >= len(idx) {
			continue
		}
		i := idx[*r.ContentID]
		errs[i] = mapErr(op, c, names[i], r.Error)
		if r.Error == nil {
			s.sizes.Delete(c + "/" + names[i])
		}
	}
}

// errNoAnswer is a batch's sub-request the answer did not mention.
var errNoAnswer = errors.New("blob: azblob: the batch answer has no result for this blob")

// SetMetadata implements blob.Store.
func (s *Store) SetMetadata(ctx context.Context, c, name string, md map[string]string, opts blob.WriteOptions) (string, error) {
	const op = "set metadata"
	opts.Metadata = md
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.blobClient(c, name).SetMetadata(ctx, toSDKMetadata(md), &sdkblob.SetMetadataOptions{
		AccessConditions: accessConditions(opts),
	})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	return etag(resp.ETag), nil
}

// CreatePageBlob implements blob.Store.
func (s *Store) CreatePageBlob(ctx context.Context, c, name string, sizeBytes int64, opts blob.WriteOptions) (string, error) {
	const op = "create page blob"
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	if err := blob.CheckPageBlobSize(sizeBytes); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.pageClient(c, name).Create(ctx, sizeBytes, &pageblob.CreateOptions{
		Metadata:         toSDKMetadata(opts.Metadata),
		AccessConditions: accessConditions(opts),
	})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	s.sizes.Store(c+"/"+name, sizeBytes)
	return etag(resp.ETag), nil
}

// Resize implements blob.Store.
func (s *Store) Resize(ctx context.Context, c, name string, sizeBytes int64, opts blob.WriteOptions) (string, error) {
	const op = "resize"
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	if err := blob.CheckPageBlobSize(sizeBytes); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.pageClient(c, name).Resize(ctx, sizeBytes, &pageblob.ResizeOptions{
		AccessConditions: accessConditions(opts),
	})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	s.sizes.Store(c+"/"+name, sizeBytes)
	return etag(resp.ETag), nil
}

// pageBlobSize reads the size that the page rules are checked against.
// The check and the write are two requests, so a concurrent Resize can slip
// between them; real Azure then refuses the write itself, Azurite may not.
func (s *Store) pageBlobSize(ctx context.Context, op, c, name string, opts blob.WriteOptions) (int64, error) {
	return s.pageBlobSizeFor(ctx, op, c, name, opts, 0)
}

// pageBlobSizeFor returns the blob's size, from the cache when the cached
// size already covers end.
func (s *Store) pageBlobSizeFor(ctx context.Context, op, c, name string, opts blob.WriteOptions, end int64) (int64, error) {
	if v, ok := s.sizes.Load(c + "/" + name); ok && end > 0 && v.(int64) >= end {
		return v.(int64), nil
	}
	size, err := s.fetchPageBlobSize(ctx, op, c, name, opts)
	if err == nil {
		s.sizes.Store(c+"/"+name, size)
	}
	return size, err
}

func (s *Store) fetchPageBlobSize(ctx context.Context, op, c, name string, opts blob.WriteOptions) (int64, error) {
	resp, err := s.blobClient(c, name).GetProperties(ctx, nil)
	if err != nil {
		return 0, mapWriteErr(op, c, name, opts, err)
	}
	if resp.BlobType == nil || *resp.BlobType != sdkblob.BlobTypePageBlob {
		return 0, blob.Errorf(op, c, name, blob.ErrInvalid, "not a page blob")
	}
	if resp.ContentLength == nil {
		return 0, nil
	}
	return *resp.ContentLength, nil
}

// WritePages implements blob.Store. It checks the page rules against the
// blob's size first (cached; see Store.sizes), because Azurite accepts what
// Azure refuses.
func (s *Store) WritePages(ctx context.Context, c, name string, offset int64, data []byte, opts blob.WriteOptions) (string, error) {
	const op = "write pages"
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	// Alignment and the per-call limit need no round trip.
	if err := blob.CheckPageWrite(offset, int64(len(data)), offset+int64(len(data))); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	size, err := s.pageBlobSizeFor(ctx, op, c, name, opts, offset+int64(len(data)))
	if err != nil {
		return "", err
	}
	if err := blob.CheckPageWrite(offset, int64(len(data)), size); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.pageClient(c, name).UploadPages(ctx, streaming.NopCloser(bytes.NewReader(data)),
		sdkblob.HTTPRange{Offset: offset, Count: int64(len(data))},
		&pageblob.UploadPagesOptions{AccessConditions: accessConditions(opts)})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	return etag(resp.ETag), nil
}

// ClearPages implements blob.Store.
func (s *Store) ClearPages(ctx context.Context, c, name string, offset, length int64, opts blob.WriteOptions) (string, error) {
	const op = "clear pages"
	if err := checkWrite(c, name, opts); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	if err := blob.CheckPageClear(offset, length, offset+length); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	size, err := s.pageBlobSize(ctx, op, c, name, opts)
	if err != nil {
		return "", err
	}
	if err := blob.CheckPageClear(offset, length, size); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.pageClient(c, name).ClearPages(ctx, sdkblob.HTTPRange{Offset: offset, Count: length},
		&pageblob.ClearPagesOptions{AccessConditions: accessConditions(opts)})
	if err != nil {
		return "", mapWriteErr(op, c, name, opts, err)
	}
	return etag(resp.ETag), nil
}

// PageRanges implements blob.Store.
func (s *Store) PageRanges(ctx context.Context, c, name, snapshot string) ([]blob.Range, error) {
	const op = "page ranges"
	if err := blob.CheckNames(c, name); err != nil {
		return nil, blob.Errorf(op, c, name, err, "")
	}
	var opts pageblob.GetPageRangesOptions
	if snapshot != "" {
		opts.Snapshot = to.Ptr(snapshot)
	}
	var rs []blob.Range
	pager := s.pageClient(c, name).NewGetPageRangesPager(&opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, mapErr(op, c, name, err)
		}
		for _, pr := range page.PageRange {
			if pr.Start != nil && pr.End != nil {
				rs = append(rs, blob.Range{Offset: *pr.Start, Length: *pr.End - *pr.Start + 1})
			}
		}
	}
	return blob.MergeRanges(rs), nil
}

// Snapshot implements blob.Store.
func (s *Store) Snapshot(ctx context.Context, c, name string, md map[string]string) (string, error) {
	const op = "snapshot"
	if err := checkWrite(c, name, blob.WriteOptions{Metadata: md}); err != nil {
		return "", blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.blobClient(c, name).CreateSnapshot(ctx, &sdkblob.CreateSnapshotOptions{Metadata: toSDKMetadata(md)})
	if err != nil {
		return "", mapErr(op, c, name, err)
	}
	if resp.Snapshot == nil {
		return "", fmt.Errorf("blob: snapshot %s/%s: server returned no snapshot id", c, name)
	}
	return *resp.Snapshot, nil
}

// Snapshots implements blob.Store.
func (s *Store) Snapshots(ctx context.Context, c, name string) ([]blob.Snapshot, error) {
	const op = "snapshots"
	if err := blob.CheckNames(c, name); err != nil {
		return nil, blob.Errorf(op, c, name, err, "")
	}
	pager := s.container(c).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:  to.Ptr(name),
		Include: container.ListBlobsInclude{Snapshots: true, Metadata: true},
	})
	var snaps []blob.Snapshot
	found := false
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, mapErr(op, c, name, err)
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name == nil || *b.Name != name {
				continue
			}
			if b.Snapshot == nil || *b.Snapshot == "" {
				found = true
				continue
			}
			sn := blob.Snapshot{ID: *b.Snapshot, Metadata: fromSDKMetadata(b.Metadata)}
			if b.Properties != nil && b.Properties.ContentLength != nil {
				sn.Size = *b.Properties.ContentLength
			}
			snaps = append(snaps, sn)
		}
	}
	if !found {
		return nil, blob.Errorf(op, c, name, blob.ErrNotFound, "")
	}
	slices.SortFunc(snaps, func(a, b blob.Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return snaps, nil
}

// DeleteSnapshot implements blob.Store.
func (s *Store) DeleteSnapshot(ctx context.Context, c, name, snapshot string) error {
	const op = "delete snapshot"
	if err := blob.CheckNames(c, name); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	if snapshot == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty snapshot id")
	}
	bc, err := s.blobClient(c, name).WithSnapshot(snapshot)
	if err != nil {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "snapshot "+snapshot)
	}
	_, err = bc.Delete(ctx, nil)
	return mapErr(op, c, name, err)
}

func (s *Store) leaseClient(op, c, name, leaseID string) (*lease.BlobClient, error) {
	if err := blob.CheckNames(c, name); err != nil {
		return nil, blob.Errorf(op, c, name, err, "")
	}
	var opts *lease.BlobClientOptions
	if leaseID != "" {
		opts = &lease.BlobClientOptions{LeaseID: to.Ptr(leaseID)}
	}
	lc, err := lease.NewBlobClient(s.blobClient(c, name), opts)
	if err != nil {
		return nil, blob.Errorf(op, c, name, blob.ErrInvalid, err.Error())
	}
	return lc, nil
}

// AcquireLease implements blob.Store.
func (s *Store) AcquireLease(ctx context.Context, c, name, leaseID string, duration time.Duration) error {
	const op = "acquire lease"
	if leaseID == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty lease id")
	}
	if err := blob.CheckLeaseDuration(duration); err != nil {
		return blob.Errorf(op, c, name, err, "")
	}
	lc, err := s.leaseClient(op, c, name, leaseID)
	if err != nil {
		return err
	}
	secs := int32(-1)
	if duration > 0 {
		secs = int32(duration / time.Second)
	}
	_, err = lc.AcquireLease(ctx, secs, nil)
	return mapErr(op, c, name, err)
}

// RenewLease implements blob.Store.
func (s *Store) RenewLease(ctx context.Context, c, name, leaseID string) error {
	const op = "renew lease"
	if leaseID == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty lease id")
	}
	lc, err := s.leaseClient(op, c, name, leaseID)
	if err != nil {
		return err
	}
	_, err = lc.RenewLease(ctx, nil)
	return mapErr(op, c, name, err)
}

// ReleaseLease implements blob.Store.
func (s *Store) ReleaseLease(ctx context.Context, c, name, leaseID string) error {
	const op = "release lease"
	if leaseID == "" {
		return blob.Errorf(op, c, name, blob.ErrInvalid, "empty lease id")
	}
	lc, err := s.leaseClient(op, c, name, leaseID)
	if err != nil {
		return err
	}
	_, err = lc.ReleaseLease(ctx, nil)
	return mapErr(op, c, name, err)
}

// BreakLease implements blob.Store. The break period is zero: the lease
// ends at once whatever its duration.
func (s *Store) BreakLease(ctx context.Context, c, name string) error {
	const op = "break lease"
	// The SDK insists on a lease ID in the client even for a break, which
	// sends none; give it a fixed one rather than let it draw a random one.
	lc, err := s.leaseClient(op, c, name, "00000000-0000-4000-8000-000000000000")
	if err != nil {
		return err
	}
	_, err = lc.BreakLease(ctx, &lease.BlobBreakOptions{BreakPeriod: to.Ptr(int32(0))})
	return mapErr(op, c, name, err)
}

func checkWrite(c, name string, opts blob.WriteOptions) error {
	if err := blob.CheckNames(c, name); err != nil {
		return err
	}
	return blob.CheckWriteOptions(opts)
}

func accessConditions(opts blob.WriteOptions) *sdkblob.AccessConditions {
	var ac sdkblob.AccessConditions
	if opts.IfMatch != "" || opts.IfNoneMatch != "" {
		ac.ModifiedAccessConditions = &sdkblob.ModifiedAccessConditions{}
		if opts.IfMatch != "" {
			ac.ModifiedAccessConditions.IfMatch = to.Ptr(azcore.ETag(opts.IfMatch))
		}
		if opts.IfNoneMatch != "" {
			ac.ModifiedAccessConditions.IfNoneMatch = to.Ptr(azcore.ETagAny)
		}
	}
	if opts.LeaseID != "" {
		ac.LeaseAccessConditions = &sdkblob.LeaseAccessConditions{LeaseID: to.Ptr(opts.LeaseID)}
	}
	return &ac
}

func etag(e *azcore.ETag) string {
	if e == nil {
		return ""
	}
	return quoteETag(string(*e))
}

// quoteETag gives every ETag its header form ("\"0x8D...\""): Azure's
// listings return ETags unquoted, its headers quoted, and the port promises
// one value per version.
func quoteETag(e string) string {
	if e == "" || strings.HasPrefix(e, `"`) || strings.HasPrefix(e, `W/"`) {
		return e
	}
	return `"` + e + `"`
}

func toSDKMetadata(md map[string]string) map[string]*string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]*string, len(md))
	for k, v := range md {
		out[strings.ToLower(k)] = to.Ptr(v)
	}
	return out
}

func fromSDKMetadata(md map[string]*string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		if v != nil {
			out[strings.ToLower(k)] = *v
		}
	}
	return out
}

// mapWriteErr is mapErr for a conditional write: the create-only conflict
// is ErrExists and ErrConditionFailed at once, however the server words it
// (Azure answers 409 BlobAlreadyExists, others 412 ConditionNotMet).
func mapWriteErr(op, c, name string, opts blob.WriteOptions, err error) error {
	if err == nil {
		return nil
	}
	if opts.IfNoneMatch == "*" && bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return blob.ExistsError(op, c, name)
	}
	if opts.IfMatch != "" && bloberror.HasCode(err, bloberror.BlobNotFound) {
		// If-Match on a missing blob: Azurite says 412 for every write;
		// make it so whatever the server says.
		return blob.Errorf(op, c, name, blob.ErrConditionFailed, "blob does not exist")
	}
	return mapErr(op, c, name, err)
}

// mapErr turns an SDK error into the port's error for op on c/name; nil
// stays nil. Unknown errors keep the SDK's error wrapped so that nothing is
// lost, and match none of the port's sentinels.
func mapErr(op, c, name string, err error) error {
	if err == nil {
		return nil
	}
	var re *azcore.ResponseError
	code := ""
	status := 0
	if errors.As(err, &re) {
		code, status = re.ErrorCode, re.StatusCode
	}
	var sentinel error
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.BlobNotFound, bloberror.ResourceNotFound):
		sentinel = blob.ErrNotFound
	case bloberror.HasCode(err, bloberror.ContainerAlreadyExists, bloberror.BlobAlreadyExists,
		bloberror.ResourceAlreadyExists, bloberror.ContainerBeingDeleted):
		sentinel = blob.ErrExists
	case strings.HasPrefix(code, "Lease"), bloberror.HasCode(err, bloberror.InfiniteLeaseDurationRequired):
		sentinel = blob.ErrLeased
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.TargetConditionNotMet,
		bloberror.SequenceNumberConditionNotMet, bloberror.MaxBlobSizeConditionNotMet):
		sentinel = blob.ErrConditionFailed
	case bloberror.HasCode(err, bloberror.InvalidRange, bloberror.InvalidPageRange),
		status == http.StatusRequestedRangeNotSatisfiable:
		sentinel = blob.ErrInvalidRange
	case bloberror.HasCode(err, bloberror.InvalidResourceName, bloberror.InvalidMetadata,
		bloberror.OutOfRangeInput, bloberror.InvalidHeaderValue, bloberror.InvalidQueryParameterValue,
		bloberror.InvalidBlobType, bloberror.InvalidBlobOrBlock):
		sentinel = blob.ErrInvalid
	case status == http.StatusNotFound:
		sentinel = blob.ErrNotFound
	case status == http.StatusPreconditionFailed:
		sentinel = blob.ErrConditionFailed
	}
	detail := code
	if detail == "" && status != 0 {
		detail = http.StatusText(status)
	}
	if sentinel == nil {
		return fmt.Errorf("blob: %s %s: %w", op, where(c, name), err)
	}
	return blob.Errorf(op, c, name, sentinel, detail)
}

func where(c, name string) string {
	if name == "" {
		return c
	}
	return c + "/" + name
}

// StartCopy implements blob.Store.
func (s *Store) StartCopy(ctx context.Context, dc, dst, sc, src, srcSnapshot string) (string, error) {
	const op = "start copy"
	if err := blob.CheckNames(sc, src); err != nil {
		return "", blob.Errorf(op, sc, src, err, "")
	}
	if err := blob.CheckNames(dc, dst); err != nil {
		return "", blob.Errorf(op, dc, dst, err, "")
	}
	source := s.blobClient(sc, src)
	if srcSnapshot != "" {
		var err error
		if source, err = source.WithSnapshot(srcSnapshot); err != nil {
			return "", blob.Errorf(op, sc, src, blob.ErrInvalid, "snapshot "+srcSnapshot)
		}
	}
	// A missing source must be ErrNotFound whatever the service says
	// about the copy (Azure: 404 CannotVerifyCopySource).
	if _, err := source.GetProperties(ctx, nil); err != nil {
		return "", mapErr(op, sc, src, err)
	}
	resp, err := s.blobClient(dc, dst).StartCopyFromURL(ctx, source.URL(), nil)
	s.sizes.Delete(dc + "/" + dst)
	if err != nil {
		return "", mapErr(op, dc, dst, err)
	}
	if resp.CopyID == nil {
		return "", fmt.Errorf("blob: %s %s: the service returned no copy id", op, where(dc, dst))
	}
	return *resp.CopyID, nil
}

// CopyState implements blob.Store.
func (s *Store) CopyState(ctx context.Context, c, name string) (blob.Copy, error) {
	const op = "copy state"
	if err := blob.CheckNames(c, name); err != nil {
		return blob.Copy{}, blob.Errorf(op, c, name, err, "")
	}
	resp, err := s.blobClient(c, name).GetProperties(ctx, nil)
	if err != nil {
		return blob.Copy{}, mapErr(op, c, name, err)
	}
	var cp blob.Copy
	if resp.CopyStatus == nil {
		return cp, nil
	}
	cp.Status = blob.CopyStatus(*resp.CopyStatus)
	if resp.CopyID != nil {
		cp.ID = *resp.CopyID
	}
	if resp.CopyStatusDescription != nil {
		cp.Reason = *resp.CopyStatusDescription
	}
	if resp.CopyProgress != nil {
		done, total, ok := strings.Cut(*resp.CopyProgress, "/")
		if ok {
			cp.Copied, _ = strconv.ParseInt(done, 10, 64)
			cp.Total, _ = strconv.ParseInt(total, 10, 64)
		}
	}
	return cp, nil
}
