package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blockdev"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	csAddr     runtime.Addr = "cs01:443"
	psAddr     runtime.Addr = "ps01:9443"
	machine                 = "vm01"
	vaultID                 = "vault-1"
	passphrase              = "correct horse battery"
)

// fakeGuest is a machine whose disks are temporary files; its Write goes
// through the installed filter first, as the simulator's guests do.
type fakeGuest struct {
	t         testing.TB
	devs      []*blockdev.File
	filter    *Filter
	freezes   int
	thaws     int
	freezeErr error
	onAttach  func(*Filter) // e.g. a gated write path registering its release hook
}

func newGuest(t testing.TB, sizes ...int64) *fakeGuest {
	t.Helper()
	g := &fakeGuest{t: t}
	dir := t.TempDir()
	for i, size := range sizes {
		p := filepath.Join(dir, fmt.Sprintf("disk%d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		d, err := blockdev.OpenFile(p, true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		g.devs = append(g.devs, d)
	}
	t.Cleanup(func() {
		if g.filter != nil {
			g.filter.CrashClose()
		}
	})
	return g
}

func (g *fakeGuest) Disks() []blockdev.Device {
	out := make([]blockdev.Device, len(g.devs))
	for i, d := range g.devs {
		out[i] = d
	}
	return out
}
func (g *fakeGuest) Filter() *Filter { return g.filter }
func (g *fakeGuest) Attach(f *Filter) {
	g.filter = f
	if g.onAttach != nil {
		g.onAttach(f)
	}
}
func (g *fakeGuest) Freeze() error {
	if g.freezeErr != nil {
		return g.freezeErr
	}
	g.freezes++
	return nil
}
func (g *fakeGuest) Thaw() { g.thaws++ }

// write is a guest write: captured, then on the disk.
func (g *fakeGuest) write(disk int, off int64, data []byte) {
	g.t.Helper()
	if g.filter != nil {
		g.filter.Capture(disk, off, data)
	}
	if _, err := g.devs[disk].WriteAt(data, off); err != nil {
		g.t.Fatal(err)
	}
}

// crash is a machine crash: the filter goes, the disks stay.
func (g *fakeGuest) crash() {
	g.filter.CrashClose()
	g.filter = nil
}

func (g *fakeGuest) image(disk int) []byte {
	g.t.Helper()
	b := make([]byte, g.devs[disk].Size())
	if _, err := g.devs[disk].ReadAt(b, 0); err != nil {
		g.t.Fatal(err)
	}
	return b
}

// fakePS follows the process server's stream rules: accept Seq ==
// acked+1, re-ack duplicates, answer a gap for items ahead, cache-full
// while full.
type fakePS struct {
	machine  string
	acked    uint64
	items    []*batch.Item // accepted, in order
	received []uint64      // every item seq that arrived
	hellos   int
	full     bool
	drop     func(seq uint64) bool // lose this transmission
	// epoch is the cache disk's epoch in every ack; fresh says the cache
	// holds no record of the machine (it was lost): a SyncStart of any seq
	// starts the stream.
	epoch uint64
	fresh bool
}

// loseCache is the process server losing its cache disk.
func (p *fakePS) loseCache() {
	p.acked, p.epoch, p.fresh = 0, p.epoch+1, true
}

func (p *fakePS) handle(t testing.TB, msgs []wire.Msg) []*proto.ItemAck {
	t.Helper()
	var acks []*proto.ItemAck
	for _, m := range msgs {
		switch m := m.(type) {
		case *proto.StreamHello:
			p.hellos++
			acks = append(acks, &proto.ItemAck{Machine: m.Machine, Acked: p.acked, Status: proto.AckOK, Epoch: p.epoch})
		case *proto.ItemMsg:
			p.received = append(p.received, m.Seq)
			if p.drop != nil && p.drop(m.Seq) {
				continue
			}
			status := proto.AckOK
			restart := false
			if p.fresh && m.Seq > p.acked+1 {
				it, err := batch.Unmarshal(m.Data)
				restart = err == nil && it.Kind == batch.KindSyncStart
			}
			switch {
			case m.Seq <= p.acked:
			case m.Seq > p.acked+1 && !restart:
				status = proto.AckGap
			case p.full:
				status = proto.AckCacheFull
			default:
				it, err := batch.Unmarshal(m.Data)
				if err != nil {
					t.Fatalf("item %d: %v", m.Seq, err)
				}
				if it.Seq != m.Seq || it.Machine != p.machine {
					t.Fatalf("item %d of %s in a message for %d", it.Seq, it.Machine, m.Seq)
				}
				p.items = append(p.items, it)
				p.acked, p.fresh = m.Seq, false
			}
			acks = append(acks, &proto.ItemAck{Machine: m.Machine, Acked: p.acked, Status: status, Epoch: p.epoch})
		default:
			t.Fatalf("process server got %T", m)
		}
	}
	return acks
}

// replica is the Azure side's model: it applies items strictly in order
// and answers SyncStart with the replica's checksums.
type replica struct {
	t          testing.TB
	machine    string
	disks      [][]byte
	applied    uint64
	taken      int // items of the process server's taken (applied or not)
	appliedLog uint64
	synced     bool
	gen        uint64
	points     []string
	perMsg     int // blocks per Checksums message
	out        []*proto.Checksums
	lastFresh  bool
	kinds      []batch.Kind
	marks      []mark // bookmarks and revokes applied, in log order
}

// mark is a bookmark or revoke record the replica applied.
type mark struct {
	ID     string
	Seq    uint64
	Kind   proto.Consistency
	Revoke bool
}

func (r *replica) apply(it *batch.Item) {
	r.t.Helper()
	// A newer sync's SyncStart may come past a gap: items the process
	// server lost (azuresvc does the same).
	if it.Seq != r.applied+1 && !(it.Kind == batch.KindSyncStart && it.Gen > r.gen && it.Seq > r.applied) {
		r.t.Fatalf("replica: item %d applied after %d", it.Seq, r.applied)
	}
	r.applied = it.Seq
	r.kinds = append(r.kinds, it.Kind)
	switch it.Kind {
	case batch.KindSyncStart:
		fresh := r.disks == nil
		if fresh {
			for _, s := range it.DiskSizes {
				r.disks = append(r.disks, make([]byte, s))
			}
		}
		r.gen, r.synced, r.lastFresh = it.Gen, false, fresh
		r.out = append(r.out, r.checksums(it.Gen, fresh)...)
	case batch.KindChunk:
		if it.Gen != r.gen {
			r.t.Fatalf("replica: chunk of gen %d during gen %d", it.Gen, r.gen)
		}
		for _, run := range it.Runs {
			copy(r.disks[it.Disk][run.Off:], run.Data)
		}
	case batch.KindSyncEnd:
		r.appliedLog, r.synced = it.LogFrom-1, true
	case batch.KindLog:
		if !r.synced {
			r.t.Fatalf("replica: log item %d before the sync ended", it.Seq)
		}
		for _, rec := range it.Records {
			if rec.Seq <= r.appliedLog {
				continue
			}
			switch rec.Type {
			case batch.RecWrite:
				copy(r.disks[rec.Disk][rec.Off:], rec.Data)
			case batch.RecBookmark:
				r.points = append(r.points, rec.BookmarkID)
				r.marks = append(r.marks, mark{ID: rec.BookmarkID, Seq: rec.Seq, Kind: rec.BookmarkKind})
			case batch.RecRevoke:
				r.marks = append(r.marks, mark{ID: rec.BookmarkID, Seq: rec.Seq, Revoke: true})
			}
			r.appliedLog = rec.Seq
		}
		r.appliedLog = max(r.appliedLog, it.Last)
	}
}

// sum is the Azure side's checksum of a block: proto's, the one rule.
func sum(b []byte) []byte {
	h := proto.BlockSum(b)
	return h[:]
}

func (r *replica) checksums(gen uint64, fresh bool) []*proto.Checksums {
	var out []*proto.Checksums
	for i, d := range r.disks {
		if fresh {
			out = append(out, &proto.Checksums{Machine: r.machine, Gen: gen, Fresh: true, Disk: uint16(i), BlockSize: 4096})
			continue
		}
		nb := len(d) / 4096
		for b0 := 0; b0 < nb; b0 += r.perMsg {
			m := &proto.Checksums{Machine: r.machine, Gen: gen, Disk: uint16(i), Off: int64(b0) * 4096, BlockSize: 4096}
			for b := b0; b < min(nb, b0+r.perMsg); b++ {
				m.Sums = append(m.Sums, sum(d[b*4096:(b+1)*4096])...)
			}
			out = append(out, m)
		}
	}
	out[len(out)-1].Final = true
	return out
}

// env is one agent driven by hand, with the process server and the Azure
// side modelled around it.
type env struct {
	t    *testing.T
	name string       // the machine
	addr runtime.Addr // its agent
	g    *fakeGuest
	cfg  Config
	a    *Agent
	d    *runtimetest.Driver
	ps   *fakePS
	az   *replica
	// auto runs the process server and Azure side after every step.
	auto bool
	// holdChecksums keeps the replica's checksums from the agent.
	holdChecksums bool
	dropChecksum  func(i int, m *proto.Checksums) bool
}

func newEnv(t *testing.T, g *fakeGuest, mod func(*Config)) *env {
	t.Helper()
	return newEnvFor(t, g, machine, mod)
}

// newEnvFor is newEnv for the machine called name.
func newEnvFor(t *testing.T, g *fakeGuest, name string, mod func(*Config)) *env {
	t.Helper()
	cfg := Config{Machine: name, VaultID: vaultID, Passphrase: passphrase, StateDir: t.TempDir(), Guest: g,
		ConfigServer: csAddr}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, name: name, addr: runtime.MakeAddr(name, runtime.PortTag), g: g, cfg: cfg,
		ps: &fakePS{machine: name}, az: &replica{t: t, machine: name, perMsg: 64}, auto: true}
	e.start()
	return e
}

// start (re)starts the agent process.
func (e *env) start() {
	e.a = New(e.cfg)
	now := runtimetest.Epoch
	if e.d != nil {
		now = e.d.Now() // a restart: time goes on
	}
	e.d = runtimetest.NewAt(e.t, e.addr, e.a, now)
}

func (e *env) receive(from runtime.Addr, m wire.Msg) {
	e.t.Helper()
	e.d.Receive(from, m)
	e.run()
}

// run lets the process server and the Azure side answer until quiet.
func (e *env) run() {
	e.t.Helper()
	if !e.auto {
		return
	}
	for progressed := true; progressed; {
		progressed = false
		if msgs := e.d.SentTo(psAddr); len(msgs) > 0 {
			progressed = true
			for _, ack := range e.ps.handle(e.t, msgs) {
				e.d.Receive(psAddr, ack)
			}
		}
		for _, it := range e.ps.items[e.az.taken:] {
			e.az.apply(it)
			e.az.taken++
		}
		if !e.holdChecksums && len(e.az.out) > 0 {
			progressed = true
			out := e.az.out
			e.az.out = nil
			for i, m := range out {
				if e.dropChecksum == nil || !e.dropChecksum(i, m) {
					e.d.Receive(csAddr, m)
				}
			}
		}
	}
}

// advance moves the clock by d in steps of step, running the world after each.
func (e *env) advance(d, step time.Duration) {
	e.t.Helper()
	for ; d > 0; d -= step {
		e.d.Advance(min(d, step))
		e.run()
	}
}

func (e *env) register() {
	e.t.Helper()
	e.receive(csAddr, &proto.RegisterReply{Machine: e.name, OK: true, VaultID: vaultID})
}

func (e *env) protect(gen uint64) {
	e.t.Helper()
	e.receive(csAddr, &proto.Protect{Machine: e.name, Policy: proto.DefaultPolicy(), ProcessServer: string(psAddr), Gen: gen})
}

// replicating registers, protects with gen 1 and checks the sync completed.
func (e *env) replicating() {
	e.t.Helper()
	e.register()
	e.protect(1)
	if s := e.a.Status(); s.Phase != PhaseReplicating {
		e.t.Fatalf("after protect: phase %s (status %+v)", s.Phase, s)
	}
}

// drain lets the drain timer fire and the world answer.
func (e *env) drain() {
	e.t.Helper()
	e.advance(e.a.cfg.DrainInterval, e.a.cfg.DrainInterval)
}

// checkReplica compares the replica with the guest's disks.
func (e *env) checkReplica() {
	e.t.Helper()
	for i := range e.g.devs {
		src := e.g.image(i)
		if len(e.az.disks) <= i {
			e.t.Fatalf("replica has no disk %d", i)
		}
		if !bytes.Equal(src, e.az.disks[i]) {
			for b := 0; b < len(src); b += 4096 {
				if !bytes.Equal(src[b:b+4096], e.az.disks[i][b:b+4096]) {
					e.t.Fatalf("replica disk %d differs from the source first at byte %d", i, b)
				}
			}
		}
	}
}

// sentItems decodes the items the agent sent to the process server since
// the last call (manual mode).
func (e *env) sentSeqs() []uint64 {
	e.t.Helper()
	var seqs []uint64
	for _, m := range e.d.SentTo(psAddr) {
		if im, ok := m.(*proto.ItemMsg); ok {
			seqs = append(seqs, im.Seq)
		}
	}
	return seqs
}

func (e *env) sentToCS() []wire.Msg { return e.d.SentTo(csAddr) }

// resyncReasons returns the reasons of the ResyncNeeded messages among
// what the agent sent the configuration server since the last look (like
// sentToCS, it takes them: the other messages are dropped).
func (e *env) resyncReasons() []string {
	var reasons []string
	for _, m := range e.sentToCS() {
		if r, ok := m.(*proto.ResyncNeeded); ok {
			reasons = append(reasons, r.Reason)
		}
	}
	return reasons
}

// itemsOf returns the accepted items of kind.
func (e *env) itemsOf(kind batch.Kind) []*batch.Item {
	var out []*batch.Item
	for _, it := range e.ps.items {
		if it.Kind == kind {
			out = append(out, it)
		}
	}
	return out
}

// span is a run's place, for comparisons.
type span struct {
	Disk uint16
	Off  int64
	Len  int
}

func chunkSpans(items []*batch.Item) []span {
	var out []span
	for _, it := range items {
		for _, r := range it.Runs {
			out = append(out, span{it.Disk, r.Off, len(r.Data)})
		}
	}
	return out
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
