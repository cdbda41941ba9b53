package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// A world directory whose owner died (a SIGKILLed run) is swept by the next
// world; one whose owner lives (a run beside it), or with no owner file, is
// left alone.
func TestSweepStaleWorlds(t *testing.T) {
	base := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("cannot run true to get a dead pid: %v", err)
	}
	mk := func(name, owner string) string {
		d := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Join(d, "guests"), 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(owner+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	stale := mk("v2a-world-stale", strconv.Itoa(dead.Process.Pid))
	live := mk("v2a-world-live", strconv.Itoa(os.Getpid()))
	unowned := mk("v2a-world-unowned", "")
	other := mk("not-a-world", strconv.Itoa(dead.Process.Pid))

	dir, err := makeWorldDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir  string
		want bool
	}{{stale, false}, {live, true}, {unowned, true}, {other, true}, {dir, true}} {
		_, err := os.Stat(c.dir)
		if got := err == nil; got != c.want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(c.dir), got, c.want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("owner file of a new world: %q, %v", b, err)
	}
}
