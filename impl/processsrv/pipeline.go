package processsrv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// entryState is where a cached item is in the pipeline.
type entryState uint8

const (
	stateCached    entryState = iota // on the cache disk, waiting for a pipeline slot
	stateSealing                     // a seal Op reads and seals it
	stateSealed                      // sealed, waiting for an upload slot (Config.SealAhead)
	stateUploading                   // a Put Op uploads it
	stateUploaded                    // in the cache container; its file awaits deletion
)

// entry is one cached item (one file on the cache disk).
type entry struct {
	seq       uint64
	fileBytes int64 // on the cache disk, header included
	rawBytes  int64 // the item's bytes
	state     entryState
	attempts  int       // failed seal/upload attempts in a row
	notBefore time.Time // backing off after a failure until then
	// data is the item as received, kept (within Config.RetainBytes) from
	// its group commit until its upload is confirmed, and codec the codec
	// it is to be sealed with; nil: the seal reads the cache file.
	data  []byte
	codec batch.Codec
}

// forget drops the item bytes an entry retains.
func (s *Server) forget(e *entry) {
	if e.data != nil {
		s.retainedBytes -= e.rawBytes
		e.data = nil
	}
}

// machine is one machine's stream as the process server has it.
type machine struct {
	name      string
	acked     uint64       // highest item cached durably (acknowledged)
	received  uint64       // highest item written (acked, or waiting for the group commit)
	from      runtime.Addr // where the machine's items last came from: acks go there
	persisted uint64       // the acked value in the state file
	hinted    uint64       // the last Uploaded.UpTo sent to the Azure side
	items     []*entry

	uploadedItems int64
	rawBytes      int64
	sealedBytes   int64
	codec         batch.Codec // of the latest item sealed
	lastErr       string

	// cleaning: a cleanup op deletes uploaded files; cleanDue: more were
	// uploaded meanwhile, so another starts when it completes.
	cleaning, cleanDue bool
	// free are the uploaded items whose files were recycled (renamed to
	// their free names, durably) and wait for the next group commit to
	// write new items into them.
	free []uint64
}

// backlog counts the items (and their bytes) not uploaded yet.
func (m *machine) backlog() (items, bytes int64) {
	for _, e := range m.items {
		if e.state != stateUploaded {
			items++
			bytes += e.rawBytes
		}
	}
	return items, bytes
}

// head is the next item to start: the first one waiting, so that a
// machine's items start in sequence order (a later item never overtakes
// one that is backing off).
func (m *machine) head() *entry {
	for _, e := range m.items {
		if e.state == stateCached {
			return e
		}
	}
	return nil
}

// uploadedUpTo is the highest seq such that every item up to it is in the
// cache container.
func (m *machine) uploadedUpTo() uint64 {
	for _, e := range m.items {
		if e.state != stateUploaded {
			return e.seq - 1
		}
	}
	return m.acked
}

func (m *machine) find(seq uint64) *entry {
	for _, e := range m.items {
		if e.seq == seq {
			return e
		}
	}
	return nil
}

// worker seals items: a batch.Sealer and a read buffer, handed to one Op at
// a time (Sealer is not safe for concurrent use).
type worker struct {
	sealer *batch.Sealer
	codec  batch.Codec // for records that name none: the server's Config.Codec
	buf    []byte
}

// sealed is a seal Op's result.
type sealed struct {
	data  []byte
	codec batch.Codec
}

// sealFile reads a cached item file, checks it and seals the item as the
// blob name into dst (reused from its start). It runs inside an Op: it
// touches only the worker and dst.
func (w *worker) sealFile(fsy fsys.FS, path, name string, dst []byte) (sealed, error) {
	buf, err := readFile(fsy, path, w.buf)
	w.buf = buf
	if err != nil {
		return sealed{}, err
	}
	return w.sealRecord(name, buf, dst)
}

// sealItem seals an item held in memory (entry.data) as the blob name
// into dst, reused from its start; it runs inside an Op.
func (w *worker) sealItem(name string, item []byte, codec batch.Codec, dst []byte) (sealed, error) {
	w.sealer.SetCodec(codec)
	out, err := w.sealer.Seal(dst[:0], name, item)
	return sealed{out, codec}, err
}

// sealRecord checks a cache record (header and CRC-32C) and seals the item
// it holds as the blob name into dst, reused from its start (nil: a new
// buffer); the upload owns the result.
func (w *worker) sealRecord(name string, rec, dst []byte) (sealed, error) {
	item, codec, err := openRecord(rec)
	if err != nil {
		return sealed{}, err
	}
	if codec == batch.CodecNone {
		codec = w.codec
	}
	w.sealer.SetCodec(codec)
	out, err := w.sealer.Seal(dst[:0], name, item)
	return sealed{out, codec}, err
}

type opKind uint8

const (
	opContainer opKind = iota
	opSeal
	opPut
	opCommit
	opCleanup
	opDropFree
)

// opInfo is what the server remembers of an Op in flight.
type opInfo struct {
	kind        opKind
	machine     string
	seq         uint64
	worker      *worker
	heldBytes   int64 // pipeline memory the Op's data takes
	sealedBytes int64
	buf         []byte         // opSeal: the buffer it seals into; opPut: the one it uploads
	batch       []*pendingItem // opCommit: the items it makes durable
}

func (s *Server) container() string { return s.cfg.ContainerPrefix + proto.ContainerCache }

// scrub removes the container name (never logged: it names the vault) from
// a storage error.
func (s *Server) scrub(err error) string {
	msg := err.Error()
	if c := s.container(); c != "" {
		msg = strings.ReplaceAll(msg, c, "<cache container>")
	}
	return msg
}

func (s *Server) createContainer(ctx runtime.Context) {
	st, c := s.cfg.Store, s.container()
	s.ops.Start(ctx, runtime.Op{Name: "create cache container", Peer: s.cfg.StoragePeer,
		Run: func(ctx context.Context) (any, error) { return nil, st.CreateContainer(ctx, c) }}, &opInfo{kind: opContainer})
}

func (s *Server) containerPending() bool {
	return s.ops.Any(func(o *opInfo) bool { return o.kind == opContainer })
}

// pump starts as many items as the pipeline has room for, taking machines
// in turn, and arms the retry timer for items backing off.
func (s *Server) pump(ctx runtime.Context) {
	if !s.containerReady {
		return
	}
	now := ctx.Now()
	for s.inFlight < s.cfg.MaxUploads+s.cfg.SealAhead {
		m, e := s.nextItem(now)
		if e == nil {
			break
		}
		s.startSeal(ctx, m, e)
	}
	var wake time.Time
	for _, name := range s.order {
		if e := s.machines[name].head(); e != nil && e.notBefore.After(now) && (wake.IsZero() || e.notBefore.Before(wake)) {
			wake = e.notBefore
		}
	}
	if !wake.IsZero() {
		s.armRetry(ctx, wake)
	}
}

// nextItem picks the next item to start, round-robin over machines.
func (s *Server) nextItem(now time.Time) (*machine, *entry) {
	n := len(s.order)
	for i := 0; i < n; i++ {
		idx := (s.rr + i) % n
		m := s.machines[s.order[idx]]
		if e := m.head(); e != nil && !e.notBefore.After(now) {
			s.rr = (idx + 1) % n
			return m, e
		}
	}
	return nil, nil
}

func (s *Server) startSeal(ctx runtime.Context, m *machine, e *entry) {
	var w *worker
	if n := len(s.workers); n > 0 {
		w, s.workers = s.workers[n-1], s.workers[:n-1]
	} else {
		sealer, err := batch.NewSealer(s.cfg.Key, s.cfg.Codec)
		if err != nil { // only a bad key or codec: nothing will ever seal
			s.fail(ctx, "cannot make a sealer", err, "err", err.Error())
			return
		}
		w = &worker{sealer: sealer, codec: s.cfg.Codec}
	}
	var dst []byte
	if n := len(s.spare); n > 0 {
		dst, s.spare = s.spare[n-1], s.spare[:n-1]
	}
	name := proto.CacheBlobName(m.name, e.seq)
	e.state = stateSealing
	s.inFlight++
	if item, codec := e.data, e.codec; item != nil {
		// The item's bytes are retained already (retainedBytes): no read,
		// no new memory but the sealed output.
		s.ops.Start(ctx, runtime.Op{Name: "seal " + name,
			Run: func(context.Context) (any, error) { return w.sealItem(name, item, codec, dst) }},
			&opInfo{kind: opSeal, machine: m.name, seq: e.seq, worker: w})
		return
	}
	path, fsy := s.disk.itemPath(m.name, e.seq), s.disk.fs
	s.hold(e.fileBytes)
	s.ops.Start(ctx, runtime.Op{Name: "seal " + name, Disk: &runtime.DiskIO{Device: runtime.DeviceCache, Bytes: e.fileBytes},
		Run: func(context.Context) (any, error) { return w.sealFile(fsy, path, name, dst) }},
		&opInfo{kind: opSeal, machine: m.name, seq: e.seq, worker: w, heldBytes: e.fileBytes})
}

// hold and release account the bytes the pipeline keeps in memory: an
// item's bytes while it is read back from its cache file and sealed, then
// its sealed bytes until the upload finishes. Items sealed from the bytes
// as received count in retainedBytes instead.
func (s *Server) hold(n int64) {
	s.memBytes += n
	s.peakMemBytes = max(s.peakMemBytes, s.memBytes)
}

func (s *Server) release(n int64) { s.memBytes -= n }

// done applies an Op's result.
func (s *Server) done(ctx runtime.Context, ev runtime.Done) {
	info, ok := s.ops.Complete(ev)
	if !ok {
		ctx.Log().Debug("processsrv: ignored completion of an unknown op", "op", ev.Name)
		return
	}
	switch info.kind {
	case opContainer:
		if ev.Err != nil {
			s.containerTries++
			d := backoff(s.containerTries, ctx.Rand())
			s.errs++
			s.lastErr = "create cache container: " + s.scrub(ev.Err)
			ctx.Log().Warn("processsrv: cache container not created; retrying", "attempt", s.containerTries, "in", d, "err", s.scrub(ev.Err))
			s.armRetry(ctx, ctx.Now().Add(d))
			return
		}
		s.containerReady = true
		ctx.Log().Info("processsrv: cache container ready")
		s.pump(ctx)
	case opSeal:
		s.workers = append(s.workers, info.worker)
		s.release(info.heldBytes)
		m := s.machines[info.machine]
		e := m.find(info.seq)
		if ev.Err != nil {
			s.inFlight--
			s.failed(ctx, m, e, "seal", ev.Err.Error())
			s.pump(ctx)
			return
		}
		out := ev.Value.(sealed)
		m.codec = out.codec
		if s.uploading < s.cfg.MaxUploads {
			s.startPut(ctx, m, e, out.data)
			return
		}
		// Every upload slot is taken (only with SealAhead): it waits,
		// sealed, for the next one to free.
		e.state = stateSealed
		s.hold(int64(len(out.data)))
		s.sealedQ = append(s.sealedQ, sealedItem{machine: m.name, seq: e.seq, data: out.data})
	case opCommit:
		s.commitDone(ctx, info.batch, ev.Value.([]committed))
	case opCleanup:
		s.cleanupDone(ctx, s.machines[info.machine], ev.Value.(removed))
		s.pump(ctx)
	case opDropFree: // a file not removed is removed by the next restart's scan
	case opPut:
		s.release(info.heldBytes)
		s.inFlight--
		s.uploading--
		if len(s.sealedQ) > 0 { // its slot goes to the item sealed first
			q := s.sealedQ[0]
			s.sealedQ = s.sealedQ[1:]
			s.release(int64(len(q.data)))
			qm := s.machines[q.machine]
			s.startPut(ctx, qm, qm.find(q.seq), q.data)
		}
		// The Put has returned: the store no longer reads the buffer.
		if len(s.spare) < s.cfg.MaxUploads+s.cfg.SealAhead {
			s.spare = append(s.spare, info.buf)
		}
		m := s.machines[info.machine]
		e := m.find(info.seq)
		if ev.Err != nil {
			s.failed(ctx, m, e, "upload", s.scrub(ev.Err))
			s.pump(ctx)
			return
		}
		e.state, e.attempts = stateUploaded, 0
		s.forget(e)
		m.uploadedItems++
		m.rawBytes += e.rawBytes
		m.sealedBytes += info.sealedBytes
		s.rate.add(ctx.Now(), e.rawBytes)
		ctx.Log().Debug("processsrv: uploaded item", "machine", m.name, "seq", e.seq, "raw_bytes", e.rawBytes, "sealed_bytes", info.sealedBytes)
		s.cleanup(ctx, m)
		s.pump(ctx)
	}
}

// sealedItem is an item sealed and waiting for an upload slot.
type sealedItem struct {
	machine string
	seq     uint64
	data    []byte
}

func (s *Server) startPut(ctx runtime.Context, m *machine, e *entry, sealed []byte) {
	e.state = stateUploading
	s.uploading++
	n := int64(len(sealed))
	s.hold(n)
	st, c, name := s.cfg.Store, s.container(), proto.CacheBlobName(m.name, e.seq)
	s.ops.Start(ctx, runtime.Op{Name: "upload " + name, Peer: s.cfg.StoragePeer, Bytes: n, Run: func(ctx context.Context) (any, error) {
		_, err := st.Put(ctx, c, name, sealed, blob.WriteOptions{})
		return nil, err
	}}, &opInfo{kind: opPut, machine: m.name, seq: e.seq, heldBytes: n, sealedBytes: n, buf: sealed})
}

// failed puts an item back to wait, backing off: it is retried in order,
// and the items after it wait for it.
func (s *Server) failed(ctx runtime.Context, m *machine, e *entry, what, msg string) {
	e.state = stateCached
	e.attempts++
	d := backoff(e.attempts, ctx.Rand())
	e.notBefore = ctx.Now().Add(d)
	s.errs++
	s.lastErr = fmt.Sprintf("%s item %d of %s: %s", what, e.seq, m.name, msg)
	m.lastErr = s.lastErr
	ctx.Log().Warn("processsrv: "+what+" failed; retrying", "machine", m.name, "seq", e.seq, "attempt", e.attempts, "in", d, "err", msg)
}

// cleanup deletes the files of a machine's uploaded items, in an op (one
// per machine at a time), and tells the Azure side how far the cache
// container now has the stream. Before the highest file goes, the
// acknowledged seq is persisted (in the same op, first), so that a restart
// still knows it.
func (s *Server) cleanup(ctx runtime.Context, m *machine) {
	if up := m.uploadedUpTo(); up > m.hinted {
		m.hinted = up
		ctx.Send(s.cfg.Azure, wire.Encode(&proto.Uploaded{Machine: m.name, UpTo: up}))
	}
	if m.cleaning {
		m.cleanDue = true
		return
	}
	m.cleanDue = false
	var up []uploadedFile
	var ackFirst uint64 // the acked seq to persist before the last file goes (0: none)
	recycle := max(0, s.cfg.RecycleFiles-s.freeFiles)
	if s.full {
		recycle = 0 // a full disk needs the space back
	}
	for i, e := range m.items {
		if e.state != stateUploaded {
			continue
		}
		up = append(up, uploadedFile{seq: e.seq, recycle: recycle > 0})
		if recycle > 0 {
			recycle--
			s.freeFiles++ // reserved; cleanupDone counts what the op did
		}
		if i == len(m.items)-1 && m.persisted < m.acked {
			ackFirst = m.acked
		}
	}
	if len(up) == 0 {
		return
	}
	files, name, dirKnown := s.disk.cacheFiles, m.name, s.disk.dirsMade[m.name]
	io := &runtime.DiskIO{Device: runtime.DeviceCache}
	if ackFirst != 0 {
		io.Bytes, io.Syncs = stateLen, 2 // the state file and its directory
	}
	if up[0].recycle {
		io.Syncs++ // the directory, for the renames to free files
	}
	m.cleaning = true
	s.ops.StartDurable(ctx, runtime.Op{Name: "cache-cleanup " + name, Disk: io, Run: func(context.Context) (any, error) {
		return files.removeUploaded(name, up, ackFirst, dirKnown), nil
	}}, &opInfo{kind: opCleanup, machine: name})
}

// dropFree removes every recycled file waiting for reuse: the disk is
// full, and they hold space no new item of their machines may come to use.
func (s *Server) dropFree(ctx runtime.Context) {
	type machineFree struct {
		name string
		seqs []uint64
	}
	var drop []machineFree
	for _, name := range s.order {
		if m := s.machines[name]; len(m.free) > 0 {
			drop = append(drop, machineFree{name, m.free})
			s.freeFiles -= len(m.free)
			m.free = nil
		}
	}
	if len(drop) == 0 {
		return
	}
	files := s.disk.cacheFiles
	s.ops.Start(ctx, runtime.Op{Name: "cache-drop-free", Disk: &runtime.DiskIO{Device: runtime.DeviceCache}, Run: func(context.Context) (any, error) {
		for _, d := range drop {
			for _, seq := range d.seqs {
				files.fs.Remove(files.freePath(d.name, seq))
			}
		}
		return nil, nil
	}}, &opInfo{kind: opDropFree})
}

// cleanupDone applies a cleanup op's outcome: the files it deleted leave
// the machine's items; a failure keeps the file and retries later.
func (s *Server) cleanupDone(ctx runtime.Context, m *machine, res removed) {
	m.cleaning = false
	s.freeFiles += len(res.recycled) - res.planned
	m.free = append(m.free, res.recycled...)
	if res.ackErr == nil && res.ackWritten != 0 {
		m.persisted = max(m.persisted, res.ackWritten)
	}
	if res.ackErr != nil {
		s.fail(ctx, "cannot persist acked seq; cached file kept", res.ackErr, "machine", m.name, "acked", res.ackFirst, "err", res.ackErr.Error())
	}
	gone := map[uint64]bool{}
	for _, seq := range res.deleted {
		gone[seq] = true
	}
	for i, seq := range res.failed {
		err := res.errs[i]
		s.fail(ctx, "cannot delete uploaded item; kept", err, "machine", m.name, "seq", seq, "err", err.Error())
	}
	keep := m.items[:0]
	for _, e := range m.items {
		if gone[e.seq] {
			s.usedBytes -= e.fileBytes
			continue
		}
		keep = append(keep, e)
	}
	clear(m.items[len(keep):])
	m.items = keep
	if res.ackErr != nil || len(res.failed) > 0 {
		s.cleanupTries++
		s.armRetry(ctx, ctx.Now().Add(backoff(s.cleanupTries, ctx.Rand())))
	} else {
		s.cleanupTries = 0
	}
	if m.cleanDue {
		s.cleanup(ctx, m)
	}
}

// retry runs when the retry timer fires: the container again if it is not
// there, deletions that failed, items whose back-off ended.
func (s *Server) retry(ctx runtime.Context) {
	if !s.containerReady && !s.containerPending() {
		s.createContainer(ctx)
	}
	for _, name := range s.order {
		m := s.machines[name]
		for _, e := range m.items {
			if e.state == stateUploaded {
				s.cleanup(ctx, m)
				break
			}
		}
	}
	s.pump(ctx)
}

// armRetry makes sure the retry timer fires at or before at.
func (s *Server) armRetry(ctx runtime.Context, at time.Time) {
	if !s.retryAt.IsZero() && !at.Before(s.retryAt) {
		return
	}
	s.retryAt = at
	s.timers.Set(ctx, timerRetry, at.Sub(ctx.Now())) // replaces a later one
}

// Back-off of retries: 1 s doubling to 1 min, with ±20 % jitter from the
// actor's seeded source (so many items failing together do not retry in
// lock-step, and runs stay repeatable).
const (
	backoffBase = time.Second
	backoffMax  = time.Minute
)

func backoff(attempt int, r *rand.Rand) time.Duration {
	d := backoffBase
	for i := 1; i < attempt && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	j := time.Duration(r.Int64N(int64(d)*2/5+1)) - d/5
	return d + j
}
