package memblob_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/blobtest"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
)

// TestConformance: the in-memory store passes the same suite as the azblob
// adapter against Azurite.
func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return memblob.New() })
}

// TestConformancePendingCopies: the suite also passes when copies stay
// pending for a while, as on Azure.
func TestConformancePendingCopies(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return memblob.New(memblob.WithPendingCopies(2)) })
}

// TestPendingCopies: WithPendingCopies(n) keeps a copy pending for exactly
// n CopyState calls, with progress growing, then reports success.
func TestPendingCopies(t *testing.T) {
	ctx := context.Background()
	s := memblob.New(memblob.WithPendingCopies(3))
	if err := s.CreateContainer(ctx, "c00"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "c00", "src", make([]byte, 400), blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	id, err := s.StartCopy(ctx, "c00", "dst", "c00", "src", "")
	if err != nil {
		t.Fatal(err)
	}
	var got []blob.Copy
	for range 5 {
		cp, err := s.CopyState(ctx, "c00", "dst")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cp)
	}
	want := []blob.Copy{
		{ID: id, Status: blob.CopyPending, Copied: 100, Total: 400},
		{ID: id, Status: blob.CopyPending, Copied: 200, Total: 400},
		{ID: id, Status: blob.CopyPending, Copied: 300, Total: 400},
		{ID: id, Status: blob.CopySuccess, Copied: 400, Total: 400},
		{ID: id, Status: blob.CopySuccess, Copied: 400, Total: 400},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("copy states (-want +got):\n%s", diff)
	}
}

// broken wraps a correct store and gets one thing wrong, chosen by name.
type broken struct {
	blob.Store
	bug string
}

func (b broken) Put(ctx context.Context, c, n string, d []byte, o blob.WriteOptions) (string, error) {
	if b.bug == "ignore-ifmatch" {
		o.IfMatch = ""
	}
	return b.Store.Put(ctx, c, n, d, o)
}

func (b broken) Properties(ctx context.Context, c, n string) (blob.Props, error) {
	p, err := b.Store.Properties(ctx, c, n)
	if b.bug == "metadata-case" && p.Metadata != nil {
		md := map[string]string{}
		for k, v := range p.Metadata {
			md[strings.ToUpper(k[:1])+k[1:]] = v
		}
		p.Metadata = md
	}
	return p, err
}

func (b broken) WritePages(ctx context.Context, c, n string, off int64, d []byte, o blob.WriteOptions) (string, error) {
	if b.bug == "no-page-limit" && len(d) > blob.MaxPageWrite {
		return blob.WritePagesSplit(ctx, b.Store, c, n, off, d, o)
	}
	return b.Store.WritePages(ctx, c, n, off, d, o)
}

func (b broken) Get(ctx context.Context, c, n string, o blob.ReadOptions) ([]byte, blob.Props, error) {
	if b.bug == "snapshot-reads-base" {
		o.Snapshot = ""
	}
	return b.Store.Get(ctx, c, n, o)
}

func (b broken) List(ctx context.Context, c, prefix string) ([]blob.Item, error) {
	items, err := b.Store.List(ctx, c, prefix)
	if b.bug == "list-unsorted" {
		slices.Reverse(items)
	}
	return items, err
}

func (b broken) StartCopy(ctx context.Context, dc, d, sc, src, snap string) (string, error) {
	if b.bug == "copy-ignores-snapshot" {
		snap = ""
	}
	return b.Store.StartCopy(ctx, dc, d, sc, src, snap)
}

func (b broken) AcquireLease(ctx context.Context, c, n, id string, d time.Duration) error {
	if b.bug == "lease-steal" {
		_ = b.Store.BreakLease(ctx, c, n)
	}
	return b.Store.AcquireLease(ctx, c, n, id, d)
}

// TestBrokenStoreHelper runs the suite on a broken store when
// MEMBLOB_BUG is set; TestSuiteCatchesBugs runs it in a subprocess.
func TestBrokenStoreHelper(t *testing.T) {
	bug := os.Getenv("MEMBLOB_BUG")
	if bug == "" {
		t.Skip("helper for TestSuiteCatchesBugs; runs only in its subprocess")
	}
	blobtest.Run(t, func(t *testing.T) blob.Store { return broken{memblob.New(), bug} })
}

// TestSuiteCatchesBugs is the suite's negative control: each deliberately
// broken store must fail it, in the subtest that covers the bug.
func TestSuiteCatchesBugs(t *testing.T) {
	tests := []struct{ bug, want string }{
		{"ignore-ifmatch", "Put IfMatch stale"},
		{"metadata-case", "Properties metadata"},
		{"no-page-limit", "WritePages over 4 MiB"},
		{"snapshot-reads-base", "snapshot 1 after the base changed"},
		{"list-unsorted", "List(log/) names"},
		{"lease-steal", "AcquireLease by another id"},
		{"copy-ignores-snapshot", "copy of snapshot"},
	}
	for _, tc := range tests {
		t.Run(tc.bug, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenStoreHelper$")
			cmd.Env = append(os.Environ(), "MEMBLOB_BUG="+tc.bug)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("suite passed a store with bug %s (err %v):\n%s", tc.bug, err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("suite failed for bug %s but not with %q:\n%s", tc.bug, tc.want, out)
			}
		})
	}
}

// TestLeaseExpiry: with a clock, a finite lease lapses after its duration
// unless renewed; an infinite one never does.
func TestLeaseExpiry(t *testing.T) {
	now := time.Unix(0, 0)
	s := memblob.New(memblob.WithClock(func() time.Time { return now }))
	ctx := context.Background()
	const a, b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	if err := s.CreateContainer(ctx, "c00"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "c00", "x", nil, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		what    string
		advance time.Duration
		do      func() error
		want    error
	}{
		{"acquire A 20s", 0, func() error { return s.AcquireLease(ctx, "c00", "x", a, 20*time.Second) }, nil},
		{"B at 10s", 10 * time.Second, func() error { return s.AcquireLease(ctx, "c00", "x", b, 0) }, blob.ErrLeased},
		{"renew A at 15s", 5 * time.Second, func() error { return s.RenewLease(ctx, "c00", "x", a) }, nil},
		{"B at 30s (renewed until 35s)", 15 * time.Second, func() error { return s.AcquireLease(ctx, "c00", "x", b, 0) }, blob.ErrLeased},
		{"B at 36s (lapsed)", 6 * time.Second, func() error { return s.AcquireLease(ctx, "c00", "x", b, 0) }, nil},
		{"A at 1h (B is infinite)", time.Hour, func() error { return s.AcquireLease(ctx, "c00", "x", a, 15*time.Second) }, blob.ErrLeased},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		if err := st.do(); !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", st.what, err, st.want)
		}
	}
}

// TestDeterministic: the same calls on two stores give the same ETags and
// snapshot IDs.
func TestDeterministic(t *testing.T) {
	run := func() []string {
		s := memblob.New()
		ctx := context.Background()
		var out []string
		add := func(v string, err error) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		if err := s.CreateContainer(ctx, "det"); err != nil {
			t.Fatal(err)
		}
		add(s.Put(ctx, "det", "a", []byte("1"), blob.WriteOptions{}))
		add(s.CreatePageBlob(ctx, "det", "d", 4096, blob.WriteOptions{}))
		add(s.WritePages(ctx, "det", "d", 0, make([]byte, 512), blob.WriteOptions{}))
		add(s.Snapshot(ctx, "det", "d", nil))
		add(s.Snapshot(ctx, "det", "a", nil))
		return out
	}
	first, second := run(), run()
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("two runs differ (-first +second):\n%s", diff)
	}
}

// TestChunksAcrossSnapshotsAndResize: writes that straddle a chunk of the
// page map, a snapshot between them and a shrink that cuts a chunk leave
// the snapshot and the base each with its own bytes.
func TestChunksAcrossSnapshotsAndResize(t *testing.T) {
	ctx := context.Background()
	s := memblob.New()
	if err := s.CreateContainer(ctx, "cnt"); err != nil {
		t.Fatal(err)
	}
	const chunk = 128 * blob.PageSize // the store's chunk of pages (64 KiB)
	const size = 4 * chunk
	if _, err := s.CreatePageBlob(ctx, "cnt", "d", size, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	model := make([]byte, size)
	write := func(off int64, d []byte) {
		t.Helper()
		if _, err := s.WritePages(ctx, "cnt", "d", off, d, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], d)
	}
	write(chunk-blob.PageSize, fill(1, 2*blob.PageSize))
	snap, err := s.Snapshot(ctx, "cnt", "d", nil)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(model)
	write(chunk-blob.PageSize, fill(2, blob.PageSize))
	write(chunk+blob.PageSize, fill(3, chunk))
	if _, err := s.Resize(ctx, "cnt", "d", chunk+blob.PageSize, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	model = model[:chunk+blob.PageSize]
	if _, err := s.Resize(ctx, "cnt", "d", size, blob.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	model = append(model, make([]byte, size-len(model))...)
	got, _, err := s.Get(ctx, "cnt", "d", blob.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("base differs from the model")
	}
	got, _, err = s.Get(ctx, "cnt", "d", blob.ReadOptions{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Errorf("snapshot differs from the bytes at its time")
	}
	rs, err := s.PageRanges(ctx, "cnt", "d", "")
	if err != nil {
		t.Fatal(err)
	}
	want := []blob.Range{{Offset: chunk - blob.PageSize, Length: 2 * blob.PageSize}}
	if diff := cmp.Diff(want, rs); diff != "" {
		t.Errorf("base ranges (-want +got):\n%s", diff)
	}
}
