// Package blob is v2a's port to Azure blob storage: the small synchronous
// interface Store that the process server (cache container, block blobs) and
// the Azure-side service (replica disks as page blobs, recovery points as
// snapshots, catalogs updated with optimistic concurrency) are written
// against.
//
// Two implementations exist: impl/blob/azblob, the real adapter (it speaks to
// a real storage account and to Azurite), and sim/memblob, an in-memory store
// for fast unit and property tests. impl/blob/blobtest is the conformance
// suite that both must pass; when the two disagree, Azure's behaviour is the
// reference and the suite is where that is written down.
//
// Everything a Store returns is deterministic given the same calls, except
// ETags and snapshot IDs, which are opaque strings (on Azure a snapshot ID is
// a timestamp): compare them, never log them in a deterministic trace. No
// wall-clock value (Last-Modified, creation time) is exposed at all.
package blob

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Store is a blob storage account. Every method is synchronous and safe for
// concurrent use; a call either happened or returned an error (a call that
// failed on the network may still have happened: retry with conditions).
// Every write returns the blob's new ETag.
//
// Errors wrap one of the Err* variables below (test with errors.Is) together
// with the container and blob names. A blob in a missing container is
// ErrNotFound.
type Store interface {
	// CreateContainer creates a container. Creating one that exists is not
	// an error. Names follow Azure's rules (ValidContainerName), else
	// ErrInvalid.
	CreateContainer(ctx context.Context, container string) error
	// DeleteContainer deletes a container and every blob in it; ErrNotFound
	// if it does not exist. On real Azure the name stays unusable for a
	// while afterwards (creating it again answers ErrExists).
	DeleteContainer(ctx context.Context, container string) error
	// List returns the base blobs (not snapshots) whose name starts with
	// prefix, in ascending byte order of name, with their properties.
	List(ctx context.Context, container, prefix string) ([]Item, error)

	// Put writes a whole block blob, replacing any blob of that name (and
	// its metadata, which becomes opts.Metadata). With opts.IfNoneMatch "*"
	// it only creates: an existing blob gives ErrExists, which is also
	// ErrConditionFailed. With opts.IfMatch a blob whose ETag differs, or
	// that does not exist, gives ErrConditionFailed.
	Put(ctx context.Context, container, name string, data []byte, opts WriteOptions) (etag string, err error)
	// Get reads a blob, or a range of it, or of one of its snapshots (see
	// ReadOptions), and returns the properties of what it read: the ETag
	// returned is the one of the data returned, so Get then Put with IfMatch
	// is a safe read-modify-write.
	Get(ctx context.Context, container, name string, opts ReadOptions) ([]byte, Props, error)
	// Properties returns a blob's properties without its data.
	Properties(ctx context.Context, container, name string) (Props, error)
	// Delete deletes a blob together with all its snapshots. IfMatch and
	// LeaseID in opts are honoured; a leased blob needs its lease ID.
	Delete(ctx context.Context, container, name string, opts WriteOptions) error
	// DeleteBatch deletes blobs of one container, each with its
	// snapshots, in as few round trips as the service allows (Azure's Blob
	// Batch: MaxBatch a request). It returns one error per name, in order:
	// nil for a blob deleted, ErrNotFound for one not there, ErrLeased for
	// a leased one (a batch carries no lease IDs), and for every name of a
	// request that failed as a whole, that request's error.
	//
	// It saves round trips, not transactions: Azure bills every
	// sub-request and the batch itself, so n ≥ 2 names cost n+1
	// transactions (BatchRequests); a lone name is a plain Delete.
	DeleteBatch(ctx context.Context, container string, names []string) []error
	// SetMetadata replaces a blob's metadata (keys are lower-cased, see
	// Props.Metadata).
	SetMetadata(ctx context.Context, container, name string, md map[string]string, opts WriteOptions) (etag string, err error)

	// CreatePageBlob creates a page blob of sizeBytes (a multiple of
	// PageSize, else ErrInvalidRange), all zero and with no allocated pages,
	// replacing any blob of that name unless opts says otherwise.
	CreatePageBlob(ctx context.Context, container, name string, sizeBytes int64, opts WriteOptions) (etag string, err error)
	// Resize changes a page blob's size (a multiple of PageSize). Shrinking
	// discards the pages past the new end; growing adds zero pages.
	Resize(ctx context.Context, container, name string, sizeBytes int64, opts WriteOptions) (etag string, err error)
	// WritePages writes data at offset. Offset and len(data) must be
	// multiples of PageSize, len(data) in (0, MaxPageWrite], and the range
	// inside the blob; otherwise ErrInvalidRange and nothing is written. Use
	// WritePagesSplit for larger writes.
	WritePages(ctx context.Context, container, name string, offset int64, data []byte, opts WriteOptions) (etag string, err error)
	// ClearPages zeroes and deallocates [offset, offset+length). Both must
	// be multiples of PageSize and the range inside the blob, else
	// ErrInvalidRange. There is no per-call size limit.
	ClearPages(ctx context.Context, container, name string, offset, length int64, opts WriteOptions) (etag string, err error)
	// PageRanges lists the allocated (written and not cleared) ranges of a
	// page blob, or of its snapshot when snapshot is not "", sorted by
	// offset, with adjacent ranges merged. Writing zeros allocates.
	PageRanges(ctx context.Context, container, name, snapshot string) ([]Range, error)

	// Snapshot makes a read-only point-in-time copy of a blob and returns
	// its ID. The snapshot has the blob's metadata, unless md is non-empty,
	// in which case it has md instead. A leased blob needs no lease ID.
	Snapshot(ctx context.Context, container, name string, md map[string]string) (string, error)
	// Snapshots lists a blob's snapshots oldest first. The IDs of one blob
	// also sort in creation order as strings.
	Snapshots(ctx context.Context, container, name string) ([]Snapshot, error)
	// DeleteSnapshot deletes one snapshot; ErrNotFound if it is not there.
	DeleteSnapshot(ctx context.Context, container, name, snapshot string) error

	// AcquireLease takes the blob's write lease with the caller's leaseID
	// (a GUID: make one with NewLeaseID, from a seeded source, so that runs
	// are repeatable) for duration, which is 15 s to 60 s, or 0 for a lease
	// that never expires. Acquiring again with the same ID succeeds and
	// sets the new duration; another ID while the lease is held is
	// ErrLeased. While leased, every write to the blob (Put, Delete,
	// SetMetadata, page operations) must carry the ID in
	// WriteOptions.LeaseID or fails with ErrLeased; a lease ID given for an
	// existing blob that is not leased with it is also ErrLeased. (Put with
	// a lease ID of a blob that does not exist: Azure refuses, Azurite
	// accepts; rely on neither.)
	AcquireLease(ctx context.Context, container, name, leaseID string, duration time.Duration) error
	// RenewLease restarts the duration of the held lease leaseID. A
	// different ID, or a broken lease, is ErrLeased.
	RenewLease(ctx context.Context, container, name, leaseID string) error
	// ReleaseLease gives up the lease leaseID (held, expired or broken) so
	// that others may acquire it and writes need no ID. Another ID is
	// ErrLeased.
	ReleaseLease(ctx context.Context, container, name, leaseID string) error
	// BreakLease ends whatever lease the blob has, at once and without its
	// ID (for taking over from a holder that died). Breaking a broken
	// lease is not an error; a blob with no lease at all is ErrLeased.
	BreakLease(ctx context.Context, container, name string) error

	// StartCopy starts a server-side copy, within the account, of the blob
	// srcContainer/src — or of its snapshot srcSnapshot when that is not
	// "" — to dstContainer/dst, and returns the copy's ID. The destination
	// is replaced (its type, size, data and metadata become the source's);
	// its snapshots are kept. A missing source, snapshot or destination
	// container is ErrNotFound; a leased destination is ErrLeased. The
	// copy reads the source as it is when StartCopy is called.
	//
	// A copy may finish before StartCopy returns (Azurite, small blobs) or
	// stay pending (Azure): poll CopyState until its Status is no longer
	// CopyPending, and read the destination only after CopySuccess.
	StartCopy(ctx context.Context, dstContainer, dst, srcContainer, src, srcSnapshot string) (copyID string, err error)
	// CopyState reports the last copy into a blob. A blob that was never
	// the destination of a copy has the zero Copy (Status ""); whether a
	// later write clears the state differs between services, so do not
	// rely on it. A missing blob is ErrNotFound.
	CopyState(ctx context.Context, container, name string) (Copy, error)
}

// CopyStatus is where a server-side copy stands.
type CopyStatus string

// The copy statuses, with Azure's spelling.
const (
	CopyPending CopyStatus = "pending"
	CopySuccess CopyStatus = "success"
	CopyFailed  CopyStatus = "failed"
	CopyAborted CopyStatus = "aborted"
)

// Copy is the state of the last server-side copy into a blob.
type Copy struct {
	ID     string
	Status CopyStatus
	// Copied and Total are the bytes copied so far and the source's size
	// (Azure's x-ms-copy-progress).
	Copied, Total int64
	// Reason is the service's description of a failed or aborted copy.
	Reason string
}

// PageSize is the page blob unit: offsets and sizes are multiples of it.
const PageSize = 512

// MaxPageWrite is the most one WritePages call may write (Azure's limit).
const MaxPageWrite = 4 << 20

// MaxBatch is the most sub-requests one Blob Batch request may carry
// (Azure's limit): DeleteBatch splits longer lists.
const MaxBatch = 256

// BatchRequests is how DeleteBatch of n names goes out: the batch requests
// (each of 2 to MaxBatch names) and the plain deletes (a lone name, also
// the last of a list one longer than a multiple of MaxBatch). Azure bills
// each name and each batch request: n + batches transactions.
func BatchRequests(n int) (batches, plain int) {
	for ; n > 0; n -= min(n, MaxBatch) {
		if n == 1 {
			return batches, 1
		}
		batches++
	}
	return batches, 0
}

// MaxLeaseDuration and MinLeaseDuration bound a finite lease's duration.
const (
	MinLeaseDuration = 15 * time.Second
	MaxLeaseDuration = 60 * time.Second
)

// Kind is a blob's type.
type Kind string

// The blob types a Store holds.
const (
	BlockBlob Kind = "BlockBlob"
	PageBlob  Kind = "PageBlob"
)

// Props are a blob's properties. They hold no wall-clock value, so they may
// be printed in a deterministic trace — except ETag, which is opaque.
type Props struct {
	Kind Kind
	// Size is the whole blob's size in bytes, also when a range was read.
	Size int64
	// ETag changes on every write to the blob; pass it back in
	// WriteOptions.IfMatch for optimistic concurrency.
	ETag string
	// Metadata keys are lower case whatever case was written (Azure keys
	// are case-insensitive and Azurite returns them capitalised). Keys
	// must be C# identifiers (ValidMetadataKey). Nil when there is none.
	Metadata map[string]string
	// Leased is true while a lease is held (not released, expired or
	// broken).
	Leased bool
}

// Item is one blob in a List.
type Item struct {
	Name string
	Props
}

// Snapshot is one snapshot of a blob.
type Snapshot struct {
	ID       string
	Size     int64
	Metadata map[string]string
}

// Range is a byte range [Offset, Offset+Length).
type Range struct {
	Offset int64
	Length int64
}

// End is the first byte past r.
func (r Range) End() int64 { return r.Offset + r.Length }

// WriteOptions are the conditions of a write. The zero value writes
// unconditionally to an unleased blob.
type WriteOptions struct {
	// IfMatch: write only if the blob's ETag is this (ErrConditionFailed
	// otherwise, also when the blob does not exist, for every write).
	IfMatch string
	// IfNoneMatch "*": write only if the blob does not exist (ErrExists,
	// which is also ErrConditionFailed, otherwise). No other value is
	// accepted.
	IfNoneMatch string
	// LeaseID is the held lease's ID; required for writes to a leased blob.
	LeaseID string
	// Metadata is set by Put and CreatePageBlob; the other writes ignore it.
	Metadata map[string]string
}

// ReadOptions choose what Get reads. The zero value reads the whole blob.
type ReadOptions struct {
	// Snapshot, when not "", reads that snapshot instead of the blob.
	Snapshot string
	// Offset and Length select a range. Length 0 reads to the end; then
	// Offset must be below the size, unless it is 0 (the whole blob, even
	// empty). A Length > 0 range must lie inside the blob. Otherwise
	// ErrInvalidRange.
	Offset int64
	Length int64
}

// The errors a Store returns, always wrapped with the operation and the
// container/blob names.
var (
	ErrNotFound        = errors.New("blob: not found")
	ErrExists          = errors.New("blob: already exists")
	ErrConditionFailed = errors.New("blob: condition not met (ETag changed)")
	ErrLeased          = errors.New("blob: lease conflict")
	ErrInvalidRange    = errors.New("blob: invalid range")
	ErrInvalid         = errors.New("blob: invalid argument")
)

// Errorf builds a Store error: "blob: <op> <container>/<name>: <detail>:
// <sentinel>". Stores use it so that every implementation words errors the
// same way; detail may be "".
func Errorf(op, container, name string, sentinel error, detail string) error {
	where := container
	if name != "" {
		where += "/" + name
	}
	if detail != "" {
		return fmt.Errorf("blob: %s %s: %s: %w", op, where, detail, sentinel)
	}
	return fmt.Errorf("blob: %s %s: %w", op, where, sentinel)
}

// ExistsError is the create-only conflict: it is both ErrExists and
// ErrConditionFailed, so that an optimistic-concurrency loop checks one.
func ExistsError(op, container, name string) error {
	return fmt.Errorf("blob: %s %s/%s: if-none-match *: %w (%w)", op, container, name, ErrExists, ErrConditionFailed)
}

// NewLeaseID makes a lease ID (a GUID, as Azure requires) from r, so that a
// component drawing from its seeded runtime source gets the same IDs in
// every run.
func NewLeaseID(r *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// WritePagesSplit writes data at offset with as many WritePages calls of at
// most MaxPageWrite as it takes, in order, and returns the last ETag. It is
// not atomic: on an error, a prefix of data may have been written.
// opts.IfMatch applies to the first call; each later call is conditioned on
// the ETag the previous one returned, so a concurrent writer still makes it
// fail with ErrConditionFailed.
func WritePagesSplit(ctx context.Context, s Store, container, name string, offset int64, data []byte, opts WriteOptions) (string, error) {
	if len(data) == 0 {
		return "", Errorf("write pages", container, name, ErrInvalidRange, "empty page write")
	}
	var etag string
	for len(data) > 0 {
		n := min(len(data), MaxPageWrite)
		var err error
		etag, err = s.WritePages(ctx, container, name, offset, data[:n], opts)
		if err != nil {
			return "", err
		}
		if opts.IfMatch != "" {
			opts.IfMatch = etag
		}
		offset += int64(n)
		data = data[n:]
	}
	return etag, nil
}
