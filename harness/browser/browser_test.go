package browser

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindOverride(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "chromium")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "chrome")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, env, want, err string
	}{
		{"missing", filepath.Join(dir, "nope"), "", "no such file"},
		{"a directory", dir, "", "not an executable file"},
		{"not executable", notExec, "", "not an executable file"},
		{"executable", exe, exe, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(EnvChromium, c.env)
			got, err := Find()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), EnvChromium) {
					t.Fatalf("Find() = %q, %v; want an error naming %s with %q", got, err, EnvChromium, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("Find() = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestFindNothing(t *testing.T) {
	t.Setenv(EnvChromium, "")
	t.Setenv("PATH", t.TempDir())
	if _, err := Find(); !errors.Is(err, ErrNoChromium) {
		t.Fatalf("Find() with an empty PATH: %v, want ErrNoChromium", err)
	}
}

// TestBrowser drives the real browser: a page's text read back, and a
// screenshot that is a PNG.
func TestBrowser(t *testing.T) {
	b := ForTest(t, Options{Width: 400, Height: 300})
	page := filepath.Join(t.TempDir(), "p.html")
	if err := os.WriteFile(page, []byte(`<!DOCTYPE html><html><body><p id="x">v2a 42</p><svg><circle class="m"/><circle class="m"/></svg></body></html>`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Navigate("file://" + page); err != nil {
		t.Fatal(err)
	}
	text, err := Eval[string](b, `document.getElementById("x").textContent`)
	if err != nil || text != "v2a 42" {
		t.Fatalf("text = %q, %v; want %q", text, err, "v2a 42")
	}
	n, err := Eval[int](b, `document.querySelectorAll("circle.m").length`)
	if err != nil || n != 2 {
		t.Fatalf("circles = %d, %v; want 2", n, err)
	}
	shot := filepath.Join(t.TempDir(), "p.png")
	if err := b.Screenshot(shot); err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the screenshot is not a PNG (%d bytes)", len(png))
	}
}
