package mastertarget

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/wire"
)

// The retention volume holds one state file per attached machine,
// <RetentionDir>/<machine, path-escaped>.state: the machine's disks and the
// last stream item applied to them. It is replaced atomically (write to a
// temporary name, fsync, rename, fsync the directory) and carries a CRC-32C,
// so a torn or damaged file is found, never half-believed.

const (
	stateSuffix  = ".state"
	tmpSuffix    = ".tmp"
	stateVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// state is what the retention volume keeps of one machine.
type state struct {
	Machine      string
	Disks        []proto.TargetDisk
	Applied      uint64 // the last stream item applied to Disks
	LastBookmark string // the id of the last bookmark applied, "" for none
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
	b := e.Encoded()
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func unmarshalState(b []byte) (state, error) {
	if len(b) < 4 {
		return state{}, fmt.Errorf("%w: %d bytes", ErrStateCorrupt, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return state{}, fmt.Errorf("%w: checksum mismatch", ErrStateCorrupt)
	}
	d := wire.NewDecoder(body)
	if v := d.Uint(); v != stateVersion {
		return state{}, fmt.Errorf("%w: version %d, this build reads %d", ErrStateCorrupt, v, stateVersion)
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
	fs  fsys.FS
	dir string
}

func stateName(machine string) string { return url.PathEscape(machine) + stateSuffix }

// write replaces machine's state file durably: once it returns nil, a
// crash cannot take s back.
func (r retention) write(s state) (err error) {
	if err := r.fs.MkdirAll(r.dir, 0o755); err != nil {
		return clean("make retention directory", err)
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

// loaded is what load finds: the machines whose state reads, and for each
// file that does not, why.
type loaded struct {
	states []state  // by file name
	broken []string // "<file>: <reason>", by file name
}

// load reads every state file. A missing directory is an empty volume;
// temporary files (a write a crash interrupted) are removed.
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
			if err != nil {
				out.broken = append(out.broken, name+": "+err.Error())
				continue
			}
			out.states = append(out.states, s)
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
