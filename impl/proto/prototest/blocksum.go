// Package prototest holds fixtures of impl/proto's contracts that every
// side of a contract must pass in its own tests: one definition, tested
// from both ends.
package prototest

import (
	"bytes"

	"github.com/v2a-dr/v2a/impl/proto"
)

// BlockSumCase is one block and the checksum both sides must give it.
type BlockSumCase struct {
	Name  string
	Block []byte // at most proto.ChecksumBlockSize bytes
	// Sum is proto.ChecksumSize bytes, hex, pinned here so that a change
	// of the rule shows as a diff, not as two sides agreeing on new bytes.
	Sum string
}

// BlockSumCases are the blocks whose checksums the agent and the Azure
// side must agree on, including a disk's short last block, which sums as
// the same bytes zero-padded to a whole block (proto.BlockSum's rule). Each
// block is a whole number of sectors (512 bytes), as a disk's end is.
func BlockSumCases() []BlockSumCase {
	full := bytes.Repeat([]byte("v2a!"), proto.ChecksumBlockSize/4)
	short := bytes.Repeat([]byte{0xab}, 3*512) // three sectors: disks are whole sectors
	padded := append(append([]byte(nil), short...), make([]byte, proto.ChecksumBlockSize-len(short))...)
	return []BlockSumCase{
		{Name: "zero block", Block: make([]byte, proto.ChecksumBlockSize), Sum: "ad7facb2586fc6e966c004d7d1d16b02"},
		{Name: "full block", Block: full, Sum: "6c948fd0e41b39b4e9f34429e11862e9"},
		{Name: "short last block", Block: short, Sum: "880acd4f199315bd36f96575250db9bc"},
		{Name: "short block padded", Block: padded, Sum: "880acd4f199315bd36f96575250db9bc"},
	}
}
