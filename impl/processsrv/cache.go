package processsrv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/fsys"
)

// The cache disk: one directory per machine (its name path-escaped), holding
//
//	<seq %020d>.item   a cached item: record header + the item's bytes
//	<seq %020d>.free   an uploaded item's file kept to be written over by a
//	                   later item (recycled, see Config.RecycleFiles); the
//	                   rename from .item is fsynced before any reuse
//	acked              the machine's highest acknowledged seq (state record)
//	*.tmp              a write that a crash interrupted: removed on scan
//
// and, at the top, epoch: the cache disk's epoch (proto.ItemAck.Epoch), a
// random number written when the server first finds the disk without one.
//
// A machine's highest acknowledged seq is max(acked file, highest .item
// file): the state file only has to be brought up to date before the
// highest .item file is deleted, so while a backlog drains no state write
// is needed — which is also what lets a full disk free itself: deleting the
// lower files needs no new space.

// Item record header: magic "V2AC", version, the codec the item is to be
// sealed with (batch.Codec; 0: the server's Config.Codec), 2 reserved
// bytes, item length (uint32 BE), CRC-32C of the item (uint32 BE). The
// codec is kept with the item so that a restart seals the backlog as the
// machine's policy asked.
const (
	recordHeaderLen = 16
	recordVersion   = 1
	itemSuffix      = ".item"
	freeSuffix      = ".free"
	tmpSuffix       = ".tmp"
	stateFile       = "acked"
	stateLen        = 16 // "V2AK", seq uint64 BE, CRC-32C of the 12 bytes before it
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordHeader is the header of a cache file holding item.
func recordHeader(item []byte, codec batch.Codec) [recordHeaderLen]byte {
	return recordHeaderCRC(len(item), codec, crc32.Checksum(item, castagnoli))
}

// recordHeaderCRC is the header of a cache file holding an item of n
// bytes whose CRC-32C is crc.
func recordHeaderCRC(n int, codec batch.Codec, crc uint32) [recordHeaderLen]byte {
	var h [recordHeaderLen]byte
	copy(h[:], "V2AC")
	h[4] = recordVersion
	h[5] = byte(codec)
	binary.BigEndian.PutUint32(h[8:], uint32(n))
	binary.BigEndian.PutUint32(h[12:], crc)
	return h
}

// openRecord checks a cache file's header and CRC and returns the item it
// holds (aliasing rec) and the codec it is to be sealed with.
func openRecord(rec []byte) ([]byte, batch.Codec, error) {
	if len(rec) < recordHeaderLen || string(rec[:4]) != "V2AC" || rec[4] != recordVersion {
		return nil, 0, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(rec[8:])
	if uint64(len(rec)-recordHeaderLen) != uint64(n) {
		return nil, 0, fmt.Errorf("%w: %d item bytes, header says %d", ErrCorrupt, len(rec)-recordHeaderLen, n)
	}
	item := rec[recordHeaderLen:]
	if crc32.Checksum(item, castagnoli) != binary.BigEndian.Uint32(rec[12:]) {
		return nil, 0, fmt.Errorf("%w: CRC-32C mismatch", ErrCorrupt)
	}
	return item, batch.Codec(rec[5]), nil
}

// cacheFiles is the cache directory's file I/O. It holds only what never
// changes after New (the file system, the directory, the write function),
// so an Op may take a copy and use it outside the actor: every method that
// writes, fsyncs or reads runs inside an Op's Run, never in Handle.
type cacheFiles struct {
	fs  fsys.FS
	dir string
	// write writes p to f; tests replace it to simulate a full disk
	// (ENOSPC after a partial write, as the OS does).
	write func(f fsys.File, p []byte) (int, error)
}

// cacheDisk is the cache directory as the actor keeps it: its files, and
// which machine directories are known to exist (so that an Op need not
// create and fsync them again). dirsMade is the actor's: ops get a copy of
// the answer they need and report the directories they made.
type cacheDisk struct {
	cacheFiles
	dirsMade map[string]bool
}

func newCacheDisk(fsy fsys.FS, dir string) *cacheDisk {
	return &cacheDisk{cacheFiles: cacheFiles{fs: fsy, dir: dir, write: fsys.File.Write}, dirsMade: map[string]bool{}}
}

// checkMachineName refuses names that cannot be a blob name prefix
// (<machine>/<seq>) or that are not a plain name.
func checkMachineName(m string) error {
	if m == "" || m == "." || m == ".." || len(m) > 200 || strings.ContainsAny(m, "/\\") {
		return fmt.Errorf("%w: %q", ErrMachineName, m)
	}
	for _, r := range m {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %q", ErrMachineName, m)
		}
	}
	return nil
}

func (c cacheFiles) machineDir(m string) string { return filepath.Join(c.dir, url.PathEscape(m)) }

func itemName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, itemSuffix) }

func (c cacheFiles) itemPath(m string, seq uint64) string {
	return filepath.Join(c.machineDir(m), itemName(seq))
}

// freePath is where the file of machine m's uploaded item seq waits to be
// recycled.
func (c cacheFiles) freePath(m string, seq uint64) string {
	return filepath.Join(c.machineDir(m), fmt.Sprintf("%020d%s", seq, freeSuffix))
}

// ensureDir creates a machine's directory, durably, unless known says it
// exists.
func (c cacheFiles) ensureDir(m string, known bool) error {
	if known {
		return nil
	}
	if err := c.fs.MkdirAll(c.dir, 0o700); err != nil {
		return clean("create cache directory", err)
	}
	d := c.machineDir(m)
	if _, err := c.fs.Stat(d); err != nil {
		if err := c.fs.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return clean("create machine directory", err)
		}
		if err := c.syncDir(c.dir); err != nil {
			return err
		}
	}
	return nil
}

// stageItem writes item, whose CRC-32C is crc, as machine m's item seq,
// to be sealed with codec, without fsync, and returns the open file and the path it was written
// to: the free file of uploaded item reuse (0: none) when it is there,
// else the item's temporary name. The item is not durable until
// commitItem and then syncMachineDir.
func (c cacheFiles) stageItem(m string, seq uint64, item []byte, codec batch.Codec, crc uint32, dirKnown bool, reuse uint64) (fsys.File, string, error) {
	if err := c.ensureDir(m, dirKnown); err != nil {
		return nil, "", fmt.Errorf("item %d of %s: %w", seq, m, err)
	}
	h := recordHeaderCRC(len(item), codec, crc)
	if reuse != 0 {
		p := c.freePath(m, reuse)
		f, err := c.stageTo(p, true, h[:], item)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("item %d of %s: %w", seq, m, err)
		}
		// The free file is gone (removed by hand?): write a new one.
	}
	p := c.itemPath(m, seq) + tmpSuffix
	f, err := c.stageTo(p, false, h[:], item)
	if err != nil {
		return nil, "", fmt.Errorf("item %d of %s: %w", seq, m, err)
	}
	return f, p, nil
}

// commitItem fsyncs an item staged at path from and renames it to its
// final name. The rename is durable only after syncMachineDir.
func (c cacheFiles) commitItem(m string, seq uint64, from string, f fsys.File) error {
	if err := c.finishFrom(from, c.machineDir(m), itemName(seq), f); err != nil {
		return fmt.Errorf("item %d of %s: %w", seq, m, err)
	}
	return nil
}

// abortItem drops a staged (at path from) or committed, not yet durable,
// item's files.
func (c cacheFiles) abortItem(m string, seq uint64, from string, f fsys.File) {
	if f != nil {
		f.Close()
	}
	c.fs.Remove(from)
	c.fs.Remove(c.itemPath(m, seq))
}

// syncMachineDir makes the renames of machine m's committed items durable.
func (c cacheFiles) syncMachineDir(m string) error { return c.syncDir(c.machineDir(m)) }

// writeAcked persists machine m's highest acknowledged seq.
func (c cacheFiles) writeAcked(m string, acked uint64, dirKnown bool) error {
	if err := c.ensureDir(m, dirKnown); err != nil {
		return err
	}
	var b [stateLen]byte
	copy(b[:], "V2AK")
	binary.BigEndian.PutUint64(b[4:], acked)
	binary.BigEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
	if err := c.writeAtomic(c.machineDir(m), stateFile, b[:]); err != nil {
		return fmt.Errorf("acked state of %s: %w", m, err)
	}
	return nil
}

// removeItem deletes a cached item. A missing file is not an error (a
// crash between the delete and its bookkeeping, then a retry). The delete
// is not fsynced: if a crash undoes it, the item is uploaded once more,
// which Put allows (sealing a name twice gives the same bytes).
func (c cacheFiles) removeItem(m string, seq uint64) error {
	if err := c.fs.Remove(c.itemPath(m, seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return clean(fmt.Sprintf("remove item %d of %s", seq, m), err)
	}
	return nil
}

// writeAtomic replaces dir/name durably: stage, finish, directory fsync.
func (c cacheFiles) writeAtomic(dir, name string, parts ...[]byte) error {
	f, err := c.stage(dir, name, parts...)
	if err != nil {
		return err
	}
	if err := c.finish(dir, name, f); err != nil {
		return err
	}
	return c.syncDir(dir)
}

// stage writes parts to dir/name.tmp (no fsync) and returns the open file.
// On failure the partial file is removed.
func (c cacheFiles) stage(dir, name string, parts ...[]byte) (fsys.File, error) {
	return c.stageTo(filepath.Join(dir, name+tmpSuffix), false, parts...)
}

// stageTo writes parts to path (no fsync) and returns the open file. With
// reuse, path is an existing file (a recycled one), written over from its
// start and cut to the new length: its pages are reused, not freed and
// allocated again as O_TRUNC or a new file would. On failure the file at
// path is removed: a partial file must neither count nor be found by a
// scan.
func (c cacheFiles) stageTo(path string, reuse bool, parts ...[]byte) (_ fsys.File, err error) {
	flag := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if reuse {
		flag = os.O_WRONLY
	}
	f, err := c.fs.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, clean("create", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			c.fs.Remove(path)
		}
	}()
	var size int64
	for _, p := range parts {
		size += int64(len(p))
		for len(p) > 0 {
			n, werr := c.write(f, p)
			if werr != nil {
				return nil, clean("write", werr)
			}
			if n == 0 {
				return nil, clean("write", io.ErrShortWrite)
			}
			p = p[n:]
		}
	}
	if reuse {
		if err := f.Truncate(size); err != nil {
			return nil, clean("truncate", err)
		}
	}
	return f, nil
}

// finish fsyncs and closes a file staged as dir/name.tmp and renames it
// to dir/name. On failure the temporary file is removed.
func (c cacheFiles) finish(dir, name string, f fsys.File) error {
	return c.finishFrom(filepath.Join(dir, name+tmpSuffix), dir, name, f)
}

// finishFrom fsyncs and closes a file staged at path tmp and renames it to
// dir/name. On failure the staged file is removed.
func (c cacheFiles) finishFrom(tmp, dir, name string, f fsys.File) (err error) {
	defer func() {
		if err != nil {
			c.fs.Remove(tmp)
		}
	}()
	if err := f.Sync(); err != nil {
		f.Close()
		return clean("fsync", err)
	}
	if err := f.Close(); err != nil {
		return clean("close", err)
	}
	if err := c.fs.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return clean("rename", err)
	}
	return nil
}

func (c cacheFiles) syncDir(dir string) error {
	d, err := c.fs.Open(dir)
	if err != nil {
		return clean("open directory", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return clean("fsync directory", err)
	}
	return nil
}

// clean drops the file path from an OS error (paths differ between runs
// and would make the trace nondeterministic) and keeps the errno, so that
// errors.Is(err, syscall.ENOSPC) still works.
func clean(op string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("processsrv: %s: %w", op, pe.Err)
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return fmt.Errorf("processsrv: %s: %w", op, le.Err)
	}
	return fmt.Errorf("processsrv: %s: %w", op, err)
}

const epochFile = "epoch"

// epoch returns the cache disk's epoch, making one (from draw, never 0) if
// the disk has none: a new or a lost-and-replaced cache disk.
func (c cacheFiles) epoch(draw func() uint64) (uint64, error) {
	if err := c.fs.MkdirAll(c.dir, 0o700); err != nil {
		return 0, clean("create cache directory", err)
	}
	b, err := c.fs.ReadFile(filepath.Join(c.dir, epochFile))
	if err == nil && len(b) == 8 && binary.BigEndian.Uint64(b) != 0 {
		return binary.BigEndian.Uint64(b), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, clean("read epoch", err)
	}
	e := draw() | 1
	if err := c.writeAtomic(c.dir, epochFile, binary.BigEndian.AppendUint64(nil, e)); err != nil {
		return 0, fmt.Errorf("processsrv: write epoch: %w", err)
	}
	return e, nil
}

// isNoSpace reports whether err is the disk (or the quota) being full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// scannedMachine is what the cache disk holds for one machine.
type scannedMachine struct {
	name      string
	acked     uint64 // max(state file, highest item)
	persisted uint64 // the state file's value
	items     []scannedItem
}

type scannedItem struct {
	seq       uint64
	fileBytes int64
}

// scan reads the cache directory after a (re)start: every machine (whose
// directory therefore exists), its acknowledged seq and its cached items in
// seq order. It removes the temporary files of interrupted writes.
// Machines come sorted by name.
func (c cacheFiles) scan() ([]scannedMachine, error) {
	if err := c.fs.MkdirAll(c.dir, 0o700); err != nil {
		return nil, clean("create cache directory", err)
	}
	dirs, err := c.fs.ReadDir(c.dir)
	if err != nil {
		return nil, clean("read cache directory", err)
	}
	var out []scannedMachine
	var errs []error
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		name, err := url.PathUnescape(d.Name())
		if err != nil || checkMachineName(name) != nil {
			errs = append(errs, fmt.Errorf("processsrv: cache directory entry %q is not a machine", d.Name()))
			continue
		}
		sm, err := c.scanMachine(name)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, sm)
	}
	slices.SortFunc(out, func(a, b scannedMachine) int { return strings.Compare(a.name, b.name) })
	return out, errors.Join(errs...)
}

func (c cacheFiles) scanMachine(m string) (scannedMachine, error) {
	sm := scannedMachine{name: m}
	dir := c.machineDir(m)
	ents, err := c.fs.ReadDir(dir)
	if err != nil {
		return sm, clean("read machine directory "+m, err)
	}
	var errs []error
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, tmpSuffix), strings.HasSuffix(n, freeSuffix):
			// An interrupted write, or a file kept for recycling (a new
			// life starts with none: they may hold a torn write).
			if err := c.fs.Remove(filepath.Join(dir, n)); err != nil {
				errs = append(errs, clean("remove interrupted write of "+m, err))
			}
		case n == stateFile:
			b, err := c.fs.ReadFile(filepath.Join(dir, n))
			if err != nil {
				errs = append(errs, clean("read acked state of "+m, err))
				continue
			}
			if len(b) != stateLen || string(b[:4]) != "V2AK" ||
				crc32.Checksum(b[:12], castagnoli) != binary.BigEndian.Uint32(b[12:]) {
				errs = append(errs, fmt.Errorf("%w: acked state of %s", ErrCorrupt, m))
				continue
			}
			sm.persisted = binary.BigEndian.Uint64(b[4:])
		case strings.HasSuffix(n, itemSuffix):
			seq, err := strconv.ParseUint(strings.TrimSuffix(n, itemSuffix), 10, 64)
			if err != nil || seq == 0 {
				errs = append(errs, fmt.Errorf("processsrv: stray file %q in the cache of %s", n, m))
				continue
			}
			info, err := e.Info()
			if err != nil {
				errs = append(errs, clean("stat item of "+m, err))
				continue
			}
			sm.items = append(sm.items, scannedItem{seq: seq, fileBytes: info.Size()})
		}
	}
	slices.SortFunc(sm.items, func(a, b scannedItem) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	sm.acked = sm.persisted
	if n := len(sm.items); n > 0 && sm.items[n-1].seq > sm.acked {
		sm.acked = sm.items[n-1].seq
	}
	return sm, errors.Join(errs...)
}

// readFile reads a cached item file into buf (grown as needed) and returns
// the buffer holding it. It runs inside an Op.
func readFile(fsy fsys.FS, path string, buf []byte) ([]byte, error) {
	f, err := fsy.Open(path)
	if err != nil {
		return buf, clean("open item", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return buf, clean("stat item", err)
	}
	n := int(st.Size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(f, buf); err != nil {
		return buf, clean("read item", err)
	}
	return buf, nil
}

// stagedItem is an item the group commit is to make durable: a copy of
// what the actor knew when it started the commit.
type stagedItem struct {
	machine string
	seq     uint64
	data    []byte // the item, as received; not modified by anyone
	codec   batch.Codec
	// crc is data's CRC-32C when crcKnown (taken from the frame it came
	// in, wire.SpanCRC); else the commit computes it.
	crc      uint32
	crcKnown bool
	dirKnown bool // the machine's directory exists (cacheDisk.dirsMade)
	// reuse is the uploaded item whose free file the item is written
	// into (0: a new file). The commit uses it up whatever happens: it
	// becomes the item's file or is removed.
	reuse uint64
}

// committed is the group commit's outcome for one machine.
type committed struct {
	machine string
	// upTo is the highest seq made durable (0: none). Items are committed
	// in order, so every item of the batch up to it is durable.
	upTo uint64
	// err says why the machine's items after upTo are not durable; stage
	// says it happened while writing them (not at the fsyncs).
	err   error
	stage bool
	// dirMade: the op created the machine's directory (durably).
	dirMade bool
}

// commitBatch is the group commit's disk work; it runs in an Op, outside
// the actor. For each item, in order: write it under its temporary name;
// then fsync and rename each written item; then fsync each machine
// directory touched. A machine whose write fails keeps the items before
// the failed one (they are committed) and loses the rest; a machine whose
// fsync or rename fails loses every item of the batch (its files are
// removed). Machines come in the order of their first item.
func (c cacheFiles) commitBatch(items []stagedItem) []committed {
	var out []committed
	idx := map[string]int{}
	type open struct {
		it   stagedItem
		f    fsys.File
		from string // where it was staged
	}
	var written []open
	known := map[string]bool{}
	for _, it := range items {
		i, ok := idx[it.machine]
		if !ok {
			i = len(out)
			idx[it.machine] = i
			out = append(out, committed{machine: it.machine})
		}
		if out[i].err != nil {
			if it.reuse != 0 {
				c.fs.Remove(c.freePath(it.machine, it.reuse))
			}
			continue // a write of this machine failed: the rest waits
		}
		crc := it.crc
		if !it.crcKnown {
			crc = crc32.Checksum(it.data, castagnoli)
		}
		f, from, err := c.stageItem(it.machine, it.seq, it.data, it.codec, crc, it.dirKnown || known[it.machine], it.reuse)
		if err != nil {
			out[i].err, out[i].stage = err, true
			continue
		}
		if !it.dirKnown && !known[it.machine] {
			out[i].dirMade = true
		}
		known[it.machine] = true
		written = append(written, open{it, f, from})
	}
	failed := map[string]error{}
	for _, w := range written {
		m := w.it.machine
		if failed[m] != nil {
			c.abortItem(m, w.it.seq, w.from, w.f)
			continue
		}
		if err := c.commitItem(m, w.it.seq, w.from, w.f); err != nil {
			failed[m] = err
			c.abortItem(m, w.it.seq, w.from, nil)
		}
	}
	for i := range out {
		m := out[i].machine
		if failed[m] == nil && known[m] {
			if err := c.syncMachineDir(m); err != nil {
				failed[m] = err
			}
		}
	}
	for _, w := range written {
		m := w.it.machine
		if failed[m] != nil {
			c.abortItem(m, w.it.seq, w.from, nil) // not durable: its renamed file too
			continue
		}
		out[idx[m]].upTo = w.it.seq
	}
	for i := range out {
		if err := failed[out[i].machine]; err != nil {
			out[i].err, out[i].stage = err, false
		}
	}
	return out
}

// removed is a cleanup op's outcome (removeUploaded).
type removed struct {
	ackFirst   uint64   // the acked seq it was to persist first (0: none)
	ackWritten uint64   // the acked seq it persisted (0: none)
	ackErr     error    // why it could not
	deleted    []uint64 // item files gone: removed or recycled
	recycled   []uint64 // of them, those renamed to free files, durably
	planned    int      // files it was asked to recycle
	failed     []uint64 // files kept, with errs
	errs       []error
}

// uploadedFile is an uploaded item's file for removeUploaded: deleted, or
// recycled (renamed to its free name, to be written over by a later item).
type uploadedFile struct {
	seq     uint64
	recycle bool
}

// removeUploaded deletes or recycles machine m's uploaded item files, in
// order; it runs in an op. When ackFirst is not 0 it first persists it as
// the acked seq, and keeps the last file if that fails: the highest file
// is what a restart would otherwise learn the acknowledged position from.
//
// A recycled file's rename is made durable (the machine directory is
// fsynced) before the op returns: a free file is written over by a later
// item, and a crash must not bring back its old .item name on the new
// bytes. If that fsync fails, the free files are removed instead (a crash
// may then bring the old item back whole: it is uploaded once more).
// Deletions are not fsynced: if a crash undoes one, the item is uploaded
// once more, which Put allows (sealing a name twice gives the same bytes).
func (c cacheFiles) removeUploaded(m string, files []uploadedFile, ackFirst uint64, dirKnown bool) removed {
	out := removed{ackFirst: ackFirst}
	for i, f := range files {
		if f.recycle {
			out.planned++
		}
		if i == len(files)-1 && ackFirst != 0 {
			if err := c.writeAcked(m, ackFirst, dirKnown); err != nil {
				out.ackErr = err
				continue
			}
			out.ackWritten = ackFirst
		}
		if f.recycle {
			err := c.fs.Rename(c.itemPath(m, f.seq), c.freePath(m, f.seq))
			if err == nil {
				out.deleted, out.recycled = append(out.deleted, f.seq), append(out.recycled, f.seq)
				continue
			}
			// Not renamed (gone already, or the rename failed): deleted
			// as any other.
		}
		if err := c.removeItem(m, f.seq); err != nil {
			out.failed, out.errs = append(out.failed, f.seq), append(out.errs, err)
			continue
		}
		out.deleted = append(out.deleted, f.seq)
	}
	if len(out.recycled) > 0 {
		if err := c.syncMachineDir(m); err != nil {
			for _, seq := range out.recycled {
				c.fs.Remove(c.freePath(m, seq))
			}
			out.recycled = nil
		}
	}
	return out
}
