// Package browser drives a headless Chromium for the tests that look at
// v2a's pages (the HTML report, the dashboard) as a person would: it finds
// the binary, starts it with a throw-away profile and bounded timeouts,
// runs chromedp actions, and takes screenshots.
//
// Chromium is a tool of the test suite like Azurite: `make tools` installs
// Debian's chromium where none is found. A test that needs it fails when
// it is missing (ForTest), and skips only under -short.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvChromium names the environment variable that overrides where the
// Chromium (or Chrome) binary is.
const EnvChromium = "V2A_CHROMIUM"

// EnvScreenshotDir names the environment variable of the directory tests
// write their screenshots to (OutDir); by default testdata/out of the
// test's package, which git ignores.
const EnvScreenshotDir = "V2A_SCREENSHOT_DIR"

// ErrNoChromium is returned by Find when there is no browser to drive.
var ErrNoChromium = errors.New("browser: no Chromium found (install it with `make tools`, or set " + EnvChromium + ")")

// candidates are the names a Chromium or Chrome goes by on PATH.
var candidates = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"}

// Find returns the path of the browser binary: $V2A_CHROMIUM when set
// (it must exist and be executable), else the first of candidates on PATH.
func Find() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("browser: %s=%s: %w", EnvChromium, p, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("browser: %s=%s: not an executable file", EnvChromium, p)
		}
		return p, nil
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Options are how a browser is started.
type Options struct {
	// Width and Height are the window's size in pixels (1100×900 when 0).
	Width, Height int
	// StartTimeout bounds the start (30 s when 0), Timeout each Run (60 s
	// when 0): a hung browser fails a test, it does not hang it.
	StartTimeout, Timeout time.Duration
}

// Browser is one headless Chromium with one tab.
type Browser struct {
	Path    string // the binary
	timeout time.Duration
	profile string
	ctx     context.Context
	cancel  []context.CancelFunc
}

// Start starts a headless browser with a fresh temporary profile
// (--no-sandbox when running as root, as in CI containers). Close it.
func Start(ctx context.Context, o Options) (*Browser, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	if o.Width == 0 {
		o.Width, o.Height = 1100, 900
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	profile, err := os.MkdirTemp("", "v2a-chromium-*")
	if err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.DisableGPU,
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	b := &Browser{Path: bin, timeout: o.Timeout, profile: profile}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	b.cancel = append(b.cancel, acancel)
	tctx, tcancel := chromedp.NewContext(actx)
	b.cancel = append(b.cancel, tcancel)
	b.ctx = tctx
	// The first action starts the process. Its context must not carry a
	// timeout (chromedp ties the browser's life to it), so the bound is
	// kept here: past it, the browser is killed.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(tctx) }()
	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case err = <-started:
	case <-timer.C:
		err = fmt.Errorf("no answer after %s", o.StartTimeout)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("browser: start %s: %w", bin, err)
	}
	return b, nil
}

// Run runs one chromedp action in b's tab, bounded by b's timeout, and
// returns its value.
func Run[T any](b *Browser, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		return v, fmt.Errorf("browser: %w", err)
	}
	return v, nil
}

// Do runs actions that return nothing, in order, bounded by the timeout.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) error {
	_, err := Run(b, chromedp.Steps(actions...))
	return err
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func Eval[T any](b *Browser, expr string) (T, error) {
	return Run(b, chromedp.Evaluate[T](expr))
}

// Navigate loads url and waits for its body.
func (b *Browser) Navigate(url string) error {
	return b.Do(chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("body")))
}

// Screenshot writes a PNG of the whole page to path.
func (b *Browser) Screenshot(path string) error {
	png, err := Run(b, chromedp.FullScreenshot(100))
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return fmt.Errorf("browser: %w", err)
	}
	return nil
}

// Close stops the browser and removes its profile.
func (b *Browser) Close() {
	for i := len(b.cancel) - 1; i >= 0; i-- {
		b.cancel[i]()
	}
	b.cancel = nil
	if b.profile != "" {
		os.RemoveAll(b.profile)
		b.profile = ""
	}
}

// ForTest starts a browser for a test and closes it when the test ends.
// Without Chromium the test fails, saying how to get one; under -short it
// is skipped instead.
func ForTest(t testing.TB, o Options) *Browser {
	t.Helper()
	if _, err := Find(); err != nil {
		if testing.Short() {
			t.Skipf("-short: %v", err)
		}
		t.Fatal(err)
	}
	b, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// OutDir is the directory a test writes its screenshots to:
// $V2A_SCREENSHOT_DIR, else testdata/out in the test's package directory
// (ignored by git). It is created.
func OutDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvScreenshotDir)
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
