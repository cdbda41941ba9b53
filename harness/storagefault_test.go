package harness

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/v2a-dr/v2a/impl/batch"
)

// TestTamperDecodable: the corruption corrupt-blob plants is refused by
// AES-GCM, and is otherwise invisible — decrypted without the tag check it
// decompresses and decodes to an item whose only difference is one
// write's data. That is what makes it the negative control of the tag
// check (mutant gcm-tag-unverified).
func TestTamperDecodable(t *testing.T) {
	key := [32]byte{1, 2, 3}
	var recs []batch.Record
	for i := 0; i < 64; i++ {
		data := bytes.Repeat([]byte{byte(i), byte(i * 7), 0x55, byte(i >> 2)}, 1024)
		recs = append(recs, batch.Record{Seq: uint64(i + 1), Type: batch.RecWrite, Off: int64(i) * 4096, Data: data})
	}
	it := &batch.Item{Machine: "db01", Seq: 9, Kind: batch.KindLog, First: 1, Last: 64, Records: recs}
	sl, err := batch.NewSealer(key, batch.CodecS2)
	if err != nil {
		t.Fatal(err)
	}
	name := "db01/00000000000000000009"
	sealed, err := sl.Seal(nil, name, it.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	orig := bytes.Clone(sealed)
	at, err := tamperDecodable(key, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if n := diffBytes(orig, sealed); n != 1 || orig[at] == sealed[at] {
		t.Fatalf("%d bytes changed, want exactly byte %d", n, at)
	}
	if _, err := sl.Open(nil, name, sealed); !errors.Is(err, batch.ErrTamper) {
		t.Fatalf("Open: %v, want %v", err, batch.ErrTamper)
	}
	// Without the tag check (CTR decryption alone) it decodes.
	blk, _ := aes.NewCipher(key[:])
	iv := make([]byte, aes.BlockSize)
	copy(iv, sealed[6:sealedHeaderLen])
	iv[aes.BlockSize-1] = 2
	ct := sealed[sealedHeaderLen : len(sealed)-sealedTagLen]
	plain := make([]byte, len(ct))
	cipher.NewCTR(blk, iv).XORKeyStream(plain, ct)
	raw, err := s2.Decode(nil, plain)
	if err != nil {
		t.Fatalf("tampered item does not decompress: %v", err)
	}
	got, err := batch.Unmarshal(raw)
	if err != nil {
		t.Fatalf("tampered item does not decode: %v", err)
	}
	if !onlyWriteChanged(it, got) {
		t.Errorf("the tampering changed more than one write's data")
	}
}

func diffBytes(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
