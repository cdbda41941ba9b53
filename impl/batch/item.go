// Package batch is the replication data format: the items of a machine's
// replication stream, as the Mobility agent sends them, the process server
// caches and seals, and the Azure side opens and applies.
//
// A protected machine's stream is one ordered sequence of items, numbered
// from 1 without gaps by the agent:
//
//	SyncStart(gen)      a (re)synchronisation begins: the Azure side creates
//	                    the replica disks if needed and answers with their
//	                    block checksums (none for a fresh replica)
//	Chunk(gen, ...)     disk blocks that differ from the replica, read from
//	                    the source disk while tracking runs
//	SyncEnd(gen)        every chunk of gen was sent
//	Log(first..last)    change-log records, in log order
//
// The Azure side applies items strictly in stream order. Since the agent
// only drains its log once every chunk of a sync is acknowledged, all chunks
// land before any log record written since the sync began, and replaying
// those records in order converges on the source: that is what makes a
// region written during the copy still right. The agent inserts no bookmark
// while a sync runs, so no recovery point can mix chunk data with an older
// log position.
package batch

import (
	"errors"
	"fmt"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Kind is an item's kind.
type Kind uint8

// The item kinds. Their values are part of the stored format.
const (
	KindSyncStart Kind = 1
	KindChunk     Kind = 2
	KindSyncEnd   Kind = 3
	KindLog       Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindSyncStart:
		return "sync-start"
	case KindChunk:
		return "chunk"
	case KindSyncEnd:
		return "sync-end"
	case KindLog:
		return "log"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// RecordType mirrors hrl.RecordType for the records a Log item carries
// (metadata-mode records travel as writes: the agent re-reads their data).
type RecordType uint8

// Record types in a Log item.
const (
	RecWrite    RecordType = 1
	RecBookmark RecordType = 3
	RecRevoke   RecordType = 5
)

// Record is one change-log record in a Log item.
type Record struct {
	Seq  uint64
	Type RecordType
	Disk uint16
	Off  int64
	Data []byte
	// Bookmarks and revokes.
	BookmarkKind proto.Consistency // carried as its number
	BookmarkID   string
	UnixNano     int64
}

// Run is a contiguous range of disk bytes in a Chunk.
type Run struct {
	Off  int64
	Data []byte
}

// Item is one element of a machine's replication stream.
type Item struct {
	Machine string
	Seq     uint64 // position in the stream, from 1
	Kind    Kind
	Gen     uint64 // the sync generation (SyncStart, Chunk, SyncEnd)

	// SyncStart: the size of every disk of the machine, in bytes.
	DiskSizes []int64

	// Chunk: runs of one disk.
	Disk uint16
	Runs []Run

	// SyncEnd: the change-log position from which records are replayed
	// after the chunks (the first sequence number logged since the sync
	// began), and the chunks sent, as a check.
	LogFrom uint64
	Chunks  uint64

	// Log: records with sequence numbers First..Last, in order.
	First, Last uint64
	Records     []Record
}

// Errors.
var (
	ErrFormat = errors.New("batch: malformed item")
)

const itemVersion = 1

// Marshal encodes an item.
func (it *Item) Marshal() []byte {
	var e wire.Encoder
	return it.AppendTo(&e)
}

// AppendTo encodes an item with e and returns the bytes.
func (it *Item) AppendTo(e *wire.Encoder) []byte {
	e.Grow(it.sizeHint())
	e.Uint(itemVersion)
	e.String(it.Machine)
	e.Uint(it.Seq)
	e.Uint(uint64(it.Kind))
	e.Uint(it.Gen)
	e.Uint(uint64(len(it.DiskSizes)))
	for _, s := range it.DiskSizes {
		e.Int(s)
	}
	e.Uint(uint64(it.Disk))
	e.Uint(uint64(len(it.Runs)))
	for _, r := range it.Runs {
		e.Int(r.Off)
		e.Bytes(r.Data)
	}
	e.Uint(it.LogFrom)
	e.Uint(it.Chunks)
	e.Uint(it.First)
	e.Uint(it.Last)
	e.Uint(uint64(len(it.Records)))
	for _, r := range it.Records {
		e.Uint(r.Seq)
		e.Uint(uint64(r.Type))
		e.Uint(uint64(r.Disk))
		e.Int(r.Off)
		e.Bytes(r.Data)
		e.Uint(uint64(r.BookmarkKind))
		e.String(r.BookmarkID)
		e.Int(r.UnixNano)
	}
	return e.Encoded()
}

// sizeHint is about the encoded size of it (an upper bound for what the
// fixed fields take, exact for the data), so that one allocation holds it.
func (it *Item) sizeHint() int {
	n := 64 + len(it.Machine) + 10*len(it.DiskSizes)
	for _, r := range it.Runs {
		n += 20 + len(r.Data)
	}
	for _, r := range it.Records {
		n += 60 + len(r.Data) + len(r.BookmarkID)
	}
	return n
}

// Unmarshal decodes an item. Byte slices in the result alias b.
func Unmarshal(b []byte) (*Item, error) {
	d := wire.NewDecoder(b)
	if v := d.Uint(); v != itemVersion {
		if d.Err() != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, d.Err())
		}
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrFormat, v, itemVersion)
	}
	it := &Item{Machine: d.String(), Seq: d.Uint(), Kind: Kind(d.Uint()), Gen: d.Uint()}
	n := d.Uint()
	if n > uint64(d.Remaining()) {
		return nil, fmt.Errorf("%w: %d disk sizes", ErrFormat, n)
	}
	for i := uint64(0); i < n; i++ {
		it.DiskSizes = append(it.DiskSizes, d.Int())
	}
	it.Disk = uint16(d.Uint())
	n = d.Uint()
	if n > uint64(d.Remaining()) {
		return nil, fmt.Errorf("%w: %d runs", ErrFormat, n)
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		it.Runs = append(it.Runs, Run{Off: d.Int(), Data: d.Bytes()})
	}
	it.LogFrom, it.Chunks, it.First, it.Last = d.Uint(), d.Uint(), d.Uint(), d.Uint()
	n = d.Uint()
	if n > uint64(d.Remaining()) {
		return nil, fmt.Errorf("%w: %d records", ErrFormat, n)
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		it.Records = append(it.Records, Record{
			Seq: d.Uint(), Type: RecordType(d.Uint()), Disk: uint16(d.Uint()), Off: d.Int(), Data: d.Bytes(),
			BookmarkKind: proto.Consistency(d.Uint()), BookmarkID: d.String(), UnixNano: d.Int(),
		})
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if d.Remaining() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrFormat, d.Remaining())
	}
	if err := it.Validate(); err != nil {
		return nil, err
	}
	return it, nil
}

// Validate checks an item's internal consistency.
func (it *Item) Validate() error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: %s item %d of %s: %s", ErrFormat, it.Kind, it.Seq, it.Machine, fmt.Sprintf(f, a...))
	}
	if it.Machine == "" || it.Seq == 0 {
		return bad("no machine or sequence number")
	}
	switch it.Kind {
	case KindSyncStart:
		if len(it.DiskSizes) == 0 {
			return bad("no disks")
		}
	case KindChunk:
		for _, r := range it.Runs {
			if r.Off < 0 || r.Off%512 != 0 || len(r.Data)%512 != 0 || len(r.Data) == 0 {
				return bad("run of %d bytes at %d is not sector-aligned", len(r.Data), r.Off)
			}
		}
	case KindSyncEnd:
	case KindLog:
		if it.First == 0 || it.Last < it.First {
			return bad("log range %d..%d", it.First, it.Last)
		}
		prev := it.First - 1
		for _, r := range it.Records {
			if r.Seq <= prev || r.Seq > it.Last {
				return bad("record %d out of order or outside %d..%d", r.Seq, it.First, it.Last)
			}
			prev = r.Seq
			if r.Type == RecWrite && (r.Off < 0 || r.Off%512 != 0 || len(r.Data)%512 != 0) {
				return bad("write record %d of %d bytes at %d is not sector-aligned", r.Seq, len(r.Data), r.Off)
			}
		}
	default:
		return bad("unknown kind")
	}
	return nil
}

// Size is the payload bytes the item carries (data of runs and writes).
func (it *Item) Size() int64 {
	var n int64
	for _, r := range it.Runs {
		n += int64(len(r.Data))
	}
	for _, r := range it.Records {
		n += int64(len(r.Data))
	}
	return n
}
