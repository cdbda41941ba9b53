package harness

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/mastertarget"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	"github.com/v2a-dr/v2a/impl/wire"
	"github.com/v2a-dr/v2a/sim/disk"
	simnet "github.com/v2a-dr/v2a/sim/net"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
	"github.com/v2a-dr/v2a/sim/workload"
)

// The failback side of a world (FAILOVER.md §B): the process server in
// Azure, the on-premises master target, the site-to-site VPN between them,
// and a simulated guest in every failed-over Azure VM whose Mobility agent
// streams back. What runs where:
//
//	az-<vm>   (Azure, private)  the failed-over VM's guest and its agent
//	ps-azure  (Azure, private)  the process server in Azure (processsrv.Relay)
//	cs01:9080 (on premises)     the master target (impl/mastertarget), on
//	                            the configuration server by default
//
// Private hosts on different sites reach each other only through the VPN
// (sim/net), so failback needs it and forward replication (agents → ps01
// → storage, an Internet path) never touches it.

// HostAzurePS is the process server in Azure.
const HostAzurePS = "ps-azure"

// AddrAzurePS is its address.
var AddrAzurePS = runtime.MakeAddr(HostAzurePS, runtime.PortProcess)

// mtRetentionDir is the master target's retention volume on its host's disk.
const mtRetentionDir = "/mt-retention"

// azureChurnRegion is where a failed-over VM's guest changes data in
// Azure by default: the guest's own files below the application's region
// (which starts at 32 MiB), so the application's invariants still judge
// what comes back.
const (
	azureChurnStart = 8 << 20
	azureChurnLen   = 24 << 20
)

// AzureHost is the simulated host of a failed-over VM's guest.
func AzureHost(vm string) string { return "az-" + vm }

// Failback is the failback side of a deployment, made by the first
// failback command.
type Failback struct {
	d        *Deployment
	mtHost   string
	mt       runtime.Addr
	psPublic bool // negative control: the Azure process server on a public endpoint
	started  bool
	// guests are the failed-over VMs' guests, by machine.
	guests map[string]*azureGuest
	// reprotects are the reprotects to on-premises, by machine; toAzure
	// the reprotects back to Azure.
	reprotects map[string]*reprotectRec
	toAzure    map[string]time.Time
	// booted are the on-premises disks as a failback left them, by VM:
	// what round-trip judges (the guest writes on them afterwards).
	booted map[string][][]byte
	// relayCrashed is, by machine, what the process server in Azure had
	// passed on for it before its crashes (its counters are its memory,
	// and a crash loses them): relayBytes adds it, so that the figure
	// stays an upper bound across a crash.
	relayCrashed map[string]int64
}

// azureGuest is the simulated guest of a failed-over VM.
type azureGuest struct {
	machine, vm, host string
	m                 *disk.Machine
	g                 *simGuest
	bootedAt          time.Duration
	// bootDiff are, per disk, the 4 KiB blocks in which the on-premises
	// disk differed from the Azure disk at boot (what the source wrote
	// after the failover point, which reprotect must undo).
	bootDiff []map[int64]bool
	running  bool // its workload runs
}

// reprotectRec is one machine's reprotect to on-premises.
type reprotectRec struct {
	location string
	at       time.Time
	// The machine's VPN bytes are measured twice, each an upper bound:
	// what the process server in Azure forwarded for it (which counts
	// forwards the VPN dropped while it was down) and everything the VPN
	// carried from Azure (which counts other machines' traffic). Their
	// smaller delta is the figure: still an upper bound, so a bound it
	// meets is met.
	vpnStart, vpnAllStart int64 // the two when the reprotect was asked for
	// set when the machine's failback sync completed
	synced            bool
	vpnSynced, vpnAll int64
	changed           int64 // bytes of the blocks changed in Azure since failover, then
	diskBytes         int64
}

// failbackSide returns the deployment's failback side, starting the master
// target on first use.
func (r *Runner) failbackSide() (*Failback, error) {
	d, err := r.deployment()
	if err != nil {
		return nil, err
	}
	return d.failback(), nil
}

// failback returns the deployment's failback side, making it on first
// use (a failback command, or the first failed-over VM's boot).
func (d *Deployment) failback() *Failback {
	if d.fb == nil {
		d.fb = &Failback{d: d, mtHost: HostConfigServer, guests: map[string]*azureGuest{},
			reprotects: map[string]*reprotectRec{}, toAzure: map[string]time.Time{}}
	}
	return d.fb
}

// infra starts the process server in Azure (a VM in the production
// network, with its relay) and the master target on mtHost.
func (fb *Failback) infra(fo *Failover, mtHost string, public bool) (string, error) {
	if fb.started {
		return "", fmt.Errorf("failback-infra: already up (master target %s, process server %s)", fb.mt, AddrAzurePS)
	}
	d := fb.d
	e := d.e
	if _, ok := e.Net.Host(mtHost); !ok {
		return "", fmt.Errorf("failback-infra: mt=%s: no such on-premises host", mtHost)
	}
	if h, _ := e.Net.Host(mtHost); h.Site != simnet.OnPrem {
		return "", fmt.Errorf("failback-infra: mt=%s is not on premises", mtHost)
	}
	if fo.production == (compute.Ref{}) {
		return "", fmt.Errorf("failback-infra: no production network in Azure for the process server: make one with `azure-network … production`")
	}
	// The process server's VM: a NIC in the production network.
	ctx := e.ctx
	nic := compute.Ref{Kind: compute.KindNIC, Group: RecoveryGroup, Name: HostAzurePS + "-nic"}
	net, err := fo.Fabric.Network(ctx, fo.production)
	if err != nil {
		return "", err
	}
	if len(net.Subnets) == 0 {
		return "", fmt.Errorf("failback-infra: the production network has no subnet")
	}
	p, err := fo.Fabric.BeginCreateNIC(ctx, compute.NICSpec{Group: RecoveryGroup, Name: nic.Name, Network: fo.production, Subnet: net.Subnets[0].Name,
		Tags: map[string]string{tagRole: roleProcessServer}})
	if err != nil {
		return "", fmt.Errorf("failback-infra: process server NIC: %w", err)
	}
	if err := fo.await(p, 10*time.Minute); err != nil {
		return "", fmt.Errorf("failback-infra: process server NIC: %w", err)
	}
	if err := e.Net.AddHost(simnet.Host{Name: HostAzurePS, Site: simnet.Azure, Public: public}); err != nil {
		return "", err
	}
	fb.mtHost, fb.mt, fb.psPublic = mtHost, runtime.MakeAddr(mtHost, runtime.PortTarget), public
	// The retention volume is a disk of its own on the master target's
	// host (a crash of the host loses what was not fsynced on it too).
	mtDisk, err := d.HostDisk(mtHost+mtRetentionDir, mtRetentionDir)
	if err != nil {
		return "", err
	}
	// The master target moves datastore files: against vcsim it dials the
	// simulator's SDK endpoint as it would a real vCenter's (the
	// in-process client cannot transfer files), and reads and writes its
	// disks in place as a master target with them attached does: vcsim's
	// datastores are directories on this machine, mounted on the client.
	var vc vsphere.Client = d.vc
	if e.VCSim != nil {
		u := e.VCSim.URL()
		u.User = nil
		c, err := vcenter.Dial(ctx, u.String(), simvs.User, simvs.Password, true)
		if err != nil {
			return "", fmt.Errorf("failback-infra: the master target's vCenter connection: %w", err)
		}
		e.closers = append(e.closers, func() { c.Close(context.Background()) })
		for _, ds := range e.Inventory.Datastores {
			c.Mount(ds.Name, e.VCSim.DatastoreDir(ds.Name))
		}
		vc = c
	}
	mt := fb.mt
	spawn := []struct {
		addr runtime.Addr
		f    runtime.Factory
	}{
		{mt, func() runtime.Actor {
			t, err := mastertarget.New(mastertarget.Config{VC: vc, FS: mtDisk, RetentionDir: mtRetentionDir, ConfigServer: AddrConfigServer})
			if err != nil {
				panic(err) // the configuration is the harness's own
			}
			return t
		}},
		{AddrAzurePS, func() runtime.Actor {
			return processsrv.NewRelay(processsrv.RelayConfig{Name: HostAzurePS, Target: mt, ConfigServer: AddrConfigServer})
		}},
	}
	for _, s := range spawn {
		if err := e.Sim.Spawn(s.addr, s.f); err != nil {
			return "", err
		}
	}
	fb.started = true
	e.Trace.Add(e.Sim.Elapsed(), "harness", "failback-infra", fmt.Sprintf("mt=%s ps=%s public=%v", mt, AddrAzurePS, public))
	return fmt.Sprintf("master target %s (retention %s), process server in Azure %s (NIC %s in %s)\n",
		mt, mtRetentionDir, AddrAzurePS, nic.Name, fo.production.Name), nil
}

// Roles of fabric resources that are not failed-over VMs.
const (
	tagRole           = "v2a-role"
	roleProcessServer = "process-server"
)

// await polls a fabric operation until it is done, running the world.
func (fo *Failover) await(p compute.Pending, limit time.Duration) error {
	var res compute.Result
	var err error
	fo.d.e.RunUntil(limit, func() bool {
		res, err = fo.Fabric.Poll(fo.d.e.ctx, p)
		return err != nil || res.Done
	})
	if err != nil {
		return err
	}
	if !res.Done {
		return fmt.Errorf("not done after %s", limit)
	}
	return res.Err
}

// bootAzureGuest is called when a failed-over (not test) VM boots in the
// simulated fabric: its guest's disks are copied from the Azure disks, and
// its Mobility agent starts (at once, from a scheduled event: the Booter
// must not start actors).
func (d *Deployment) bootAzureGuest(vm compute.VM, disks []io.ReaderAt) error {
	machine := vm.Tags[compute.TagSource]
	fb := d.failback()
	if g := fb.guests[machine]; g != nil {
		return nil // booted again (a start after a deallocate): the same guest
	}
	e := d.e
	src := e.Machines[machine]
	dir := filepath.Join(e.dir, "azure-guests", vm.Ref.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var paths []string
	ag := &azureGuest{machine: machine, vm: vm.Ref.Name, host: AzureHost(vm.Ref.Name), bootedAt: e.Sim.Elapsed()}
	for i, rd := range disks {
		p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		size := src.Size(i)
		diff, err := copyAzureDisk(p, rd, size, src.Device(i))
		if err != nil {
			return fmt.Errorf("azure guest %s disk %d: %w", vm.Ref.Name, i, err)
		}
		paths = append(paths, p)
		ag.bootDiff = append(ag.bootDiff, diff)
	}
	m, err := disk.Open(azureName(machine), paths, e.Sim.Elapsed)
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() { m.Close() })
	m.IgnoreGate(d.opts.IgnoreHold)
	ag.m = m
	ag.g = &simGuest{e: e, m: m, name: azureName(machine)}
	fb.guests[machine] = ag
	// Known by its guest name, so that the filter driver's own hold
	// timer (armHoldExpiry) finds it.
	d.guests[azureName(machine)] = ag.g
	e.Sim.After(0, "boot/"+ag.host, func() {
		if err := d.startAzureAgent(ag); err != nil {
			e.Trace.Add(e.Sim.Elapsed(), ag.host, "agent-start-failed", err.Error())
		}
	})
	return nil
}

// bootChunk is how much of a disk the boot of an Azure guest moves at a
// time: disks of any size boot in bounded memory.
const bootChunk = 4 << 20

// copyAzureDisk makes the Azure guest's disk file at path, size bytes: a
// sparse file with the Azure disk's data written where it has data. It
// returns the 4 KiB blocks in which the on-premises disk src differs from
// it: only blocks where either holds data can (everywhere else both read
// as zeros), so both are read only there.
func copyAzureDisk(path string, az io.ReaderAt, size int64, src blockdev.Device) (map[int64]bool, error) {
	// Made afresh: only the data is written, the rest must be holes.
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if err := disk.Create(path, size); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	extents := func(d any) ([]blockdev.Extent, error) {
		if sp, ok := d.(blockdev.Sparse); ok {
			return sp.DataExtents(0, size)
		}
		return blockdev.AllData(0, size), nil
	}
	azExt, err := extents(az)
	if err != nil {
		return nil, err
	}
	srcExt, err := extents(src)
	if err != nil {
		return nil, err
	}
	diff := map[int64]bool{}
	a, b := make([]byte, bootChunk), make([]byte, bootChunk)
	const bs = blockdev.BlockSize
	for _, e := range unionBlocks(azExt, srcExt, size) {
		for off := e.Off; off < e.End(); off += bootChunk {
			n := min(int64(bootChunk), e.End()-off)
			ab, sb := a[:n], b[:n]
			if _, err := az.ReadAt(ab, off); err != nil && err != io.EOF {
				return nil, err
			}
			if _, err := src.ReadAt(sb, off); err != nil {
				return nil, err
			}
			if !blockdev.IsZero(ab) {
				if _, err := f.WriteAt(ab, off); err != nil {
					return nil, err
				}
			}
			for lo := int64(0); lo < n; lo += bs {
				if !bytes.Equal(ab[lo:lo+bs], sb[lo:lo+bs]) {
					diff[(off+lo)/bs] = true
				}
			}
		}
	}
	return diff, f.Close()
}

// unionBlocks is the union of two sorted extent lists, widened to whole
// 4 KiB blocks within [0, size).
func unionBlocks(x, y []blockdev.Extent, size int64) []blockdev.Extent {
	const bs = blockdev.BlockSize
	all := append(append([]blockdev.Extent(nil), x...), y...)
	slices.SortFunc(all, func(p, q blockdev.Extent) int { return cmp.Compare(p.Off, q.Off) })
	var out []blockdev.Extent
	for _, e := range all {
		lo, hi := e.Off/bs*bs, min((e.End()+bs-1)/bs*bs, size)
		if k := len(out) - 1; k >= 0 && lo <= out[k].End() {
			out[k].Len = max(out[k].End(), hi) - out[k].Off
			continue
		}
		out = append(out, blockdev.Extent{Off: lo, Len: hi - lo})
	}
	return out
}

// azureName is the workload driver's name of a machine's Azure guest.
func azureName(machine string) string { return machine + "@azure" }

// startAzureAgent starts the Mobility agent in a failed-over VM: the same
// machine, registering again from Azure (through the VPN, if there is
// one).
func (d *Deployment) startAzureAgent(ag *azureGuest) error {
	e := d.e
	if err := e.Net.AddHost(simnet.Host{Name: ag.host, Site: simnet.Azure}); err != nil && !strings.Contains(err.Error(), "twice") {
		return err
	}
	fs, err := d.HostDisk(ag.host, agentDir)
	if err != nil {
		return err
	}
	cfg := agent.Config{Machine: ag.machine, InstanceUUID: "azure-" + ag.vm, ConfigServer: AddrConfigServer,
		VaultID: d.opts.VaultID, Passphrase: d.opts.Passphrase, StateDir: agentDir, FS: fs, Guest: ag.g,
		DataBudget: d.opts.AgentDataBytes, MetaBudget: d.opts.AgentMetaRecs, DrainInterval: d.opts.AgentDrain,
		ItemBytes: SimItemBytes,
		// Over the VPN a retransmission asks the master target where it
		// stands first: a drop that lost acknowledgements costs no resend.
		ProbeFirst: !d.opts.BlindRetransmit}
	e.Trace.Add(e.Sim.Elapsed(), ag.host, "boot", fmt.Sprintf("machine=%s disks=%d", ag.machine, ag.m.Disks()))
	return e.Sim.Spawn(runtime.MakeAddr(ag.host, runtime.PortTag), func() runtime.Actor { return agent.New(cfg) })
}

// azureWorkload starts (or stops) the guest application in a failed-over
// VM: random writes to [at, at+n) of its first disk (by default its own
// files, azureChurn*), at churn bytes a second.
func (fb *Failback) azureWorkload(machine string, churn, at, n int64, stop bool) error {
	ag := fb.guests[machine]
	if ag == nil {
		return fmt.Errorf("%s has not failed over to Azure (no VM booted for it): %s", machine, fb.guestList())
	}
	e := fb.d.e
	name := azureName(machine)
	if stop {
		if !ag.running {
			return fmt.Errorf("%s's Azure guest runs no workload", machine)
		}
		e.Workloads.Stop(name)
		ag.running = false
		return nil
	}
	if ag.running {
		return fmt.Errorf("%s's Azure guest already runs a workload", machine)
	}
	wl, err := workload.New(workload.Spec{Kind: "random", ChurnBps: churn, RegionStart: at, RegionLen: n},
		&tracedWriter{e: e, m: ag.m})
	if err != nil {
		return err
	}
	r := e.Sim.SubRand("workload/" + name)
	e.Workloads.Start(name, wl, r, time.Duration(r.IntN(1000))*time.Millisecond)
	ag.running = true
	e.Trace.Add(e.Sim.Elapsed(), ag.host, "workload", fmt.Sprintf("random churn=%d", churn))
	return nil
}

func (fb *Failback) guestList() string {
	if len(fb.guests) == 0 {
		return "no VM has failed over yet"
	}
	return "failed over: " + strings.Join(sortedKeys(fb.guests), ", ")
}

// vpnAzureToOnPrem is what the VPN carried from Azure to on-premises.
func (fb *Failback) vpnAzureToOnPrem() int64 {
	b, _ := fb.d.e.Net.Carried(simnet.PathVPN, simnet.Azure, simnet.OnPrem)
	return b
}

// relayBytes is what the process server in Azure sent the master target
// for a machine (over the VPN: the path check judges that it was).
func (fb *Failback) relayBytes(machine string) int64 {
	if !fb.started {
		return 0
	}
	st, err := fb.relayStatus()
	if err != nil {
		// Down (crashed and not restarted yet): it passes nothing on, and
		// what it had is kept (a sync may complete meanwhile with what
		// was in flight: swarm seed 35).
		return fb.relayCrashed[machine]
	}
	for _, pm := range st.PerMachine {
		if pm.Machine == machine {
			return fb.relayCrashed[machine] + pm.ItemBytes
		}
	}
	return fb.relayCrashed[machine]
}

// noteRelayCrash is called just before the process server in Azure
// crashes: it keeps what the relay had passed on for each machine (see
// relayCrashed).
func (fb *Failback) noteRelayCrash() {
	if fb == nil || !fb.started {
		return
	}
	st, err := fb.relayStatus()
	if err != nil {
		return
	}
	if fb.relayCrashed == nil {
		fb.relayCrashed = map[string]int64{}
	}
	for _, pm := range st.PerMachine {
		fb.relayCrashed[pm.Machine] += pm.ItemBytes
	}
}

// changedBytes is the bytes of the 4 KiB blocks changed in Azure since a
// machine failed over: those its Azure guest wrote, and those where the
// on-premises disk differed from the failover point.
func (ag *azureGuest) changedBytes() int64 {
	sets := make([]map[int64]bool, len(ag.bootDiff))
	for i, s := range ag.bootDiff {
		sets[i] = map[int64]bool{}
		for b := range s {
			sets[i][b] = true
		}
	}
	for _, w := range ag.m.Oracle().Writes() {
		for b := w.Off / blockdev.BlockSize; b*blockdev.BlockSize < w.Off+int64(w.Len); b++ {
			sets[w.Disk][b] = true
		}
	}
	var n int64
	for _, s := range sets {
		n += int64(len(s)) * blockdev.BlockSize
	}
	return n
}

// observe records, for every reprotect whose sync has completed since the
// last look, the VPN bytes and the changed bytes then.
func (fb *Failback) observe() {
	if fb == nil {
		return
	}
	for _, m := range sortedKeys(fb.reprotects) {
		rec := fb.reprotects[m]
		if rec.synced {
			continue
		}
		ms, ok := fb.d.MachineStatus(m)
		if !ok || string(ms.State) != "protected" {
			continue
		}
		rec.synced = true
		rec.vpnSynced, rec.vpnAll = fb.relayBytes(m), fb.vpnAzureToOnPrem()
		if ag := fb.guests[m]; ag != nil {
			rec.changed = ag.changedBytes()
		}
		fb.d.e.Trace.Add(fb.d.e.Sim.Elapsed(), "harness", "reprotect-synced", fmt.Sprintf("%s vpn=%d relay=%d tunnel=%d changed=%d", m, rec.vpnBytes(),
			rec.vpnSynced-rec.vpnStart, rec.vpnAll-rec.vpnAllStart, rec.changed))
	}
}

// vpnBytes is the machine's bytes over the VPN during its sync (an upper
// bound: see vpnStart).
func (rec *reprotectRec) vpnBytes() int64 {
	return min(rec.vpnSynced-rec.vpnStart, rec.vpnAll-rec.vpnAllStart)
}

// reprotect asks the configuration server to reprotect machines.
func (fb *Failback) reprotect(machines []string, direction, location, host, datastore string) (proto.Reply, error) {
	d := fb.d
	req := &proto.Reprotect{Req: fmt.Sprintf("reprotect-%d", len(d.portal.replies)+1), Machines: machines, Direction: direction}
	if direction == proto.ReprotectToOnPrem {
		req.MasterTarget, req.ProcessServer, req.Location = string(fb.mt), string(AddrAzurePS), location
		req.Host, req.Datastore = host, datastore
	}
	rep, err := d.requestCS(req, req.Req)
	if err != nil {
		return rep, err
	}
	now := d.e.Sim.Now()
	for _, m := range machines {
		switch direction {
		case proto.ReprotectToOnPrem:
			rec := &reprotectRec{location: location, at: now, vpnStart: fb.relayBytes(m), vpnAllStart: fb.vpnAzureToOnPrem()}
			if src := d.e.Machines[m]; src != nil {
				for i := range src.Disks() {
					rec.diskBytes += src.Size(i)
				}
			}
			fb.reprotects[m] = rec
			// Measured the moment the sync completes, not whenever the
			// script next looks: log replication after it is not the
			// reprotect's cost.
			e := d.e
			e.Trace.OnLine(HostConfigServer, "machine state machine="+m+" from=initial-sync to=protected", func() {
				e.Sim.After(0, "reprotect-synced/"+m, fb.observe)
			})
		case proto.ReprotectToAzure:
			fb.toAzure[m] = now
		}
	}
	return rep, nil
}

// requestCS sends a request to the configuration server and runs until
// its reply (Req echoed) arrives.
func (d *Deployment) requestCS(m wire.Msg, req string) (proto.Reply, error) {
	return d.ask(AddrConfigServer, "the configuration server", "configsrv: ", 10*time.Minute, m, req)
}

// ask sends a portal request to a component (who, for errors) and runs
// until its reply (Req echoed) arrives or limit passes. A refusal is an
// error saying why, without the component's package prefix.
func (d *Deployment) ask(to runtime.Addr, who, prefix string, limit time.Duration, m wire.Msg, req string) (proto.Reply, error) {
	seen := len(d.portal.replies)
	if err := d.e.Sim.Inject(0, to, runtime.Message{From: AddrPortal, Data: wire.Encode(m)}); err != nil {
		return proto.Reply{}, err
	}
	var rep *proto.Reply
	d.e.RunUntil(limit, func() bool {
		for i := seen; i < len(d.portal.replies); i++ {
			if d.portal.replies[i].Req == req {
				rep = &d.portal.replies[i]
				return true
			}
		}
		return false
	})
	if rep == nil {
		return proto.Reply{}, fmt.Errorf("%s did not answer %s within %s", who, req, fmtDur(limit))
	}
	if !rep.OK {
		return *rep, fmt.Errorf("refused: %s", strings.TrimPrefix(rep.Reason, prefix))
	}
	return *rep, nil
}

// targetStatus is the master target's status.
func (fb *Failback) targetStatus() (mastertarget.Status, error) {
	if !fb.started {
		return mastertarget.Status{}, fmt.Errorf("no master target yet: run `failback-infra` first")
	}
	return runtime.InspectAs(fb.d.e.ctx, fb.d.e.Sim, fb.mt, func(a runtime.Actor) mastertarget.Status {
		return a.(*mastertarget.Target).Status()
	})
}

// relayStatus is the Azure process server's counters.
func (fb *Failback) relayStatus() (processsrv.RelayStatus, error) {
	if !fb.started {
		return processsrv.RelayStatus{}, fmt.Errorf("no process server in Azure yet: run `failback-infra` first")
	}
	return runtime.InspectAs(fb.d.e.ctx, fb.d.e.Sim, AddrAzurePS, func(a runtime.Actor) processsrv.RelayStatus {
		return a.(*processsrv.Relay).Status()
	})
}

// poweredVC is the vSphere client the components use in a simulated world:
// powering a VM off stops its guest (its application and agent), powering
// it on boots the guest again on its disks — as they are then, which
// failback may have rewritten.
type poweredVC struct {
	vsphere.Client
	d *Deployment
}

func (p *poweredVC) name(ctx context.Context, ref vsphere.VMRef) string {
	vm, err := p.Client.VM(ctx, ref)
	if err != nil {
		return ""
	}
	return vm.Name
}

func (p *poweredVC) PowerOff(ctx context.Context, ref vsphere.VMRef) error {
	if err := p.Client.PowerOff(ctx, ref); err != nil {
		return err
	}
	name := p.name(ctx, ref)
	p.d.e.Sim.After(0, "power-off/"+name, func() { p.d.guestPowerOff(name) })
	return nil
}

func (p *poweredVC) PowerOn(ctx context.Context, ref vsphere.VMRef) error {
	if err := p.Client.PowerOn(ctx, ref); err != nil {
		return err
	}
	vm, err := p.Client.VM(ctx, ref)
	if err != nil {
		return nil // powered on; a guest the world cannot name does not boot
	}
	p.d.e.Sim.After(0, "power-on/"+vm.Name, func() { p.d.guestPowerOn(vm) })
	return nil
}

// guestPowerOff stops a machine's guest: its workload stops, its agent
// process goes down with the machine.
func (d *Deployment) guestPowerOff(name string) {
	g := d.guests[name]
	if g == nil || g.off {
		return
	}
	g.off = true
	d.e.Workloads.Stop(name)
	d.e.Sim.Crash(name)
	d.e.Trace.Add(d.e.Sim.Elapsed(), name, "power-off", "guest stopped")
}

// guestPowerOn boots a VM's guest: its disks are opened afresh (a new
// history begins: what the guest finds is what failback wrote) and its
// agent starts.
//
// The guest known by the VM's name may be another machine: the physical
// server a failback replaced with a new VM (it never was in vCenter, so
// the failover could not shut it down: it is retired now, its name is the
// VM's), or a VM deleted in vCenter whose alternate-location successor
// has disks of its own. Then the new VM's agent is a fresh install: its
// own instance UUID, a VM (not physical), no state of the old machine's.
func (d *Deployment) guestPowerOn(vm vsphere.VM) {
	e := d.e
	name := vm.Name
	g := d.guests[name]
	var paths []string
	for i := 0; e.VCSim != nil; i++ {
		p, err := e.VCSim.DiskFile(name, i)
		if err != nil {
			break
		}
		paths = append(paths, p)
	}
	// The same machine: the same disk files and, once its agent is
	// installed, the same VM (vcsim gives a VM made again under a deleted
	// one's name the same file names).
	same := g != nil && g.m != nil && g.m.Disks() == len(paths) && (!g.installed || g.agentCfg.InstanceUUID == vm.InstanceUUID)
	for i := 0; same && i < len(paths); i++ {
		same = g.m.Path(i) == paths[i]
	}
	if g != nil && !g.off {
		if same {
			return // already running
		}
		e.Trace.Add(e.Sim.Elapsed(), name, "retired", fmt.Sprintf("a new VM %s (%s) takes the name of this machine", name, vm.Ref))
		d.guestPowerOff(name)
	}
	if len(paths) == 0 {
		e.Trace.Add(e.Sim.Elapsed(), name, "power-on", "no disks: no guest to boot")
		return
	}
	m, err := disk.Open(name, paths, e.Sim.Elapsed)
	if err != nil {
		e.Trace.Add(e.Sim.Elapsed(), name, "power-on", "guest disks: "+err.Error())
		return
	}
	e.closers = append(e.closers, func() { m.Close() })
	if old := e.Machines[name]; old != nil && old != m {
		// A new history begins: the Azure points of the old one (the
		// failover's committed point, a point kept across the round
		// trip) are still judged by the writes that made them.
		if d.pastHistories == nil {
			d.pastHistories = map[string][]pastHistory{}
		}
		d.pastHistories[name] = append(d.pastHistories[name], pastHistory{until: e.Sim.Now(), oracle: old.Oracle()})
	}
	e.Machines[name] = m
	m.IgnoreGate(d.opts.IgnoreHold)
	if g == nil {
		g = &simGuest{e: e, m: m, name: name}
		d.guests[name] = g
	}
	g.m, g.off, g.filter = m, false, nil
	e.Trace.Add(e.Sim.Elapsed(), name, "power-on", fmt.Sprintf("guest booted on %d disks (new machine %v)", len(paths), !same))
	if fb := d.fb; fb != nil && len(fb.guests) > 0 {
		// Booted by a failback (a machine that failed over): keep the
		// disks as it left them, for round-trip.
		var imgs [][]byte
		for i := range m.Disks() {
			b := make([]byte, m.Size(i))
			if err := m.Read(i, 0, b); err != nil {
				e.Trace.Add(e.Sim.Elapsed(), name, "power-on", "snapshot: "+err.Error())
				imgs = nil
				break
			}
			imgs = append(imgs, b)
		}
		if fb.booted == nil {
			fb.booted = map[string][][]byte{}
		}
		fb.booted[name] = imgs
	}
	if _, ok := e.Net.Host(name); !ok {
		e.Net.AddHost(simnet.Host{Name: name, Site: simnet.OnPrem})
	}
	if !same && g.installed {
		// The new VM's agent: a fresh install in it.
		if fs, ok := d.disks[name]; ok {
			if err := fs.Wipe(agentDir); err != nil {
				e.Trace.Add(e.Sim.Elapsed(), name, "power-on", "agent state: "+err.Error())
				return
			}
		}
		g.agentCfg.InstanceUUID, g.agentCfg.Physical = vm.InstanceUUID, false
	}
	if e.Sim.Actor(AgentAddr(name)) != nil || g.installed {
		e.Sim.Restart(name)
		return
	}
	if err := d.InstallAgent(name); err != nil {
		e.Trace.Add(e.Sim.Elapsed(), name, "power-on", "agent: "+err.Error())
	}
}

// pastHistory is a write history a machine's name had until a failback
// booted a new guest on failed-back disks.
type pastHistory struct {
	until  time.Time
	oracle *disk.Oracle
}

// oracleAt is the write history an Azure point of machine m made at t
// belongs to: the history the name had then (a point is made from writes
// logged before its bookmark, so one made before a new history began is
// the old history's), else the machine's current one; nil without a
// simulated machine.
func (d *Deployment) oracleAt(m string, t time.Time) *disk.Oracle {
	for _, h := range d.pastHistories[m] {
		if t.Before(h.until) {
			return h.oracle
		}
	}
	if mach := d.e.Machines[m]; mach != nil {
		return mach.Oracle()
	}
	return nil
}

// failbackMTHost is the master target's host: the configuration server's
// unless failback-infra chose another.
func (d *Deployment) failbackMTHost() string {
	if d.fb != nil && d.fb.started {
		return d.fb.mtHost
	}
	return HostConfigServer
}

// onPremBoot is the orchestrator's health check of a VM powered on on
// premises by a failback: its guest booted on the failed-back disks, and
// the application recovers on them.
func (d *Deployment) onPremBoot(_ context.Context, vm, machine string) error {
	g := d.guests[vm]
	if g == nil || g.off {
		return fmt.Errorf("the guest of %s did not boot", vm)
	}
	if wl := d.e.Workloads.Workload(machine); wl != nil {
		if _, err := wl.Check(machineImages(g.m), false); err != nil {
			return fmt.Errorf("%s does not recover on %s: %w", wl.Name(), vm, err)
		}
	}
	return nil
}

// RunInGuest runs a program in a VM's guest. Against a vCenter reached by
// URL (a real one, or `v2a vcsim --guest-exec`) the installer runs out
// there, and the world's simulated guest starts its Mobility agent once
// it exits with 0, as onGuestProgram does for the in-process vcsim.
func (p *poweredVC) RunInGuest(ctx context.Context, ref vsphere.VMRef, auth vsphere.GuestAuth, program, args string) (int, error) {
	code, err := p.Client.RunInGuest(ctx, ref, auth, program, args)
	if err != nil || code != 0 || p.d.e.VCSim != nil || !strings.Contains(program, "ASR") {
		return code, err
	}
	name := p.name(ctx, ref)
	if _, ok := p.d.e.Machines[name]; ok {
		p.d.e.Sim.After(0, "install/"+name, func() {
			if err := p.d.InstallAgent(name); err != nil {
				p.d.e.Trace.Add(p.d.e.Sim.Elapsed(), "harness", "error", fmt.Sprintf("install agent on %s: %v", name, err))
			}
		})
	}
	return code, nil
}
