// Package azurite starts an Azurite blob service for tests, the demo and
// benchmarks, and hands back its connection string. It is harness-side
// tooling: it uses the wall clock, processes and goroutines freely.
//
// Three ways to get one, chosen by Options.Mode or else the environment
// variable V2A_AZURITE:
//
//   - local: run sim/azurite/node_modules/.bin/azurite-blob (installed by
//     `make tools`, i.e. `npm ci --prefix sim/azurite --no-audit --no-fund`,
//     pinned to azurite 3.37.0 by package-lock.json) on a free loopback port,
//     in memory, from a temporary working directory.
//   - testcontainers: the Azurite container image, through
//     testcontainers-go's modules/azure/azurite, where a Docker engine
//     answers.
//   - external: an Azurite (or a real account) that is already running,
//     named by V2A_AZURITE_CONNECTION_STRING.
//   - auto (the default): local if the binary is installed, else
//     testcontainers if Docker answers, else an error (ErrUnavailable) that
//     says how to get one.
package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcazurite "github.com/testcontainers/testcontainers-go/modules/azure/azurite"

	"github.com/v2a-dr/v2a/impl/blob/azblob"
)

// The well-known Azurite development account. It is public (Microsoft
// publishes it) and only ever valid against an emulator.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Image is the container image used in testcontainers mode: the same
// version as the pinned npm package.
const Image = "mcr.microsoft.com/azure-storage/azurite:3.37.0"

// Mode says where the Azurite comes from.
type Mode string

// The modes; see the package comment.
const (
	ModeAuto           Mode = "auto"
	ModeLocal          Mode = "local"
	ModeTestcontainers Mode = "testcontainers"
	ModeExternal       Mode = "external"
)

// Environment variables read by Start when the matching Options field is
// empty.
const (
	EnvMode             = "V2A_AZURITE"                   // auto | local | testcontainers | external
	EnvConnectionString = "V2A_AZURITE_CONNECTION_STRING" // for external
	EnvBin              = "V2A_AZURITE_BIN"               // the azurite-blob executable
)

// ErrUnavailable is returned when no Azurite can be had in the chosen mode;
// its message says how to get one.
var ErrUnavailable = errors.New("azurite: no Azurite available")

// Options configure Start. The zero value is auto mode from the environment.
type Options struct {
	// Mode; "" means $V2A_AZURITE, or auto when that is unset.
	Mode Mode
	// Bin is the azurite-blob executable for local mode; "" means
	// $V2A_AZURITE_BIN, or else sim/azurite/node_modules/.bin/azurite-blob
	// under the module root found by walking up from the working directory.
	Bin string
	// ConnectionString for external mode; "" means
	// $V2A_AZURITE_CONNECTION_STRING.
	ConnectionString string
	// StartTimeout bounds how long a local Azurite may take to answer, or a
	// container to start; 0 means 60 s.
	StartTimeout time.Duration
	// NoDocker, when true, makes auto mode skip the Docker probe (tests of
	// the no-Azurite path use it; the probe itself can be slow).
	NoDocker bool
}

// Instance is a running (or borrowed) Azurite. Stop it when done.
type Instance struct {
	mode    Mode
	blobURL string
	conn    string
	dir     string // local mode's temporary working directory
	pid     int    // local mode's node process; 0 otherwise

	stopOnce sync.Once
	stopErr  error
	stop     func() error
}

// Mode is the mode the instance was started in (never auto).
func (in *Instance) Mode() Mode { return in.mode }

// Pid is the process id of a local Azurite (node), for a benchmark to read
// its CPU time; 0 for an instance in another mode.
func (in *Instance) Pid() int { return in.pid }

// ConnectionString is a connection string for the instance's blob service,
// for impl/blob/azblob.NewFromConnectionString.
func (in *Instance) ConnectionString() string { return in.conn }

// BlobURL is the blob service's account URL, e.g.
// "http://127.0.0.1:41234/devstoreaccount1" (empty for an external instance
// whose connection string names no BlobEndpoint).
func (in *Instance) BlobURL() string { return in.blobURL }

// Stop ends the Azurite (kills the local process and removes its temporary
// directory, or terminates the container; an external one is left alone).
// It is safe to call more than once and returns the first call's error.
func (in *Instance) Stop() error {
	in.stopOnce.Do(func() {
		if in.stop != nil {
			in.stopErr = in.stop()
		}
	})
	return in.stopErr
}

// Start gets an Azurite in the mode opts (or the environment) chooses. ctx
// bounds the start only, not the instance's life.
func Start(ctx context.Context, opts Options) (*Instance, error) {
	mode := opts.Mode
	if mode == "" {
		mode = Mode(os.Getenv(EnvMode))
	}
	if mode == "" {
		mode = ModeAuto
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	switch mode {
	case ModeLocal:
		bin, err := findBin(opts)
		if err != nil {
			return nil, fmt.Errorf("%w: %v; run `make tools` (%s) to install Azurite 3.37.0, or set %s",
				ErrUnavailable, err, npmCI, EnvBin)
		}
		return startLocal(ctx, bin, opts.StartTimeout)
	case ModeTestcontainers:
		if err := dockerAnswers(ctx); err != nil {
			return nil, fmt.Errorf("%w: testcontainers mode needs a Docker engine: %v", ErrUnavailable, err)
		}
		return startContainer(ctx, opts.StartTimeout)
	case ModeExternal:
		return external(opts)
	case ModeAuto:
		bin, binErr := findBin(opts)
		if binErr == nil {
			return startLocal(ctx, bin, opts.StartTimeout)
		}
		dockerErr := errors.New("not probed (Options.NoDocker)")
		if !opts.NoDocker {
			if dockerErr = dockerAnswers(ctx); dockerErr == nil {
				return startContainer(ctx, opts.StartTimeout)
			}
		}
		return nil, fmt.Errorf("%w: %v and no Docker engine answers (%v); "+
			"run `make tools` (%s) to install Azurite 3.37.0, "+
			"or set %s=external and %s to the connection string of a running Azurite",
			ErrUnavailable, binErr, dockerErr, npmCI, EnvMode, EnvConnectionString)
	default:
		return nil, fmt.Errorf("azurite: unknown mode %q (want auto, local, testcontainers or external)", mode)
	}
}

func external(opts Options) (*Instance, error) {
	conn := opts.ConnectionString
	if conn == "" {
		conn = os.Getenv(EnvConnectionString)
	}
	if conn == "" {
		return nil, fmt.Errorf("%w: external mode needs %s (or Options.ConnectionString)", ErrUnavailable, EnvConnectionString)
	}
	in := &Instance{mode: ModeExternal, conn: conn}
	in.blobURL = strings.TrimSuffix(azblob.ConnectionStringField(conn, "BlobEndpoint"), "/")
	return in, nil
}

// connectionString is the dev account's connection string for a blob
// endpoint at url.
func connectionString(url string) string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", AccountName, AccountKey, url)
}

// npmCI is the command `make tools` runs to install the pinned Azurite.
const npmCI = "npm ci --prefix sim/azurite --no-audit --no-fund"

// findBin locates the azurite-blob executable.
func findBin(opts Options) (string, error) {
	bin := opts.Bin
	if bin == "" {
		bin = os.Getenv(EnvBin)
	}
	if bin == "" {
		root, err := ModuleRoot()
		if err != nil {
			return "", fmt.Errorf("cannot find the Azurite binary: %v", err)
		}
		bin = filepath.Join(root, "sim", "azurite", "node_modules", ".bin", "azurite-blob")
	}
	st, err := os.Stat(bin)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("Azurite binary %s is not installed", bin)
	}
	return bin, nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
// ModuleRoot finds the v2a checkout: the directory holding go.mod, walking
// up from the working directory (tests run in their package's directory,
// the CLI anywhere in the checkout).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before Azurite binds it; Start then fails with Azurite's
// EADDRINUSE in the error, and the caller may retry.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail keeps the last bytes a process wrote, for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 8 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailMax {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

func startLocal(ctx context.Context, bin string, timeout time.Duration) (*Instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("azurite: finding a free port: %w", err)
	}
	// Azurite cannot combine --location with in-memory persistence, and
	// may still write debug or config files to its working directory:
	// give it a private one.
	dir, err := os.MkdirTemp("", "v2a-azurite-")
	if err != nil {
		return nil, fmt.Errorf("azurite: temp dir: %w", err)
	}
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent")
	cmd.Dir = dir
	// Its own process group, so that Stop also ends node's children; and
	// killed if the test binary dies without calling Stop (a go test
	// timeout), so that no Azurite outlives its user.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &tail{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("azurite: starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/%s", port, AccountName)
	in := &Instance{mode: ModeLocal, blobURL: url, conn: connectionString(url), dir: dir, pid: cmd.Process.Pid}
	in.stop = func() error {
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("azurite: removing %s: %w", dir, err)
		}
		return nil
	}

	if err := waitReady(ctx, port, timeout, exited); err != nil {
		select {
		case <-exited:
			err = fmt.Errorf("azurite: %s exited before answering (%v): %s", bin, waitErr, out.String())
		default:
			err = fmt.Errorf("azurite: %s on port %d: %w; its output: %s", bin, port, err, out.String())
		}
		_ = in.Stop()
		return nil, err
	}
	return in, nil
}

// waitReady polls GET / until any HTTP answer, the process exits, the
// timeout passes or ctx ends.
func waitReady(ctx context.Context, port int, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer within %v: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// dockerAnswers reports whether a Docker engine is reachable, without
// starting anything. testcontainers panics when it finds no Docker host at
// all; that is an answer too.
func dockerAnswers(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("no Docker host: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDocker.GetProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Health(ctx)
}

func startContainer(ctx context.Context, timeout time.Duration) (*Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctr, err := tcazurite.Run(ctx, Image,
		tcazurite.WithEnabledServices(tcazurite.BlobService),
		tcazurite.WithInMemoryPersistence(0),
		testcontainers.WithCmdArgs("--skipApiVersionCheck", "--loose", "--disableTelemetry"),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("azurite: container: %w", err)
	}
	svc, err := ctr.BlobServiceURL(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, fmt.Errorf("azurite: container blob URL: %w", err)
	}
	url := strings.TrimSuffix(svc, "/") + "/" + AccountName
	return &Instance{
		mode:    ModeTestcontainers,
		blobURL: url,
		conn:    connectionString(url),
		stop:    func() error { return testcontainers.TerminateContainer(ctr) },
	}, nil
}
