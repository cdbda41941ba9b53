package failover_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/memblob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/wire"
)

const (
	prefix    = "t-"
	rg        = "rg-dr"
	foAddr    = runtime.Addr("failover.azure:443")
	vaultAddr = runtime.Addr("asr.azure:443")
	portal    = runtime.Addr("portal:443")
	csAddr    = runtime.Addr("cs.onprem:443")
	mtAddr    = runtime.Addr("mt.onprem:9080")
	diskSize  = 64 << 10
)

var (
	prodNet = compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "prod"}
	testNet = compute.Ref{Kind: compute.KindNetwork, Group: rg, Name: "test"}
)

// env is an orchestrator with an in-memory storage account holding
// catalogs and points, an in-memory fabric on the driver's clock, and a
// fake Azure side that answers the orchestrator's requests.
type env struct {
	t       tester
	tb      testing.TB
	cfg     failover.Config
	d       *runtimetest.Driver
	o       *failover.Orchestrator
	store   *memblob.Store
	fabric  *memfabric.Fabric
	replies []*proto.Reply
	vaultIn []string // "kind machine point" of what the Azure side got
	booted  map[string][][]byte
	// latest, when set, is the point MakeLatest makes for a machine.
	latest map[string]bool
	// vaultSilent: the Azure side never answers.
	vaultSilent bool
	runbooks    *runbooks
	mu          sync.Mutex
	// The fake configuration server: what it got ("kind machine vm req"),
	// and how many of the next messages it loses (csLose) or whether it
	// never answers (csSilent) or refuses (csRefuse).
	csIn     []string
	csLose   int
	csSilent bool
	csRefuse string
	// The fake master target: each machine's answer to
	// TargetPointsRequest, what it got ("points machine" / "failback
	// machine point"), the point each machine's disks were brought to,
	// messages it loses (mtLose) and failback points it refuses.
	mtPoints map[string]*proto.TargetPoints
	mtIn     []string
	mtAt     map[string]string
	mtLose   int
	mtRefuse map[string]string // point id → reason
	// onPrem records the OnPremBoot calls ("vm machine"); onPremFail
	// fails the check of a VM.
	onPrem     []string
	onPremFail map[string]error
}

type runbooks struct {
	mu    sync.Mutex
	fails map[string]int // runbook → failures left
	ran   []string
}

func (r *runbooks) Run(_ context.Context, name string, p failover.RunbookParams) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, fmt.Sprintf("%s %s g%d %v", name, p.FailoverType, p.Group, p.VMs))
	if r.fails[name] > 0 {
		r.fails[name]--
		return fmt.Errorf("runbook %s: exit code 1", name)
	}
	return nil
}

type options struct {
	latency memfabric.Latency
	copies  int // memblob pending copies
	vsphere vsphere.Client
	noMT    bool // no master target configured
}

// tester is what env reports to: a *testing.T, or a *rapid.T.
type tester interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Log(args ...any)
}

func newEnv(t *testing.T, opts options) *env { return newEnvFor(t, t, opts) }

// newEnvFor is newEnv reporting to rt (the driver reports to t).
func newEnvFor(t testing.TB, rt tester, opts options) *env {
	t.Helper()
	e := &env{t: rt, store: memblob.New(memblob.WithPendingCopies(opts.copies)), booted: map[string][][]byte{},
		latest: map[string]bool{}, runbooks: &runbooks{fails: map[string]int{}},
		mtPoints: map[string]*proto.TargetPoints{}, mtAt: map[string]string{}, mtRefuse: map[string]string{}, onPremFail: map[string]error{}}
	ctx := context.Background()
	for _, c := range proto.Containers() {
		must(rt, e.store.CreateContainer(ctx, prefix+c))
	}
	clock := func() time.Time { return runtimetest.Epoch }
	f, err := memfabric.New(e.store, memfabric.Options{Clock: func() time.Time { return clock() }, Latency: opts.latency,
		Booter: func(_ context.Context, vm compute.VM, disks []io.ReaderAt) error {
			var imgs [][]byte
			for _, d := range disks {
				b := make([]byte, diskSize)
				if _, err := d.ReadAt(b, 0); err != nil && err != io.EOF {
					return err
				}
				imgs = append(imgs, b)
			}
			e.mu.Lock()
			e.booted[vm.Ref.Name] = imgs
			e.mu.Unlock()
			if bytes.Contains(imgs[0][:64], []byte("/CORRUPT/")) {
				return fmt.Errorf("bank replay: balance check failed")
			}
			return nil
		}})
	must(rt, err)
	e.fabric = f
	must(rt, f.CreateGroup(ctx, rg))
	for _, n := range []compute.Ref{prodNet, testNet} {
		must(rt, f.CreateNetwork(ctx, compute.NetworkSpec{Group: rg, Name: n.Name, AddressSpace: netip.MustParsePrefix("10.0.0.0/16"),
			Subnets: []compute.SubnetSpec{{Name: "app", Prefix: netip.MustParsePrefix("10.0.1.0/24")}, {Name: "db", Prefix: netip.MustParsePrefix("10.0.2.0/24")}}}))
	}
	mt := mtAddr
	if opts.noMT {
		mt = ""
	}
	e.cfg = failover.Config{Fabric: f, FabricPeer: "management.azure", Store: e.store, StoragePeer: proto.HostStorage,
		ContainerPrefix: prefix, Vault: vaultAddr, Runbooks: e.runbooks, VSphere: opts.vsphere, VSpherePeer: "vc01", Group: rg, Production: prodNet, PollEvery: 15 * time.Second,
		ConfigServer: csAddr, MasterTarget: mt, OnPremBoot: e.onPremBoot}
	e.o = failover.New(e.cfg)
	e.tb = t
	e.d = runtimetest.New(t, foAddr, e.o)
	clock = func() time.Time { return e.d.Now() }
	if testing.Verbose() {
		e.d.SetLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	}
	return e
}

type testWriter struct{ t tester }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func must(t tester, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pointData is the content of a disk at a point: recognisable bytes.
func pointData(machine, point string, disk int) []byte {
	b := bytes.Repeat([]byte(fmt.Sprintf("%s/%s/disk%d;", machine, point, disk)), diskSize/16)
	return b[:diskSize/2] // the second half stays unallocated (zeros)
}

// image is a disk's full image at a point.
func image(machine, point string, disk int) []byte {
	b := make([]byte, diskSize)
	copy(b, pointData(machine, point, disk))
	return b
}

type pt struct {
	id   string
	kind proto.Consistency
}

// replicate writes a machine's replica disks with one snapshot per point,
// in order, and its catalog.
func (e *env) replicate(machine, group string, disks int, points ...pt) {
	e.t.Helper()
	ctx := context.Background()
	cat := proto.NewCatalog(machine)
	cat.Synced, cat.Gen, cat.Group = true, 1, group
	rc := prefix + proto.ContainerReplica
	for i := range disks {
		name := fmt.Sprintf("%s/disk%d", machine, i)
		_, err := e.store.CreatePageBlob(ctx, rc, name, diskSize, blob.WriteOptions{})
		must(e.t, err)
		cat.Disks = append(cat.Disks, proto.Disk{Index: i, Size: diskSize, Blob: name})
	}
	for n, p := range points {
		e.addPoint(cat, p, uint64(10*(n+1)))
	}
	e.putCatalog(cat)
}

func (e *env) addPoint(cat *proto.Catalog, p pt, seq uint64) {
	ctx := context.Background()
	rc := prefix + proto.ContainerReplica
	point := proto.Point{ID: p.id, Kind: p.kind, Seq: seq, Gen: 1, Time: runtimetest.Epoch.Add(time.Duration(seq) * time.Second)}
	for i, d := range cat.Disks {
		_, err := e.store.WritePages(ctx, rc, d.Blob, 0, pointData(cat.Machine, p.id, i), blob.WriteOptions{})
		must(e.t, err)
		snap, err := e.store.Snapshot(ctx, rc, d.Blob, nil)
		must(e.t, err)
		point.Snapshots = append(point.Snapshots, snap)
	}
	cat.Points = append(cat.Points, point)
	cat.AppliedLogSeq = seq
}

func (e *env) putCatalog(cat *proto.Catalog) {
	data, err := json.Marshal(cat)
	must(e.t, err)
	_, err = e.store.Put(context.Background(), prefix+proto.ContainerCatalog, proto.CatalogBlobName(cat.Machine), data, blob.WriteOptions{})
	must(e.t, err)
}

func (e *env) catalog(machine string) *proto.Catalog {
	c, _, err := proto.LoadCatalog(context.Background(), e.store, prefix, machine)
	must(e.t, err)
	return c
}

// send delivers a request from the portal and serves the Azure side.
func (e *env) send(m wire.Msg) {
	e.t.Helper()
	e.d.Receive(portal, m)
	e.pump()
}

// pump answers what the orchestrator sent to the Azure side and collects
// its replies to the portal, until nothing more is sent.
func (e *env) pump() {
	e.t.Helper()
	for {
		sent := e.d.Sent()
		if len(sent) == 0 {
			return
		}
		for _, s := range sent {
			switch s.To {
			case portal:
				e.replies = append(e.replies, s.Msg.(*proto.Reply))
			case vaultAddr:
				e.vault(s.Msg)
			case csAddr:
				e.configServer(s.Msg)
			case mtAddr:
				e.masterTarget(s.Msg)
			default:
				e.t.Errorf("message to %s", s.To)
			}
		}
	}
}

// vault is the fake Azure side.
func (e *env) vault(m wire.Msg) {
	var r proto.Reply
	switch m := m.(type) {
	case *proto.StopReplication:
		e.vaultIn = append(e.vaultIn, "stop "+m.Machine)
		c := e.catalog(m.Machine)
		c.Stopped = true
		e.putCatalog(c)
		r = proto.Reply{Request: "stop-replication", Subject: m.Machine, OK: true, Req: m.Req}
	case *proto.MakeLatest:
		e.vaultIn = append(e.vaultIn, "latest "+m.Machine)
		r = proto.Reply{Request: "make-latest", Subject: m.Machine, OK: true, Req: m.Req}
		if e.latest[m.Machine] {
			c := e.catalog(m.Machine)
			id := proto.LatestPointID(m.Machine, c.AppliedLogSeq+5)
			e.addPoint(c, pt{id, proto.Crash}, c.AppliedLogSeq+5)
			e.putCatalog(c)
			r.Result = id
		}
	case *proto.CommitPoint:
		e.vaultIn = append(e.vaultIn, "commit "+m.Machine+" "+m.Point)
		c := e.catalog(m.Machine)
		c.Points = slices.DeleteFunc(c.Points, func(p proto.Point) bool { return p.ID != m.Point })
		e.putCatalog(c)
		r = proto.Reply{Request: "commit-point", Subject: m.Machine, OK: true, Req: m.Req}
	default:
		e.t.Errorf("unexpected %T to the Azure side", m)
		return
	}
	if e.vaultSilent {
		return
	}
	e.d.Receive(vaultAddr, &r)
}

// configServer is the fake configuration server.
func (e *env) configServer(m wire.Msg) {
	r := proto.Reply{OK: e.csRefuse == "", Reason: e.csRefuse}
	switch m := m.(type) {
	case *proto.FailedOver:
		e.csIn = append(e.csIn, fmt.Sprintf("failed-over %s %s %s", m.Machine, m.AzureVM, m.Req))
		r.Request, r.Subject, r.Req = "failed-over", m.Machine, m.Req
	case *proto.FailedBack:
		e.csIn = append(e.csIn, fmt.Sprintf("failed-back %s %s %s", m.Machine, m.VM, m.Req))
		r.Request, r.Subject, r.Req = "failed-back", m.Machine, m.Req
	default:
		e.t.Errorf("unexpected %T to the configuration server", m)
		return
	}
	if e.csSilent {
		return
	}
	if e.csLose > 0 {
		e.csLose--
		return
	}
	e.d.Receive(csAddr, &r)
}

// masterTarget is the fake master target (proto.FailbackPoint's contract).
func (e *env) masterTarget(m wire.Msg) {
	var answer wire.Msg
	switch m := m.(type) {
	case *proto.TargetPointsRequest:
		e.mtIn = append(e.mtIn, "points "+m.Machine)
		tp := proto.TargetPoints{Req: m.Req, Machine: m.Machine, Err: "machine not attached"}
		if p := e.mtPoints[m.Machine]; p != nil {
			tp = *p
			tp.Req, tp.Machine = m.Req, m.Machine
		}
		answer = &tp
	case *proto.FailbackPoint:
		e.mtIn = append(e.mtIn, "failback "+m.Machine+" "+m.Point)
		r := proto.Reply{Request: "failback-point", Subject: m.Machine, Req: m.Req}
		tp := e.mtPoints[m.Machine]
		known := tp != nil && slices.ContainsFunc(tp.Points, func(p proto.TargetPoint) bool { return p.ID == m.Point })
		switch {
		case e.mtRefuse[m.Point] != "":
			r.Reason = e.mtRefuse[m.Point]
		case !known:
			r.Reason = "mastertarget: no failback point " + m.Point
		default:
			e.mtAt[m.Machine] = m.Point
			r.OK, r.Subject, r.Result = true, tp.VM, m.Point
		}
		answer = &r
	default:
		e.t.Errorf("unexpected %T to the master target", m)
		return
	}
	if e.mtLose > 0 {
		e.mtLose--
		return
	}
	e.d.Receive(mtAddr, answer)
}

// backPoints gives a machine failback points on the master target, its
// on-premises VM of the same name.
func (e *env) backPoints(machine string, points ...pt) {
	tp := &proto.TargetPoints{Machine: machine, VM: machine}
	for i, p := range points {
		tp.Points = append(tp.Points, proto.TargetPoint{ID: p.id, Kind: p.kind, Seq: uint64(10 * (i + 1)),
			Time: runtimetest.Epoch.Add(time.Duration(i+1) * time.Minute)})
	}
	e.mtPoints[machine] = tp
}

// onPremBoot is Config.OnPremBoot.
func (e *env) onPremBoot(_ context.Context, vm, machine string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onPrem = append(e.onPrem, vm+" "+machine)
	return e.onPremFail[vm]
}

// lastReply is the portal's newest reply.
func (e *env) lastReply() *proto.Reply {
	e.t.Helper()
	if len(e.replies) == 0 {
		e.t.Fatalf("no reply")
	}
	return e.replies[len(e.replies)-1]
}

// start sends a request and returns its job id; it must be accepted.
func (e *env) start(m *proto.FailoverRequest) string {
	e.t.Helper()
	e.send(m)
	r := e.lastReply()
	if !r.OK {
		e.t.Fatalf("%s refused: %s", m.Op, r.Reason)
	}
	return r.Result
}

// job returns a job by id.
func (e *env) job(id string) failover.Job {
	e.t.Helper()
	for _, j := range e.o.Jobs() {
		if j.ID == id {
			return j
		}
	}
	e.t.Fatalf("no job %s", id)
	return failover.Job{}
}

// wait advances the clock until job id leaves in-progress, at most limit.
func (e *env) wait(id string, limit time.Duration) failover.Job {
	e.t.Helper()
	end := e.d.Now().Add(limit)
	for e.job(id).State == failover.JobInProgress && e.d.Now().Before(end) {
		e.d.Advance(5 * time.Second)
		e.pump()
	}
	j := e.job(id)
	if j.State == failover.JobInProgress {
		e.t.Fatalf("job %s still in progress after %s: %s", id, limit, taskList(j))
	}
	return j
}

func (e *env) inventory() compute.Inventory {
	e.t.Helper()
	inv, err := e.fabric.Inventory(context.Background())
	must(e.t, err)
	return inv
}

func (e *env) blobs() []string {
	items, err := e.store.List(context.Background(), prefix+failover.ContainerFailover, "")
	if err != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

func (e *env) machine(name string) failover.MachineState {
	for _, m := range e.o.Machines() {
		if m.Machine == name {
			return m
		}
	}
	return failover.MachineState{}
}

// taskList is "name vm state" per task, for failure messages.
func taskList(j failover.Job) string {
	var b strings.Builder
	for _, t := range j.Tasks {
		fmt.Fprintf(&b, "\n  %s | %s | g%d | %s %d %s", t.Name, t.VM, t.Group, t.State, t.Code, t.Reason)
	}
	return b.String()
}

// restart crashes the orchestrator and starts a new one on the same
// storage account and fabric: its timers, pending answers and memory are
// gone; the fabric's operations go on; the clock goes on.
func (e *env) restart() {
	e.t.Helper()
	e.d.Sent() // what the old one sent is lost with it
	e.o = failover.New(e.cfg)
	e.d = runtimetest.NewAt(e.tb, foAddr, e.o, e.d.Now())
	e.pump()
}
