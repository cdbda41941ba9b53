package daemon

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/hrl"
)

// replay rebuilds a disk's block digests from a history file, up to and
// including write count k of boot 1 (k 0: every write).
func replay(t *testing.T, path string, blocks int, k uint64) (digests []string, writes int) {
	t.Helper()
	zero := sha256.Sum256(make([]byte, 4096))
	digests = make([]string, blocks)
	for i := range digests {
		digests[i] = hex.EncodeToString(zero[:16])
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lastK, lastSeq uint64
	for sc.Scan() {
		var r HistoryRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.K != lastK+1 {
			t.Fatalf("history: write %d follows %d", r.K, lastK)
		}
		if r.Seq == 0 || r.Seq <= lastSeq {
			t.Fatalf("history: write %d has seq %d after %d (every write is tracked, in order)", r.K, r.Seq, lastSeq)
		}
		lastK, lastSeq = r.K, r.Seq
		if k != 0 && r.K > k {
			continue
		}
		for i, d := range r.Blocks {
			digests[int(r.Off/4096)+i] = d
		}
		writes++
	}
	return digests, writes
}

func imageDigests(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(b)/4096)
	for i := range out {
		s := sha256.Sum256(b[i*4096 : (i+1)*4096])
		out[i] = hex.EncodeToString(s[:16])
	}
	return out
}

// TestGuestHistory: a bank workload on the real clock writes through an
// attached filter, nothing before it is attached; every acknowledged write
// is in the history in order with its change-log sequence number, and
// replaying the history gives the disk image exactly. Negative control:
// the history without its last write does not give the image.
func TestGuestHistory(t *testing.T) {
	dir := t.TempDir()
	img, hist := filepath.Join(dir, "disk0.img"), filepath.Join(dir, "history.jsonl")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g, err := openGuest(log, "db01", []string{img}, 1<<20, "bank", 200, hist)
	if err != nil {
		t.Fatal(err)
	}
	g.start(7)
	time.Sleep(100 * time.Millisecond)
	if _, w := g.Written(); w != 0 {
		t.Fatalf("%d writes before the filter was attached: they would go untracked", w)
	}
	f, _, err := agent.OpenFilter(dir, "db01", agent.FilterOptions{Log: hrl.Options{SyncEveryAppend: true}})
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(f)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, w := g.Written(); w >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bank wrote fewer than 50 writes in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, writes := g.m.Written()
	got := imageDigests(t, img)
	want, n := replay(t, hist, len(got), 0)
	if int64(n) != writes {
		t.Fatalf("history has %d writes, the guest wrote %d", n, writes)
	}
	for b := range got {
		if got[b] != want[b] {
			t.Fatalf("block %d of the image is not what the history says", b)
		}
	}
	short, _ := replay(t, hist, len(got), uint64(n-1))
	same := true
	for b := range got {
		same = same && got[b] == short[b]
	}
	if same {
		t.Error("negative control: the history without its last write also gives the image; the replay judges nothing")
	}
}

// TestGuestOrders: the orders workload spans three machines; one agent
// process refuses it clearly.
func TestGuestOrders(t *testing.T) {
	dir := t.TempDir()
	_, err := openGuest(slog.New(slog.NewTextHandler(io.Discard, nil)), "db01", []string{filepath.Join(dir, "d")}, 1<<20, "orders", 1, filepath.Join(dir, "h"))
	if err == nil {
		t.Fatal("orders accepted on one machine")
	}
}
