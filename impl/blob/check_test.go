package blob

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMergeRanges(t *testing.T) {
	tests := []struct {
		in, want []Range
	}{
		{nil, nil},
		{[]Range{{Offset: 0, Length: 0}}, nil},
		{[]Range{{Offset: 1024, Length: 512}, {Offset: 0, Length: 512}}, []Range{{Offset: 0, Length: 512}, {Offset: 1024, Length: 512}}},
		{[]Range{{Offset: 512, Length: 512}, {Offset: 0, Length: 512}, {Offset: 1024, Length: 512}}, []Range{{Offset: 0, Length: 1536}}},
		{[]Range{{Offset: 0, Length: 2048}, {Offset: 512, Length: 512}}, []Range{{Offset: 0, Length: 2048}}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, MergeRanges(tc.in)); diff != "" {
			t.Errorf("MergeRanges(%v) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestCheckRead(t *testing.T) {
	tests := []struct {
		opts ReadOptions
		size int64
		want Range
		err  error
	}{
		{ReadOptions{}, 0, Range{0, 0}, nil},
		{ReadOptions{}, 100, Range{0, 100}, nil},
		{ReadOptions{Offset: 10}, 100, Range{10, 90}, nil},
		{ReadOptions{Offset: 100}, 100, Range{}, ErrInvalidRange},
		{ReadOptions{Offset: 90, Length: 10}, 100, Range{90, 10}, nil},
		{ReadOptions{Offset: 90, Length: 11}, 100, Range{}, ErrInvalidRange},
		{ReadOptions{Length: -1}, 100, Range{}, ErrInvalidRange},
	}
	for _, tc := range tests {
		got, err := CheckRead(tc.opts, tc.size)
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("CheckRead(%+v, %d) error %v, want %v", tc.opts, tc.size, err, tc.err)
		}
		if got != tc.want {
			t.Errorf("CheckRead(%+v, %d) = %v, want %v", tc.opts, tc.size, got, tc.want)
		}
	}
}

func TestCheckPageWrite(t *testing.T) {
	tests := []struct {
		offset, length, size int64
		ok                   bool
	}{
		{0, 512, 512, true},
		{512, MaxPageWrite, 512 + MaxPageWrite, true},
		{0, MaxPageWrite + 512, 16 << 20, false},
		{1, 512, 4096, false},
		{0, 511, 4096, false},
		{0, 0, 4096, false},
		{4096, 512, 4096, false},
		{-512, 512, 4096, false},
	}
	for _, tc := range tests {
		err := CheckPageWrite(tc.offset, tc.length, tc.size)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidRange)) {
			t.Errorf("CheckPageWrite(%d, %d, %d) = %v, want ok=%v", tc.offset, tc.length, tc.size, err, tc.ok)
		}
	}
}

func TestNames(t *testing.T) {
	containers := map[string]bool{
		"abc": true, "a-b-c": true, "v2a-cache-01": true, "ab": false, "Abc": false, "a--b": false,
		"-ab": false, "ab-": false, "a_b": false, string(make([]byte, 64)): false,
	}
	for name, want := range containers {
		if got := ValidContainerName(name); got != want {
			t.Errorf("ValidContainerName(%q) = %v, want %v", name, got, want)
		}
	}
	keys := map[string]bool{"a": true, "_x1": true, "RecoveryPoint": true, "1a": false, "a-b": false, "": false, "é": false}
	for k, want := range keys {
		if got := ValidMetadataKey(k); got != want {
			t.Errorf("ValidMetadataKey(%q) = %v, want %v", k, got, want)
		}
	}
	if err := CheckLeaseDuration(30 * time.Second); err != nil {
		t.Errorf("CheckLeaseDuration(30s): %v", err)
	}
	for _, d := range []time.Duration{time.Second, 61 * time.Second, 15500 * time.Millisecond, -time.Second} {
		if err := CheckLeaseDuration(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckLeaseDuration(%v) = %v, want ErrInvalid", d, err)
		}
	}
}

func TestNewLeaseID(t *testing.T) {
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a := NewLeaseID(rand.New(rand.NewPCG(1, 2)))
	b := NewLeaseID(rand.New(rand.NewPCG(1, 2)))
	c := NewLeaseID(rand.New(rand.NewPCG(1, 3)))
	if !guid.MatchString(a) {
		t.Errorf("NewLeaseID = %q, not a version-4 GUID", a)
	}
	if a != b || a == c {
		t.Errorf("NewLeaseID not a function of the seed: %q %q %q", a, b, c)
	}
}

func TestErrorf(t *testing.T) {
	err := Errorf("get", "cache", "vm1/log-7", ErrNotFound, "")
	if got, want := err.Error(), "blob: get cache/vm1/log-7: blob: not found"; got != want {
		t.Errorf("Errorf = %q, want %q", got, want)
	}
	err = ExistsError("put", "cache", "catalog")
	if !errors.Is(err, ErrExists) || !errors.Is(err, ErrConditionFailed) {
		t.Errorf("ExistsError %v is not both ErrExists and ErrConditionFailed", err)
	}
}

func TestBatchRequests(t *testing.T) {
	for _, c := range []struct{ n, batches, plain int }{
		{0, 0, 0}, {1, 0, 1}, {2, 1, 0}, {MaxBatch, 1, 0}, {MaxBatch + 1, 1, 1}, {MaxBatch + 2, 2, 0}, {2*MaxBatch + 1, 2, 1},
	} {
		if b, p := BatchRequests(c.n); b != c.batches || p != c.plain {
			t.Errorf("BatchRequests(%d) = %d batches, %d plain; want %d, %d", c.n, b, p, c.batches, c.plain)
		}
	}
}
