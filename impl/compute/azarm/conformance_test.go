package azarm_test

import (
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute/azarm"
	"github.com/v2a-dr/v2a/impl/compute/azarm/armfake"
	"github.com/v2a-dr/v2a/impl/compute/computetest"
)

// TestConformance runs the port's conformance suite against azarm on the
// stateful fake. Each operation answers twice "in progress" (Begin's answer
// and one poll) before it ends, so the suite also sees operations pending.
// The scope is the whole (fake) subscription: the suite names a group per
// subtest.
func TestConformance(t *testing.T) {
	computetest.Run(t, func(t *testing.T) computetest.Env {
		blobs := memblob.New()
		srv := armfake.New(armfake.Options{Blobs: blobs, BlobEndpoint: blobEndpoint, Polls: 2})
		f, err := azarm.New(azarm.Config{
			SubscriptionID:   srv.SubscriptionID(),
			Location:         "westeurope",
			StorageAccountID: storageID,
			Credential:       &azfake.TokenCredential{},
			ClientOptions: &arm.ClientOptions{ClientOptions: azcore.ClientOptions{
				Transport: srv.Transport(),
				Retry:     policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
			}},
			PollFrequency: time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return computetest.Env{Fabric: f, Store: blobs}
	})
}
