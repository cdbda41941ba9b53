package configsrv

import (
	"errors"
	"fmt"
	"strings"
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

func TestDiscovery(t *testing.T) {
	r := newRig(t, nil)
	type row struct {
		Name, Ref, GuestOS string
		InVCenter          bool
		State              State
	}
	rows := func() []row {
		var out []row
		for _, m := range r.s.Status().Machines {
			out = append(out, row{m.Name, m.Ref, m.GuestOS, m.InVCenter, m.State})
		}
		return out
	}
	diff(t, "after the first discovery", []row{
		{"db01", "vm-11", "ubuntu64Guest", true, StateUnprotected},
		{"web01", "vm-12", "windows2019srv_64Guest", true, StateUnprotected},
	}, rows())
	diff(t, "history", []Transition{{At: runtimetest.Epoch, To: StateUnprotected, Reason: "discovered in vCenter"}},
		r.machine("db01").History)
	diff(t, "policies", []proto.Policy{proto.DefaultPolicy(), proto.FailbackPolicy("default")}, r.s.Status().Policies)

	// Rediscovery every RediscoverEvery picks up a new VM and notes a
	// vanished one without forgetting it.
	r.vc.mu.Lock()
	r.vc.VMs = []vsphere.VM{inventory()[1], {Name: "app01", Ref: "vm-13", GuestOS: "rhel8_64Guest"}}
	r.vc.mu.Unlock()
	r.d.Advance(14 * time.Minute)
	if n := len(r.s.Status().Machines); n != 2 {
		t.Fatalf("rediscovered before RediscoverEvery: %d machines", n)
	}
	r.d.Advance(time.Minute)
	diff(t, "after rediscovery", []row{
		{"app01", "vm-13", "rhel8_64Guest", true, StateUnprotected},
		{"db01", "vm-11", "ubuntu64Guest", false, StateUnprotected},
		{"web01", "vm-12", "windows2019srv_64Guest", true, StateUnprotected},
	}, rows())

	// A failed discovery is reported and retried sooner.
	r.vc.mu.Lock()
	r.vc.DiscoverErr = errors.New("vcenter down")
	r.vc.mu.Unlock()
	r.d.Advance(15 * time.Minute)
	if e := r.s.Status().DiscoveryError; e != "vcenter down" {
		t.Errorf("DiscoveryError = %q", e)
	}
	r.vc.mu.Lock()
	r.vc.DiscoverErr = nil
	r.vc.mu.Unlock()
	r.d.Advance(time.Minute)
	if st := r.s.Status(); st.DiscoveryError != "" || !st.LastDiscovery.Equal(at(31*time.Minute)) {
		t.Errorf("after retry: error %q, last discovery %v", st.DiscoveryError, st.LastDiscovery)
	}
}

func TestConfigPolicies(t *testing.T) {
	gold := proto.Policy{Name: "gold", RPOThreshold: 15 * time.Minute, Retention: 72 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour}
	bad := proto.Policy{Name: "bad", RPOThreshold: time.Minute, Retention: time.Hour, CrashInterval: time.Second}
	twin := proto.FailbackPolicy("x")
	r := newRig(t, func(c *Config) { c.Policies = []proto.Policy{gold, bad, twin} })
	diff(t, "policies", []proto.Policy{proto.DefaultPolicy(), proto.FailbackPolicy("default"), gold, proto.FailbackPolicy("gold")},
		r.s.Status().Policies)
	if len(r.s.badConf) != 2 || !strings.HasPrefix(r.s.badConf[1], ErrFailbackPolicy.Error()) {
		t.Errorf("a failback policy in the configuration was not dropped with the reason: %q", r.s.badConf)
	}
}

// TestEnableProtect follows a VM from EnableReplication to protected, for a
// Linux and a Windows guest.
func TestEnableProtect(t *testing.T) {
	for _, tc := range []struct {
		machine, ref, program string
	}{
		{"db01", "vm-11", LinuxInstaller},
		{"web01", "vm-12", WindowsInstaller},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			r := newRig(t, nil)
			r.d.Advance(5 * time.Minute)
			rep := r.request(&proto.EnableReplication{Machine: tc.machine, Policy: "default"})
			diff(t, "reply", &proto.Reply{Request: "enable-replication", Subject: tc.machine, OK: true,
				Reason: "push install of the Mobility service started"}, rep)
			diff(t, "push install", []runCall{{Ref: vsphere.VMRef(tc.ref), Auth: installAuth, Program: tc.program,
				Args: "--cs cs01:443 --vault " + vaultID}}, r.vc.calls())
			diff(t, "to Azure", []wire.Msg{&proto.PolicyFor{Machine: tc.machine, Policy: proto.DefaultPolicy()}}, r.d.SentTo(azure))
			if m := r.machine(tc.machine); m.State != StateEnabling || m.Gen != 1 {
				t.Fatalf("after enable: %s gen %d", m.State, m.Gen)
			}
			if got := r.toAgent(tc.machine); len(got) != 0 {
				t.Fatalf("sent to the agent before it registered: %v", got)
			}

			rr := r.register(tc.machine, r.keys, false)
			diff(t, "register reply", &proto.RegisterReply{Machine: tc.machine, OK: true, VaultID: vaultID}, rr)
			diff(t, "protect", []wire.Msg{&proto.Protect{Machine: tc.machine, Policy: proto.DefaultPolicy(),
				ProcessServer: string(psAddr), Gen: 1}}, r.toAgent(tc.machine))

			// A repeated registration (the agent retrying) is answered
			// again and orders nothing twice.
			if rr := r.register(tc.machine, r.keys, false); !rr.OK {
				t.Fatalf("re-registration refused: %s", rr.Reason)
			}
			if got := r.toAgent(tc.machine); len(got) != 0 {
				t.Fatalf("re-registration sent %v", got)
			}

			r.d.Receive(agentAddr(tc.machine), &proto.Heartbeat{Machine: tc.machine, Phase: PhaseSyncing, Mode: "data",
				SyncedBytes: 100, SyncTotalBytes: 400, PendingBytes: 7})
			r.event(proto.ReplicaEvent{Machine: tc.machine, Event: proto.EventSyncStarted, Gen: 1})
			r.event(proto.ReplicaEvent{Machine: tc.machine, Event: proto.EventSyncComplete, Gen: 1})
			r.event(proto.ReplicaEvent{Machine: tc.machine, Event: proto.EventSyncComplete, Gen: 1}) // duplicate

			m := r.machine(tc.machine)
			diff(t, "history", []string{">unprotected", "unprotected>enabling", "enabling>initial-sync", "initial-sync>protected"},
				r.states(tc.machine))
			diff(t, "machine", MachineStatus{Name: tc.machine, InVCenter: true, Ref: tc.ref, GuestOS: m.GuestOS,
				State: StateProtected, History: m.History, Policy: "default", Gen: 1, Registered: true,
				AgentAddr: string(agentAddr(tc.machine)), RegisteredAt: at(5 * time.Minute), DiskSizes: []int64{1 << 30},
				LastHeartbeat: at(5 * time.Minute), Phase: PhaseSyncing, CaptureMode: "data", PendingBytes: 7,
				SyncedBytes: 100, SyncTotalBytes: 400, EnabledAt: at(5 * time.Minute), Direction: DirectionForward}, m)
			jobs := r.s.Status().Jobs
			if len(jobs) != 1 {
				t.Fatalf("jobs: %+v", jobs)
			}
			var steps []string
			for _, s := range jobs[0].Steps {
				steps = append(steps, s.Name+": "+s.Status)
			}
			diff(t, "job", []string{"check prerequisites: succeeded", "install mobility service: succeeded",
				"register agent: succeeded", "replicate to sync-complete: succeeded"}, steps)
			if jobs[0].Kind != JobEnable || jobs[0].Status != JobSucceeded {
				t.Errorf("job %s %s", jobs[0].Kind, jobs[0].Status)
			}
		})
	}
}

// TestRegisterBeforeInstallDone: the installer starts the agent, whose
// Register may arrive before the install's Done.
func TestRegisterBeforeInstallDone(t *testing.T) {
	r := newRig(t, nil)
	r.d.AutoDeliverOps = false
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	if rr := r.register("db01", r.keys, false); !rr.OK {
		t.Fatal(rr.Reason)
	}
	if p := protects(r.toAgent("db01")); len(p) != 1 || p[0].Gen != 1 {
		t.Fatalf("protect = %+v", p)
	}
	r.d.DeliverOps()
	if st := r.machine("db01").State; st != StateInitialSync {
		t.Fatalf("state %s", st)
	}
	if got := r.s.Status().Jobs[0].Steps[1]; got.Name != StepInstall || got.Status != JobSucceeded {
		t.Errorf("install step %+v", got)
	}
}

func TestWrongPassphrase(t *testing.T) {
	r := newRig(t, nil)
	r.mustOK(&proto.EnableReplication{Machine: "db01", Policy: "default"})
	wrong, err := vault.Derive(vaultID, "not the passphrase")
	if err != nil {
		t.Fatal(err)
	}
	r.d.Receive(agentAddr("db01"), &proto.Register{Machine: "db01", Proof: wrong.Proof("db01")})
	diff(t, "reply", []wire.Msg{&proto.RegisterReply{Machine: "db01", OK: false, Reason: ReasonWrongPassphrase, VaultID: vaultID}},
		r.toAgent("db01"))
	// The agent retries and heartbeats anyway: still refused, alert raised
	// once, nothing ever replicates.
	r.d.Advance(5 * time.Minute)
	r.d.Receive(agentAddr("db01"), &proto.Register{Machine: "db01", Proof: wrong.Proof("db01")})
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	r.d.Receive(agentAddr("db01"), &proto.ResyncNeeded{Machine: "db01", Reason: "x"})
	got := r.toAgent("db01")
	diff(t, "after retries", []wire.Msg{&proto.RegisterReply{Machine: "db01", OK: false, Reason: ReasonWrongPassphrase,
		VaultID: vaultID}}, got)
	diff(t, "alerts", []string{"registration-refused/db01 active"}, r.alerts())
	m := r.machine("db01")
	if m.State != StateUnprotected || m.Registered {
		t.Errorf("machine %s registered=%v", m.State, m.Registered)
	}
	if j := r.s.Status().Jobs[0]; j.Status != JobFailed || !strings.Contains(j.Reason, ReasonWrongPassphrase) {
		t.Errorf("job %s: %s", j.Status, j.Reason)
	}

	// Reinstalled with the right passphrase: the alert clears.
	if rr := r.register("db01", r.keys, false); !rr.OK {
		t.Fatal(rr.Reason)
	}
	diff(t, "alerts after a good registration", []string{"registration-refused/db01 cleared"}, r.alerts())
}

// TestBitmapModeNoResync: an agent in bitmap mode that still replicates
// resyncs its dirty blocks itself: no new generation is ordered.
func TestBitmapModeNoResync(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	r.toAgent("db01")
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseReplicating, Mode: "bitmap"})
	if ps := protects(r.toAgent("db01")); len(ps) != 0 {
		t.Errorf("Protect sent for bitmap mode: %+v", ps)
	}
	if st := r.machine("db01").State; st != StateProtected {
		t.Errorf("state %s, want %s", st, StateProtected)
	}
}

func TestResync(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trigger wire.Msg
		reason  string
	}{
		{"resync-needed", &proto.ResyncNeeded{Machine: "db01", Reason: "change log corrupt"}, "agent: change log corrupt"},
		{"heartbeat-resync-required", &proto.Heartbeat{Machine: "db01", Phase: PhaseResyncRequired, Mode: "data"},
			"agent reports phase resync-required, capture mode data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.protect("db01")
			r.d.Receive(agentAddr("db01"), tc.trigger)
			want := proto.Protect{Machine: "db01", Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 2}
			diff(t, "protect", []proto.Protect{want}, protects(r.toAgent("db01")))
			if h := r.machine("db01").History; h[len(h)-2].Reason != tc.reason {
				t.Errorf("reason %q", h[len(h)-2].Reason)
			}

			// The agent repeats itself until it sees gen 2: the same Protect
			// is resent, no third generation.
			r.d.Receive(agentAddr("db01"), &proto.ResyncNeeded{Machine: "db01", Reason: "change log corrupt"})
			r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseResyncRequired})
			diff(t, "resent", []proto.Protect{want, want}, protects(r.toAgent("db01")))

			r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 2})
			r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 1}) // stale
			if st := r.machine("db01").State; st != StateResyncing {
				t.Fatalf("stale sync-complete moved the machine to %s", st)
			}
			r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2})
			diff(t, "history", []string{">unprotected", "unprotected>enabling", "enabling>initial-sync",
				"initial-sync>protected", "protected>resync-required", "resync-required>resyncing", "resyncing>protected"},
				r.states("db01"))
			jobs := r.s.Status().Jobs
			if len(jobs) != 2 || jobs[1].Kind != JobResync || jobs[1].Status != JobSucceeded {
				t.Errorf("jobs %+v", jobs)
			}
			if g := r.machine("db01").Gen; g != 2 {
				t.Errorf("gen %d", g)
			}
		})
	}
}

// TestProtectResent: a lost Protect is resent when the agent's heartbeat
// shows it idle; a syncing agent is left alone.
func TestProtectResent(t *testing.T) {
	r := newRig(t, nil)
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	r.register("db01", r.keys, false)
	first := protects(r.toAgent("db01"))
	for _, tc := range []struct {
		phase string
		want  []proto.Protect
	}{
		{PhaseIdle, first},
		{PhaseSyncing, nil},
		{PhaseIdle, first},
	} {
		gen := uint64(1)
		if tc.phase == PhaseIdle {
			gen = 0
		}
		r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: tc.phase, Mode: "data", Gen: gen})
		diff(t, "after heartbeat "+tc.phase, tc.want, protects(r.toAgent("db01")))
	}
}

func TestInstallFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		exit   int
		err    error
		reason string
	}{
		{"exit-code", 3, nil, "push install failed: installer exited with code 3"},
		{"guest-auth", 0, fmt.Errorf("vcenter: run in guest: %w", vsphere.ErrGuestAuth),
			"push install failed: vcenter: run in guest: vsphere: guest authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.vc.Exit, r.vc.RunErr = tc.exit, tc.err
			r.mustOK(&proto.EnableReplication{Machine: "db01"})
			m := r.machine("db01")
			diff(t, "history", []string{">unprotected", "unprotected>enabling", "enabling>unprotected"}, r.states("db01"))
			if got := m.History[2].Reason; got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
			j := r.s.Status().Jobs[0]
			if j.Status != JobFailed || j.Reason != tc.reason {
				t.Errorf("job %s %q", j.Status, j.Reason)
			}
			diff(t, "alerts", []string{"push-install-failed/db01 active"}, r.alerts())
			if got := r.toAgent("db01"); len(got) != 0 {
				t.Errorf("sent to agent: %v", got)
			}
			// PolicyFor is not resent for a machine that is not enabled.
			r.d.SentTo(azure)
			r.d.Advance(2 * time.Minute)
			if got := r.d.SentTo(azure); len(got) != 0 {
				t.Errorf("PolicyFor resent after failure: %v", got)
			}

			// Fixed, enabled again: a second generation, the alert clears.
			r.vc.Exit, r.vc.RunErr = 0, nil
			r.mustOK(&proto.EnableReplication{Machine: "db01"})
			r.register("db01", r.keys, false)
			if p := protects(r.toAgent("db01")); len(p) != 1 || p[0].Gen != 2 {
				t.Errorf("protect after re-enable: %+v", p)
			}
			diff(t, "alerts after retry", []string{"push-install-failed/db01 cleared"}, r.alerts())
		})
	}
}

// TestRPOAlert runs two servers through the same events, one whose policy
// threshold is crossed: only the alert differs, never what is sent or
// scheduled.
func TestRPOAlert(t *testing.T) {
	run := func(threshold time.Duration) (*rig, []string) {
		r := newRig(t, func(c *Config) {
			p := proto.DefaultPolicy()
			p.RPOThreshold = threshold
			c.Policies = []proto.Policy{p}
			c.HeartbeatLost = 100 * time.Hour // this test is about RPO alone
		})
		r.protect("db01")
		var trace []string
		record := func(step string) {
			for _, s := range r.d.Sent() {
				trace = append(trace, fmt.Sprintf("%s: %s %s", step, s.To, normalize(s.Msg)))
			}
			for _, tm := range r.d.Timers() {
				trace = append(trace, fmt.Sprintf("%s: timer %s at %v", step, tm.Name, tm.At.Sub(runtimetest.Epoch)))
			}
		}
		r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "db01-c-1", Kind: proto.Crash,
			PointTime: at(30 * time.Second)})
		r.d.Advance(20 * time.Minute)
		record("quiet")
		r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "db01-c-9", Kind: proto.Crash,
			PointTime: at(20 * time.Minute)})
		record("new point")
		r.d.Advance(time.Minute)
		record("after")
		return r, trace
	}
	tight, tightTrace := run(10 * time.Minute)
	loose, looseTrace := run(10 * time.Hour)
	diff(t, "sent and scheduled", looseTrace, tightTrace)
	if len(looseTrace) == 0 {
		t.Fatal("empty trace: the comparison proves nothing")
	}
	diff(t, "machines", loose.s.Status().Machines, tight.s.Status().Machines)
	diff(t, "jobs", loose.s.Status().Jobs, tight.s.Status().Jobs)
	diff(t, "loose alerts", []string(nil), loose.alerts())
	alerts := tight.s.Status().Alerts
	if len(alerts) != 1 {
		t.Fatalf("alerts %+v", alerts)
	}
	// Checked every minute: raised at the first check past 10 min 30 s,
	// cleared by the point of minute 20.
	diff(t, "alert", AlertStatus{Name: AlertRPO, Subject: "db01", Detail: "RPO 10m30s over the threshold 10m0s",
		Raised: at(11 * time.Minute), Cleared: at(20 * time.Minute)}, alerts[0])
	m := tight.machine("db01")
	if m.Points != 2 || !m.NewestPoint.Equal(at(20*time.Minute)) || m.RPO != time.Minute || m.State != StateProtected {
		t.Errorf("machine points %d newest %v rpo %v state %s", m.Points, m.NewestPoint, m.RPO, m.State)
	}
}

// normalize prints a message with the policy's RPO threshold removed (it is
// what TestRPOAlert varies).
func normalize(m wire.Msg) string {
	switch m := m.(type) {
	case *proto.Protect:
		c := *m
		c.Policy.RPOThreshold = 0
		return fmt.Sprintf("%+v", c)
	case *proto.PolicyFor:
		c := *m
		c.Policy.RPOThreshold = 0
		return fmt.Sprintf("%+v", c)
	}
	return fmt.Sprintf("%T%+v", m, m)
}

// TestRPOBeforeFirstPoint: before any point, RPO counts from enablement.
func TestRPOBeforeFirstPoint(t *testing.T) {
	r := newRig(t, func(c *Config) { c.HeartbeatLost = 100 * time.Hour })
	r.d.Advance(10 * time.Minute)
	r.protect("db01")
	r.d.Advance(59 * time.Minute)
	if m := r.machine("db01"); m.RPO != 59*time.Minute {
		t.Errorf("RPO %v", m.RPO)
	}
	diff(t, "alerts at 59 min", []string(nil), r.alerts())
	r.d.Advance(2 * time.Minute)
	diff(t, "alerts at 61 min", []string{"rpo-threshold-exceeded/db01 active"}, r.alerts())
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "p1", PointTime: at(70 * time.Minute)})
	if m := r.machine("db01"); m.RPO != time.Minute || m.Points != 1 {
		t.Errorf("RPO %v points %d", m.RPO, m.Points)
	}
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPruned, PointID: "p1"})
	if m := r.machine("db01"); m.Points != 0 {
		t.Errorf("points after prune %d", m.Points)
	}
}

func TestHeartbeatLost(t *testing.T) {
	r := newRig(t, func(c *Config) { c.HeartbeatLost = 15 * time.Minute })
	r.protect("db01")
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPoint, PointID: "p", PointTime: at(0)})
	hb := &proto.Heartbeat{Machine: "db01", Phase: PhaseReplicating, Mode: "data"}
	r.d.Receive(agentAddr("db01"), hb)
	r.d.Advance(15 * time.Minute)
	if a := r.alerts(); len(a) != 0 {
		t.Fatalf("alerts at 15 min: %v", a)
	}
	r.d.Advance(time.Minute)
	diff(t, "at 16 min", []string{"agent-heartbeat-lost/db01 active"}, r.alerts())
	r.d.Advance(10 * time.Minute)
	diff(t, "raised once", []string{"agent-heartbeat-lost/db01 active"}, r.alerts())
	r.d.Receive(agentAddr("db01"), hb)
	diff(t, "after a heartbeat", []string{"agent-heartbeat-lost/db01 cleared"}, r.alerts())
	if got := r.toAgent("db01"); len(got) != 0 {
		t.Errorf("the alert sent %v", got)
	}
}

func TestPSHealthAlerts(t *testing.T) {
	r := newRig(t, nil)
	const gib = 1 << 30
	for _, tc := range []struct {
		name   string
		health proto.PSHealth
		want   []string
	}{
		{"healthy", proto.PSHealth{Server: "ps01", CacheUsedBytes: gib, CacheCapBytes: 2 * gib, EstimateUpload: time.Minute}, nil},
		{"cache low", proto.PSHealth{Server: "ps01", CacheUsedBytes: 2*gib - gib/10, CacheCapBytes: 2 * gib},
			[]string{"ps-cache-low/ps01 active"}},
		{"still low: raised once", proto.PSHealth{Server: "ps01", CacheUsedBytes: 2 * gib, CacheCapBytes: 2 * gib},
			[]string{"ps-cache-low/ps01 active"}},
		{"backlog high", proto.PSHealth{Server: "ps01", CacheUsedBytes: gib, CacheCapBytes: 2 * gib, EstimateUpload: 31 * time.Minute},
			[]string{"ps-cache-low/ps01 cleared", "ps-backlog-high/ps01 active"}},
		{"recovered", proto.PSHealth{Server: "ps01", CacheUsedBytes: 0, CacheCapBytes: 2 * gib, EstimateUpload: 30 * time.Minute},
			[]string{"ps-cache-low/ps01 cleared", "ps-backlog-high/ps01 cleared"}},
	} {
		r.d.Receive(psAddr, &tc.health)
		diff(t, tc.name, tc.want, r.alerts())
	}
	diff(t, "ps status", []PSStatus{{Server: "ps01", ReportedAt: runtimetest.Epoch, CacheCapBytes: 2 * gib,
		EstimateUpload: 30 * time.Minute}}, r.s.Status().ProcessServers)
}

func TestManagementErrors(t *testing.T) {
	invalid := proto.DefaultPolicy()
	invalid.Name, invalid.CrashInterval = "fast", 4*time.Second // under proto.MinCrashInterval
	for _, tc := range []struct {
		name  string
		setup func(r *rig)
		req   wire.Msg
		want  error // nil: accepted
	}{
		{"unknown machine", nil, &proto.EnableReplication{Machine: "nosuch", Policy: "default"}, ErrUnknownMachine},
		{"unknown policy", nil, &proto.EnableReplication{Machine: "db01", Policy: "platinum"}, ErrUnknownPolicy},
		{"invalid policy", nil, &proto.CreatePolicy{Policy: invalid}, ErrInvalidPolicy},
		{"policy without name", nil, &proto.CreatePolicy{Policy: proto.Policy{}}, ErrInvalidPolicy},
		{"already protected", func(r *rig) { r.protect("db01") }, &proto.EnableReplication{Machine: "db01"}, ErrAlreadyProtected},
		{"enabling already", func(r *rig) { r.mustOK(&proto.EnableReplication{Machine: "db01"}) },
			&proto.EnableReplication{Machine: "db01"}, ErrAlreadyProtected},
		{"physical server without agent", func(r *rig) {
			wrong, _ := vault.Derive(vaultID, "some other passphrase")
			r.register("phys01", wrong, true)
		}, &proto.EnableReplication{Machine: "phys01"}, ErrNoAgent},
		{"disable unknown", nil, &proto.DisableReplication{Machine: "nosuch"}, ErrUnknownMachine},
		{"disable unprotected", nil, &proto.DisableReplication{Machine: "db01"}, ErrNotProtected},
		{"create policy", nil, &proto.CreatePolicy{Policy: proto.Policy{Name: "gold", RPOThreshold: time.Minute,
			Retention: time.Hour, CrashInterval: time.Minute}}, nil},
		{"physical server with agent", func(r *rig) { r.register("phys01", r.keys, true) },
			&proto.EnableReplication{Machine: "phys01"}, nil},
		{"edit failback policy", nil, &proto.CreatePolicy{Policy: proto.Policy{Name: "default-failback", RPOThreshold: time.Hour,
			Retention: time.Hour, CrashInterval: time.Minute}}, ErrFailbackPolicy},
		{"edit failback policy to its own values", nil, &proto.CreatePolicy{Policy: proto.FailbackPolicy("default")}, ErrFailbackPolicy},
		{"create a name reserved for failback", nil, &proto.CreatePolicy{Policy: proto.FailbackPolicy("nosuch")}, ErrFailbackPolicy},
		{"protect forward with a failback policy", nil, &proto.EnableReplication{Machine: "db01", Policy: "default-failback"}, ErrFailbackPolicy},
		{"group with a failback policy", nil, &proto.EnableGroup{Group: "g", Machines: []string{"db01", "web01"}, Policy: "default-failback"},
			ErrFailbackPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			if tc.setup != nil {
				tc.setup(r)
			}
			before := r.s.Status()
			r.d.Sent()
			rep := r.request(tc.req)
			if rep.Request != wire.KindName(tc.req.WireKind()) {
				t.Errorf("Request %q", rep.Request)
			}
			if tc.want == nil {
				if !rep.OK {
					t.Fatalf("refused: %s", rep.Reason)
				}
				return
			}
			if rep.OK || !strings.HasPrefix(rep.Reason, tc.want.Error()) {
				t.Fatalf("reply %+v, want a refusal starting %q", rep, tc.want)
			}
			if d := cmp.Diff(before, r.s.Status()); d != "" {
				t.Errorf("a refused request changed the state:\n%s", d)
			}
			if got := r.d.Sent(); len(got) != 0 {
				t.Errorf("a refused request sent %v", got)
			}
		})
	}
}

func TestPhysicalServer(t *testing.T) {
	r := newRig(t, nil)
	rep := r.request(&proto.EnableReplication{Machine: "phys01"})
	if rep.OK || !strings.Contains(rep.Reason, "installed by hand") {
		t.Errorf("reply %+v", rep)
	}
	r.register("phys01", r.keys, true)
	rep = r.request(&proto.EnableReplication{Machine: "phys01"})
	if !rep.OK {
		t.Fatal(rep.Reason)
	}
	if len(r.vc.calls()) != 0 {
		t.Errorf("push install for a physical server: %v", r.vc.calls())
	}
	diff(t, "protect", []proto.Protect{{Machine: "phys01", Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 1}},
		protects(r.toAgent("phys01")))
	m := r.machine("phys01")
	if !m.Physical || m.InVCenter || m.State != StateInitialSync {
		t.Errorf("machine %+v", m)
	}
	if s := r.s.Status().Jobs[0].Steps[1]; s.Name != StepInstall || s.Status != JobSkipped {
		t.Errorf("install step %+v", s)
	}
}

func TestChecksumsRelayed(t *testing.T) {
	r := newRig(t, nil)
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	r.register("db01", r.keys, false)
	r.d.Sent()
	sums := []*proto.Checksums{
		{Machine: "db01", Gen: 1, Disk: 0, Off: 0, BlockSize: 4096, Sums: make([]byte, 2*proto.ChecksumSize)},
		{Machine: "db01", Gen: 1, Disk: 1, Fresh: true, BlockSize: 4096, Final: true},
	}
	for _, c := range sums {
		r.d.Receive(azure, c)
	}
	r.d.Receive(azure, &proto.Checksums{Machine: "nosuch", Gen: 1})
	got := r.d.Sent()
	want := []runtimetest.Sent{{To: agentAddr("db01"), Msg: sums[0]}, {To: agentAddr("db01"), Msg: sums[1]}}
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("relayed (-want +got):\n%s", d)
	}
}

func TestPolicyForResent(t *testing.T) {
	r := newRig(t, nil)
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	want := []wire.Msg{&proto.PolicyFor{Machine: "db01", Policy: proto.DefaultPolicy()}}
	diff(t, "at enable", want, r.d.SentTo(azure))
	r.d.Advance(time.Minute)
	diff(t, "a minute later", want, r.d.SentTo(azure))
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 1})
	r.d.Advance(5 * time.Minute)
	if got := r.d.SentTo(azure); len(got) != 0 {
		t.Errorf("resent after the Azure side reported: %v", got)
	}
	// A replaced policy goes to the Azure side again.
	p := proto.DefaultPolicy()
	p.Retention = 48 * time.Hour
	r.mustOK(&proto.CreatePolicy{Policy: p})
	diff(t, "after replace", []wire.Msg{&proto.PolicyFor{Machine: "db01", Policy: p}}, r.d.SentTo(azure))
}

func TestDisable(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	r.d.Advance(2 * time.Hour) // RPO and heartbeat alerts
	if len(r.alerts()) != 2 {
		t.Fatalf("alerts %v", r.alerts())
	}
	r.mustOK(&proto.DisableReplication{Machine: "db01"})
	diff(t, "to agent", []wire.Msg{&proto.Unprotect{Machine: "db01"}}, r.toAgent("db01"))
	diff(t, "alerts", []string{"agent-heartbeat-lost/db01 cleared", "rpo-threshold-exceeded/db01 cleared"}, r.alerts())
	if st := r.machine("db01").State; st != StateDisabled {
		t.Fatalf("state %s", st)
	}
	// The agent missed it and keeps replicating: Unprotect again.
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseReplicating})
	diff(t, "resent", []wire.Msg{&proto.Unprotect{Machine: "db01"}}, r.toAgent("db01"))
	r.d.Receive(agentAddr("db01"), &proto.Heartbeat{Machine: "db01", Phase: PhaseIdle})
	if got := r.toAgent("db01"); len(got) != 0 {
		t.Errorf("idle agent got %v", got)
	}
	// Enabled again: new generation, agent registered, Protect at once.
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	if p := protects(r.toAgent("db01")); len(p) != 1 || p[0].Gen != 2 {
		t.Errorf("protect %+v", p)
	}
}

func TestCorruptFrames(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	before := r.s.Status()
	good := wire.Encode(&proto.ResyncNeeded{Machine: "db01", Reason: "x"})
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x40
	r.d.Receive("x:1", &proto.Register{Machine: ""})
	diff(t, "nameless register", []wire.Msg{&proto.RegisterReply{Reason: "no machine name", VaultID: vaultID}}, r.d.SentTo("x:1"))
	for _, frame := range [][]byte{nil, []byte("garbage"), good[:len(good)-3], flipped,
		wire.Encode(&proto.ItemAck{Machine: "db01"})} { // decodes, but is not for the configuration server
		r.d.ReceiveFrame(agentAddr("db01"), frame)
	}
	if got := r.d.Sent(); len(got) != 0 {
		t.Errorf("sent %v", got)
	}
	diff(t, "status", before, r.s.Status())
}

// TestStatusIsACopy: changing a returned Status does not reach the server.
func TestStatusIsACopy(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	st := r.s.Status()
	st.Machines[0].History[0].Reason = "changed"
	st.Machines[0].DiskSizes[0] = 1
	st.Jobs[0].Steps[0].Name = "changed"
	diff(t, "status", r.s.Status().Machines[0].History[0].Reason, "discovered in vCenter")
	if r.s.Status().Machines[0].DiskSizes[0] != 1<<30 || r.s.Status().Jobs[0].Steps[0].Name != StepPrerequisites {
		t.Error("status aliases the server's state")
	}
}

var _ runtime.Actor = (*Server)(nil)

// TestItemRefusedResync: the Azure side refusing an item (it does not open)
// raises an alert and orders a resync once; a duplicate of the event
// changes nothing; the resync's sync-complete clears the alert.
func TestItemRefusedResync(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	ev := proto.ReplicaEvent{Machine: "db01", Event: proto.EventItemRefused, Seq: 27, Gen: 1, Detail: "batch: sealed item failed authentication"}
	r.event(ev)
	r.event(ev) // duplicated on the network
	want := proto.Protect{Machine: "db01", Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 2}
	diff(t, "protect", []proto.Protect{want}, protects(r.toAgent("db01")))
	active := func() []string {
		var out []string
		for _, a := range r.s.Status().Alerts {
			if a.Cleared.IsZero() {
				out = append(out, a.Name+" "+a.Subject)
			}
		}
		return out
	}
	diff(t, "alerts", []string{AlertItemRefused + " db01"}, active())
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 2})
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2})
	if st := r.machine("db01").State; st != StateProtected {
		t.Fatalf("state %s after the resync", st)
	}
	if a := active(); len(a) != 0 {
		t.Errorf("alerts still active after the resync: %v", a)
	}
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventPointLost, PointID: "db01-c-9", Kind: proto.Crash, Detail: "snapshot of disk 0 gone from storage"})
	diff(t, "alerts", []string{AlertPointLost + " db01/db01-c-9"}, active())
}

// TestRefusalProtectLost: the Protect of a resync this server ordered
// (the Azure side refused an item) is lost; the agent goes on replicating
// its older generation, never asking for a resync. Its heartbeat's
// generation shows what it missed, and the Protect is resent until the
// Azure side sees the new generation start — a heartbeat of the older
// generation still in flight after that is not answered (swarm seed 130).
func TestRefusalProtectLost(t *testing.T) {
	r := newRig(t, nil)
	r.protect("db01")
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventItemRefused, Seq: 27, Gen: 1, Detail: "batch: sealed item failed authentication"})
	want := proto.Protect{Machine: "db01", Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 2}
	diff(t, "protect", []proto.Protect{want}, protects(r.toAgent("db01"))) // lost on the network
	for _, tc := range []struct {
		name  string
		event *proto.ReplicaEvent // delivered before the heartbeat
		hb    proto.Heartbeat
		want  []proto.Protect
	}{
		{"agent on gen 1", nil, proto.Heartbeat{Phase: PhaseReplicating, Gen: 1}, []proto.Protect{want}},
		{"again on gen 1", nil, proto.Heartbeat{Phase: PhaseReplicating, Gen: 1}, []proto.Protect{want}},
		{"agent syncing gen 2", nil, proto.Heartbeat{Phase: PhaseSyncing, Gen: 2}, nil},
		{"stale heartbeat after sync-started", &proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncStarted, Gen: 2},
			proto.Heartbeat{Phase: PhaseReplicating, Gen: 1}, nil},
	} {
		if tc.event != nil {
			r.event(*tc.event)
		}
		hb := tc.hb
		hb.Machine, hb.Mode = "db01", "data"
		r.d.Receive(agentAddr("db01"), &hb)
		diff(t, tc.name, tc.want, protects(r.toAgent("db01")))
	}
	if g, st := r.machine("db01").Gen, r.machine("db01").State; g != 2 || st != StateResyncing {
		t.Errorf("gen %d state %s, want gen 2 resyncing (no generation ordered by a resent Protect)", g, st)
	}
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2})
	if st := r.machine("db01").State; st != StateProtected {
		t.Errorf("state %s after the resync", st)
	}
}

// TestFailbackPolicy: every policy gets its failback twin, with ASR's fixed
// values, and replacing the policy leaves the twin as it was.
func TestFailbackPolicy(t *testing.T) {
	r := newRig(t, nil)
	gold := proto.Policy{Name: "gold", RPOThreshold: 30 * time.Minute, Retention: 72 * time.Hour,
		CrashInterval: 10 * time.Minute, AppInterval: 2 * time.Hour, Compression: "zstd"}
	r.mustOK(&proto.CreatePolicy{Policy: gold})
	policy := func(name string) (proto.Policy, bool) {
		for _, p := range r.s.Status().Policies {
			if p.Name == name {
				return p, true
			}
		}
		return proto.Policy{}, false
	}
	want := proto.Policy{Name: "gold-failback", RPOThreshold: 15 * time.Minute, Retention: 24 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: 60 * time.Minute, Compression: "s2"}
	got, ok := policy("gold-failback")
	if !ok {
		t.Fatal("no gold-failback after creating gold")
	}
	diff(t, "gold-failback", want, got)
	gold.RPOThreshold = time.Hour
	r.mustOK(&proto.CreatePolicy{Policy: gold})
	got, _ = policy("gold-failback")
	diff(t, "gold-failback after gold was replaced", want, got)
	rep := r.request(&proto.CreatePolicy{Policy: proto.Policy{Name: "gold-failback", RPOThreshold: time.Hour,
		Retention: 48 * time.Hour, CrashInterval: 5 * time.Minute}})
	if rep.OK || !strings.Contains(rep.Reason, "gold-failback is the failback policy of gold") {
		t.Errorf("edit of gold-failback: %+v", rep)
	}
	got, _ = policy("gold-failback")
	diff(t, "gold-failback after a refused edit", want, got)
}
