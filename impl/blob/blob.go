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
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
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
}

// PageSize is the page blob unit: offsets and sizes are multiples of it.
const PageSize = 512

// MaxPageWrite is the most one WritePages call may write (Azure's limit).
const MaxPageWrite = 4 << 20

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

// CheckPageWrite returns ErrInvalidRange (with the reason) unless a
// WritePages of length bytes at offset is allowed on a blob of sizeBytes.
// Adapters call it before sending anything, because Azurite does not
// enforce these rules and real Azure does.
func CheckPageWrite(offset, length, sizeBytes int64) error {
	switch {
	case length == 0:
		return fmt.Errorf("empty page write: %w", ErrInvalidRange)
	case length > MaxPageWrite:
		return fmt.Errorf("page write of %d bytes exceeds %d per call (use WritePagesSplit): %w", length, MaxPageWrite, ErrInvalidRange)
	}
	return checkPageRange(offset, length, sizeBytes)
}

// CheckPageClear is CheckPageWrite for ClearPages: the same alignment and
// bounds, no size limit.
func CheckPageClear(offset, length, sizeBytes int64) error {
	if length == 0 {
		return fmt.Errorf("empty page clear: %w", ErrInvalidRange)
	}
	return checkPageRange(offset, length, sizeBytes)
}

func checkPageRange(offset, length, sizeBytes int64) error {
	switch {
	case offset < 0 || length < 0:
		return fmt.Errorf("negative offset %d or length %d: %w", offset, length, ErrInvalidRange)
	case offset%PageSize != 0:
		return fmt.Errorf("offset %d not a multiple of %d: %w", offset, PageSize, ErrInvalidRange)
	case length%PageSize != 0:
		return fmt.Errorf("length %d not a multiple of %d: %w", length, PageSize, ErrInvalidRange)
	case offset+length > sizeBytes:
		return fmt.Errorf("range [%d, %d) past the blob's end %d: %w", offset, offset+length, sizeBytes, ErrInvalidRange)
	}
	return nil
}

// CheckPageBlobSize returns ErrInvalidRange unless sizeBytes is a valid page
// blob size.
func CheckPageBlobSize(sizeBytes int64) error {
	if sizeBytes < 0 || sizeBytes%PageSize != 0 {
		return fmt.Errorf("page blob size %d not a non-negative multiple of %d: %w", sizeBytes, PageSize, ErrInvalidRange)
	}
	return nil
}

// CheckRead returns ErrInvalidRange unless opts selects a range of a blob of
// sizeBytes (see ReadOptions), and the range it selects.
func CheckRead(opts ReadOptions, sizeBytes int64) (Range, error) {
	switch {
	case opts.Offset < 0 || opts.Length < 0:
		return Range{}, fmt.Errorf("negative offset %d or length %d: %w", opts.Offset, opts.Length, ErrInvalidRange)
	case opts.Length == 0 && opts.Offset == 0:
		return Range{0, sizeBytes}, nil
	case opts.Length == 0 && opts.Offset >= sizeBytes:
		return Range{}, fmt.Errorf("offset %d at or past the blob's end %d: %w", opts.Offset, sizeBytes, ErrInvalidRange)
	case opts.Length == 0:
		return Range{opts.Offset, sizeBytes - opts.Offset}, nil
	case opts.Offset+opts.Length > sizeBytes:
		return Range{}, fmt.Errorf("range [%d, %d) past the blob's end %d: %w", opts.Offset, opts.Offset+opts.Length, sizeBytes, ErrInvalidRange)
	}
	return Range{opts.Offset, opts.Length}, nil
}

// CheckWriteOptions returns ErrInvalid for an IfNoneMatch other than "" or
// "*", or metadata with invalid keys.
func CheckWriteOptions(opts WriteOptions) error {
	if opts.IfNoneMatch != "" && opts.IfNoneMatch != "*" {
		return fmt.Errorf("if-none-match %q (only \"*\" is supported): %w", opts.IfNoneMatch, ErrInvalid)
	}
	return CheckMetadata(opts.Metadata)
}

// CheckMetadata returns ErrInvalid if a key of md is not a valid metadata
// key (ValidMetadataKey), or two keys differ only in case.
func CheckMetadata(md map[string]string) error {
	seen := make(map[string]bool, len(md))
	for k := range md {
		if !ValidMetadataKey(k) {
			return fmt.Errorf("metadata key %q is not a C# identifier: %w", k, ErrInvalid)
		}
		lk := strings.ToLower(k)
		if seen[lk] {
			return fmt.Errorf("metadata key %q given twice in different case: %w", k, ErrInvalid)
		}
		seen[lk] = true
	}
	return nil
}

// ValidMetadataKey reports whether k is an acceptable metadata key: an ASCII
// letter or underscore followed by letters, digits or underscores. (Azure
// takes any C# identifier; v2a restricts itself to ASCII.)
func ValidMetadataKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// NormalizeMetadata returns md with lower-case keys, or nil when md is
// empty, so that stores compare equal whatever case the server returned.
func NormalizeMetadata(md map[string]string) map[string]string {
	if len(md) == 0 {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		out[strings.ToLower(k)] = v
	}
	return out
}

// ValidContainerName reports whether name follows Azure's container naming
// rules: 3-63 characters, lower-case letters, digits and single hyphens,
// starting and ending with a letter or digit.
func ValidContainerName(name string) bool {
	if len(name) < 3 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(name)-1 && name[i-1] != '-':
		default:
			return false
		}
	}
	return true
}

// ValidBlobName reports whether name is an acceptable blob name: 1-1024
// bytes, not ending in '.' or '/', no control characters, no backslash
// (Azurite and Azure treat it differently).
func ValidBlobName(name string) bool {
	if name == "" || len(name) > 1024 || strings.HasSuffix(name, ".") || strings.HasSuffix(name, "/") {
		return false
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// CheckNames returns ErrInvalid if container or (when not "") name is not
// valid.
func CheckNames(container, name string) error {
	if !ValidContainerName(container) {
		return fmt.Errorf("container name %q (3-63 of a-z, 0-9, single '-'): %w", container, ErrInvalid)
	}
	if name != "" && !ValidBlobName(name) {
		return fmt.Errorf("blob name %q: %w", name, ErrInvalid)
	}
	return nil
}

// CheckLeaseDuration returns ErrInvalid unless d is 0 (infinite) or within
// [MinLeaseDuration, MaxLeaseDuration] in whole seconds.
func CheckLeaseDuration(d time.Duration) error {
	if d == 0 || (d >= MinLeaseDuration && d <= MaxLeaseDuration && d%time.Second == 0) {
		return nil
	}
	return fmt.Errorf("lease duration %v (0 for infinite, or 15s-60s in whole seconds): %w", d, ErrInvalid)
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

// MergeRanges sorts ranges by offset and merges overlapping or adjacent
// ones, dropping empty ones; stores use it so page range lists compare
// equal whatever way the server split them.
func MergeRanges(rs []Range) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range sortRanges(rs) {
		if r.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && r.Offset <= out[n-1].End() {
			if r.End() > out[n-1].End() {
				out[n-1].Length = r.End() - out[n-1].Offset
			}
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func sortRanges(rs []Range) []Range {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Range) int { return cmp.Compare(a.Offset, b.Offset) })
	return s
}
