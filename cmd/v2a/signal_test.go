package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a buffer the child's output is copied into while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The built binary, signalled for real: SIGINT and SIGTERM during `run
// for=10000h` stop it promptly with the closing lines, exit 130, and leave
// no world directory; a SIGKILLed run leaves its directory, and the next
// run sweeps it.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary and runs worlds")
	}
	bin := filepath.Join(t.TempDir(), "v2a")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	base := t.TempDir()
	p := script(t, "world seed=5 machines=(db01) workload=bank", "run for=10000h", "check")
	start := func() (*exec.Cmd, *syncBuffer) {
		c := exec.Command(bin, "run", p, "--trace", "none")
		c.Env = append(os.Environ(), "V2A_WORKDIR="+base)
		out := &syncBuffer{}
		c.Stdout, c.Stderr = out, out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(out.String(), "> run for=10000h") && len(worlds(t, base)) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second) // well inside the long run
		return c, out
	}
	wait := func(c *exec.Cmd) int {
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			if err != nil {
				t.Fatal(err)
			}
			return 0
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			t.Fatal("no exit within 30 s of the signal")
		}
		return -1
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		c, out := start()
		if len(worlds(t, base)) != 1 {
			t.Fatalf("%s: want one world directory while running, have %v", sig, worlds(t, base))
		}
		c.Process.Signal(sig)
		if code := wait(c); code != exitIntr {
			t.Errorf("%s: exit %d, want %d\n%s", sig, code, exitIntr, out)
		}
		for _, want := range []string{"interrupted: stopped at ", "checks: ", "trace-sha256: "} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: output lacks %q:\n%s", sig, want, out)
			}
		}
		if left := worlds(t, base); len(left) > 0 {
			t.Errorf("%s: world directories left behind: %v", sig, left)
		}
	}
	c, _ := start()
	c.Process.Kill()
	wait(c)
	left := worlds(t, base)
	if len(left) != 1 {
		t.Fatalf("after SIGKILL: want its world directory left, have %v", left)
	}
	c, _ = start()
	for _, w := range worlds(t, base) {
		if w == left[0] {
			t.Errorf("the next run did not sweep %s, left by a killed run", w)
		}
	}
	c.Process.Signal(syscall.SIGINT)
	wait(c)
	if left := worlds(t, base); len(left) > 0 {
		t.Errorf("world directories left behind: %v", left)
	}
}
