package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/csstore/csstoretest"
)

func TestConformance(t *testing.T) {
	csstoretest.Run(t, func(t *testing.T) func() (csstore.Store, error) {
		path := filepath.Join(t.TempDir(), "cs.db")
		return func() (csstore.Store, error) { return Open(path) }
	})
}

func openT(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func rec(key, data string) csstore.Record {
	return csstore.Record{Kind: csstore.KindMachine, Key: key, Data: []byte(data)}
}

// TestPragmas: the durability the package promises is what the database
// runs with (and NoSync, the simulation's, says what it gives up).
func TestPragmas(t *testing.T) {
	for _, c := range []struct {
		o    Options
		sync int
	}{{Options{}, 2}, {Options{NoSync: true}, 0}} {
		s, err := OpenWith(filepath.Join(t.TempDir(), "cs.db"), c.o)
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		var sync, version int
		if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if mode != "wal" || sync != c.sync || version != SchemaVersion {
			t.Fatalf("%+v: journal_mode=%s synchronous=%d user_version=%d, want wal, %d, %d", c.o, mode, sync, version, c.sync, SchemaVersion)
		}
	}
}

// TestNewerSchema: a database a newer binary wrote is refused with both
// versions named, and its file is byte for byte as it was.
func TestNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	s := openT(t, path)
	if err := s.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{rec("db01", "precious")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`PRAGMA user_version=7`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before := sum(t, path)
	_, err := Open(path)
	if !errors.Is(err, csstore.ErrNewerSchema) {
		t.Fatalf("Open = %v, want ErrNewerSchema", err)
	}
	for _, w := range []string{"schema version 7", fmt.Sprintf("up to %d", SchemaVersion), path} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if sum(t, path) != before {
		t.Fatal("refusing a newer schema changed the file")
	}
	// The data is still there for the newer binary: read it raw.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var data string
	if err := db.QueryRow(`SELECT data FROM machines WHERE key = 'db01'`).Scan(&data); err != nil || data != "precious" {
		t.Fatalf("record after the refusal: %q, %v", data, err)
	}
}

// TestNotADatabase: garbage and a torn (truncated) database are refused
// with ErrCorrupt, and left as they were.
func TestNotADatabase(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 500), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.db")
	if err := os.WriteFile(short, []byte("SQLite"), 0o644); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(dir, "torn.db")
	s := openT(t, torn)
	var rs []csstore.Record
	for i := range 400 {
		rs = append(rs, rec(strings.Repeat("k", 1+i%50)+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("x", 3000)))
	}
	if err := s.Apply(context.Background(), csstore.Batch{Put: rs}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := os.ReadFile(torn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(torn, b[:len(b)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{garbage, short, torn} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			before := sum(t, path)
			s, err := Open(path)
			if err == nil {
				// A truncated file may pass the quick check's first pages
				// only if SQLite cannot tell; then loading must fail.
				_, err = s.Load(context.Background())
				s.Close()
			}
			if !errors.Is(err, csstore.ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if sum(t, path) != before {
				t.Fatal("refusing the file changed it")
			}
		})
	}
}

// TestMigrations: a database at an older version is brought up to date
// in one step, keeping its data; a failing migration leaves it at its
// version.
func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	s, err := open(path, migrations, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{rec("db01", "kept")}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	next := append(append([]string(nil), migrations...), `ALTER TABLE machines ADD COLUMN note TEXT`)
	broken := append(append([]string(nil), next...), `CREATE TABLE machines (key TEXT)`) // exists: fails
	if _, err := open(path, broken, Options{}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("migration %d", len(broken))) {
		t.Fatalf("a failing migration: %v, want an error naming migration %d", err, len(broken))
	}
	s, err = open(path, next, Options{})
	if err != nil {
		t.Fatalf("migrating to %d: %v", len(next), err)
	}
	defer s.Close()
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version != len(next) {
		t.Fatalf("user_version = %d, %v; want %d (the failed migration rolled back)", version, err, len(next))
	}
	rs, err := s.Load(context.Background())
	if err != nil || len(rs) != 1 || string(rs[0].Data) != "kept" {
		t.Fatalf("after migrating: %v, %v", rs, err)
	}
}

const childPath = "V2A_CSSTORE_CHILD_DB"

// TestCommitSurvivesKill: a child process commits and dies without
// closing the database (os.Exit, no Close, no checkpoint); the committed
// record is there when the database is opened again.
func TestCommitSurvivesKill(t *testing.T) {
	if p := os.Getenv(childPath); p != "" {
		s, err := Open(p)
		if err != nil {
			os.Exit(3)
		}
		if err := s.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{rec("db01", "committed")}}); err != nil {
			os.Exit(4)
		}
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "cs.db")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCommitSurvivesKill$")
	cmd.Env = append(os.Environ(), childPath+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("the child left no WAL (%v): the test would not show recovery", err)
	}
	rs, err := openT(t, path).Load(context.Background())
	if err != nil || len(rs) != 1 || string(rs[0].Data) != "committed" {
		t.Fatalf("after the child died: %v, %v", rs, err)
	}
}

// TestSecondOpenRefused: while one store has the database open, a second
// Open of the same file (another configuration server) is refused with
// ErrInUse naming the file, touches nothing, and leaves the first store
// working; after Close the file opens again.
func TestSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	first := openT(t, path)
	if err := first.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{rec("vm01", "one")}}); err != nil {
		t.Fatal(err)
	}
	before := sum(t, path)
	second, err := Open(path)
	if err == nil {
		second.Close()
		t.Fatal("a second Open of a database in use succeeded")
	}
	if !errors.Is(err, csstore.ErrInUse) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open = %v, want ErrInUse naming %s", err, path)
	}
	if sum(t, path) != before {
		t.Fatal("the refused Open changed the file")
	}
	if err := first.Apply(context.Background(), csstore.Batch{Put: []csstore.Record{rec("vm02", "two")}}); err != nil {
		t.Fatalf("the first store stopped working after a refused second Open: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := openT(t, path)
	got, err := again.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("reopened store has %d records, want 2", len(got))
	}
}
