//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/v2a-dr/v2a/impl/csstore"
)

// lockFile opens path (creating it empty if missing: SQLite takes an empty
// file for a new database) and takes an exclusive flock on it without
// waiting. flock and SQLite's POSIX record locks are independent on Linux
// and the BSDs, so the lock does not get in SQLite's way.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("csstore/sqlite: open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (is another configuration server running on it?)", csstore.ErrInUse, path)
		}
		return nil, fmt.Errorf("csstore/sqlite: lock %s: %w", path, err)
	}
	return f, nil
}
