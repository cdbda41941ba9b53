package agent

import (
	"encoding/hex"
	"testing"

	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/proto/prototest"
)

// memDev is a Device over a byte slice.
type memDev []byte

func (d memDev) ReadAt(p []byte, off int64) (int, error)  { return copy(p, d[off:]), nil }
func (d memDev) WriteAt(p []byte, off int64) (int, error) { return copy(d[off:], p), nil }
func (d memDev) Size() int64                              { return int64(len(d)) }

var _ blockdev.Device = memDev(nil)

// TestBlockSumContract runs proto's shared block-checksum fixture through
// the agent's own comparison: a disk that is just the case's block (the
// short one is a disk's short last block) is in sync with a replica whose
// checksum is the fixture's, and out of sync with any other. The Azure side
// passes the same cases (azuresvc.TestBlockSumContract).
func TestBlockSumContract(t *testing.T) {
	for _, c := range prototest.BlockSumCases() {
		want, err := hex.DecodeString(c.Sum)
		if err != nil || len(want) != proto.ChecksumSize {
			t.Fatalf("%s: fixture sum %q", c.Name, c.Sum)
		}
		dev := memDev(append([]byte(nil), c.Block...))
		runs, err := compareRegion(dev, 0, dev.Size(), false, want, []bool{true})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 0 {
			t.Errorf("%s: the agent resends a block whose replica checksum is the contract's", c.Name)
		}
		other := append([]byte(nil), want...)
		other[0] ^= 1
		runs, err = compareRegion(dev, 0, dev.Size(), false, other, []bool{true})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 1 || len(runs[0].Data) != len(c.Block) {
			t.Errorf("%s: a differing checksum sent runs %v, want the whole block", c.Name, runs)
		}
	}
}
