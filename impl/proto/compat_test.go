package proto

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/v2a-dr/v2a/impl/proto/pb"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Mixed versions: a peer built from the next version of v2a.proto (every
// message, nested ones included, has gained a field) talks to this build,
// which plays the older peer, in both directions. The newer peer is real
// protobuf code — dynamicpb messages of the evolved schema — not a
// hand-made byte string.

// addedField is the field every message gains in the next version.
const addedField = "added"

// nextSchema is v2a.proto as edit(file) leaves it, built as its own file.
func nextSchema(t *testing.T, edit func(*descriptorpb.FileDescriptorProto)) protoreflect.FileDescriptor {
	t.Helper()
	fdp := protodesc.ToFileDescriptorProto(pb.File_impl_proto_pb_v2a_proto)
	edit(fdp)
	fd, err := protodesc.NewFile(fdp, new(protoregistry.Files))
	if err != nil {
		t.Fatalf("next schema: %v", err)
	}
	return fd
}

// addEverywhere gives every message the string field "added" (1000) and
// Policy a uint64 max_bandwidth_bytes_per_s (7): the next version's fields.
func addEverywhere(fdp *descriptorpb.FileDescriptorProto) {
	for _, m := range fdp.MessageType {
		m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{Name: gproto.String(addedField), JsonName: gproto.String(addedField),
			Number: gproto.Int32(1000), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()})
		if m.GetName() == "Policy" {
			m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{Name: gproto.String("max_bandwidth_bytes_per_s"), JsonName: gproto.String("maxBandwidthBytesPerS"),
				Number: gproto.Int32(7), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_UINT64.Enum()})
		}
	}
}

// rawMsg frames a payload the newer peer marshalled.
type rawMsg struct {
	kind    wire.Kind
	payload []byte
}

func (r rawMsg) WireKind() wire.Kind { return r.kind }
func (r rawMsg) MarshalWire(e *wire.Encoder) {
	e.AppendWith(func(dst []byte) []byte { return append(dst, r.payload...) })
}
func (rawMsg) UnmarshalWire(*wire.Decoder) error { return errors.New("rawMsg is send-only") }

// fromNewer is what this build decodes of the newer peer's message nm,
// sent as kind.
func fromNewer(kind wire.Kind, nm gproto.Message) (wire.Msg, error) {
	b, err := gproto.MarshalOptions{Deterministic: true}.Marshal(nm)
	if err != nil {
		return nil, err
	}
	return wire.Decode(wire.Encode(rawMsg{kind, b}))
}

// understood fails when the newer peer read a field it has no name for
// (it should know every field an older peer sends), or an added field
// that the older peer could not have set.
func understood(m protoreflect.Message) error {
	if u := m.GetUnknown(); len(u) > 0 {
		return fmt.Errorf("%s: %d bytes of fields the newer peer does not know", m.Descriptor().FullName(), len(u))
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == addedField || fd.Name() == "max_bandwidth_bytes_per_s":
			err = fmt.Errorf("%s.%s set by an older peer", m.Descriptor().FullName(), fd.Name())
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = understood(v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			err = understood(v.Message())
		}
		return err == nil
	})
	return err
}

// setAdded sets the added field in m and in every message inside it, and
// counts them.
func setAdded(m protoreflect.Message) int {
	n := 1
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				n += setAdded(v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			n += setAdded(v.Message())
		}
		return true
	})
	if fd := m.Descriptor().Fields().ByName(addedField); fd != nil {
		m.Set(fd, protoreflect.ValueOfString("from the next version"))
	}
	if fd := m.Descriptor().Fields().ByName("max_bandwidth_bytes_per_s"); fd != nil {
		m.Set(fd, protoreflect.ValueOfUint64(100<<20))
	}
	return n
}

// interoperate checks m against a newer peer of schema next, both ways:
// old→new (the newer peer reads every field, its new ones zero, and what
// it sends back reads as m) and new→old (m with every new field set reads
// as m: the unknown fields are skipped, the known ones intact).
func interoperate(m wire.Msg, next protoreflect.FileDescriptor) error {
	_, payload, err := wire.Open(wire.Encode(m))
	if err != nil {
		return err
	}
	name := reflect.TypeOf(m).Elem().Name()
	md := next.Messages().ByName(protoreflect.Name(name))
	if md == nil {
		return fmt.Errorf("no message %s in the next schema", name)
	}
	nm := dynamicpb.NewMessage(md)
	if err := gproto.Unmarshal(payload, nm); err != nil {
		return fmt.Errorf("old→new: %w", err)
	}
	if err := understood(nm); err != nil {
		return fmt.Errorf("old→new: %w", err)
	}
	back, err := fromNewer(m.WireKind(), nm)
	if err != nil {
		return fmt.Errorf("old→new→old: %w", err)
	}
	if diff := cmp.Diff(m, back, cmpopts.EquateEmpty()); diff != "" {
		return fmt.Errorf("old→new→old (-sent +read):\n%s", diff)
	}
	if setAdded(nm) < 1 {
		return fmt.Errorf("new→old: no field added")
	}
	got, err := fromNewer(m.WireKind(), nm)
	if err != nil {
		return fmt.Errorf("new→old: %w", err)
	}
	if diff := cmp.Diff(m, got, cmpopts.EquateEmpty()); diff != "" {
		return fmt.Errorf("new→old (-sent +read):\n%s", diff)
	}
	return nil
}

// TestMixedVersionsEveryKind: every kind, every nested message, both
// directions.
func TestMixedVersionsEveryKind(t *testing.T) {
	next := nextSchema(t, addEverywhere)
	seen := map[wire.Kind]bool{}
	for _, m := range roundTripMsgs() {
		if err := interoperate(m, next); err != nil {
			t.Errorf("%T: %v", m, err)
		}
		seen[m.WireKind()] = true
	}
	for k := KindRegister; k <= KindResumeReplication; k++ {
		if !seen[k] {
			t.Errorf("kind %s has no mixed-version case", wire.KindName(k))
		}
	}
}

// TestMixedVersionsPolicyInProtect walks the nested case by hand: the next
// version's configuration server adds a bandwidth cap to Policy inside
// Protect; this build's agent reads the policy it knows, and the next
// version's agent reads no cap (zero) from this build's server.
func TestMixedVersionsPolicyInProtect(t *testing.T) {
	next := nextSchema(t, addEverywhere)
	want := &Protect{Machine: "db01", Policy: DefaultPolicy(), ProcessServer: "ps01:9443", Gen: 3}

	// new → old
	nm := dynamicpb.NewMessage(next.Messages().ByName("Protect"))
	pol := dynamicpb.NewMessage(next.Messages().ByName("Policy"))
	pf := pol.Descriptor().Fields()
	pol.Set(pf.ByName("name"), protoreflect.ValueOfString("default"))
	pol.Set(pf.ByName("rpo_threshold_ns"), protoreflect.ValueOfInt64(int64(time.Hour)))
	pol.Set(pf.ByName("retention_ns"), protoreflect.ValueOfInt64(int64(24*time.Hour)))
	pol.Set(pf.ByName("crash_interval_ns"), protoreflect.ValueOfInt64(int64(5*time.Minute)))
	pol.Set(pf.ByName("app_interval_ns"), protoreflect.ValueOfInt64(int64(time.Hour)))
	pol.Set(pf.ByName("compression"), protoreflect.ValueOfString("s2"))
	pol.Set(pf.ByName("max_bandwidth_bytes_per_s"), protoreflect.ValueOfUint64(50<<20))
	f := nm.Descriptor().Fields()
	nm.Set(f.ByName("machine"), protoreflect.ValueOfString("db01"))
	nm.Set(f.ByName("policy"), protoreflect.ValueOfMessage(pol))
	nm.Set(f.ByName("process_server"), protoreflect.ValueOfString("ps01:9443"))
	nm.Set(f.ByName("gen"), protoreflect.ValueOfUint64(3))
	got, err := fromNewer(KindProtect, nm)
	if err != nil {
		t.Fatalf("new→old: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("new→old (-want +got):\n%s", diff)
	}

	// old → new
	_, payload, err := wire.Open(wire.Encode(want))
	if err != nil {
		t.Fatal(err)
	}
	read := dynamicpb.NewMessage(next.Messages().ByName("Protect"))
	if err := gproto.Unmarshal(payload, read); err != nil {
		t.Fatalf("old→new: %v", err)
	}
	rp := read.Get(f.ByName("policy")).Message()
	if cap := rp.Get(pf.ByName("max_bandwidth_bytes_per_s")).Uint(); cap != 0 {
		t.Errorf("old→new: bandwidth cap %d, want 0 (an older server sets none)", cap)
	}
	if n, crash := rp.Get(pf.ByName("name")).String(), rp.Get(pf.ByName("crash_interval_ns")).Int(); n != "default" || crash != int64(5*time.Minute) {
		t.Errorf("old→new: policy %q crash %d, want default and 5 min", n, crash)
	}
}

// TestMixedVersionsNegativeControl: interoperate catches schema changes
// that break older peers — a renumbered field and a retyped one.
func TestMixedVersionsNegativeControl(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*descriptorpb.FileDescriptorProto)
		msg  wire.Msg
	}{
		{"machine renumbered", func(fdp *descriptorpb.FileDescriptorProto) {
			for _, m := range fdp.MessageType {
				if m.GetName() == "Protect" {
					m.Field[0].Number = gproto.Int32(9)
				}
			}
		}, &Protect{Machine: "db01", Policy: DefaultPolicy(), Gen: 1}},
		{"nested retention retyped", func(fdp *descriptorpb.FileDescriptorProto) {
			for _, m := range fdp.MessageType {
				if m.GetName() == "Policy" {
					m.Field[2].Type = descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
				}
			}
		}, &CreatePolicy{Policy: DefaultPolicy()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := interoperate(tc.msg, nextSchema(t, tc.edit)); err == nil {
				t.Errorf("an incompatible schema change passed")
			} else {
				t.Logf("caught: %v", err)
			}
		})
	}
}
