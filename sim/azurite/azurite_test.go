package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/blob/blobtest"
)

// shared is the one Azurite the package's tests and benchmarks use; when it
// could not be started, startErr says why and every test that needs it
// fails with that error (CI runs `make tools` first, so it must not skip).
var (
	shared   *Instance
	startErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	shared, startErr = Start(ctx, Options{})
	cancel()
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "azurite: stop:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func azurite(t testing.TB) *Instance {
	t.Helper()
	if startErr != nil {
		t.Fatalf("no Azurite: %v", startErr)
	}
	return shared
}

func newStore(t testing.TB) *azblob.Store {
	t.Helper()
	s, err := azblob.NewFromConnectionString(azurite(t).ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the blob.Store conformance suite against the real
// adapter talking to a real Azurite.
func TestConformance(t *testing.T) {
	azurite(t)
	blobtest.RunWith(t, func(t *testing.T) blob.Store { return newStore(t) }, blobtest.Options{Deviations: map[string]string{
		// Seen with Azurite 3.37.0 (the pinned one): after a server-side
		// copy of a page blob, a write to the source shows in the copy and
		// a write to the copy in the source. v2a copies only snapshots
		// (immutable) into failover disks, so its scenarios are not
		// affected; memblob keeps them apart, as Azure does.
		"CopyApart": "Azurite 3.37.0 shares page ranges between a page blob and its server-side copy (a write to either shows in both)",
	}})
}

// TestNoAzurite: auto mode with no binary, no Docker and no connection
// string fails with an error that says how to get one.
func TestNoAzurite(t *testing.T) {
	t.Setenv(EnvConnectionString, "")
	t.Setenv(EnvMode, "")
	missing := filepath.Join(t.TempDir(), "no-such-azurite-blob")
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"auto", Options{Bin: missing, NoDocker: true},
			[]string{"make tools", "npm ci --prefix sim/azurite", EnvConnectionString, missing}},
		{"local", Options{Mode: ModeLocal, Bin: missing},
			[]string{"make tools", missing}},
		{"external", Options{Mode: ModeExternal},
			[]string{EnvConnectionString}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Start(context.Background(), tc.opts)
			if err == nil {
				in.Stop()
				t.Fatalf("Start(%+v) succeeded", tc.opts)
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("error %v is not ErrUnavailable", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := Start(context.Background(), Options{Mode: "bogus"}); err == nil || !strings.Contains(err.Error(), "unknown mode") {
		t.Errorf("Start(bogus mode) = %v, want an unknown-mode error", err)
	}
}

// TestLocalDies: an Azurite that exits before answering is reported with
// what it printed.
func TestLocalDies(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "azurite-blob")
	script := "#!/bin/sh\necho 'listen EADDRINUSE: simulated failure' >&2\nexit 3\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := Start(context.Background(), Options{Mode: ModeLocal, Bin: bin})
	if err == nil {
		in.Stop()
		t.Fatal("Start succeeded with an Azurite that exits at once")
	}
	for _, w := range []string{"exited before answering", "EADDRINUSE: simulated failure", "exit status 3"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// TestExternal: external mode only passes the connection string on, and
// Stop leaves the borrowed Azurite running.
func TestExternal(t *testing.T) {
	conn := azurite(t).ConnectionString()
	t.Setenv(EnvMode, string(ModeExternal))
	t.Setenv(EnvConnectionString, conn)
	in, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if in.ConnectionString() != conn || in.BlobURL() != shared.BlobURL() || in.Mode() != ModeExternal {
		t.Errorf("external instance: %q %q %s, want %q %q", in.ConnectionString(), in.BlobURL(), in.Mode(), conn, shared.BlobURL())
	}
	if err := in.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := newStore(t).CreateContainer(context.Background(), blobtest.ContainerName(t)); err != nil {
		t.Errorf("shared Azurite unusable after stopping a borrowed one: %v", err)
	}
}

// TestStop: a launched Azurite answers, and after Stop (twice) its port is
// closed and its temporary directory gone.
func TestStop(t *testing.T) {
	azurite(t) // fail the same way as the others when not installed
	in, err := Start(context.Background(), Options{Mode: ModeLocal})
	if err != nil {
		t.Fatal(err)
	}
	s, err := azblob.NewFromConnectionString(in.ConnectionString())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.CreateContainer(ctx, "stop-test"); err != nil {
		t.Fatalf("fresh Azurite: %v", err)
	}
	if _, err := os.Stat(in.dir); err != nil {
		t.Fatalf("temp dir of a running Azurite: %v", err)
	}
	if err := in.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := in.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(in.BlobURL())
	if err == nil {
		resp.Body.Close()
		t.Errorf("Azurite still answers at %s after Stop", in.BlobURL())
	}
	if _, err := os.Stat(in.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s after Stop: %v, want it gone", in.dir, err)
	}
}

// BenchmarkAzuriteBlockBlobUpload is the reference for end-to-end
// benchmarks: the raw SDK uploading 4 MiB block blobs to Azurite, one Put
// Blob each, no port in between.
func BenchmarkAzuriteBlockBlobUpload(b *testing.B) {
	const size = 4 << 20
	s := newStore(b)
	ctx := context.Background()
	c := "bench-upload"
	if err := s.CreateContainer(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.DeleteContainer(context.Background(), c) })
	cc := s.Client().ServiceClient().NewContainerClient(c)
	data := bytes.Repeat([]byte("v2a-benchmark-payload-"), size/22+1)[:size]
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		bb := cc.NewBlockBlobClient(fmt.Sprintf("blob-%d", i%16))
		if _, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
