package azuresvc

import (
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
)

// listCounter counts the List calls of a store.
type listCounter struct {
	mu    sync.Mutex
	lists int
}

func (c *listCounter) hook(op, _, _ string) error {
	if op == "List" {
		c.mu.Lock()
		c.lists++
		c.mu.Unlock()
	}
	return nil
}

func (c *listCounter) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lists
	c.lists = 0
	return n
}

func startPolling(t *testing.T, store *hookStore, pollMax time.Duration) *runtimetest.Driver {
	t.Helper()
	return runtimetest.New(t, azAddr, New(Config{Store: store, ContainerPrefix: testPrefix, Key: testKey, PollMax: pollMax}))
}

// TestHintFetchesWithoutListing: a hint names the uploaded items, and the
// service applies them without listing the cache.
func TestHintFetchesWithoutListing(t *testing.T) {
	var c listCounter
	store := &hookStore{Store: memStore(), hook: c.hook}
	d := startPolling(t, store, 0)
	c.take() // the start's listing
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	if n := c.take(); n != 0 {
		t.Errorf("%d listings after a hint, want 0", n)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
	if got := service(d).Status().Machines[0]; got.Applied != last(items) || got.Waiting != 0 {
		t.Errorf("applied %d waiting %d, want %d 0", got.Applied, got.Waiting, last(items))
	}
}

// TestPollBacksOffWhenQuiet: while its listings find nothing new the poll
// lists less and less often, down to one listing every PollMax; an item
// whose hint was lost is still found by the next listing, and the poll
// then lists at PollEvery again.
func TestPollBacksOffWhenQuiet(t *testing.T) {
	var c listCounter
	store := &hookStore{Store: memStore(), hook: c.hook}
	const pollMax = 4 * DefaultPollEvery
	d := startPolling(t, store, pollMax)
	c.take()
	// Listings at 10 (then every 20), 30, 70 (then every 40), 110, 150 s...
	d.Advance(30 * DefaultPollEvery)
	// Each listing is two List calls (cache and catalogs).
	if n := c.take() / 2; n < 7 || n > 10 {
		t.Errorf("%d listings in 30 quiet polls, want 7..10 (backed off to one in 4)", n)
	}
	d.Advance(40 * DefaultPollEvery)
	if n := c.take() / 2; n != 10 {
		t.Errorf("%d listings in 40 quiet polls at most 4 apart, want 10", n)
	}

	// A lost hint: the items are uploaded, no hint comes.
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	applied := func() bool {
		ms := service(d).Status().Machines
		return len(ms) == 1 && ms[0].Applied == last(items)
	}
	for waited := time.Duration(0); !applied(); waited += DefaultPollEvery {
		if waited >= pollMax {
			t.Fatalf("items of a lost hint not applied after %v", waited)
		}
		d.Advance(DefaultPollEvery)
	}
	checkReplica(t, store, m)
	checkPoints(t, store, m)
	// The listing found what no hint announced: back to PollEvery.
	c.take()
	d.Advance(DefaultPollEvery)
	if n := c.take(); n == 0 {
		t.Errorf("no listing at the poll after a listing found unannounced items")
	}
}

// TestNoBackoff: PollMax at or below PollEvery lists at every poll.
func TestNoBackoff(t *testing.T) {
	var c listCounter
	store := &hookStore{Store: memStore(), hook: c.hook}
	d := startPolling(t, store, DefaultPollEvery)
	c.take()
	d.Advance(10 * DefaultPollEvery)
	if n := c.take() / 2; n != 10 {
		t.Errorf("%d listings in 10 polls, want 10", n)
	}
}
