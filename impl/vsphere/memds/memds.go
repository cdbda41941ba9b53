// Package memds is an in-memory stand-in for the datastore file calls of
// the vSphere port (ReadFile, WriteFile, FileSize, ReadAt, WriteAt), for unit tests of components
// that keep data in datastore files (the master target). It passes the
// same conformance suite as the vcenter adapter over vcsim
// (vspheretest.Files); every other Client call returns ErrUnsupported, so
// a component that needs more must be tested through the harness.
//
// A datastore has a capacity: a write that would not fit fails with
// vsphere.ErrNoSpace and leaves the file as it was. FailWrites injects a
// write failure.
package memds

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/v2a-dr/v2a/impl/vsphere"
)

// Client is an in-memory set of datastores. It is safe for concurrent use:
// ops of actors under the Real runtime call it from their own goroutines.
type Client struct {
	mu        sync.Mutex
	datastore map[string]*datastore
	failWrite error
	writes    int
}

type datastore struct {
	capacityBytes int64
	usedBytes     int64
	files         map[string][]byte
}

var _ vsphere.Client = (*Client)(nil)

// New returns a Client with no datastores.
func New() *Client { return &Client{datastore: map[string]*datastore{}} }

// AddDatastore adds an empty datastore of capacityBytes.
func (c *Client) AddDatastore(name string, capacityBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.datastore[name] = &datastore{capacityBytes: capacityBytes, files: map[string][]byte{}}
}

// SetCapacity changes a datastore's capacity (an operator freeing or
// adding space); files stay as they are, even over it.
func (c *Client) SetCapacity(name string, capacityBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.datastore[name].capacityBytes = capacityBytes
}

// FailWrites makes every WriteFile and WriteAt fail with err until called
// with nil.
func (c *Client) FailWrites(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failWrite = err
}

// Writes is the number of WriteFile and WriteAt calls that succeeded.
func (c *Client) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// Files lists the datastore paths of every file, sorted.
func (c *Client) Files() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for ds, d := range c.datastore {
		for p := range d.files {
			out = append(out, vsphere.DatastorePath{Datastore: ds, Path: p}.String())
		}
	}
	sort.Strings(out)
	return out
}

func (c *Client) file(op, path string) (*datastore, string, error) {
	p, err := vsphere.ParseDatastorePath(path)
	if err != nil {
		return nil, "", fmt.Errorf("vsphere: %s %s: %w", op, path, err)
	}
	if p.Path == "" {
		return nil, "", fmt.Errorf("vsphere: %s %s: %w: names no file", op, path, vsphere.ErrInvalidArgument)
	}
	d, ok := c.datastore[p.Datastore]
	if !ok {
		return nil, "", fmt.Errorf("vsphere: %s %s: datastore %q: %w", op, path, p.Datastore, vsphere.ErrNotFound)
	}
	return d, p.Path, nil
}

// ReadFile implements vsphere.Client.
func (c *Client) ReadFile(_ context.Context, path string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, rel, err := c.file("read", path)
	if err != nil {
		return nil, err
	}
	b, ok := d.files[rel]
	if !ok {
		return nil, fmt.Errorf("vsphere: read %s: %w", path, vsphere.ErrNotFound)
	}
	return append([]byte(nil), b...), nil
}

// WriteFile implements vsphere.Client.
func (c *Client) WriteFile(_ context.Context, path string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, rel, err := c.file("write", path)
	if err != nil {
		return err
	}
	if c.failWrite != nil {
		return fmt.Errorf("vsphere: write %s: %w", path, c.failWrite)
	}
	used := d.usedBytes - int64(len(d.files[rel])) + int64(len(data))
	if used > d.capacityBytes {
		return fmt.Errorf("vsphere: write %s: %w (%d bytes, %d of %d free)", path, vsphere.ErrNoSpace,
			len(data), d.capacityBytes-d.usedBytes+int64(len(d.files[rel])), d.capacityBytes)
	}
	d.usedBytes = used
	d.files[rel] = append([]byte(nil), data...)
	c.writes++
	return nil
}

// FileSize implements vsphere.Client.
func (c *Client) FileSize(_ context.Context, path string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, rel, err := c.file("size", path)
	if err != nil {
		return 0, err
	}
	b, ok := d.files[rel]
	if !ok {
		return 0, fmt.Errorf("vsphere: size %s: %w", path, vsphere.ErrNotFound)
	}
	return int64(len(b)), nil
}

// ReadAt implements vsphere.Client.
func (c *Client) ReadAt(_ context.Context, path string, p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, rel, err := c.file("read", path)
	if err != nil {
		return 0, err
	}
	b, ok := d.files[rel]
	if !ok {
		return 0, fmt.Errorf("vsphere: read %s: %w", path, vsphere.ErrNotFound)
	}
	if off < 0 {
		return 0, fmt.Errorf("vsphere: read %s at %d: %w: negative offset", path, off, vsphere.ErrInvalidArgument)
	}
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements vsphere.Client. Growing a file counts against the
// datastore's capacity; a write that does not fit changes nothing.
func (c *Client) WriteAt(_ context.Context, path string, p []byte, off int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, rel, err := c.file("write", path)
	if err != nil {
		return err
	}
	b, ok := d.files[rel]
	if !ok {
		return fmt.Errorf("vsphere: write %s: %w", path, vsphere.ErrNotFound)
	}
	if off < 0 {
		return fmt.Errorf("vsphere: write %s at %d: %w: negative offset", path, off, vsphere.ErrInvalidArgument)
	}
	if c.failWrite != nil {
		return fmt.Errorf("vsphere: write %s: %w", path, c.failWrite)
	}
	if end := off + int64(len(p)); end > int64(len(b)) {
		grow := end - int64(len(b))
		if d.usedBytes+grow > d.capacityBytes {
			return fmt.Errorf("vsphere: write %s: %w (%d bytes more, %d of %d free)", path, vsphere.ErrNoSpace,
				grow, d.capacityBytes-d.usedBytes, d.capacityBytes)
		}
		d.usedBytes += grow
		b = append(b, make([]byte, grow)...)
		d.files[rel] = b
	}
	copy(b[off:], p)
	c.writes++
	return nil
}

func unsupported(call string) error {
	return fmt.Errorf("vsphere: %s: %w: memds holds datastore files only", call, vsphere.ErrUnsupported)
}

// Discover implements vsphere.Client: unsupported.
func (c *Client) Discover(context.Context) ([]vsphere.VM, error) { return nil, unsupported("discover") }

// VM implements vsphere.Client: unsupported.
func (c *Client) VM(context.Context, vsphere.VMRef) (vsphere.VM, error) {
	return vsphere.VM{}, unsupported("vm")
}

// PowerOn implements vsphere.Client: unsupported.
func (c *Client) PowerOn(context.Context, vsphere.VMRef) error { return unsupported("power on") }

// PowerOff implements vsphere.Client: unsupported.
func (c *Client) PowerOff(context.Context, vsphere.VMRef) error { return unsupported("power off") }

// CreateVM implements vsphere.Client: unsupported.
func (c *Client) CreateVM(context.Context, vsphere.VMSpec) (vsphere.VM, error) {
	return vsphere.VM{}, unsupported("create vm")
}

// RunInGuest implements vsphere.Client: unsupported.
func (c *Client) RunInGuest(context.Context, vsphere.VMRef, vsphere.GuestAuth, string, string) (int, error) {
	return 0, unsupported("run in guest")
}
