package configsrv

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

// gold is a policy whose intervals differ from the default's, so that a
// GroupConfig carrying the default's would show.
var gold = proto.Policy{Name: "gold", RPOThreshold: 30 * time.Minute, Retention: 48 * time.Hour,
	CrashInterval: 10 * time.Minute, AppInterval: 2 * time.Hour, Compression: "s2"}

// linuxVMs is an inventory of Linux VMs with the given names.
func linuxVMs(names ...string) []vsphere.VM {
	var out []vsphere.VM
	for i, n := range names {
		out = append(out, vsphere.VM{Name: n, Ref: vsphere.VMRef(fmt.Sprintf("vm-%d", 100+i)), GuestOS: "ubuntu64Guest",
			PowerState: vsphere.PoweredOn})
	}
	return out
}

// numbered is vm01..vmNN.
func numbered(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("vm%02d", i))
	}
	return out
}

var trio = []string{"app01", "db01", "web01"}

func newGroupRig(t *testing.T) *rig {
	return newRigVMs(t, linuxVMs(trio...), func(c *Config) {
		c.Policies = []proto.Policy{gold}
		c.HeartbeatLost = 100 * time.Hour // these tests send heartbeats only when they are about them
	})
}

func wantGroupConfig(policy proto.Policy, version uint64, master string) *proto.GroupConfig {
	return &proto.GroupConfig{Group: "g1", Version: version, Members: trio, Master: master,
		CrashInterval: policy.CrashInterval, AppInterval: policy.AppInterval,
		Crash: proto.CrashTagTimeouts, App: proto.AppTagTimeouts}
}

func (r *rig) group(name string) GroupStatus {
	r.t.Helper()
	for _, g := range r.s.Status().Groups {
		if g.Name == name {
			return g
		}
	}
	r.t.Fatalf("group %s not in status", name)
	return GroupStatus{}
}

// protectGroup enables group g1 of trio with policy, registers every agent,
// completes every initial sync, and forgets what was sent.
func (r *rig) protectGroup(policy string) {
	r.t.Helper()
	r.mustOK(&proto.EnableGroup{Group: "g1", Machines: trio, Policy: policy})
	for _, m := range trio {
		if rr := r.register(m, r.keys, false); !rr.OK {
			r.t.Fatalf("register %s: %s", m, rr.Reason)
		}
	}
	r.syncAll()
	if st := r.group("g1").State; st != GroupProtected {
		r.t.Fatalf("group is %s after every sync-complete", st)
	}
	r.d.Sent()
	r.held = map[string][]wire.Msg{}
}

func (r *rig) syncAll() {
	for _, m := range trio {
		r.event(proto.ReplicaEvent{Machine: m, Event: proto.EventSyncStarted, Gen: r.machine(m).Gen})
		r.event(proto.ReplicaEvent{Machine: m, Event: proto.EventSyncComplete, Gen: r.machine(m).Gen})
	}
}

// kinds names the messages' types, e.g. "Protect GroupConfig".
func kinds(msgs []wire.Msg) string {
	var out []string
	for _, m := range msgs {
		out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", m), "*proto."))
	}
	return strings.Join(out, " ")
}

// TestEnableGroup: every member is enabled like EnableReplication does it,
// and its agent gets Protect and then the GroupConfig.
func TestEnableGroup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		master     string
		registered []string // agents registered before the group is enabled: no push install for them
		wantMaster string
	}{
		{"master by name", "", nil, "app01"},
		{"master chosen", "web01", nil, "web01"},
		{"one agent registered already", "", []string{"db01"}, "app01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newGroupRig(t)
			for _, m := range tc.registered {
				r.register(m, r.keys, false)
			}
			rep := r.request(&proto.EnableGroup{Group: "g1", Machines: []string{"web01", "db01", "app01"}, Policy: "gold",
				Master: tc.master})
			if !rep.OK || rep.Subject != "g1" || rep.Request != "enable-group" {
				t.Fatalf("reply %+v", rep)
			}
			var want []wire.Msg
			for _, m := range trio {
				want = append(want, &proto.PolicyFor{Machine: m, Policy: gold, Group: "g1", Members: trio})
			}
			diff(t, "PolicyFor", want, r.d.SentTo(azure))
			if n := len(r.vc.calls()); n != len(trio)-len(tc.registered) {
				t.Errorf("%d push installs", n)
			}
			protect := func(m string) *proto.Protect {
				return &proto.Protect{Machine: m, Policy: gold, ProcessServer: string(psAddr), Gen: 1}
			}
			gc := wantGroupConfig(gold, 1, tc.wantMaster)
			for _, m := range tc.registered {
				diff(t, "to the registered agent "+m, []wire.Msg{protect(m), gc}, r.toAgent(m))
			}
			for _, m := range trio {
				if r.machine(m).Registered {
					continue
				}
				if got := r.toAgent(m); len(got) != 0 {
					t.Fatalf("sent to %s before it registered: %v", m, got)
				}
				if rr := r.register(m, r.keys, false); !rr.OK {
					t.Fatal(rr.Reason)
				}
				diff(t, "to agent "+m, []wire.Msg{protect(m), gc}, r.toAgent(m))
			}
			g := r.group("g1")
			if g.State != GroupEnabling || g.Master != tc.wantMaster || g.Policy != "gold" || g.Version != 1 {
				t.Fatalf("group %s master %s policy %s version %d", g.State, g.Master, g.Policy, g.Version)
			}
			r.d.Advance(3 * time.Minute)
			r.syncAll()
			g = r.group("g1")
			var members []GroupMemberStatus
			for _, m := range trio {
				members = append(members, GroupMemberStatus{Machine: m, State: StateProtected})
				if got := r.machine(m).Group; got != "g1" {
					t.Errorf("%s: Group %q", m, got)
				}
			}
			diff(t, "members", members, g.Members)
			if g.State != GroupProtected || !g.ProtectedSince.Equal(at(3*time.Minute)) || !g.EnabledAt.Equal(at(0)) {
				t.Errorf("group %s, protected since %v, enabled at %v", g.State, g.ProtectedSince, g.EnabledAt)
			}
		})
	}
}

// TestEnableGroupSize: 2..16 machines. The 16 and 17 rows fail if the
// limit is off by one either way.
func TestEnableGroupSize(t *testing.T) {
	all := numbered(18)
	for _, tc := range []struct {
		n  int
		ok bool
	}{
		{0, false}, {1, false}, {2, true}, {15, true}, {16, true}, {17, false}, {18, false},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			r := newRigVMs(t, linuxVMs(all...), nil)
			before := r.s.Status()
			r.d.Sent()
			rep := r.request(&proto.EnableGroup{Group: "big", Machines: all[:tc.n]})
			if tc.ok {
				if !rep.OK {
					t.Fatalf("refused: %s", rep.Reason)
				}
				if g := r.group("big"); len(g.Members) != tc.n {
					t.Errorf("%d members", len(g.Members))
				}
				if n := len(r.vc.calls()); n != tc.n {
					t.Errorf("%d push installs", n)
				}
				return
			}
			want := fmt.Sprintf("%s: group big lists %d machines; a replication group holds 2 to 16 machines", ErrGroupSize, tc.n)
			if rep.OK || rep.Reason != want {
				t.Fatalf("reply %+v, want the refusal %q", rep, want)
			}
			diff(t, "status after a refusal", before, r.s.Status())
			if got := r.d.Sent(); len(got) != 0 {
				t.Errorf("a refused group sent %v", got)
			}
		})
	}
}

// TestEnableGroupRefused: a group is refused as a whole, changing nothing.
func TestEnableGroupRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(r *rig)
		req    proto.EnableGroup
		want   error
		reason string // a phrase the reason must contain
	}{
		{"unknown machine", nil, proto.EnableGroup{Group: "g1", Machines: []string{"db01", "nosuch"}}, ErrUnknownMachine, "nosuch"},
		{"member already protected", func(r *rig) { r.protect("db01") },
			proto.EnableGroup{Group: "g1", Machines: trio}, ErrAlreadyProtected, "db01 is protected"},
		{"member being enabled", func(r *rig) { r.mustOK(&proto.EnableReplication{Machine: "web01"}) },
			proto.EnableGroup{Group: "g1", Machines: trio}, ErrAlreadyProtected, "web01 is enabling"},
		{"joining a replicating group", func(r *rig) {
			r.mustOK(&proto.EnableGroup{Group: "g1", Machines: []string{"app01", "db01"}})
		}, proto.EnableGroup{Group: "g1", Machines: []string{"web01", "db02"}}, ErrGroupReplicating,
			"machines can join a replication group only when it is enabled"},
		{"member of another group", func(r *rig) {
			r.mustOK(&proto.EnableGroup{Group: "g0", Machines: []string{"web01", "db02"}})
			r.mustOK(&proto.DisableReplication{Machine: "web01"}) // still a member while db02 replicates
		}, proto.EnableGroup{Group: "g1", Machines: trio}, ErrInOtherGroup, "web01 is a member of group g0"},
		{"master not a member", nil, proto.EnableGroup{Group: "g1", Machines: trio, Master: "db02"}, ErrInvalidGroup,
			"master db02 is not one of its machines"},
		{"listed twice", nil, proto.EnableGroup{Group: "g1", Machines: []string{"db01", "app01", "db01"}}, ErrInvalidGroup,
			"lists db01 twice"},
		{"no name", nil, proto.EnableGroup{Machines: trio}, ErrInvalidGroup, "no group name"},
		{"unknown policy", nil, proto.EnableGroup{Group: "g1", Machines: trio, Policy: "platinum"}, ErrUnknownPolicy, "platinum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigVMs(t, linuxVMs(append([]string{"db02"}, trio...)...), nil)
			if tc.setup != nil {
				tc.setup(r)
			}
			before := r.s.Status()
			r.d.Sent()
			r.held = map[string][]wire.Msg{}
			rep := r.request(&tc.req)
			if rep.OK || !strings.HasPrefix(rep.Reason, tc.want.Error()) || !strings.Contains(rep.Reason, tc.reason) {
				t.Fatalf("reply %+v, want a refusal starting %q containing %q", rep, tc.want, tc.reason)
			}
			diff(t, "status after a refusal", before, r.s.Status())
			if got := r.d.Sent(); len(got) != 0 {
				t.Errorf("a refused group sent %v", got)
			}
		})
	}
}

// TestGroupConfigResent: a member's heartbeat that shows another group or
// an older version gets the GroupConfig again; a lost Protect is resent
// with it; a replaced policy makes a new version.
func TestGroupConfigResent(t *testing.T) {
	r := newGroupRig(t)
	r.protectGroup("default")
	gc1 := wantGroupConfig(proto.DefaultPolicy(), 1, "app01")
	hb := func(phase, group string, version uint64) *proto.Heartbeat {
		return &proto.Heartbeat{Machine: "db01", Phase: phase, Mode: "data", Gen: 1, Group: group, GroupVersion: version}
	}
	protect := &proto.Protect{Machine: "db01", Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: 1}
	steps := []struct {
		name string
		hb   *proto.Heartbeat
		want []wire.Msg
	}{
		{"applied", hb(PhaseReplicating, "g1", 1), nil},
		{"no group yet", hb(PhaseReplicating, "", 0), []wire.Msg{gc1}},
		{"another group", hb(PhaseReplicating, "g0", 7), []wire.Msg{gc1}},
		{"older version", hb(PhaseSyncing, "g1", 0), []wire.Msg{gc1}},
		{"lost Protect: both resent once", hb(PhaseIdle, "", 0), []wire.Msg{protect, gc1}},
		{"applied again", hb(PhaseSyncing, "g1", 1), nil},
	}
	for _, st := range steps {
		r.d.Receive(agentAddr("db01"), st.hb)
		diff(t, st.name, st.want, r.toAgent("db01"))
	}
	if m := r.group("g1").Members[1]; m.Machine != "db01" || !m.ConfigApplied || m.AgentGroupVersion != 1 {
		t.Errorf("member %+v", m)
	}

	// The group's policy gets new intervals: version 2 to every member,
	// PolicyFor with the group to the Azure side.
	p := proto.DefaultPolicy()
	p.CrashInterval = 15 * time.Minute
	r.mustOK(&proto.CreatePolicy{Policy: p})
	gc2 := wantGroupConfig(p, 2, "app01")
	for _, m := range trio {
		diff(t, "after the policy change: "+m, []wire.Msg{gc2}, r.toAgent(m))
	}
	var pf []wire.Msg
	for _, m := range trio {
		pf = append(pf, &proto.PolicyFor{Machine: m, Policy: p, Group: "g1", Members: trio})
	}
	diff(t, "PolicyFor after the policy change", pf, r.d.SentTo(azure))
	r.d.Receive(agentAddr("db01"), hb(PhaseReplicating, "g1", 1))
	diff(t, "version 1 after version 2", []wire.Msg{gc2}, r.toAgent("db01"))
	if r.group("g1").Members[1].ConfigApplied {
		t.Error("version 1 counted as applied")
	}
}

// TestPolicyForGroup: the PolicyFor of a member names its group and every
// member, on enablement and on every resend until the Azure side answers.
func TestPolicyForGroup(t *testing.T) {
	r := newGroupRig(t)
	r.mustOK(&proto.EnableGroup{Group: "g1", Machines: trio})
	want := func(ms ...string) []wire.Msg {
		var out []wire.Msg
		for _, m := range ms {
			out = append(out, &proto.PolicyFor{Machine: m, Policy: proto.DefaultPolicy(), Group: "g1", Members: trio})
		}
		return out
	}
	diff(t, "at enablement", want(trio...), r.d.SentTo(azure))
	r.event(proto.ReplicaEvent{Machine: "db01", Group: "g1", Event: proto.EventSyncStarted, Gen: 1})
	r.d.Advance(time.Minute)
	diff(t, "resent to those the Azure side has not answered for", want("app01", "web01"), r.d.SentTo(azure))
}

// TestTagRoundStats: round counts, revoke reasons and the hold distribution
// from the master's reports; a duplicated report counts once.
func TestTagRoundStats(t *testing.T) {
	r := newGroupRig(t)
	r.protectGroup("default")
	holds := func(a, d, w time.Duration) []proto.MemberHold {
		return []proto.MemberHold{{Machine: "app01", Held: a}, {Machine: "db01", Held: d}, {Machine: "web01", Held: w}}
	}
	const ms = time.Millisecond
	rounds := []proto.TagRound{
		{Group: "g1", TagID: "g1:c:1", Kind: proto.Crash, Outcome: proto.RoundCommitted, Holds: holds(800*time.Microsecond, 2*ms, 3*ms)},
		{Group: "g1", TagID: "g1:c:2", Kind: proto.Crash, Outcome: proto.RoundRevoked, Reason: "prepare: web01 did not ack",
			Holds: holds(40*ms, 120*ms, -1), Phases: []proto.RoundPhase{{Name: proto.PhaseBegin, Start: at(time.Minute), End: at(time.Minute + ms), OK: true},
				{Name: proto.PhasePrepare, Start: at(time.Minute + ms), End: at(time.Minute + 300*ms)},
				{Name: proto.PhaseRevoke, Start: at(time.Minute + 300*ms), End: at(time.Minute + 302*ms), OK: true}}},
		{Group: "g1", TagID: "g1:a:3", Kind: proto.App, Outcome: proto.RoundCommitted, Holds: holds(2*time.Second, 4*time.Second, 70*time.Second)},
		{Group: "g1", TagID: "g1:c:1", Kind: proto.Crash, Outcome: proto.RoundCommitted, Holds: holds(time.Hour, time.Hour, time.Hour)}, // duplicate
		{Group: "g1", TagID: "g1:c:4", Kind: proto.Crash, Outcome: proto.RoundRevoked, Reason: "commit: db01: hold deadline",
			Holds: holds(ms, time.Second, 300*ms)},
		{Group: "g1", TagID: "g1:c:5", Kind: proto.Crash, Outcome: proto.RoundRevoked, Reason: "prepare: web01 did not ack",
			Holds: holds(ms, 2*ms, -1)},
		{Group: "nosuch", TagID: "nosuch:c:1", Outcome: proto.RoundCommitted, Holds: holds(time.Hour, time.Hour, time.Hour)},
		{Group: "g1", TagID: "g1:c:6", Kind: proto.Crash, Outcome: "maybe", Holds: holds(time.Hour, time.Hour, time.Hour)},
	}
	for i := range rounds {
		rounds[i].Started = at(time.Duration(i) * time.Minute)
		r.d.Receive(agentAddr("app01"), &rounds[i])
	}
	st := r.group("g1").Stats
	type counts struct {
		Rounds, Committed, Revoked, CommittedCrash, CommittedApp, ConsecutiveRevoked, Duplicates int
		RevokedBy                                                                                []ReasonCount
		LastRevokeReason                                                                         string
		Recent                                                                                   []string
	}
	var recent []string
	for _, rs := range st.Recent {
		recent = append(recent, rs.TagID+" "+rs.Outcome)
	}
	diff(t, "counts", counts{Rounds: 5, Committed: 2, Revoked: 3, CommittedCrash: 1, CommittedApp: 1, ConsecutiveRevoked: 2,
		Duplicates: 1, RevokedBy: []ReasonCount{{"commit: db01: hold deadline", 1}, {"prepare: web01 did not ack", 2}},
		LastRevokeReason: "prepare: web01 did not ack",
		Recent:           []string{"g1:c:1 committed", "g1:c:2 revoked", "g1:a:3 committed", "g1:c:4 revoked", "g1:c:5 revoked"}},
		counts{st.Rounds, st.Committed, st.Revoked, st.CommittedCrash, st.CommittedApp, st.ConsecutiveRevoked, st.Duplicates,
			st.RevokedBy, st.LastRevokeReason, recent})
	diff(t, "recent holds", rounds[1].Holds, st.Recent[1].Holds)
	diff(t, "recent phases", rounds[1].Phases, st.Recent[1].Phases)
	if len(st.Recent[0].Phases) != 0 {
		t.Errorf("a report without phases got %v", st.Recent[0].Phases)
	}
	st.Recent[1].Phases[0].Name = "changed"
	diff(t, "phases after a caller changed its copy", rounds[1].Phases, r.group("g1").Stats.Recent[1].Phases)

	// Every hold: 800µs 1ms 1ms 2ms 2ms 3ms 40ms 120ms 300ms 1s 2s 4s 70s.
	hist := func(c ...int) []HoldBucket {
		labels := []string{"<=1ms", "<=2ms", "<=5ms", "<=10ms", "<=50ms", "<=100ms", "<=300ms", "<=1s", "<=10s", "<=1m0s", ">1m0s"}
		bounds := []time.Duration{ms, 2 * ms, 5 * ms, 10 * ms, 50 * ms, 100 * ms, 300 * ms, time.Second, 10 * time.Second, time.Minute, 0}
		var out []HoldBucket
		for i := range labels {
			out = append(out, HoldBucket{Label: labels[i], UpTo: bounds[i], Count: c[i]})
		}
		return out
	}
	diff(t, "holds", HoldStats{Count: 13, Unknown: 2, Max: 70 * time.Second, P50: 40 * ms, P99: 70 * time.Second,
		Histogram: hist(3, 2, 1, 0, 1, 0, 2, 1, 2, 0, 1)}, st.Holds)
	diff(t, "app holds", HoldStats{Count: 3, Max: 70 * time.Second, P50: 4 * time.Second, P99: 70 * time.Second,
		Histogram: hist(0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1)}, st.AppHolds)
	diff(t, "crash holds", HoldStats{Count: 10, Unknown: 2, Max: time.Second, P50: 2 * ms, P99: time.Second,
		Histogram: hist(3, 2, 1, 0, 1, 0, 2, 1, 0, 0, 0)}, st.CrashHolds)
}

// TestHoldPercentiles: nearest-rank percentiles over the last HoldWindow
// holds; count, max and histogram over all of them.
func TestHoldPercentiles(t *testing.T) {
	series := func(n int, d time.Duration) []time.Duration {
		var out []time.Duration
		for i := 1; i <= n; i++ {
			out = append(out, time.Duration(i)*d)
		}
		return out
	}
	repeat := func(n int, d time.Duration) []time.Duration {
		var out []time.Duration
		for range n {
			out = append(out, d)
		}
		return out
	}
	for _, tc := range []struct {
		name          string
		holds         []time.Duration
		p50, p99, max time.Duration
		count         int
	}{
		{"none", nil, 0, 0, 0, 0},
		{"one", []time.Duration{7 * time.Millisecond}, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 1},
		{"1..100 ms", series(100, time.Millisecond), 50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond, 100},
		{"1..1000 µs", series(1000, time.Microsecond), 500 * time.Microsecond, 990 * time.Microsecond, time.Millisecond, 1000},
		{"old long holds leave the window", append(repeat(100, time.Hour), repeat(HoldWindow, time.Millisecond)...),
			time.Millisecond, time.Millisecond, time.Hour, HoldWindow + 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h holdDist
			for _, d := range tc.holds {
				h.add(d)
			}
			st := h.status()
			total := 0
			for _, b := range st.Histogram {
				total += b.Count
			}
			got := []any{st.P50, st.P99, st.Max, st.Count, total, len(st.Histogram)}
			diff(t, "p50 p99 max count histogram-total buckets",
				[]any{tc.p50, tc.p99, tc.max, tc.count, tc.count, len(holdBounds) + 1}, got)
		})
	}
}

// TestMultiVMAlert: raised when a protected group's rounds stop committing
// (silence past 2 crash intervals, or 2 revoked in a row), cleared by a
// committed round or a group point, never while members are not all
// protected.
func TestMultiVMAlert(t *testing.T) {
	type step struct {
		advance time.Duration
		round   string // "c": committed; "r:<reason>": revoked
		point   bool   // a group point arrives
		sync    bool   // every member's initial sync completes
		want    string // the group's alert afterwards: "", "active" or "cleared"
	}
	for _, tc := range []struct {
		name      string
		protected bool // the group starts protected (else: members in initial sync)
		steps     []step
		want      AlertStatus // the last alert (Subject g1, Name multi-vm-consistency implied)
	}{
		{"two revoked rounds, cleared by a committed one", true, []step{
			{advance: 2 * time.Minute, round: "r:prepare: web01 did not ack"},
			{advance: 30 * time.Second, round: "r:commit: db01: hold deadline", want: "active"},
			{round: "r:commit: db01: hold deadline", want: "active"},
			{advance: 2 * time.Minute, round: "c", want: "cleared"},
		}, AlertStatus{Detail: "2 consecutive revoked rounds; last revoke: commit: db01: hold deadline",
			Raised: at(150 * time.Second), Cleared: at(270 * time.Second)}},
		{"a revoked round between committed ones", true, []step{
			{round: "r:prepare: web01 did not ack"}, {round: "c"}, {round: "r:prepare: web01 did not ack"},
			{advance: 9 * time.Minute},
		}, AlertStatus{}},
		{"silence, cleared by a group point", true, []step{
			{advance: 10 * time.Minute},
			{advance: time.Minute, want: "active"},
			{advance: 5 * time.Minute, point: true, want: "cleared"},
		}, AlertStatus{Detail: "no committed round for 11m0s (over 2 × the crash interval 5m0s)",
			Raised: at(11 * time.Minute), Cleared: at(16 * time.Minute)}},
		{"silence counts from the last committed round", true, []step{
			{advance: 8 * time.Minute, round: "c"},
			{advance: 9 * time.Minute, round: "r:prepare: db01: syncing"},
			{advance: time.Minute},
			{advance: time.Minute, want: "active"},
		}, AlertStatus{Detail: "no committed round for 11m0s (over 2 × the crash interval 5m0s); last revoke: prepare: db01: syncing",
			Raised: at(19 * time.Minute)}},
		{"not while members sync; the streak starts when all are protected", false, []step{
			{round: "r:begin: db01: syncing"}, {round: "r:begin: db01: syncing"},
			{advance: 30 * time.Minute, round: "r:begin: db01: syncing"},
			{sync: true},
			{round: "r:prepare: web01 did not ack"},
			{advance: time.Minute, round: "r:prepare: web01 did not ack", want: "active"},
		}, AlertStatus{Detail: "2 consecutive revoked rounds; last revoke: prepare: web01 did not ack",
			Raised: at(31 * time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newGroupRig(t)
			if tc.protected {
				r.protectGroup("default")
			} else {
				r.mustOK(&proto.EnableGroup{Group: "g1", Machines: trio})
				for _, m := range trio {
					r.register(m, r.keys, false)
				}
			}
			n := 0
			for i, st := range tc.steps {
				r.d.Advance(st.advance)
				if st.sync {
					r.syncAll()
				}
				if st.round != "" {
					n++
					tr := &proto.TagRound{Group: "g1", TagID: fmt.Sprintf("g1:c:%d", n), Kind: proto.Crash,
						Outcome: proto.RoundCommitted, Started: r.d.Now()}
					if reason, ok := strings.CutPrefix(st.round, "r:"); ok {
						tr.Outcome, tr.Reason = proto.RoundRevoked, reason
					}
					r.d.Receive(agentAddr("app01"), tr)
				}
				if st.point {
					r.event(proto.ReplicaEvent{Machine: "web01", Group: "g1", Event: proto.EventGroupPoint,
						PointID: fmt.Sprintf("g1:c:%d", n), Kind: proto.Crash, PointTime: r.d.Now()})
				}
				g := r.group("g1")
				got := ""
				if g.Alert.Name != "" {
					got = map[bool]string{true: "active", false: "cleared"}[g.Alerting]
				}
				if got != st.want {
					t.Fatalf("step %d (%+v): alert %q, want %q (%+v)", i, st, got, st.want, g.Alert)
				}
			}
			var got AlertStatus
			for _, a := range r.s.Status().Alerts {
				if a.Name == AlertMultiVM {
					got = a
					got.Name, got.Subject = "", ""
				}
			}
			diff(t, "alert", tc.want, got)
			if n := len(r.alerts()); tc.want.Raised.IsZero() && n != 0 {
				t.Errorf("alerts %v", r.alerts())
			}
		})
	}
}

// TestGroupPoints: group-point events make the group's newest points and
// RPO; a member's own point events (carrying the group) stay the member's.
func TestGroupPoints(t *testing.T) {
	r := newGroupRig(t)
	r.protectGroup("default")
	r.d.Advance(4 * time.Minute)
	gp := func(id string, kind proto.Consistency, t time.Duration) {
		r.event(proto.ReplicaEvent{Machine: "db01", Group: "g1", Event: proto.EventGroupPoint, PointID: id, Kind: kind,
			PointTime: at(t)})
	}
	gp("g1:c:1", proto.Crash, time.Minute)
	gp("g1:a:2", proto.App, 2*time.Minute)
	gp("g1:c:3", proto.Crash, 3*time.Minute)
	gp("g1:c:3", proto.Crash, 3*time.Minute)  // duplicate
	gp("g1:c:0", proto.Crash, 30*time.Second) // late, older
	r.event(proto.ReplicaEvent{Machine: "db01", Group: "nosuch", Event: proto.EventGroupPoint, PointID: "x", PointTime: at(0)})
	r.event(proto.ReplicaEvent{Machine: "db01", Group: "g1", Event: proto.EventPoint, PointID: "g1:c:3", Kind: proto.Crash,
		PointTime: at(3 * time.Minute)})

	type view struct {
		Points                   int
		Latest, Crash, App       GroupPoint
		RPO                      time.Duration
		RPOAt                    time.Time
		MemberPoints, DB01Points int
	}
	look := func() view {
		g := r.group("g1")
		return view{g.Points, g.LatestPoint, g.LatestCrashPoint, g.LatestAppPoint, g.RPO, g.RPOAt,
			r.machine("app01").Points, r.machine("db01").Points}
	}
	c3 := GroupPoint{ID: "g1:c:3", Kind: proto.Crash, Time: at(3 * time.Minute)}
	a2 := GroupPoint{ID: "g1:a:2", Kind: proto.App, Time: at(2 * time.Minute)}
	c1 := GroupPoint{ID: "g1:c:1", Kind: proto.Crash, Time: at(time.Minute)}
	diff(t, "after the group points", view{Points: 4, Latest: c3, Crash: c3, App: a2, RPO: time.Minute,
		RPOAt: at(4 * time.Minute), DB01Points: 1}, look())
	if len(r.s.Status().Groups) != 1 {
		t.Errorf("a group point of an unknown group made a group: %+v", r.s.Status().Groups)
	}

	// The Azure side prunes a group point: the newest are recomputed, the
	// RPO follows at the next check.
	r.event(proto.ReplicaEvent{Group: "g1", Event: proto.EventPruned, PointID: "g1:c:3"})
	r.d.Advance(time.Minute)
	diff(t, "after pruning the newest", view{Points: 3, Latest: a2, Crash: c1, App: a2, RPO: 3 * time.Minute,
		RPOAt: at(5 * time.Minute), DB01Points: 1}, look())
}

// TestGroupMemberDisabled: a disabled member degrades its group and can be
// enabled again only within it; when no member is enabled the group is
// disabled, its machines are free and its name can be enabled anew.
func TestGroupMemberDisabled(t *testing.T) {
	r := newRigVMs(t, linuxVMs(append([]string{"db02"}, trio...)...), func(c *Config) {
		c.Policies = []proto.Policy{gold}
		c.HeartbeatLost = 100 * time.Hour
	})
	r.protectGroup("gold")
	r.mustOK(&proto.DisableReplication{Machine: "db01"})
	if g := r.group("g1"); g.State != GroupDegraded || !g.ProtectedSince.IsZero() {
		t.Fatalf("group %s since %v after disabling a member", g.State, g.ProtectedSince)
	}
	r.d.Sent()
	rep := r.request(&proto.EnableReplication{Machine: "db01", Policy: "default"})
	if rep.OK || !strings.HasPrefix(rep.Reason, ErrInGroup.Error()) {
		t.Fatalf("re-enable with another policy: %+v", rep)
	}
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	diff(t, "re-enabled member", "Protect GroupConfig", kinds(r.toAgent("db01")))
	diff(t, "its PolicyFor", []wire.Msg{&proto.PolicyFor{Machine: "db01", Policy: gold, Group: "g1", Members: trio}},
		r.d.SentTo(azure))
	r.event(proto.ReplicaEvent{Machine: "db01", Event: proto.EventSyncComplete, Gen: 2})
	if g := r.group("g1"); g.State != GroupProtected {
		t.Fatalf("group %s after the member synced again", g.State)
	}

	// Silence raises the alert; disabling every member clears it.
	r.d.Advance(30 * time.Minute)
	if !r.group("g1").Alerting {
		t.Fatal("no alert after 30 min without rounds")
	}
	for _, m := range trio {
		r.mustOK(&proto.DisableReplication{Machine: m})
	}
	if g := r.group("g1"); g.State != GroupDisabled || g.Alerting {
		t.Fatalf("group %s alerting %v after disabling every member", g.State, g.Alerting)
	}
	if g := r.machine("db01").Group; g != "" {
		t.Errorf("a machine of a disabled group reports group %q", g)
	}

	// The name is free again, with other machines; a machine left out is
	// enabled alone.
	r.d.Sent()
	r.held = map[string][]wire.Msg{}
	r.mustOK(&proto.EnableGroup{Group: "g1", Machines: []string{"db02", "web01"}, Master: "web01"})
	g := r.group("g1")
	if g.Version != 2 || g.State != GroupEnabling || len(g.Members) != 2 {
		t.Fatalf("re-created group: version %d %s %d members", g.Version, g.State, len(g.Members))
	}
	want := &proto.GroupConfig{Group: "g1", Version: 2, Members: []string{"db02", "web01"}, Master: "web01",
		CrashInterval: proto.DefaultPolicy().CrashInterval, AppInterval: proto.DefaultPolicy().AppInterval,
		Crash: proto.CrashTagTimeouts, App: proto.AppTagTimeouts}
	msgs := r.toAgent("web01")
	if len(msgs) != 2 || !cmp.Equal(msgs[1], wire.Msg(want)) {
		t.Errorf("to web01: %v", msgs)
	}
	r.d.SentTo(azure)
	r.mustOK(&proto.EnableReplication{Machine: "db01"})
	diff(t, "alone again", "Protect", kinds(r.toAgent("db01")))
	diff(t, "its PolicyFor", []wire.Msg{&proto.PolicyFor{Machine: "db01", Policy: proto.DefaultPolicy()}}, r.d.SentTo(azure))
	if st := r.s.Status(); st.Groups[0].Name != "g1" || len(st.Groups) != 1 || r.machine("db01").Group != "" {
		t.Errorf("groups %+v", st.Groups)
	}
}

// TestTagRoundReportsLost: reports a master sends once can be lost in a
// partition; its own tally in the next report that arrives tells how many
// rounds (and revokes) the server missed, per master incarnation. Before
// the tally, the view said "revoked 0" for rounds revoked behind a
// partition.
func TestTagRoundReportsLost(t *testing.T) {
	r := newGroupRig(t)
	r.protectGroup("default")
	boot1, boot2 := at(0), at(time.Hour)
	rep := func(id, outcome string, since time.Time, finished, revoked uint64) *proto.TagRound {
		return &proto.TagRound{Group: "g1", TagID: id, Kind: proto.Crash, Outcome: outcome, Reason: "begin: web01 did not answer",
			Started: at(time.Minute), Since: since, Finished: finished, RevokedSoFar: revoked}
	}
	r.d.Receive(agentAddr("app01"), rep("g1:c:1", proto.RoundCommitted, boot1, 1, 0))
	// g1:c:2, c-3 and c-4 revoked behind a partition: their reports lost.
	r.d.Receive(agentAddr("app01"), rep("g1:c:5", proto.RoundCommitted, boot1, 5, 3))
	r.d.Receive(agentAddr("app01"), rep("g1:c:5", proto.RoundCommitted, boot1, 5, 3)) // a duplicate counts once
	// The master restarts: its tally starts again, under another incarnation.
	r.d.Receive(agentAddr("app01"), rep("g1:c:7", proto.RoundRevoked, boot2, 2, 2))
	st := r.group("g1").Stats
	type counts struct{ Rounds, Revoked, Unreported, UnreportedRevoked int }
	diff(t, "counts", counts{Rounds: 3, Revoked: 1, Unreported: 4, UnreportedRevoked: 4},
		counts{st.Rounds, st.Revoked, st.Unreported, st.UnreportedRevoked})
}
