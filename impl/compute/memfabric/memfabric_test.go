package memfabric_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/computetest"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
)

// clock is a virtual clock a test moves by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) Advance(d time.Duration) { c.now = c.now.Add(d) }
func newClock() *clock                   { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func ms(n int) time.Duration             { return time.Duration(n) * time.Millisecond }
func secs(n int) time.Duration           { return time.Duration(n) * time.Second }
func mins(n int) time.Duration           { return time.Duration(n) * time.Minute }
func latencies(d time.Duration) memfabric.Latency {
	return memfabric.Latency{CreateNIC: d, CreateDisk: 2 * d, CreateVM: 3 * d, Hydrate: 4 * d, Start: d, Deallocate: d, Delete: d}
}

// env is a fabric on a virtual clock with every latency non-zero, so that
// the suite sees operations pending.
func env(t *testing.T) computetest.Env {
	c := newClock()
	st := memblob.New()
	f, err := memfabric.New(st, memfabric.Options{Clock: c.Now, Latency: latencies(secs(10)), PollInterval: secs(4)})
	if err != nil {
		t.Fatal(err)
	}
	return computetest.Env{Fabric: f, Store: st, Advance: c.Advance}
}

// TestConformance: the in-memory fabric passes the suite the real adapter
// passes, on a virtual clock with latencies and without a clock at all.
func TestConformance(t *testing.T) {
	t.Run("virtual-time", func(t *testing.T) { computetest.Run(t, env) })
	t.Run("instant", func(t *testing.T) {
		computetest.Run(t, func(t *testing.T) computetest.Env {
			st := memblob.New()
			f, err := memfabric.New(st, memfabric.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return computetest.Env{Fabric: f, Store: st}
		})
	})
}

// broken wraps a correct fabric and gets one thing wrong, chosen by name.
type broken struct {
	compute.Fabric
	store   blob.Store
	advance func(time.Duration)
	bug     string
	sources map[compute.Ref][2]string
	lie     compute.Pending
}

func (b *broken) Inventory(ctx context.Context) (compute.Inventory, error) {
	inv, err := b.Fabric.Inventory(ctx)
	if b.bug == "inventory-unsorted" {
		slices.Reverse(inv.NICs)
	}
	return inv, err
}

func (b *broken) BeginDelete(ctx context.Context, r compute.Ref) (compute.Pending, error) {
	p, err := b.Fabric.BeginDelete(ctx, r)
	if b.bug == "ip-freed-at-begin" && err == nil && r.Kind == compute.KindNIC {
		// The deletion is really done (the address free) while the
		// first Poll will still say it is not.
		b.advance(time.Hour)
		_, _ = b.Fabric.Poll(ctx, p)
		b.lie = p
	}
	return p, err
}

func (b *broken) BeginCreateNIC(ctx context.Context, s compute.NICSpec) (compute.Pending, error) {
	p, err := b.Fabric.BeginCreateNIC(ctx, s)
	if b.bug == "static-ip-taken-quietly" && errors.Is(err, compute.ErrIPInUse) {
		s.IP = s.IP.Next()
		return b.Fabric.BeginCreateNIC(ctx, s)
	}
	return p, err
}

func (b *broken) BeginCreateDisk(ctx context.Context, s compute.DiskSpec) (compute.Pending, error) {
	b.sources[compute.Ref{Kind: compute.KindDisk, Group: s.Group, Name: s.Name}] = [2]string{s.SourceContainer, s.SourceBlob}
	return b.Fabric.BeginCreateDisk(ctx, s)
}

func (b *broken) ReadDisk(ctx context.Context, r compute.Ref, off, n int64) ([]byte, error) {
	if src, ok := b.sources[r]; ok && b.bug == "disk-reads-blob" {
		data, _, err := b.store.Get(ctx, src[0], src[1], blob.ReadOptions{Offset: off, Length: n})
		return data, err
	}
	return b.Fabric.ReadDisk(ctx, r, off, n)
}

func (b *broken) CreateNetwork(ctx context.Context, s compute.NetworkSpec) error {
	err := b.Fabric.CreateNetwork(ctx, s)
	if b.bug == "network-exists-ok" && errors.Is(err, compute.ErrExists) {
		return nil
	}
	return err
}

func (b *broken) Poll(ctx context.Context, p compute.Pending) (compute.Result, error) {
	if p == b.lie {
		b.lie = ""
		return compute.Result{After: time.Second}, nil
	}
	r, err := b.Fabric.Poll(ctx, p)
	if b.bug == "poll-unknown-done" && errors.Is(err, compute.ErrNotFound) {
		return compute.Result{Done: true}, nil
	}
	return r, err
}

func (b *broken) BeginDeallocate(ctx context.Context, r compute.Ref) (compute.Pending, error) {
	if b.bug == "deallocate-is-start" {
		return b.Fabric.BeginStart(ctx, r)
	}
	return b.Fabric.BeginDeallocate(ctx, r)
}

// TestBrokenFabricHelper runs the suite on a broken fabric when
// MEMFABRIC_BUG is set; TestSuiteCatchesBugs runs it in a subprocess.
func TestBrokenFabricHelper(t *testing.T) {
	bug := os.Getenv("MEMFABRIC_BUG")
	if bug == "" {
		t.Skip("helper for TestSuiteCatchesBugs; runs only in its subprocess")
	}
	computetest.Run(t, func(t *testing.T) computetest.Env {
		e := env(t)
		e.Fabric = &broken{Fabric: e.Fabric, store: e.Store, advance: e.Advance, bug: bug, sources: map[compute.Ref][2]string{}}
		return e
	})
}

// TestSuiteCatchesBugs is the suite's negative control: each deliberately
// broken fabric must fail it, with the message of the subtest that covers
// the bug.
func TestSuiteCatchesBugs(t *testing.T) {
	tests := []struct{ bug, want string }{
		{"inventory-unsorted", "Inventory lists not sorted"},
		{"ip-freed-at-begin", "address of a NIC being deleted"},
		{"static-ip-taken-quietly", "BeginCreateNIC at an address in use"},
		{"disk-reads-blob", "ReadDisk of the whole disk differs"},
		{"network-exists-ok", "CreateNetwork of a taken name"},
		{"poll-unknown-done", "Poll of an unknown token"},
		{"deallocate-is-start", `after deallocate: power "running"`},
	}
	for _, tc := range tests {
		t.Run(tc.bug, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenFabricHelper$")
			cmd.Env = append(os.Environ(), "MEMFABRIC_BUG="+tc.bug)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("suite passed a fabric with bug %s (err %v):\n%s", tc.bug, err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("suite failed for bug %s but not with %q:\n%s", tc.bug, tc.want, out)
			}
		})
	}
}
