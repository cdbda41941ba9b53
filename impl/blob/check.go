package blob

// The checks and normalisations below are for Store implementations, so
// that the adapter and the in-memory store refuse the same inputs with the
// same words.

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

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
