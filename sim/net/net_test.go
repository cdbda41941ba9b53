package net

import (
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func lab(t *testing.T) *Net {
	t.Helper()
	n := New()
	for _, h := range []Host{
		{Name: "vm1", Site: OnPrem},
		{Name: "ps", Site: OnPrem},
		{Name: "blob", Site: Azure, Public: true},
		{Name: "azps", Site: Azure},
	} {
		if err := n.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func TestRoute(t *testing.T) {
	n := lab(t)
	tests := []struct {
		from, to string
		vpn      VPNState
		want     Path
		wantErr  string
	}{
		{"vm1", "vm1", VPNAbsent, PathLocal, ""},
		{"vm1", "ps", VPNAbsent, PathLAN, ""},
		{"ps", "blob", VPNAbsent, PathInternet, ""},
		{"blob", "ps", VPNAbsent, PathInternet, ""},
		{"azps", "ps", VPNAbsent, "", "no-vpn(absent)"},
		{"azps", "ps", VPNDown, "", "no-vpn(down)"},
		{"azps", "ps", VPNUp, PathVPN, ""},
		{"ps", "nowhere", VPNUp, "", "unknown-host:nowhere"},
	}
	for _, tt := range tests {
		n.SetVPN(tt.vpn)
		got, err := n.Route(tt.from, tt.to)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.wantErr {
			t.Errorf("Route(%s, %s) vpn=%s = %q, %q; want %q, %q", tt.from, tt.to, tt.vpn, got, gotErr, tt.want, tt.wantErr)
		}
	}
}

func TestBandwidthQueues(t *testing.T) {
	n := lab(t)
	r := rand.New(rand.NewPCG(1, 2))
	// Two 12.5 MB transfers started together on the 12.5 MB/s uplink: the
	// second waits for the first.
	a1, ok1, _ := n.Transit(t0, "ps", "blob", 12_500_000, r)
	a2, ok2, _ := n.Transit(t0, "ps", "blob", 12_500_000, r)
	got := []time.Duration{a1.Sub(t0), a2.Sub(t0)}
	want := []time.Duration{1020 * time.Millisecond, 2020 * time.Millisecond}
	if !ok1 || !ok2 || !cmp.Equal(got, want) {
		t.Fatalf("arrivals %v (ok %v %v), want %v", got, ok1, ok2, want)
	}
	if b := n.Backlog(t0, PathInternet, OnPrem, Azure); b != 2*time.Second {
		t.Fatalf("backlog %v, want 2s", b)
	}
	// The reverse direction is a separate queue.
	a3, _, _ := n.Transit(t0, "blob", "ps", 0, r)
	if a3.Sub(t0) != 20*time.Millisecond {
		t.Fatalf("reverse arrival %v, want 20ms", a3.Sub(t0))
	}
}

func TestPartitionClogHeal(t *testing.T) {
	n := lab(t)
	r := rand.New(rand.NewPCG(1, 2))
	n.Partition("onprem", "azure")
	if _, ok, why := n.Transit(t0, "ps", "blob", 1, r); ok || why != "partitioned" {
		t.Fatalf("partitioned transit ok=%v why=%q", ok, why)
	}
	if _, ok, _ := n.Transit(t0, "vm1", "ps", 1, r); !ok {
		t.Fatal("a site partition cut the LAN")
	}
	n.Heal()
	if err := n.Clog(PathInternet, OnPrem, Azure, 10, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a, ok, _ := n.Transit(t0, "ps", "blob", 1_250_000, r)
	if !ok || a.Sub(t0) != 1020*time.Millisecond {
		t.Fatalf("clogged arrival %v ok=%v, want 1.02s", a.Sub(t0), ok)
	}
	if err := n.Clog(PathInternet, OnPrem, Azure, 0, t0); err == nil {
		t.Fatal("clog factor 0 accepted")
	}
}

func TestLossIsSeeded(t *testing.T) {
	count := func(seed uint64) int {
		n := lab(t)
		if err := n.SetLink(PathLAN, OnPrem, OnPrem, LinkParams{Latency: time.Millisecond, Loss: 0.3}); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(seed, 0))
		lost := 0
		for i := 0; i < 1000; i++ {
			if _, ok, _ := n.Transit(t0, "vm1", "ps", 100, r); !ok {
				lost++
			}
		}
		return lost
	}
	a, b := count(1), count(1)
	if a != b {
		t.Fatalf("same seed lost %d then %d", a, b)
	}
	if a < 200 || a > 400 {
		t.Fatalf("lost %d of 1000 at 30%% loss", a)
	}
}

func TestAddHostErrors(t *testing.T) {
	n := lab(t)
	for _, h := range []Host{{Name: "", Site: OnPrem}, {Name: "x", Site: "mars"}, {Name: "ps", Site: OnPrem}} {
		if err := n.AddHost(h); err == nil {
			t.Errorf("AddHost(%+v) accepted", h)
		}
	}
}

func TestJitterAndDuplicates(t *testing.T) {
	n := lab(t)
	if err := n.SetLink(PathLAN, OnPrem, OnPrem, LinkParams{Latency: time.Millisecond, Jitter: 10 * time.Millisecond, Dup: 0.5}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	overtaken, dups := 0, 0
	var prev time.Time
	for i := 0; i < 200; i++ {
		a, ok, _ := n.Transit(t0, "vm1", "ps", 0, r)
		if !ok {
			t.Fatal("lost on a lossless link")
		}
		if i > 0 && a.Before(prev) {
			overtaken++
		}
		prev = a
		if _, dup := n.Duplicate("vm1", "ps", r); dup {
			dups++
		}
	}
	if overtaken == 0 {
		t.Error("jitter never reordered two messages")
	}
	if dups < 60 || dups > 140 {
		t.Errorf("%d of 200 duplicated at p=0.5", dups)
	}
	if _, dup := n.Duplicate("ps", "blob", r); dup {
		t.Error("a link without Dup duplicated")
	}
}

func TestReorder(t *testing.T) {
	n := lab(t)
	if err := n.SetLink(PathLAN, OnPrem, OnPrem, LinkParams{Latency: time.Millisecond, Reorder: 0.2, ReorderWindow: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	held := 0
	for i := 0; i < 200; i++ {
		// One message a millisecond: only a held-back one arrives late.
		now := t0.Add(time.Duration(i) * time.Millisecond)
		a, ok, _ := n.Transit(now, "vm1", "ps", 0, r)
		if !ok {
			t.Fatal("lost on a lossless link")
		}
		if late := a.Sub(now) - time.Millisecond; late > 0 {
			held++
			if late > 10*time.Millisecond {
				t.Fatalf("held %s, past the 10ms window", late)
			}
		}
	}
	if held < 20 || held > 60 {
		t.Errorf("%d of 200 held back at p=0.2", held)
	}
}

func TestLinkParamsValidate(t *testing.T) {
	n := lab(t)
	before, _ := n.Link(PathLAN, OnPrem, OnPrem)
	bad := []LinkParams{
		{Loss: 1.5}, {Loss: -1}, {Dup: 2}, {Reorder: -0.1}, {Jitter: -time.Millisecond},
		{Reorder: 0.1, ReorderWindow: -time.Second}, {Latency: -1}, {BytesPerSec: -1},
	}
	for _, lp := range bad {
		if err := n.SetLink(PathLAN, OnPrem, OnPrem, lp); err == nil {
			t.Errorf("SetLink(%+v) accepted", lp)
		}
	}
	if lp, _ := n.Link(PathLAN, OnPrem, OnPrem); lp != before {
		t.Errorf("a refused SetLink changed the link: %+v, was %+v", lp, before)
	}
}

func TestPairsCountBytesByPathAndDirection(t *testing.T) {
	n := New()
	for _, h := range []Host{{Name: "cs01", Site: OnPrem}, {Name: "ps-az", Site: Azure}, {Name: "blob", Site: Azure, Public: true}} {
		if err := n.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(0, 0)
	if _, ok, why := n.Transit(now, "ps-az", "cs01", 100, r); ok {
		t.Fatalf("without a VPN ps-az reached cs01")
	} else if why != "no-vpn(absent)" {
		t.Errorf("reason %q", why)
	}
	n.SetVPN(VPNUp)
	n.Transit(now, "ps-az", "cs01", 100, r)
	n.Transit(now, "cs01", "ps-az", 7, r)
	n.Transit(now, "cs01", "blob", 5, r)
	want := map[PairKey]int64{{PathVPN, "ps-az", "cs01"}: 100, {PathVPN, "cs01", "ps-az"}: 7, {PathInternet, "cs01", "blob"}: 5}
	if got := n.Pairs(); !maps.Equal(got, want) {
		t.Errorf("pairs %v, want %v", got, want)
	}
}
