package configsrv

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	orch   runtime.Addr = "failover.azure:443"
	mtAddr runtime.Addr = "mt01:9500"
	azPS   runtime.Addr = "ps-azure:9443"
)

// azAgent is the address of the agent in machine's Azure VM.
func azAgent(machine string) runtime.Addr { return runtime.MakeAddr(machine+"-az", runtime.PortTag) }

// fbInventory: db01 (two disks, powered on) and web01 (one disk, off).
func fbInventory() []vsphere.VM {
	disk := func(vm string, i int) vsphere.Disk {
		name := vm
		if i > 0 {
			name = fmt.Sprintf("%s_%d", vm, i)
		}
		return vsphere.Disk{Key: int32(2000 + i), Label: fmt.Sprintf("Hard disk %d", i+1), CapacityBytes: 1 << 30,
			Path: fmt.Sprintf("[ds1] %s/%s.vmdk", vm, name), Datastore: "ds1"}
	}
	return []vsphere.VM{
		{Name: "db01", Ref: "vm-11", GuestOS: "ubuntu64Guest", PowerState: vsphere.PoweredOn, CPUs: 2, MemoryMB: 4096,
			Disks: []vsphere.Disk{disk("db01", 0), disk("db01", 1)}},
		{Name: "web01", Ref: "vm-12", GuestOS: "ubuntu64Guest", PowerState: vsphere.PoweredOff,
			Disks: []vsphere.Disk{disk("web01", 0)}},
	}
}

// azDisks is what the agent in each machine's Azure VM registers.
var azDisks = map[string][]int64{"db01": {1 << 30, 1 << 30}, "web01": {1 << 30}, "phys01": {1 << 30, 2 << 30}}

// ask sends m from addr and returns its one Reply.
func (r *rig) ask(from runtime.Addr, m wire.Msg) *proto.Reply {
	r.t.Helper()
	r.d.Receive(from, m)
	got := r.d.SentTo(from)
	if len(got) != 1 {
		r.t.Fatalf("%T: %d replies, want 1: %v", m, len(got), got)
	}
	rep, ok := got[0].(*proto.Reply)
	if !ok {
		r.t.Fatalf("%T: answered with %T", m, got[0])
	}
	return rep
}

// registerAt registers machine's agent at from with disks; it must be
// accepted.
func (r *rig) registerAt(machine string, from runtime.Addr, disks []int64) {
	r.t.Helper()
	r.d.SentTo(from) // earlier messages to that address: not the reply
	r.d.Receive(from, &proto.Register{Machine: machine, Proof: r.keys.Proof(machine), DiskSizes: disks})
	got := r.d.SentTo(from)
	if rr, ok := got[0].(*proto.RegisterReply); !ok || !rr.OK {
		r.t.Fatalf("register %s at %s: %v", machine, from, got)
	}
}

func (r *rig) psReport() {
	r.d.Receive(azPS, &proto.PSHealth{Server: azPS.Host(), CacheCapBytes: 1 << 30})
}

// failOver reports machines failed over to "<name>-vm" in Azure.
func (r *rig) failOver(names ...string) {
	r.t.Helper()
	for _, n := range names {
		if rep := r.ask(orch, &proto.FailedOver{Req: "fo-" + n, Machine: n, AzureVM: n + "-vm"}); !rep.OK {
			r.t.Fatalf("FailedOver %s refused: %s", n, rep.Reason)
		}
	}
}

// failedOverRig: db01 and web01 protected with policy gold (RPO threshold
// 60 min), failed over, their Azure agents registered, the Azure process
// server reporting.
func failedOverRig(t *testing.T) *rig { return failedOverRigWith(t, nil) }

// failedOverRigWith is failedOverRig with the configuration changed by mod.
func failedOverRigWith(t *testing.T, mod func(*Config)) *rig {
	t.Helper()
	gold := proto.Policy{Name: "gold", RPOThreshold: time.Hour, Retention: 24 * time.Hour, CrashInterval: 5 * time.Minute,
		AppInterval: time.Hour}
	r := newRigVMs(t, fbInventory(), func(c *Config) {
		c.Policies = []proto.Policy{gold}
		if mod != nil {
			mod(c)
		}
	})
	for _, n := range []string{"db01", "web01"} {
		r.mustOK(&proto.EnableReplication{Machine: n, Policy: "gold"})
		r.registerAt(n, agentAddr(n), azDisks[n])
		r.event(proto.ReplicaEvent{Machine: n, Event: proto.EventSyncComplete, Gen: 1})
	}
	r.failOver("db01", "web01")
	for _, n := range []string{"db01", "web01"} {
		r.registerAt(n, azAgent(n), azDisks[n])
	}
	r.psReport()
	r.d.Sent()
	return r
}

func toOnPrem(machines ...string) *proto.Reprotect {
	return &proto.Reprotect{Req: "rp1", Machines: machines, Direction: proto.ReprotectToOnPrem, MasterTarget: string(mtAddr),
		ProcessServer: string(azPS), Location: proto.LocationOriginal}
}

func TestFailedOver(t *testing.T) {
	r := newRigVMs(t, fbInventory(), nil)
	r.protect("db01")
	// No point for over an hour: the RPO alert is raised...
	r.d.Advance(62 * time.Minute)
	diff(t, "alerts before failover", []string{"agent-heartbeat-lost/db01 active", "rpo-threshold-exceeded/db01 active"}, r.alerts())

	for _, tc := range []struct {
		name string
		msg  *proto.FailedOver
		want string // reason; "" for OK
	}{
		{"unknown", &proto.FailedOver{Req: "a", Machine: "nosuch", AzureVM: "x"}, "configsrv: unknown machine nosuch"},
		{"not replicating", &proto.FailedOver{Req: "b", Machine: "web01", AzureVM: "x"},
			"configsrv: reprotect refused: web01 is unprotected (direction none): only a machine replicating to Azure fails over"},
		{"no vm", &proto.FailedOver{Req: "c", Machine: "db01"}, "configsrv: reprotect refused: failed-over report for db01 names no Azure VM"},
		{"ok", &proto.FailedOver{Req: "d", Machine: "db01", AzureVM: "db01-vm"}, ""},
		{"again", &proto.FailedOver{Req: "e", Machine: "db01", AzureVM: "db01-vm"}, ""},
		{"other vm", &proto.FailedOver{Req: "f", Machine: "db01", AzureVM: "db01-vm2"},
			"configsrv: reprotect refused: db01 already failed over to Azure VM db01-vm, not db01-vm2"},
	} {
		rep := r.ask(orch, tc.msg)
		if rep.OK != (tc.want == "") || (tc.want != "" && rep.Reason != tc.want) || rep.Req != tc.msg.Req || rep.Request != "failed-over" {
			t.Errorf("%s: reply %+v, want reason %q", tc.name, rep, tc.want)
		}
	}
	m := r.machine("db01")
	if m.State != StateFailedOver || m.AzureVM != "db01-vm" || !m.FailedOverAt.Equal(at(62*time.Minute)) {
		t.Fatalf("after FailedOver: %s, Azure VM %q at %v", m.State, m.AzureVM, m.FailedOverAt)
	}
	diff(t, "history", []string{">unprotected", "unprotected>enabling", "enabling>initial-sync", "initial-sync>protected",
		"protected>failed-over"}, r.states("db01"))
	// ...and cleared by the failover; nothing is watched any more.
	r.d.Advance(3 * time.Hour)
	diff(t, "alerts after failover", []string{"agent-heartbeat-lost/db01 cleared", "rpo-threshold-exceeded/db01 cleared"}, r.alerts())
	// The source's agent comes back: answered, ignored, no Protect.
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	r.registerAt("db01", agentAddr("db01"), []int64{1 << 30})
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	// The Azure VM's agent registers: nothing is sent to it before a reprotect.
	r.registerAt("db01", azAgent("db01"), azDisks["db01"])
	r.d.Receive(azAgent("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	r.d.Advance(10 * time.Minute)
	for _, s := range r.d.Sent() {
		if s.To != azure && s.To != orch {
			t.Errorf("sent to %s after failover: %s", s.To, wire.KindName(s.Msg.WireKind()))
		}
		if _, ok := s.Msg.(*proto.PolicyFor); ok {
			t.Errorf("PolicyFor sent after failover")
		}
	}
	if m := r.machine("db01"); m.AgentAddr != string(azAgent("db01")) || m.State != StateFailedOver {
		t.Errorf("agent %s state %s, want the Azure VM's agent, failed-over", m.AgentAddr, m.State)
	}
	if a := r.alerts(); len(a) != 2 {
		t.Errorf("alerts after failover: %v", a)
	}
}

func TestReprotectRefused(t *testing.T) {
	const prefix = "configsrv: reprotect refused: "
	for _, tc := range []struct {
		name  string
		setup func(r *rig)
		req   func() *proto.Reprotect
		want  string // the reason's start after prefix
		has   string // and a part of it
	}{
		{name: "no machines", req: func() *proto.Reprotect { return toOnPrem() }, want: "no machines named"},
		{name: "twice", req: func() *proto.Reprotect { return toOnPrem("db01", "db01") }, want: "db01 named twice"},
		{name: "unknown", req: func() *proto.Reprotect { return toOnPrem("nosuch") }, want: "configsrv: unknown machine nosuch"},
		{name: "direction", req: func() *proto.Reprotect { q := toOnPrem("db01"); q.Direction = "sideways"; return q },
			want: `unknown direction "sideways" (want to-on-prem or to-azure)`},
		{name: "not failed over", setup: func(r *rig) {
			r.mustOK(&proto.EnableReplication{Machine: "app01", Policy: "default"})
		}, req: func() *proto.Reprotect { return toOnPrem("app01") },
			want: "app01 is enabling, not failed over: a reprotect to on-premises follows a committed failover"},
		{name: "to azure before failback", req: func() *proto.Reprotect {
			q := toOnPrem("db01")
			q.Direction = proto.ReprotectToAzure
			return q
		}, want: "db01 is failed-over, not failed back: a reprotect to Azure follows a committed failback"},
		{name: "no master target", req: func() *proto.Reprotect { q := toOnPrem("db01"); q.MasterTarget = ""; return q },
			want: "no master target named"},
		{name: "no process server", req: func() *proto.Reprotect { q := toOnPrem("db01"); q.ProcessServer = ""; return q },
			want: "no process server in Azure named"},
		{name: "ps never reported", req: func() *proto.Reprotect { q := toOnPrem("db01"); q.ProcessServer = "ps-other:9443"; return q },
			want: "95226: the Azure VM cannot reach the configuration server: process server ps-other in Azure has never reported to it",
			has:  "site-to-site VPN or ExpressRoute"},
		{name: "ps silent", setup: func(r *rig) { r.d.Advance(PSFreshness + time.Second) }, req: func() *proto.Reprotect { return toOnPrem("db01") },
			want: "95226: the Azure VM cannot reach the configuration server: process server ps-azure in Azure last reported 2m1s ago",
			has:  "site-to-site VPN or ExpressRoute"},
		{name: "agent not registered", setup: func(r *rig) {
			r.registerAt("app01", agentAddr("app01"), []int64{1 << 30})
			r.mustOK(&proto.EnableReplication{Machine: "app01", Policy: "default"})
			r.event(proto.ReplicaEvent{Machine: "app01", Event: proto.EventSyncComplete, Gen: 1})
			r.failOver("app01")
			// Its source's agent registering again is not the Azure VM's.
			r.registerAt("app01", agentAddr("app01"), []int64{1 << 30})
		}, req: func() *proto.Reprotect { return toOnPrem("app01") },
			want: "agent not registered: the Mobility agent in Azure VM app01-vm (app01) has not registered with the configuration server since the failover",
			has:  "15 min"},
		{name: "too many disks", setup: func(r *rig) {
			r.registerAt("db01", azAgent("db01"), make([]int64, proto.MaxTargetDisks))
		}, req: func() *proto.Reprotect { return toOnPrem("db01", "web01") },
			want: "61 disks to fail back and 0 already attached to master target mt01:9500: more than the 60 disks one master target serves"},
		{name: "original gone", setup: func(r *rig) {
			r.vc.mu.Lock()
			r.vc.VMs = r.vc.VMs[1:]
			r.vc.mu.Unlock()
		}, req: func() *proto.Reprotect { return toOnPrem("db01") },
			want: "the original VM of db01 (vm-11) no longer exists in vCenter; reprotect with location=alternate"},
		{name: "original disks differ", setup: func(r *rig) {
			r.registerAt("web01", azAgent("web01"), []int64{1 << 30, 1 << 20})
		}, req: func() *proto.Reprotect { return toOnPrem("web01") },
			want: "the original VM of web01 (vm-12) has 1 disks, the machine in Azure 2"},
		{name: "name taken", req: func() *proto.Reprotect {
			q := toOnPrem("db01")
			q.Location, q.Host, q.Datastore = proto.LocationAlternate, "esx2", "ds2"
			return q
		}, want: "78052: a VM named db01 already exists in vCenter (vm-11)"},
		{name: "alternate without host", req: func() *proto.Reprotect {
			q := toOnPrem("db01")
			q.Location, q.Datastore = proto.LocationAlternate, "ds2"
			return q
		}, want: "location alternate needs a host and a datastore"},
		{name: "location", req: func() *proto.Reprotect { q := toOnPrem("db01"); q.Location = "moon"; return q },
			want: `unknown location "moon"`},
		{name: "physical without host", setup: func(r *rig) {
			r.registerAt("phys01", agentAddr("phys01"), []int64{1 << 30})
			r.mustOK(&proto.EnableReplication{Machine: "phys01", Policy: "default"})
			r.event(proto.ReplicaEvent{Machine: "phys01", Event: proto.EventSyncComplete, Gen: 1})
			r.failOver("phys01")
			r.registerAt("phys01", azAgent("phys01"), azDisks["phys01"])
		}, req: func() *proto.Reprotect { return toOnPrem("phys01") },
			want: "phys01 is a physical server, which always fails back to a new VMware VM: that needs a host and a datastore"},
		{name: "in progress", setup: func(r *rig) {
			if rep := r.request(toOnPrem("db01")); !rep.OK {
				t.Fatalf("first reprotect refused: %s", rep.Reason)
			}
		}, req: func() *proto.Reprotect { return toOnPrem("db01") }, want: "a reprotect of db01 is already in progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := failedOverRig(t)
			r.vc.mu.Lock()
			r.vc.VMs = append(r.vc.VMs, vsphere.VM{Name: "app01", Ref: "vm-13", GuestOS: "ubuntu64Guest",
				Disks: []vsphere.Disk{{Key: 2000, CapacityBytes: 1 << 30, Path: "[ds1] app01/app01.vmdk"}}})
			r.vc.mu.Unlock()
			r.d.Advance(DefaultRediscover)
			r.psReport()
			if tc.setup != nil {
				tc.setup(r)
			}
			r.d.Sent()
			before := r.s.Status()
			powered, created := len(r.vc.PoweredOff), len(r.vc.Created)
			req := tc.req()
			rep := r.request(req)
			if rep.OK || rep.Req != req.Req || rep.Request != "reprotect" {
				t.Fatalf("reply %+v, want a refusal", rep)
			}
			want := tc.want
			if !strings.HasPrefix(want, "configsrv: ") {
				want = prefix + want
			}
			if !strings.HasPrefix(rep.Reason, want) || !strings.Contains(rep.Reason, tc.has) {
				t.Errorf("reason %q\nwant  %q...%q", rep.Reason, want, tc.has)
			}
			// Nothing changed: no job, no state, no message, no vCenter change.
			diff(t, "status", before, r.s.Status())
			if sent := r.d.Sent(); len(sent) != 0 {
				t.Errorf("a refused reprotect sent %v", sent)
			}
			if len(r.vc.PoweredOff) != powered || len(r.vc.Created) != created {
				t.Errorf("a refused reprotect changed vCenter: powered off %v, created %v", r.vc.PoweredOff, r.vc.Created)
			}
		})
	}
}

// DefaultRediscover is the rig's discovery period (Config default).
const DefaultRediscover = 15 * time.Minute

// TestReprotectGroup: a group's members fail back together, to one master
// target; one member alone is refused.
func TestReprotectGroup(t *testing.T) {
	r := newRigVMs(t, fbInventory(), nil)
	r.mustOK(&proto.EnableGroup{Group: "g1", Machines: []string{"db01", "web01"}, Policy: "default"})
	for _, n := range []string{"db01", "web01"} {
		r.registerAt(n, agentAddr(n), azDisks[n])
		r.event(proto.ReplicaEvent{Machine: n, Event: proto.EventSyncComplete, Gen: 1})
	}
	r.failOver("db01", "web01")
	for _, n := range []string{"db01", "web01"} {
		r.registerAt(n, azAgent(n), azDisks[n])
	}
	r.psReport()
	r.d.Sent()
	rep := r.request(toOnPrem("web01"))
	want := "configsrv: reprotect refused: web01 is a member of replication group g1, whose members (db01, web01) fail back together " +
		"to one master target: without db01 the group would need two master targets; reprotect every member in one request"
	if rep.OK || rep.Reason != want {
		t.Fatalf("one member alone: %+v\nwant %q", rep, want)
	}
	if rep := r.request(toOnPrem("web01", "db01")); !rep.OK {
		t.Fatalf("the whole group refused: %s", rep.Reason)
	}
	for _, a := range r.d.SentTo(mtAddr) {
		at := a.(*proto.AttachTarget)
		r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: at.Machine, OK: true, Req: at.Req})
	}
	// Each member's agent gets the failback Protect and then its GroupConfig.
	for _, n := range []string{"db01", "web01"} {
		got := r.d.SentTo(azAgent(n))
		if kinds(got) != "Protect GroupConfig" {
			t.Errorf("%s: sent %s, want Protect GroupConfig", n, kinds(got))
		}
		if m := r.machine(n); m.State != StateInitialSync || m.MasterTarget != string(mtAddr) || m.Direction != DirectionFailback {
			t.Errorf("%s: %s to %s direction %s", n, m.State, m.MasterTarget, m.Direction)
		}
	}
}

// TestFailbackRoundTrip drives one machine through reprotect to its
// original VM, the failback stream reported by a fake master target,
// failback, and reprotect to Azure.
func TestFailbackRoundTrip(t *testing.T) {
	r := failedOverRig(t)
	rep := r.request(toOnPrem("db01"))
	if !rep.OK || rep.Reason != "reprotect to on-premises started: jobs 3" || rep.Req != "rp1" {
		t.Fatalf("reprotect: %+v", rep)
	}
	diff(t, "powered off", []vsphere.VMRef{"vm-11"}, r.vc.PoweredOff)
	attach := &proto.AttachTarget{Req: "cs-job-3", Machine: "db01", VM: "db01", Disks: []proto.TargetDisk{
		{Path: "[ds1] db01/db01-flat.vmdk", CapacityBytes: 1 << 30}, {Path: "[ds1] db01/db01_1-flat.vmdk", CapacityBytes: 1 << 30}}}
	diff(t, "to the master target", []wire.Msg{attach}, r.d.SentTo(mtAddr))
	if got := r.toAgent("db01"); len(got) != 0 {
		t.Fatalf("sent to the source's agent: %v", got)
	}
	if m := r.machine("db01"); m.State != StateFailedOver || m.Gen != 1 {
		t.Fatalf("before the attach reply: %s gen %d", m.State, m.Gen)
	}
	// The reply is lost: AttachTarget again after CheckEvery.
	r.d.Advance(CheckEvery)
	diff(t, "resent", []wire.Msg{attach}, r.d.SentTo(mtAddr))
	// A reply to something else changes nothing.
	r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: "db01", OK: true, Req: "cs-job-99"})
	r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: "db01", OK: true, Req: "cs-job-3"})
	protect := &proto.Protect{Machine: "db01", Policy: proto.FailbackPolicy("gold"), ProcessServer: string(azPS), Gen: 2}
	diff(t, "failback protect", []wire.Msg{protect}, r.d.SentTo(azAgent("db01")))
	m := r.machine("db01")
	if m.State != StateInitialSync || m.Direction != DirectionFailback || m.FailbackVM != "db01" || m.MasterTarget != string(mtAddr) ||
		m.FailbackProcessServer != string(azPS) || m.Gen != 2 {
		t.Fatalf("after attach: %+v", m)
	}

	// Heartbeats and resync requests in failback resend the failback Protect.
	r.d.Receive(azAgent("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	diff(t, "protect after an idle heartbeat", []wire.Msg{protect}, r.d.SentTo(azAgent("db01")))
	// The Azure side's announcements of the stopped replica are not the
	// failback's: dropped.
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2, Applied: 900})
	r.d.Receive(azure, &proto.Checksums{Machine: "db01", Gen: 2})
	if m := r.machine("db01"); m.State != StateInitialSync || m.Applied != 0 {
		t.Fatalf("an Azure side event moved the failback: %s applied %d", m.State, m.Applied)
	}
	// The master target's checksums go to the Azure VM's agent.
	sums := &proto.Checksums{Machine: "db01", Gen: 2, Disk: 1, BlockSize: proto.ChecksumBlockSize, Sums: make([]byte, proto.ChecksumSize), Final: true}
	r.d.Receive(mtAddr, sums)
	diff(t, "relayed checksums", []wire.Msg{sums}, r.d.SentTo(azAgent("db01")))
	mt := func(ev proto.ReplicaEvent) { r.d.Receive(mtAddr, &ev) }
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 2})
	r.d.Receive(azAgent("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseSyncing})
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2, Applied: 7})
	now := r.d.Now()
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "db01-c-1", Kind: proto.Crash, PointTime: now, Applied: 8})
	if m := r.machine("db01"); m.State != StateProtected || m.Points != 1 || m.Applied != 8 {
		t.Fatalf("after the master target's sync-complete and point: %s, %d points, applied %d", m.State, m.Points, m.Applied)
	}
	// RPO is judged against the failback policy's 15 min, not gold's hour.
	r.d.Advance(16 * time.Minute)
	if !slices.Contains(r.alerts(), "rpo-threshold-exceeded/db01 active") {
		t.Errorf("no RPO alert at 16 min without a failback point: %v", r.alerts())
	}
	job := r.s.Status().Jobs[2]
	type stepRow struct{ Name, Status, Detail string }
	var steps []stepRow
	for _, s := range job.Steps {
		steps = append(steps, stepRow{s.Name, s.Status, s.Detail})
	}
	if job.Kind != JobReprotect || job.Status != JobSucceeded {
		t.Errorf("job %+v", job)
	}
	diff(t, "reprotect steps", []stepRow{
		{StepPrerequisites, JobSucceeded, "master target mt01:9500, process server ps-azure:9443, location original, policy gold-failback"},
		{StepTargetVM, JobSucceeded, "original VM db01 (vm-11) powered off"},
		{StepAttach, JobSucceeded, "attached to master target mt01:9500 (disks: 2)"},
		{StepReplicate, JobSucceeded, "gen 2 synced"},
	}, steps)

	// A resync the Azure VM's agent asks for is a new failback generation.
	r.d.Receive(azAgent("db01"), &proto.ResyncNeeded{Machine: "db01", Reason: "change log overflow"})
	resync := &proto.Protect{Machine: "db01", Policy: proto.FailbackPolicy("gold"), ProcessServer: string(azPS), Gen: 3}
	diff(t, "protect after a resync request", []wire.Msg{resync}, r.d.SentTo(azAgent("db01")))
	r.d.Receive(azAgent("db01"), &proto.ResyncNeeded{Machine: "db01", Reason: "change log overflow"}) // not started yet: the same again
	r.d.Receive(azAgent("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	diff(t, "protect resent", []wire.Msg{resync, resync}, r.d.SentTo(azAgent("db01")))
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 3})
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 3})
	if m := r.machine("db01"); m.State != StateProtected || m.Gen != 3 {
		t.Fatalf("after the failback resync: %s gen %d", m.State, m.Gen)
	}

	// Failback committed: the Azure agent is told to stop.
	if rep := r.ask(orch, &proto.FailedBack{Req: "fb1", Machine: "db01", VM: "db01"}); !rep.OK {
		t.Fatalf("FailedBack refused: %s", rep.Reason)
	}
	diff(t, "to the Azure agent", []wire.Msg{&proto.Unprotect{Machine: "db01"}}, r.d.SentTo(azAgent("db01")))
	if rep := r.ask(orch, &proto.FailedBack{Req: "fb2", Machine: "db01", VM: "db01"}); !rep.OK {
		t.Fatalf("FailedBack again refused: %s", rep.Reason)
	}
	if rep := r.ask(orch, &proto.FailedBack{Req: "fb3", Machine: "web01", VM: "web01"}); rep.OK ||
		rep.Reason != "configsrv: reprotect refused: web01 is failed-over (direction primary-to-recovery): only a machine replicating to on-premises fails back" {
		t.Errorf("FailedBack of a machine not failing back: %+v", rep)
	}
	if !slices.Contains(r.alerts(), "rpo-threshold-exceeded/db01 cleared") {
		t.Errorf("RPO alert not cleared by the failback: %v", r.alerts())
	}
	toAzure := &proto.Reprotect{Req: "rp2", Machines: []string{"db01"}, Direction: proto.ReprotectToAzure}
	wantAgent := "configsrv: reprotect refused: agent not registered: the Mobility agent in db01 (db01) has not registered with the configuration server since the failback"
	if rep := r.request(toAzure); rep.OK || !strings.HasPrefix(rep.Reason, wantAgent) {
		t.Fatalf("reprotect to Azure before the agent registered: %+v", rep)
	}
	// The Azure VM's agent registering again is not the on-premises one.
	r.registerAt("db01", azAgent("db01"), azDisks["db01"])
	if rep := r.request(toAzure); rep.OK || !strings.HasPrefix(rep.Reason, wantAgent) {
		t.Fatalf("reprotect to Azure after the Azure agent registered: %+v", rep)
	}
	r.registerAt("db01", agentAddr("db01"), azDisks["db01"])
	r.d.Sent()
	if rep := r.request(toAzure); !rep.OK || rep.Reason != "reprotect to Azure started: jobs 5" {
		t.Fatalf("reprotect to Azure: %+v", rep)
	}
	diff(t, "to Azure", []wire.Msg{&proto.ResumeReplication{Req: "cs-job-5", Machine: "db01"}}, r.d.SentTo(azure))
	r.d.Receive(azure, &proto.Reply{Request: "resume-replication", Subject: "db01", OK: true, Req: "cs-job-5"})
	gold := r.s.policies["gold"]
	diff(t, "to Azure after resume", []wire.Msg{&proto.PolicyFor{Machine: "db01", Policy: gold}}, r.d.SentTo(azure))
	diff(t, "forward protect", []wire.Msg{&proto.Protect{Machine: "db01", Policy: gold, ProcessServer: string(psAddr), Gen: 4}},
		r.toAgent("db01"))
	// The master target's late events are of an older generation.
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2})
	if m := r.machine("db01"); m.State != StateInitialSync || m.Direction != DirectionForward {
		t.Fatalf("after resume: %s direction %s", m.State, m.Direction)
	}
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 4})
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 4})
	diff(t, "history", []string{">unprotected", "unprotected>enabling", "enabling>initial-sync", "initial-sync>protected",
		"protected>failed-over", "failed-over>initial-sync", "initial-sync>protected",
		"protected>resync-required", "resync-required>resyncing", "resyncing>protected", "protected>failed-back",
		"failed-back>initial-sync", "initial-sync>protected"}, r.states("db01"))
	if job := r.s.Status().Jobs[4]; job.Kind != JobReprotectAzure || job.Status != JobSucceeded || len(job.Steps) != 3 ||
		job.Steps[1].Name != StepResume {
		t.Errorf("reprotect-to-azure job %+v", job)
	}
}

// TestReprotectAlternate: a physical server fails back to a new VMware VM
// (created with its disks, attached fresh); a master target's refusal
// fails the job and leaves the machine failed over.
func TestReprotectAlternate(t *testing.T) {
	r := failedOverRig(t)
	r.registerAt("phys01", agentAddr("phys01"), []int64{1 << 30})
	r.mustOK(&proto.EnableReplication{Machine: "phys01", Policy: "default"})
	r.event(proto.ReplicaEvent{Machine: "phys01", Event: proto.EventSyncComplete, Gen: 1})
	r.failOver("phys01")
	r.registerAt("phys01", azAgent("phys01"), azDisks["phys01"])
	r.d.Sent()
	q := toOnPrem("phys01")
	q.Host, q.Datastore = "esx2", "ds2"
	if rep := r.request(q); !rep.OK {
		t.Fatalf("reprotect refused: %s", rep.Reason)
	}
	diff(t, "created", []vsphere.VMSpec{{Name: "phys01", Host: "esx2", Datastore: "ds2",
		Disks: []vsphere.DiskSpec{{CapacityBytes: 1 << 30}, {CapacityBytes: 2 << 30}}}}, r.vc.Created)
	got := r.d.SentTo(mtAddr)
	diff(t, "attach", []wire.Msg{&proto.AttachTarget{Req: "cs-job-4", Machine: "phys01", VM: "phys01", Fresh: true,
		Disks: []proto.TargetDisk{{Path: "[ds2] phys01/phys01-flat.vmdk", CapacityBytes: 1 << 30},
			{Path: "[ds2] phys01/phys01_1-flat.vmdk", CapacityBytes: 2 << 30}}}}, got)

	// Meanwhile db01 goes to the same master target; the master target
	// refuses it.
	if rep := r.request(toOnPrem("db01")); !rep.OK {
		t.Fatalf("reprotect db01 refused: %s", rep.Reason)
	}
	r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: "db01", Req: "cs-job-5",
		Reason: "mastertarget: too many disks"})
	job := r.s.Status().Jobs[4]
	if job.Status != JobFailed || job.Reason != "master target mt01:9500 refused: mastertarget: too many disks" {
		t.Errorf("job after the refusal: %+v", job)
	}
	if m := r.machine("db01"); m.State != StateFailedOver || m.Gen != 1 {
		t.Errorf("db01 after a refused attach: %s gen %d", m.State, m.Gen)
	}
	if got := r.d.SentTo(azAgent("db01")); len(got) != 0 {
		t.Errorf("sent to db01's Azure agent: %v", got)
	}
	// No resend of a request whose job ended.
	r.d.SentTo(mtAddr)
	r.d.Advance(2 * CheckEvery)
	for _, s := range r.d.SentTo(mtAddr) {
		if at := s.(*proto.AttachTarget); at.Machine == "db01" {
			t.Errorf("AttachTarget of db01 resent after its job failed")
		}
	}
	// A VM of the same name created between the check and the creation
	// fails the job with 78052; the machine stays failed over.
	r2 := failedOverRig(t)
	r2.vc.mu.Lock()
	r2.vc.VMs = r2.vc.VMs[1:] // db01's original is gone
	r2.vc.CreateErr = fmt.Errorf("fake: create db01: %w", vsphere.ErrExists)
	r2.vc.mu.Unlock()
	q2 := toOnPrem("db01")
	q2.Location, q2.Host, q2.Datastore = proto.LocationAlternate, "esx2", "ds2"
	if rep := r2.request(q2); !rep.OK {
		t.Fatalf("alternate reprotect of a deleted VM refused: %s", rep.Reason)
	}
	job = r2.s.Status().Jobs[2]
	if want := "78052: a VM named db01 already exists in vCenter: fake: create db01: vsphere: already exists"; job.Status != JobFailed || job.Reason != want {
		t.Errorf("job %+v\nwant reason %q", job, want)
	}
	if m := r2.machine("db01"); m.State != StateFailedOver {
		t.Errorf("db01 is %s after a failed creation", m.State)
	}
	if got := r2.d.SentTo(mtAddr); len(got) != 0 {
		t.Errorf("attached after a failed creation: %v", got)
	}
}

// TestFailbackAdoptsAgentRegisteredDuringFailback: the on-premises VM
// powers on (and its agent registers) before the failback is committed;
// that registration is ignored while the machine still runs in Azure, and
// adopted at the commit, so a reprotect to Azure needs no second one.
func TestFailbackAdoptsAgentRegisteredDuringFailback(t *testing.T) {
	r := failedOverRig(t)
	if rep := r.request(toOnPrem("db01")); !rep.OK {
		t.Fatalf("reprotect: %+v", rep)
	}
	r.d.Receive(mtAddr, &proto.Reply{Request: "attach-target", Subject: "db01", OK: true, Req: "cs-job-3"})
	mt := func(ev proto.ReplicaEvent) { r.d.Receive(mtAddr, &ev) }
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 2})
	mt(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2, Applied: 7})
	// The failback powers db01 on: its agent registers, still ignored.
	r.registerAt("db01", agentAddr("db01"), azDisks["db01"])
	if m := r.machine("db01"); m.State != StateProtected || m.Direction != DirectionFailback {
		t.Fatalf("a registration during the failback moved the machine: %s %s", m.State, m.Direction)
	}
	r.d.Sent()
	if rep := r.ask(orch, &proto.FailedBack{Req: "fb1", Machine: "db01", VM: "db01"}); !rep.OK {
		t.Fatalf("FailedBack refused: %s", rep.Reason)
	}
	toAzure := &proto.Reprotect{Req: "rp2", Machines: []string{"db01"}, Direction: proto.ReprotectToAzure}
	if rep := r.request(toAzure); !rep.OK {
		t.Fatalf("reprotect to Azure after a registration during the failback: %+v", rep)
	}
}
