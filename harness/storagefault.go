package harness

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"sort"
	"strings"

	"github.com/klauspost/compress/s2"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"
)

// corruptNewestItem flips a byte in the middle of the newest item blob of
// vm in the cache container.
func (d *Deployment) corruptNewestItem(vm string) (string, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	c := prefix + proto.ContainerCache
	items, err := store.List(d.e.ctx, c, vm+"/")
	if err != nil {
		return "", err
	}
	if len(items) == 0 {
		return "", fmt.Errorf("no item of %s in the cache container", vm)
	}
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.Name
	}
	sort.Strings(names) // zero-padded sequence numbers: the last is the newest
	name := names[len(names)-1]
	data, _, err := store.Get(d.e.ctx, c, name, blob.ReadOptions{})
	if err != nil {
		return "", err
	}
	at, err := tamperDecodable(d.keys.Data, data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if _, err := store.Put(d.e.ctx, c, name, data, blob.WriteOptions{}); err != nil {
		return "", err
	}
	return fmt.Sprintf("corrupt-blob %s: flipped a bit of byte %d of %d in cache item %s", vm, at, len(data), strings.TrimPrefix(name, vm+"/")), nil
}

// The sealed layout of impl/batch (seal.go): magic "V2AS", version, codec,
// a 12-byte nonce, then the AES-256-GCM ciphertext of the compressed item
// and its 16-byte tag.
const (
	sealedHeaderLen = 4 + 1 + 1 + 12
	sealedTagLen    = 16
)

// tamperDecodable flips one bit of a sealed item's ciphertext, in place,
// where the plaintext still decompresses (s2) and decodes as an item whose
// data differs: a corruption no format check can see, that only the AES-GCM
// tag catches. GCM encrypts in CTR mode, which is malleable — a flipped
// ciphertext bit flips the same plaintext bit — so the bit is found on the
// plaintext, which the harness can read with the vault key it deployed. It
// returns the offset of the flipped byte in sealed.
func tamperDecodable(key [32]byte, sealed []byte) (int, error) {
	if len(sealed) < sealedHeaderLen+sealedTagLen || string(sealed[:4]) != "V2AS" {
		return 0, fmt.Errorf("not a sealed item (%d bytes)", len(sealed))
	}
	if batch.Codec(sealed[5]) != batch.CodecS2 {
		return 0, fmt.Errorf("sealed with %s, want s2", batch.Codec(sealed[5]))
	}
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		return 0, err
	}
	// GCM's keystream for the payload: counter block nonce || 2.
	iv := make([]byte, aes.BlockSize)
	copy(iv, sealed[6:sealedHeaderLen])
	iv[aes.BlockSize-1] = 2
	ct := sealed[sealedHeaderLen : len(sealed)-sealedTagLen]
	plain := make([]byte, len(ct))
	cipher.NewCTR(blk, iv).XORKeyStream(plain, ct)
	orig, err := s2.Decode(nil, plain)
	if err != nil {
		return 0, fmt.Errorf("does not decompress with the vault key: %w", err)
	}
	origItem, err := batch.Unmarshal(bytes.Clone(orig))
	if err != nil {
		return 0, fmt.Errorf("does not decode with the vault key: %w", err)
	}
	// Prefer a bit inside the data of a write that is the item's only
	// write to its place: a later write in the same item would hide it.
	const tries = 1 << 14
	fallback := -1
	for n := 0; n < min(tries, len(plain)); n++ {
		i := (len(plain)/2 + n) % len(plain)
		plain[i] ^= 1
		out, err := s2.Decode(nil, plain)
		var it *batch.Item
		if err == nil && !bytes.Equal(out, orig) {
			it, _ = batch.Unmarshal(out)
		}
		plain[i] ^= 1
		if it == nil {
			continue
		}
		if fallback < 0 {
			fallback = i
		}
		if onlyWriteChanged(origItem, it) {
			sealed[sealedHeaderLen+i] ^= 1
			return sealedHeaderLen + i, nil
		}
	}
	if fallback < 0 {
		return 0, fmt.Errorf("no bit of the first %d tried decodes to another item", tries)
	}
	sealed[sealedHeaderLen+fallback] ^= 1
	return sealedHeaderLen + fallback, nil
}

// onlyWriteChanged says whether b differs from a only in the data of one
// write record that is a's only write to its disk and offset.
func onlyWriteChanged(a, b *batch.Item) bool {
	if a.Kind != batch.KindLog || len(a.Records) != len(b.Records) {
		return false
	}
	changed := -1
	for i := range a.Records {
		ra, rb := a.Records[i], b.Records[i]
		if ra.Seq != rb.Seq || ra.Type != rb.Type || ra.Disk != rb.Disk || ra.Off != rb.Off || ra.BookmarkID != rb.BookmarkID || ra.UnixNano != rb.UnixNano {
			return false
		}
		if !bytes.Equal(ra.Data, rb.Data) {
			if changed >= 0 || ra.Type != batch.RecWrite {
				return false
			}
			changed = i
		}
	}
	if changed < 0 {
		return false
	}
	for i, r := range a.Records {
		if i != changed && r.Type == batch.RecWrite && r.Disk == a.Records[changed].Disk && r.Off < a.Records[changed].Off+int64(len(a.Records[changed].Data)) && a.Records[changed].Off < r.Off+int64(len(r.Data)) {
			return false
		}
	}
	return true
}
