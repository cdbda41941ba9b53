package hrl

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/v2a-dr/v2a/impl/proto"
)

// Record layout on disk (little-endian), headerLen bytes of header then a body:
//
//	0  crc     uint32  CRC-32C (Castagnoli) of bytes [4, size)
//	4  size    uint32  whole record length, header included
//	8  seq     uint64  sequence number, contiguous across the log
//	16 version uint8   formatVersion
//	17 type    uint8   RecordType
//	18 disk    uint16  disk index (write, write-meta, dirty-bitmap)
//	20 len     uint32  bytes the write covers (write, write-meta)
//	24 off     int64   byte offset on the disk (write, write-meta)
//	32 body            write: the data; write-meta: empty;
//	                   bookmark: unixNano int64, kind uint8, id;
//	                   revoke: id; dirty-bitmap: note
//
// Fields a type does not use must be zero, and the CRC covers the size field,
// so a record whose header is impossible for its type is refused even when its
// CRC happens to match: recovery's forward scan relies on that strictness to
// tell garbage from a real record.
const (
	headerLen     = 32
	formatVersion = 1
	bookmarkFixed = 9 // unixNano + kind
	// maxBodyBytes is the largest body the format admits, whatever the type.
	maxBodyBytes = MaxDataBytes + bookmarkFixed
	// maxRecordBytes bounds the size field, so a corrupt size is refused
	// before anything is allocated for it.
	maxRecordBytes = headerLen + maxBodyBytes
)

// MaxDataBytes bounds a record's variable part: the data of a write, the
// length a write-meta record covers, a bookmark or revoke id, a bitmap note.
// A larger write must be split by the caller; Append returns ErrTooLarge.
const MaxDataBytes = 4 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordType is the kind of a log record.
type RecordType uint8

// The record types. Their values are part of the on-disk format.
const (
	// TypeWrite is a guest write with its data (data capture mode).
	TypeWrite RecordType = 1
	// TypeWriteMeta is a guest write without its data (metadata capture
	// mode): the drainer re-reads Off..Off+Len from the disk, so no
	// crash-consistent bookmark can be honoured across it.
	TypeWriteMeta RecordType = 2
	// TypeBookmark is a crash- or app-consistent bookmark (a tag).
	TypeBookmark RecordType = 3
	// TypeBitmap says the filter fell back to bitmap mode for a disk: the
	// disk needs a resync; Note says why.
	TypeBitmap RecordType = 4
	// TypeRevoke says the bookmark BookmarkID, inserted earlier, must be
	// ignored (the multi-VM tag protocol revoked it).
	TypeRevoke RecordType = 5
)

// String names t for traces and test failures.
func (t RecordType) String() string {
	switch t {
	case TypeWrite:
		return "write"
	case TypeWriteMeta:
		return "write-meta"
	case TypeBookmark:
		return "bookmark"
	case TypeBitmap:
		return "dirty-bitmap"
	case TypeRevoke:
		return "revoke"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Record is one log record as a Reader yields it. Fields a type does not use
// are zero.
type Record struct {
	Seq  uint64
	Type RecordType
	// Disk is the disk index (write, write-meta, dirty-bitmap).
	Disk uint16
	// Off and Len are the byte range a write covers (write, write-meta).
	Off int64
	Len uint32
	// Data is a write's payload. It aliases the Reader's buffer and is valid
	// only until the Reader's next call: copy it to keep it.
	Data []byte
	// proto.Consistency, BookmarkID and UnixNano describe a bookmark; a revoke
	// record carries only BookmarkID.
	BookmarkKind proto.Consistency // stored as its one-byte value (proto.Crash, proto.App)
	BookmarkID   string
	UnixNano     int64
	// Note says why a dirty-bitmap record was written.
	Note string
}

// putHeader writes the header fields after the CRC into h[:headerLen].
func putHeader(h []byte, size uint32, seq uint64, t RecordType, disk uint16, length uint32, off int64) {
	binary.LittleEndian.PutUint32(h[4:], size)
	binary.LittleEndian.PutUint64(h[8:], seq)
	h[16] = formatVersion
	h[17] = byte(t)
	binary.LittleEndian.PutUint16(h[18:], disk)
	binary.LittleEndian.PutUint32(h[20:], length)
	binary.LittleEndian.PutUint64(h[24:], uint64(off))
}

// headerSize is the size field of a header, or 0 when it is impossible, so
// that a scan can reject garbage without touching the body.
func headerSize(h []byte) uint32 {
	size := binary.LittleEndian.Uint32(h[4:])
	if size < headerLen || size > maxRecordBytes || h[16] != formatVersion {
		return 0
	}
	return size
}

// parseRecord decodes rec, which must be exactly one record's bytes, checking
// the CRC and that the fields are possible for the type. Data and nothing
// else aliases rec. It returns a description of the first problem, or "".
func parseRecord(rec []byte) (Record, string) {
	if len(rec) < headerLen {
		return Record{}, fmt.Sprintf("short header (%d of %d bytes)", len(rec), headerLen)
	}
	size := binary.LittleEndian.Uint32(rec[4:])
	if int64(size) != int64(len(rec)) {
		return Record{}, fmt.Sprintf("size field %d, record has %d bytes", size, len(rec))
	}
	if want, got := binary.LittleEndian.Uint32(rec), crc32.Checksum(rec[4:], castagnoli); want != got {
		return Record{}, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	if headerSize(rec) == 0 {
		return Record{}, fmt.Sprintf("impossible header (size %d, version %d)", size, rec[16])
	}
	r := Record{
		Seq:  binary.LittleEndian.Uint64(rec[8:]),
		Type: RecordType(rec[17]),
		Disk: binary.LittleEndian.Uint16(rec[18:]),
		Len:  binary.LittleEndian.Uint32(rec[20:]),
		Off:  int64(binary.LittleEndian.Uint64(rec[24:])),
	}
	body := rec[headerLen:]
	switch r.Type {
	case TypeWrite:
		if r.Off < 0 || int64(r.Len) != int64(len(body)) || len(body) > MaxDataBytes {
			return Record{}, fmt.Sprintf("impossible write (off %d, len %d, %d data bytes)", r.Off, r.Len, len(body))
		}
		if len(body) > 0 {
			r.Data = body
		}
	case TypeWriteMeta:
		if r.Off < 0 || r.Len > MaxDataBytes || len(body) != 0 {
			return Record{}, fmt.Sprintf("impossible write-meta (off %d, len %d, %d body bytes)", r.Off, r.Len, len(body))
		}
	case TypeBookmark:
		if len(body) < bookmarkFixed || r.Disk != 0 || r.Off != 0 || r.Len != 0 {
			return Record{}, "impossible bookmark header"
		}
		r.UnixNano = int64(binary.LittleEndian.Uint64(body))
		r.BookmarkKind = proto.Consistency(body[8])
		if r.BookmarkKind != proto.Crash && r.BookmarkKind != proto.App {
			return Record{}, fmt.Sprintf("impossible bookmark kind %d", body[8])
		}
		r.BookmarkID = string(body[bookmarkFixed:])
	case TypeRevoke:
		if r.Disk != 0 || r.Off != 0 || r.Len != 0 || len(body) > MaxDataBytes {
			return Record{}, "impossible revoke header"
		}
		r.BookmarkID = string(body)
	case TypeBitmap:
		if r.Off != 0 || r.Len != 0 || len(body) > MaxDataBytes {
			return Record{}, "impossible dirty-bitmap header"
		}
		r.Note = string(body)
	default:
		return Record{}, fmt.Sprintf("unknown record type %d", rec[17])
	}
	return r, ""
}

// AppendRecord appends r's on-disk encoding to dst and returns the extended
// slice. The log itself encodes in place without it; it exists so that tests
// and tools (a corpus generator, a process-server spool that keeps records in
// log format) can produce bytes that Open accepts.
func AppendRecord(dst []byte, r Record) []byte {
	var body []byte
	length := r.Len
	switch r.Type {
	case TypeWrite:
		body = r.Data
		length = uint32(len(r.Data))
	case TypeBookmark:
		body = binary.LittleEndian.AppendUint64(nil, uint64(r.UnixNano))
		body = append(body, byte(r.BookmarkKind))
		body = append(body, r.BookmarkID...)
	case TypeRevoke:
		body = []byte(r.BookmarkID)
	case TypeBitmap:
		body = []byte(r.Note)
	}
	start := len(dst)
	size := headerLen + len(body)
	dst = append(dst, make([]byte, headerLen)...)
	putHeader(dst[start:], uint32(size), r.Seq, r.Type, r.Disk, length, r.Off)
	dst = append(dst, body...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}
