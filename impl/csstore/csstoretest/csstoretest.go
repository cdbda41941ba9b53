// Package csstoretest is the conformance suite of csstore.Store: every
// backend must pass Run.
package csstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/csstore"
)

// Opener gives a subtest a fresh, empty database: open opens it (again
// after a Close: the same database, with what was committed).
type Opener func(t *testing.T) (open func() (csstore.Store, error))

// Run runs the conformance suite.
func Run(t *testing.T, fresh Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func() csstore.Store)
	}{
		{"Empty", testEmpty},
		{"RoundTripEveryKind", testRoundTrip},
		{"Update", testUpdate},
		{"Delete", testDelete},
		{"BatchOrder", testBatchOrder},
		{"InvalidBatchWritesNothing", testInvalid},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"Binary", testBinary},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			openFn := fresh(t)
			var opened []csstore.Store
			open := func() csstore.Store {
				t.Helper()
				s, err := openFn()
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				opened = append(opened, s)
				return s
			}
			t.Cleanup(func() {
				for _, s := range opened {
					_ = s.Close()
				}
			})
			tc.fn(t, open)
		})
	}
}

func load(t *testing.T, s csstore.Store) []csstore.Record {
	t.Helper()
	rs, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return rs
}

func apply(t *testing.T, s csstore.Store, b csstore.Batch) {
	t.Helper()
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func want(t *testing.T, s csstore.Store, w []csstore.Record) {
	t.Helper()
	got := load(t, s)
	if diff := cmp.Diff(w, got, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
		t.Fatalf("Load (-want +got):\n%s", diff)
	}
}

// every is one record of each kind, in Load order, with keys that sort
// differently as numbers and as bytes.
func every(suffix string) []csstore.Record {
	var rs []csstore.Record
	for _, k := range csstore.Kinds {
		for _, key := range []string{"10", "2", "db01"} {
			rs = append(rs, csstore.Record{Kind: k, Key: key, Data: []byte(fmt.Sprintf(`{"kind":%q,"key":%q}%s`, k, key, suffix))})
		}
	}
	return rs
}

func testEmpty(t *testing.T, open func() csstore.Store) {
	if rs := load(t, open()); len(rs) != 0 {
		t.Fatalf("a new store loads %d records: %v", len(rs), rs)
	}
}

func testRoundTrip(t *testing.T, open func() csstore.Store) {
	s := open()
	rs := every("")
	// Put in reverse: Load must sort.
	var rev []csstore.Record
	for i := len(rs) - 1; i >= 0; i-- {
		rev = append(rev, rs[i])
	}
	apply(t, s, csstore.Batch{Put: rev})
	want(t, s, rs)
}

func testUpdate(t *testing.T, open func() csstore.Store) {
	s := open()
	apply(t, s, csstore.Batch{Put: every("")})
	changed := every(" v2")
	apply(t, s, csstore.Batch{Put: changed[3:6]}) // the policies
	w := every("")
	copy(w[3:6], changed[3:6])
	want(t, s, w)
}

func testDelete(t *testing.T, open func() csstore.Store) {
	s := open()
	rs := every("")
	apply(t, s, csstore.Batch{Put: rs})
	apply(t, s, csstore.Batch{Delete: []csstore.Ref{rs[0].Ref(), rs[7].Ref(), {Kind: csstore.KindJob, Key: "missing"}}})
	var w []csstore.Record
	for i, r := range rs {
		if i != 0 && i != 7 {
			w = append(w, r)
		}
	}
	want(t, s, w)
}

func testBatchOrder(t *testing.T, open func() csstore.Store) {
	s := open()
	m := func(data string) csstore.Record {
		return csstore.Record{Kind: csstore.KindMachine, Key: "db01", Data: []byte(data)}
	}
	apply(t, s, csstore.Batch{Put: []csstore.Record{m("old")}})
	// Deletes come before puts; the later of two puts wins.
	apply(t, s, csstore.Batch{Delete: []csstore.Ref{m("").Ref()}, Put: []csstore.Record{m("first"), m("second")}})
	want(t, s, []csstore.Record{m("second")})
}

func testInvalid(t *testing.T, open func() csstore.Store) {
	s := open()
	good := every("")
	apply(t, s, csstore.Batch{Put: good})
	for _, b := range []csstore.Batch{
		{Put: []csstore.Record{{Kind: csstore.KindMachine, Key: "x", Data: []byte("new")}, {Kind: "disk", Key: "y"}}},
		{Put: []csstore.Record{{Kind: csstore.KindMachine, Key: "x", Data: []byte("new")}, {Kind: csstore.KindJob, Key: ""}}},
		{Delete: []csstore.Ref{good[0].Ref(), {Kind: "disk", Key: "y"}}},
	} {
		err := s.Apply(context.Background(), b)
		if !errors.Is(err, csstore.ErrInvalid) {
			t.Fatalf("Apply(%v) = %v, want ErrInvalid", b, err)
		}
	}
	want(t, s, good)
}

func testReopen(t *testing.T, open func() csstore.Store) {
	s := open()
	rs := every("")
	apply(t, s, csstore.Batch{Put: rs})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2 := open()
	want(t, s2, rs)
	apply(t, s2, csstore.Batch{Delete: []csstore.Ref{rs[1].Ref()}})
	if err := s2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want(t, open(), append(rs[:1:1], rs[2:]...))
}

func testClosed(t *testing.T, open func() csstore.Store) {
	s := open()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if _, err := s.Load(context.Background()); !errors.Is(err, csstore.ErrClosed) {
		t.Fatalf("Load after Close = %v, want ErrClosed", err)
	}
	err := s.Apply(context.Background(), csstore.Batch{Put: every("")[:1]})
	if !errors.Is(err, csstore.ErrClosed) {
		t.Fatalf("Apply after Close = %v, want ErrClosed", err)
	}
}

func testBinary(t *testing.T, open func() csstore.Store) {
	s := open()
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18) // 1 MiB with NULs
	rs := []csstore.Record{
		{Kind: csstore.KindGroup, Key: "empty", Data: []byte{}},
		{Kind: csstore.KindGroup, Key: "g\x00\xffé", Data: big},
	}
	apply(t, s, csstore.Batch{Put: rs})
	want(t, s, rs)
}
