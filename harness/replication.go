package harness

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
	"github.com/v2a-dr/v2a/sim/disk"
	simnet "github.com/v2a-dr/v2a/sim/net"
	"github.com/v2a-dr/v2a/sim/simfs"
)

// Addresses of the deployment's actors.
var (
	AddrConfigServer  = runtime.MakeAddr(HostConfigServer, runtime.PortConfig)
	AddrProcessServer = runtime.MakeAddr(HostProcessServer, runtime.PortProcess)
	AddrAzure         = runtime.MakeAddr(HostService, runtime.PortConfig)
	AddrPortal        = runtime.MakeAddr(HostPortal, runtime.PortConfig)
)

// HostPortal is where management requests come from (the harness, as the
// Azure portal would).
const HostPortal = "portal"

// AgentAddr is the Mobility agent's address on a machine.
func AgentAddr(machine string) runtime.Addr { return runtime.MakeAddr(machine, runtime.PortTag) }

// DeployOptions configure the replication deployment.
type DeployOptions struct {
	VaultID        string
	Passphrase     string
	CacheCapBytes  int64 // process server cache disk; 0: default
	AgentDataBytes int64 // agent data-mode budget; 0: default
	AgentMetaRecs  int64 // agent metadata-mode budget; 0: default
	// AgentDrain is how often agents drain their change log to the process
	// server. 0: DefaultSimDrain. (The agent's own default is 2 s; a
	// simulation drains less often because every item costs blob-storage
	// round trips of wall time, and the 5-minute bookmark schedule does not
	// need more.)
	AgentDrain time.Duration
	// WrapStore, when set, wraps the blob store the components use (not
	// the one the checks read through): tests use it to inject faults or
	// to break the system on purpose and show that a check notices.
	WrapStore func(blob.Store) blob.Store
	// IgnoreHold makes the simulated guests write through the filter's
	// hold: the negative control of the consistent-cut check (a prepare
	// phase that holds nothing).
	IgnoreHold bool
	// BlindRetransmit makes the agents in failed-over VMs resend every
	// unacknowledged item at a retransmission timeout instead of asking
	// where the master target stands first (agent.Config.ProbeFirst): the
	// negative control of the resume-after-VPN-drop test.
	BlindRetransmit bool
	// MemoryOnlyConfigServer runs the configuration server without its
	// database: a restart forgets everything (the negative control of the
	// cs-kept check). By default cs01 keeps its state in a SQLite file in
	// the world's directory, reopened at every restart.
	MemoryOnlyConfigServer bool
}

// DefaultSimDrain is the agents' drain interval in simulated deployments.
const DefaultSimDrain = 60 * time.Second

// SimItemBytes is the agents' largest stream item in simulated
// deployments (the agent's own default is 1 MiB): with a drain a minute,
// one item carries a minute of a machine's changes.
const SimItemBytes = 4 << 20

// Deployment is the replication system deployed in a world: configuration
// server, process server and Azure side, and an agent per machine once
// installed.
type Deployment struct {
	e *Env
	// machineCrashes are when each protected machine crashed (the machine,
	// not its agent process): the schedule check excuses a gap across one.
	machineCrashes map[string][]time.Time
	// captureCrashes are the crashes of protected machines (CheckCapture).
	captureCrashes []*captureCrash
	// csDB is the configuration server's database file; csStore its open
	// handle (nil when memory-only or not open); csBefore the server's
	// status as the last `fault crash host=cs01` found it (cs-kept).
	csDB     string
	csStore  *sqlite.Store
	csBefore *configsrv.Status
	opts     DeployOptions
	keys     vault.Keys
	guests   map[string]*simGuest
	// guestPassphrase is what the installer on a machine is given (a
	// scenario may give one the wrong passphrase).
	guestPassphrase map[string]string
	portal          *portal
	// made records every recovery point the Azure side reported (the
	// retention check's other direction).
	made *pointRecord
	// freeze and thaw reach a multi-machine workload (the order flow),
	// which is not any one machine's.
	freeze func(machine string) error
	thaw   func(machine string)
	// disks are the hosts' own disks (sim/simfs), where components keep
	// their files: ps01's cache, each protected machine's .hrl and agent
	// state. A host crash loses what was not fsynced on them.
	disks   map[string]*simfs.FS
	crashes int // disk crashes so far: each draws from its own sub-seed
	// fo is the failover side, made by the first failover command.
	fo *Failover
	// fb is the failback side, made by the first failback command (or the
	// first failed-over VM's boot).
	fb *Failback
	// vc is the vSphere client the components use: vCenter's, with the
	// simulated guests powered with their VMs (poweredVC).
	vc vsphere.Client
	// pastHistories are the write histories a machine's name had before
	// a failback booted a new one (guestPowerOn), oldest first: the
	// points the Azure side made then are judged by them (oracleAt).
	pastHistories map[string][]pastHistory
}

// Paths on the hosts' disks (every host has its own).
const (
	psCacheDir = "/ps01-cache"
	agentDir   = "/agent"
)

// HostDisk returns a host's own disk, creating it (empty, holding dir
// durably) on first use.
func (d *Deployment) HostDisk(host, dir string) (*simfs.FS, error) {
	if fs, ok := d.disks[host]; ok {
		return fs, nil
	}
	fs := simfs.New()
	if err := fs.Wipe(dir); err != nil {
		return nil, err
	}
	d.disks[host] = fs
	return fs, nil
}

// crashDisk is a power loss of host's disk: unsynced writes and directory
// entries are lost, and the last partly written sector of an unsynced
// append may be torn.
func (d *Deployment) crashDisk(host string) {
	fs := d.disks[host]
	if fs == nil {
		return
	}
	d.crashes++
	before := fs.Stats()
	fs.Crash(d.e.Sim.SubRand(fmt.Sprintf("simfs/%s/%d", host, d.crashes)))
	after := fs.Stats()
	d.e.Trace.Add(d.e.Sim.Elapsed(), host, "disk-crash", fmt.Sprintf("lost=%d torn=%d", after.LostBytes-before.LostBytes, after.TornBytes-before.TornBytes))
}

// Deploy starts the configuration server, the process server and the
// Azure side, and hooks vcsim's guest operations so that a push install
// starts the agent in the simulated guest.
func (e *Env) Deploy(opts DeployOptions) (*Deployment, error) {
	if e.Deployment != nil {
		return nil, fmt.Errorf("harness: already deployed")
	}
	if opts.VaultID == "" {
		opts.VaultID = "vault-1"
	}
	if opts.Passphrase == "" {
		opts.Passphrase = "v2a-demo-passphrase"
	}
	if opts.AgentDrain == 0 {
		opts.AgentDrain = DefaultSimDrain
	}
	keys, err := vault.Derive(opts.VaultID, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	store, prefix, err := e.Storage()
	if err != nil {
		return nil, err
	}
	if opts.WrapStore != nil {
		store = opts.WrapStore(store)
	}
	d := &Deployment{e: e, opts: opts, csDB: filepath.Join(e.dir, "cs01.db"), keys: keys, guests: map[string]*simGuest{}, guestPassphrase: map[string]string{}, portal: &portal{},
		made: newPointRecord(), disks: map[string]*simfs.FS{}}
	d.vc = &poweredVC{Client: e.VC, d: d}
	if err := e.Net.AddHost(simnet.Host{Name: HostPortal, Site: simnet.OnPrem}); err != nil {
		return nil, err
	}
	for name, m := range e.Machines {
		d.guests[name] = &simGuest{e: e, m: m, name: name}
		m.IgnoreGate(opts.IgnoreHold)
	}
	d.freeze = func(m string) error {
		if o := e.orderFlowOn(m); o != nil {
			return o.FreezeMachine(m)
		}
		return nil
	}
	d.thaw = func(m string) {
		if o := e.orderFlowOn(m); o != nil {
			o.ThawMachine(m)
		}
	}
	psDisk, err := d.HostDisk(HostProcessServer, psCacheDir)
	if err != nil {
		return nil, err
	}
	// A crash of a host that is not a protected machine (ps01; the Azure
	// side keeps no files; cs01's database is a real SQLite file whose
	// commits are durable, see openConfigStore) is a crash of the
	// machine: its disk loses what was not fsynced. On a protected machine, "crash host=" is
	// the agent process only — the filter driver and the page cache live
	// on (see MachineCrash for the machine itself).
	e.Sim.OnCrash(func(host string) {
		if _, machine := d.guests[host]; !machine {
			d.crashDisk(host)
		}
		// Extra volumes of the host (the master target's retention
		// volume) go down with it.
		for _, k := range sortedKeys(d.disks) {
			if strings.HasPrefix(k, host+"/") {
				d.crashDisk(k)
			}
		}
	})
	guest := e.Inventory.Guest()
	spawn := []struct {
		addr runtime.Addr
		f    runtime.Factory
	}{
		{AddrPortal, func() runtime.Actor { return d.portal }},
		{AddrAzure, func() runtime.Actor {
			// The process server's Uploaded hints trigger a listing at once;
			// the poll is the fallback for lost hints, and every listing is
			// a storage round trip of wall time in a simulation.
			return azuresvc.New(azuresvc.Config{Store: store, StoragePeer: HostStorage, ContainerPrefix: prefix,
				Key: keys.Data, ConfigServer: AddrConfigServer, PollEvery: 30 * time.Second})
		}},
		{AddrProcessServer, func() runtime.Actor {
			return processsrv.New(processsrv.Config{Name: HostProcessServer, CacheDir: psCacheDir, FS: psDisk, CacheCapBytes: opts.CacheCapBytes,
				Store: store, StoragePeer: HostStorage, ContainerPrefix: prefix, Key: keys.Data, Codec: batch.CodecS2,
				Azure: AddrAzure, ConfigServer: AddrConfigServer})
		}},
		{AddrConfigServer, func() runtime.Actor {
			return &csTap{rec: d.made, azure: AddrAzure, Server: configsrv.New(configsrv.Config{VaultID: opts.VaultID, Passphrase: opts.Passphrase, VSphere: d.vc,
				ProcessServer: AddrProcessServer, Azure: AddrAzure,
				InstallAuth: vsphere.GuestAuth{Username: guest.Username, Password: guest.Password}, Store: d.openConfigStore()})}
		}},
	}
	e.closers = append(e.closers, d.closeConfigStore)
	for _, s := range spawn {
		if err := e.Sim.Spawn(s.addr, s.f); err != nil {
			return nil, err
		}
	}
	if e.VCSim != nil {
		e.VCSim.OnGuestProgram(d.onGuestProgram)
		for _, vm := range e.VMs {
			e.VCSim.SetGuestLogin(vm.Name, guest.Username, guest.Password)
		}
	}
	e.Deployment = d
	e.Trace.Add(e.Sim.Elapsed(), "harness", "deploy", fmt.Sprintf("vault=%s cs=%s ps=%s azure=%s", opts.VaultID, AddrConfigServer, AddrProcessServer, AddrAzure))
	return d, nil
}

// onGuestProgram is vcsim's guest-operation hook: the configuration
// server's push install runs the installer in the guest, which installs and
// starts the Mobility agent.
func (d *Deployment) onGuestProgram(vm, path, args string) (int, error) {
	if !strings.Contains(path, "ASR") {
		return 127, nil // not our installer: "command not found"
	}
	if _, ok := d.e.Machines[vm]; !ok {
		return 1, nil // a VM the world simulates no guest for
	}
	if err := d.InstallAgent(vm); err != nil {
		return 1, nil
	}
	return 0, nil
}

// InstallAgent installs and starts the Mobility agent on a machine, as the
// push install does for a VM or an administrator does by hand on a
// physical server. A second install of a running agent does nothing.
func (d *Deployment) InstallAgent(machine string) error {
	g := d.guests[machine]
	if g == nil {
		return fmt.Errorf("harness: no machine %q", machine)
	}
	addr := AgentAddr(machine)
	if d.e.Sim.Actor(addr) != nil || g.installed {
		return nil
	}
	pass := d.opts.Passphrase
	if p, ok := d.guestPassphrase[machine]; ok {
		pass = p
	}
	disk, err := d.HostDisk(machine, agentDir)
	if err != nil {
		return err
	}
	var uuid string
	physical := true
	for _, vm := range d.e.VMs {
		if vm.Name == machine {
			uuid, physical = vm.InstanceUUID, false
		}
	}
	cfg := agent.Config{Machine: machine, InstanceUUID: uuid, Physical: physical, ConfigServer: AddrConfigServer,
		VaultID: d.opts.VaultID, Passphrase: pass, StateDir: agentDir, FS: disk, Guest: g,
		// The filter is the guest kernel's: records stay in its memory
		// until drained, and its dirty-block bitmap (on the machine's disk)
		// covers a machine crash.
		DataBudget: d.opts.AgentDataBytes, MetaBudget: d.opts.AgentMetaRecs, DrainInterval: d.opts.AgentDrain,
		ItemBytes: SimItemBytes}
	g.installed, g.agentCfg = true, cfg
	if err := d.e.Net.AddHost(simnet.Host{Name: machine, Site: simnet.OnPrem}); err != nil && !strings.Contains(err.Error(), "twice") {
		return err
	}
	// The factory reads the guest's configuration at every start: a VM
	// that replaced the machine (guestPowerOn) restarts the agent as its own.
	return d.e.Sim.Spawn(addr, func() runtime.Actor { return agent.New(g.agentCfg) })
}

// SetGuestPassphrase makes the installer on a machine use pass.
func (d *Deployment) SetGuestPassphrase(machine, pass string) { d.guestPassphrase[machine] = pass }

// Request sends a management request from the portal to the configuration
// server.
func (d *Deployment) Request(m wire.Msg) error {
	return d.e.Sim.Inject(0, AddrConfigServer, runtime.Message{From: AddrPortal, Data: wire.Encode(m)})
}

// Replies returns and forgets the configuration server's answers.
func (d *Deployment) Replies() []proto.Reply {
	r := d.portal.replies
	d.portal.replies = nil
	return r
}

// ConfigStatus is the configuration server's Status, read on its own turn
// through the runtime's Inspect (as a daemon's status page would under the
// Real runtime), or an error while it is down.
func (d *Deployment) ConfigStatus() (configsrv.Status, error) {
	return runtime.InspectAs(context.Background(), d.e.Sim, AddrConfigServer, func(a runtime.Actor) configsrv.Status {
		if t, ok := a.(*csTap); ok {
			return t.Server.Status()
		}
		return a.(*configsrv.Server).Status()
	})
}

// ProcessStatus is the process server's Status, read through Inspect, or an
// error while it is down.
func (d *Deployment) ProcessStatus() (processsrv.Status, error) {
	return runtime.InspectAs(context.Background(), d.e.Sim, AddrProcessServer, func(a runtime.Actor) processsrv.Status {
		return a.(*processsrv.Server).Status()
	})
}

// AgentStatus is a machine's agent's Status, read through Inspect, or an
// error when it has no agent or the agent is down.
func (d *Deployment) AgentStatus(machine string) (agent.Status, error) {
	return runtime.InspectAs(context.Background(), d.e.Sim, AgentAddr(machine), func(a runtime.Actor) agent.Status {
		return a.(*agent.Agent).Status()
	})
}

// ConfigServer returns the live configuration server (nil while down). It
// is the actor itself, safe to touch only from the simulator's goroutine
// between events; status goes through ConfigStatus.
func (d *Deployment) ConfigServer() *configsrv.Server {
	switch s := d.e.Sim.Actor(AddrConfigServer).(type) {
	case *csTap:
		return s.Server
	case *configsrv.Server:
		return s
	}
	return nil
}

// ProcessServer returns the live process server (nil while down).
func (d *Deployment) ProcessServer() *processsrv.Server {
	s, _ := d.e.Sim.Actor(AddrProcessServer).(*processsrv.Server)
	return s
}

// Azure returns the live Azure-side service (nil while down).
func (d *Deployment) Azure() *azuresvc.Service {
	s, _ := d.e.Sim.Actor(AddrAzure).(*azuresvc.Service)
	return s
}

// Agent returns a machine's live agent (nil if not installed or down).
func (d *Deployment) Agent(machine string) *agent.Agent {
	a, _ := d.e.Sim.Actor(AgentAddr(machine)).(*agent.Agent)
	return a
}

// Keys are the vault's keys.
func (d *Deployment) Keys() vault.Keys { return d.keys }

// MachineCrash crashes a machine's guest OS: the agent stops, the filter
// driver's memory is lost (the changes not yet drained), its disk loses
// what was not fsynced (the log keeps what it synced, the dirty-block
// bitmap every block written since the oldest unacknowledged change), and
// the workload stops writing until Restart.
func (d *Deployment) MachineCrash(machine string) error {
	g := d.guests[machine]
	if g == nil {
		return fmt.Errorf("harness: no machine %q", machine)
	}
	d.noteCrash(machine, true)
	d.e.Sim.Crash(machine)
	if g.filter != nil {
		g.filter.CrashClose()
		g.m.SetFilter(nil)
		g.filter = nil
	}
	d.crashDisk(machine)
	d.e.Workloads.Pause(machine)
	return nil
}

// MachineRestart boots a crashed machine: its agent starts again and
// reopens its change log; the workload goes on.
func (d *Deployment) MachineRestart(machine string) error {
	if d.guests[machine] == nil {
		return fmt.Errorf("harness: no machine %q", machine)
	}
	d.e.Sim.Restart(machine)
	d.e.Workloads.Resume(machine)
	return nil
}

// ChangeLogFiles lists a machine's .hrl segment files on its disk (see
// HostDisk), oldest first.
func (d *Deployment) ChangeLogFiles(machine string) ([]string, error) {
	fs := d.disks[machine]
	if fs == nil {
		return nil, fmt.Errorf("harness: %s has no agent installed", machine)
	}
	ents, err := fs.ReadDir(agentDir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".hrl") {
			files = append(files, path.Join(agentDir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

// LoseCache is a process server whose cache disk is lost: it crashes, and
// comes back on a new, empty disk.
func (d *Deployment) LoseCache() error {
	d.e.Sim.Crash(HostProcessServer)
	fs := d.disks[HostProcessServer]
	if fs == nil {
		return fmt.Errorf("harness: no process server disk")
	}
	if err := fs.Wipe(psCacheDir); err != nil {
		return err
	}
	d.e.Trace.Add(d.e.Sim.Elapsed(), HostProcessServer, "disk-lost", "cache disk replaced by an empty one")
	d.e.Sim.Restart(HostProcessServer)
	return nil
}

// armHoldExpiry is the filter driver's own timer: when a machine's writes
// are held, the gate opens by itself at its deadline even if the agent
// process that holds it is down (the agent's timer does it otherwise).
func (d *Deployment) armHoldExpiry(machine string) {
	g := d.guests[machine]
	if g == nil || g.filter == nil {
		return
	}
	dl := g.filter.HoldDeadline()
	if dl.IsZero() || g.expiryArmed.Equal(dl) {
		return
	}
	g.expiryArmed = dl
	f := g.filter
	d.e.Sim.After(max(0, dl.Sub(d.e.Sim.Now())), "hold-expiry/"+machine, func() { d.expireHold(machine, f) })
}

// holdExpiryRetry is how soon the filter driver's timer tries again when
// the revoke of a held tag failed (the gate keeps holding meanwhile).
const holdExpiryRetry = time.Second

func (d *Deployment) expireHold(machine string, f *agent.Filter) {
	tag, ok, err := f.Expire(d.e.Sim.Now())
	switch {
	case err != nil:
		d.e.Trace.Add(d.e.Sim.Elapsed(), machine, "hold-expiry-failed", fmt.Sprintf("still holding: %v", err))
		d.e.Sim.After(holdExpiryRetry, "hold-expiry/"+machine, func() { d.expireHold(machine, f) })
	case ok:
		d.e.Trace.Add(d.e.Sim.Elapsed(), machine, "hold-expired", fmt.Sprintf("filter released writes at its own deadline; revoked tag %q", tag))
	}
}

// simGuest is a simulated machine as its agent sees it.
type simGuest struct {
	e           *Env
	m           *disk.Machine
	name        string
	filter      *agent.Filter
	installed   bool
	expiryArmed time.Time
	off         bool // its VM is powered off (poweredVC)
	// agentCfg is its agent's configuration (InstallAgent), read by the
	// agent's factory at every start.
	agentCfg agent.Config
}

func (g *simGuest) Disks() []blockdev.Device {
	out := make([]blockdev.Device, g.m.Disks())
	for i := range out {
		out[i] = g.m.Device(i)
	}
	return out
}

func (g *simGuest) Filter() *agent.Filter { return g.filter }

func (g *simGuest) Attach(f *agent.Filter) {
	g.filter = f
	g.m.SetFilter(f)
	if d := g.e.Deployment; d != nil {
		d.noteAttach(g.name, f)
	}
}

func (g *simGuest) Freeze() error {
	return g.m.Flushing(func() error {
		// Only a running application is quiesced: a stopped workload's
		// (its machine was powered off, e.g. for a failback) would flush
		// its past incarnation's memory onto the disks.
		if wl := g.e.Workloads.Running(g.name); wl != nil {
			return wl.Freeze()
		}
		if g.e.Deployment != nil && g.e.Deployment.freeze != nil {
			return g.e.Deployment.freeze(g.name)
		}
		return nil
	})
}

func (g *simGuest) Thaw() {
	if wl := g.e.Workloads.Running(g.name); wl != nil {
		wl.Thaw()
	}
	if g.e.Deployment != nil && g.e.Deployment.thaw != nil {
		g.e.Deployment.thaw(g.name)
	}
}

// portal receives the configuration server's replies.
type portal struct{ replies []proto.Reply }

func (p *portal) Handle(ctx runtime.Context, ev runtime.Event) {
	if m, ok := ev.(runtime.Message); ok {
		if msg, err := wire.Decode(m.Data); err == nil {
			if r, ok := msg.(*proto.Reply); ok {
				p.replies = append(p.replies, *r)
				ctx.Log().Info("portal: reply", "request", r.Request, "subject", r.Subject, "ok", r.OK, "reason", r.Reason)
			}
		}
	}
}

// RunUntil advances virtual time until cond holds or limit passes, checking
// every step; it reports whether cond held.
func (e *Env) RunUntil(limit time.Duration, cond func() bool) bool {
	e.runSpan(limit)
	return e.Sim.RunWhile(e.Sim.Now().Add(limit), func() bool { return !cond() })
}
