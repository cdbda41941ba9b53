package harness

import (
	"fmt"
	"sort"
	"strings"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/processsrv"
)

// corruptBlob arms a corruption of a machine's next stream item uploaded
// to the cache container:
//
//	fault corrupt-blob vm=NAME [container=cache]
//
// Right after the process server's upload of the machine's next item
// completes — before the Azure side hears of it — one byte in the middle
// of the sealed blob is flipped, as a storage fault would. Arming on the
// upload (rather than picking a blob now) makes the fault hit an item the
// Azure side has not fetched yet, the same one in every run.
func (r *Runner) corruptBlob(a argMap) (string, error) {
	if err := a.only("corrupt-blob", "vm", "container"); err != nil {
		return "", err
	}
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if _, ok := r.Env.Machines[vm]; !ok {
		return "", fmt.Errorf("fault corrupt-blob: no machine %q", vm)
	}
	if c := a.str("container", processsrv.CacheContainer); c != processsrv.CacheContainer {
		return "", fmt.Errorf("fault corrupt-blob: container=%s: only the cache container's items can be corrupted", c)
	}
	e := r.Env
	e.Trace.OnLine(HostProcessServer, "done upload "+vm+"/", func() {
		e.Sim.After(0, "fault/corrupt-blob", func() {
			msg, err := d.corruptNewestItem(vm)
			if err != nil {
				e.Trace.Add(e.Sim.Elapsed(), "harness", "error", "fault corrupt-blob: "+err.Error())
				return
			}
			e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", msg)
		})
	})
	return fmt.Sprintf("armed: corrupt-blob of %s's next item uploaded to the cache container\n", vm), nil
}

// corruptNewestItem flips a byte in the middle of the newest item blob of
// vm in the cache container.
func (d *Deployment) corruptNewestItem(vm string) (string, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	c := prefix + processsrv.CacheContainer
	items, err := store.List(d.e.ctx, c, vm+"/")
	if err != nil {
		return "", err
	}
	if len(items) == 0 {
		return "", fmt.Errorf("no item of %s in the cache container", vm)
	}
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.Name
	}
	sort.Strings(names) // zero-padded sequence numbers: the last is the newest
	name := names[len(names)-1]
	data, _, err := store.Get(d.e.ctx, c, name, blob.ReadOptions{})
	if err != nil {
		return "", err
	}
	at := len(data) / 2
	data[at] ^= 0x5a
	if _, err := store.Put(d.e.ctx, c, name, data, blob.WriteOptions{}); err != nil {
		return "", err
	}
	return fmt.Sprintf("corrupt-blob %s: flipped byte %d of %d in cache item %s", vm, at, len(data), strings.TrimPrefix(name, vm+"/")), nil
}

// deleteSnapshot deletes the replica snapshots behind one recovery point,
// as an operator or a storage fault might:
//
//	fault delete-snapshot vm=NAME [point=ID|oldest]
func (r *Runner) deleteSnapshot(a argMap) (string, error) {
	if err := a.only("delete-snapshot", "vm", "point"); err != nil {
		return "", err
	}
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	cat, err := d.Catalog(vm)
	if err != nil {
		return "", fmt.Errorf("fault delete-snapshot: %w", err)
	}
	if len(cat.Points) == 0 {
		return "", fmt.Errorf("fault delete-snapshot: %s has no recovery points", vm)
	}
	want := a.str("point", "oldest")
	pts := cat.Points
	sort.Slice(pts, func(i, j int) bool { return pts[i].Seq < pts[j].Seq })
	i := 0
	if want != "oldest" {
		i = -1
		for j, p := range pts {
			if p.ID == want {
				i = j
			}
		}
		if i < 0 {
			return "", fmt.Errorf("fault delete-snapshot: %s has no point %q", vm, want)
		}
	}
	p := pts[i]
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	for k, s := range p.Snapshots {
		if k >= len(cat.Disks) {
			break
		}
		if err := store.DeleteSnapshot(d.e.ctx, prefix+"replica", cat.Disks[k].Blob, s); err != nil {
			return "", fmt.Errorf("fault delete-snapshot: disk %d of %s: %w", k, vm, err)
		}
	}
	msg := fmt.Sprintf("delete-snapshot %s: deleted the %d snapshot(s) of point %s (%s)", vm, len(p.Snapshots), p.ID, p.Kind)
	r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "fault", msg)
	return msg + "\n", nil
}
