// Package blobtest is the conformance suite of blob.Store: every
// implementation (the azblob adapter against Azurite or Azure, the in-memory
// sim/memblob) must pass Run, which is what lets tests written against the
// fast in-memory store stand for the real one.
//
// Each subtest works in a container of its own, named after the subtest and
// the process, so that several runs can share one Azurite.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
)

// Run runs the conformance suite. newStore is called once per subtest; the
// stores it returns may share state (one Azurite account), since subtests
// use distinct containers.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	RunWith(t, newStore, Options{})
}

// Options adjust the suite for one store.
type Options struct {
	// Deviations names cases the store is known to fail where real Azure
	// Storage passes, each with the reason; those cases are skipped with
	// the reason in the log, so the deviation stays visible. A store of
	// v2a's own (memblob) never has any.
	Deviations map[string]string
}

// RunWith is Run with options.
func RunWith(t *testing.T, newStore func(t *testing.T) blob.Store, o Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store, c string)
	}{
		{"Containers", testContainers},
		{"PutGet", testPutGet},
		{"GetRange", testGetRange},
		{"List", testList},
		{"ConditionalWrites", testConditionalWrites},
		{"OptimisticCatalog", testOptimisticCatalog},
		{"Metadata", testMetadata},
		{"PageBlob", testPageBlob},
		{"PageRules", testPageRules},
		{"WritePagesSplit", testWritePagesSplit},
		{"Snapshots", testSnapshots},
		{"PageSnapshots", testPageSnapshots},
		{"Leases", testLeases},
		{"LeaseBreak", testLeaseBreak},
		{"ErrorMessages", testErrorMessages},
		{"Copy", testCopy},
		{"CopyApart", testCopyApart},
		{"CopyErrors", testCopyErrors},
		{"DeleteBatch", testDeleteBatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := o.Deviations[tc.name]; ok {
				t.Skipf("known deviation of this store from Azure Storage: %s", why)
			}
			s := newStore(t)
			c := ContainerName(t)
			ctx := context.Background()
			if err := s.CreateContainer(ctx, c); err != nil {
				t.Fatalf("CreateContainer(%s): %v", c, err)
			}
			t.Cleanup(func() { _ = s.DeleteContainer(context.Background(), c) })
			tc.fn(t, s, c)
		})
	}
}

var seq atomic.Int64

// ContainerName is a container name valid for Azure (3-63 characters of
// a-z, 0-9 and single hyphens) that no other test or concurrent test
// process uses: the test's name, the process ID and a counter.
func ContainerName(t *testing.T) string {
	var b strings.Builder
	dash := true
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	base := strings.Trim(b.String(), "-")
	suffix := fmt.Sprintf("-%d-%d", os.Getpid(), seq.Add(1))
	if max := 63 - len(suffix); len(base) > max {
		base = strings.TrimRight(base[len(base)-max:], "-")
		base = strings.TrimLeft(base, "-")
	}
	if base == "" {
		base = "t"
	}
	return base + suffix
}

// rangeList makes a []blob.Range from offset, length pairs.
func rangeList(offLen ...int64) []blob.Range {
	var rs []blob.Range
	for i := 0; i+1 < len(offLen); i += 2 {
		rs = append(rs, blob.Range{Offset: offLen[i], Length: offLen[i+1]})
	}
	return rs
}

// wantErr fails t unless err wraps want (or is nil when want is nil).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func must[T any](t *testing.T, what string) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func check(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// pattern is len bytes that differ from page to page and from seed to seed,
// so that a misplaced page shows.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/blob.PageSize)*7 + byte(i%251)
	}
	return b
}

func getData(t *testing.T, s blob.Store, c, name string, opts blob.ReadOptions) []byte {
	t.Helper()
	data, _, err := s.Get(context.Background(), c, name, opts)
	if err != nil {
		t.Fatalf("Get(%s, %+v): %v", name, opts, err)
	}
	return data
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testContainers(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	wantErr(t, "CreateContainer again (idempotent)", s.CreateContainer(ctx, c), nil)
	must[string](t, "Put")(s.Put(ctx, c, "x", []byte("x"), blob.WriteOptions{}))

	other := c[:len(c)-1] + "x"
	if len(c) > 60 {
		other = "z" + c[1:]
	}
	wantErr(t, "DeleteContainer missing", s.DeleteContainer(ctx, other), blob.ErrNotFound)
	_, err := s.List(ctx, other, "")
	wantErr(t, "List missing container", err, blob.ErrNotFound)
	_, err = s.Put(ctx, other, "x", []byte("x"), blob.WriteOptions{})
	wantErr(t, "Put into missing container", err, blob.ErrNotFound)
	_, _, err = s.Get(ctx, other, "x", blob.ReadOptions{})
	wantErr(t, "Get from missing container", err, blob.ErrNotFound)

	for _, bad := range []string{"ab", "Upper", "a--b", "-ab", "ab-", "a_b", strings.Repeat("a", 64)} {
		wantErr(t, "CreateContainer("+bad+")", s.CreateContainer(ctx, bad), blob.ErrInvalid)
	}

	check(t, "DeleteContainer", s.DeleteContainer(ctx, c))
	_, _, err = s.Get(ctx, c, "x", blob.ReadOptions{})
	wantErr(t, "Get after DeleteContainer", err, blob.ErrNotFound)
	wantErr(t, "DeleteContainer twice", s.DeleteContainer(ctx, c), blob.ErrNotFound)
}

func testPutGet(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	data := pattern(1, 3000)
	e1 := must[string](t, "Put")(s.Put(ctx, c, "dir/a", data, blob.WriteOptions{}))
	if e1 == "" {
		t.Fatal("Put returned an empty ETag")
	}
	got, p, err := s.Get(ctx, c, "dir/a", blob.ReadOptions{})
	check(t, "Get", err)
	sameBytes(t, "Get", got, data)
	if diff := cmp.Diff(blob.Props{Kind: blob.BlockBlob, Size: 3000, ETag: e1}, p); diff != "" {
		t.Errorf("Get props (-want +got):\n%s", diff)
	}
	p2 := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "dir/a"))
	if diff := cmp.Diff(p, p2); diff != "" {
		t.Errorf("Properties differ from Get's (-get +properties):\n%s", diff)
	}

	e2 := must[string](t, "Put overwrite")(s.Put(ctx, c, "dir/a", []byte("short"), blob.WriteOptions{}))
	if e2 == e1 {
		t.Errorf("overwrite kept ETag %s", e1)
	}
	sameBytes(t, "Get after overwrite", getData(t, s, c, "dir/a", blob.ReadOptions{}), []byte("short"))

	must[string](t, "Put empty")(s.Put(ctx, c, "empty", nil, blob.WriteOptions{}))
	got, p, err = s.Get(ctx, c, "empty", blob.ReadOptions{})
	check(t, "Get empty", err)
	if len(got) != 0 || p.Size != 0 {
		t.Errorf("Get empty: %d bytes, size %d", len(got), p.Size)
	}

	_, _, err = s.Get(ctx, c, "missing", blob.ReadOptions{})
	wantErr(t, "Get missing", err, blob.ErrNotFound)
	_, err = s.Properties(ctx, c, "missing")
	wantErr(t, "Properties missing", err, blob.ErrNotFound)

	check(t, "Delete", s.Delete(ctx, c, "dir/a", blob.WriteOptions{}))
	_, _, err = s.Get(ctx, c, "dir/a", blob.ReadOptions{})
	wantErr(t, "Get deleted", err, blob.ErrNotFound)
	wantErr(t, "Delete missing", s.Delete(ctx, c, "dir/a", blob.WriteOptions{}), blob.ErrNotFound)

	_, err = s.Put(ctx, c, "bad/", []byte("x"), blob.WriteOptions{})
	wantErr(t, "Put with a name ending in /", err, blob.ErrInvalid)
}

func testGetRange(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	data := pattern(3, 1000)
	must[string](t, "Put")(s.Put(ctx, c, "b", data, blob.WriteOptions{}))
	tests := []struct {
		opts blob.ReadOptions
		want []byte
		err  error
	}{
		{blob.ReadOptions{}, data, nil},
		{blob.ReadOptions{Offset: 10, Length: 20}, data[10:30], nil},
		{blob.ReadOptions{Offset: 990}, data[990:], nil},
		{blob.ReadOptions{Offset: 999, Length: 1}, data[999:], nil},
		{blob.ReadOptions{Offset: 0, Length: 1000}, data, nil},
		{blob.ReadOptions{Offset: 1000}, nil, blob.ErrInvalidRange},
		{blob.ReadOptions{Offset: 2000, Length: 5}, nil, blob.ErrInvalidRange},
		{blob.ReadOptions{Offset: 995, Length: 10}, nil, blob.ErrInvalidRange},
		{blob.ReadOptions{Offset: -1, Length: 10}, nil, blob.ErrInvalidRange},
	}
	for _, tc := range tests {
		got, p, err := s.Get(ctx, c, "b", tc.opts)
		what := fmt.Sprintf("Get(%+v)", tc.opts)
		wantErr(t, what, err, tc.err)
		if err == nil {
			sameBytes(t, what, got, tc.want)
			if p.Size != int64(len(data)) {
				t.Errorf("%s: props size %d, want the whole blob's %d", what, p.Size, len(data))
			}
		}
	}
}

func testList(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	// Put in an order that is not the listing order; upper case and
	// punctuation sort by byte.
	names := []string{"log/b", "log/a/2", "log-x", "Log/z", "log/a/10", "other", "log/a/1"}
	etags := map[string]string{}
	for i, n := range names {
		etags[n] = must[string](t, "Put "+n)(s.Put(ctx, c, n, make([]byte, i), blob.WriteOptions{Metadata: map[string]string{"n": n}}))
	}
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "log/disk", 1024, blob.WriteOptions{}))
	must[string](t, "Snapshot")(s.Snapshot(ctx, c, "log/b", nil))

	got := must[[]blob.Item](t, "List log/")(s.List(ctx, c, "log/"))
	var gotNames []string
	for _, it := range got {
		gotNames = append(gotNames, it.Name)
		if it.Kind == blob.BlockBlob {
			want := blob.Props{Kind: blob.BlockBlob, Size: int64(indexOf(names, it.Name)), ETag: etags[it.Name], Metadata: map[string]string{"n": it.Name}}
			if diff := cmp.Diff(want, it.Props); diff != "" {
				t.Errorf("List item %s (-want +got):\n%s", it.Name, diff)
			}
		}
	}
	if diff := cmp.Diff([]string{"log/a/1", "log/a/10", "log/a/2", "log/b", "log/disk"}, gotNames); diff != "" {
		t.Errorf("List(log/) names (-want +got):\n%s", diff)
	}
	if k := got[len(got)-1].Kind; k != blob.PageBlob {
		t.Errorf("List: log/disk kind %s, want PageBlob", k)
	}

	all := must[[]blob.Item](t, "List all")(s.List(ctx, c, ""))
	gotNames = nil
	for _, it := range all {
		gotNames = append(gotNames, it.Name)
	}
	want := []string{"Log/z", "log-x", "log/a/1", "log/a/10", "log/a/2", "log/b", "log/disk", "other"}
	if diff := cmp.Diff(want, gotNames); diff != "" {
		t.Errorf("List() names (-want +got):\n%s", diff)
	}
	none := must[[]blob.Item](t, "List nothing")(s.List(ctx, c, "zzz"))
	if len(none) != 0 {
		t.Errorf("List(zzz) = %v, want nothing", none)
	}
}

func indexOf(names []string, n string) int {
	for i, x := range names {
		if x == n {
			return i
		}
	}
	return -1
}

func testConditionalWrites(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	create := blob.WriteOptions{IfNoneMatch: "*"}
	e1 := must[string](t, "create-only Put")(s.Put(ctx, c, "cat", []byte("v1"), create))

	_, err := s.Put(ctx, c, "cat", []byte("v2"), create)
	wantErr(t, "create-only Put of an existing blob", err, blob.ErrExists)
	wantErr(t, "create-only Put of an existing blob", err, blob.ErrConditionFailed)
	sameBytes(t, "after refused create", getData(t, s, c, "cat", blob.ReadOptions{}), []byte("v1"))

	e2 := must[string](t, "IfMatch current")(s.Put(ctx, c, "cat", []byte("v2"), blob.WriteOptions{IfMatch: e1}))
	_, err = s.Put(ctx, c, "cat", []byte("v3"), blob.WriteOptions{IfMatch: e1})
	wantErr(t, "Put IfMatch stale", err, blob.ErrConditionFailed)
	sameBytes(t, "after refused stale put", getData(t, s, c, "cat", blob.ReadOptions{}), []byte("v2"))

	_, err = s.Put(ctx, c, "nothing", []byte("x"), blob.WriteOptions{IfMatch: e2})
	wantErr(t, "Put IfMatch on a missing blob", err, blob.ErrConditionFailed)
	_, _, err = s.Get(ctx, c, "nothing", blob.ReadOptions{})
	wantErr(t, "Get after refused IfMatch create", err, blob.ErrNotFound)

	for _, w := range []struct {
		name string
		fn   func() error
	}{
		{"SetMetadata", func() error {
			_, err := s.SetMetadata(ctx, c, "nothing", nil, blob.WriteOptions{IfMatch: e2})
			return err
		}},
		{"Delete", func() error { return s.Delete(ctx, c, "nothing", blob.WriteOptions{IfMatch: e2}) }},
		{"CreatePageBlob", func() error {
			_, err := s.CreatePageBlob(ctx, c, "nothing", 512, blob.WriteOptions{IfMatch: e2})
			return err
		}},
		{"WritePages", func() error {
			_, err := s.WritePages(ctx, c, "nothing", 0, make([]byte, 512), blob.WriteOptions{IfMatch: e2})
			return err
		}},
	} {
		wantErr(t, w.name+" IfMatch on a missing blob", w.fn(), blob.ErrConditionFailed)
	}

	_, err = s.SetMetadata(ctx, c, "cat", map[string]string{"k": "v"}, blob.WriteOptions{IfMatch: e1})
	wantErr(t, "SetMetadata IfMatch stale", err, blob.ErrConditionFailed)
	wantErr(t, "Delete IfMatch stale", s.Delete(ctx, c, "cat", blob.WriteOptions{IfMatch: e1}), blob.ErrConditionFailed)

	_, err = s.Put(ctx, c, "cat", []byte("x"), blob.WriteOptions{IfNoneMatch: "etag"})
	wantErr(t, "IfNoneMatch other than *", err, blob.ErrInvalid)

	// Page blob writes honour conditions too.
	pe := must[string](t, "CreatePageBlob create-only")(s.CreatePageBlob(ctx, c, "disk", 2048, create))
	_, err = s.CreatePageBlob(ctx, c, "disk", 2048, create)
	wantErr(t, "create-only CreatePageBlob of an existing blob", err, blob.ErrExists)
	pe2 := must[string](t, "WritePages IfMatch")(s.WritePages(ctx, c, "disk", 0, pattern(1, 512), blob.WriteOptions{IfMatch: pe}))
	_, err = s.WritePages(ctx, c, "disk", 512, pattern(2, 512), blob.WriteOptions{IfMatch: pe})
	wantErr(t, "WritePages IfMatch stale", err, blob.ErrConditionFailed)
	_, err = s.ClearPages(ctx, c, "disk", 0, 512, blob.WriteOptions{IfMatch: pe})
	wantErr(t, "ClearPages IfMatch stale", err, blob.ErrConditionFailed)
	_, err = s.Resize(ctx, c, "disk", 4096, blob.WriteOptions{IfMatch: pe})
	wantErr(t, "Resize IfMatch stale", err, blob.ErrConditionFailed)
	must[string](t, "Resize IfMatch current")(s.Resize(ctx, c, "disk", 4096, blob.WriteOptions{IfMatch: pe2}))

	check(t, "Delete IfMatch current", s.Delete(ctx, c, "cat", blob.WriteOptions{IfMatch: e2}))
}

// testOptimisticCatalog is the read-modify-write loop a catalog uses: two
// writers read the same version, the first to write wins, the second is
// refused and succeeds after re-reading.
func testOptimisticCatalog(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	must[string](t, "create")(s.Put(ctx, c, "catalog", []byte("0"), blob.WriteOptions{IfNoneMatch: "*"}))
	read := func() ([]byte, string) {
		d, p, err := s.Get(ctx, c, "catalog", blob.ReadOptions{})
		check(t, "Get catalog", err)
		return d, p.ETag
	}
	dA, eA := read()
	dB, eB := read()
	must[string](t, "writer A")(s.Put(ctx, c, "catalog", append(dA, 'a'), blob.WriteOptions{IfMatch: eA}))
	_, err := s.Put(ctx, c, "catalog", append(dB, 'b'), blob.WriteOptions{IfMatch: eB})
	wantErr(t, "writer B with the version A replaced", err, blob.ErrConditionFailed)
	dB, eB = read()
	must[string](t, "writer B retry")(s.Put(ctx, c, "catalog", append(dB, 'b'), blob.WriteOptions{IfMatch: eB}))
	got, _ := read()
	sameBytes(t, "catalog", got, []byte("0ab"))
}

func testMetadata(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	md := map[string]string{"RecoveryPoint": "rp-7", "kind": "crash", "Vm_Id": "VM-Mixed Case value"}
	want := map[string]string{"recoverypoint": "rp-7", "kind": "crash", "vm_id": "VM-Mixed Case value"}
	must[string](t, "Put")(s.Put(ctx, c, "b", []byte("x"), blob.WriteOptions{Metadata: md}))
	p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b"))
	if diff := cmp.Diff(want, p.Metadata); diff != "" {
		t.Errorf("Properties metadata (-want +got):\n%s", diff)
	}
	_, p, err := s.Get(ctx, c, "b", blob.ReadOptions{})
	check(t, "Get", err)
	if diff := cmp.Diff(want, p.Metadata); diff != "" {
		t.Errorf("Get metadata (-want +got):\n%s", diff)
	}
	items := must[[]blob.Item](t, "List")(s.List(ctx, c, ""))
	if len(items) != 1 {
		t.Fatalf("List: %d items, want 1", len(items))
	}
	if diff := cmp.Diff(want, items[0].Metadata); diff != "" {
		t.Errorf("List metadata (-want +got):\n%s", diff)
	}

	e0 := p.ETag
	e1 := must[string](t, "SetMetadata")(s.SetMetadata(ctx, c, "b", map[string]string{"Only": "one"}, blob.WriteOptions{}))
	if e1 == e0 {
		t.Errorf("SetMetadata kept ETag %s", e0)
	}
	p = must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b"))
	if diff := cmp.Diff(map[string]string{"only": "one"}, p.Metadata); diff != "" {
		t.Errorf("metadata after SetMetadata (-want +got):\n%s", diff)
	}
	sameBytes(t, "data after SetMetadata", getData(t, s, c, "b", blob.ReadOptions{}), []byte("x"))
	must[string](t, "SetMetadata nil")(s.SetMetadata(ctx, c, "b", nil, blob.WriteOptions{}))
	p = must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b"))
	if p.Metadata != nil {
		t.Errorf("metadata after clearing: %v, want nil", p.Metadata)
	}
	must[string](t, "Put replaces metadata")(s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{Metadata: map[string]string{"a": "1"}}))
	must[string](t, "Put without metadata")(s.Put(ctx, c, "b", []byte("z"), blob.WriteOptions{}))
	p = must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b"))
	if p.Metadata != nil {
		t.Errorf("metadata after Put without any: %v, want nil", p.Metadata)
	}

	_, err = s.SetMetadata(ctx, c, "missing", map[string]string{"a": "1"}, blob.WriteOptions{})
	wantErr(t, "SetMetadata missing", err, blob.ErrNotFound)
	for _, bad := range []string{"1abc", "a-b", "", "a b"} {
		_, err = s.SetMetadata(ctx, c, "b", map[string]string{bad: "v"}, blob.WriteOptions{})
		wantErr(t, fmt.Sprintf("SetMetadata key %q", bad), err, blob.ErrInvalid)
	}
	_, err = s.Put(ctx, c, "b", nil, blob.WriteOptions{Metadata: map[string]string{"Key": "1", "key": "2"}})
	wantErr(t, "Put with keys differing in case", err, blob.ErrInvalid)
}

func testPageBlob(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 8 * blob.PageSize
	e0 := must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{Metadata: map[string]string{"Disk": "0"}}))
	p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "disk"))
	if diff := cmp.Diff(blob.Props{Kind: blob.PageBlob, Size: size, ETag: e0, Metadata: map[string]string{"disk": "0"}}, p); diff != "" {
		t.Errorf("new page blob props (-want +got):\n%s", diff)
	}
	sameBytes(t, "new page blob", getData(t, s, c, "disk", blob.ReadOptions{}), make([]byte, size))
	ranges := func() []blob.Range {
		t.Helper()
		return must[[]blob.Range](t, "PageRanges")(s.PageRanges(ctx, c, "disk", ""))
	}
	if r := ranges(); len(r) != 0 {
		t.Errorf("new page blob has ranges %v", r)
	}

	want := make([]byte, size)
	write := func(off int64, data []byte) {
		t.Helper()
		e := must[string](t, "WritePages")(s.WritePages(ctx, c, "disk", off, data, blob.WriteOptions{}))
		if e == "" {
			t.Fatal("WritePages returned an empty ETag")
		}
		copy(want[off:], data)
	}
	write(512, pattern(1, 512))
	write(1024, pattern(2, 1024))
	write(3584, make([]byte, 512)) // zeros allocate
	sameBytes(t, "after writes", getData(t, s, c, "disk", blob.ReadOptions{}), want)
	if diff := cmp.Diff(rangeList(512, 1536, 3584, 512), ranges()); diff != "" {
		t.Errorf("ranges after writes (-want +got):\n%s", diff)
	}
	sameBytes(t, "range read", getData(t, s, c, "disk", blob.ReadOptions{Offset: 1024, Length: 1024}), want[1024:2048])

	must[string](t, "ClearPages")(s.ClearPages(ctx, c, "disk", 1024, 512, blob.WriteOptions{}))
	copy(want[1024:1536], make([]byte, 512))
	sameBytes(t, "after clear", getData(t, s, c, "disk", blob.ReadOptions{}), want)
	if diff := cmp.Diff(rangeList(512, 512, 1536, 512, 3584, 512), ranges()); diff != "" {
		t.Errorf("ranges after clear (-want +got):\n%s", diff)
	}

	must[string](t, "Resize grow")(s.Resize(ctx, c, "disk", 2*size, blob.WriteOptions{}))
	want = append(want, make([]byte, size)...)
	sameBytes(t, "after grow", getData(t, s, c, "disk", blob.ReadOptions{}), want)
	write(2*size-512, pattern(9, 512))
	if diff := cmp.Diff(rangeList(512, 512, 1536, 512, 3584, 512, 2*size-512, 512), ranges()); diff != "" {
		t.Errorf("ranges after grow (-want +got):\n%s", diff)
	}

	must[string](t, "Resize shrink")(s.Resize(ctx, c, "disk", 1536, blob.WriteOptions{}))
	want = want[:1536]
	sameBytes(t, "after shrink", getData(t, s, c, "disk", blob.ReadOptions{}), want)
	if diff := cmp.Diff(rangeList(512, 512), ranges()); diff != "" {
		t.Errorf("ranges after shrink (-want +got):\n%s", diff)
	}
	must[string](t, "Resize grow after shrink")(s.Resize(ctx, c, "disk", 2048, blob.WriteOptions{}))
	sameBytes(t, "shrunk pages come back zero", getData(t, s, c, "disk", blob.ReadOptions{Offset: 1536}), make([]byte, 512))

	_, err := s.WritePages(ctx, c, "missing", 0, make([]byte, 512), blob.WriteOptions{})
	wantErr(t, "WritePages missing", err, blob.ErrNotFound)
	_, err = s.PageRanges(ctx, c, "missing", "")
	wantErr(t, "PageRanges missing", err, blob.ErrNotFound)
	_, err = s.Resize(ctx, c, "missing", 512, blob.WriteOptions{})
	wantErr(t, "Resize missing", err, blob.ErrNotFound)
	_, err = s.ClearPages(ctx, c, "missing", 0, 512, blob.WriteOptions{})
	wantErr(t, "ClearPages missing", err, blob.ErrNotFound)
}

func testPageRules(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 16 << 20
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{}))
	must[string](t, "WritePages")(s.WritePages(ctx, c, "disk", 0, pattern(5, 4096), blob.WriteOptions{}))
	writes := []struct {
		name   string
		offset int64
		length int
	}{
		{"unaligned offset", 100, 512},
		{"unaligned length", 0, 1000},
		{"empty", 0, 0},
		{"over 4 MiB", 0, blob.MaxPageWrite + blob.PageSize},
		{"past the end", size - 512, 1024},
		{"at the end", size, 512},
		{"negative offset", -512, 512},
	}
	for _, w := range writes {
		_, err := s.WritePages(ctx, c, "disk", w.offset, pattern(7, w.length), blob.WriteOptions{})
		wantErr(t, "WritePages "+w.name, err, blob.ErrInvalidRange)
	}
	// Exactly 4 MiB is allowed.
	must[string](t, "WritePages 4 MiB")(s.WritePages(ctx, c, "disk", size-blob.MaxPageWrite, pattern(8, blob.MaxPageWrite), blob.WriteOptions{}))
	sameBytes(t, "refused writes left the data alone", getData(t, s, c, "disk", blob.ReadOptions{Length: 4096}), pattern(5, 4096))

	clears := []struct {
		name           string
		offset, length int64
	}{
		{"unaligned offset", 256, 512},
		{"unaligned length", 0, 700},
		{"empty", 0, 0},
		{"past the end", size - 512, 1024},
	}
	for _, cl := range clears {
		_, err := s.ClearPages(ctx, c, "disk", cl.offset, cl.length, blob.WriteOptions{})
		wantErr(t, "ClearPages "+cl.name, err, blob.ErrInvalidRange)
	}
	// Clearing has no per-call limit.
	must[string](t, "ClearPages 8 MiB")(s.ClearPages(ctx, c, "disk", size-8<<20, 8<<20, blob.WriteOptions{}))

	_, err := s.CreatePageBlob(ctx, c, "odd", 1000, blob.WriteOptions{})
	wantErr(t, "CreatePageBlob unaligned size", err, blob.ErrInvalidRange)
	_, err = s.Resize(ctx, c, "disk", 1000, blob.WriteOptions{})
	wantErr(t, "Resize unaligned size", err, blob.ErrInvalidRange)

	must[string](t, "Put block blob")(s.Put(ctx, c, "block", []byte("x"), blob.WriteOptions{}))
	_, err = s.WritePages(ctx, c, "block", 0, make([]byte, 512), blob.WriteOptions{})
	wantErr(t, "WritePages on a block blob", err, blob.ErrInvalid)
}

func testWritePagesSplit(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 10 << 20
	e := must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{}))
	data := pattern(4, 2*blob.MaxPageWrite+3*blob.PageSize)
	e2 := must[string](t, "WritePagesSplit")(blob.WritePagesSplit(ctx, s, c, "disk", blob.PageSize, data, blob.WriteOptions{IfMatch: e}))
	sameBytes(t, "after split write", getData(t, s, c, "disk", blob.ReadOptions{Offset: blob.PageSize, Length: int64(len(data))}), data)
	if diff := cmp.Diff(rangeList(blob.PageSize, int64(len(data))), must[[]blob.Range](t, "PageRanges")(s.PageRanges(ctx, c, "disk", ""))); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "disk"))
	if p.ETag != e2 {
		t.Errorf("WritePagesSplit returned ETag %s, blob has %s", e2, p.ETag)
	}
	_, err := blob.WritePagesSplit(ctx, s, c, "disk", 0, data, blob.WriteOptions{IfMatch: e})
	wantErr(t, "WritePagesSplit IfMatch stale", err, blob.ErrConditionFailed)
}

func testSnapshots(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	must[string](t, "Put v1")(s.Put(ctx, c, "b", []byte("version 1"), blob.WriteOptions{Metadata: map[string]string{"v": "1"}}))
	s1 := must[string](t, "Snapshot 1")(s.Snapshot(ctx, c, "b", nil))
	must[string](t, "Put v2")(s.Put(ctx, c, "b", []byte("version two"), blob.WriteOptions{Metadata: map[string]string{"v": "2"}}))
	s2 := must[string](t, "Snapshot 2")(s.Snapshot(ctx, c, "b", map[string]string{"RecoveryPoint": "rp2"}))
	must[string](t, "Put v3")(s.Put(ctx, c, "b", []byte("v3"), blob.WriteOptions{}))
	if s1 == "" || s1 == s2 {
		t.Fatalf("snapshot ids %q and %q", s1, s2)
	}

	sameBytes(t, "snapshot 1 after the base changed", getData(t, s, c, "b", blob.ReadOptions{Snapshot: s1}), []byte("version 1"))
	sameBytes(t, "snapshot 2 range", getData(t, s, c, "b", blob.ReadOptions{Snapshot: s2, Offset: 8, Length: 3}), []byte("two"))
	sameBytes(t, "base", getData(t, s, c, "b", blob.ReadOptions{}), []byte("v3"))
	_, p, err := s.Get(ctx, c, "b", blob.ReadOptions{Snapshot: s1})
	check(t, "Get snapshot", err)
	if diff := cmp.Diff(map[string]string{"v": "1"}, p.Metadata); diff != "" {
		t.Errorf("snapshot 1 metadata (-want +got):\n%s", diff)
	}

	list := must[[]blob.Snapshot](t, "Snapshots")(s.Snapshots(ctx, c, "b"))
	want := []blob.Snapshot{
		{ID: s1, Size: 9, Metadata: map[string]string{"v": "1"}},
		{ID: s2, Size: 11, Metadata: map[string]string{"recoverypoint": "rp2"}},
	}
	if diff := cmp.Diff(want, list); diff != "" {
		t.Errorf("Snapshots (-want +got):\n%s", diff)
	}
	if !(s1 < s2) {
		t.Errorf("snapshot ids do not sort in creation order: %q, %q", s1, s2)
	}
	must[string](t, "Put b2")(s.Put(ctx, c, "b2", []byte("other"), blob.WriteOptions{}))
	if l := must[[]blob.Snapshot](t, "Snapshots b2")(s.Snapshots(ctx, c, "b2")); len(l) != 0 {
		t.Errorf("Snapshots(b2) = %v, want none (b's snapshots must not leak by prefix)", l)
	}

	check(t, "DeleteSnapshot 1", s.DeleteSnapshot(ctx, c, "b", s1))
	_, _, err = s.Get(ctx, c, "b", blob.ReadOptions{Snapshot: s1})
	wantErr(t, "Get deleted snapshot", err, blob.ErrNotFound)
	wantErr(t, "DeleteSnapshot twice", s.DeleteSnapshot(ctx, c, "b", s1), blob.ErrNotFound)
	list = must[[]blob.Snapshot](t, "Snapshots")(s.Snapshots(ctx, c, "b"))
	if diff := cmp.Diff(want[1:], list); diff != "" {
		t.Errorf("Snapshots after delete (-want +got):\n%s", diff)
	}

	_, err = s.Snapshot(ctx, c, "missing", nil)
	wantErr(t, "Snapshot missing", err, blob.ErrNotFound)
	_, err = s.Snapshots(ctx, c, "missing")
	wantErr(t, "Snapshots missing", err, blob.ErrNotFound)

	check(t, "Delete base", s.Delete(ctx, c, "b", blob.WriteOptions{}))
	_, _, err = s.Get(ctx, c, "b", blob.ReadOptions{Snapshot: s2})
	wantErr(t, "Get snapshot after its base was deleted", err, blob.ErrNotFound)
}

func testPageSnapshots(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 4 * blob.PageSize
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{}))
	old := pattern(1, 1024)
	must[string](t, "WritePages")(s.WritePages(ctx, c, "disk", 0, old, blob.WriteOptions{}))
	rp := must[string](t, "Snapshot")(s.Snapshot(ctx, c, "disk", nil))

	must[string](t, "WritePages over")(s.WritePages(ctx, c, "disk", 512, pattern(2, 1024), blob.WriteOptions{}))
	must[string](t, "ClearPages")(s.ClearPages(ctx, c, "disk", 0, 512, blob.WriteOptions{}))
	must[string](t, "Resize")(s.Resize(ctx, c, "disk", 2*size, blob.WriteOptions{}))

	wantOld := append(append([]byte(nil), old...), make([]byte, size-1024)...)
	sameBytes(t, "snapshot after the base changed", getData(t, s, c, "disk", blob.ReadOptions{Snapshot: rp}), wantOld)
	sameBytes(t, "snapshot range", getData(t, s, c, "disk", blob.ReadOptions{Snapshot: rp, Offset: 512, Length: 512}), old[512:])
	_, p, err := s.Get(ctx, c, "disk", blob.ReadOptions{Snapshot: rp, Offset: 512, Length: 512})
	check(t, "Get snapshot range", err)
	if p.Size != size || p.Kind != blob.PageBlob {
		t.Errorf("snapshot props: size %d kind %s, want %d PageBlob", p.Size, p.Kind, size)
	}
	if diff := cmp.Diff(rangeList(0, 1024), must[[]blob.Range](t, "PageRanges snapshot")(s.PageRanges(ctx, c, "disk", rp))); diff != "" {
		t.Errorf("snapshot ranges (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(rangeList(512, 1024), must[[]blob.Range](t, "PageRanges base")(s.PageRanges(ctx, c, "disk", ""))); diff != "" {
		t.Errorf("base ranges (-want +got):\n%s", diff)
	}
}

func testLeases(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const idA, idB = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	must[string](t, "Put")(s.Put(ctx, c, "b", []byte("x"), blob.WriteOptions{}))
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", 2048, blob.WriteOptions{}))

	wantErr(t, "AcquireLease", s.AcquireLease(ctx, c, "b", idA, 0), nil)
	if p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b")); !p.Leased {
		t.Errorf("Properties after acquire: Leased false")
	}
	wantErr(t, "AcquireLease again, same id", s.AcquireLease(ctx, c, "b", idA, 0), nil)
	wantErr(t, "AcquireLease by another id", s.AcquireLease(ctx, c, "b", idB, 0), blob.ErrLeased)

	_, err := s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{})
	wantErr(t, "Put leased without id", err, blob.ErrLeased)
	_, err = s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{LeaseID: idB})
	wantErr(t, "Put leased with the wrong id", err, blob.ErrLeased)
	_, err = s.SetMetadata(ctx, c, "b", map[string]string{"a": "b"}, blob.WriteOptions{})
	wantErr(t, "SetMetadata leased without id", err, blob.ErrLeased)
	wantErr(t, "Delete leased without id", s.Delete(ctx, c, "b", blob.WriteOptions{}), blob.ErrLeased)
	must[string](t, "Put with the lease")(s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{LeaseID: idA}))
	sameBytes(t, "after leased put", getData(t, s, c, "b", blob.ReadOptions{}), []byte("y"))
	// A lease survives the Put that replaced the blob's content.
	if p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b")); !p.Leased {
		t.Errorf("Properties after leased put: Leased false")
	}
	must[string](t, "Snapshot of a leased blob without the id")(s.Snapshot(ctx, c, "b", nil))

	wantErr(t, "RenewLease", s.RenewLease(ctx, c, "b", idA), nil)
	wantErr(t, "RenewLease wrong id", s.RenewLease(ctx, c, "b", idB), blob.ErrLeased)
	wantErr(t, "ReleaseLease wrong id", s.ReleaseLease(ctx, c, "b", idB), blob.ErrLeased)
	wantErr(t, "ReleaseLease", s.ReleaseLease(ctx, c, "b", idA), nil)
	if p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b")); p.Leased {
		t.Errorf("Properties after release: Leased true")
	}
	_, err = s.Put(ctx, c, "b", []byte("z"), blob.WriteOptions{LeaseID: idA})
	wantErr(t, "Put with a released lease id", err, blob.ErrLeased)
	must[string](t, "Put after release")(s.Put(ctx, c, "b", []byte("z"), blob.WriteOptions{}))
	wantErr(t, "AcquireLease by B after release (15 s)", s.AcquireLease(ctx, c, "b", idB, 15*time.Second), nil)
	wantErr(t, "Delete with the lease", s.Delete(ctx, c, "b", blob.WriteOptions{LeaseID: idB}), nil)

	// Page writes need the lease too.
	wantErr(t, "AcquireLease disk", s.AcquireLease(ctx, c, "disk", idA, 60*time.Second), nil)
	for _, w := range []struct {
		name string
		fn   func(o blob.WriteOptions) error
	}{
		{"WritePages", func(o blob.WriteOptions) error {
			_, err := s.WritePages(ctx, c, "disk", 0, make([]byte, 512), o)
			return err
		}},
		{"ClearPages", func(o blob.WriteOptions) error { _, err := s.ClearPages(ctx, c, "disk", 0, 512, o); return err }},
		{"Resize", func(o blob.WriteOptions) error { _, err := s.Resize(ctx, c, "disk", 4096, o); return err }},
		{"CreatePageBlob", func(o blob.WriteOptions) error { _, err := s.CreatePageBlob(ctx, c, "disk", 4096, o); return err }},
	} {
		wantErr(t, w.name+" without the lease", w.fn(blob.WriteOptions{}), blob.ErrLeased)
		wantErr(t, w.name+" with the wrong lease", w.fn(blob.WriteOptions{LeaseID: idB}), blob.ErrLeased)
		wantErr(t, w.name+" with the lease", w.fn(blob.WriteOptions{LeaseID: idA}), nil)
	}

	wantErr(t, "AcquireLease missing", s.AcquireLease(ctx, c, "missing", idA, 0), blob.ErrNotFound)
	wantErr(t, "AcquireLease 10s", s.AcquireLease(ctx, c, "disk", idA, 10*time.Second), blob.ErrInvalid)
	wantErr(t, "AcquireLease empty id", s.AcquireLease(ctx, c, "disk", "", 0), blob.ErrInvalid)
	wantErr(t, "RenewLease missing", s.RenewLease(ctx, c, "missing", idA), blob.ErrNotFound)
}

// testDeleteBatch: every name gets its own result, in order; a blob's
// snapshots go with it; a leased blob stays; a list longer than MaxBatch is
// split.
func testDeleteBatch(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const id = "55555555-5555-4555-8555-555555555555"
	if errs := s.DeleteBatch(ctx, c, nil); len(errs) != 0 {
		t.Errorf("DeleteBatch of no names: %d results, want 0", len(errs))
	}
	for _, n := range []string{"a", "b", "snapped", "leased"} {
		must[string](t, "Put "+n)(s.Put(ctx, c, n, []byte(n), blob.WriteOptions{}))
	}
	must[string](t, "Snapshot")(s.Snapshot(ctx, c, "snapped", nil))
	wantErr(t, "AcquireLease", s.AcquireLease(ctx, c, "leased", id, 0), nil)
	names := []string{"a", "missing", "snapped", "leased", "b"}
	errs := s.DeleteBatch(ctx, c, names)
	if len(errs) != len(names) {
		t.Fatalf("DeleteBatch: %d results for %d names", len(errs), len(names))
	}
	for i, want := range []error{nil, blob.ErrNotFound, nil, blob.ErrLeased, nil} {
		wantErr(t, "DeleteBatch "+names[i], errs[i], want)
		if errs[i] != nil && !strings.Contains(errs[i].Error(), names[i]) {
			t.Errorf("DeleteBatch %s: error %q does not name the blob", names[i], errs[i])
		}
	}
	items := must[[]blob.Item](t, "List")(s.List(ctx, c, ""))
	if len(items) != 1 || items[0].Name != "leased" {
		t.Errorf("after DeleteBatch the container holds %v, want only the leased blob", items)
	}
	_, err := s.Snapshots(ctx, c, "snapped")
	wantErr(t, "Snapshots of a blob deleted in a batch", err, blob.ErrNotFound)
	wantErr(t, "ReleaseLease", s.ReleaseLease(ctx, c, "leased", id), nil)

	// More names than one request carries.
	var many []string
	for i := range blob.MaxBatch + 3 {
		n := fmt.Sprintf("m%04d", i)
		many = append(many, n)
		must[string](t, "Put "+n)(s.Put(ctx, c, n, nil, blob.WriteOptions{}))
	}
	for i, err := range s.DeleteBatch(ctx, c, many) {
		wantErr(t, "DeleteBatch "+many[i], err, nil)
	}
	if items := must[[]blob.Item](t, "List")(s.List(ctx, c, "m")); len(items) != 0 {
		t.Errorf("after deleting %d blobs in batches, %d are left", len(many), len(items))
	}
}

func testLeaseBreak(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const idA, idB = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
	must[string](t, "Put")(s.Put(ctx, c, "b", []byte("x"), blob.WriteOptions{}))
	wantErr(t, "BreakLease with no lease", s.BreakLease(ctx, c, "b"), blob.ErrLeased)
	wantErr(t, "BreakLease missing", s.BreakLease(ctx, c, "missing"), blob.ErrNotFound)

	for _, d := range []time.Duration{0, 60 * time.Second} {
		wantErr(t, "AcquireLease A", s.AcquireLease(ctx, c, "b", idA, d), nil)
		wantErr(t, "BreakLease", s.BreakLease(ctx, c, "b"), nil)
		if p := must[blob.Props](t, "Properties")(s.Properties(ctx, c, "b")); p.Leased {
			t.Errorf("Properties after break (duration %d): Leased true", d)
		}
		wantErr(t, "RenewLease broken", s.RenewLease(ctx, c, "b", idA), blob.ErrLeased)
		wantErr(t, "BreakLease broken", s.BreakLease(ctx, c, "b"), nil)
		_, err := s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{LeaseID: idA})
		wantErr(t, "Put with a broken lease's id", err, blob.ErrLeased)
		wantErr(t, "ReleaseLease broken", s.ReleaseLease(ctx, c, "b", idA), nil)
		must[string](t, "Put after release, without id")(s.Put(ctx, c, "b", []byte("y"), blob.WriteOptions{}))

		// Taking over: break, then write and lease under another id.
		wantErr(t, "AcquireLease A again", s.AcquireLease(ctx, c, "b", idA, d), nil)
		wantErr(t, "BreakLease again", s.BreakLease(ctx, c, "b"), nil)
		must[string](t, "Put after break, without id")(s.Put(ctx, c, "b", []byte("z"), blob.WriteOptions{}))
		wantErr(t, "AcquireLease B after break", s.AcquireLease(ctx, c, "b", idB, 0), nil)
		_, err = s.Put(ctx, c, "b", []byte("w"), blob.WriteOptions{LeaseID: idA})
		wantErr(t, "Put with the broken lease's id after B took over", err, blob.ErrLeased)
		wantErr(t, "ReleaseLease B", s.ReleaseLease(ctx, c, "b", idB), nil)
	}
}

func testErrorMessages(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", 1024, blob.WriteOptions{}))
	_, _, errGet := s.Get(ctx, c, "no/such", blob.ReadOptions{})
	_, errPage := s.WritePages(ctx, c, "disk", 1, make([]byte, 512), blob.WriteOptions{})
	_, errCreate := s.CreatePageBlob(ctx, c, "disk", 1024, blob.WriteOptions{IfNoneMatch: "*"})
	tests := []struct {
		what string
		err  error
		want []string
	}{
		{"Get missing", errGet, []string{c + "/no/such", "not found"}},
		{"unaligned WritePages", errPage, []string{c + "/disk", "invalid range", "offset 1 not a multiple of 512"}},
		{"create-only conflict", errCreate, []string{c + "/disk", "already exists"}},
	}
	for _, tc := range tests {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.what)
			continue
		}
		msg := tc.err.Error()
		if !strings.HasPrefix(msg, "blob: ") {
			t.Errorf("%s: message %q lacks the blob: prefix", tc.what, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: message %q does not say %q", tc.what, msg, w)
			}
		}
	}
}

// WaitCopy polls CopyState until the copy into c/name is no longer
// pending, at most polls times, and returns the final state. It does not
// sleep between polls (impl code has no clock): a small blob's copy on a
// real account finishes within a few round trips.
func WaitCopy(t *testing.T, s blob.Store, c, name string, polls int) blob.Copy {
	t.Helper()
	for range polls {
		cp, err := s.CopyState(context.Background(), c, name)
		if err != nil {
			t.Fatalf("CopyState(%s): %v", name, err)
		}
		if cp.Status != blob.CopyPending {
			return cp
		}
	}
	t.Fatalf("CopyState(%s): still pending after %d polls", name, polls)
	return blob.Copy{}
}

// testCopyApart: a copy of a page blob and its source change apart: a write
// to either after the copy leaves the other as it was.
func testCopyApart(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 8 * blob.PageSize
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{}))
	must[string](t, "WritePages")(s.WritePages(ctx, c, "disk", 0, pattern(9, 4096), blob.WriteOptions{}))
	base := getData(t, s, c, "disk", blob.ReadOptions{})
	must[string](t, "StartCopy base")(s.StartCopy(ctx, c, "twin", c, "disk", ""))
	WaitCopy(t, s, c, "twin", 1000)
	must[string](t, "WritePages source after the copy")(s.WritePages(ctx, c, "disk", 0, pattern(5, 512), blob.WriteOptions{}))
	must[string](t, "WritePages twin")(s.WritePages(ctx, c, "twin", 512, pattern(6, 512), blob.WriteOptions{}))
	must[string](t, "WritePages twin again")(s.WritePages(ctx, c, "twin", 1024, pattern(7, 512), blob.WriteOptions{}))
	wantSrc := slices.Concat(pattern(5, 512), base[512:])
	wantTwin := slices.Concat(base[:512], pattern(6, 512), pattern(7, 512), base[1536:])
	sameBytes(t, "source after both changed", getData(t, s, c, "disk", blob.ReadOptions{}), wantSrc)
	sameBytes(t, "twin after both changed", getData(t, s, c, "twin", blob.ReadOptions{}), wantTwin)

}

func testCopy(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const size = 8 * blob.PageSize
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", size, blob.WriteOptions{Metadata: map[string]string{"machine": "vm1"}}))
	old := pattern(3, 2048)
	must[string](t, "WritePages")(s.WritePages(ctx, c, "disk", 1024, old, blob.WriteOptions{}))
	rp := must[string](t, "Snapshot")(s.Snapshot(ctx, c, "disk", nil))
	must[string](t, "WritePages after the snapshot")(s.WritePages(ctx, c, "disk", 0, pattern(9, 4096), blob.WriteOptions{}))

	if cp := must[blob.Copy](t, "CopyState never copied")(s.CopyState(ctx, c, "disk")); cp != (blob.Copy{}) {
		t.Errorf("CopyState of a blob never copied: %+v, want the zero Copy", cp)
	}

	id := must[string](t, "StartCopy snapshot")(s.StartCopy(ctx, c, "copy", c, "disk", rp))
	if id == "" {
		t.Errorf("StartCopy snapshot: empty copy id")
	}
	cp := WaitCopy(t, s, c, "copy", 1000)
	if cp.Status != blob.CopySuccess || cp.ID != id || cp.Total != size || cp.Copied != size {
		t.Errorf("copy of snapshot: %+v, want success of %s with %d/%d bytes", cp, id, size, size)
	}
	want := append(append(make([]byte, 1024), old...), make([]byte, size-1024-2048)...)
	sameBytes(t, "copy of snapshot", getData(t, s, c, "copy", blob.ReadOptions{}), want)
	p := must[blob.Props](t, "Properties copy")(s.Properties(ctx, c, "copy"))
	if p.Kind != blob.PageBlob || p.Size != size || p.Metadata["machine"] != "vm1" {
		t.Errorf("copy props: %s %d bytes metadata %v, want PageBlob %d bytes machine=vm1", p.Kind, p.Size, p.Metadata, size)
	}
	// The source is untouched.
	sameBytes(t, "source snapshot after the copy", getData(t, s, c, "disk", blob.ReadOptions{Snapshot: rp}), want)

	// A second copy, of the base blob, replaces the destination.
	must[string](t, "Put small")(s.Put(ctx, c, "small", []byte("block data"), blob.WriteOptions{}))
	id2 := must[string](t, "StartCopy over")(s.StartCopy(ctx, c, "copy", c, "small", ""))
	cp = WaitCopy(t, s, c, "copy", 1000)
	if cp.Status != blob.CopySuccess || cp.ID != id2 || id2 == id {
		t.Errorf("second copy: %+v (first id %s), want success of a new id %s", cp, id, id2)
	}
	sameBytes(t, "copy replaced", getData(t, s, c, "copy", blob.ReadOptions{}), []byte("block data"))
	if p := must[blob.Props](t, "Properties replaced")(s.Properties(ctx, c, "copy")); p.Kind != blob.BlockBlob || p.Size != 10 {
		t.Errorf("replaced copy: %s %d bytes, want BlockBlob 10 bytes", p.Kind, p.Size)
	}
}

func testCopyErrors(t *testing.T, s blob.Store, c string) {
	ctx := context.Background()
	const lid = "33333333-3333-4333-8333-333333333333"
	must[string](t, "CreatePageBlob")(s.CreatePageBlob(ctx, c, "disk", 4*blob.PageSize, blob.WriteOptions{}))
	must[string](t, "Put dst")(s.Put(ctx, c, "leased", []byte("keep"), blob.WriteOptions{}))
	check(t, "AcquireLease", s.AcquireLease(ctx, c, "leased", lid, 0))

	_, err := s.StartCopy(ctx, c, "x", c, "missing", "")
	wantErr(t, "StartCopy missing source", err, blob.ErrNotFound)
	_, err = s.StartCopy(ctx, c, "x", c, "disk", "2026-01-01T00:00:00.0000000Z")
	wantErr(t, "StartCopy missing snapshot", err, blob.ErrNotFound)
	_, err = s.StartCopy(ctx, c+"-none", "x", c, "disk", "")
	wantErr(t, "StartCopy missing destination container", err, blob.ErrNotFound)
	_, err = s.StartCopy(ctx, c, "leased", c, "disk", "")
	wantErr(t, "StartCopy onto a leased blob", err, blob.ErrLeased)
	sameBytes(t, "leased destination after a refused copy", getData(t, s, c, "leased", blob.ReadOptions{}), []byte("keep"))
	_, err = s.CopyState(ctx, c, "x")
	wantErr(t, "CopyState of a refused copy's destination", err, blob.ErrNotFound)
	check(t, "ReleaseLease", s.ReleaseLease(ctx, c, "leased", lid))
}
