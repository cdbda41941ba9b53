package proto

import (
	"crypto/sha256"
	"fmt"
)

// ChecksumSize is the bytes of one block checksum (SHA-256, truncated).
const ChecksumSize = 16

// ChecksumBlockSize is the unit of replica checksums: the Azure side sums
// the replica in blocks of this size, the agent compares its disk in the
// same blocks (Checksums.BlockSize carries it).
const ChecksumBlockSize = 4096

// BlockSum is the checksum of one block, the one rule both sides follow:
// SHA-256 of the block zero-padded to ChecksumBlockSize, truncated to
// ChecksumSize. Only a disk's last block can be short; padding it with zeros
// is what a replica page blob holds past a disk's end (pages are whole), so
// a short last block that matches the replica compares equal instead of
// being resent every resync. b longer than ChecksumBlockSize is a caller's
// bug and panics.
func BlockSum(b []byte) [ChecksumSize]byte {
	if len(b) > ChecksumBlockSize {
		panic(fmt.Sprintf("proto: BlockSum of %d bytes, over the %d-byte block", len(b), ChecksumBlockSize))
	}
	var full [sha256.Size]byte
	if len(b) == ChecksumBlockSize {
		full = sha256.Sum256(b)
	} else {
		var padded [ChecksumBlockSize]byte
		copy(padded[:], b)
		full = sha256.Sum256(padded[:])
	}
	var sum [ChecksumSize]byte
	copy(sum[:], full[:])
	return sum
}

// ZeroBlockSum is BlockSum of a block of zeros (and of an empty one): the
// checksum of every block a replica never wrote.
var ZeroBlockSum = BlockSum(nil)
