package proto

import (
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// Failback's messages: what a reprotect sends the on-premises master target
// (impl/mastertarget). The replication stream itself is the forward one's,
// ItemMsg and ItemAck, so that a batch.Item means the same thing in both
// directions.

// MaxTargetDisks is the most disks one master target serves, across every
// VM attached to it (ASR's limit: 60).
const MaxTargetDisks = 60

// TargetDisk is one on-premises disk a master target writes: the datastore
// path of its flat extent ("[ds1] db01/db01-flat.vmdk", see
// vsphere.FlatExtentPath) and its capacity.
type TargetDisk struct {
	Path          string
	CapacityBytes int64
}

// AttachTarget asks a master target to take Machine's stream and write it
// into Disks, in the stream's disk order (batch.Item.Disk indexes Disks).
// The master target answers with a Reply (Request "attach-target", Subject
// Machine, Req echoed). Attaching the same disks again is accepted (a lost
// reply); other disks for a machine already attached are refused.
type AttachTarget struct {
	Req     string
	Machine string
	Disks   []TargetDisk
	// VM is the on-premises VM the disks belong to (the original one, or
	// the one an alternate-location reprotect created); failback powers
	// it on.
	VM string
	// Fresh says the disks were just created (alternate location): all
	// zero, so the master target answers a sync's SyncStart with Fresh
	// checksums and the agent sends every non-zero block.
	Fresh bool
}

func (*AttachTarget) WireKind() wire.Kind { return KindAttachTarget }

// MaxBlockSums is the most block checksums one BlockSumReply carries
// (64 MiB of disk in ChecksumBlockSize blocks): a larger range is asked for
// in several requests.
const MaxBlockSums = 16384

// BlockSumRequest asks a master target for the checksums (BlockSum) of
// Blocks blocks of ChecksumBlockSize bytes of disk Disk of Machine from
// block-aligned offset Off; Blocks 0 means to the disk's end. A reply
// carries at most MaxBlockSums of them.
type BlockSumRequest struct {
	Req     string
	Machine string
	Disk    uint16
	Off     int64
	Blocks  int64
}

func (*BlockSumRequest) WireKind() wire.Kind { return KindBlockSumRequest }

// BlockSumReply answers a BlockSumRequest: Sums holds ChecksumSize bytes
// per block from Off, of the disk as it stood with the stream applied up to
// item Applied. Final says the sums reach the disk's end. Err, when not
// empty, says why there are none.
type BlockSumReply struct {
	Req       string
	Machine   string
	Disk      uint16
	Off       int64
	BlockSize int64
	Applied   uint64
	Sums      []byte
	Final     bool
	Err       string
}

func (*BlockSumReply) WireKind() wire.Kind { return KindBlockSumReply }

// The failback policy: every replication policy has a twin, created with
// it, that reprotect (Azure → on-premises) uses. Its values are ASR's and
// fixed: the user can neither edit nor delete it, nor protect a machine
// forward with it.
const (
	FailbackSuffix        = "-failback"
	FailbackRPOThreshold  = 15 * time.Minute
	FailbackRetention     = 24 * time.Hour
	FailbackAppInterval   = 60 * time.Minute
	FailbackCrashInterval = 5 * time.Minute
)

// FailbackPolicy is the failback twin of the policy called name:
// "<name>-failback", RPO threshold 15 min, retention 24 h, app-consistent
// every 60 min (crash-consistent every 5 min, s2 compression).
func FailbackPolicy(name string) Policy {
	return Policy{Name: name + FailbackSuffix, RPOThreshold: FailbackRPOThreshold, Retention: FailbackRetention,
		CrashInterval: FailbackCrashInterval, AppInterval: FailbackAppInterval, Compression: "s2"}
}

// FailbackOf is the name of the policy whose failback twin is called name,
// and whether name is a failback twin's name at all. Every name ending in
// FailbackSuffix is reserved for twins.
func FailbackOf(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, FailbackSuffix)
	return base, ok
}
