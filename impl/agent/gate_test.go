package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/proto"
)

// TestExpireKeepsHoldingWhenRevokeFails: at the hold deadline the gate
// must revoke the tag inserted under the hold before it lets writes
// through; when the revoke cannot be appended it keeps holding and says
// so, and a later Expire that can revoke releases.
func TestExpireKeepsHoldingWhenRevokeFails(t *testing.T) {
	f := openTestFilter(t, t.TempDir(), FilterOptions{})
	defer f.Close()
	t0 := time.Unix(1000, 0)
	f.Hold()
	f.SetHoldDeadline(t0.Add(time.Second))
	id := proto.TagID{Group: "g", Kind: proto.Crash, N: 7}.String()
	if _, err := f.InsertBookmark(proto.Crash, id, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := f.Expire(t0); ok || err != nil {
		t.Fatalf("Expire before the deadline: expired=%v err=%v", ok, err)
	}
	real := f.revoke
	fails := 1
	f.revoke = func(id string) (uint64, error) {
		if fails > 0 {
			fails--
			return 0, fmt.Errorf("disk gone")
		}
		return real(id)
	}
	tag, ok, err := f.Expire(t0.Add(time.Second))
	if ok || !errors.Is(err, ErrRevokeFailed) || tag != id {
		t.Fatalf("Expire with a failing revoke: tag=%q expired=%v err=%v; want the tag, not expired, ErrRevokeFailed", tag, ok, err)
	}
	if !f.Holding() || f.Admit() {
		t.Fatal("the gate let writes through although the tag could not be revoked")
	}
	if f.RevokeFailures() != 1 || f.Expired() != 0 {
		t.Errorf("revoke failures %d, expired %d; want 1, 0", f.RevokeFailures(), f.Expired())
	}
	tag, ok, err = f.Expire(t0.Add(2 * time.Second)) // the retry
	if !ok || err != nil || tag != id {
		t.Fatalf("retry: tag=%q expired=%v err=%v", tag, ok, err)
	}
	if f.Holding() || !f.Admit() || f.Expired() != 1 {
		t.Errorf("after the retry: holding=%v admit=%v expired=%d", f.Holding(), f.Admit(), f.Expired())
	}
	// The revoke record is in the log, after the tag.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	recs, err := f.Read(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var revoked bool
	for _, r := range recs {
		if r.Type == hrl.TypeRevoke && r.BookmarkID == id {
			revoked = true
		}
	}
	if !revoked {
		t.Errorf("no revoke record of %s in the log: %+v", id, recs)
	}
}
