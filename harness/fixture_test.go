package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/fixtures"
)

// TestReadFixture: outside a checkout a fixture path reads the copy built
// into v2a, and a world builds from it; in a checkout the file on disk
// wins; outside one, a path that is not built in is an error that says
// the checkout is missing.
func TestReadFixture(t *testing.T) {
	builtIn, err := fixtures.Read(DefaultTarget)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("outside a checkout", func(t *testing.T) {
		t.Chdir(t.TempDir())
		p, b, err := ReadFixture(DefaultTarget)
		if err != nil || p != DefaultTarget || string(b) != string(builtIn) {
			t.Fatalf("ReadFixture: %q, %d bytes, %v", p, len(b), err)
		}
		if _, _, err := ReadFixture("fixtures/targets/nope.yaml"); err == nil || !strings.Contains(err.Error(), "go.mod") || !strings.Contains(err.Error(), "not built into v2a") {
			t.Errorf("a fixture that is not built in: %v", err)
		}
		if _, _, err := ReadFixture("scenarios/demo.scn"); err == nil || !strings.Contains(err.Error(), "go.mod") {
			t.Errorf("not a fixture: %v", err)
		}
		e, err := New(t.Context(), Options{Seed: 1, MemoryStorage: true, Machines: []string{"web01"}})
		if err != nil {
			t.Fatalf("a world outside the checkout: %v", err)
		}
		defer e.Close()
		if e.Inventory.File != "fixtures/inventory/lab.yaml" || len(e.MachineNames()) != 1 {
			t.Errorf("inventory %s, machines %v", e.Inventory.File, e.MachineNames())
		}
	})
	t.Run("a checkout's file wins", func(t *testing.T) {
		dir := t.TempDir()
		mine := strings.Replace(string(builtIn), "name: sim", "name: edited", 1)
		for p, data := range map[string]string{"go.mod": "module x\n", DefaultTarget: mine} {
			p = filepath.Join(dir, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Chdir(dir)
		tg, err := loadFixtureTarget(DefaultTarget)
		if err != nil || tg.Name != "edited" {
			t.Fatalf("target: %+v, %v", tg, err)
		}
		// A checkout without the file: an error, not the built-in copy.
		if _, _, err := ReadFixture("fixtures/inventory/lab.yaml"); err == nil {
			t.Error("a checkout that lacks the file read the built-in copy")
		}
	})
}
