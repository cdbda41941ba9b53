package main

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/harness/browser"
)

// machinesJS reads the machines table's cells as the browser shows them.
const machinesJS = `Array.from(document.querySelectorAll('#machines tbody tr')).map(tr => Array.from(tr.cells).map(td => td.textContent.trim()))`

// text is an element's text as the page shows it, read at once (the page
// replaces its live part every second).
func text(sel string) chromedp.Action[string] {
	return chromedp.Evaluate[string](`(document.querySelector(` + strconv.Quote(sel) + `) || {innerText: ""}).innerText`)
}

func TestDashboardInBrowser(t *testing.T) {
	b := browser.ForTest(t, browser.Options{Width: 1280, Height: 1400})
	d, srv := startDashboard(t, dashWorld...)

	// The machines table shows the run's numbers: the status view's.
	if err := b.Do(
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#machines tbody tr`)),
	); err != nil {
		t.Fatal(err)
	}
	cells, err := browser.Run(b, chromedp.Evaluate[[][]string](machinesJS))
	if err != nil {
		t.Fatal(err)
	}
	want := statusRows(t, d)
	if len(want) == 0 {
		t.Fatal("the status view has no machines")
	}
	if diff := cmp.Diff(want, cells); diff != "" {
		t.Errorf("machines table in the browser (-status +page):\n%s", diff)
	}

	// Choose db01, click "test failover": its job appears with its steps.
	if err := b.Do(
		chromedp.Click(chromedp.CSS(`#act input[name=vm][value=db01]`)),
		chromedp.Click(chromedp.CSS(`#act-test-failover`)),
		chromedp.WaitVisible(chromedp.CSS(`#job-job-1 table.tasks`)),
	); err != nil {
		t.Fatal(err)
	}
	jobText, err := browser.Run(b, text(`#job-job-1`))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"job-1 test-failover db01: in-progress", "Prerequisites check", "Choose the recovery point"} {
		if !strings.Contains(jobText, s) {
			t.Errorf("job-1 in the browser lacks %q:\n%s", s, jobText)
		}
	}

	// Advance time: the clock moves on, the job runs to its end.
	before, err := browser.Run(b, text(`#elapsed`))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Do(
		chromedp.Click(chromedp.CSS(`#step-10m`)),
		chromedp.WaitVisible(chromedp.CSS(`#job-job-1 p .state-succeeded`)),
	); err != nil {
		t.Fatal(err)
	}
	after, err := browser.Run(b, text(`#elapsed`))
	if err != nil {
		t.Fatal(err)
	}
	if jobText, err = browser.Run(b, text(`#job-job-1`)); err != nil {
		t.Fatal(err)
	}
	if got := parseElapsed(t, after) - parseElapsed(t, before); got != 10*time.Minute {
		t.Errorf("+10 min moved the clock from %s to %s", before, after)
	}
	if !strings.Contains(jobText, "job-1 test-failover db01: succeeded") || !strings.Contains(jobText, "Create and start the virtual machine") {
		t.Errorf("job-1 after 10 minutes:\n%s", jobText)
	}

	// The page follows the world without a reload: time stepped from
	// elsewhere shows within the page's polling.
	if code, _ := post(t, srv, "/time", url.Values{"op": {"step"}, "by": {"1m"}}); code != http.StatusSeeOther {
		t.Fatalf("step: %d", code)
	}
	want1 := parseElapsed(t, after) + time.Minute
	for deadline := time.Now().Add(10 * time.Second); ; {
		now, err := browser.Run(b, text(`#elapsed`))
		if err != nil {
			t.Fatal(err)
		}
		if parseElapsed(t, now) == want1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page still shows %s, 10s after the clock moved a minute past %s", now, after)
		}
		time.Sleep(200 * time.Millisecond)
	}

	p := filepath.Join(browser.OutDir(t), "dashboard.png")
	if err := b.Screenshot(p); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}
