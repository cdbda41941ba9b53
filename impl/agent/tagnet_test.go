package agent

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

// tagNet is a tiny network of agents for the tag protocol: it drives one
// runtimetest.Driver per machine on a shared fake clock, delivers what each
// agent sends to another agent after a latency (with seeded jitter, loss
// and duplication), answers the process-server and Azure side of each
// machine at once (env.run), collects what reaches the configuration
// server, runs a guest workload, and watches every filter's write gate.
type tagNet struct {
	t     *testing.T
	now   time.Time
	nodes []*node
	by    map[runtime.Addr]*node
	queue []netMsg
	nseq  int
	rnd   *rand.Rand

	// latency gives a link's one-way delay; default 1 ms.
	latency func(from, to string) time.Duration
	// jitter is added uniformly in [0, jitter); loss and dup are
	// probabilities; a duplicate arrives up to dupDelay after the original.
	jitter    time.Duration
	loss, dup float64
	dupDelay  time.Duration
	// drop loses the messages it selects, on top of loss.
	drop func(m netMsg) bool
	// afterStep runs after each step's events, before sends are collected
	// (e.g. to crash a node in a given state).
	afterStep func()

	toCS []wire.Msg        // everything sent to the configuration server
	gc   proto.GroupConfig // the group config last sent to every member

	writeEvery time.Duration // each up node's guest writes this often; 0: no workload
	nextWrite  time.Time
	order      int64 // the global order of write issues and acknowledgements
}

// node is one machine: its env (agent, guest, process server, replica),
// its gated guest writer, and its driver's clock offset from the network's
// (a restarted agent's driver starts at runtimetest.Epoch again).
type node struct {
	name   string
	e      *env
	w      *writer
	offset time.Duration
	down   bool
	// holds observed on the filter's gate, in network time.
	holdFrom time.Time
	holdKind proto.Consistency
	spans    []holdSpan
}

// holdSpan is one observed hold of the gate.
type holdSpan struct {
	From, To time.Time
	Kind     proto.Consistency
}

// netMsg is a message in flight.
type netMsg struct {
	at       time.Time
	seq      int
	from, to runtime.Addr
	msg      wire.Msg
}

func (m netMsg) phase() string {
	switch v := m.msg.(type) {
	case *proto.Tag:
		return v.Phase
	case *proto.TagAck:
		return v.Phase
	}
	return ""
}

// newTagNet builds replicating agents for names (each with a 1 MiB disk)
// and sends each the group config gc.
func newTagNet(t *testing.T, seed uint64, names []string, gc proto.GroupConfig) *tagNet {
	t.Helper()
	n := &tagNet{t: t, now: runtimetest.Epoch, by: map[runtime.Addr]*node{}, rnd: rand.New(rand.NewPCG(seed, 7)),
		dupDelay: 20 * time.Millisecond}
	for _, name := range names {
		n.add(name, nil)
	}
	n.configure(gc)
	return n
}

// configure sends gc to every member that is up.
func (n *tagNet) configure(gc proto.GroupConfig) {
	n.gc = gc
	for _, nd := range n.nodes {
		if !nd.down {
			nd.e.d.Receive(csAddr, &gc)
		}
	}
	n.watch()
	n.collect()
}

// add builds a node; prep may stop it from replicating (the default).
func (n *tagNet) add(name string, prep func(e *env)) *node {
	g := newGuest(n.t, 1<<20)
	nd := &node{name: name}
	nd.w = &writer{net: n, g: g, node: nd}
	g.onAttach = func(f *Filter) { f.SetReleaseHook(nd.w.resume) }
	nd.e = newEnvFor(n.t, g, name, nil)
	if prep != nil {
		prep(nd.e)
	} else {
		nd.e.replicating()
	}
	n.nodes = append(n.nodes, nd)
	n.by[nd.e.addr] = nd
	nd.offset = n.now.Sub(nd.e.d.Now())
	return nd
}

func (n *tagNet) node(name string) *node {
	for _, nd := range n.nodes {
		if nd.name == name {
			return nd
		}
	}
	n.t.Fatalf("no node %s", name)
	return nil
}

// crash stops nd's agent process: its pending sends are lost, it gets no
// events; the guest and its filter (kernel state) stay.
func (n *tagNet) crash(nd *node) {
	nd.down = true
	nd.e.d.Sent()
}

// restart starts nd's agent again and registers it.
func (n *tagNet) restart(nd *node) {
	nd.down = false
	nd.e.start()
	nd.offset = n.now.Sub(nd.e.d.Now())
	nd.e.run()
	nd.e.register()
	n.watch()
	n.collect()
}

// run moves the network on by d, event by event.
func (n *tagNet) run(d time.Duration) {
	n.t.Helper()
	end := n.now.Add(d)
	for {
		next, ok := n.nextEvent()
		if !ok || next.After(end) {
			break
		}
		n.step(next)
	}
	n.step(end)
}

func (n *tagNet) nextEvent() (time.Time, bool) {
	var best time.Time
	found := false
	consider := func(at time.Time) {
		if !found || at.Before(best) {
			best, found = at, true
		}
	}
	for _, nd := range n.nodes {
		if tm := nd.e.d.Timers(); !nd.down && len(tm) > 0 {
			consider(tm[0].At.Add(nd.offset))
		}
	}
	if len(n.queue) > 0 {
		consider(n.queue[0].at)
	}
	if n.writeEvery > 0 {
		consider(n.nextWrite)
	}
	if found && best.Before(n.now) {
		best = n.now
	}
	return best, found
}

// step brings every node to time at: timers, then messages due, then the
// workload; then it collects what was sent.
func (n *tagNet) step(at time.Time) {
	n.t.Helper()
	n.now = at
	for _, nd := range n.nodes {
		if nd.down {
			continue
		}
		// Advance(0) too: it fires timers set for now.
		nd.e.d.Advance(max(at.Add(-nd.offset).Sub(nd.e.d.Now()), 0))
		n.watch()
	}
	for len(n.queue) > 0 && !n.queue[0].at.After(at) {
		m := n.queue[0]
		n.queue = n.queue[1:]
		if nd := n.by[m.to]; nd != nil && !nd.down {
			nd.e.d.Receive(m.from, m.msg)
			n.watch()
		}
	}
	if n.writeEvery > 0 && !n.nextWrite.After(at) {
		for _, nd := range n.nodes {
			if !nd.down && nd.e.g.filter != nil {
				nd.w.issue()
			}
		}
		n.nextWrite = at.Add(n.writeEvery)
	}
	if n.afterStep != nil {
		n.afterStep()
	}
	n.collect()
}

// watch records gate transitions in network time.
func (n *tagNet) watch() {
	for _, nd := range n.nodes {
		f := nd.e.g.filter
		holding := f != nil && f.Holding()
		switch {
		case holding && nd.holdFrom.IsZero():
			nd.holdFrom = n.now
			if r := nd.e.a.member.cur; r != nil {
				nd.holdKind = r.tag.Kind
			}
		case !holding && !nd.holdFrom.IsZero():
			nd.spans = append(nd.spans, holdSpan{From: nd.holdFrom, To: n.now, Kind: nd.holdKind})
			nd.holdFrom, nd.holdKind = time.Time{}, 0
		}
	}
}

// collect runs each machine's process server and Azure side, keeps what
// went to the configuration server and puts agent-to-agent messages in
// flight.
func (n *tagNet) collect() {
	for _, nd := range n.nodes {
		if nd.down {
			nd.e.d.Sent()
			continue
		}
		nd.e.run()
		for _, s := range nd.e.d.Sent() {
			if s.To == csAddr {
				n.toCS = append(n.toCS, s.Msg)
				continue
			}
			if _, ok := n.by[s.To]; !ok {
				n.t.Fatalf("%s sent %s to unknown %s", nd.name, wire.KindName(s.Msg.WireKind()), s.To)
			}
			n.send(netMsg{from: nd.e.addr, to: s.To, msg: s.Msg})
		}
	}
}

func (n *tagNet) send(m netMsg) {
	lat := time.Millisecond
	if n.latency != nil {
		lat = n.latency(m.from.Host(), m.to.Host())
	}
	if n.jitter > 0 {
		lat += time.Duration(n.rnd.Int64N(int64(n.jitter)))
	}
	m.at = n.now.Add(lat)
	if (n.drop != nil && n.drop(m)) || (n.loss > 0 && n.rnd.Float64() < n.loss) {
		return
	}
	n.enqueue(m)
	if n.dup > 0 && n.rnd.Float64() < n.dup {
		m.at = m.at.Add(time.Duration(n.rnd.Int64N(int64(n.dupDelay) + 1)))
		n.enqueue(m)
	}
}

func (n *tagNet) enqueue(m netMsg) {
	n.nseq++
	m.seq = n.nseq
	i := sort.Search(len(n.queue), func(i int) bool {
		q := n.queue[i]
		return q.at.After(m.at) || (q.at.Equal(m.at) && q.seq > m.seq)
	})
	n.queue = append(n.queue, netMsg{})
	copy(n.queue[i+1:], n.queue[i:])
	n.queue[i] = m
}

// rounds returns the TagRound reports received so far.
func (n *tagNet) rounds() []*proto.TagRound {
	var out []*proto.TagRound
	for _, m := range n.toCS {
		if r, ok := m.(*proto.TagRound); ok {
			out = append(out, r)
		}
	}
	return out
}

// settle heals the faults and stops the workload, lets rounds run for 3 s
// more, then stops the group schedule (a new config version without
// intervals) and lets every machine drain its log to its replica.
func (n *tagNet) settle() {
	n.writeEvery, n.loss, n.dup, n.drop = 0, 0, 0, nil
	n.run(3 * time.Second)
	gc := n.gc
	gc.Version++
	gc.CrashInterval, gc.AppInterval = 0, 0
	n.configure(gc)
	n.run(5 * time.Second)
}

// writer is a guest's write path that honours the gate: it asks Admit
// before each new write and queues it when the gate holds; the filter's
// release hook issues the queued writes in order. A write is acknowledged
// as soon as it is captured and on the disk.
type writer struct {
	net  *tagNet
	g    *fakeGuest
	node *node
	// ignoreGate makes it write whatever the gate says: the negative
	// control, as if Hold were a no-op.
	ignoreGate bool
	writes     []gw
	queued     []int // indexes in writes, oldest first
}

// gw is one guest write.
type gw struct {
	Issued, Acked int64 // in the network's global order; Acked 0: not yet
	Seq           uint64
	Queued        bool
	AckedAt       time.Time
}

func (w *writer) issue() {
	w.net.order++
	i := len(w.writes)
	w.writes = append(w.writes, gw{Issued: w.net.order})
	if !w.ignoreGate && !w.g.filter.Admit() {
		w.writes[i].Queued = true
		w.queued = append(w.queued, i)
		return
	}
	w.do(i)
}

func (w *writer) do(i int) {
	w.net.t.Helper()
	data := fill(4096, byte(i+1))
	off := int64(i%256) * 4096
	seq := w.g.filter.Capture(0, off, data)
	if seq == 0 && w.g.filter.StopReason() == "" {
		w.net.t.Fatalf("%s: write %d not logged (mode %s)", w.node.name, i, w.g.filter.Mode())
	}
	if _, err := w.g.devs[0].WriteAt(data, off); err != nil {
		w.net.t.Fatal(err)
	}
	w.net.order++
	w.writes[i].Seq, w.writes[i].Acked, w.writes[i].AckedAt = seq, w.net.order, w.net.now
}

// resume is the release hook.
func (w *writer) resume() {
	q := w.queued
	w.queued = nil
	for _, i := range q {
		w.do(i)
	}
}

// tagPos finds tag id in nd's replica: the bookmark's seq, whether it is
// there, and whether it was revoked.
func (nd *node) tagPos(id string) (seq uint64, present, revoked bool) {
	for _, m := range nd.e.az.marks {
		if m.ID != id {
			continue
		}
		if m.Revoke {
			revoked = true
		} else {
			seq, present = m.Seq, true
		}
	}
	return seq, present, revoked
}

// tagMarks lists the group tags (not per-VM bookmarks) in nd's replica.
func (nd *node) tagMarks(group string) []mark {
	var out []mark
	for _, m := range nd.e.az.marks {
		if proto.IsTagOf(group, m.ID) {
			out = append(out, m)
		}
	}
	return out
}

// groupPoints lists the tags every node has as a bookmark that no node
// revoked: the group recovery points the Azure side would make.
func (n *tagNet) groupPoints(group string) []string {
	seen := map[string]int{}
	revoked := map[string]bool{}
	for _, nd := range n.nodes {
		for _, m := range nd.tagMarks(group) {
			if m.Revoke {
				revoked[m.ID] = true
			} else {
				seen[m.ID]++
			}
		}
	}
	var out []string
	for id, c := range seen {
		if c == len(n.nodes) && !revoked[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// checkCut is the consistent-cut property of group point id: every write
// after the tag on any member was acknowledged after every write before
// the tag on every member acknowledged. (A write that causally depends on
// another was issued after it was acknowledged; this is the stronger,
// order-only form.) It returns the evidence of a violation, or nil.
func (n *tagNet) checkCut(id string) error {
	type at struct {
		node  string
		write int
		order int64
	}
	var lastBefore, firstAfter *at
	for _, nd := range n.nodes {
		seq, ok, _ := nd.tagPos(id)
		if !ok {
			return fmt.Errorf("tag %s not in %s's log", id, nd.name)
		}
		for i, w := range nd.w.writes {
			if w.Acked == 0 {
				continue
			}
			if w.Seq < seq && (lastBefore == nil || w.Acked > lastBefore.order) {
				lastBefore = &at{nd.name, i, w.Acked}
			}
			if w.Seq > seq && (firstAfter == nil || w.Acked < firstAfter.order) {
				firstAfter = &at{nd.name, i, w.Acked}
			}
		}
	}
	if lastBefore != nil && firstAfter != nil && firstAfter.order < lastBefore.order {
		return fmt.Errorf("tag %s is no consistent cut: write %d of %s, after the tag, was acknowledged (at %d) "+
			"before write %d of %s, inside the point (at %d)", id, firstAfter.write, firstAfter.node, firstAfter.order,
			lastBefore.write, lastBefore.node, lastBefore.order)
	}
	return nil
}

// checkHolds checks every hold observed on the gates against the longest a
// round of its kind may hold.
func (n *tagNet) checkHolds(gc proto.GroupConfig) {
	n.t.Helper()
	for _, nd := range n.nodes {
		for _, s := range nd.spans {
			limit := gc.Crash.Hold()
			if s.Kind == proto.App {
				limit = gc.App.Hold()
			}
			if d := s.To.Sub(s.From); d > limit || s.Kind == 0 {
				n.t.Errorf("%s held writes for %v (kind %v) from %v; at most %v", nd.name, d, s.Kind,
					s.From.Sub(runtimetest.Epoch), limit)
			}
		}
		if s := nd.e.a.Status(); s.Holds.Max > max(gc.Crash.Hold(), gc.App.Hold()) {
			n.t.Errorf("%s: Status hold max %v", nd.name, s.Holds.Max)
		}
	}
}

// checkWrites: no write is left queued by the gate.
func (n *tagNet) checkWrites() {
	n.t.Helper()
	for _, nd := range n.nodes {
		if len(nd.w.queued) != 0 {
			n.t.Errorf("%s: %d writes still queued", nd.name, len(nd.w.queued))
		}
	}
}

func kindOfMark(m mark) proto.Consistency { return m.Kind }
