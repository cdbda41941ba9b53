package harness

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/klauspost/compress/s2"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/processsrv"
)

// corruptBlob arms a corruption of a machine's next stream item uploaded
// to the cache container:
//
//	fault corrupt-blob vm=NAME [container=cache]
//
// Right after the process server's upload of the machine's next item
// completes — before the Azure side hears of it — one bit of the sealed
// blob's ciphertext is flipped. Arming on the upload (rather than picking a
// blob now) makes the fault hit an item the Azure side has not fetched yet,
// the same one in every run. The bit is chosen the way an attacker who can
// write to storage would choose it (see tamperDecodable): the item still
// decompresses and decodes, with different write data, so that only the
// AES-GCM tag stands between it and the replica.
func (r *Runner) corruptBlob(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if _, ok := r.Env.Machines[vm]; !ok {
		return "", fmt.Errorf("fault corrupt-blob: no machine %q", vm)
	}
	if c := a.str("container", processsrv.CacheContainer); c != processsrv.CacheContainer {
		return "", fmt.Errorf("fault corrupt-blob: container=%s: only the cache container's items can be corrupted", c)
	}
	e := r.Env
	e.Trace.OnLine(HostProcessServer, "done upload "+vm+"/", func() {
		e.Sim.After(0, "fault/corrupt-blob", func() {
			msg, err := d.corruptNewestItem(vm)
			if err != nil {
				e.Trace.Add(e.Sim.Elapsed(), "harness", "error", "fault corrupt-blob: "+err.Error())
				return
			}
			e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", msg)
		})
	})
	return fmt.Sprintf("armed: corrupt-blob of %s's next item uploaded to the cache container\n", vm), nil
}

// corruptNewestItem flips a byte in the middle of the newest item blob of
// vm in the cache container.
func (d *Deployment) corruptNewestItem(vm string) (string, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	c := prefix + processsrv.CacheContainer
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

// deleteSnapshot deletes the replica snapshots behind one recovery point,
// as an operator or a storage fault might:
//
//	fault delete-snapshot vm=NAME [point=ID|oldest]
func (r *Runner) deleteSnapshot(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if err := r.knownMachine("fault delete-snapshot", vm); err != nil {
		return "", err
	}
	if ans, err := d.catalogOrAnswer(vm); ans != "" || err != nil {
		if err == nil {
			err = errors.New(strings.TrimSuffix(ans, "\n"))
		}
		return "", fmt.Errorf("fault delete-snapshot: %w", err)
	}
	cat, err := d.Catalog(vm)
	if err != nil {
		return "", fmt.Errorf("fault delete-snapshot: %w", err)
	}
	if len(cat.Points) == 0 {
		return "", fmt.Errorf("fault delete-snapshot: %s has no recovery points", vm)
	}
	want := a.str("point", "oldest")
	pts := cat.Points
	sort.Slice(pts, func(i, j int) bool { return pts[i].Seq < pts[j].Seq })
	i := 0
	if want != "oldest" {
		i = -1
		for j, p := range pts {
			if p.ID == want {
				i = j
			}
		}
		if i < 0 {
			return "", fmt.Errorf("fault delete-snapshot: %s", d.pointGone(vm, want, len(pts)))
		}
	}
	p := pts[i]
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	for k, s := range p.Snapshots {
		if k >= len(cat.Disks) {
			break
		}
		if err := store.DeleteSnapshot(d.e.ctx, prefix+"replica", cat.Disks[k].Blob, s); err != nil {
			return "", fmt.Errorf("fault delete-snapshot: disk %d of %s: %w", k, vm, err)
		}
	}
	msg := fmt.Sprintf("delete-snapshot %s: deleted the %d snapshot(s) of point %s (%s)", vm, len(p.Snapshots), p.ID, p.Kind)
	r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "fault", msg)
	return msg + "\n", nil
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
