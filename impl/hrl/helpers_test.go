package hrl

import (
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"

	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// op is one append, as tests describe it.
type op struct {
	typ    RecordType
	disk   uint16
	off    int64
	data   []byte
	length uint32 // write-meta only
	kind   proto.Consistency
	id     string // bookmark, revoke
	nano   int64
	note   string
}

func write(disk uint16, off int64, data string) op {
	return op{typ: TypeWrite, disk: disk, off: off, data: []byte(data)}
}
func meta(disk uint16, off int64, length uint32) op {
	return op{typ: TypeWriteMeta, disk: disk, off: off, length: length}
}
func bookmark(kind proto.Consistency, id string, nano int64) op {
	return op{typ: TypeBookmark, kind: kind, id: id, nano: nano}
}
func revoke(id string) op                { return op{typ: TypeRevoke, id: id} }
func bitmap(disk uint16, note string) op { return op{typ: TypeBitmap, disk: disk, note: note} }

func (o op) apply(l *Log) (uint64, error) {
	switch o.typ {
	case TypeWrite:
		return l.AppendWrite(o.disk, o.off, o.data)
	case TypeWriteMeta:
		return l.AppendMeta(o.disk, o.off, o.length)
	case TypeBookmark:
		return l.AppendBookmark(o.kind, o.id, o.nano)
	case TypeRevoke:
		return l.AppendRevoke(o.id)
	case TypeBitmap:
		return l.AppendBitmap(o.disk, o.note)
	}
	panic("unknown op type")
}

// record is what a Reader should yield for o appended as seq.
func (o op) record(seq uint64) Record {
	r := Record{Seq: seq, Type: o.typ}
	switch o.typ {
	case TypeWrite:
		r.Disk, r.Off, r.Len = o.disk, o.off, uint32(len(o.data))
		if len(o.data) > 0 {
			r.Data = o.data
		}
	case TypeWriteMeta:
		r.Disk, r.Off, r.Len = o.disk, o.off, o.length
	case TypeBookmark:
		r.BookmarkKind, r.BookmarkID, r.UnixNano = o.kind, o.id, o.nano
	case TypeRevoke:
		r.BookmarkID = o.id
	case TypeBitmap:
		r.Disk, r.Note = o.disk, o.note
	}
	return r
}

// appendAll appends ops to l and returns the records they should read back as.
func appendAll(t testing.TB, l *Log, ops []op) []Record {
	t.Helper()
	var recs []Record
	for _, o := range ops {
		seq, err := o.apply(l)
		if err != nil {
			t.Fatalf("append %v: %v", o.typ, err)
		}
		recs = append(recs, o.record(seq))
	}
	return recs
}

func mustOpen(t testing.TB, dir string, opts Options) (*Log, Recovery) {
	t.Helper()
	l, rec, err := Open(dir, "vm", opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l, rec
}

// readAll reads every record from seq from on, copying the data. It takes
// any t with Helper, so that rapid's T can use it too.
func readAll(t interface{ Helper() }, l *Log, from uint64) ([]Record, error) {
	t.Helper()
	r, err := l.NewReader(from)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var recs []Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		if rec.Data != nil {
			rec.Data = append([]byte(nil), rec.Data...)
		}
		recs = append(recs, rec)
	}
}

// segmentFiles lists the log's segment files in order.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := listSegments(fsys.OS{}, dir, "vm")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range segs {
		names = append(names, filepath.Join(dir, segmentName("vm", s.first)))
	}
	return names
}

// copyDir copies the flat directory src into a new temporary one.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// cmpRecords compares record lists fast (bytes.Equal on data, which is
// megabytes at times) and treats an empty list as a nil one.
var cmpRecords = []cmp.Option{
	cmp.Comparer(bytes.Equal),
	cmp.FilterValues(func(a, b []Record) bool { return len(a) == 0 && len(b) == 0 },
		cmp.Comparer(func(a, b []Record) bool { return true })),
}
