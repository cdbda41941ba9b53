package proto

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/wire"
)

// roundTripMsgs holds at least one message of every kind, its fields set.
func roundTripMsgs() []wire.Msg {
	at := time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)
	return []wire.Msg{
		&Register{Machine: "db01", InstanceUUID: "u", Physical: true, DiskSizes: []int64{1 << 26}, Proof: []byte{1, 2}, AgentVersion: "9.60"},
		&RegisterReply{Machine: "db01", OK: false, Reason: "wrong vault passphrase", VaultID: "v"},
		&Heartbeat{Machine: "db01", Phase: "replicating", Mode: "data", PendingBytes: 5, PendingRecords: 2, AckedItems: 9, SyncedBytes: 7, SyncTotalBytes: 8, SentBytes: 10, Gen: 2, Group: "orders", GroupVersion: 3},
		&Protect{Machine: "db01", Policy: DefaultPolicy(), ProcessServer: "ps01:9443", Gen: 2},
		&Unprotect{Machine: "db01"},
		&ResyncNeeded{Machine: "db01", Reason: "corrupt log"},
		&Checksums{Machine: "db01", Gen: 2, Disk: 1, Off: 4096, BlockSize: 4096, Sums: make([]byte, 32), Final: true},
		&StreamHello{Machine: "db01"},
		&ItemMsg{Machine: "db01", Seq: 3, Data: []byte("item")},
		&ItemAck{Machine: "db01", Acked: 3, Status: AckCacheFull, Reason: "cache 95% full"},
		&Uploaded{Machine: "db01", UpTo: 3},
		&PSHealth{Server: "ps01", CacheUsedBytes: 1, CacheCapBytes: 2, BacklogItems: 3, BacklogBytes: 4, UploadedBytes: 5, RawBytes: 6, EstimateUpload: time.Second, Machines: []MachineBacklog{{"db01", 1, 2}}},
		&PolicyFor{Machine: "db01", Policy: DefaultPolicy(), Group: "orders", Members: []string{"db01", "web01"}},
		&ReplicaEvent{Machine: "db01", Event: EventPoint, Gen: 1, PointID: "rp", Kind: Crash, PointTime: at, Seq: 44, Applied: 9, Detail: "d", Group: "orders"},
		&EnableReplication{Machine: "db01", Policy: "default"},
		&DisableReplication{Machine: "db01"},
		&CreatePolicy{Policy: DefaultPolicy()},
		&Reply{Request: "enable-replication", Subject: "db01", OK: true},
		&GroupConfig{Group: "orders", Version: 2, Members: []string{"a", "b"}, Master: "a", CrashInterval: 5 * time.Minute, AppInterval: time.Hour, Crash: CrashTagTimeouts, App: AppTagTimeouts},
		&GroupConfig{Group: "apps", Version: 3, Members: []string{"a", "b"}, Master: "b", Crash: CrashTagTimeouts, App: AppTagTimeouts, Addrs: []string{"az-a:20004", ""}},
		&Tag{Group: "orders", TagID: "t1", Kind: Crash, Phase: PhasePrepare, Master: "a", Reason: "r"},
		&TagAck{Group: "orders", TagID: "t1", Phase: PhaseCommit, Machine: "b", OK: true, Seq: 9, Held: time.Millisecond},
		&TagRound{Group: "orders", TagID: "t1", Kind: Crash, Outcome: RoundRevoked, Reason: "b: prepare timed out", Started: at, Holds: []MemberHold{{"a", time.Millisecond}, {"b", -1}},
			Phases: []RoundPhase{{PhaseBegin, at, at.Add(time.Millisecond), true}, {PhasePrepare, at.Add(time.Millisecond), at.Add(time.Second), false}, {Name: PhaseRevoke, Start: at.Add(time.Second)}}},
		&EnableGroup{Group: "orders", Machines: []string{"a", "b"}, Policy: "default", Master: "a"},
		&Reply{Request: "make-latest", Subject: "db01", OK: true, Req: "r1", Result: "point-1"},
		&StopReplication{Req: "r1", Machine: "db01"},
		&MakeLatest{Req: "r2", Machine: "db01"},
		&CommitPoint{Req: "r3", Machine: "db01", Point: "p"},
		&FailoverRequest{Req: "r4", JobID: "j1", Op: OpTestFailover, Point: PointChoice{Kind: PointLatestMultiVMApp}, Network: NetworkChoice{Group: "rg", Name: "test"},
			Plan: &RecoveryPlan{Name: "plan", Groups: []PlanGroup{
				{VMs: []string{"a", "b"}, Pre: []PlanAction{{Name: "dns", Runbook: "rb", FailoverTypes: []string{OpFailover}, Directions: []string{DirectionToAzure}}}},
				{VMs: []string{"c"}, Post: []PlanAction{{Name: "check", Manual: true}}},
			}}},
		&FailoverRequest{Req: "r5", Op: OpFailover, VMs: []string{"a"}, Point: PointChoice{Kind: PointCustom, ID: "p1"}, ShutdownSource: true},
		&JobAction{Req: "r6", JobID: "j1", Action: ActionResume},
		&SetTarget{Req: "r7", Machine: "a", Subnet: "app", IP: "10.0.1.4", Size: "Standard_D2s_v3", OSType: "Linux", Hydrate: true},
		&AttachTarget{Req: "r8", Machine: "a", Disks: []TargetDisk{{"[ds1] a/a-flat.vmdk", 1 << 26}, {"[ds1] a/a_1-flat.vmdk", 1 << 20}}},
		&BlockSumRequest{Req: "r9", Machine: "a", Disk: 1, Off: 8192, Blocks: 3},
		&BlockSumReply{Req: "r9", Machine: "a", Disk: 1, Off: 8192, BlockSize: ChecksumBlockSize, Applied: 7, Sums: make([]byte, 3*ChecksumSize), Final: true},
		&BlockSumReply{Req: "r10", Machine: "a", Err: "mastertarget: disk 4 of 2"},
		&AttachTarget{Req: "r11", Machine: "b", Disks: []TargetDisk{{"[ds1] b-1/b-1-flat.vmdk", 1 << 26}}, VM: "b-1", Fresh: true},
		&FailedOver{Req: "r12", Machine: "a", AzureVM: "a-recovered"},
		&Reprotect{Req: "r13", Machines: []string{"a", "b"}, Direction: ReprotectToOnPrem, MasterTarget: "cs01:9080", ProcessServer: "ps-azure:9443",
			Location: LocationAlternate, Host: "esx1", Datastore: "ds1"},
		&FailbackPoint{Req: "r14", Machine: "a", Point: PointLatestApp},
		&TargetPointsRequest{Req: "r15", Machine: "a"},
		&TargetPoints{Req: "r15", Machine: "a", VM: "a", Applied: 9, Points: []TargetPoint{{ID: "t1", Kind: Crash, Time: time.Unix(1e9, 0).UTC(), Seq: 4},
			{ID: "t2", Kind: App, Time: time.Unix(1e9+60, 0).UTC(), Seq: 8}}},
		&TargetPoints{Req: "r16", Machine: "c", Err: "not attached"},
		&FailedBack{Req: "r17", Machine: "a", VM: "a"},
		&ResumeReplication{Req: "r18", Machine: "a"},
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := roundTripMsgs()
	seen := map[wire.Kind]bool{}
	for _, m := range msgs {
		got, err := wire.Decode(wire.Encode(m))
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if diff := cmp.Diff(m, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%T round trip (-want +got):\n%s", m, diff)
		}
		seen[m.WireKind()] = true
	}
	for k := KindRegister; k <= KindResumeReplication; k++ {
		if !seen[k] {
			t.Errorf("kind %s has no round-trip case", wire.KindName(k))
		}
	}
}

// TestReplyEmptyFieldsTakeNoBytes: a Reply without Req and Result encodes
// exactly as a peer that predates those fields encodes it (protobuf writes
// no empty field), and each set field adds bytes.
func TestReplyEmptyFieldsTakeNoBytes(t *testing.T) {
	old := []byte{
		0x0a, 18, 'e', 'n', 'a', 'b', 'l', 'e', '-', 'r', 'e', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n', // 1: request
		0x12, 4, 'd', 'b', '0', '1', // 2: subject
		0x18, 1, // 3: ok
	}
	var got wire.Encoder
	(&Reply{Request: "enable-replication", Subject: "db01", OK: true}).MarshalWire(&got)
	if diff := cmp.Diff(old, got.Encoded()); diff != "" {
		t.Errorf("reply bytes (-old peer +new):\n%s", diff)
	}
	var with wire.Encoder
	(&Reply{Request: "enable-replication", Subject: "db01", OK: true, Req: "r1"}).MarshalWire(&with)
	if len(with.Encoded()) != len(old)+4 {
		t.Errorf("Req r1 took %d bytes, want 4", len(with.Encoded())-len(old))
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Policy){
		func(p *Policy) { p.Name = "" },
		func(p *Policy) { p.RPOThreshold = 0 },
		func(p *Policy) { p.Retention = 16 * 24 * time.Hour },
		func(p *Policy) { p.CrashInterval = time.Second },
		func(p *Policy) { p.CrashInterval = MinCrashInterval - time.Millisecond },
		func(p *Policy) { p.CrashInterval, p.AppInterval = MinCrashInterval, 30*time.Second },
		func(p *Policy) { p.AppInterval = time.Minute * 2 },
		func(p *Policy) { p.Compression = "lzma" },
	}
	for i, f := range bad {
		p := DefaultPolicy()
		f(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, p)
		}
	}
	// Continuous protection: a crash point every 5 s is a policy, and the
	// refusal under it says what the minimum is.
	p := DefaultPolicy()
	p.CrashInterval = MinCrashInterval
	if err := p.Validate(); err != nil {
		t.Errorf("a %v crash interval: %v", MinCrashInterval, err)
	}
	p.CrashInterval = 4 * time.Second
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "4s is under the minimum 5s") {
		t.Errorf("a 4s crash interval: %v, want the minimum named", err)
	}
}

func TestFailbackPolicy(t *testing.T) {
	p := FailbackPolicy("gold")
	want := Policy{Name: "gold-failback", RPOThreshold: 15 * time.Minute, Retention: 24 * time.Hour,
		CrashInterval: 5 * time.Minute, AppInterval: time.Hour, Compression: "s2"}
	if d := cmp.Diff(want, p); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	for _, tt := range []struct {
		name, base string
		ok         bool
	}{{"gold-failback", "gold", true}, {"gold", "", false}, {"failback", "", false}, {"-failback", "", true}} {
		base, ok := FailbackOf(tt.name)
		if ok != tt.ok || (ok && base != tt.base) {
			t.Errorf("FailbackOf(%q) = %q, %v", tt.name, base, ok)
		}
	}
}

func TestGroupConfigMemberAddr(t *testing.T) {
	plain := &GroupConfig{Members: []string{"a", "b"}}
	moved := &GroupConfig{Members: []string{"a", "b"}, Addrs: []string{"az-a:20004", ""}}
	for _, tc := range []struct {
		gc     *GroupConfig
		member string
		want   string
	}{
		{plain, "a", "a:20004"},
		{moved, "a", "az-a:20004"},
		{moved, "b", "b:20004"},
		{moved, "c", "c:20004"},
	} {
		if got := string(tc.gc.MemberAddr(tc.member)); got != tc.want {
			t.Errorf("%v.MemberAddr(%s) = %s, want %s", tc.gc.Addrs, tc.member, got, tc.want)
		}
	}
	// A config without Addrs encodes as before the field existed.
	withField := wire.Encode(&GroupConfig{Group: "g", Members: []string{"a"}})
	m, err := wire.Decode(withField)
	if err != nil || len(m.(*GroupConfig).Addrs) != 0 {
		t.Fatalf("decode: %v %+v", err, m)
	}
	if len(wire.Encode(moved)) <= len(wire.Encode(plain)) {
		t.Errorf("Addrs are not encoded")
	}
}
