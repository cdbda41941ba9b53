package batch

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
)

func sampleItems() []*Item {
	data := bytes.Repeat([]byte("v2a "), 1024)
	return []*Item{
		{Machine: "db01", Seq: 1, Kind: KindSyncStart, Gen: 1, DiskSizes: []int64{64 << 20, 32 << 20}},
		{Machine: "db01", Seq: 2, Kind: KindChunk, Gen: 1, Disk: 1, Runs: []Run{{Off: 0, Data: data}, {Off: 8192, Data: data[:512]}}},
		{Machine: "db01", Seq: 3, Kind: KindSyncEnd, Gen: 1, LogFrom: 1, Chunks: 1},
		{Machine: "db01", Seq: 4, Kind: KindLog, First: 1, Last: 5, Records: []Record{
			{Seq: 1, Type: RecWrite, Disk: 0, Off: 4096, Data: data},
			{Seq: 3, Type: RecBookmark, BookmarkKind: proto.Crash, BookmarkID: "db01-c-1", UnixNano: 1767225600000000000},
			{Seq: 5, Type: RecRevoke, BookmarkID: "db01-c-1"},
		}},
	}
}

func TestItemRoundTrip(t *testing.T) {
	for _, it := range sampleItems() {
		got, err := Unmarshal(it.Marshal())
		if err != nil {
			t.Fatalf("%s: %v", it.Kind, err)
		}
		if diff := cmp.Diff(it, got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s round trip (-want +got):\n%s", it.Kind, diff)
		}
	}
}

func TestItemRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		it   Item
	}{
		{"no machine", Item{Seq: 1, Kind: KindSyncEnd}},
		{"no seq", Item{Machine: "a", Kind: KindSyncEnd}},
		{"unknown kind", Item{Machine: "a", Seq: 1, Kind: 9}},
		{"sync with no disks", Item{Machine: "a", Seq: 1, Kind: KindSyncStart}},
		{"unaligned run", Item{Machine: "a", Seq: 1, Kind: KindChunk, Runs: []Run{{Off: 100, Data: make([]byte, 512)}}}},
		{"empty log range", Item{Machine: "a", Seq: 1, Kind: KindLog, First: 5, Last: 4}},
		{"record out of order", Item{Machine: "a", Seq: 1, Kind: KindLog, First: 1, Last: 3, Records: []Record{{Seq: 2}, {Seq: 2}}}},
		{"record outside range", Item{Machine: "a", Seq: 1, Kind: KindLog, First: 1, Last: 3, Records: []Record{{Seq: 4}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Unmarshal(tt.it.Marshal()); !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
		})
	}
	good := sampleItems()[3].Marshal()
	for _, n := range []int{0, 1, 5, len(good) - 1} {
		if _, err := Unmarshal(good[:n]); !errors.Is(err, ErrFormat) {
			t.Errorf("truncated to %d bytes: err = %v", n, err)
		}
	}
}

func realistic(n int) []byte {
	b := make([]byte, n)
	blockdev.FillRealistic(rand.New(rand.NewPCG(1, 2)), b)
	return b
}

func TestSealOpen(t *testing.T) {
	key := [32]byte{1, 2, 3}
	plain := realistic(256 << 10)
	for _, c := range []Codec{CodecNone, CodecS2, CodecZstd} {
		t.Run(c.String(), func(t *testing.T) {
			s, err := NewSealer(key, c)
			if err != nil {
				t.Fatal(err)
			}
			sealed, err := s.Seal(nil, "db01/00000000000000000001", plain)
			if err != nil {
				t.Fatal(err)
			}
			if c != CodecNone && len(sealed) >= len(plain) {
				t.Errorf("%s did not compress realistic data: %d -> %d", c, len(plain), len(sealed))
			}
			got, err := s.Open(nil, "db01/00000000000000000001", sealed)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("open returned other bytes")
			}
		})
	}
}

func TestOpenRejectsDamage(t *testing.T) {
	key := [32]byte{9}
	s, _ := NewSealer(key, CodecS2)
	name := "db01/00000000000000000007"
	sealed, err := s.Seal(nil, name, realistic(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSealer([32]byte{8}, CodecS2)
	flip := func(i int) []byte {
		b := append([]byte(nil), sealed...)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name   string
		s      *Sealer
		blob   string
		sealed []byte
		want   error
	}{
		{"flipped ciphertext bit", s, name, flip(len(sealed) / 2), ErrTamper},
		{"flipped tag bit", s, name, flip(len(sealed) - 1), ErrTamper},
		{"flipped codec byte", s, name, flip(5), ErrTamper},
		{"truncated", s, name, sealed[:len(sealed)-100], ErrTamper},
		{"swapped for another blob", s, "db01/00000000000000000008", sealed, ErrTamper},
		{"another vault's key", other, name, sealed, ErrTamper},
		{"not sealed at all", s, name, []byte("hello, world, this is plain text"), ErrSealed},
		{"other version", s, name, flip(4), ErrSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.s.Open(nil, tt.blob, tt.sealed); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseCodec(t *testing.T) {
	for in, want := range map[string]Codec{"": CodecS2, "s2": CodecS2, "zstd": CodecZstd, "none": CodecNone} {
		if got, err := ParseCodec(in); err != nil || got != want {
			t.Errorf("ParseCodec(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseCodec("lz77"); err == nil {
		t.Error("unknown codec accepted")
	}
}
