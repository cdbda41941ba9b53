package armfake

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"

	"github.com/v2a-dr/v2a/impl/blob"
)

const gib = 1 << 30

func (s *Server) disksServer() computefake.DisksServer {
	const api = "DisksClient."
	return computefake.DisksServer{
		// BeginCreateOrUpdate imports a page blob (the only creation the
		// fake knows). It reads the blob at Begin, as the port promises; a
		// missing blob is 404 BlobNotFound (the fake's choice of code). Azure
		// wants a fixed VHD (N MiB + a 512-byte footer); the fake takes any
		// whole number of 512-byte pages. An existing disk is not updated
		// (409 PropertyChangeNotAllowed: creationData cannot change).
		BeginCreateOrUpdate: func(ctx context.Context, rg, name string, d armcompute.Disk, _ *armcompute.DisksClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcompute.DisksClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				errResp.SetError(f)
				return
			}
			k := key(rg, name)
			if s.disks[k] != nil {
				errResp.SetError(fail(http.StatusConflict, "PropertyChangeNotAllowed", "Changing property 'creationData' of disk %s is not allowed.", name))
				return
			}
			data, f := s.importBlob(ctx, d)
			if f != nil {
				errResp.SetError(f)
				return
			}
			nd := &disk{data: data, Disk: armcompute.Disk{
				ID: to.Ptr(s.resID(rg, "Microsoft.Compute/disks", name)), Name: to.Ptr(name), Location: d.Location, Tags: d.Tags,
				Type: to.Ptr("Microsoft.Compute/disks"), SKU: d.SKU,
				Properties: &armcompute.DiskProperties{
					CreationData:      d.Properties.CreationData,
					OSType:            d.Properties.OSType,
					DiskSizeBytes:     to.Ptr(int64(len(data))),
					DiskSizeGB:        to.Ptr(int32((int64(len(data)) + gib - 1) / gib)),
					DiskState:         to.Ptr(armcompute.DiskStateUnattached),
					ProvisioningState: to.Ptr("Updating"),
				}}}
			s.disks[k] = nd
			final := clone(nd.Disk)
			final.Properties.ProvisioningState = to.Ptr("Succeeded")
			resp = lro(s, ctx, api+"BeginCreateOrUpdate", http.StatusAccepted, http.StatusOK,
				armcompute.DisksClientCreateOrUpdateResponse{Disk: final}, func(inj *Failure) *Failure {
					nd.Properties.ProvisioningState = to.Ptr("Succeeded")
					if inj != nil {
						nd.Properties.ProvisioningState = to.Ptr("Failed")
					}
					return inj
				})
			return
		},
		Get: func(_ context.Context, rg, name string, _ *armcompute.DisksClientGetOptions) (resp azfake.Responder[armcompute.DisksClientGetResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			d := s.disks[key(rg, name)]
			if d == nil {
				errResp.SetError(notFound("Microsoft.Compute/disks", rg, name))
				return
			}
			resp.SetResponse(http.StatusOK, armcompute.DisksClientGetResponse{Disk: clone(d.Disk)}, nil)
			return
		},
		NewListByResourceGroupPager: func(rg string, _ *armcompute.DisksClientListByResourceGroupOptions) (resp azfake.PagerResponder[armcompute.DisksClientListByResourceGroupResponse]) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				resp.AddError(f)
				return
			}
			var page armcompute.DisksClientListByResourceGroupResponse
			for _, k := range sortedKeys(s.disks, rg) {
				page.Value = append(page.Value, to.Ptr(clone(s.disks[k].Disk)))
			}
			resp.AddPage(http.StatusOK, page, nil)
			return
		},
		BeginDelete: func(ctx context.Context, rg, name string, _ *armcompute.DisksClientBeginDeleteOptions) (resp azfake.PollerResponder[armcompute.DisksClientDeleteResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			k := key(rg, name)
			d := s.disks[k]
			switch {
			case d == nil:
				resp.SetTerminalResponse(http.StatusNoContent, armcompute.DisksClientDeleteResponse{}, nil)
				return
			case d.ManagedBy != nil:
				errResp.SetError(fail(http.StatusConflict, "OperationNotAllowed", "Disk %s is attached to VM %s.", name, *d.ManagedBy))
				return
			case d.sas != "":
				errResp.SetError(fail(http.StatusConflict, "OperationNotAllowed", "Disk %s has an active SAS; revoke it first.", name))
				return
			}
			d.Properties.ProvisioningState = to.Ptr("Deleting")
			resp = lro(s, ctx, api+"BeginDelete", http.StatusAccepted, http.StatusOK, armcompute.DisksClientDeleteResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					d.Properties.ProvisioningState = to.Ptr("Failed")
					return inj
				}
				if s.disks[k] == d {
					delete(s.disks, k)
				}
				return nil
			})
			return
		},
		// BeginGrantAccess gives a SAS URL on ExportHost. Azure refuses to
		// export a disk whose VM is not deallocated (409).
		BeginGrantAccess: func(ctx context.Context, rg, name string, g armcompute.GrantAccessData, _ *armcompute.DisksClientBeginGrantAccessOptions) (resp azfake.PollerResponder[armcompute.DisksClientGrantAccessResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			d := s.disks[key(rg, name)]
			if d == nil {
				errResp.SetError(notFound("Microsoft.Compute/disks", rg, name))
				return
			}
			if d.ManagedBy != nil {
				if v := s.vmByID(*d.ManagedBy); v != nil && v.power != "deallocated" {
					errResp.SetError(fail(http.StatusConflict, "OperationNotAllowed",
						"Cannot export disk %s: it is attached to VM %s, which is not deallocated.", name, *d.ManagedBy))
					return
				}
			}
			if g.Access == nil || *g.Access == armcompute.AccessLevelNone {
				errResp.SetError(fail(http.StatusBadRequest, "InvalidParameter", "Access level is required."))
				return
			}
			s.sasSeq++
			sig := fmt.Sprintf("sig%d", s.sasSeq)
			url := fmt.Sprintf("https://%s/%s/%s/abcd?sv=2021-08-06&sr=b&sp=r&sig=%s", ExportHost, strings.ToLower(rg), strings.ToLower(name), sig)
			resp = lro(s, ctx, api+"BeginGrantAccess", http.StatusAccepted, http.StatusOK,
				armcompute.DisksClientGrantAccessResponse{AccessURI: armcompute.AccessURI{AccessSAS: to.Ptr(url)}}, func(inj *Failure) *Failure {
					if inj != nil {
						return inj
					}
					d.sas = sig
					d.Properties.DiskState = to.Ptr(armcompute.DiskStateActiveSAS)
					return nil
				})
			return
		},
		BeginRevokeAccess: func(ctx context.Context, rg, name string, _ *armcompute.DisksClientBeginRevokeAccessOptions) (resp azfake.PollerResponder[armcompute.DisksClientRevokeAccessResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			d := s.disks[key(rg, name)]
			if d == nil {
				errResp.SetError(notFound("Microsoft.Compute/disks", rg, name))
				return
			}
			resp = lro(s, ctx, api+"BeginRevokeAccess", http.StatusAccepted, http.StatusOK, armcompute.DisksClientRevokeAccessResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					return inj
				}
				d.sas = ""
				d.Properties.DiskState = to.Ptr(s.attachedState(d))
				return nil
			})
			return
		},
	}
}

// importBlob reads the page blob a disk import names.
func (s *Server) importBlob(ctx context.Context, d armcompute.Disk) ([]byte, *Failure) {
	if d.Location == nil || *d.Location == "" {
		return nil, fail(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	if d.Properties == nil || d.Properties.CreationData == nil || d.Properties.CreationData.CreateOption == nil {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Required parameter 'creationData.createOption' is missing.")
	}
	cd := d.Properties.CreationData
	if *cd.CreateOption != armcompute.DiskCreateOptionImport {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "The fake creates disks only by Import, not %s.", *cd.CreateOption)
	}
	if deref(cd.StorageAccountID) == "" {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Required parameter 'creationData.storageAccountId' is missing.")
	}
	src := deref(cd.SourceURI)
	rest, ok := strings.CutPrefix(src, s.opt.BlobEndpoint)
	container, name, ok2 := strings.Cut(rest, "/")
	if s.opt.Blobs == nil || s.opt.BlobEndpoint == "" || !ok || !ok2 || container == "" || name == "" {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Source URI %q is not a blob of the storage account.", src)
	}
	props, err := s.opt.Blobs.Properties(ctx, container, name)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, fail(http.StatusNotFound, "BlobNotFound", "Source blob %s does not exist.", src)
	}
	if err != nil {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Source blob %s cannot be read: %v", src, err)
	}
	if props.Kind != blob.PageBlob || props.Size%blob.PageSize != 0 {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Source blob %s is not a page blob of whole 512-byte pages.", src)
	}
	data, _, err := s.opt.Blobs.Get(ctx, container, name, blob.ReadOptions{})
	if err != nil {
		return nil, fail(http.StatusBadRequest, "InvalidParameter", "Source blob %s cannot be read: %v", src, err)
	}
	return data, nil
}

func (s *Server) vmByID(id string) *vm {
	r, ok := parseID(&id)
	if !ok {
		return nil
	}
	return s.vms[key(r.ResourceGroupName, r.Name)]
}

// attachedState is a disk's state without an export.
func (s *Server) attachedState(d *disk) armcompute.DiskState {
	if d.ManagedBy == nil {
		return armcompute.DiskStateUnattached
	}
	if v := s.vmByID(*d.ManagedBy); v != nil && v.power == "deallocated" {
		return armcompute.DiskStateReserved
	}
	return armcompute.DiskStateAttached
}

// diskByID finds a managed disk by id.
func (s *Server) diskByID(id *string) *disk {
	r, ok := parseID(id)
	if !ok || !strings.EqualFold(r.ResourceType.String(), "Microsoft.Compute/disks") {
		return nil
	}
	return s.disks[key(r.ResourceGroupName, r.Name)]
}

func (s *Server) nicByID(id *string) *armnetwork.Interface {
	r, ok := parseID(id)
	if !ok || !strings.EqualFold(r.ResourceType.String(), "Microsoft.Network/networkInterfaces") {
		return nil
	}
	return s.nics[key(r.ResourceGroupName, r.Name)]
}

func (s *Server) vmsServer() computefake.VirtualMachinesServer {
	const api = "VirtualMachinesClient."
	return computefake.VirtualMachinesServer{
		// BeginCreateOrUpdate creates a VM from existing disks (Attach) and
		// NICs and boots it. An existing VM is not updated (409
		// PropertyChangeNotAllowed, the fake's simplification).
		BeginCreateOrUpdate: func(ctx context.Context, rg, name string, p armcompute.VirtualMachine, _ *armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientCreateOrUpdateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				errResp.SetError(f)
				return
			}
			k := key(rg, name)
			if s.vms[k] != nil {
				errResp.SetError(fail(http.StatusConflict, "PropertyChangeNotAllowed", "VM %s exists; the fake does not update VMs.", name))
				return
			}
			id := s.resID(rg, "Microsoft.Compute/virtualMachines", name)
			disks, nics, f := s.checkVM(id, p)
			if f != nil {
				errResp.SetError(f)
				return
			}
			for _, d := range disks {
				d.ManagedBy = to.Ptr(id)
				d.Properties.DiskState = to.Ptr(armcompute.DiskStateAttached)
			}
			for _, n := range nics {
				n.Properties.VirtualMachine = &armnetwork.SubResource{ID: to.Ptr(id)}
			}
			v := &vm{power: "starting", VirtualMachine: clone(p)}
			v.ID, v.Name, v.Type = to.Ptr(id), to.Ptr(name), to.Ptr("Microsoft.Compute/virtualMachines")
			v.Properties.ProvisioningState = to.Ptr("Creating")
			v.Properties.VMID = to.Ptr(fmt.Sprintf("00000000-0000-0000-0000-%012d", len(s.vms)+1))
			s.vms[k] = v
			final := clone(v.VirtualMachine)
			final.Properties.ProvisioningState = to.Ptr("Succeeded")
			resp = lro(s, ctx, api+"BeginCreateOrUpdate", http.StatusCreated, http.StatusOK,
				armcompute.VirtualMachinesClientCreateOrUpdateResponse{VirtualMachine: final}, func(inj *Failure) *Failure {
					if inj != nil {
						// Azure keeps a VM whose creation failed, holding its
						// NICs and disks, until it is deleted.
						v.Properties.ProvisioningState, v.power = to.Ptr("Failed"), "stopped"
						return inj
					}
					v.Properties.ProvisioningState, v.power = to.Ptr("Succeeded"), "running"
					return nil
				})
			return
		},
		Get: func(_ context.Context, rg, name string, o *armcompute.VirtualMachinesClientGetOptions) (resp azfake.Responder[armcompute.VirtualMachinesClientGetResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v := s.vms[key(rg, name)]
			if v == nil {
				errResp.SetError(notFound("Microsoft.Compute/virtualMachines", rg, name))
				return
			}
			out := clone(v.VirtualMachine)
			if o != nil && o.Expand != nil && *o.Expand == armcompute.InstanceViewTypesInstanceView {
				out.Properties.InstanceView = v.instanceView()
			}
			resp.SetResponse(http.StatusOK, armcompute.VirtualMachinesClientGetResponse{VirtualMachine: out}, nil)
			return
		},
		InstanceView: func(_ context.Context, rg, name string, _ *armcompute.VirtualMachinesClientInstanceViewOptions) (resp azfake.Responder[armcompute.VirtualMachinesClientInstanceViewResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v := s.vms[key(rg, name)]
			if v == nil {
				errResp.SetError(notFound("Microsoft.Compute/virtualMachines", rg, name))
				return
			}
			resp.SetResponse(http.StatusOK, armcompute.VirtualMachinesClientInstanceViewResponse{VirtualMachineInstanceView: *v.instanceView()}, nil)
			return
		},
		NewListPager: func(rg string, _ *armcompute.VirtualMachinesClientListOptions) (resp azfake.PagerResponder[armcompute.VirtualMachinesClientListResponse]) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if f := s.needGroup(rg); f != nil {
				resp.AddError(f)
				return
			}
			var page armcompute.VirtualMachinesClientListResponse
			for _, k := range sortedKeys(s.vms, rg) {
				page.Value = append(page.Value, to.Ptr(clone(s.vms[k].VirtualMachine)))
			}
			resp.AddPage(http.StatusOK, page, nil)
			return
		},
		BeginStart: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginStartOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientStartResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v, f := s.idleVM(rg, name)
			if f != nil {
				errResp.SetError(f)
				return
			}
			v.power = "starting"
			resp = lro(s, ctx, api+"BeginStart", http.StatusAccepted, http.StatusOK, armcompute.VirtualMachinesClientStartResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					v.power = "stopped"
					return inj
				}
				v.power = "running"
				s.setDiskStates(v)
				return nil
			})
			return
		},
		BeginDeallocate: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginDeallocateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientDeallocateResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v, f := s.idleVM(rg, name)
			if f != nil {
				errResp.SetError(f)
				return
			}
			before := v.power
			v.power = "deallocating"
			resp = lro(s, ctx, api+"BeginDeallocate", http.StatusAccepted, http.StatusOK, armcompute.VirtualMachinesClientDeallocateResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					v.power = before
					return inj
				}
				v.power = "deallocated"
				s.setDiskStates(v)
				return nil
			})
			return
		},
		BeginDelete: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginDeleteOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientDeleteResponse], errResp azfake.ErrorResponder) {
			s.mu.Lock()
			defer s.mu.Unlock()
			k := key(rg, name)
			v := s.vms[k]
			if v == nil {
				resp.SetTerminalResponse(http.StatusNoContent, armcompute.VirtualMachinesClientDeleteResponse{}, nil)
				return
			}
			v.Properties.ProvisioningState = to.Ptr("Deleting")
			resp = lro(s, ctx, api+"BeginDelete", http.StatusAccepted, http.StatusOK, armcompute.VirtualMachinesClientDeleteResponse{}, func(inj *Failure) *Failure {
				if inj != nil {
					v.Properties.ProvisioningState = to.Ptr("Failed")
					return inj
				}
				if s.vms[k] == v {
					delete(s.vms, k)
				}
				// Its NICs and disks stay (deleteOption Detach) and are free.
				for _, n := range s.nics {
					if n.Properties.VirtualMachine != nil && strings.EqualFold(deref(n.Properties.VirtualMachine.ID), *v.ID) {
						n.Properties.VirtualMachine = nil
					}
				}
				for _, d := range s.disks {
					if d.ManagedBy != nil && strings.EqualFold(*d.ManagedBy, *v.ID) {
						d.ManagedBy = nil
						d.Properties.DiskState = to.Ptr(armcompute.DiskStateUnattached)
						if d.sas != "" {
							d.Properties.DiskState = to.Ptr(armcompute.DiskStateActiveSAS)
						}
					}
				}
				return nil
			})
			return
		},
	}
}

// idleVM finds a VM that no creation or deletion is changing.
func (s *Server) idleVM(rg, name string) (*vm, *Failure) {
	v := s.vms[key(rg, name)]
	if v == nil {
		return nil, notFound("Microsoft.Compute/virtualMachines", rg, name)
	}
	if st := deref(v.Properties.ProvisioningState); st == "Creating" || st == "Deleting" {
		return nil, fail(http.StatusConflict, "OperationNotAllowed", "VM %s is %s.", name, strings.ToLower(st))
	}
	return v, nil
}

func (s *Server) setDiskStates(v *vm) {
	for _, d := range s.disks {
		if d.ManagedBy != nil && strings.EqualFold(*d.ManagedBy, *v.ID) && d.sas == "" {
			d.Properties.DiskState = to.Ptr(s.attachedState(d))
		}
	}
}

// checkVM validates a VM's disks and NICs: each must exist and be free or
// already its own.
func (s *Server) checkVM(id string, p armcompute.VirtualMachine) ([]*disk, []*armnetwork.Interface, *Failure) {
	if p.Location == nil || *p.Location == "" {
		return nil, nil, fail(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
	}
	pp := p.Properties
	if pp == nil || pp.HardwareProfile == nil || pp.HardwareProfile.VMSize == nil || *pp.HardwareProfile.VMSize == "" {
		return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "Required parameter 'hardwareProfile.vmSize' is missing.")
	}
	if pp.StorageProfile == nil || pp.StorageProfile.OSDisk == nil || pp.StorageProfile.OSDisk.ManagedDisk == nil {
		return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "Required parameter 'storageProfile.osDisk.managedDisk' is missing.")
	}
	if c := pp.StorageProfile.OSDisk.CreateOption; c == nil || *c != armcompute.DiskCreateOptionTypesAttach {
		return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "The fake creates VMs only from attached disks.")
	}
	if pp.NetworkProfile == nil || len(pp.NetworkProfile.NetworkInterfaces) == 0 {
		return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "Required parameter 'networkProfile.networkInterfaces' is missing.")
	}
	// NICs first, then disks, as the in-memory fabric checks them (Azure
	// does not document its order).
	primaries := 0
	for _, ref := range pp.NetworkProfile.NetworkInterfaces {
		if ref != nil && ref.Properties != nil && ref.Properties.Primary != nil && *ref.Properties.Primary {
			primaries++
		}
	}
	if len(pp.NetworkProfile.NetworkInterfaces) > 1 && primaries != 1 {
		return nil, nil, fail(http.StatusBadRequest, "VirtualMachineMustHaveOneNetworkInterfaceAsPrimary",
			"Virtual machine %s must have one network interface set as the primary.", id)
	}
	var nics []*armnetwork.Interface
	for _, ref := range pp.NetworkProfile.NetworkInterfaces {
		n := s.nicByID(ref.ID)
		switch {
		case n == nil:
			return nil, nil, fail(http.StatusNotFound, "NotFound", "Network interface %s was not found.", deref(ref.ID))
		case deref((*string)(n.Properties.ProvisioningState)) != string(armnetwork.ProvisioningStateSucceeded):
			return nil, nil, fail(http.StatusConflict, "Conflict", "Network interface %s is %s.", *n.Name, deref((*string)(n.Properties.ProvisioningState)))
		case n.Properties.VirtualMachine != nil && !strings.EqualFold(deref(n.Properties.VirtualMachine.ID), id):
			return nil, nil, fail(http.StatusBadRequest, "NicInUse", "Network interface %s is used by VM %s.", *n.Name, deref(n.Properties.VirtualMachine.ID))
		}
		for _, o := range nics {
			if o == n {
				return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "Network interface %s is given twice.", *n.Name)
			}
		}
		nics = append(nics, n)
	}
	ids := []*string{pp.StorageProfile.OSDisk.ManagedDisk.ID}
	for _, dd := range pp.StorageProfile.DataDisks {
		if dd == nil || dd.ManagedDisk == nil {
			return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "A data disk has no managed disk.")
		}
		ids = append(ids, dd.ManagedDisk.ID)
	}
	var disks []*disk
	for _, did := range ids {
		d := s.diskByID(did)
		switch {
		case d == nil:
			return nil, nil, fail(http.StatusNotFound, "NotFound", "Disk %s was not found.", deref(did))
		case deref(d.Properties.ProvisioningState) != "Succeeded":
			return nil, nil, fail(http.StatusConflict, "OperationNotAllowed", "Disk %s is %s.", deref(did), deref(d.Properties.ProvisioningState))
		case d.ManagedBy != nil && !strings.EqualFold(*d.ManagedBy, id):
			return nil, nil, fail(http.StatusConflict, "OperationNotAllowed", "Disk %s is already attached to VM %s.", *d.Name, *d.ManagedBy)
		}
		for _, o := range disks {
			if o == d {
				return nil, nil, fail(http.StatusBadRequest, "InvalidParameter", "Disk %s is given twice.", *d.Name)
			}
		}
		disks = append(disks, d)
	}
	return disks, nics, nil
}

// instanceView is what the platform reports: provisioning and power state,
// and a Ready guest agent while the VM runs.
func (v *vm) instanceView() *armcompute.VirtualMachineInstanceView {
	iv := &armcompute.VirtualMachineInstanceView{Statuses: []*armcompute.InstanceViewStatus{
		{Code: to.Ptr("ProvisioningState/" + strings.ToLower(deref(v.Properties.ProvisioningState))), Level: to.Ptr(armcompute.StatusLevelTypesInfo)},
		{Code: to.Ptr("PowerState/" + v.power), Level: to.Ptr(armcompute.StatusLevelTypesInfo)},
	}}
	if v.power == "running" {
		iv.VMAgent = &armcompute.VirtualMachineAgentInstanceView{VMAgentVersion: to.Ptr("2.7.41491.1102"),
			Statuses: []*armcompute.InstanceViewStatus{{Code: to.Ptr("ProvisioningState/succeeded"),
				DisplayStatus: to.Ptr("Ready"), Level: to.Ptr(armcompute.StatusLevelTypesInfo), Message: to.Ptr("Guest Agent is running")}}}
	}
	return iv
}
