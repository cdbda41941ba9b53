package memfabric

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/compute"
)

// image is a disk's content: the allocated extents of the page blob it was
// imported from, sorted and disjoint; everything else reads as zeros.
type image struct {
	size    int64
	extents []extent
}

type extent struct {
	off  int64
	data []byte
}

// ReadAt implements io.ReaderAt.
func (im *image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("memfabric: negative offset %d", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := im.size - off; int64(n) > rest {
		n = int(rest)
	}
	clear(p[:n])
	end := off + int64(n)
	i := sort.Search(len(im.extents), func(i int) bool {
		e := im.extents[i]
		return e.off+int64(len(e.data)) > off
	})
	for ; i < len(im.extents) && im.extents[i].off < end; i++ {
		e := im.extents[i]
		lo, hi := max(off, e.off), min(end, e.off+int64(len(e.data)))
		copy(p[lo-off:hi-off], e.data[lo-e.off:hi-e.off])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// DataExtents implements blockdev.Sparse: the page blob's allocated
// extents within [off, off+n); the rest reads as zeros.
func (im *image) DataExtents(off, n int64) ([]blockdev.Extent, error) {
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("memfabric: extents of %d bytes at %d", n, off)
	}
	end := min(off+n, im.size)
	var out []blockdev.Extent
	i := sort.Search(len(im.extents), func(i int) bool {
		e := im.extents[i]
		return e.off+int64(len(e.data)) > off
	})
	for ; i < len(im.extents) && im.extents[i].off < end; i++ {
		e := im.extents[i]
		lo, hi := max(off, e.off), min(end, e.off+int64(len(e.data)))
		if k := len(out) - 1; k >= 0 && out[k].End() == lo {
			out[k].Len += hi - lo
			continue
		}
		out = append(out, blockdev.Extent{Off: lo, Len: hi - lo})
	}
	return out, nil
}

var _ blockdev.Sparse = (*image)(nil)

// importChunk is the most one Get reads while importing (the size of a
// page write, so a real account serves it in one response).
const importChunk = blob.MaxPageWrite

// importBlob reads a page blob's allocated ranges as they are now.
func (f *Fabric) importBlob(ctx context.Context, container, name string) (*image, error) {
	props, err := f.store.Properties(ctx, container, name)
	if err != nil {
		return nil, err
	}
	if props.Kind != blob.PageBlob {
		return nil, fmt.Errorf("%w: %s/%s is a %s, not a page blob", errNotPageBlob, container, name, props.Kind)
	}
	ranges, err := f.store.PageRanges(ctx, container, name, "")
	if err != nil {
		return nil, err
	}
	im := &image{size: props.Size}
	for _, r := range ranges {
		for off := r.Offset; off < r.End(); off += importChunk {
			n := min(importChunk, r.End()-off)
			data, _, err := f.store.Get(ctx, container, name, blob.ReadOptions{Offset: off, Length: n})
			if err != nil {
				return nil, err
			}
			im.extents = append(im.extents, extent{off: off, data: data})
		}
	}
	return im, nil
}

var errNotPageBlob = errors.New("not a page blob")

// BeginCreateDisk implements compute.Fabric. SizeBytes 0 takes the blob's
// size; a larger size (a multiple of 512 bytes) reads as zeros past the
// blob's end; a smaller one is ErrInvalid. A missing blob is ErrNotFound.
func (f *Fabric) BeginCreateDisk(ctx context.Context, spec compute.DiskSpec) (compute.Pending, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	defer f.mu.Unlock()
	if e := f.throttled(OpCreateDisk, spec.Name); e != nil {
		return "", e
	}
	ref := compute.Ref{Kind: compute.KindDisk, Group: spec.Group, Name: spec.Name}
	if e := checkName("disk", spec.Name); e != nil {
		return "", e
	}
	if e := f.needGroup(spec.Group); e != nil {
		return "", e
	}
	if f.disks[ref] != nil {
		return "", errExists(ref)
	}
	switch spec.OSType {
	case "", compute.Linux, compute.Windows:
	default:
		return "", errInvalid("disk %s: unknown OS type %q", ref, spec.OSType)
	}
	if spec.SizeBytes < 0 || spec.SizeBytes%blob.PageSize != 0 {
		return "", errInvalid("disk %s: size %d bytes is not a multiple of %d", ref, spec.SizeBytes, blob.PageSize)
	}
	im, err := f.importBlob(ctx, spec.SourceContainer, spec.SourceBlob)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return "", errNotFound(fmt.Sprintf("source blob %s/%s", spec.SourceContainer, spec.SourceBlob))
	case errors.Is(err, errNotPageBlob):
		return "", errInvalid("disk %s: %v", ref, err)
	case err != nil:
		return "", &compute.Error{Status: 500, Code: compute.CodeProvisionFailed, Message: fmt.Sprintf("disk %s: reading the source blob: %v", ref, err)}
	}
	if spec.SizeBytes > 0 {
		if spec.SizeBytes < im.size {
			return "", errInvalid("disk %s: size %d bytes is smaller than the source blob (%d bytes)", ref, spec.SizeBytes, im.size)
		}
		im.size = spec.SizeBytes
	}
	fail, async := f.failure(OpCreateDisk, spec.Name)
	if fail != nil && !async {
		return "", fail
	}
	d := &disk{Disk: compute.Disk{Ref: ref, SizeBytes: im.size, OSType: spec.OSType, Tags: cloneTags(spec.Tags)}, img: im}
	f.disks[ref] = d
	o := f.start(OpCreateDisk, ref, f.latency(f.opts.Latency.CreateDisk), func(context.Context) *compute.Error {
		d.busy = nil
		if fail != nil {
			delete(f.disks, ref)
		}
		return fail
	})
	d.busy = o
	return o.token, nil
}

// ReadDisk implements compute.Fabric. A range outside the disk is
// ErrInvalid; a disk whose import is not done yet, ErrConflict.
func (f *Fabric) ReadDisk(ctx context.Context, ref compute.Ref, off, n int64) ([]byte, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	defer f.mu.Unlock()
	d, e := f.disk(ref)
	if e != nil {
		return nil, e
	}
	if d.busy != nil && d.busy.kind == OpCreateDisk {
		return nil, errConflict("disk %s is still being created", ref)
	}
	if off < 0 || n < 0 || off+n > d.img.size {
		return nil, errInvalid("disk %s: range [%d, %d) is outside its %d bytes", ref, off, off+n, d.img.size)
	}
	buf := make([]byte, n)
	if _, err := d.img.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, err
	}
	return buf, nil
}

// disk looks a disk up.
func (f *Fabric) disk(ref compute.Ref) (*disk, *compute.Error) {
	if ref.Kind != compute.KindDisk {
		return nil, errInvalid("%s is not a disk", ref)
	}
	d := f.disks[ref]
	if d == nil {
		return nil, errNotFound(ref.String())
	}
	return d, nil
}

func (d *disk) view() compute.Disk {
	v := d.Disk
	v.Tags = cloneTags(d.Tags)
	return v
}
