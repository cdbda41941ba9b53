package swarm

import (
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/v2a-dr/v2a/harness"
)

// TestGenerate: a plan is a pure function of its seed, and every plan is
// a script the runner parses, that builds its world first and ends with
// the liveness and safety checks.
func TestGenerate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		p := Generate(seed)
		if again := Generate(seed); again.Script != p.Script {
			t.Fatalf("seed %d drew two different scripts", seed)
		}
		s, err := harness.NewScript("gen.scn", []byte(p.Script))
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, p.Script)
		}
		ds := s.Directives
		if ds[0].Cmd != "world" || !strings.Contains(p.Script, "inventory="+Inventory) {
			t.Fatalf("seed %d: the script does not start with the swarm's world: %s", seed, ds[0].Cmd)
		}
		if n := len(p.Machines); n < 1 || n > len(VMs)+len(Physical) {
			t.Fatalf("seed %d: %d machines", seed, n)
		}
		if len(p.Groups) > 2 {
			t.Fatalf("seed %d: %d groups", seed, len(p.Groups))
		}
		for _, g := range p.Groups {
			for _, m := range g {
				if slices.Contains(Physical, m) {
					t.Fatalf("seed %d: physical server %s in a group", seed, m)
				}
			}
		}
		for _, k := range p.Used {
			if !slices.Contains(p.Kinds, k) {
				t.Fatalf("seed %d: injects %s, which it did not enable (%v)", seed, k, p.Kinds)
			}
		}
		conv := -1
		for i, d := range ds {
			if d.Cmd == "check" && strings.Contains(d.Args[0].String(), "converged") {
				conv = i
			}
		}
		if conv < 0 || conv+1 >= len(ds) || ds[conv+1].Cmd != "check" || !strings.Contains(ds[conv+1].Args[0].String(), "points") {
			t.Fatalf("seed %d: no check converged followed by the safety checks", seed)
		}
		drill := slices.Contains(p.Used, KindTestFailover)
		if tail := ds[len(ds)-1]; drill != (tail.Cmd == "check" && strings.Contains(tail.Args[0].String(), "leftovers")) {
			t.Fatalf("seed %d: drill %v, but the script ends with %s %s", seed, drill, tail.Cmd, tail.Args[0].String())
		}
		if !drill && conv+2 != len(ds) {
			t.Fatalf("seed %d: commands after the final checks", seed)
		}
		// Every fault injected is healed before the liveness phase: after
		// `fault heal` no fault but switching link faults off and a
		// deleted snapshot (which the system must notice) follows.
		heal := -1
		for i, d := range ds {
			if d.Cmd == "fault" && d.Args[0].Key == "heal" {
				heal = i
			}
		}
		if heal < 0 && len(p.Used) > 0 {
			t.Fatalf("seed %d: faults, and no fault heal", seed)
		}
		for _, d := range ds[heal+1:] {
			if d.Cmd != "fault" {
				continue
			}
			a := d.Args[0].Key
			off := strings.HasSuffix(d.Args[len(d.Args)-1].String(), "=0") || strings.HasSuffix(d.Args[len(d.Args)-1].String(), "=0s")
			if a != "delete-snapshot" && !off {
				t.Fatalf("seed %d: fault %s after the last heal", seed, a)
			}
		}
	})
}

// TestGenerateDiffers: seeds draw different worlds, and together the
// first hundred use every fault kind.
func TestGenerateDiffers(t *testing.T) {
	used := map[string]bool{}
	scripts := map[string]uint64{}
	large := 0
	for s := uint64(1); s <= 100; s++ {
		p := Generate(s)
		if o, ok := scripts[p.Script]; ok {
			t.Fatalf("seeds %d and %d drew the same script", o, s)
		}
		scripts[p.Script] = s
		for _, k := range p.Used {
			used[k] = true
		}
		if len(p.Machines) > 3 {
			large++
		}
	}
	for _, k := range Kinds {
		if !used[k] {
			t.Errorf("no seed of 1..100 injects %s", k)
		}
	}
	if large == 0 {
		t.Error("no seed of 1..100 draws more than 3 machines")
	}
}

// TestSeeds: the shards of a range are disjoint and cover it.
func TestSeeds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		from := rapid.Uint64Range(0, 1000).Draw(t, "from")
		to := from + rapid.Uint64Range(0, 300).Draw(t, "len")
		n := rapid.Uint64Range(1, 12).Draw(t, "n")
		seen := map[uint64]uint64{}
		for i := uint64(0); i < n; i++ {
			for _, s := range Seeds(from, to, i, n) {
				if s%n != i {
					t.Fatalf("shard %d/%d took seed %d", i, n, s)
				}
				if o, ok := seen[s]; ok {
					t.Fatalf("seed %d in shards %d and %d", s, o, i)
				}
				seen[s] = i
			}
		}
		if uint64(len(seen)) != to-from+1 {
			t.Fatalf("shards of %d..%d cover %d seeds", from, to, len(seen))
		}
	})
}

func TestParseShard(t *testing.T) {
	for _, tt := range []struct {
		in   string
		i, n uint64
		ok   bool
	}{
		{"0/1", 0, 1, true}, {"3/8", 3, 8, true}, {"8/8", 0, 0, false}, {"1/0", 0, 0, false},
		{"a/b", 0, 0, false}, {"1", 0, 0, false}, {"1/8x", 0, 0, false}, {"-1/8", 0, 0, false},
	} {
		i, n, err := ParseShard(tt.in)
		if (err == nil) != tt.ok || i != tt.i || n != tt.n {
			t.Errorf("ParseShard(%q) = %d, %d, %v", tt.in, i, n, err)
		}
	}
}
