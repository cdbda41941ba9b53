package mastertarget

import (
	"slices"

	"github.com/v2a-dr/v2a/impl/proto"
)

// Status is a snapshot of a Target, for views and tests. Read it through
// runtime.Inspect (on the actor's turn), never from another goroutine.
type Status struct {
	Loaded    bool
	DisksUsed int
	MaxDisks  int
	Machines  []MachineStatus // by name
	Broken    []string        // state files that do not read, with the reason
}

// MachineStatus is one attached machine.
type MachineStatus struct {
	Machine      string
	Disks        int
	Attaching    bool
	Applied      uint64 // last item applied and durable
	Queued       int    // received, not yet applied
	LastBookmark string
	Retrying     bool   // an apply failed and waits for RetryEvery
	LastError    string // of the last apply, "" once one succeeds
	ItemsApplied int64
	BytesWritten int64

	Gen          uint64 // the sync generation
	Synced       bool   // its SyncEnd was applied
	Points       int    // failback points the journal reaches
	NewestPoint  string // "" for none
	FailedBack   string // the point the disks were rolled back to
	RollingBack  string // the point a rollback under way goes to
	JournalBytes int64  // the undo journal's size
	// PointList are the failback points, oldest first.
	PointList []proto.TargetPoint
}

// PointSeq is the change-log position of machine's failback point id, and
// whether the target knows it.
func (s Status) PointSeq(machine, id string) (uint64, bool) {
	for _, m := range s.Machines {
		if m.Machine != machine {
			continue
		}
		for _, p := range m.PointList {
			if p.ID == id {
				return p.Seq, true
			}
		}
	}
	return 0, false
}

// Status returns the target's state.
func (t *Target) Status() Status {
	s := Status{Loaded: t.loaded, DisksUsed: t.disksInUse(), MaxDisks: t.cfg.MaxDisks, Broken: slices.Clone(t.broken)}
	for _, name := range t.names() {
		m := t.machines[name]
		s.Machines = append(s.Machines, MachineStatus{
			Machine: name, Disks: len(m.st.Disks), Attaching: m.attaching, Applied: m.st.Applied,
			Queued: len(m.queue), LastBookmark: m.st.LastBookmark, Retrying: m.retrying, LastError: m.lastErr,
			ItemsApplied: m.itemsApplied, BytesWritten: m.bytesWritten,
			Gen: m.st.Gen, Synced: m.st.Synced, Points: len(m.st.Points), FailedBack: m.st.FailedBack,
			RollingBack: m.st.Rollback, JournalBytes: m.jour.Bytes,
		})
		for _, p := range m.st.Points {
			s.Machines[len(s.Machines)-1].PointList = append(s.Machines[len(s.Machines)-1].PointList, p.target())
		}
		if n := len(m.st.Points); n > 0 {
			s.Machines[len(s.Machines)-1].NewestPoint = m.st.Points[n-1].ID
		}
	}
	return s
}
