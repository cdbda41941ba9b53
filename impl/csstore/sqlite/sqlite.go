// Package sqlite is the csstore.Store of a SQLite database file, through
// modernc.org/sqlite (pure Go: no cgo). It is what the configuration
// server daemon's --db flag opens, and what the simulated world opens in
// the run's directory for cs01.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a
// transaction that committed (Apply returned nil) survives a crash of the
// process or of the machine. Schema: one table per record kind, key and
// data, and the certificate register (csstore.Certs, certs.go); schema
// changes are numbered migrations (this file's migrations), applied in
// one transaction at Open, the version kept in
// PRAGMA user_version. A database whose version is newer than this
// binary's is refused (csstore.ErrNewerSchema) before anything is written
// to it, as is a file that is not a SQLite database or fails its
// integrity check (csstore.ErrCorrupt).
//
// One process at a time: Open takes an exclusive advisory lock (flock) on
// the database file and holds it until Close, so a second configuration
// server started on the same file is refused (csstore.ErrInUse) before it
// reads or writes anything; the operating system drops the lock when the
// holder dies, even by kill -9. SQLite's own locks are per transaction
// and would let two servers interleave their writes.
package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/v2a-dr/v2a/impl/csstore"
)

// migrations are the schema's numbered steps: migrations[i] takes the
// schema from version i to i+1. Append only; never edit a released step.
var migrations = []string{
	// 1: a table per record kind.
	`CREATE TABLE machines (key TEXT PRIMARY KEY, data BLOB NOT NULL);
	 CREATE TABLE policies (key TEXT PRIMARY KEY, data BLOB NOT NULL);
	 CREATE TABLE groups (key TEXT PRIMARY KEY, data BLOB NOT NULL);
	 CREATE TABLE jobs (key TEXT PRIMARY KEY, data BLOB NOT NULL);
	 CREATE TABLE alerts (key TEXT PRIMARY KEY, data BLOB NOT NULL);`,
	// 2: the vault CA's register of issued and revoked certificates
	// (csstore.Certs). Times are Unix nanoseconds; revoked is NULL while
	// the certificate is not.
	`CREATE TABLE certs (serial TEXT PRIMARY KEY, host TEXT NOT NULL, not_after INTEGER NOT NULL, revoked INTEGER);
	 CREATE INDEX certs_host ON certs (host);`,
}

// SchemaVersion is the schema version this binary writes.
var SchemaVersion = len(migrations)

// tables maps a kind to its table.
var tables = map[csstore.Kind]string{
	csstore.KindMachine: "machines",
	csstore.KindPolicy:  "policies",
	csstore.KindGroup:   "groups",
	csstore.KindJob:     "jobs",
	csstore.KindAlert:   "alerts",
}

// header is the first 16 bytes of every SQLite database file.
var header = []byte("SQLite format 3\x00")

// Store is a SQLite database holding a configuration server's state.
type Store struct {
	path string
	mu   sync.Mutex // guards closed: Close may race a late Op in the Real runtime
	db   *sql.DB
	lock *os.File // holds the flock; nil where the platform has none
	done bool
	sync string // the synchronous pragma: FULL, or OFF with Options.NoSync
}

var (
	_ csstore.Store = (*Store)(nil)
	_ csstore.Certs = (*Store)(nil)
)

// Open opens (creating it if needed) the database at path and brings its
// schema to SchemaVersion. It refuses, leaving the file as it was, a file
// that is not a SQLite database, one that fails SQLite's quick_check, and
// one whose schema version is newer than SchemaVersion.
func Open(path string) (*Store, error) {
	return OpenWith(path, Options{})
}

// Options are Open's knobs.
type Options struct {
	// NoSync runs the database with synchronous=OFF: a commit reaches the
	// operating system but is not fsynced, so it survives a crash of the
	// process, not of the machine. For simulations only, where a
	// "crashed" server is an actor that stops while the real machine and
	// its page cache go on: what it committed is there when it reopens
	// the file, exactly as synchronous=FULL guarantees after a real power
	// loss, without an fsync of real time per commit.
	NoSync bool
}

// OpenWith is Open with options.
func OpenWith(path string, o Options) (*Store, error) {
	return open(path, migrations, o)
}

func open(path string, steps []string, o Options) (_ *Store, err error) {
	lock, err := lockFile(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && lock != nil {
			lock.Close()
		}
	}()
	if err := checkHeader(path); err != nil {
		return nil, err
	}
	// mode=rw... is not used: a missing file is created, as a daemon's
	// first start needs.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return nil, fmt.Errorf("csstore/sqlite: open %s: %w", path, err)
	}
	// One connection: the pragmas below are per connection, and the
	// configuration server makes one call at a time anyway.
	db.SetMaxOpenConns(1)
	s := &Store{path: path, db: db, lock: lock, sync: "FULL"}
	if o.NoSync {
		s.sync = "OFF"
	}
	if err := s.prepare(steps); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkHeader refuses a non-empty file that does not start as a SQLite
// database, before the driver sees it.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("csstore/sqlite: open %s: %w", path, err)
	}
	defer f.Close()
	b := make([]byte, len(header))
	n, err := io.ReadFull(f, b)
	switch {
	case n == 0 && (err == io.EOF):
		return nil // an empty file is an empty database
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("csstore/sqlite: read %s: %w", path, err)
	case !bytes.Equal(b[:n], header):
		return fmt.Errorf("%w: %s is not a SQLite database (it starts with %q); left untouched", csstore.ErrCorrupt, path, b[:n])
	}
	return nil
}

// prepare checks the file before it writes anything, then sets the
// durability pragmas and migrates.
func (s *Store) prepare(steps []string) error {
	var version int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("%w: %s: reading its schema version: %v; left untouched", csstore.ErrCorrupt, s.path, err)
	}
	if version > len(steps) {
		return fmt.Errorf("%w: %s has schema version %d, this binary knows versions up to %d: "+
			"run the newer configuration server, or restore a backup made for this version; the file was left untouched",
			csstore.ErrNewerSchema, s.path, version, len(steps))
	}
	var check string
	if err := s.db.QueryRow(`PRAGMA quick_check`).Scan(&check); err != nil {
		return fmt.Errorf("%w: %s: integrity check: %v; left untouched", csstore.ErrCorrupt, s.path, err)
	}
	if check != "ok" {
		return fmt.Errorf("%w: %s fails its integrity check: %s; left untouched", csstore.ErrCorrupt, s.path, check)
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode=WAL`).Scan(&mode); err != nil {
		return fmt.Errorf("csstore/sqlite: %s: journal_mode=WAL: %w", s.path, err)
	}
	if mode != "wal" {
		return fmt.Errorf("csstore/sqlite: %s: journal mode is %q, not wal", s.path, mode)
	}
	for _, p := range []string{`PRAGMA synchronous=` + s.sync, `PRAGMA busy_timeout=5000`} {
		if _, err := s.db.Exec(p); err != nil {
			return fmt.Errorf("csstore/sqlite: %s: %s: %w", s.path, p, err)
		}
	}
	if version == len(steps) {
		return nil
	}
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("csstore/sqlite: %s: migrate: %w", s.path, err)
	}
	defer tx.Rollback()
	for v := version; v < len(steps); v++ {
		if _, err := tx.Exec(steps[v]); err != nil {
			return fmt.Errorf("csstore/sqlite: %s: migration %d: %w", s.path, v+1, err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version=%d`, len(steps))); err != nil {
		return fmt.Errorf("csstore/sqlite: %s: set schema version %d: %w", s.path, len(steps), err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("csstore/sqlite: %s: migrate to version %d: %w", s.path, len(steps), err)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

func (s *Store) live() (*sql.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, fmt.Errorf("%w: %s", csstore.ErrClosed, s.path)
	}
	return s.db, nil
}

// Load implements csstore.Store.
func (s *Store) Load(ctx context.Context) ([]csstore.Record, error) {
	db, err := s.live()
	if err != nil {
		return nil, err
	}
	var out []csstore.Record
	for _, k := range csstore.Kinds {
		rows, err := db.QueryContext(ctx, `SELECT key, data FROM `+tables[k]+` ORDER BY key`)
		if err != nil {
			return nil, fmt.Errorf("csstore/sqlite: %s: load %s: %w", s.path, tables[k], err)
		}
		for rows.Next() {
			r := csstore.Record{Kind: k}
			if err := rows.Scan(&r.Key, &r.Data); err != nil {
				rows.Close()
				return nil, fmt.Errorf("csstore/sqlite: %s: load %s: %w", s.path, tables[k], err)
			}
			if r.Data == nil {
				r.Data = []byte{}
			}
			out = append(out, r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("csstore/sqlite: %s: load %s: %w", s.path, tables[k], err)
		}
	}
	// ORDER BY key uses SQLite's BINARY collation: bytewise, as promised;
	// sorting again costs little and keeps the contract in one place.
	csstore.Sort(out)
	return out, nil
}

// Apply implements csstore.Store.
func (s *Store) Apply(ctx context.Context, b csstore.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	db, err := s.live()
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("csstore/sqlite: %s: begin: %w", s.path, err)
	}
	defer tx.Rollback()
	for _, r := range b.Delete {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+tables[r.Kind]+` WHERE key = ?`, r.Key); err != nil {
			return fmt.Errorf("csstore/sqlite: %s: delete %s %s: %w", s.path, r.Kind, r.Key, err)
		}
	}
	for _, r := range b.Put {
		data := r.Data
		if data == nil {
			data = []byte{}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+tables[r.Kind]+` (key, data) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET data = excluded.data`, r.Key, data); err != nil {
			return fmt.Errorf("csstore/sqlite: %s: put %s %s: %w", s.path, r.Kind, r.Key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("csstore/sqlite: %s: commit: %w", s.path, err)
	}
	return nil
}

// Close implements csstore.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	s.done = true
	err := s.db.Close()
	if s.lock != nil {
		s.lock.Close() // closing the descriptor drops the flock
	}
	if err != nil {
		return fmt.Errorf("csstore/sqlite: close %s: %w", s.path, err)
	}
	return nil
}
