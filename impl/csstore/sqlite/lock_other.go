//go:build !unix

package sqlite

import "os"

// lockFile takes no lock where the platform has no flock: two servers on
// one file are then the operator's mistake to avoid.
func lockFile(string) (*os.File, error) { return nil, nil }
