package azarm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"

	"github.com/v2a-dr/v2a/impl/compute"
)

// VM reads a VM with its instance view (one GET with $expand=instanceView).
func (f *Fabric) VM(ctx context.Context, ref compute.Ref) (compute.VM, error) {
	g, err := f.vmGroup(ref)
	if err != nil {
		return compute.VM{}, err
	}
	resp, err := f.vms.Get(ctx, g, ref.Name, &armcompute.VirtualMachinesClientGetOptions{Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)})
	if err != nil {
		return compute.VM{}, f.fail(err, "vm %s", ref)
	}
	return f.toVM(resp.VirtualMachine), nil
}

// exportSeconds is how long the read access ReadDisk grants lasts; it is
// revoked as soon as the read is done.
const exportSeconds = 3600

// ReadDisk grants read access to the disk, reads [off, off+n) from the
// export with one ranged GET, and revokes the access (also when the read
// failed).
func (f *Fabric) ReadDisk(ctx context.Context, disk compute.Ref, off, n int64) (data []byte, err error) {
	if disk.Kind != compute.KindDisk {
		return nil, invalid("%s is not a disk", disk)
	}
	if err := checkName(disk); err != nil {
		return nil, err
	}
	g, err := f.group(disk.Group)
	if err != nil {
		return nil, err
	}
	if off < 0 || n < 0 {
		return nil, invalid("read %s: bad range offset %d length %d", disk, off, n)
	}
	d, err := f.disks.Get(ctx, g, disk.Name, nil)
	if err != nil {
		return nil, f.fail(err, "disk %s", disk)
	}
	if size := f.toDisk(d.Disk).SizeBytes; off+n > size {
		return nil, invalid("read %s: range [%d, %d) past the disk's end %d", disk, off, off+n, size)
	}
	if n == 0 {
		return []byte{}, nil
	}
	gp, err := f.disks.BeginGrantAccess(ctx, g, disk.Name, armcompute.GrantAccessData{
		Access:            to.Ptr(armcompute.AccessLevelRead),
		DurationInSeconds: to.Ptr[int32](exportSeconds),
	}, nil)
	if err != nil {
		return nil, f.fail(err, "grant read access to %s", disk)
	}
	granted, err := gp.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: f.poll})
	if err != nil {
		return nil, f.fail(err, "grant read access to %s", disk)
	}
	defer func() {
		rerr := f.revoke(ctx, g, disk)
		if err == nil {
			err = rerr
		}
	}()
	if granted.AccessSAS == nil || *granted.AccessSAS == "" {
		return nil, fmt.Errorf("azarm: grant read access to %s: no SAS URL in the answer", disk)
	}
	req, err := runtime.NewRequest(ctx, http.MethodGet, *granted.AccessSAS)
	if err != nil {
		return nil, fmt.Errorf("azarm: read %s: %w", disk, err)
	}
	req.Raw().Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	req.Raw().Header.Set("x-ms-version", "2021-08-06")
	resp, err := f.export.Do(req)
	if err != nil {
		return nil, fmt.Errorf("azarm: read %s: %w", disk, err)
	}
	defer resp.Body.Close()
	if !runtime.HasStatusCode(resp, http.StatusPartialContent, http.StatusOK) {
		return nil, asError(runtime.NewResponseError(resp))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("azarm: read %s: %w", disk, err)
	}
	if resp.StatusCode == http.StatusOK && int64(len(body)) >= off+n {
		body = body[off : off+n] // a server that ignored Range sent it all
	}
	if int64(len(body)) != n {
		return nil, fmt.Errorf("azarm: read %s: got %d bytes, want %d", disk, len(body), n)
	}
	return body, nil
}

func (f *Fabric) revoke(ctx context.Context, g string, disk compute.Ref) error {
	p, err := f.disks.BeginRevokeAccess(ctx, g, disk.Name, nil)
	if err != nil {
		return f.fail(err, "revoke access to %s", disk)
	}
	_, err = p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: f.poll})
	return f.fail(err, "revoke access to %s", disk)
}

// Inventory lists the groups of the scope that exist and every network,
// NIC, disk and VM in them, each list sorted by Ref.
func (f *Fabric) Inventory(ctx context.Context) (compute.Inventory, error) {
	var inv compute.Inventory
	scope, err := f.sortedScope(ctx)
	if err != nil {
		return compute.Inventory{}, err
	}
	for _, g := range scope {
		if _, err := f.groups.Get(ctx, g, nil); err != nil {
			if e := asError(err); e != err && isNotFound(e) {
				continue
			}
			return compute.Inventory{}, f.fail(err, "group %s", g)
		}
		inv.Groups = append(inv.Groups, g)
	}
	nics, err := f.listNICsIn(ctx, inv.Groups)
	if err != nil {
		return compute.Inventory{}, err
	}
	inv.NICs = nics
	for _, g := range inv.Groups {
		vp := f.vnets.NewListPager(g, nil)
		for vp.More() {
			page, err := vp.NextPage(ctx)
			if err != nil {
				return compute.Inventory{}, f.fail(err, "list networks in %s", g)
			}
			for _, v := range page.Value {
				if v == nil {
					continue
				}
				n, err := f.toNetwork(*v, nics)
				if err != nil {
					return compute.Inventory{}, err
				}
				inv.Networks = append(inv.Networks, n)
			}
		}
		dp := f.disks.NewListByResourceGroupPager(g, nil)
		for dp.More() {
			page, err := dp.NextPage(ctx)
			if err != nil {
				return compute.Inventory{}, f.fail(err, "list disks in %s", g)
			}
			for _, d := range page.Value {
				if d != nil {
					inv.Disks = append(inv.Disks, f.toDisk(*d))
				}
			}
		}
		mp := f.vms.NewListPager(g, nil)
		for mp.More() {
			page, err := mp.NextPage(ctx)
			if err != nil {
				return compute.Inventory{}, f.fail(err, "list vms in %s", g)
			}
			for _, v := range page.Value {
				if v == nil {
					continue
				}
				// The list has no instance view without a filter: read each.
				vm, err := f.VM(ctx, f.ref(compute.KindVM, v.ID))
				if err != nil {
					if isNotFound(err) {
						continue // deleted since the list
					}
					return compute.Inventory{}, err
				}
				inv.VMs = append(inv.VMs, vm)
			}
		}
	}
	slices.SortFunc(inv.Networks, func(a, b compute.Network) int { return a.Ref.Compare(b.Ref) })
	slices.SortFunc(inv.Disks, func(a, b compute.Disk) int { return a.Ref.Compare(b.Ref) })
	slices.SortFunc(inv.VMs, func(a, b compute.VM) int { return a.Ref.Compare(b.Ref) })
	return inv, nil
}

// listNICs lists the NICs of every group in scope that exists.
func (f *Fabric) listNICs(ctx context.Context) ([]compute.NIC, error) {
	scope, err := f.sortedScope(ctx)
	if err != nil {
		return nil, err
	}
	return f.listNICsIn(ctx, scope)
}

// listNICsIn lists the NICs of groups (a group that does not exist has
// none), sorted by Ref.
func (f *Fabric) listNICsIn(ctx context.Context, groups []string) ([]compute.NIC, error) {
	var out []compute.NIC
	for _, g := range groups {
		p := f.nics.NewListPager(g, nil)
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				if isNotFound(asError(err)) {
					break
				}
				return nil, f.fail(err, "list nics in %s", g)
			}
			for _, n := range page.Value {
				if n != nil {
					out = append(out, f.toNIC(*n))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b compute.NIC) int { return a.Ref.Compare(b.Ref) })
	return out, nil
}

func isNotFound(err error) bool {
	e, ok := err.(*compute.Error)
	return ok && e.Status == http.StatusNotFound
}
