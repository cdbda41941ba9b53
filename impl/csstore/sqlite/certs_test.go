package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/csstore"
)

var tc0 = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

// TestCerts: revoking a host revokes every certificate of it and only
// those, once; a serial alone may be revoked; expired revocations leave
// the list; everything survives a reopen; bad requests change nothing.
func TestCerts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cs.db")
	s := openT(t, path)
	for _, c := range []csstore.Cert{
		{Serial: "a1", Host: "ag01", NotAfter: tc0.Add(time.Hour)},
		{Serial: "a2", Host: "ag01", NotAfter: tc0.Add(2 * time.Hour)}, // its renewal
		{Serial: "b1", Host: "ag02", NotAfter: tc0.Add(time.Hour)},
		{Serial: "c1", Host: "ps01", NotAfter: tc0.Add(time.Minute)},
	} {
		if err := s.Issued(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Issued(ctx, csstore.Cert{Serial: "", Host: "x"}); !errors.Is(err, csstore.ErrInvalid) {
		t.Errorf("Issued without a serial: %v", err)
	}
	if _, err := s.Revoke(ctx, "nobody", "", tc0); !errors.Is(err, csstore.ErrNoCert) {
		t.Errorf("Revoke of an unknown host: %v, want ErrNoCert", err)
	}
	if _, err := s.Revoke(ctx, "ag01", "a1", tc0); !errors.Is(err, csstore.ErrInvalid) {
		t.Errorf("Revoke of a host and a serial: %v, want ErrInvalid", err)
	}
	got, err := s.Revoke(ctx, "ag01", "", tc0)
	want := []csstore.Cert{
		{Serial: "a1", Host: "ag01", NotAfter: tc0.Add(time.Hour), Revoked: tc0},
		{Serial: "a2", Host: "ag01", NotAfter: tc0.Add(2 * time.Hour), Revoked: tc0},
	}
	if err != nil || !cmp.Equal(got, want) {
		t.Fatalf("Revoke ag01 = %v, %v; diff %s", got, err, cmp.Diff(want, got))
	}
	if again, err := s.Revoke(ctx, "ag01", "", tc0.Add(time.Second)); err != nil || len(again) != 0 {
		t.Errorf("revoking again = %v, %v; want none, nil", again, err)
	}
	if got, err := s.Revoke(ctx, "", "ff", tc0); err != nil || len(got) != 1 || got[0].Host != "" {
		t.Errorf("Revoke of an unrecorded serial = %v, %v", got, err)
	}
	if got, err := s.Revoke(ctx, "", "c1", tc0); err != nil || len(got) != 1 || got[0].Host != "ps01" {
		t.Errorf("Revoke of ps01's serial = %v, %v", got, err)
	}
	// Re-recording a revoked serial keeps it revoked.
	if err := s.Issued(ctx, csstore.Cert{Serial: "a1", Host: "ag01", NotAfter: tc0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openT(t, path)
	list, err := s.Revoked(ctx, tc0.Add(30*time.Minute)) // c1 expired by then
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, c := range list {
		serials = append(serials, c.Serial)
	}
	if want := []string{"a1", "a2", "ff"}; !cmp.Equal(serials, want) {
		t.Errorf("Revoked after a reopen = %v, want %v", serials, want)
	}
	s.Close()
	if _, err := s.Revoked(ctx, tc0); !errors.Is(err, csstore.ErrClosed) {
		t.Errorf("Revoked after Close: %v", err)
	}
}

// TestMigrateToCerts: a database of schema 1 (before the certificate
// register) opens at the current version with its records kept and an
// empty register.
func TestMigrateToCerts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cs.db")
	s, err := open(path, migrations[:1], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, csstore.Batch{Put: []csstore.Record{rec("db01", "kept")}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, path)
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != SchemaVersion || SchemaVersion < 2 {
		t.Fatalf("user_version = %d, %v; want %d", version, err, SchemaVersion)
	}
	rs, err := s.Load(ctx)
	if err != nil || len(rs) != 1 || string(rs[0].Data) != "kept" {
		t.Fatalf("records after the migration: %v, %v", rs, err)
	}
	if list, err := s.Revoked(ctx, tc0); err != nil || len(list) != 0 {
		t.Fatalf("register after the migration: %v, %v", list, err)
	}
	if err := s.Issued(ctx, csstore.Cert{Serial: "a1", Host: "ag01", NotAfter: tc0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}
