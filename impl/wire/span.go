package wire

import "hash/crc32"

// castagnoliPoly is CRC-32C's polynomial, bit-reflected, as hash/crc32
// computes it.
const castagnoliPoly = 0x82f63b78

// SpanCRC returns the CRC-32C of part, a sub-slice of frame's payload
// (sharing frame's memory, as a decoded message's bytes field does), for
// a frame whose CRC is known to be right: one Open accepted, or that a
// runtime opened on arrival. It reads only the frame's other bytes: the
// frame's CRC (its trailer) covers part, and CRC-32C's linearity takes
// the bytes around part away. A receiver that keeps a checksum of the
// megabyte a frame carries (a cache file's record) gets it without a
// second pass over it. ok is false when part is empty or does not lie in
// frame's payload; a frame whose trailer is wrong gives a wrong CRC.
func SpanCRC(frame, part []byte) (crc uint32, ok bool) {
	if len(part) == 0 || len(frame) < headerLen+4+len(part) {
		return 0, false
	}
	end := len(frame) - 4 // the CRC covers frame[:end]
	// Where part starts: a few hundred bytes of the frame at most are not
	// part (a header and the message's other fields), so look for it.
	off := -1
	for i := headerLen; i+len(part) <= end; i++ {
		if &frame[i] == &part[0] {
			off = i
			break
		}
	}
	if off < 0 {
		return 0, false
	}
	// F = crc(P‖D‖S) = x^(8|S|)·crc(P‖D) ⊕ crc(S), and
	// crc(P‖D) = x^(8|D|)·crc(P) ⊕ crc(D), multiplications mod the
	// polynomial: so crc(D) = x^(-8|S|)·(F ⊕ crc(S)) ⊕ x^(8|D|)·crc(P).
	f := uint32(frame[end])<<24 | uint32(frame[end+1])<<16 | uint32(frame[end+2])<<8 | uint32(frame[end+3])
	pre := crc32.Checksum(frame[:off], castagnoli)
	suf := frame[off+len(part) : end]
	pd := f
	if len(suf) > 0 {
		pd = unshift(f^crc32.Checksum(suf, castagnoli), len(suf))
	}
	return pd ^ multModP(xPow8n(int64(len(part))), pre), true
}

// multModP is a·b modulo the polynomial, in the bit-reflected
// representation (zlib's multmodp).
func multModP(a, b uint32) uint32 {
	m, p := uint32(1)<<31, uint32(0)
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ castagnoliPoly
		} else {
			b >>= 1
		}
	}
}

// xPow8n is x^(8n) modulo the polynomial: appending n zero bytes to a
// message multiplies its CRC by it.
func xPow8n(n int64) uint32 {
	p := uint32(1) << 31  // x^0
	sq := uint32(1) << 23 // x^8
	for ; n > 0; n >>= 1 {
		if n&1 != 0 {
			p = multModP(sq, p)
		}
		sq = multModP(sq, sq)
	}
	return p
}

// unshift divides a CRC by x^(8n): it undoes n zero bytes appended to the
// message, one bit at a time (x·b drops b's low bit into the polynomial,
// whose top bit is set, so the top bit of the product says what it was).
func unshift(c uint32, n int) uint32 {
	for range 8 * n {
		if c&(1<<31) != 0 {
			c = (c^castagnoliPoly)<<1 | 1
		} else {
			c <<= 1
		}
	}
	return c
}
