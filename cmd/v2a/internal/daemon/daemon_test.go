package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/v2a-dr/v2a/impl/pki/enroll"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
)

// TestOptionsAreConfigKeys: every flag of every daemon is a config key of
// the same name (a JSON tag of Config), every config key is some daemon's
// flag (or a file-only key), and each daemon's help shows all its flags.
func TestOptionsAreConfigKeys(t *testing.T) {
	tags := map[string]bool{}
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		if tag := ct.Field(i).Tag.Get("json"); tag != "-" {
			tags[tag] = true
		}
	}
	used := map[string]bool{}
	for _, d := range Daemons {
		for _, o := range options(d) {
			if !tags[o.name] {
				t.Errorf("%s: flag --%s is no config key", d, o.name)
			}
			used[o.name] = true
		}
		for _, k := range configOnlyKeys[d] {
			used[k] = true
		}
		help := Command(d).Flags().FlagUsages()
		for _, o := range options(d) {
			if !strings.Contains(help, "--"+o.name+" ") || !strings.Contains(help, o.usage) {
				t.Errorf("%s --help does not document --%s", d, o.name)
			}
		}
	}
	for k := range tags {
		if !used[k] {
			t.Errorf("config key %q belongs to no daemon", k)
		}
	}
}

// TestFlagOverridesFile: a set flag wins over the file, an unset one
// leaves the file's value, and defaults fill what neither gives.
func TestFlagOverridesFile(t *testing.T) {
	p := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(p, []byte("listen: 127.0.0.9:1\nlog-level: debug\npeers: {ps01: 127.0.0.3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flagged := Defaults("configsrv")
	fs := pflag.NewFlagSet("configsrv", pflag.ContinueOnError)
	bind(fs, "configsrv", &flagged)
	if err := fs.Parse([]string{"--config", p, "--listen", "127.0.0.8:2"}); err != nil {
		t.Fatal(err)
	}
	c, err := resolveConfig("configsrv", &flagged, fs.Changed)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.8:2" || c.LogLevel != "debug" || c.Peers["ps01"] != "127.0.0.3" || c.Host != "cs01" {
		t.Errorf("resolved %+v: want the flag's listen, the file's log-level and peers, the default host", c)
	}
}

// TestPeers: a host:port entry wins, a host entry without a port keeps the
// logical port, an unlisted host is dialled by its own name.
func TestPeers(t *testing.T) {
	p, err := parsePeers("x", map[string]string{"ps01": "127.0.0.3", "CS01": "127.0.0.2:8443", "db01:20004": "127.0.0.5:1"})
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[runtime.Addr]string{
		"ps01:9443": "127.0.0.3:9443", "cs01:443": "127.0.0.2:8443", "db01:20004": "127.0.0.5:1", "web01:20004": "web01:20004",
	} {
		if got := p.resolve(a); got != want {
			t.Errorf("resolve(%s) = %s, want %s", a, got, want)
		}
	}
	if _, err := parsePeers("x", map[string]string{"ps01": ""}); !errors.Is(err, ErrConfig) {
		t.Errorf("empty peer address: %v, want ErrConfig", err)
	}
}

// idle is an actor that does nothing.
type idle struct{}

func (idle) Handle(runtime.Context, runtime.Event) {}

func testServe(t *testing.T, comp component, listen string, sig chan os.Signal) (chan error, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c := Defaults("configsrv")
	c.Listen = listen
	done := make(chan error, 1)
	go func() {
		done <- serve(context.Background(), "configsrv", c, log, runtime.RealOptions{Logger: log, StopTimeout: time.Second}, peerMap{}, comp, sig)
	}()
	return done, &logs
}

// TestSecondSignal: a drain that hangs is left at the second signal
// (ErrInterrupted); the first signal's drain completes otherwise.
func TestSecondSignal(t *testing.T) {
	release := make(chan struct{})
	comp := component{addr: "cs01:443", factory: func() runtime.Actor { return idle{} },
		stopping: func() error { <-release; return nil }}
	sig := make(chan os.Signal, 2)
	done, _ := testServe(t, comp, "127.0.0.1:0", sig)
	time.Sleep(100 * time.Millisecond)
	sig <- syscall.SIGTERM
	select {
	case err := <-done:
		t.Fatalf("returned %v while its drain hangs", err)
	case <-time.After(200 * time.Millisecond):
	}
	sig <- syscall.SIGINT
	select {
	case err := <-done:
		if !errors.Is(err, ErrInterrupted) {
			t.Errorf("second signal: %v, want ErrInterrupted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second signal did not end the daemon")
	}
	close(release)

	comp.stopping = nil
	done, logs := testServe(t, comp, "127.0.0.1:0", sig)
	time.Sleep(100 * time.Millisecond)
	sig <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Errorf("drain: %v", err)
	}
	if !strings.Contains(logs.String(), "daemon: drained") {
		t.Errorf("no drain line in:\n%s", logs.String())
	}
}

// TestAddressInUse: a daemon on a taken address fails at once with
// ErrConfig naming the daemon, its logical address and the TCP address.
func TestAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	comp := component{addr: "cs01:443", factory: func() runtime.Actor { return idle{} }}
	done, _ := testServe(t, comp, ln.Addr().String(), make(chan os.Signal))
	select {
	case err := <-done:
		want := "configsrv (cs01:443) cannot listen on " + ln.Addr().String() + ": address already in use"
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want ErrConfig with %q", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a daemon on a taken address kept running")
	}
}

// TestRetryUnreachable: enrollment is tried again while the configuration
// server does not answer, logged each time; a refusal is final at once;
// the deadline ends the waiting with the last error.
func TestRetryUnreachable(t *testing.T) {
	unreachable := fmt.Errorf("%w: GET https://cs01:8443/: connection refused", enroll.ErrUnreachable)
	for _, c := range []struct {
		name      string
		errs      []error // one per try; past the end: unreachable
		timeout   time.Duration
		wantTries int
		wantErr   error
	}{
		{"answers at the third try", []error{unreachable, unreachable, nil}, 10 * time.Second, 3, nil},
		{"refused: no retry", []error{enroll.ErrWrongPassphrase}, 10 * time.Second, 1, enroll.ErrWrongPassphrase},
		{"never answers", nil, 600 * time.Millisecond, 0, enroll.ErrUnreachable},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			tries := 0
			err := retryUnreachable(ctx, log, "https://cs01:8443", func() error {
				tries++
				if tries <= len(c.errs) {
					return c.errs[tries-1]
				}
				return unreachable
			})
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if c.wantTries > 0 && tries != c.wantTries {
				t.Errorf("%d tries, want %d", tries, c.wantTries)
			}
			if c.wantTries == 0 && tries < 2 {
				t.Errorf("%d tries before the deadline, want several", tries)
			}
			// Every unreachable try is logged; the last try of a success
			// or a refusal is not.
			wantLogs := tries - 1
			if c.wantErr == enroll.ErrUnreachable {
				wantLogs = tries
			}
			if retries := strings.Count(logs.String(), "enrolling again"); retries != wantLogs {
				t.Errorf("%d retries logged for %d tries:\n%s", retries, tries, logs.String())
			}
		})
	}
}

// TestAzureTuning: the Azure side's poll and deferral flags reach its
// configuration; unset, they leave the service's defaults (zero) to it.
func TestAzureTuning(t *testing.T) {
	for _, tc := range []struct {
		args                         []string
		pollEvery, pollMax, deferFor time.Duration
	}{
		{nil, 0, 0, 0},
		{[]string{"--poll-every", "5s", "--poll-max", "1m", "--defer-for", "-1s"}, 5 * time.Second, time.Minute, -time.Second},
	} {
		flagged := Defaults("azuresvc")
		fs := pflag.NewFlagSet("azuresvc", pflag.ContinueOnError)
		bind(fs, "azuresvc", &flagged)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		c, err := resolveConfig("azuresvc", &flagged, fs.Changed)
		if err != nil {
			t.Fatal(err)
		}
		got := azureConfig(c, nil, vault.Keys{})
		if got.PollEvery != tc.pollEvery || got.PollMax != tc.pollMax || got.DeferFor != tc.deferFor {
			t.Errorf("%v: poll-every %v poll-max %v defer-for %v, want %v %v %v", tc.args,
				got.PollEvery, got.PollMax, got.DeferFor, tc.pollEvery, tc.pollMax, tc.deferFor)
		}
	}
}
