package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// choosePoints reads the catalogs of the job's machines (straight from
// storage: the Azure side is not asked, so replication is not disturbed)
// and chooses each machine's point.
func (o *Orchestrator) choosePoints(ctx runtime.Context, j *job) {
	runs := j.active()
	var names []string
	for _, r := range runs {
		names = append(names, r.machine)
	}
	ti := o.task(ctx, j, TaskPoint, "", 0)
	store, prefix := o.cfg.Store, o.cfg.ContainerPrefix
	o.call(ctx, j, "failover-load-catalogs", o.cfg.StoragePeer, func(c context.Context) (any, error) {
		var cats []*proto.Catalog
		for _, n := range names {
			cat, _, err := proto.LoadCatalog(c, store, prefix, n)
			if err != nil {
				return nil, err
			}
			cats = append(cats, cat)
		}
		return cats, nil
	}, func(ctx runtime.Context, v any, err error) {
		if err != nil {
			reason := "failover: read the recovery points: " + o.errText(err)
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			o.fail(ctx, j, reason, false)
			return
		}
		cats := v.([]*proto.Catalog)
		for i, r := range runs {
			r.cat = cats[i]
		}
		points, err := choose(j.req.Point, runs)
		if err != nil {
			o.taskEnd(ctx, j, ti, TaskFailed, 0, err.Error())
			o.fail(ctx, j, err.Error(), false)
			return
		}
		for _, r := range runs {
			r.point = points[r.machine]
			o.machine(r.machine).ReplicationGroup = r.cat.Group
			j.Point[r.machine] = r.point.ID
			ctx.Log().Info("failover: recovery point chosen", "job", j.ID, "vm", r.machine, "point", r.point.ID, "kind", r.point.Kind, "seq", r.point.Seq)
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		o.next(ctx, j)
	})
}

// prepare copies a machine's point into new blobs, makes managed disks of
// them and creates its NIC.
func (o *Orchestrator) prepare(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	o.copyDisks(ctx, j, r, func(ctx runtime.Context, err error) {
		if err != nil {
			done(ctx, err)
			return
		}
		o.createDisks(ctx, j, r, func(ctx runtime.Context, err error) {
			if err != nil {
				done(ctx, err)
				return
			}
			o.createNIC(ctx, j, r, done)
		})
	})
}

// copyDisks copies each disk of r's point to `<job>/<machine>/disk<i>` in
// the failover container, and polls the copies until they are done.
func (o *Orchestrator) copyDisks(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskCopy, r.machine, r.group)
	st := o.machine(r.machine)
	fc := o.cfg.ContainerPrefix + ContainerFailover
	rc := o.cfg.ContainerPrefix + proto.ContainerReplica
	type cp struct{ src, snap, dst string }
	var cps []cp
	r.blobs = nil
	for i, d := range r.cat.Disks {
		name := fmt.Sprintf("%s/%s/disk%d", j.ID, r.machine, i)
		cps = append(cps, cp{d.Blob, r.point.Snapshots[i], name})
		r.blobs = append(r.blobs, name)
		st.Blobs = append(st.Blobs, name) // recorded before it exists: cleanup deletes it
	}
	store := o.cfg.Store
	end := func(ctx runtime.Context, err error) {
		if err != nil {
			reason := fmt.Sprintf("failover: copy the disks of %s from point %s: %s", r.machine, r.point.ID, o.errText(err))
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		done(ctx, nil)
	}
	var check func(ctx runtime.Context, polls int)
	check = func(ctx runtime.Context, polls int) {
		o.call(ctx, j, "failover-copy-state", o.cfg.StoragePeer, func(c context.Context) (any, error) {
			var pending int
			for _, x := range cps {
				s, err := store.CopyState(c, fc, x.dst)
				if err != nil {
					return nil, err
				}
				switch s.Status {
				case blob.CopySuccess:
				case blob.CopyPending:
					pending++
				default:
					return nil, fmt.Errorf("copy %s of %s: %s %s", s.ID, x.dst, s.Status, s.Reason)
				}
			}
			return pending, nil
		}, func(ctx runtime.Context, v any, err error) {
			switch {
			case err != nil:
				end(ctx, err)
			case v.(int) == 0:
				end(ctx, nil)
			case polls >= maxPollErrors*50:
				end(ctx, fmt.Errorf("%d copies still pending after %d polls", v.(int), polls))
			default:
				o.after(ctx, o.cfg.PollEvery, "failover-copy-poll", func(ctx runtime.Context) {
					if j.State == JobInProgress {
						check(ctx, polls+1)
					}
				})
			}
		})
	}
	// The copies start once their names are written in the machine's
	// record (see persist.go).
	o.savedFor(j, func(ctx runtime.Context) {
		o.call(ctx, j, "failover-copy", o.cfg.StoragePeer, func(c context.Context) (any, error) {
			if err := store.CreateContainer(c, fc); err != nil {
				return nil, err
			}
			for _, x := range cps {
				if _, err := store.StartCopy(c, fc, x.dst, rc, x.src, x.snap); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}, func(ctx runtime.Context, _ any, err error) {
			if err != nil {
				end(ctx, err)
				return
			}
			check(ctx, 0)
		})
	})
}

// createDisks makes a managed disk of each copied blob, in disk order.
func (o *Orchestrator) createDisks(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskDisks, r.machine, r.group)
	st := o.machine(r.machine)
	t := o.targetOf(r.machine)
	fc := o.cfg.ContainerPrefix + ContainerFailover
	r.disks = nil
	var specs []compute.DiskSpec
	for i, d := range r.cat.Disks {
		spec := compute.DiskSpec{Group: o.cfg.Group, Name: fmt.Sprintf("%s-%s-disk%d", r.name, j.ID, i),
			SourceContainer: fc, SourceBlob: r.blobs[i], SizeBytes: d.Size,
			Tags: map[string]string{compute.TagSource: r.machine, compute.TagPoint: r.point.ID, compute.TagJob: j.ID}}
		if i == 0 {
			spec.OSType = t.os
		}
		specs = append(specs, spec)
		ref := compute.Ref{Kind: compute.KindDisk, Group: spec.Group, Name: spec.Name}
		r.disks = append(r.disks, ref)
		st.Disks = append(st.Disks, ref)
	}
	fabric := o.cfg.Fabric
	var one func(ctx runtime.Context, i int)
	one = func(ctx runtime.Context, i int) {
		if i == len(specs) {
			o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
			done(ctx, nil)
			return
		}
		spec := specs[i]
		o.lro(ctx, j, "create-disk", func(c context.Context) (compute.Pending, error) { return fabric.BeginCreateDisk(c, spec) },
			func(ctx runtime.Context, err error) {
				if err != nil {
					reason := fmt.Sprintf("failover: create disk %s of %s: %s", spec.Name, r.machine, o.errText(err))
					o.taskEnd(ctx, j, ti, TaskFailed, asrCode(TaskDisks, err), reason)
					done(ctx, errors.New(reason))
					return
				}
				one(ctx, i+1)
			})
	}
	o.savedFor(j, func(ctx runtime.Context) { one(ctx, 0) }) // once the disks are recorded
}

// createNIC makes r's NIC: in a test, in the chosen network, in the
// subnet of the source's name when there is one, else the first subnet by
// name, with the source's IP when it is in that subnet and free, else the
// next free one; in a failover, the same in the production network.
func (o *Orchestrator) createNIC(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskNIC, r.machine, r.group)
	st := o.machine(r.machine)
	t := o.targetOf(r.machine)
	netRef := o.cfg.Production
	if j.Op == proto.OpTestFailover {
		netRef = compute.Ref{Kind: compute.KindNetwork, Group: j.req.Network.Group, Name: j.req.Network.Name}
	}
	r.nic = compute.Ref{Kind: compute.KindNIC, Group: o.cfg.Group, Name: r.name + "-nic"}
	st.NICs = append(st.NICs, r.nic)
	spec := compute.NICSpec{Group: o.cfg.Group, Name: r.nic.Name, Network: netRef,
		Tags: map[string]string{compute.TagSource: r.machine, compute.TagJob: j.ID}}
	o.savedFor(j, func(ctx runtime.Context) { // once the NIC is recorded
		o.createdNIC(ctx, j, r, ti, netRef, spec, t, done)
	})
}

// createdNIC places and creates r's NIC, as task ti.
func (o *Orchestrator) createdNIC(ctx runtime.Context, j *job, r *vmRun, ti int, netRef compute.Ref, spec compute.NICSpec, t target, done func(runtime.Context, error)) {
	fabric := o.cfg.Fabric
	o.lro(ctx, j, "create-nic", func(c context.Context) (compute.Pending, error) {
		n, err := fabric.Network(c, netRef)
		if err != nil {
			return "", err
		}
		s, ip, err := placeNIC(n, t.subnet, t.ip)
		if err != nil {
			return "", err
		}
		spec := spec
		spec.Subnet, spec.IP = s, ip
		p, err := fabric.BeginCreateNIC(c, spec)
		if errors.Is(err, compute.ErrIPInUse) && ip.IsValid() {
			// Taken meanwhile (another VM of the job): the next free one.
			spec.IP = netip.Addr{}
			p, err = fabric.BeginCreateNIC(c, spec)
		}
		return p, err
	}, func(ctx runtime.Context, err error) {
		if err != nil {
			reason := fmt.Sprintf("failover: create NIC of %s in %s: %s", r.machine, netRef, o.errText(err))
			o.taskEnd(ctx, j, ti, TaskFailed, asrCode(TaskNIC, err), reason)
			done(ctx, errors.New(reason))
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		done(ctx, nil)
	})
}

// placeNIC chooses a subnet and address: the named subnet if the network
// has it, else the first by name; ip if it is in that subnet and free,
// else the zero Addr (the next free one).
func placeNIC(n compute.Network, subnet string, ip netip.Addr) (string, netip.Addr, error) {
	if len(n.Subnets) == 0 {
		return "", netip.Addr{}, fmt.Errorf("failover: network %s has no subnet", n.Ref)
	}
	s := n.Subnets[0] // sorted by name
	for _, x := range n.Subnets {
		if x.Name == subnet {
			s = x
		}
	}
	if !ip.IsValid() || !s.Prefix.Contains(ip) {
		return s.Name, netip.Addr{}, nil
	}
	for _, u := range s.Used {
		if u.IP == ip {
			return s.Name, netip.Addr{}, nil
		}
	}
	return s.Name, ip, nil
}

// boot is the phase that creates and starts boot group g's VMs in
// parallel and waits until each is healthy.
func (o *Orchestrator) boot(g int) func(runtime.Context, *job) {
	return func(ctx runtime.Context, j *job) {
		var chains []chain
		for _, r := range j.active() {
			if r.group == g {
				chains = append(chains, func(ctx runtime.Context, done func(runtime.Context, error)) {
					o.createVM(ctx, j, r, r.disks, done)
				})
			}
		}
		o.run(ctx, j, chains)
	}
}

// createVM creates and boots r's VM from disks, then checks its guest.
func (o *Orchestrator) createVM(ctx runtime.Context, j *job, r *vmRun, disks []compute.Ref, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskVM, r.machine, r.group)
	st := o.machine(r.machine)
	t := o.targetOf(r.machine)
	r.vm = compute.Ref{Kind: compute.KindVM, Group: o.cfg.Group, Name: r.name}
	st.VM = r.vm
	spec := compute.VMSpec{Group: o.cfg.Group, Name: r.name, Size: t.size, NICs: []compute.Ref{r.nic},
		OSDisk: disks[0], DataDisks: disks[1:], OSType: t.os,
		Tags: map[string]string{compute.TagSource: r.machine, compute.TagPoint: r.point.ID, compute.TagJob: j.ID,
			compute.TagHydrate: strconv.FormatBool(t.hydrate)}}
	fabric := o.cfg.Fabric
	o.savedFor(j, func(ctx runtime.Context) { // once the VM is recorded
		o.lro(ctx, j, "create-vm", func(c context.Context) (compute.Pending, error) { return fabric.BeginCreateVM(c, spec) },
			func(ctx runtime.Context, err error) {
				if err != nil {
					reason := fmt.Sprintf("failover: create VM %s: %s", r.name, o.errText(err))
					o.taskEnd(ctx, j, ti, TaskFailed, asrCode(TaskVM, err), reason)
					done(ctx, errors.New(reason))
					return
				}
				o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
				o.health(ctx, j, r, done)
			})
	})
}

// health reads the VM's instance view: healthy when its guest is ready.
func (o *Orchestrator) health(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	ti := o.task(ctx, j, TaskHealth, r.machine, r.group)
	fabric, ref := o.cfg.Fabric, r.vm
	o.call(ctx, j, "failover-vm-health", o.cfg.FabricPeer, func(c context.Context) (any, error) {
		return fabric.VM(c, ref)
	}, func(ctx runtime.Context, v any, err error) {
		if err == nil && (v.(compute.VM).Power != compute.Running || !v.(compute.VM).Guest.Ready) {
			vm := v.(compute.VM)
			err = fmt.Errorf("power %s, guest not ready: %s", vm.Power, vm.Guest.Message)
		}
		if err != nil {
			reason := fmt.Sprintf("failover: VM %s is not healthy: %s", r.name, o.errText(err))
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		st := o.machine(r.machine)
		st.Point = r.point.ID
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		ctx.Log().Info("failover: vm healthy", "job", j.ID, "vm", r.machine, "azure_vm", r.name, "point", r.point.ID, "rto", j.VMRTO(r.machine).String())
		if j.Op == proto.OpFailover || r.redo {
			o.tellFailedOver(ctx, j, r, done)
			return
		}
		done(ctx, nil)
	})
}

// deleteAll deletes refs in order, each to the end, as one task.
func (o *Orchestrator) deleteAll(ctx runtime.Context, j *job, r *vmRun, task string, refs []compute.Ref, done func(runtime.Context, error)) {
	if len(refs) == 0 {
		done(ctx, nil)
		return
	}
	ti := o.task(ctx, j, task, r.machine, r.group)
	fabric := o.cfg.Fabric
	conflicts := 0
	var one func(ctx runtime.Context, i int)
	one = func(ctx runtime.Context, i int) {
		if i == len(refs) {
			o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
			done(ctx, nil)
			return
		}
		ref := refs[i]
		o.lro(ctx, j, "delete", func(c context.Context) (compute.Pending, error) { return fabric.BeginDelete(c, ref) },
			func(ctx runtime.Context, err error) {
				if errors.Is(err, compute.ErrConflict) && conflicts < maxDeleteConflicts {
					// Busy: still being made by a job a restart
					// interrupted (the fabric went on with it).
					conflicts++
					ctx.Log().Info("failover: delete refused for now, retrying", "job", j.ID, "ref", ref.String(), "after", o.cfg.PollEvery.String(), "try", conflicts, "reason", o.errText(err))
					o.after(ctx, o.cfg.PollEvery, "failover-retry", func(ctx runtime.Context) {
						if j.State == JobInProgress {
							one(ctx, i)
						}
					})
					return
				}
				if err != nil && !errors.Is(err, compute.ErrNotFound) {
					reason := fmt.Sprintf("failover: delete %s: %s", ref, o.errText(err))
					o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
					done(ctx, errors.New(reason))
					return
				}
				one(ctx, i+1)
			})
	}
	one(ctx, 0)
}

// deleteBlobs deletes copied blobs (a missing one is not an error).
func (o *Orchestrator) deleteBlobs(ctx runtime.Context, j *job, r *vmRun, names []string, done func(runtime.Context, error)) {
	if len(names) == 0 {
		done(ctx, nil)
		return
	}
	ti := o.task(ctx, j, TaskDeleteBlobs, r.machine, r.group)
	store, fc := o.cfg.Store, o.cfg.ContainerPrefix+ContainerFailover
	o.call(ctx, j, "failover-delete-blobs", o.cfg.StoragePeer, func(c context.Context) (any, error) {
		for _, n := range names {
			if err := store.Delete(c, fc, n, blob.WriteOptions{}); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return nil, err
			}
		}
		return nil, nil
	}, func(ctx runtime.Context, _ any, err error) {
		if err != nil {
			reason := fmt.Sprintf("failover: delete the copied blobs of %s: %s", r.machine, o.errText(err))
			o.taskEnd(ctx, j, ti, TaskFailed, 0, reason)
			done(ctx, errors.New(reason))
			return
		}
		o.taskEnd(ctx, j, ti, TaskSucceeded, 0, "")
		done(ctx, nil)
	})
}

// cleanup deletes what the machine's test made: the VM, then its NICs,
// then its disks, then the copied blobs.
func (o *Orchestrator) cleanup(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	o.deleteCreated(ctx, j, r, func(ctx runtime.Context, err error) {
		if err == nil {
			st := o.machine(r.machine)
			st.State, st.Job, st.Point = StateReplicating, "", ""
		}
		done(ctx, err)
	})
}

// deleteCreated deletes what a test or a failover made for the machine:
// the VM, then its NICs, then its disks, then the copied blobs; each is
// forgotten once deleted.
func (o *Orchestrator) deleteCreated(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	st := o.machine(r.machine)
	var vm []compute.Ref
	if st.VM != (compute.Ref{}) {
		vm = []compute.Ref{st.VM}
	}
	o.deleteAll(ctx, j, r, TaskDeleteVM, vm, func(ctx runtime.Context, err error) {
		if err != nil {
			done(ctx, err)
			return
		}
		st.VM = compute.Ref{}
		o.deleteAll(ctx, j, r, TaskDeleteNICs, st.NICs, func(ctx runtime.Context, err error) {
			if err != nil {
				done(ctx, err)
				return
			}
			st.NICs = nil
			o.deleteAll(ctx, j, r, TaskDeleteDisks, st.Disks, func(ctx runtime.Context, err error) {
				if err != nil {
					done(ctx, err)
					return
				}
				st.Disks = nil
				o.deleteBlobs(ctx, j, r, st.Blobs, func(ctx runtime.Context, err error) {
					if err != nil {
						done(ctx, err)
						return
					}
					st.Blobs = nil
					done(ctx, nil)
				})
			})
		})
	})
}

// changePoint moves a failed-over machine to its newly chosen point: new
// disks from it, the old VM deleted, a new VM on the same NIC booted from
// the new disks, then the old disks and blobs deleted.
//
// A machine whose failover never brought its VM up (it failed, or the
// recovery service restarted during it) has nothing to keep: whatever the
// failover recorded is deleted, then disks, NIC and VM are made anew from
// the new point, as the failover would have, and the configuration server
// is told once the VM is healthy.
func (o *Orchestrator) changePoint(ctx runtime.Context, j *job, r *vmRun, done func(runtime.Context, error)) {
	st := o.machine(r.machine)
	if st.Point == "" {
		r.redo = true
		o.deleteCreated(ctx, j, r, func(ctx runtime.Context, err error) {
			if err != nil {
				done(ctx, err)
				return
			}
			o.prepare(ctx, j, r, func(ctx runtime.Context, err error) {
				if err != nil {
					done(ctx, err)
					return
				}
				o.createVM(ctx, j, r, r.disks, func(ctx runtime.Context, err error) {
					if err == nil {
						st.Job = j.ID
					}
					done(ctx, err)
				})
			})
		})
		return
	}
	r.oldVM, r.oldDisks, r.oldBlobs = st.VM, st.Disks, st.Blobs
	st.Disks, st.Blobs = append([]compute.Ref(nil), st.Disks...), append([]string(nil), st.Blobs...)
	if len(st.NICs) == 0 {
		done(ctx, fmt.Errorf("failover: change point of %s: it has no NIC", r.machine))
		return
	}
	r.nic = st.NICs[0]
	var oldVM []compute.Ref
	if st.VM != (compute.Ref{}) {
		r.name, oldVM = st.VM.Name, []compute.Ref{st.VM}
	}
	fail := func(ctx runtime.Context, err error) bool {
		if err != nil {
			done(ctx, err)
		}
		return err != nil
	}
	o.copyDisks(ctx, j, r, func(ctx runtime.Context, err error) {
		if fail(ctx, err) {
			return
		}
		o.createDisks(ctx, j, r, func(ctx runtime.Context, err error) {
			if fail(ctx, err) {
				return
			}
			o.deleteAll(ctx, j, r, TaskDeleteVM, oldVM, func(ctx runtime.Context, err error) {
				if fail(ctx, err) {
					return
				}
				st.VM = compute.Ref{}
				o.createVM(ctx, j, r, r.disks, func(ctx runtime.Context, err error) {
					if fail(ctx, err) {
						return
					}
					o.deleteAll(ctx, j, r, TaskDeleteDisks, r.oldDisks, func(ctx runtime.Context, err error) {
						if fail(ctx, err) {
							return
						}
						st.Disks = r.disks
						o.deleteBlobs(ctx, j, r, r.oldBlobs, func(ctx runtime.Context, err error) {
							if fail(ctx, err) {
								return
							}
							st.Blobs = r.blobs
							st.Job = j.ID
							done(ctx, nil)
						})
					})
				})
			})
		})
	})
}

// asrCode is the ASR error code of a failed step.
func asrCode(task string, err error) int {
	var ce *compute.Error
	if errors.As(err, &ce) {
		switch ce.Code {
		case compute.CodeQuota:
			return CodeVMCreate
		case compute.CodeNICFailed:
			return CodeNICCreate
		case compute.CodeBootFailed:
			return CodeHydration
		}
	}
	switch task {
	case TaskNIC:
		return CodeNICCreate
	case TaskVM:
		return CodeVMCreate
	}
	return 0
}
