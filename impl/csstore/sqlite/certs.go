package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore"
)

// Issued implements csstore.Certs.
func (s *Store) Issued(ctx context.Context, c csstore.Cert) error {
	db, err := s.live()
	if err != nil {
		return err
	}
	if c.Serial == "" || c.Host == "" {
		return fmt.Errorf("%w: certificate with an empty serial or host", csstore.ErrInvalid)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO certs (serial, host, not_after) VALUES (?, ?, ?)
		ON CONFLICT (serial) DO UPDATE SET host = excluded.host, not_after = excluded.not_after`,
		c.Serial, c.Host, c.NotAfter.UnixNano()); err != nil {
		return fmt.Errorf("csstore/sqlite: %s: record certificate %s of %s: %w", s.path, c.Serial, c.Host, err)
	}
	return nil
}

// Revoke implements csstore.Certs.
func (s *Store) Revoke(ctx context.Context, host, serial string, at time.Time) ([]csstore.Cert, error) {
	if (host == "") == (serial == "") {
		return nil, fmt.Errorf("%w: revoke a host or a serial, not both or neither", csstore.ErrInvalid)
	}
	db, err := s.live()
	if err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("csstore/sqlite: %s: begin: %w", s.path, err)
	}
	defer tx.Rollback()
	if serial != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO certs (serial, host, not_after) VALUES (?, '', 0)
			ON CONFLICT (serial) DO NOTHING`, serial); err != nil {
			return nil, fmt.Errorf("csstore/sqlite: %s: revoke serial %s: %w", s.path, serial, err)
		}
	} else {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM certs WHERE host = ?`, host).Scan(&n); err != nil {
			return nil, fmt.Errorf("csstore/sqlite: %s: revoke %s: %w", s.path, host, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: host %q", csstore.ErrNoCert, host)
		}
	}
	where, arg := `host = ?`, host
	if serial != "" {
		where, arg = `serial = ?`, serial
	}
	certs, err := queryCerts(ctx, tx, `SELECT serial, host, not_after, revoked FROM certs WHERE `+where+` AND revoked IS NULL ORDER BY serial`, arg)
	if err != nil {
		return nil, fmt.Errorf("csstore/sqlite: %s: revoke: %w", s.path, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE certs SET revoked = ? WHERE `+where+` AND revoked IS NULL`, at.UnixNano(), arg); err != nil {
		return nil, fmt.Errorf("csstore/sqlite: %s: revoke: %w", s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("csstore/sqlite: %s: commit: %w", s.path, err)
	}
	for i := range certs {
		certs[i].Revoked = at.UTC()
	}
	return certs, nil
}

// Revoked implements csstore.Certs. A serial revoked without a record
// (NotAfter unknown) is always listed.
func (s *Store) Revoked(ctx context.Context, now time.Time) ([]csstore.Cert, error) {
	db, err := s.live()
	if err != nil {
		return nil, err
	}
	certs, err := queryCerts(ctx, db, `SELECT serial, host, not_after, revoked FROM certs
		WHERE revoked IS NOT NULL AND (not_after = 0 OR not_after > ?) ORDER BY serial`, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("csstore/sqlite: %s: revoked certificates: %w", s.path, err)
	}
	return certs, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryCerts(ctx context.Context, q querier, query string, args ...any) ([]csstore.Cert, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []csstore.Cert
	for rows.Next() {
		var c csstore.Cert
		var notAfter int64
		var revoked sql.NullInt64
		if err := rows.Scan(&c.Serial, &c.Host, &notAfter, &revoked); err != nil {
			return nil, err
		}
		if notAfter != 0 {
			c.NotAfter = time.Unix(0, notAfter).UTC()
		}
		if revoked.Valid {
			c.Revoked = time.Unix(0, revoked.Int64).UTC()
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
