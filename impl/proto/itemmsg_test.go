package proto

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/impl/proto/pb"
	"github.com/v2a-dr/v2a/impl/wire"
)

// TestItemMsgDecodeLikeProtobuf: ItemMsg's hand decoder (which aliases the
// item's bytes instead of copying them) accepts exactly the payloads
// proto.Unmarshal accepts into pb.ItemMsg, and reads the same fields from
// them: fields in any order and repeated, known field numbers with another
// wire type, unknown fields and groups, invalid UTF-8, truncations, bytes.
func TestItemMsgDecodeLikeProtobuf(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var payload []byte
		if rapid.Bool().Draw(t, "garbage") {
			payload = rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "bytes")
		} else {
			for range rapid.IntRange(0, 8).Draw(t, "fields") {
				num := protowire.Number(rapid.IntRange(1, 6).Draw(t, "num"))
				switch rapid.IntRange(0, 4).Draw(t, "type") {
				case 0:
					payload = protowire.AppendVarint(protowire.AppendTag(payload, num, protowire.VarintType), rapid.Uint64().Draw(t, "varint"))
				case 1:
					s := rapid.SampledFrom([]string{"", "db01", "s2", "zstd", "d\xffb", "é"}).Draw(t, "string")
					payload = protowire.AppendString(protowire.AppendTag(payload, num, protowire.BytesType), s)
				case 2:
					payload = protowire.AppendBytes(protowire.AppendTag(payload, num, protowire.BytesType), rapid.SliceOfN(rapid.Byte(), 0, 20).Draw(t, "data"))
				case 3:
					payload = protowire.AppendFixed64(protowire.AppendTag(payload, num, protowire.Fixed64Type), rapid.Uint64().Draw(t, "fixed64"))
				case 4:
					payload = protowire.AppendTag(payload, num, protowire.StartGroupType)
					payload = protowire.AppendVarint(protowire.AppendTag(payload, 1, protowire.VarintType), 7)
					payload = protowire.AppendTag(payload, num, protowire.EndGroupType)
				}
			}
			if rapid.Bool().Draw(t, "cut") && len(payload) > 0 {
				payload = payload[:rapid.IntRange(0, len(payload)-1).Draw(t, "at")]
			}
		}
		var want pb.ItemMsg
		wantErr := gproto.Unmarshal(payload, &want)
		var got ItemMsg
		gotErr := got.UnmarshalWire(wire.NewDecoder(payload))
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("payload %x: hand decoder says %v, protobuf says %v", payload, gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		exp := ItemMsg{Machine: want.Machine, Seq: want.Seq, Data: bs(want.Data), Codec: want.Codec}
		if diff := cmp.Diff(exp, got); diff != "" {
			t.Fatalf("payload %x: (-protobuf +hand decoder)\n%s", payload, diff)
		}
	})
}

// TestItemMsgDataAliasesFrame: the decoded item's bytes are the frame's
// (no copy), and capped so that an append cannot write over the frame.
func TestItemMsgDataAliasesFrame(t *testing.T) {
	frame := wire.Encode(&ItemMsg{Machine: "db01", Seq: 3, Data: []byte("item bytes"), Codec: "s2"})
	m, err := wire.Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	it := m.(*ItemMsg)
	if diff := cmp.Diff(&ItemMsg{Machine: "db01", Seq: 3, Data: []byte("item bytes"), Codec: "s2"}, it); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	if cap(it.Data) != len(it.Data) {
		t.Errorf("Data has capacity %d beyond its %d bytes", cap(it.Data), len(it.Data))
	}
	it.Data[0] = 'I'
	if !bytes.Contains(frame, []byte("Item bytes")) {
		t.Errorf("Data does not alias the frame")
	}
}

// TestItemMsgFrameOneArray: encoding an item's frame allocates its array
// once (the CRC trailer fits), instead of copying the item into a bigger
// array at the end: under 1.5 bytes allocated per item byte.
func TestItemMsgFrameOneArray(t *testing.T) {
	m := &ItemMsg{Machine: "db01", Seq: 1 << 40, Data: make([]byte, 1<<20), Codec: "zstd"}
	frame := wire.Encode(m)
	if got, err := wire.Decode(frame); err != nil || !bytes.Equal(got.(*ItemMsg).Data, m.Data) {
		t.Fatalf("round trip: %v", err)
	}
	const runs = 8
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		frame = wire.Encode(m)
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.TotalAlloc-before.TotalAlloc) / runs / float64(len(m.Data)); per > 1.5 {
		t.Errorf("encoding an item frame allocates %.2f bytes per item byte, want under 1.5", per)
	}
}
