package mastertarget

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The retention volume holds one state file per attached machine,
// <RetentionDir>/<machine, path-escaped>.state: the machine's disks, the
// last stream item applied to them, its sync and its failback points; and
// next to it the machine's undo journal, <machine>.journal (journal.go). It is replaced atomically (write to a
// temporary name, fsync, rename, fsync the directory) and carries a CRC-32C,
// so a torn or damaged file is found, never half-believed.

const (
	stateSuffix   = ".state"
	journalSuffix = ".journal"
	tmpSuffix     = ".tmp"
	stateVersion  = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// state is what the retention volume keeps of one machine.
type state struct {
	Machine      string
	Disks        []proto.TargetDisk
	Applied      uint64 // the last stream item applied to Disks
	LastBookmark string // the id of the last bookmark applied, "" for none

	VM    string // the on-premises VM the disks belong to (AttachTarget.VM)
	Fresh bool   // the disks are as created, all zero: nothing was written yet

	Gen       uint64  // the sync generation of the last SyncStart applied
	SyncItem  uint64  // that SyncStart's item, 0 for none
	SyncSizes []int64 // its disk sizes
	Synced    bool    // that generation's SyncEnd was applied

	// Points are the failback points, oldest first: every one reachable
	// through the undo journal (see keepPoints).
	Points []point
	// Rollback is the id of the point a rollback began to bring the disks
	// to and did not finish: a restarted target redoes it.
	Rollback string
	// FailedBack is the id of the point the disks were rolled back to: the
	// machine's stream is closed.
	FailedBack string
}

// point is one failback point: a bookmark record applied after its sync
// completed.
type point struct {
	ID       string
	Kind     proto.Consistency
	UnixNano int64  // the bookmark's time in the Azure VM
	Seq      uint64 // the bookmark's change-log position
	At       pos    // where in the stream the bookmark record is
}

func (p point) target() proto.TargetPoint {
	return proto.TargetPoint{ID: p.ID, Kind: p.Kind, Time: time.Unix(0, p.UnixNano).UTC(), Seq: p.Seq}
}

func (s state) clone() state {
	s.Disks = slices.Clone(s.Disks)
	s.SyncSizes = slices.Clone(s.SyncSizes)
	s.Points = slices.Clone(s.Points)
	return s
}

func (s state) marshal() []byte {
	var e wire.Encoder
	e.Uint(stateVersion)
	e.String(s.Machine)
	e.Uint(uint64(len(s.Disks)))
	for _, d := range s.Disks {
		e.String(d.Path)
		e.Int(d.CapacityBytes)
	}
	e.Uint(s.Applied)
	e.String(s.LastBookmark)
	e.String(s.VM)
	e.Bool(s.Fresh)
	e.Uint(s.Gen)
	e.Uint(s.SyncItem)
	e.Uint(uint64(len(s.SyncSizes)))
	for _, sz := range s.SyncSizes {
		e.Int(sz)
	}
	e.Bool(s.Synced)
	e.Uint(uint64(len(s.Points)))
	for _, p := range s.Points {
		e.String(p.ID)
		e.Uint(uint64(p.Kind))
		e.Int(p.UnixNano)
		e.Uint(p.Seq)
		e.Uint(p.At.Item)
		e.Uint(uint64(p.At.Rec))
	}
	e.String(s.Rollback)
	e.String(s.FailedBack)
	b := e.Encoded()
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// unmarshalState reads a state file of this version or of version 1 (no
// sync, points nor rollback: those start empty).
func unmarshalState(b []byte) (state, error) {
	if len(b) < 4 {
		return state{}, fmt.Errorf("%w: %d bytes", ErrStateCorrupt, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return state{}, fmt.Errorf("%w: checksum mismatch", ErrStateCorrupt)
	}
	d := wire.NewDecoder(body)
	v := d.Uint()
	if v != 1 && v != stateVersion {
		return state{}, fmt.Errorf("%w: version %d, this build reads 1 and %d", ErrStateCorrupt, v, stateVersion)
	}
	s := state{Machine: d.String()}
	n := d.Uint()
	if n > proto.MaxTargetDisks {
		return state{}, fmt.Errorf("%w: %d disks", ErrStateCorrupt, n)
	}
	for i := uint64(0); i < n; i++ {
		s.Disks = append(s.Disks, proto.TargetDisk{Path: d.String(), CapacityBytes: d.Int()})
	}
	s.Applied, s.LastBookmark = d.Uint(), d.String()
	if v >= 2 {
		s.VM, s.Fresh, s.Gen, s.SyncItem = d.String(), d.Bool(), d.Uint(), d.Uint()
		ns := d.Uint()
		if ns > proto.MaxTargetDisks {
			return state{}, fmt.Errorf("%w: sync of %d disks", ErrStateCorrupt, ns)
		}
		for i := uint64(0); i < ns; i++ {
			s.SyncSizes = append(s.SyncSizes, d.Int())
		}
		s.Synced = d.Bool()
		np := d.Uint()
		if np > uint64(d.Remaining()) {
			return state{}, fmt.Errorf("%w: %d points in %d bytes", ErrStateCorrupt, np, d.Remaining())
		}
		for i := uint64(0); i < np && d.Err() == nil; i++ {
			p := point{ID: d.String(), Kind: proto.Consistency(d.Uint()), UnixNano: d.Int(), Seq: d.Uint()}
			p.At = pos{Item: d.Uint(), Rec: uint32(d.Uint())}
			s.Points = append(s.Points, p)
		}
		s.Rollback, s.FailedBack = d.String(), d.String()
	}
	if err := d.Err(); err != nil {
		return state{}, fmt.Errorf("%w: %v", ErrStateCorrupt, err)
	}
	if d.Remaining() != 0 {
		return state{}, fmt.Errorf("%w: %d trailing bytes", ErrStateCorrupt, d.Remaining())
	}
	return s, nil
}

// retention is the retention volume's files. Its methods do file I/O: they
// run only inside an Op.
type retention struct {
	fs    fsys.FS
	dir   string
	reach int // Config.ReachPoints
}

func stateName(machine string) string { return url.PathEscape(machine) + stateSuffix }

// ensureDir makes the retention directory if it is missing. Its own
// entry is the deployment's to make durable (an installer makes the
// volume's directory once), as for every component's state directory.
func (r retention) ensureDir() error {
	if err := r.fs.MkdirAll(r.dir, 0o755); err != nil {
		return clean("make retention directory", err)
	}
	return nil
}

// write replaces machine's state file durably: once it returns nil, a
// crash cannot take s back.
func (r retention) write(s state) (err error) {
	if err := r.ensureDir(); err != nil {
		return err
	}
	name := stateName(s.Machine)
	tmp := filepath.Join(r.dir, name+tmpSuffix)
	f, err := r.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return clean("create state", err)
	}
	defer func() {
		if err != nil {
			_ = r.fs.Remove(tmp)
		}
	}()
	b := s.marshal()
	if n, err := f.Write(b); err != nil || n != len(b) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
		}
		return clean("write state", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return clean("fsync state", err)
	}
	if err := f.Close(); err != nil {
		return clean("close state", err)
	}
	if err := r.fs.Rename(tmp, filepath.Join(r.dir, name)); err != nil {
		return clean("rename state", err)
	}
	if err := fsys.SyncDir(r.fs, r.dir); err != nil {
		return clean("fsync retention directory", err)
	}
	return nil
}

// loaded is what load finds: the machines whose state reads, with what is
// known of their journals, and for each file that does not read, why.
type loaded struct {
	states   []state  // by file name
	journals []jinfo  // states[i]'s
	broken   []string // "<file>: <reason>", by file name
}

// load reads every state file and its journal. A missing directory is an
// empty volume; temporary files (a write a crash interrupted) are removed,
// and so is the journal of a machine already failed back.
func (r retention) load() (loaded, error) {
	var out loaded
	ents, err := r.fs.ReadDir(r.dir)
	if fsys.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return out, clean("list retention directory", err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, tmpSuffix):
			if err := r.fs.Remove(filepath.Join(r.dir, name)); err != nil {
				return out, clean("remove "+name, err)
			}
		case strings.HasSuffix(name, stateSuffix):
			b, err := r.fs.ReadFile(filepath.Join(r.dir, name))
			if err != nil {
				return out, clean("read "+name, err)
			}
			s, err := unmarshalState(b)
			if err == nil && stateName(s.Machine) != name {
				err = fmt.Errorf("%w: file names machine %q", ErrStateCorrupt, s.Machine)
			}
			var j jinfo
			if err == nil {
				_, j, err = r.loadJournal(s.Machine)
			}
			switch {
			case err != nil:
			case s.FailedBack != "" && j.Bytes > 0:
				j, err = r.rewriteJournal(s.Machine, nil)
			case len(s.Points) > 0 && s.Rollback == "":
				// An apply that a crash cut after its state was durable
				// did not trim.
				_, _, reach := keepPoints(s.Points, r.reach)
				j, err = r.trimJournal(s.Machine, j, reach)
			}
			if err != nil && !errors.Is(err, ErrStateCorrupt) {
				return out, err // I/O: the load is tried again
			}
			if err != nil {
				out.broken = append(out.broken, name+": "+err.Error())
				continue
			}
			out.states = append(out.states, s)
			out.journals = append(out.journals, j)
		}
	}
	return out, nil
}

// clean drops the file path from an OS error (paths differ between runs
// and would make the trace nondeterministic), keeping the errno.
func clean(op string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("mastertarget: %s: %w", op, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return fmt.Errorf("mastertarget: %s: %w", op, le.Err)
	}
	return fmt.Errorf("mastertarget: %s: %w", op, err)
}
