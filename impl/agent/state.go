package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
)

// StateFile is the agent's persisted state in Config.StateDir.
const StateFile = "agent.state"

// persisted is what survives an agent restart: what the last Protect said
// and how far the agent got with it.
type persisted struct {
	Machine       string       `json:"machine"`
	Gen           uint64       `json:"gen"`
	Policy        proto.Policy `json:"policy"`
	ProcessServer string       `json:"processServer"`
	Phase         string       `json:"phase"`            // syncing, replicating or resync-required
	Reason        string       `json:"reason,omitempty"` // why a resync is required
	// Group is the replication group's last GroupConfig (nil: in none).
	Group *proto.GroupConfig `json:"group,omitempty"`
	// LastTagN is the number of the last group tag this agent started as
	// master: tag ids never repeat, even across restarts and clock steps.
	LastTagN uint64 `json:"lastTagN,omitempty"`
	// LastCrashBookmark and LastAppBookmark are when the bookmark timers
	// last fired or, before they first do, when the schedule began (the
	// Protect that started it) (Unix ns; 0: not known, as in a state file
	// written before the origin was kept), so that a restarted agent keeps
	// the policy's cadence instead of starting it over (see
	// armBookmarkTimers).
	LastCrashBookmark int64 `json:"lastCrashBookmark,omitempty"`
	LastAppBookmark   int64 `json:"lastAppBookmark,omitempty"`
	// StreamFloor is the stream position to number on from after the
	// process server lost acknowledged items (0: none): see stream.
	StreamFloor uint64 `json:"streamFloor,omitempty"`
	// PSEpoch is the cache epoch of ProcessServer the agent last heard
	// (0: none yet), and StreamCeil is above every item number the agent
	// has sent to it: a restarted agent compares the first answer's epoch
	// with PSEpoch to learn that the process server lost its cache while
	// the agent was down, and then numbers on from StreamCeil (see stream).
	PSEpoch    uint64 `json:"psEpoch,omitempty"`
	StreamCeil uint64 `json:"streamCeil,omitempty"`
}

// loadState reads agent.state; ok is false when there is none.
func loadState(fsy fsys.FS, dir string) (st persisted, ok bool, err error) {
	b, err := fsy.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return persisted{}, false, nil
	}
	if err != nil {
		return persisted{}, false, fmt.Errorf("agent: read state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return persisted{}, false, fmt.Errorf("agent: state file %s: %w", StateFile, err)
	}
	switch st.Phase {
	case PhaseSyncing, PhaseReplicating, PhaseResyncRequired:
	default:
		return persisted{}, false, fmt.Errorf("agent: state file %s: phase %q", StateFile, st.Phase)
	}
	return st, true, nil
}

// encodeState is agent.state's content for st.
func encodeState(st persisted) ([]byte, error) {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("agent: encode state: %w", err)
	}
	return append(b, '\n'), nil
}

// saveStateBytes replaces agent.state atomically with b: a temporary file,
// fsynced, renamed over the old one, and the directory fsynced, so that a
// crash leaves either the old state or the new one. The agent runs it in
// an op (stateWriter), never in Handle.
func saveStateBytes(fsy fsys.FS, dir string, b []byte) error {
	if err := fsy.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("agent: save state: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	tmp := path + ".tmp"
	f, err := fsy.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("agent: save state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsy.Rename(tmp, path)
	}
	if err == nil {
		err = fsys.SyncDir(fsy, dir)
	}
	if err != nil {
		return fmt.Errorf("agent: save state: %w", err)
	}
	return nil
}

// removeState forgets the protection (Unprotect).
func removeState(fsy fsys.FS, dir string) error {
	err := fsy.Remove(filepath.Join(dir, StateFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent: remove state: %w", err)
	}
	return fsys.SyncDir(fsy, dir)
}
