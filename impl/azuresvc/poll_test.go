package azuresvc

import (
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
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

// TestDeferredWritesCoalesce: log items of writes only wait for the item
// with the next bookmark and are applied with it, in fewer page writes and
// catalog puts than one by one, to the same replica and points; a run
// whose next item never comes is applied after DeferFor.
func TestDeferredWritesCoalesce(t *testing.T) {
	type counts struct{ writes, puts int }
	run := func(t *testing.T, deferFor time.Duration) counts {
		var mu sync.Mutex
		var c counts
		store := &hookStore{Store: memStore(), hook: func(op, container, _ string) error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case op == "WritePages":
				c.writes++
			case op == "Put" && container == catalogContainer(testPrefix):
				c.puts++
			}
			return nil
		}}
		d := runtimetest.New(t, azAddr, New(Config{Store: store, ContainerPrefix: testPrefix, Key: testKey, DeferFor: deferFor}))
		m := newModel("db01")
		items := []*batch.Item{m.syncStart(1 << 20), m.chunk(0, batch.Run{Off: 0, Data: m.data(64 << 10)}), m.syncEnd(1)}
		upload(t, store, items...)
		hint(d, "db01", last(items))
		mu.Lock()
		c = counts{}
		mu.Unlock()
		// Five items rewrite the same two pages, then a bookmark.
		for i := 0; i < 5; i++ {
			it := m.log(m.write(0, 8192, m.data(4096)), m.write(0, 65536, m.data(512)))
			upload(t, store, it)
			hint(d, "db01", it.Seq)
			d.Advance(50 * time.Second)
		}
		it := m.log(m.write(0, 12288, m.data(4096)), m.bookmark(proto.Crash, "db01-c-1", runtimetest.Epoch.Add(5*time.Minute)))
		upload(t, store, it)
		hint(d, "db01", it.Seq)
		checkReplica(t, store, m)
		checkPoints(t, store, m)
		// A run with no item after it.
		tail := m.log(m.write(0, 0, m.data(4096)))
		upload(t, store, tail)
		hint(d, "db01", tail.Seq)
		if got := service(d).Status().Machines[0]; deferFor > 0 && got.Applied != it.Seq {
			t.Errorf("applied %d before DeferFor, want %d (the run waits)", got.Applied, it.Seq)
		}
		d.Advance(max(deferFor, 0) + DefaultPollEvery)
		checkReplica(t, store, m)
		if got := service(d).Status().Machines[0]; got.Applied != tail.Seq || got.Waiting != 0 {
			t.Errorf("applied %d waiting %d after DeferFor, want %d 0", got.Applied, got.Waiting, tail.Seq)
		}
		if got := cacheBlobs(t, store); len(got) != 0 {
			t.Errorf("cache still holds %v", got)
		}
		mu.Lock()
		defer mu.Unlock()
		return c
	}
	var one, deferred counts
	t.Run("one by one", func(t *testing.T) { one = run(t, -1) })
	t.Run("deferred", func(t *testing.T) { deferred = run(t, DefaultDeferFor) })
	// One by one: 2 writes and 1 catalog put for each of the 5, 1 write
	// and 2 puts (point, item) for the bookmark's item, 1 and 1 for the
	// tail. Deferred: the 6 items' writes coalesced, 2 puts; the
	// tail alone.
	if want := (counts{writes: 12, puts: 8}); one != want {
		t.Errorf("one by one: %+v, want %+v", one, want)
	}
	if want := (counts{writes: 3, puts: 3}); deferred != want {
		t.Errorf("deferred: %+v, want %+v", deferred, want)
	}
}

// TestHintFarAheadLists: a hint far past the applied item (the stream
// went on past items lost with the process server's cache) is not
// enumerated item by item: the service lists the cache, once.
func TestHintFarAheadLists(t *testing.T) {
	var c listCounter
	store := &hookStore{Store: memStore(), hook: c.hook}
	d := startPolling(t, store, 0)
	m := newModel("db01")
	items := stream(m)
	upload(t, store, items...)
	hint(d, "db01", last(items))
	checkReplica(t, store, m)
	c.take()
	var gets int
	store.hook = func(op, _, _ string) error {
		if op == "Get" {
			gets++
		}
		return c.hook(op, "", "")
	}
	hint(d, "db01", last(items)+1_000_000)
	if n, g := c.take(), gets; n != 2 || g != 0 {
		t.Errorf("a hint 1,000,000 items ahead: %d List calls and %d gets, want 2 (one listing) and 0", n, g)
	}
}
