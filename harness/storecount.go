package harness

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/v2a-dr/v2a/impl/blob"
)

// countingStore counts the requests each method makes, for the storage
// report (`storage` command) and the cost report, as Azure bills them
// (transactions): a DeleteBatch counts a delete per name and a batch per
// batch request (blob.BatchRequests), though it takes fewer round trips.
type countingStore struct {
	blob.Store
	mu sync.Mutex
	n  map[string]int64
	// bytes are the payload bytes by method (puts and page writes sent,
	// gets received): Azurite's cost grows with them as well as with the
	// requests.
	bytes map[string]int64
}

func (c *countingStore) addBytes(m string, n int) {
	c.mu.Lock()
	if c.bytes == nil {
		c.bytes = map[string]int64{}
	}
	c.bytes[m] += int64(n)
	c.mu.Unlock()
}

// Bytes returns the payload bytes by method, as "method=n" sorted by
// method.
func (c *countingStore) Bytes() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, k := range sortedKeys(c.bytes) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.bytes[k]))
	}
	return strings.Join(parts, " ")
}

func (c *countingStore) count(m string) {
	c.mu.Lock()
	c.n[m]++
	c.mu.Unlock()
}

// snapshot copies the counts by method.
func (c *countingStore) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for k, n := range c.n {
		out[k] = n
	}
	return out
}

// Counts returns requests by method, as "method=n" sorted by method.
func (c *countingStore) Counts() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	var total int64
	for _, k := range sortedKeys(c.n) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.n[k]))
		total += c.n[k]
	}
	return fmt.Sprintf("requests=%d %s", total, strings.Join(parts, " "))
}

func (c *countingStore) CreateContainer(ctx context.Context, ct string) error {
	c.count("create-container")
	return c.Store.CreateContainer(ctx, ct)
}
func (c *countingStore) List(ctx context.Context, ct, p string) ([]blob.Item, error) {
	c.count("list")
	return c.Store.List(ctx, ct, p)
}
func (c *countingStore) Put(ctx context.Context, ct, n string, d []byte, o blob.WriteOptions) (string, error) {
	c.count("put")
	c.addBytes("put", len(d))
	return c.Store.Put(ctx, ct, n, d, o)
}
func (c *countingStore) Get(ctx context.Context, ct, n string, o blob.ReadOptions) ([]byte, blob.Props, error) {
	c.count("get")
	data, p, err := c.Store.Get(ctx, ct, n, o)
	c.addBytes("get", len(data))
	return data, p, err
}
func (c *countingStore) Properties(ctx context.Context, ct, n string) (blob.Props, error) {
	c.count("properties")
	return c.Store.Properties(ctx, ct, n)
}
func (c *countingStore) Delete(ctx context.Context, ct, n string, o blob.WriteOptions) error {
	c.count("delete")
	return c.Store.Delete(ctx, ct, n, o)
}
func (c *countingStore) DeleteBatch(ctx context.Context, ct string, names []string) []error {
	// Counted as billed: every name a delete, and every batch request
	// one more.
	batches, _ := blob.BatchRequests(len(names))
	for range names {
		c.count("delete")
	}
	for range batches {
		c.count("batch")
	}
	return c.Store.DeleteBatch(ctx, ct, names)
}
func (c *countingStore) WritePages(ctx context.Context, ct, n string, off int64, d []byte, o blob.WriteOptions) (string, error) {
	c.count("write-pages")
	c.addBytes("write-pages", len(d))
	return c.Store.WritePages(ctx, ct, n, off, d, o)
}
func (c *countingStore) PageRanges(ctx context.Context, ct, n, s string) ([]blob.Range, error) {
	c.count("page-ranges")
	return c.Store.PageRanges(ctx, ct, n, s)
}
func (c *countingStore) Snapshot(ctx context.Context, ct, n string, md map[string]string) (string, error) {
	c.count("snapshot")
	return c.Store.Snapshot(ctx, ct, n, md)
}
func (c *countingStore) Snapshots(ctx context.Context, ct, n string) ([]blob.Snapshot, error) {
	c.count("snapshots")
	return c.Store.Snapshots(ctx, ct, n)
}
func (c *countingStore) DeleteSnapshot(ctx context.Context, ct, n, s string) error {
	c.count("delete-snapshot")
	return c.Store.DeleteSnapshot(ctx, ct, n, s)
}
func (c *countingStore) StartCopy(ctx context.Context, dc, d, sc, s, snap string) (string, error) {
	c.count("start-copy")
	return c.Store.StartCopy(ctx, dc, d, sc, s, snap)
}
func (c *countingStore) CopyState(ctx context.Context, ct, n string) (blob.Copy, error) {
	c.count("copy-state")
	return c.Store.CopyState(ctx, ct, n)
}
