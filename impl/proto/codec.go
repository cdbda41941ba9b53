package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/v2a-dr/v2a/impl/proto/pb"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Every message's payload is its protobuf message (impl/proto/pb, from
// pb/v2a.proto), so that a peer one version older or newer reads it: a
// field it does not know is skipped, a field it lacks reads as zero. The Go
// structs stay what components use; each MarshalWire converts to the
// generated type and each UnmarshalWire back, and the semantic checks the
// schema cannot express (a point's kind, a disk index's range) stay here.
//
// Marshalling is deterministic (same message, same bytes), so traces are
// byte-identical run to run. Durations travel as int64 nanoseconds and
// instants as int64 Unix nanoseconds (0 for the zero time), as before:
// plain integers, no well-known types, so that nothing but this file
// converts them.
//
// Text fields are protobuf strings, which must be UTF-8: a Go string that
// is not (no component makes one) travels with its invalid bytes replaced
// by U+FFFD rather than failing the send, and a peer's frame with invalid
// UTF-8 is refused (wire.ErrPayload).

var marshalOptions = gproto.MarshalOptions{Deterministic: true}

// put appends m's protobuf encoding to the frame.
func put(e *wire.Encoder, m gproto.Message) {
	e.AppendWith(func(dst []byte) []byte {
		out, err := marshalOptions.MarshalAppend(dst, m)
		if err == nil {
			return out
		}
		validUTF8(m.ProtoReflect())
		out, err = marshalOptions.MarshalAppend(dst, m)
		if err != nil { // cannot happen: every string is valid UTF-8 now
			panic(fmt.Sprintf("proto: marshal %s: %v", m.ProtoReflect().Descriptor().FullName(), err))
		}
		return out
	})
}

// get decodes the rest of the frame into m.
func get(d *wire.Decoder, m gproto.Message) error { return gproto.Unmarshal(d.Rest(), m) }

// validUTF8 replaces invalid UTF-8 in every string of m, recursively.
func validUTF8(m protoreflect.Message) {
	fix := func(v protoreflect.Value) protoreflect.Value {
		if s := v.String(); !utf8.ValidString(s) {
			return protoreflect.ValueOfString(strings.ToValidUTF8(s, "\uFFFD"))
		}
		return v
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			l := v.List()
			for i := range l.Len() {
				l.Set(i, fix(l.Get(i)))
			}
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				validUTF8(l.Get(i).Message())
			}
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, fix(v))
		case fd.Message() != nil && !fd.IsMap():
			validUTF8(v.Message())
		}
		return true
	})
}

func ns(d time.Duration) int64  { return int64(d) }
func dur(n int64) time.Duration { return time.Duration(n) }

// unixNS is t in Unix nanoseconds, 0 for the zero time.
func unixNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNS is unixNS's inverse, in UTC.
func fromUnixNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// strs keeps a decoded list non-nil, as the positional codec gave it.
func strs(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

// bs keeps decoded bytes non-nil, as the positional codec gave them.
func bs(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func kindPB(k Consistency) pb.Consistency { return pb.Consistency(k) }

func kindOf(k pb.Consistency) (Consistency, error) {
	c := Consistency(k)
	if k < 0 || k > math.MaxUint8 || (c != 0 && !c.Valid()) {
		return 0, fmt.Errorf("proto: unknown consistency %d (want crash or app)", int32(k))
	}
	return c, nil
}

func diskOf(what string, v uint32) (uint16, error) {
	if v > math.MaxUint16 {
		return 0, fmt.Errorf("proto: %s: disk %d over %d", what, v, math.MaxUint16)
	}
	return uint16(v), nil
}

func policyPB(p Policy) *pb.Policy {
	return &pb.Policy{Name: p.Name, RpoThresholdNs: ns(p.RPOThreshold), RetentionNs: ns(p.Retention),
		CrashIntervalNs: ns(p.CrashInterval), AppIntervalNs: ns(p.AppInterval), Compression: p.Compression}
}

func policyOf(p *pb.Policy) Policy {
	return Policy{Name: p.GetName(), RPOThreshold: dur(p.GetRpoThresholdNs()), Retention: dur(p.GetRetentionNs()),
		CrashInterval: dur(p.GetCrashIntervalNs()), AppInterval: dur(p.GetAppIntervalNs()), Compression: p.GetCompression()}
}

func timeoutsPB(t TagTimeouts) *pb.TagTimeouts {
	return &pb.TagTimeouts{PrepareNs: ns(t.Prepare), QuiesceNs: ns(t.Quiesce), CommitNs: ns(t.Commit), ResumeNs: ns(t.Resume)}
}

func timeoutsOf(t *pb.TagTimeouts) TagTimeouts {
	return TagTimeouts{Prepare: dur(t.GetPrepareNs()), Quiesce: dur(t.GetQuiesceNs()), Commit: dur(t.GetCommitNs()), Resume: dur(t.GetResumeNs())}
}

func actionsPB(as []PlanAction) []*pb.PlanAction {
	var out []*pb.PlanAction
	for _, a := range as {
		out = append(out, &pb.PlanAction{Name: a.Name, Manual: a.Manual, Runbook: a.Runbook, FailoverTypes: a.FailoverTypes, Directions: a.Directions})
	}
	return out
}

func actionsOf(as []*pb.PlanAction) []PlanAction {
	var out []PlanAction
	for _, a := range as {
		out = append(out, PlanAction{Name: a.GetName(), Manual: a.GetManual(), Runbook: a.GetRunbook(),
			FailoverTypes: strs(a.GetFailoverTypes()), Directions: strs(a.GetDirections())})
	}
	return out
}

func (m *Register) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Register{Machine: m.Machine, InstanceUuid: m.InstanceUUID, Physical: m.Physical,
		DiskSizesBytes: m.DiskSizes, Proof: m.Proof, AgentVersion: m.AgentVersion})
}
func (m *Register) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Register
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Register{Machine: p.Machine, InstanceUUID: p.InstanceUuid, Physical: p.Physical,
		DiskSizes: p.DiskSizesBytes, Proof: bs(p.Proof), AgentVersion: p.AgentVersion}
	return nil
}

func (m *RegisterReply) MarshalWire(e *wire.Encoder) {
	put(e, &pb.RegisterReply{Machine: m.Machine, Ok: m.OK, Reason: m.Reason, VaultId: m.VaultID})
}
func (m *RegisterReply) UnmarshalWire(d *wire.Decoder) error {
	var p pb.RegisterReply
	if err := get(d, &p); err != nil {
		return err
	}
	*m = RegisterReply{Machine: p.Machine, OK: p.Ok, Reason: p.Reason, VaultID: p.VaultId}
	return nil
}

func (m *Heartbeat) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Heartbeat{Machine: m.Machine, Phase: m.Phase, Mode: m.Mode, PendingBytes: m.PendingBytes,
		PendingRecords: m.PendingRecords, AckedItems: m.AckedItems, SyncedBytes: m.SyncedBytes,
		SyncTotalBytes: m.SyncTotalBytes, SentBytes: m.SentBytes, Gen: m.Gen, Group: m.Group, GroupVersion: m.GroupVersion})
}
func (m *Heartbeat) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Heartbeat
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Heartbeat{Machine: p.Machine, Phase: p.Phase, Mode: p.Mode, PendingBytes: p.PendingBytes,
		PendingRecords: p.PendingRecords, AckedItems: p.AckedItems, SyncedBytes: p.SyncedBytes,
		SyncTotalBytes: p.SyncTotalBytes, SentBytes: p.SentBytes, Gen: p.Gen, Group: p.Group, GroupVersion: p.GroupVersion}
	return nil
}

func (m *Protect) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Protect{Machine: m.Machine, Policy: policyPB(m.Policy), ProcessServer: m.ProcessServer, Gen: m.Gen})
}
func (m *Protect) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Protect
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Protect{Machine: p.Machine, Policy: policyOf(p.Policy), ProcessServer: p.ProcessServer, Gen: p.Gen}
	return nil
}

func (m *Unprotect) MarshalWire(e *wire.Encoder) { put(e, &pb.Unprotect{Machine: m.Machine}) }
func (m *Unprotect) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Unprotect
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Unprotect{Machine: p.Machine}
	return nil
}

func (m *ResyncNeeded) MarshalWire(e *wire.Encoder) {
	put(e, &pb.ResyncNeeded{Machine: m.Machine, Reason: m.Reason})
}
func (m *ResyncNeeded) UnmarshalWire(d *wire.Decoder) error {
	var p pb.ResyncNeeded
	if err := get(d, &p); err != nil {
		return err
	}
	*m = ResyncNeeded{Machine: p.Machine, Reason: p.Reason}
	return nil
}

func (m *Checksums) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Checksums{Machine: m.Machine, Gen: m.Gen, Fresh: m.Fresh, Disk: uint32(m.Disk),
		OffBytes: m.Off, BlockSizeBytes: m.BlockSize, Sums: m.Sums, Final: m.Final})
}
func (m *Checksums) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Checksums
	if err := get(d, &p); err != nil {
		return err
	}
	disk, err := diskOf("checksums", p.Disk)
	if err != nil {
		return err
	}
	*m = Checksums{Machine: p.Machine, Gen: p.Gen, Fresh: p.Fresh, Disk: disk,
		Off: p.OffBytes, BlockSize: p.BlockSizeBytes, Sums: bs(p.Sums), Final: p.Final}
	return nil
}

func (m *StreamHello) MarshalWire(e *wire.Encoder) { put(e, &pb.StreamHello{Machine: m.Machine}) }
func (m *StreamHello) UnmarshalWire(d *wire.Decoder) error {
	var p pb.StreamHello
	if err := get(d, &p); err != nil {
		return err
	}
	*m = StreamHello{Machine: p.Machine}
	return nil
}

func (m *ItemMsg) MarshalWire(e *wire.Encoder) {
	// Room for the whole message and the frame's CRC trailer up front, so
	// that appending the trailer does not copy the megabyte into a bigger
	// array.
	e.AppendWith(func(dst []byte) []byte {
		return slices.Grow(dst, len(m.Data)+len(m.Machine)+len(m.Codec)+2*binary.MaxVarintLen64+8)
	})
	put(e, &pb.ItemMsg{Machine: m.Machine, Seq: m.Seq, Data: m.Data, Codec: m.Codec})
}

// UnmarshalWire decodes pb.ItemMsg by hand so that Data aliases the frame
// instead of being copied (proto.Unmarshal always copies bytes fields, and
// an item is the stream's megabyte): the wire format is pb.ItemMsg's, read
// as proto.Unmarshal reads it — fields in any order, the last of a repeated
// scalar wins, unknown fields (a newer peer's) skipped, strings checked for
// UTF-8 —, which TestItemMsgDecodeLikeProtobuf holds it to.
func (m *ItemMsg) UnmarshalWire(d *wire.Decoder) error {
	b := d.Rest()
	out := ItemMsg{Data: []byte{}}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("proto: item: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == 1 || num == 3 || num == 4):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("proto: item: %w", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1, 4:
				if !utf8.Valid(v) {
					return fmt.Errorf("proto: item: string field %d contains invalid UTF-8", num)
				}
				if num == 1 {
					out.Machine = string(v)
				} else {
					out.Codec = string(v)
				}
			case 3:
				out.Data = v[:len(v):len(v)]
			}
		case typ == protowire.VarintType && num == 2:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("proto: item: %w", protowire.ParseError(n))
			}
			b = b[n:]
			out.Seq = v
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("proto: item: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	*m = out
	return nil
}

func (m *ItemAck) MarshalWire(e *wire.Encoder) {
	put(e, &pb.ItemAck{Machine: m.Machine, Acked: m.Acked, Status: m.Status, Reason: m.Reason, Epoch: m.Epoch})
}
func (m *ItemAck) UnmarshalWire(d *wire.Decoder) error {
	var p pb.ItemAck
	if err := get(d, &p); err != nil {
		return err
	}
	*m = ItemAck{Machine: p.Machine, Acked: p.Acked, Status: p.Status, Reason: p.Reason, Epoch: p.Epoch}
	return nil
}

func (m *Uploaded) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Uploaded{Machine: m.Machine, UpTo: m.UpTo})
}
func (m *Uploaded) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Uploaded
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Uploaded{Machine: p.Machine, UpTo: p.UpTo}
	return nil
}

func (m *PSHealth) MarshalWire(e *wire.Encoder) {
	p := &pb.PSHealth{Server: m.Server, CacheUsedBytes: m.CacheUsedBytes, CacheCapBytes: m.CacheCapBytes,
		BacklogItems: m.BacklogItems, BacklogBytes: m.BacklogBytes, UploadedBytes: m.UploadedBytes,
		RawBytes: m.RawBytes, EstimateUploadNs: ns(m.EstimateUpload)}
	for _, b := range m.Machines {
		p.Machines = append(p.Machines, &pb.MachineBacklog{Machine: b.Machine, Items: b.Items, Bytes: b.Bytes})
	}
	put(e, p)
}
func (m *PSHealth) UnmarshalWire(d *wire.Decoder) error {
	var p pb.PSHealth
	if err := get(d, &p); err != nil {
		return err
	}
	*m = PSHealth{Server: p.Server, CacheUsedBytes: p.CacheUsedBytes, CacheCapBytes: p.CacheCapBytes,
		BacklogItems: p.BacklogItems, BacklogBytes: p.BacklogBytes, UploadedBytes: p.UploadedBytes,
		RawBytes: p.RawBytes, EstimateUpload: dur(p.EstimateUploadNs)}
	for _, b := range p.Machines {
		m.Machines = append(m.Machines, MachineBacklog{Machine: b.GetMachine(), Items: b.GetItems(), Bytes: b.GetBytes()})
	}
	return nil
}

func (m *PolicyFor) MarshalWire(e *wire.Encoder) {
	put(e, &pb.PolicyFor{Machine: m.Machine, Policy: policyPB(m.Policy), Group: m.Group, Members: m.Members})
}
func (m *PolicyFor) UnmarshalWire(d *wire.Decoder) error {
	var p pb.PolicyFor
	if err := get(d, &p); err != nil {
		return err
	}
	*m = PolicyFor{Machine: p.Machine, Policy: policyOf(p.Policy), Group: p.Group, Members: strs(p.Members)}
	return nil
}

func (m *ReplicaEvent) MarshalWire(e *wire.Encoder) {
	put(e, &pb.ReplicaEvent{Machine: m.Machine, Group: m.Group, Event: m.Event, Gen: m.Gen, PointId: m.PointID,
		Kind: kindPB(m.Kind), PointTimeUnixNs: unixNS(m.PointTime), Seq: m.Seq, Applied: m.Applied, Detail: m.Detail})
}
func (m *ReplicaEvent) UnmarshalWire(d *wire.Decoder) error {
	var p pb.ReplicaEvent
	if err := get(d, &p); err != nil {
		return err
	}
	kind, err := kindOf(p.Kind)
	if err != nil {
		return err
	}
	*m = ReplicaEvent{Machine: p.Machine, Group: p.Group, Event: p.Event, Gen: p.Gen, PointID: p.PointId,
		Kind: kind, PointTime: fromUnixNS(p.PointTimeUnixNs), Seq: p.Seq, Applied: p.Applied, Detail: p.Detail}
	return nil
}

func (m *EnableReplication) MarshalWire(e *wire.Encoder) {
	put(e, &pb.EnableReplication{Machine: m.Machine, Policy: m.Policy})
}
func (m *EnableReplication) UnmarshalWire(d *wire.Decoder) error {
	var p pb.EnableReplication
	if err := get(d, &p); err != nil {
		return err
	}
	*m = EnableReplication{Machine: p.Machine, Policy: p.Policy}
	return nil
}

func (m *DisableReplication) MarshalWire(e *wire.Encoder) {
	put(e, &pb.DisableReplication{Machine: m.Machine})
}
func (m *DisableReplication) UnmarshalWire(d *wire.Decoder) error {
	var p pb.DisableReplication
	if err := get(d, &p); err != nil {
		return err
	}
	*m = DisableReplication{Machine: p.Machine}
	return nil
}

func (m *CreatePolicy) MarshalWire(e *wire.Encoder) {
	put(e, &pb.CreatePolicy{Policy: policyPB(m.Policy)})
}
func (m *CreatePolicy) UnmarshalWire(d *wire.Decoder) error {
	var p pb.CreatePolicy
	if err := get(d, &p); err != nil {
		return err
	}
	*m = CreatePolicy{Policy: policyOf(p.Policy)}
	return nil
}

func (m *Reply) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Reply{Request: m.Request, Subject: m.Subject, Ok: m.OK, Reason: m.Reason, Req: m.Req, Result: m.Result})
}
func (m *Reply) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Reply
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Reply{Request: p.Request, Subject: p.Subject, OK: p.Ok, Reason: p.Reason, Req: p.Req, Result: p.Result}
	return nil
}

func (m *GroupConfig) MarshalWire(e *wire.Encoder) {
	put(e, &pb.GroupConfig{Group: m.Group, Version: m.Version, Members: m.Members, Master: m.Master,
		CrashIntervalNs: ns(m.CrashInterval), AppIntervalNs: ns(m.AppInterval),
		Crash: timeoutsPB(m.Crash), App: timeoutsPB(m.App), Addrs: m.Addrs})
}
func (m *GroupConfig) UnmarshalWire(d *wire.Decoder) error {
	var p pb.GroupConfig
	if err := get(d, &p); err != nil {
		return err
	}
	*m = GroupConfig{Group: p.Group, Version: p.Version, Members: strs(p.Members), Master: p.Master,
		CrashInterval: dur(p.CrashIntervalNs), AppInterval: dur(p.AppIntervalNs),
		Crash: timeoutsOf(p.Crash), App: timeoutsOf(p.App), Addrs: p.Addrs}
	return nil
}

func (m *Tag) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Tag{Group: m.Group, TagId: m.TagID, Kind: kindPB(m.Kind), Phase: m.Phase, Master: m.Master, Reason: m.Reason})
}
func (m *Tag) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Tag
	if err := get(d, &p); err != nil {
		return err
	}
	kind, err := kindOf(p.Kind)
	if err != nil {
		return err
	}
	*m = Tag{Group: p.Group, TagID: p.TagId, Kind: kind, Phase: p.Phase, Master: p.Master, Reason: p.Reason}
	return nil
}

func (m *TagAck) MarshalWire(e *wire.Encoder) {
	put(e, &pb.TagAck{Group: m.Group, TagId: m.TagID, Phase: m.Phase, Machine: m.Machine, Ok: m.OK,
		Reason: m.Reason, Seq: m.Seq, HeldNs: ns(m.Held)})
}
func (m *TagAck) UnmarshalWire(d *wire.Decoder) error {
	var p pb.TagAck
	if err := get(d, &p); err != nil {
		return err
	}
	*m = TagAck{Group: p.Group, TagID: p.TagId, Phase: p.Phase, Machine: p.Machine, OK: p.Ok,
		Reason: p.Reason, Seq: p.Seq, Held: dur(p.HeldNs)}
	return nil
}

func (m *TagRound) MarshalWire(e *wire.Encoder) {
	p := &pb.TagRound{Group: m.Group, TagId: m.TagID, Kind: kindPB(m.Kind), Outcome: m.Outcome, Reason: m.Reason,
		StartedUnixNs: unixNS(m.Started), SinceUnixNs: unixNS(m.Since), Finished: m.Finished, RevokedSoFar: m.RevokedSoFar}
	for _, h := range m.Holds {
		p.Holds = append(p.Holds, &pb.MemberHold{Machine: h.Machine, HeldNs: ns(h.Held)})
	}
	for _, ph := range m.Phases {
		p.Phases = append(p.Phases, &pb.RoundPhase{Name: ph.Name, StartUnixNs: unixNS(ph.Start), EndUnixNs: unixNS(ph.End), Ok: ph.OK})
	}
	put(e, p)
}
func (m *TagRound) UnmarshalWire(d *wire.Decoder) error {
	var p pb.TagRound
	if err := get(d, &p); err != nil {
		return err
	}
	kind, err := kindOf(p.Kind)
	if err != nil {
		return err
	}
	*m = TagRound{Group: p.Group, TagID: p.TagId, Kind: kind, Outcome: p.Outcome, Reason: p.Reason,
		Started: fromUnixNS(p.StartedUnixNs), Since: fromUnixNS(p.SinceUnixNs), Finished: p.Finished, RevokedSoFar: p.RevokedSoFar}
	for _, h := range p.Holds {
		m.Holds = append(m.Holds, MemberHold{Machine: h.GetMachine(), Held: dur(h.GetHeldNs())})
	}
	for _, ph := range p.Phases {
		m.Phases = append(m.Phases, RoundPhase{Name: ph.GetName(), Start: fromUnixNS(ph.GetStartUnixNs()), End: fromUnixNS(ph.GetEndUnixNs()), OK: ph.GetOk()})
	}
	return nil
}

func (m *EnableGroup) MarshalWire(e *wire.Encoder) {
	put(e, &pb.EnableGroup{Group: m.Group, Machines: m.Machines, Policy: m.Policy, Master: m.Master})
}
func (m *EnableGroup) UnmarshalWire(d *wire.Decoder) error {
	var p pb.EnableGroup
	if err := get(d, &p); err != nil {
		return err
	}
	*m = EnableGroup{Group: p.Group, Machines: strs(p.Machines), Policy: p.Policy, Master: p.Master}
	return nil
}

func (m *StopReplication) MarshalWire(e *wire.Encoder) {
	put(e, &pb.StopReplication{Req: m.Req, Machine: m.Machine})
}
func (m *StopReplication) UnmarshalWire(d *wire.Decoder) error {
	var p pb.StopReplication
	if err := get(d, &p); err != nil {
		return err
	}
	*m = StopReplication{Req: p.Req, Machine: p.Machine}
	return nil
}

func (m *MakeLatest) MarshalWire(e *wire.Encoder) {
	put(e, &pb.MakeLatest{Req: m.Req, Machine: m.Machine})
}
func (m *MakeLatest) UnmarshalWire(d *wire.Decoder) error {
	var p pb.MakeLatest
	if err := get(d, &p); err != nil {
		return err
	}
	*m = MakeLatest{Req: p.Req, Machine: p.Machine}
	return nil
}

func (m *CommitPoint) MarshalWire(e *wire.Encoder) {
	put(e, &pb.CommitPoint{Req: m.Req, Machine: m.Machine, Point: m.Point})
}
func (m *CommitPoint) UnmarshalWire(d *wire.Decoder) error {
	var p pb.CommitPoint
	if err := get(d, &p); err != nil {
		return err
	}
	*m = CommitPoint{Req: p.Req, Machine: p.Machine, Point: p.Point}
	return nil
}

func (m *FailoverRequest) MarshalWire(e *wire.Encoder) {
	p := &pb.FailoverRequest{Req: m.Req, JobId: m.JobID, Op: m.Op, Vms: m.VMs,
		Point:          &pb.PointChoice{Kind: m.Point.Kind, Id: m.Point.ID},
		Network:        &pb.NetworkChoice{Group: m.Network.Group, Name: m.Network.Name},
		ShutdownSource: m.ShutdownSource}
	if m.Plan != nil {
		p.Plan = &pb.RecoveryPlan{Name: m.Plan.Name}
		for _, g := range m.Plan.Groups {
			p.Plan.Groups = append(p.Plan.Groups, &pb.PlanGroup{Vms: g.VMs, Pre: actionsPB(g.Pre), Post: actionsPB(g.Post)})
		}
	}
	put(e, p)
}
func (m *FailoverRequest) UnmarshalWire(d *wire.Decoder) error {
	var p pb.FailoverRequest
	if err := get(d, &p); err != nil {
		return err
	}
	*m = FailoverRequest{Req: p.Req, JobID: p.JobId, Op: p.Op, VMs: strs(p.Vms),
		Point:          PointChoice{Kind: p.Point.GetKind(), ID: p.Point.GetId()},
		Network:        NetworkChoice{Group: p.Network.GetGroup(), Name: p.Network.GetName()},
		ShutdownSource: p.ShutdownSource}
	if p.Plan != nil {
		m.Plan = &RecoveryPlan{Name: p.Plan.Name}
		for _, g := range p.Plan.Groups {
			m.Plan.Groups = append(m.Plan.Groups, PlanGroup{VMs: strs(g.GetVms()), Pre: actionsOf(g.GetPre()), Post: actionsOf(g.GetPost())})
		}
	}
	return nil
}

func (m *JobAction) MarshalWire(e *wire.Encoder) {
	put(e, &pb.JobAction{Req: m.Req, JobId: m.JobID, Action: m.Action})
}
func (m *JobAction) UnmarshalWire(d *wire.Decoder) error {
	var p pb.JobAction
	if err := get(d, &p); err != nil {
		return err
	}
	*m = JobAction{Req: p.Req, JobID: p.JobId, Action: p.Action}
	return nil
}

func (m *SetTarget) MarshalWire(e *wire.Encoder) {
	put(e, &pb.SetTarget{Req: m.Req, Machine: m.Machine, Subnet: m.Subnet, Ip: m.IP, Size: m.Size, OsType: m.OSType, Hydrate: m.Hydrate})
}
func (m *SetTarget) UnmarshalWire(d *wire.Decoder) error {
	var p pb.SetTarget
	if err := get(d, &p); err != nil {
		return err
	}
	*m = SetTarget{Req: p.Req, Machine: p.Machine, Subnet: p.Subnet, IP: p.Ip, Size: p.Size, OSType: p.OsType, Hydrate: p.Hydrate}
	return nil
}

func (m *AttachTarget) MarshalWire(e *wire.Encoder) {
	p := &pb.AttachTarget{Req: m.Req, Machine: m.Machine, Vm: m.VM, Fresh: m.Fresh}
	for _, d := range m.Disks {
		p.Disks = append(p.Disks, &pb.TargetDisk{Path: d.Path, CapacityBytes: d.CapacityBytes})
	}
	put(e, p)
}
func (m *AttachTarget) UnmarshalWire(d *wire.Decoder) error {
	var p pb.AttachTarget
	if err := get(d, &p); err != nil {
		return err
	}
	*m = AttachTarget{Req: p.Req, Machine: p.Machine, VM: p.Vm, Fresh: p.Fresh}
	for _, d := range p.Disks {
		m.Disks = append(m.Disks, TargetDisk{Path: d.GetPath(), CapacityBytes: d.GetCapacityBytes()})
	}
	return nil
}

func (m *BlockSumRequest) MarshalWire(e *wire.Encoder) {
	put(e, &pb.BlockSumRequest{Req: m.Req, Machine: m.Machine, Disk: uint32(m.Disk), OffBytes: m.Off, Blocks: m.Blocks})
}
func (m *BlockSumRequest) UnmarshalWire(d *wire.Decoder) error {
	var p pb.BlockSumRequest
	if err := get(d, &p); err != nil {
		return err
	}
	disk, err := diskOf("block-sum-request", p.Disk)
	if err != nil {
		return err
	}
	*m = BlockSumRequest{Req: p.Req, Machine: p.Machine, Disk: disk, Off: p.OffBytes, Blocks: p.Blocks}
	return nil
}

func (m *BlockSumReply) MarshalWire(e *wire.Encoder) {
	put(e, &pb.BlockSumReply{Req: m.Req, Machine: m.Machine, Disk: uint32(m.Disk), OffBytes: m.Off,
		BlockSizeBytes: m.BlockSize, Applied: m.Applied, Sums: m.Sums, Final: m.Final, Err: m.Err})
}
func (m *BlockSumReply) UnmarshalWire(d *wire.Decoder) error {
	var p pb.BlockSumReply
	if err := get(d, &p); err != nil {
		return err
	}
	disk, err := diskOf("block-sum-reply", p.Disk)
	if err != nil {
		return err
	}
	*m = BlockSumReply{Req: p.Req, Machine: p.Machine, Disk: disk, Off: p.OffBytes,
		BlockSize: p.BlockSizeBytes, Applied: p.Applied, Sums: bs(p.Sums), Final: p.Final, Err: p.Err}
	return nil
}

func (m *FailedOver) MarshalWire(e *wire.Encoder) {
	put(e, &pb.FailedOver{Req: m.Req, Machine: m.Machine, AzureVm: m.AzureVM})
}
func (m *FailedOver) UnmarshalWire(d *wire.Decoder) error {
	var p pb.FailedOver
	if err := get(d, &p); err != nil {
		return err
	}
	*m = FailedOver{Req: p.Req, Machine: p.Machine, AzureVM: p.AzureVm}
	return nil
}

func (m *Reprotect) MarshalWire(e *wire.Encoder) {
	put(e, &pb.Reprotect{Req: m.Req, Machines: m.Machines, Direction: m.Direction, MasterTarget: m.MasterTarget,
		ProcessServer: m.ProcessServer, Location: m.Location, Host: m.Host, Datastore: m.Datastore})
}
func (m *Reprotect) UnmarshalWire(d *wire.Decoder) error {
	var p pb.Reprotect
	if err := get(d, &p); err != nil {
		return err
	}
	*m = Reprotect{Req: p.Req, Machines: strs(p.Machines), Direction: p.Direction, MasterTarget: p.MasterTarget,
		ProcessServer: p.ProcessServer, Location: p.Location, Host: p.Host, Datastore: p.Datastore}
	return nil
}

func (m *FailbackPoint) MarshalWire(e *wire.Encoder) {
	put(e, &pb.FailbackPoint{Req: m.Req, Machine: m.Machine, Point: m.Point})
}
func (m *FailbackPoint) UnmarshalWire(d *wire.Decoder) error {
	var p pb.FailbackPoint
	if err := get(d, &p); err != nil {
		return err
	}
	*m = FailbackPoint{Req: p.Req, Machine: p.Machine, Point: p.Point}
	return nil
}

func (m *TargetPointsRequest) MarshalWire(e *wire.Encoder) {
	put(e, &pb.TargetPointsRequest{Req: m.Req, Machine: m.Machine})
}
func (m *TargetPointsRequest) UnmarshalWire(d *wire.Decoder) error {
	var p pb.TargetPointsRequest
	if err := get(d, &p); err != nil {
		return err
	}
	*m = TargetPointsRequest{Req: p.Req, Machine: p.Machine}
	return nil
}

func (m *TargetPoints) MarshalWire(e *wire.Encoder) {
	p := &pb.TargetPoints{Req: m.Req, Machine: m.Machine, Vm: m.VM, Applied: m.Applied, Err: m.Err}
	for _, t := range m.Points {
		p.Points = append(p.Points, &pb.TargetPoint{Id: t.ID, Kind: kindPB(t.Kind), TimeUnixNs: unixNS(t.Time), Seq: t.Seq})
	}
	put(e, p)
}
func (m *TargetPoints) UnmarshalWire(d *wire.Decoder) error {
	var p pb.TargetPoints
	if err := get(d, &p); err != nil {
		return err
	}
	*m = TargetPoints{Req: p.Req, Machine: p.Machine, VM: p.Vm, Applied: p.Applied, Err: p.Err}
	for _, t := range p.Points {
		kind, err := kindOf(t.GetKind())
		if err != nil {
			return fmt.Errorf("proto: target-points: %w", err)
		}
		m.Points = append(m.Points, TargetPoint{ID: t.GetId(), Kind: kind, Time: fromUnixNS(t.GetTimeUnixNs()), Seq: t.GetSeq()})
	}
	return nil
}

func (m *FailedBack) MarshalWire(e *wire.Encoder) {
	put(e, &pb.FailedBack{Req: m.Req, Machine: m.Machine, Vm: m.VM})
}
func (m *FailedBack) UnmarshalWire(d *wire.Decoder) error {
	var p pb.FailedBack
	if err := get(d, &p); err != nil {
		return err
	}
	*m = FailedBack{Req: p.Req, Machine: p.Machine, VM: p.Vm}
	return nil
}

func (m *ResumeReplication) MarshalWire(e *wire.Encoder) {
	put(e, &pb.ResumeReplication{Req: m.Req, Machine: m.Machine})
}
func (m *ResumeReplication) UnmarshalWire(d *wire.Decoder) error {
	var p pb.ResumeReplication
	if err := get(d, &p); err != nil {
		return err
	}
	*m = ResumeReplication{Req: p.Req, Machine: p.Machine}
	return nil
}
