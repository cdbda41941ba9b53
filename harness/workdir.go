package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// worldDirPrefix names the working directories of worlds under WorkBase.
const worldDirPrefix = "v2a-world-"

// ownerFile holds the pid of the process that owns a world directory, so
// that a later run can tell a directory left by a killed run (its owner is
// dead) from one in use by a run beside it.
const ownerFile = "owner.pid"

// makeWorldDir creates a world's working directory under base and records
// this process as its owner. Directories that killed runs left behind
// (SIGKILL, a crash: no chance to clean up) are removed first.
func makeWorldDir(base string) (string, error) {
	SweepStaleWorlds(base)
	dir, err := os.MkdirTemp(base, worldDirPrefix)
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("harness: %w", err)
	}
	return dir, nil
}

// SweepStaleWorlds removes the world directories under base whose owning
// process is dead, and returns their paths. A directory with no owner file
// is left alone: it may belong to a run that is still creating it.
func SweepStaleWorlds(base string) []string {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var removed []string
	for _, ent := range ents {
		if !ent.IsDir() || !strings.HasPrefix(ent.Name(), worldDirPrefix) {
			continue
		}
		dir := filepath.Join(base, ent.Name())
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	return removed
}

// processAlive reports whether a process with this pid exists. EPERM means
// it exists but belongs to someone else.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
