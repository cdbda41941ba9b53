package proto_test

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/proto/prototest"
	"github.com/v2a-dr/v2a/impl/wire"
)

func TestCacheBlobNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		machine string
		seq     uint64
	}{{"db01", 0}, {"db01", 1}, {"web-01.corp", 1<<64 - 1}, {"a/b", 42}} {
		name := proto.CacheBlobName(tc.machine, tc.seq)
		m, seq, err := proto.ParseCacheBlobName(name)
		if err != nil || m != tc.machine || seq != tc.seq {
			t.Errorf("ParseCacheBlobName(%q) = %q, %d, %v; want %q, %d", name, m, seq, err, tc.machine, tc.seq)
		}
	}
	if got := proto.CacheBlobName("db01", 7); got != "db01/00000000000000000007" {
		t.Errorf("CacheBlobName = %q: the stored name changed", got)
	}
	// Lexical order is stream order.
	if a, b := proto.CacheBlobName("m", 9), proto.CacheBlobName("m", 10); a >= b {
		t.Errorf("%q sorts after %q", a, b)
	}
}

func TestParseCacheBlobNameRejects(t *testing.T) {
	for _, name := range []string{"", "db01", "/00000000000000000001", "db01/1", "db01/0000000000000000000x",
		"db01/+0000000000000000001", "db01/000000000000000000001", "db01/99999999999999999999", "db01.json"} {
		if _, _, err := proto.ParseCacheBlobName(name); err == nil || !strings.HasPrefix(err.Error(), "proto: ") {
			t.Errorf("ParseCacheBlobName(%q) = %v, want a proto: error", name, err)
		}
	}
}

func TestConsistency(t *testing.T) {
	for _, k := range []proto.Consistency{0, proto.Crash, proto.App} {
		got, err := proto.ParseConsistency(k.String())
		if err != nil || got != k {
			t.Errorf("ParseConsistency(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	// The encodings are fixed: .hrl and stream items store the number,
	// messages and catalogs the text.
	if proto.Crash != 1 || proto.App != 2 || proto.Crash.String() != "crash" || proto.App.String() != "app" {
		t.Fatal("a stored encoding of Consistency changed")
	}
	for _, s := range []string{"crash-consistent", "c", "App", "none"} {
		if _, err := proto.ParseConsistency(s); err == nil || !strings.HasPrefix(err.Error(), "proto: ") {
			t.Errorf("ParseConsistency(%q) = %v, want a proto: error", s, err)
		}
	}
	type doc struct {
		Kind proto.Consistency `json:"kind"`
	}
	b, err := json.Marshal(doc{proto.App})
	if err != nil || string(b) != `{"kind":"app"}` {
		t.Fatalf("json = %s, %v", b, err)
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"kind":"crash"}`), &d); err != nil || d.Kind != proto.Crash {
		t.Fatalf("json decode = %v, %v", d.Kind, err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"warm"}`), &d); err == nil {
		t.Fatal("json decode of an unknown kind did not fail")
	}
	if _, err := json.Marshal(doc{proto.Consistency(9)}); err == nil {
		t.Fatal("json encode of an invalid kind did not fail")
	}
}

func TestTagIDRoundTrip(t *testing.T) {
	for _, id := range []proto.TagID{{"orders", proto.Crash, 1700000000123}, {"g1", proto.App, 0}, {"a:b-c-7", proto.Crash, 5}} {
		s := id.String()
		got, err := proto.ParseTagID(s)
		if err != nil || got != id {
			t.Errorf("ParseTagID(%q) = %+v, %v; want %+v", s, got, err, id)
		}
		if !proto.IsTagOf(id.Group, s) || proto.IsTagOf(id.Group+"x", s) || proto.IsTagOf("", s) {
			t.Errorf("IsTagOf wrong for %q", s)
		}
	}
	if got := (proto.TagID{"orders", proto.App, 12}).String(); got != "orders:a:12" {
		t.Errorf("TagID text = %q", got)
	}
}

func TestParseTagIDRejects(t *testing.T) {
	for _, s := range []string{"", "orders", ":c:5", "orders:x:5", "orders:c:", "orders:c:-1", "orders:c:5a", "orders-c-5", "orders:cc:5"} {
		if _, err := proto.ParseTagID(s); err == nil || !strings.HasPrefix(err.Error(), "proto: ") {
			t.Errorf("ParseTagID(%q) = %v, want a proto: error", s, err)
		}
	}
}

// A machine named like its group — or like anything — never has a per-VM
// bookmark that reads as a group tag (the old shared "<name>-c-<n>" shape
// misread exactly this).
func TestPerVMBookmarkNeverATag(t *testing.T) {
	for _, machine := range []string{"orders", "orders:c:5", "g1:a", "x:", ":"} {
		for _, k := range []proto.Consistency{proto.Crash, proto.App} {
			id := proto.BookmarkID(machine, k, 42)
			if _, err := proto.ParseTagID(id); err == nil {
				t.Errorf("per-VM bookmark %q parses as a tag id", id)
			}
			if proto.IsTagOf(machine, id) {
				t.Errorf("per-VM bookmark %q of machine %q reads as a tag of group %q", id, machine, machine)
			}
		}
	}
	if got := proto.BookmarkID("db01", proto.App, 9); got != "db01-a-9" {
		t.Errorf("BookmarkID = %q", got)
	}
}

// TestBlockSum pins the one checksum rule; agent and azuresvc run the same
// cases through their own code (prototest.BlockSumCases).
func TestBlockSum(t *testing.T) {
	for _, c := range prototest.BlockSumCases() {
		s := proto.BlockSum(c.Block)
		if got := hex.EncodeToString(s[:]); got != c.Sum {
			t.Errorf("%s: BlockSum = %s, want %s", c.Name, got, c.Sum)
		}
	}
	if proto.BlockSum(nil) != proto.ZeroBlockSum || proto.BlockSum(make([]byte, 10)) != proto.ZeroBlockSum {
		t.Error("a short zero block does not sum as a zero block")
	}
	defer func() {
		if recover() == nil {
			t.Error("BlockSum of an over-long block did not panic")
		}
	}()
	proto.BlockSum(make([]byte, proto.ChecksumBlockSize+1))
}

// A message carrying a kind no side knows does not decode: the wire carries
// the kind's number, and only 0 (none), crash and app are kinds.
func TestMessageWithUnknownKindRefused(t *testing.T) {
	for _, m := range []wire.Msg{
		&proto.Tag{Group: "g", TagID: "g:c:1", Kind: proto.Consistency(7), Phase: proto.PhaseBegin},
		&proto.TagRound{Group: "g", TagID: "g:c:1", Kind: proto.Consistency(7)},
		&proto.ReplicaEvent{Machine: "m", Event: proto.EventPoint, Kind: proto.Consistency(7)},
	} {
		if _, err := wire.Decode(wire.Encode(m)); err == nil || !strings.Contains(err.Error(), "proto: unknown consistency") {
			t.Errorf("%T with kind 7 decoded: %v", m, err)
		}
	}
}
