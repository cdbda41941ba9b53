package wire

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type testMsg struct {
	N    uint64
	I    int64
	OK   bool
	Data []byte
	Name string
	At   time.Time
	Tags []string
}

const kindTest Kind = 0xfff0

func init() { Register(kindTest, "test", func() Msg { return &testMsg{} }) }

func (m *testMsg) WireKind() Kind { return kindTest }
func (m *testMsg) MarshalWire(e *Encoder) {
	e.Uint(m.N)
	e.Int(m.I)
	e.Bool(m.OK)
	e.Bytes(m.Data)
	e.String(m.Name)
	e.Time(m.At)
	e.Strings(m.Tags)
}
func (m *testMsg) UnmarshalWire(d *Decoder) error {
	m.N, m.I, m.OK, m.Data, m.Name, m.At, m.Tags = d.Uint(), d.Int(), d.Bool(), d.Bytes(), d.String(), d.Time(), d.Strings()
	return d.Err()
}

func sample() *testMsg {
	return &testMsg{N: 1 << 40, I: -7, OK: true, Data: []byte("payload"), Name: "vm1",
		At: time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC), Tags: []string{"a", "bc"}}
}

func TestRoundTrip(t *testing.T) {
	in := sample()
	out, err := Decode(Encode(in))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Fatalf("round trip (-in +out):\n%s", diff)
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	good := Encode(sample())
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrShort},
		{"truncated header", good[:4], ErrShort},
		{"truncated payload", good[:len(good)-5], ErrShort},
		{"bad magic", flip(0), ErrMagic},
		{"other version", flip(2), ErrVersion},
		{"flipped payload bit", flip(12), ErrChecksum},
		{"flipped crc bit", flip(len(good) - 1), ErrChecksum},
		{"trailing garbage", append(append([]byte(nil), good...), 0), ErrPayload},
		{"huge length", func() []byte { b := append([]byte(nil), good...); b[5] = 0xff; return b }(), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, %v; want error %v", m, err, tt.want)
			}
			// Peek checks all but the CRC.
			want := tt.want
			if want == ErrChecksum {
				want = nil
			}
			if _, err := Peek(tt.frame); !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Errorf("Peek: %v, want error %v", err, want)
			}
			// DecodeOpened too: the CRC is its caller's (Open's) to have
			// checked. A flipped payload bit decodes to another message.
			m, err = DecodeOpened(tt.frame)
			if !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Errorf("DecodeOpened = %v, %v; want error %v", m, err, want)
			}
		})
	}
	if k, err := Peek(good); err != nil || k != sample().WireKind() {
		t.Errorf("Peek of a good frame = %v, %v; want %v", k, err, sample().WireKind())
	}
}

// DecodeOpened decodes a good frame as Decode does, and refuses the
// malformed payloads Decode refuses (a checksum that is right does not
// make a payload well-formed).
func TestDecodeOpened(t *testing.T) {
	in := sample()
	out, err := DecodeOpened(Encode(in))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("DecodeOpened (-in +out):\n%s", diff)
	}
	f := Encode(sample())
	f[3], f[4] = 0xff, 0xfe
	if _, err := DecodeOpened(reseal(f)); !errors.Is(err, ErrKind) {
		t.Errorf("unknown kind: err = %v, want ErrKind", err)
	}
	payload := Encode(sample())[headerLen:]
	short := append([]byte{'v', '2', Version, 0xff, 0xf0, 0, 0, 0, 3}, payload[:3]...)
	if _, err := DecodeOpened(reseal(append(short, 0, 0, 0, 0))); !errors.Is(err, ErrPayload) {
		t.Errorf("payload cut mid-field: err = %v, want ErrPayload", err)
	}
}

func TestDecodeUnknownKind(t *testing.T) {
	f := Encode(sample())
	f[3], f[4] = 0xff, 0xfe // kind 0xfffe, then re-seal so only the kind is wrong
	f = reseal(f)
	if _, err := Decode(f); !errors.Is(err, ErrKind) {
		t.Fatalf("err = %v, want ErrKind", err)
	}
}

func TestDecodeMalformedPayload(t *testing.T) {
	// A frame whose checksum is right but whose payload stops mid-field:
	// a sender bug, reported as such rather than as corruption.
	f := Encode(sample())
	payload := f[headerLen : len(f)-4]
	short := append([]byte{'v', '2', Version, 0xff, 0xf0, 0, 0, 0, 3}, payload[:3]...)
	short = append(short, 0, 0, 0, 0)
	if _, err := Decode(reseal(short)); !errors.Is(err, ErrPayload) {
		t.Fatalf("err = %v, want ErrPayload", err)
	}
}

func reseal(f []byte) []byte {
	n := len(f) - 4
	crc := crc32Checksum(f[:n])
	f[n], f[n+1], f[n+2], f[n+3] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
	return f
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(sample()))
	f.Add([]byte("v2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same frame.
		if got := Encode(m); string(got) != string(b) {
			t.Fatalf("re-encode differs:\n%x\n%x", got, b)
		}
	})
}
