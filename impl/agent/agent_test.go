package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/wire"
)

// TestRegistration: the proof is the vault's; a refusal leaves the agent
// idle for good (a Protect is ignored, nothing reaches the process server)
// and it asks again only rarely.
func TestRegistration(t *testing.T) {
	keys, err := vault.Derive(vaultID, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		passphrase string
		reply      proto.RegisterReply
		wantProof  bool
		wantPhase  string
		wantToPS   bool
		// Registers and heartbeats sent over the next 10 minutes.
		wantRegisters, wantHeartbeats int
	}{
		{"right passphrase", passphrase, proto.RegisterReply{Machine: machine, OK: true}, true, PhaseReplicating, true, 0, 20},
		{"wrong passphrase", "wrong passphrase!", proto.RegisterReply{Machine: machine, Reason: "wrong vault passphrase"},
			false, PhaseIdle, false, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			e := newEnv(t, g, func(c *Config) { c.Passphrase = tt.passphrase })
			e.auto = false
			sent := e.sentToCS()
			if len(sent) != 1 {
				t.Fatalf("sent to cs at start: %v", sent)
			}
			reg := sent[0].(*proto.Register)
			if got := keys.Verify(machine, reg.Proof); got != tt.wantProof {
				t.Errorf("proof verifies = %v, want %v", got, tt.wantProof)
			}
			if diff := cmp.Diff([]int64{1 << 20}, reg.DiskSizes); diff != "" {
				t.Errorf("disk sizes -want +got:\n%s", diff)
			}
			e.auto = true
			e.receive(csAddr, &tt.reply)
			e.protect(1)
			if s := e.a.Status(); s.Phase != tt.wantPhase {
				t.Errorf("phase = %s, want %s", s.Phase, tt.wantPhase)
			}
			if got := len(e.ps.received) > 0 || e.ps.hellos > 0; got != tt.wantToPS {
				t.Errorf("talked to the process server = %v, want %v", got, tt.wantToPS)
			}
			e.sentToCS()
			e.advance(10*time.Minute, 10*time.Second)
			regs, beats := 0, 0
			for _, m := range e.sentToCS() {
				switch m.(type) {
				case *proto.Register:
					regs++
				case *proto.Heartbeat:
					beats++
				}
			}
			if regs != tt.wantRegisters || beats != tt.wantHeartbeats {
				t.Errorf("in 10 min: %d registrations, %d heartbeats; want %d, %d", regs, beats, tt.wantRegisters, tt.wantHeartbeats)
			}
		})
	}
}

// TestInitialSyncSendsOnlyNonZeroBlocks: against a fresh replica, only the
// blocks holding data travel, merged into runs, one disk per chunk.
func TestInitialSyncSendsOnlyNonZeroBlocks(t *testing.T) {
	g := newGuest(t, 1<<20, 512<<10)
	// Data already on the disks before protection (not through the filter).
	for _, w := range []struct {
		disk int
		off  int64
		n    int
	}{{0, 0, 4096}, {0, 5 * 4096, 8192}, {0, 255 * 4096, 4096}, {1, 100 * 4096, 4096}} {
		if _, err := g.devs[w.disk].WriteAt(fill(w.n, 0xa5), w.off); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 256 << 10 })
	e.replicating()
	want := []span{{0, 0, 4096}, {0, 5 * 4096, 8192}, {0, 255 * 4096, 4096}, {1, 100 * 4096, 4096}}
	if diff := cmp.Diff(want, chunkSpans(e.itemsOf(batch.KindChunk))); diff != "" {
		t.Errorf("chunk runs -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]batch.Kind{batch.KindSyncStart, batch.KindChunk, batch.KindChunk, batch.KindSyncEnd}, e.az.kinds); diff != "" {
		t.Errorf("stream -want +got:\n%s", diff)
	}
	end := e.itemsOf(batch.KindSyncEnd)[0]
	if end.Chunks != 2 || end.Gen != 1 || end.LogFrom == 0 {
		t.Errorf("SyncEnd = gen %d chunks %d logFrom %d", end.Gen, end.Chunks, end.LogFrom)
	}
	if s := e.a.Status().Sync; s.BytesRead != 1536<<10 || s.ChunkBytes != 20480 || s.FreshDisks != 2 {
		t.Errorf("sync status = %+v", s)
	}
	e.checkReplica()
}

// TestResyncSendsOnlyDifferingBlocks: a resync compares every block with
// the replica's checksum; a lost Checksums message makes its blocks
// unknown, and unknown blocks are sent (bandwidth, never correctness).
func TestResyncSendsOnlyDifferingBlocks(t *testing.T) {
	tests := []struct {
		name string
		drop func(i int, m *proto.Checksums) bool
		want []span
	}{
		{"all checksums", nil, []span{{0, 3 * 4096, 4096}, {0, 63 * 4096, 8192}, {0, 200 * 4096, 4096}}},
		{"second message lost", func(i int, m *proto.Checksums) bool { return i == 1 },
			[]span{{0, 3 * 4096, 4096}, {0, 63 * 4096, 65 * 4096}, {0, 200 * 4096, 4096}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			for i := 0; i < 256; i += 3 {
				g.devs[0].WriteAt(fill(4096, byte(i+1)), int64(i)*4096)
			}
			e := newEnv(t, g, nil)
			e.replicating()
			e.checkReplica()
			// The replica drifts: two blocks changed, one block the source
			// has zeroed is still written there, one the source now has.
			e.az.disks[0][3*4096] ^= 1
			copy(e.az.disks[0][64*4096:], fill(4096, 0xee))
			g.devs[0].WriteAt(fill(4096, 0), 63*4096) // bypasses the filter: the replica still has it
			g.devs[0].WriteAt(fill(4096, 0x77), 200*4096)
			e.az.perMsg = 64
			e.dropChecksum = tt.drop
			before := len(e.itemsOf(batch.KindChunk))
			e.protect(2)
			if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 2 {
				t.Fatalf("after resync: %+v", s)
			}
			if diff := cmp.Diff(tt.want, chunkSpans(e.itemsOf(batch.KindChunk)[before:])); diff != "" {
				t.Errorf("resync runs -want +got:\n%s", diff)
			}
			e.checkReplica()
		})
	}
}

// TestWriteDuringSyncReachesStreamAfterChunks: a write made after its
// region was read travels in a Log item, after SyncEnd, and no Log item is
// built before SyncEnd is acknowledged.
func TestWriteDuringSyncReachesStreamAfterChunks(t *testing.T) {
	g := newGuest(t, 1<<20)
	g.devs[0].WriteAt(fill(4096, 1), 0)
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 256 << 10 })
	e.register()
	e.holdChecksums = true
	e.protect(1) // SyncStart cached and applied; the checksums wait
	e.d.AutoDeliverOps = false
	e.holdChecksums = false
	e.run() // the checksums arrive: the first region is read, its completion held
	if e.d.PendingOps() != 1 {
		t.Fatalf("%d ops pending, want the first region's read", e.d.PendingOps())
	}
	g.write(0, 0, fill(4096, 2))        // in the region already read
	g.write(0, 225*4096, fill(4096, 3)) // in a region not read yet
	e.auto = false                      // the process server holds its answers
	e.d.DeliverOps()
	e.advance(30*time.Second, time.Second)
	if s := e.a.Status(); s.Phase != PhaseSyncing || s.ItemsBuilt != 3 {
		t.Fatalf("before SyncEnd is acknowledged: phase %s, %d items built (want SyncStart, Chunk, SyncEnd)",
			s.Phase, s.ItemsBuilt)
	}
	e.d.AutoDeliverOps = true
	e.auto = true
	e.advance(12*time.Second, time.Second) // retransmission: now acknowledged
	e.drain()
	want := []batch.Kind{batch.KindSyncStart, batch.KindChunk, batch.KindSyncEnd, batch.KindLog}
	if diff := cmp.Diff(want, e.az.kinds); diff != "" {
		t.Errorf("stream -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]span{{0, 0, 4096}, {0, 225 * 4096, 4096}}, chunkSpans(e.itemsOf(batch.KindChunk))); diff != "" {
		t.Errorf("chunk runs -want +got:\n%s", diff)
	}
	if got := e.itemsOf(batch.KindChunk)[0].Runs[0].Data[0]; got != 1 {
		t.Errorf("block 0 in the chunk = %d, want the data read before the write (1)", got)
	}
	e.checkReplica() // the Log item brought block 0's new data
}

// TestStreamWindow drives the process server's answers by hand.
func TestStreamWindow(t *testing.T) {
	type step func(e *env, base uint64)
	ack := func(rel uint64, status string) step {
		return func(e *env, base uint64) {
			e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base + rel, Status: status})
		}
	}
	wait := func(d time.Duration) step { return func(e *env, _ uint64) { e.d.Advance(d) } }
	tests := []struct {
		name  string
		steps []step
		want  [][]uint64 // items sent after each step, relative to base
	}{
		{"window slides on acks",
			[]step{ack(2, proto.AckOK), ack(6, proto.AckOK)},
			[][]uint64{{5, 6}, {7, 8, 9, 10}}},
		{"duplicate ack sends nothing", []step{ack(0, proto.AckOK)}, [][]uint64{nil}},
		{"gap: go back once",
			[]step{ack(1, proto.AckGap), ack(1, proto.AckGap), ack(1, proto.AckOK)},
			[][]uint64{{2, 3, 4, 5}, nil, nil}},
		{"retransmit after the timeout",
			[]step{wait(9 * time.Second), wait(time.Second)},
			[][]uint64{nil, {1, 2, 3, 4}}},
		{"cache-full backs off, doubling",
			[]step{ack(0, proto.AckCacheFull), wait(4 * time.Second), wait(time.Second),
				ack(0, proto.AckCacheFull), wait(9 * time.Second), wait(time.Second), ack(4, proto.AckOK)},
			[][]uint64{nil, nil, {1, 2, 3, 4}, nil, nil, {1, 2, 3, 4}, {5, 6, 7, 8}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			e := newEnv(t, g, func(c *Config) { c.ItemBytes = 4096; c.Window = 4; c.DrainBytes = 1 << 30 })
			e.replicating()
			base := e.ps.acked
			for i := 0; i < 10; i++ {
				g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
			}
			e.auto = false
			e.drain()
			if got, want := e.sentSeqs(), []uint64{base + 1, base + 2, base + 3, base + 4}; !cmp.Equal(got, want) {
				t.Fatalf("first window %v, want %v", got, want)
			}
			var got [][]uint64
			for _, s := range tt.steps {
				s(e, base)
				var rel []uint64
				for _, seq := range e.sentSeqs() {
					rel = append(rel, seq-base)
				}
				got = append(got, rel)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("items sent per step -want +got:\n%s", diff)
			}
		})
	}
}

// probeWorld is the probe tests' stream: items of one 4 KiB write, a window
// of 4, ten writes drained and the first window sent (nothing acked, the
// driver answering nothing by itself). base is the receiver's position
// before them.
func probeWorld(t *testing.T, probe bool) (e *env, base uint64) {
	t.Helper()
	g := newGuest(t, 1<<20)
	e = newEnv(t, g, func(c *Config) { c.ItemBytes = 4096; c.Window = 4; c.DrainBytes = 1 << 30; c.ProbeFirst = probe })
	e.replicating()
	base = e.ps.acked
	for i := 0; i < 10; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	e.auto = false
	e.drain()
	if got := len(e.sentSeqs()); got != 4 {
		t.Fatalf("first window: %d items, want 4", got)
	}
	return e, base
}

// sent is what the agent sent the process server since the last look:
// items (numbered from a base) and hellos.
type sent struct {
	Items  []uint64
	Hellos int
}

// sentSince takes what was sent to the process server since the last
// look, items numbered after base.
func (e *env) sentSince(base uint64) sent {
	var s sent
	for _, m := range e.d.SentTo(psAddr) {
		switch m := m.(type) {
		case *proto.ItemMsg:
			s.Items = append(s.Items, m.Seq-base)
		case *proto.StreamHello:
			s.Hellos++
		}
	}
	return s
}

// TestProbeFirst: with ProbeFirst a retransmission timeout sends only
// StreamHello, again every timeout until answered, and the answer's
// position is where sending resumes: items the receiver has (their acks
// lost, as on a VPN that dropped) are not sent again. Without it the whole
// window goes again (the negative control).
func TestProbeFirst(t *testing.T) {
	for _, probe := range []bool{true, false} {
		t.Run(fmt.Sprintf("probe=%v", probe), func(t *testing.T) {
			e, base := probeWorld(t, probe)
			step := func() sent { return e.sentSince(base) }
			var got []sent
			e.d.Advance(10 * time.Second) // the acks were lost
			got = append(got, step())
			e.d.Advance(10 * time.Second) // the hello too
			got = append(got, step())
			// Item 3 lands (it was in flight): its ack moves the position
			// but the probe goes on; then the hello's answer, which moves
			// nothing: the receiver has items 1-3.
			for range 2 {
				e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base + 3, Status: proto.AckOK})
				got = append(got, step())
			}
			want := []sent{{Hellos: 1}, {Hellos: 1}, {}, {Items: []uint64{4, 5, 6, 7}}}
			if !probe {
				want = []sent{{Items: []uint64{1, 2, 3, 4}, Hellos: 1}, {Items: []uint64{1, 2, 3, 4}, Hellos: 1}, {Items: []uint64{5, 6, 7}}, {}}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("sent per step -want +got:\n%s", diff)
			}
		})
	}
}

// TestProbeOutlivesAnInFlightAck: an ack of an item that was in flight
// moves the position while the probe goes on; if the hello's answer is
// then lost too (the master target crashed with it, as in swarm seed 52),
// the hello must go again at the next timeout. Before, the ack's advance
// cancelled the retransmission timer that only transmit re-armed — and
// transmit sends nothing while probing: the stream stalled for good, the
// reprotect never completed.
func TestProbeOutlivesAnInFlightAck(t *testing.T) {
	e, base := probeWorld(t, true)
	step := func() sent { return e.sentSince(base) }
	var got []sent
	e.d.Advance(10 * time.Second) // the acks were lost: a hello
	got = append(got, step())
	// Item 2 lands (it was in flight): the probe goes on. The hello's
	// answer is lost.
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base + 2, Status: proto.AckOK})
	got = append(got, step())
	e.d.Advance(10 * time.Second) // the hello again
	got = append(got, step())
	// Its answer: the receiver has items 1-2; sending resumes after them.
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base + 2, Status: proto.AckOK})
	got = append(got, step())
	want := []sent{{Hellos: 1}, {}, {Hellos: 1}, {Items: []uint64{3, 4, 5, 6}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sent per step -want +got:\n%s", diff)
	}
}

// TestProbeIgnoresAGap: while probing, a gap ack that moves nothing is
// the answer to an item sent before the probe that landed after a lost
// one (a master target crashed with the items before it), not the
// hello's: the probe goes on, and the window goes again once, when the
// hello's answer comes. Before, every such late item's gap ended the
// probe and resent the whole window (swarm seed 13: 1.71 GiB over a slow
// VPN for a 64 MiB disk, the reprotect never done).
func TestProbeIgnoresAGap(t *testing.T) {
	e, base := probeWorld(t, true)
	items := func() []uint64 { return e.sentSince(base).Items }
	e.d.Advance(10 * time.Second) // item 1 was lost: a hello
	items()
	// Items 2, 3 and 4 land after the loss: gaps, and the probe goes on.
	for range 3 {
		e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base, Status: proto.AckGap, Reason: "gap"})
		if got := items(); len(got) != 0 {
			t.Fatalf("a gap while probing sent items %v", got)
		}
	}
	// The hello's answer: the receiver has nothing past base.
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: base, Status: proto.AckOK})
	if diff := cmp.Diff([]uint64{1, 2, 3, 4}, items()); diff != "" {
		t.Errorf("after the hello's answer -want +got:\n%s", diff)
	}
}

// TestStreamLossConverges: with every third transmission lost the stream
// still delivers everything, in order, once.
func TestStreamLossConverges(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 8192; c.Window = 4 })
	e.replicating()
	n := 0
	e.ps.drop = func(uint64) bool { n++; return n%3 == 0 }
	for i := 0; i < 40; i++ {
		g.write(0, int64(i%100)*4096, fill(4096, byte(i+1)))
	}
	e.advance(2*time.Minute, time.Second)
	e.checkReplica()
	if s := e.a.Status(); s.Retransmits == 0 || s.Queued != 0 {
		t.Errorf("status %+v: want retransmissions and nothing queued", s)
	}
}

// TestTrimOnlyAfterAck: the log is trimmed up to the last record of the
// acknowledged Log items, and no further.
func TestTrimOnlyAfterAck(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 8192 })
	e.replicating()
	trim0 := e.a.Status().LogTrimSeq
	e.auto = false
	var seqs []uint64
	for i := 0; i < 4; i++ {
		g.write(0, int64(i)*4096, fill(4096, 9))
		seqs = append(seqs, e.a.Status().LogLastSeq)
	}
	e.drain()
	sent := e.sentSeqs()
	if len(sent) != 2 {
		t.Fatalf("sent %v, want 2 items of 2 writes", sent)
	}
	steps := []struct {
		name string
		ack  uint64
		want uint64
	}{
		{"nothing acked", 0, trim0},
		{"first acked", sent[0], seqs[1]},
		{"both acked", sent[1], seqs[3]},
	}
	for _, s := range steps {
		if s.ack != 0 {
			e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: s.ack, Status: proto.AckOK})
		}
		if got := e.a.Status().LogTrimSeq; got != s.want {
			t.Errorf("%s: trim at %d, want %d", s.name, got, s.want)
		}
	}
}

// TestBookmarkSchedule: crash-consistent every 5 minutes, app-consistent
// every 60 with the guest frozen around it; none while syncing.
func TestBookmarkSchedule(t *testing.T) {
	tests := []struct {
		name       string
		freezeErr  error
		wantPoints int
		wantIns    []BookmarkCount
		wantSkip   []SkipCount
		wantThaws  int
	}{
		{"normal", nil, 13, []BookmarkCount{{"app", 1}, {"crash", 12}}, nil, 1},
		{"freeze fails", errors.New("vss: timeout"), 12, []BookmarkCount{{"crash", 12}},
			[]SkipCount{{"app", "freeze-failed", 1}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			g.freezeErr = tt.freezeErr
			e := newEnv(t, g, nil)
			e.replicating()
			for m := 0; m < 60; m++ {
				g.write(0, int64(m)*4096, fill(4096, byte(m)))
				e.advance(time.Minute, 10*time.Second)
			}
			e.drain()
			s := e.a.Status()
			if diff := cmp.Diff(tt.wantIns, s.BookmarksInserted); diff != "" {
				t.Errorf("inserted -want +got:\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSkip, s.BookmarksSkipped); diff != "" {
				t.Errorf("skipped -want +got:\n%s", diff)
			}
			if g.thaws != tt.wantThaws || g.freezes != tt.wantThaws {
				t.Errorf("freezes %d thaws %d, want %d each", g.freezes, g.thaws, tt.wantThaws)
			}
			if len(e.az.points) != tt.wantPoints {
				t.Fatalf("replica points %v, want %d", e.az.points, tt.wantPoints)
			}
			for _, id := range e.az.points {
				if !strings.HasPrefix(id, machine+"-c-") && !strings.HasPrefix(id, machine+"-a-") {
					t.Errorf("bookmark id %q", id)
				}
			}
		})
	}
}

// TestNoBookmarkWhileSyncing: the bookmark timers fire during a long
// initial sync; the agent skips and counts them.
func TestNoBookmarkWhileSyncing(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.holdChecksums = true
	e.register()
	e.protect(1)
	e.advance(11*time.Minute, 30*time.Second)
	want := []SkipCount{{"crash", "syncing", 2}}
	if diff := cmp.Diff(want, e.a.Status().BookmarksSkipped); diff != "" {
		t.Errorf("skipped -want +got:\n%s", diff)
	}
	if got := e.a.Status().BookmarksInserted; got != nil {
		t.Errorf("inserted %v while syncing", got)
	}
}

// TestMetadataMode: past the data budget the filter logs metadata only, no
// crash bookmark is inserted, the drainer re-reads the data from the disk,
// and once drained and trimmed the filter returns to data mode and
// bookmarks resume.
func TestMetadataMode(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.DataBudget = 64 << 10 })
	e.replicating()
	e.auto = false // the process server is unreachable for now
	for i := 0; i < 40; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	if s := e.a.Status(); s.Mode != "metadata" {
		t.Fatalf("mode %s after 160 KiB with a 64 KiB budget", s.Mode)
	}
	e.advance(5*time.Minute, 10*time.Second)
	want := []SkipCount{{"crash", "metadata-mode", 1}}
	if diff := cmp.Diff(want, e.a.Status().BookmarksSkipped); diff != "" {
		t.Errorf("skipped -want +got:\n%s", diff)
	}
	// Overwrite a metadata-logged block: the re-read sends the new data.
	g.write(0, 30*4096, fill(4096, 0xcc))
	e.d.SentTo(psAddr)
	e.auto = true
	e.d.Advance(10 * time.Second) // retransmission: hello and items again
	e.run()
	e.advance(20*time.Second, 2*time.Second)
	if s := e.a.Status(); s.Mode != "data" || s.EnteredMetadata != 1 || s.EnteredData != 1 {
		t.Fatalf("after draining: %+v", s)
	}
	e.checkReplica()
	e.advance(5*time.Minute, 10*time.Second)
	if got := e.a.Status().BookmarksInserted; !cmp.Equal(got, []BookmarkCount{{"crash", 1}}) {
		t.Errorf("inserted after returning to data mode: %v", got)
	}
}

// TestBitmapModeResync: data → metadata → bitmap under a small budget; the
// agent asks for a resync until a Protect with a higher gen comes, then
// resynchronises and converges.
func TestBitmapModeResync(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.DataBudget = 16 << 10; c.MetaBudget = 8 })
	e.replicating()
	e.auto = false
	var modes []string
	note := func() {
		if m := e.a.filter.Mode().String(); len(modes) == 0 || modes[len(modes)-1] != m {
			modes = append(modes, m)
		}
	}
	for i := 0; i < 12; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
		note()
	}
	if diff := cmp.Diff([]string{"data", "metadata", "bitmap"}, modes); diff != "" {
		t.Errorf("modes -want +got:\n%s", diff)
	}
	if n := e.a.filter.Stats().DirtyBlocks; n != 12 {
		t.Errorf("dirty blocks = %d, want the 12 written", n)
	}
	e.sentToCS()
	e.auto = true
	for i := 0; i < 31; i++ {
		e.advance(2*time.Second, time.Second)
		note()
	}
	for _, r := range e.resyncReasons() {
		t.Errorf("ResyncNeeded %q: bitmap mode resyncs its blocks itself", r)
	}
	// The resync's metadata records are few: under half the budget, so
	// data mode at once (bookmarks wait until they are re-read).
	if diff := cmp.Diff([]string{"data", "metadata", "bitmap", "data"}, modes); diff != "" {
		t.Errorf("modes -want +got:\n%s", diff)
	}
	st := e.a.filter.Stats()
	if st.BitmapResyncs != 1 || st.LastResyncBlocks != 12 {
		t.Errorf("bitmap resyncs %d of %d blocks, want 1 of 12", st.BitmapResyncs, st.LastResyncBlocks)
	}
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 1 {
		t.Fatalf("after the bitmap resync: %+v", s)
	}
	e.checkReplica()
}

// TestBitmapModeWithoutBitmap: a filter that keeps no bitmap (write-
// through) stops tracking in bitmap mode: the agent asks for a resync until
// a Protect with a higher gen comes.
func TestBitmapModeWithoutBitmap(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.DataBudget = 16 << 10; c.MetaBudget = 8; c.FilterWriteThrough = true })
	e.replicating()
	e.auto = false
	for i := 0; i < 12; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	if m := e.a.filter.Mode(); m != ModeBitmap {
		t.Fatalf("mode %s", m)
	}
	e.sentToCS()
	e.d.Advance(62 * time.Second) // the drain timer at 2 s makes the agent notice
	reasons := e.resyncReasons()
	for _, r := range reasons {
		if !strings.Contains(r, "metadata budget") {
			t.Errorf("reason %q", r)
		}
	}
	if resyncs := len(reasons); resyncs != 3 {
		t.Errorf("ResyncNeeded sent %d times in 62 s, want 3 (at 2 s, then every 30 s)", resyncs)
	}
	if s := e.a.Status(); s.Phase != PhaseResyncRequired {
		t.Fatalf("phase %s", s.Phase)
	}
	e.auto = true
	e.protect(1) // the same gen: not the resync asked for
	if s := e.a.Status(); s.Phase != PhaseResyncRequired {
		t.Fatalf("phase %s after a Protect of the same gen", s.Phase)
	}
	e.protect(2)
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.Mode != "data" || s.Gen != 2 {
		t.Fatalf("after the resync: %+v", s)
	}
	e.checkReplica()
}

// TestRestartResumes: a restarted agent (process restart, or machine crash
// with the filter reopened from its files) picks up from agent.state: a
// sync starts over with the same gen, replication drains from the trim
// point; the replica converges and item numbers stay contiguous (the
// replica model fails the test otherwise).
func TestRestartResumes(t *testing.T) {
	tests := []struct {
		name         string
		syncing      bool
		machineCrash bool
	}{
		{"replicating, agent restart", false, false},
		{"replicating, machine crash", false, true},
		{"syncing, agent restart", true, false},
		{"syncing, machine crash", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, 1<<20)
			g.devs[0].WriteAt(fill(8192, 5), 4096)
			e := newEnv(t, g, func(c *Config) { c.ItemBytes = 8192 })
			e.register()
			e.holdChecksums = tt.syncing
			e.protect(1)
			for i := 0; i < 6; i++ {
				g.write(0, int64(i)*8192, fill(8192, byte(i+1)))
			}
			e.drain()
			if !tt.syncing {
				// Some items acknowledged, then the process server goes quiet.
				e.auto = false
				g.write(0, 100*4096, fill(4096, 0x42))
				e.drain()
			}
			if tt.machineCrash {
				g.crash()
			}
			e.auto, e.holdChecksums = true, false
			e.az.out = nil // whatever the old agent was waiting for is gone with it
			e.start()
			sent := e.d.Sent()
			var kinds []string
			for _, s := range sent {
				kinds = append(kinds, fmt.Sprintf("%s %s", s.To, wire.KindName(s.Msg.WireKind())))
			}
			if diff := cmp.Diff([]string{"cs01:443 register", "ps01:9443 stream-hello"}, kinds); diff != "" {
				t.Errorf("sent at restart -want +got:\n%s", diff)
			}
			var toPS []wire.Msg
			for _, s := range sent {
				if s.To == psAddr {
					toPS = append(toPS, s.Msg)
				}
			}
			for _, ack := range e.ps.handle(t, toPS) {
				e.d.Receive(psAddr, ack)
			}
			e.run()
			g.write(0, 200*4096, fill(4096, 0x43))
			e.advance(30*time.Second, time.Second)
			if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 1 {
				t.Fatalf("after restart: %+v", s)
			}
			e.checkReplica()
			starts := len(e.itemsOf(batch.KindSyncStart))
			if want := map[bool]int{true: 2, false: 1}[tt.syncing]; starts != want {
				t.Errorf("SyncStart items %d, want %d", starts, want)
			}
		})
	}
}

// TestCorruptLogAsksForResync: a change log damaged in the middle (found at
// open after a machine crash) makes the agent send ResyncNeeded until a
// Protect with a higher gen comes.
func TestCorruptLogAsksForResync(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.auto = false
	for i := 0; i < 4; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	// As a drain would: the records move from the filter's memory to the
	// log, whose damage is the subject here.
	if err := e.a.filter.Sync(); err != nil {
		t.Fatal(err)
	}
	g.crash()
	corruptLog(t, e.cfg.StateDir)
	e.auto = true
	e.start()
	e.run()
	e.advance(31*time.Second, time.Second)
	reasons := e.resyncReasons()
	if len(reasons) != 2 || !strings.Contains(reasons[0], "damaged") {
		t.Fatalf("ResyncNeeded reasons %q, want 2 naming the damage", reasons)
	}
	if s := e.a.Status(); s.Phase != PhaseResyncRequired {
		t.Fatalf("phase %s", s.Phase)
	}
	e.protect(2)
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 2 {
		t.Fatalf("after the resync: %+v", s)
	}
	e.checkReplica()
}

// TestBadFrameDropped: a frame that does not decode is dropped.
func TestBadFrameDropped(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.d.Sent()
	e.d.ReceiveFrame(csAddr, []byte("not a frame"))
	if got := e.d.Sent(); len(got) != 0 {
		t.Errorf("sent %v after a bad frame", got)
	}
}

// TestUnprotect: replication stops, agent.state goes, and a restarted agent
// stays idle.
func TestUnprotect(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, nil)
	e.replicating()
	e.receive(csAddr, &proto.Unprotect{Machine: machine})
	g.write(0, 0, fill(4096, 1))
	received := len(e.ps.received)
	e.advance(10*time.Minute, 10*time.Second)
	if s := e.a.Status(); s.Phase != PhaseIdle || len(e.ps.received) != received || s.BookmarksInserted != nil {
		t.Fatalf("after Unprotect: %+v, %d items received (was %d)", s, len(e.ps.received), received)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, StateFile)); !os.IsNotExist(err) {
		t.Errorf("state file after Unprotect: %v", err)
	}
	e.start()
	if s := e.a.Status(); s.Phase != PhaseIdle || s.Gen != 0 {
		t.Errorf("restarted after Unprotect: %+v", s)
	}
}

// TestRestartDropsBookmarkAfterRereadMetadata: a bookmark inserted after a
// metadata record was read cannot be honoured once a restarted agent reads
// that record again (the disk moved on since): it is dropped from the
// stream, and the replica still converges. Until the restarted agent has
// read the log again, it inserts no bookmark; once it has, the skipped
// one is retried (after every re-read record): the replica's only point.
func TestRestartDropsBookmarkAfterRereadMetadata(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.DataBudget = 64 << 10 })
	e.replicating()
	e.auto = false
	g.write(0, 0, fill(80<<10, 1)) // over the budget on its own: a metadata record
	e.drain()                      // re-read from the disk: data mode again
	e.advance(5*time.Minute, 10*time.Second)
	if got := e.a.Status().BookmarksInserted; !cmp.Equal(got, []BookmarkCount{{"crash", 1}}) {
		t.Fatalf("inserted %v, want the crash bookmark", got)
	}
	dropped := e.a.Status().LastBookmark
	g.write(0, 0, fill(4096, 2)) // after the bookmark, over the metadata record's range
	lastBefore := g.filter.Stats().LastSeq
	// The agent restarts while the process server is unreachable: nothing
	// is re-read, so no bookmark can be honoured yet.
	e.start()
	e.advance(5*time.Minute, 10*time.Second)
	if s := e.a.Status(); s.BookmarksInserted != nil {
		t.Fatalf("inserted %v before the log was read again, want none", s.BookmarksInserted)
	}
	e.auto = true
	e.advance(20*time.Second, time.Second)
	s := e.a.Status()
	want := []SkipCount{{"crash", "metadata-reread", 1}, {"crash", "undrained-metadata", 1}}
	if diff := cmp.Diff(want, s.BookmarksSkipped); diff != "" {
		t.Errorf("skipped -want +got:\n%s", diff)
	}
	if diff := cmp.Diff([]BookmarkCount{{"crash", 1}}, s.BookmarksRetried); diff != "" {
		t.Errorf("retried -want +got:\n%s", diff)
	}
	if len(e.az.marks) != 1 || e.az.marks[0].ID == dropped || e.az.marks[0].Seq <= lastBefore {
		t.Errorf("replica marks %+v, want one retried bookmark after record %d (not %s, dropped)", e.az.marks, lastBefore, dropped)
	}
	e.checkReplica()
}

// TestProcessServerLostCache: a process server that loses its cache disk
// answers from a new epoch with a lower Acked. The agent's log no longer
// holds the lost items' records, so it asks for a resync and numbers the
// resync on from its own position; the replica ends equal to the source.
// (Before the fix the agent ignored the lower ack and its stream stalled
// for good.)
func TestProcessServerLostCache(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 8192 })
	e.ps.epoch = 1
	e.replicating()
	for i := 0; i < 6; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	e.drain()
	had := e.a.Status().ItemsAcked
	if had == 0 {
		t.Fatal("nothing acknowledged before the loss")
	}
	e.ps.loseCache()
	for i := 6; i < 10; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	e.drain()
	reasons := e.resyncReasons()
	if len(reasons) == 0 || !strings.Contains(reasons[0], "no longer has items") {
		t.Fatalf("ResyncNeeded %q, want one saying the process server lost items (status %+v)", reasons, e.a.Status())
	}
	if s := e.a.Status(); s.Phase != PhaseResyncRequired || s.PSLosses != 1 {
		t.Fatalf("status %+v: want resync-required after one loss", s)
	}
	e.protect(2)
	starts := e.itemsOf(batch.KindSyncStart)
	if len(starts) == 0 || starts[len(starts)-1].Seq != had+1 {
		t.Fatalf("the resync's SyncStart is not numbered on from %d: %v", had, starts)
	}
	e.advance(time.Minute, time.Second)
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 2 {
		t.Fatalf("after the resync: %+v", s)
	}
	e.checkReplica()

	// A stale answer from the old epoch changes nothing.
	e.d.Receive(psAddr, &proto.ItemAck{Machine: machine, Acked: 1, Status: proto.AckOK, Epoch: 1})
	if s := e.a.Status(); s.PSLosses != 1 || s.Phase != PhaseReplicating {
		t.Fatalf("a stale ack of the old epoch: %+v", s)
	}
}

// TestProcessServerLostCacheWhileAgentDown: the process server loses its
// cache while the agent is down. The restarted agent no longer knows how
// far the stream went, but it persisted the epoch it last heard and a
// ceiling above every item it sent: the first answer, from a new epoch,
// makes it ask for a resync numbered on from the ceiling, past anything
// the Azure side may have applied. (Before the fix the agent numbered on
// from the new cache's 0, and the Azure side discarded those items as
// already applied: acknowledged writes were lost.)
func TestProcessServerLostCacheWhileAgentDown(t *testing.T) {
	g := newGuest(t, 1<<20)
	e := newEnv(t, g, func(c *Config) { c.ItemBytes = 8192 })
	e.ps.epoch = 1
	e.replicating()
	for i := 0; i < 6; i++ {
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	e.drain()
	had := e.a.Status().ItemsAcked
	if had == 0 {
		t.Fatal("nothing acknowledged before the loss")
	}
	e.start() // the agent restarts ...
	e.ps.loseCache()
	for i := 6; i < 10; i++ { // ... and the guest writes on
		g.write(0, int64(i)*4096, fill(4096, byte(i+1)))
	}
	e.advance(time.Minute, time.Second)
	reasons := e.resyncReasons()
	if len(reasons) == 0 || !strings.Contains(reasons[0], "lost its cache while the agent was down") {
		t.Fatalf("ResyncNeeded %q, want one saying the process server lost its cache while the agent was down (status %+v)", reasons, e.a.Status())
	}
	if s := e.a.Status(); s.Phase != PhaseResyncRequired || s.PSLosses != 1 {
		t.Fatalf("status %+v: want resync-required after one loss", s)
	}
	e.protect(2)
	starts := e.itemsOf(batch.KindSyncStart)
	if len(starts) == 0 || starts[len(starts)-1].Seq <= streamReserve {
		var seqs []uint64
		for _, it := range starts {
			seqs = append(seqs, it.Seq)
		}
		t.Fatalf("the resync's SyncStarts %v: want the last numbered past the ceiling (> %d), far above item %d", seqs, streamReserve, had)
	}
	e.advance(time.Minute, time.Second)
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.Gen != 2 {
		t.Fatalf("after the resync: %+v", s)
	}
	e.checkReplica()

	// Control: a restart with the cache intact resumes where the process
	// server stands, with no resync.
	e.start()
	e.advance(time.Minute, time.Second)
	if s := e.a.Status(); s.Phase != PhaseReplicating || s.PSLosses != 0 || s.Gen != 2 {
		t.Fatalf("a restart with the cache intact: %+v", s)
	}
}
