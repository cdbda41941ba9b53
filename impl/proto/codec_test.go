package proto

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/v2a-dr/v2a/impl/wire"
)

// frameOf frames a hand-made payload as kind.
func frameOf(kind wire.Kind, payload []byte) []byte { return wire.Encode(rawMsg{kind, payload}) }

// TestPayloadRefused: a frame whose checksum is right but whose payload a
// peer got wrong is refused with wire.ErrPayload and a reason, never
// half-decoded.
func TestPayloadRefused(t *testing.T) {
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	good := str(1, "db01")
	for _, tc := range []struct {
		name    string
		kind    wire.Kind
		payload []byte
		want    string
	}{
		{"not protobuf", KindUnprotect, []byte{0xff, 0xff, 0xff}, "cannot parse"},
		{"field cut short", KindUnprotect, good[:len(good)-2], "cannot parse"},
		{"invalid UTF-8 in a string", KindUnprotect, str(1, "db\xff01"), "invalid UTF-8"},
		{"known field, wrong wire type", KindUploaded, append(str(1, "db01"), str(2, "seven")...), ""},
		{"disk index over 16 bits", KindChecksums, append(str(1, "db01"), varint(4, 70000)...), "disk 70000"},
		{"block-sum disk over 16 bits", KindBlockSumRequest, varint(3, 1<<20), "disk 1048576"},
		{"unknown consistency number", KindTag, varint(3, 9), "unknown consistency 9"},
		{"unknown consistency in a point", KindTargetPoints, protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), varint(2, 3)),
			"target-points: proto: unknown consistency 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := wire.Decode(frameOf(tc.kind, tc.payload))
			if tc.want == "" { // protobuf reads a mistyped field as unknown: skipped, the rest intact
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if u := m.(*Uploaded); u.Machine != "db01" || u.UpTo != 0 {
					t.Errorf("got %+v", u)
				}
				return
			}
			if !errors.Is(err, wire.ErrPayload) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, %v; want wire.ErrPayload with %q", m, err, tc.want)
			}
		})
	}
}

// TestInvalidUTF8Sent: a Go string that is not UTF-8 cannot fail a send
// (MarshalWire has no error): its invalid bytes travel as U+FFFD, in
// nested messages and lists too, and the valid text around them is kept.
func TestInvalidUTF8Sent(t *testing.T) {
	m := &FailoverRequest{Req: "r\xff1", VMs: []string{"a", "b\xfe"},
		Plan: &RecoveryPlan{Name: "p", Groups: []PlanGroup{{VMs: []string{"c"}, Pre: []PlanAction{{Name: "dns\xff"}}}}}}
	got, err := wire.Decode(wire.Encode(m))
	if err != nil {
		t.Fatal(err)
	}
	r := got.(*FailoverRequest)
	if r.Req != "r\uFFFD1" || r.VMs[1] != "b\uFFFD" || r.Plan.Groups[0].Pre[0].Name != "dns\uFFFD" || r.Plan.Groups[0].VMs[0] != "c" {
		t.Errorf("got %+v", r)
	}
}
