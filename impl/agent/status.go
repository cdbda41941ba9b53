package agent

import "time"

// Status is a snapshot of an agent for inspection (the harness, a CLI).
type Status struct {
	Machine string
	// Phase is idle, syncing, replicating or resync-required.
	Phase string
	// Registered says the configuration server accepted the registration
	// (or sent Protect, which implies it). RegisterRefused is its reason
	// when it refused; then the agent never replicates.
	Registered      bool
	RegisterRefused string
	// Gen, Policy and ProcessServer are the last Protect's.
	Gen           uint64
	Policy        string
	ProcessServer string
	// ResyncReason says why a resync is required (phase resync-required).
	ResyncReason string

	// Mode is the filter's capture mode: data, metadata or bitmap ("" when
	// no filter is installed).
	Mode string
	// PendingBytes and PendingRecords are the change log's untrimmed
	// records (not yet acknowledged by the process server).
	PendingBytes   int64
	PendingRecords uint64
	// LogLastSeq is the newest record logged, LogTrimSeq the trim point.
	LogLastSeq, LogTrimSeq uint64
	// CapturedBytes and CapturedWrites are what the guest wrote through
	// the filter (since the filter was opened).
	CapturedBytes, CapturedWrites int64
	// EnteredMetadata, EnteredBitmap and EnteredData count the filter's
	// mode changes.
	EnteredData, EnteredMetadata, EnteredBitmap int64

	// StreamOpen says the process server answered StreamHello.
	StreamOpen bool
	// ItemsBuilt is the highest item seq assigned; ItemsAcked the highest
	// acknowledged; Queued the items built and not acknowledged, InFlight
	// those of them sent since the last go-back.
	ItemsBuilt, ItemsAcked uint64
	Queued, InFlight       int
	// ItemsSent counts transmissions, Retransmits those that were not the
	// first; GoBacks the go-back-N resends on a gap; Backoffs the back-offs
	// on cache-full or refused answers.
	ItemsSent, Retransmits, GoBacks, Backoffs uint64
	// PSLosses counts the times the process server lost items it had
	// acknowledged (a lost cache).
	PSLosses uint64
	// PayloadBytesSent is the data (chunk runs and write records) of items
	// sent, counted once per item.
	PayloadBytesSent int64

	// Sync is the progress of the current or last sync.
	Sync SyncStatus

	// BookmarksInserted and BookmarksSkipped are sorted by kind (and
	// reason); LastBookmark is the id of the last bookmark inserted.
	// BookmarksRetried counts (by kind) bookmarks inserted late, once the
	// log could honour them, after a skip for undrained metadata (counted
	// in BookmarksSkipped) and before the next regular one; they are
	// counted in BookmarksInserted too.
	BookmarksInserted []BookmarkCount
	BookmarksSkipped  []SkipCount
	BookmarksRetried  []BookmarkCount
	LastBookmark      string

	// LastError is the last error the agent met, "" if none.
	LastError string

	// Group is the replication group this machine is a member of ("" when
	// none), GroupVersion the GroupConfig version applied, GroupMaster its
	// master, IsMaster whether this agent is it.
	Group        string
	GroupVersion uint64
	GroupMaster  string
	IsMaster     bool
	// Rounds is what this agent did as the group's master.
	Rounds RoundStats
	// Member is what it did as a member of group rounds.
	Member MemberStats
	// Holding says the filter holds the guest's writes now; Holds is how
	// long it held them, round by round.
	Holding bool
	Holds   HoldStats
}

// Status returns a snapshot of the agent. Call it between events (it reads
// the actor's state); it shares nothing with the agent.
func (a *Agent) Status() Status {
	s := Status{
		Machine: a.cfg.Machine, Phase: a.phase, Registered: a.registered, RegisterRefused: a.refusedReason,
		Gen: a.st.Gen, Policy: a.st.Policy.Name, ProcessServer: a.st.ProcessServer, ResyncReason: a.st.Reason,
		StreamOpen: a.streamOpen, ItemsAcked: a.acked, Queued: len(a.queue),
		ItemsSent: a.itemsSent, Retransmits: a.retransmits, GoBacks: a.goBacks, Backoffs: a.backoffs, PSLosses: a.psLosses,
		PayloadBytesSent: a.payloadSent, Sync: a.lastSync, LastBookmark: a.bookmarks.last, LastError: a.lastErr,
	}
	if a.nextItem > 0 {
		s.ItemsBuilt = a.nextItem - 1
	}
	if a.sentUpTo > a.acked {
		s.InFlight = int(a.sentUpTo - a.acked)
	}
	s.BookmarksInserted, s.BookmarksSkipped, s.BookmarksRetried = a.bookmarks.lists()
	if g := a.group; g != nil {
		s.Group, s.GroupVersion, s.GroupMaster, s.IsMaster = g.Group, g.Version, g.Master, a.isMaster()
	}
	s.Rounds = RoundStats{Started: a.master.stats.started, Committed: a.master.stats.committed, Revoked: a.master.stats.revoked, Retried: a.master.stats.retried,
		RevokedBy: reasonList(a.master.stats.revokedBy), Skipped: reasonList(a.master.stats.skipped),
		LastTag: a.master.stats.lastTag, LastOutcome: a.master.stats.lastOutcome}
	if r := a.master.round; r != nil {
		s.Rounds.Tag, s.Rounds.Kind, s.Rounds.Phase = r.tag.TagID, r.tag.Kind, r.phase
	}
	s.Member = MemberStats{Begun: a.member.stats.begun, Refused: reasonList(a.member.stats.refused), Resumed: a.member.stats.resumed,
		Revoked: a.member.stats.revoked, TagsRevoked: a.member.stats.tagsRevoked}
	if r := a.member.cur; r != nil {
		s.Member.Tag, s.Member.Phase = r.tag.TagID, r.phase
	}
	s.Holds = a.member.holds
	s.Holds.Recent = append([]time.Duration(nil), a.member.holds.Recent...)
	if a.filter != nil {
		s.Holding = a.filter.Holding()
		fs := a.filter.Stats()
		s.Mode = fs.Mode.String()
		s.PendingBytes, s.PendingRecords = fs.PendingBytes, fs.PendingRecords
		s.LogLastSeq, s.LogTrimSeq = fs.LastSeq, fs.TrimSeq
		s.CapturedBytes, s.CapturedWrites = fs.CapturedBytes, fs.CapturedWrites
		s.EnteredData, s.EnteredMetadata, s.EnteredBitmap = fs.EnteredData, fs.EnteredMetadata, fs.EnteredBitmap
	}
	return s
}
