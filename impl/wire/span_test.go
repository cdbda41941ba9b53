package wire

import (
	"hash/crc32"
	"testing"

	"pgregory.net/rapid"
)

// SpanCRC is the CRC-32C of the part, whatever the bytes before and after
// it (a header, other fields, none): a property over random frames.
func TestSpanCRCProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		pre := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "pre")
		part := rapid.SliceOfN(rapid.Byte(), 1, 5000).Draw(t, "part")
		suf := rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "suf")
		frame := append(append(append([]byte{'v', '2', Version, 0, 0, 0, 0, 0, 0}, pre...), part...), suf...)
		frame = append(frame, 0, 0, 0, 0)
		frame = reseal(frame)
		off := headerLen + len(pre)
		got, ok := SpanCRC(frame, frame[off:off+len(part):off+len(part)])
		if want := crc32.Checksum(part, castagnoli); !ok || got != want {
			t.Fatalf("SpanCRC = %08x, %v; want %08x", got, ok, want)
		}
	})
}

// A megabyte part of a real frame, the process server's case.
func TestSpanCRCEncodedFrame(t *testing.T) {
	m := sample()
	m.Data = make([]byte, 1<<20)
	for i := range m.Data {
		m.Data[i] = byte(i * 7)
	}
	frame := Encode(m)
	out, err := Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	data := out.(*testMsg).Data
	got, ok := SpanCRC(frame, data)
	if want := crc32.Checksum(m.Data, castagnoli); !ok || got != want {
		t.Errorf("SpanCRC = %08x, %v; want %08x", got, ok, want)
	}
}

// Parts that are not in the frame's payload are refused, not guessed; and
// a wrong trailer gives a wrong CRC (the negative control: the result
// depends on the trailer, not on the part's bytes).
func TestSpanCRCRefuses(t *testing.T) {
	frame := Encode(sample())
	copyOf := append([]byte(nil), frame[headerLen+2:headerLen+6]...)
	for _, tc := range []struct {
		name string
		part []byte
	}{
		{"empty", frame[headerLen:headerLen]},
		{"a copy", copyOf},
		{"the header", frame[:headerLen]},
		{"the trailer", frame[len(frame)-4:]},
		{"past the payload", frame[len(frame)-6:]},
	} {
		if crc, ok := SpanCRC(frame, tc.part); ok {
			t.Errorf("%s: SpanCRC = %08x, true; want false", tc.name, crc)
		}
	}
	part := frame[headerLen+2 : headerLen+6]
	good, _ := SpanCRC(frame, part)
	frame[len(frame)-1] ^= 1
	if bad, ok := SpanCRC(frame, part); !ok || bad == good {
		t.Errorf("wrong trailer: SpanCRC = %08x, %v; want something other than %08x", bad, ok, good)
	}
}

func BenchmarkSpanCRC(b *testing.B) {
	m := sample()
	m.Data = make([]byte, 1<<20)
	frame := Encode(m)
	out, _ := Decode(frame)
	data := out.(*testMsg).Data
	b.Run("span", func(b *testing.B) {
		for b.Loop() {
			SpanCRC(frame, data)
		}
	})
	b.Run("checksum", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			crc32.Checksum(data, castagnoli)
		}
	})
}
