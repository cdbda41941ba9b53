package azuresvc

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto/prototest"
)

// TestBlockSumContract runs proto's shared block-checksum fixture through
// the Azure side's own checksumming of a replica disk (diskSums over a page
// blob): a disk that is just the case's block (the short one is a disk's
// short last block) sums to the fixture's checksum. The agent passes the
// same cases (agent.TestBlockSumContract).
func TestBlockSumContract(t *testing.T) {
	ctx := context.Background()
	store := memStore()
	c := replicaContainer(testPrefix)
	if err := store.CreateContainer(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, tc := range prototest.BlockSumCases() {
		name := "contract/" + tc.Name
		size := int64(len(tc.Block))
		if _, err := store.CreatePageBlob(ctx, c, name, size, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := store.WritePages(ctx, c, name, 0, tc.Block, blob.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		d := diskRanges{Disk: Disk{Index: 0, Size: size, Blob: name}, Ranges: []blob.Range{{Offset: 0, Length: size}}}
		sums, err := diskSums(ctx, store, c, d)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(sums); got != tc.Sum {
			t.Errorf("%s: the Azure side sums %s, the contract says %s", tc.Name, got, tc.Sum)
		}
	}
}
