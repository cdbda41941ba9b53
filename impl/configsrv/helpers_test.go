package configsrv

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	csAddr     runtime.Addr = "cs01:443"
	portal     runtime.Addr = "portal:443"
	azure      runtime.Addr = "asr.azure:443"
	psAddr     runtime.Addr = "ps01:9443"
	vaultID                 = "vault-ab12"
	passphrase              = "correct horse battery"
)

var installAuth = vsphere.GuestAuth{Username: "root", Password: "secret"}

func agentAddr(m string) runtime.Addr { return runtime.MakeAddr(m, runtime.PortTag) }

// inventory is the fake vCenter's VMs: one Linux, one Windows.
func inventory() []vsphere.VM {
	return []vsphere.VM{
		{Name: "db01", Ref: "vm-11", InstanceUUID: "uuid-db01", GuestOS: "ubuntu64Guest", PowerState: vsphere.PoweredOn,
			Disks: []vsphere.Disk{{Key: 2000, Label: "Hard disk 1", CapacityBytes: 1 << 30}}},
		{Name: "web01", Ref: "vm-12", InstanceUUID: "uuid-web01", GuestOS: "windows2019srv_64Guest", PowerState: vsphere.PoweredOn},
	}
}

// rig is a configuration server driven by hand, with its fake vCenter.
type rig struct {
	t    *testing.T
	d    *runtimetest.Driver
	s    *Server
	vc   *fakeVC
	keys vault.Keys // the vault's real keys, as a well-installed agent has them
	// held are messages to agents taken off the driver by register but
	// not yet asked for with toAgent.
	held map[string][]wire.Msg
}

func newRig(t *testing.T, mod func(*Config)) *rig {
	t.Helper()
	return newRigVMs(t, inventory(), mod)
}

// newRigVMs is newRig with the fake vCenter holding vms.
func newRigVMs(t *testing.T, vms []vsphere.VM, mod func(*Config)) *rig {
	t.Helper()
	vc := &fakeVC{VMs: vms}
	cfg := Config{VaultID: vaultID, Passphrase: passphrase, VSphere: vc, ProcessServer: psAddr, Azure: azure,
		InstallAuth: installAuth}
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg)
	keys, err := vault.Derive(vaultID, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, s: s, vc: vc, keys: keys, held: map[string][]wire.Msg{}}
	r.d = runtimetest.New(t, csAddr, s)
	return r
}

// request sends a management request from the portal and returns the Reply.
func (r *rig) request(m wire.Msg) *proto.Reply {
	r.t.Helper()
	r.d.Receive(portal, m)
	got := r.d.SentTo(portal)
	if len(got) != 1 {
		r.t.Fatalf("%T: %d replies, want 1: %v", m, len(got), got)
	}
	rep, ok := got[0].(*proto.Reply)
	if !ok {
		r.t.Fatalf("%T: answered with %T", m, got[0])
	}
	return rep
}

func (r *rig) mustOK(m wire.Msg) {
	r.t.Helper()
	if rep := r.request(m); !rep.OK {
		r.t.Fatalf("%T refused: %s", m, rep.Reason)
	}
}

// register registers machine's agent with keys and returns the reply.
func (r *rig) register(machine string, keys vault.Keys, physical bool) *proto.RegisterReply {
	r.t.Helper()
	r.d.Receive(agentAddr(machine), &proto.Register{Machine: machine, Physical: physical, Proof: keys.Proof(machine),
		DiskSizes: []int64{1 << 30}})
	got := r.d.SentTo(agentAddr(machine))
	if len(got) == 0 {
		r.t.Fatalf("register %s: no reply", machine)
	}
	rr, ok := got[0].(*proto.RegisterReply)
	if !ok {
		r.t.Fatalf("register %s: answered with %T", machine, got[0])
	}
	r.held[machine] = append(r.held[machine], got[1:]...)
	return rr
}

// toAgent returns and forgets the messages sent to machine's agent.
func (r *rig) toAgent(machine string) []wire.Msg {
	out := append(r.held[machine], r.d.SentTo(agentAddr(machine))...)
	delete(r.held, machine)
	return out
}

// protects filters Protect messages.
func protects(msgs []wire.Msg) []proto.Protect {
	var out []proto.Protect
	for _, m := range msgs {
		if p, ok := m.(*proto.Protect); ok {
			out = append(out, *p)
		}
	}
	return out
}

func (r *rig) machine(name string) MachineStatus {
	r.t.Helper()
	for _, m := range r.s.Status().Machines {
		if m.Name == name {
			return m
		}
	}
	r.t.Fatalf("machine %s not in status", name)
	return MachineStatus{}
}

// states is a machine's history as "from>to" steps.
func (r *rig) states(name string) []string {
	var out []string
	for _, h := range r.machine(name).History {
		out = append(out, fmt.Sprintf("%s>%s", h.From, h.To))
	}
	return out
}

func (r *rig) event(ev proto.ReplicaEvent) { r.d.Receive(azure, &ev) }

// protect takes name through enable, install, registration and the first
// sync, and forgets what was sent.
func (r *rig) protect(name string) {
	r.t.Helper()
	r.mustOK(&proto.EnableReplication{Machine: name, Policy: "default"})
	if rr := r.register(name, r.keys, false); !rr.OK {
		r.t.Fatalf("registration refused: %s", rr.Reason)
	}
	r.event(proto.ReplicaEvent{Machine: name, Event: proto.EventSyncStarted, Gen: 1})
	r.event(proto.ReplicaEvent{Machine: name, Event: proto.EventSyncComplete, Gen: 1})
	if st := r.machine(name).State; st != StateProtected {
		r.t.Fatalf("%s is %s after sync-complete", name, st)
	}
	r.d.Sent()
	delete(r.held, name)
}

// alerts lists alerts as "name/subject active|cleared".
func (r *rig) alerts() []string {
	var out []string
	for _, a := range r.s.Status().Alerts {
		state := "cleared"
		if a.Active() {
			state = "active"
		}
		out = append(out, a.Name+"/"+a.Subject+" "+state)
	}
	return out
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	// Decoded messages carry empty lists where the sender had nil ones.
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func at(d time.Duration) time.Time { return runtimetest.Epoch.Add(d) }
