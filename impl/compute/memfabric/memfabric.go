// Package memfabric is an in-memory compute.Fabric: an Azure subscription
// for tests and for the simulated world (sim/fabric builds one with a
// documented latency model in virtual time). It passes the conformance
// suite impl/compute/computetest, like the real adapter.
//
// It is deterministic. Nothing happens on its own: an operation started by
// a Begin call is done once the fabric's clock has reached its end time
// (the start plus the operation's latency), and its effects (a VM booted, a
// NIC's address freed) are applied, in order of end time and then start
// order, by the next call that looks at the fabric. Tokens and every list
// are ordered, never in map order, so the same calls at the same clock
// readings give the same answers.
//
// Beyond the port it offers what only a simulated fabric can: a latency
// model with seeded jitter (Latency), a boot hook that runs the guest's own
// recovery on its disk images (Booter), fault injection by Azure Site
// Recovery error code (Inject), and a reachability test between two NICs
// for isolation checks (Reachable).
package memfabric

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
)

// Booter is run when a VM boots (at the end of its create, and of every
// start), with the VM as it stands and a reader per disk, the OS disk
// first and then the data disks in order. A nil error means the guest came
// up and its application recovered (GuestStatus.Ready); an error means the
// VM runs but its guest is not healthy, with the error's text as the
// guest's message. A Booter must not call the fabric (it runs under the
// fabric's lock) and must not keep the readers.
type Booter func(ctx context.Context, vm compute.VM, disks []io.ReaderAt) error

// Latency is how long each kind of operation takes, from its Begin call
// until Poll reports it done.
type Latency struct {
	CreateNIC  time.Duration
	CreateDisk time.Duration // import of a page blob into a managed disk
	CreateVM   time.Duration // create and first boot
	// Hydrate is added to CreateVM for a VM tagged compute.TagHydrate
	// "true" (Azure Site Recovery hydrates Linux and physical sources at
	// their first boot).
	Hydrate    time.Duration
	Start      time.Duration
	Deallocate time.Duration
	Delete     time.Duration
	// Jitter spreads every latency: each is scaled by a factor drawn
	// uniformly from [1-Jitter, 1+Jitter) from Options.Rand, in call order.
	// 0 gives the exact values.
	Jitter float64
}

// Options configure New. The zero value is a fabric whose operations are
// all done at their first Poll.
type Options struct {
	// Clock is the fabric's time (the simulator's virtual clock). Without
	// one, latencies are ignored: every operation is done at once.
	Clock func() time.Time
	// Latency is the time operations take (needs Clock).
	Latency Latency
	// Rand draws the jitter (needs Latency.Jitter > 0). Give a source of
	// its own, seeded from the run's seed.
	Rand *rand.Rand
	// Booter runs the guest at each boot; nil boots every guest healthy.
	Booter Booter
	// PollInterval caps Result.After, as Azure's Retry-After would; 0
	// suggests polling exactly when the operation will be done.
	PollInterval time.Duration
}

// Fabric is an in-memory Azure subscription attached to one storage
// account (a blob.Store) from which it imports disks. It is safe for
// concurrent use.
type Fabric struct {
	mu    sync.Mutex
	store blob.Store
	opts  Options

	groups map[string]bool
	nets   map[compute.Ref]*network
	nics   map[compute.Ref]*nic
	disks  map[compute.Ref]*disk
	vms    map[compute.Ref]*vm

	ops     map[compute.Pending]*op
	pending []*op // not yet applied, in start order
	opSeq   int
	faults  []*Fault
}

var _ compute.Fabric = (*Fabric)(nil)

// New returns an empty fabric that imports disks from store. Options that
// cannot work (a negative latency, jitter outside [0, 1) or without Rand,
// latencies without a clock) are an error.
func New(store blob.Store, opts Options) (*Fabric, error) {
	if store == nil {
		return nil, fmt.Errorf("memfabric: no blob store to import disks from")
	}
	l := opts.Latency
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"CreateNIC", l.CreateNIC}, {"CreateDisk", l.CreateDisk}, {"CreateVM", l.CreateVM}, {"Hydrate", l.Hydrate},
		{"Start", l.Start}, {"Deallocate", l.Deallocate}, {"Delete", l.Delete}, {"PollInterval", opts.PollInterval}} {
		if d.v < 0 {
			return nil, fmt.Errorf("memfabric: latency %s is negative (%s)", d.name, d.v)
		}
		if d.v > 0 && opts.Clock == nil && d.name != "PollInterval" {
			return nil, fmt.Errorf("memfabric: latency %s (%s) needs a Clock", d.name, d.v)
		}
	}
	if l.Jitter < 0 || l.Jitter >= 1 {
		return nil, fmt.Errorf("memfabric: jitter %v outside [0, 1)", l.Jitter)
	}
	if l.Jitter > 0 && opts.Rand == nil {
		return nil, fmt.Errorf("memfabric: jitter %v needs a seeded Rand", l.Jitter)
	}
	return &Fabric{
		store:  store,
		opts:   opts,
		groups: map[string]bool{},
		nets:   map[compute.Ref]*network{},
		nics:   map[compute.Ref]*nic{},
		disks:  map[compute.Ref]*disk{},
		vms:    map[compute.Ref]*vm{},
		ops:    map[compute.Pending]*op{},
	}, nil
}

// The fabric's resources. busy is the operation in progress on a resource
// (its create or delete, a start or deallocate), nil when none.
type network struct {
	ref     compute.Ref
	space   netip.Prefix
	subnets []*subnet // sorted by name
	peers   map[compute.Ref]bool
	busy    *op
}

type subnet struct {
	name   string
	prefix netip.Prefix
	used   map[netip.Addr]compute.Ref
}

type nic struct {
	compute.NIC
	busy *op
}

type disk struct {
	compute.Disk
	img  *image
	busy *op
}

type vm struct {
	compute.VM
	busy *op
}

// op is one long-running operation.
type op struct {
	token  compute.Pending
	kind   string // one of the Op* names
	ref    compute.Ref
	doneAt time.Time
	seq    int
	done   bool
	err    *compute.Error // the operation's failure, once done
	// fail, when set, is the failure the operation ends with (an
	// injected fault decided at Begin).
	fail *compute.Error
	// apply makes the operation's effects when it is done; it returns
	// the operation's failure, or nil.
	apply func(ctx context.Context) *compute.Error
}

// now reads the clock; without one the fabric lives at the zero time.
func (f *Fabric) now() time.Time {
	if f.opts.Clock == nil {
		return time.Time{}
	}
	return f.opts.Clock()
}

// latency draws the duration of an operation: base scaled by the jitter.
func (f *Fabric) latency(base time.Duration) time.Duration {
	if f.opts.Clock == nil || base <= 0 {
		return 0
	}
	if j := f.opts.Latency.Jitter; j > 0 {
		factor := 1 - j + 2*j*f.opts.Rand.Float64()
		return time.Duration(float64(base) * factor)
	}
	return base
}

// start registers an operation that ends after d.
func (f *Fabric) start(kind string, ref compute.Ref, d time.Duration, apply func(context.Context) *compute.Error) *op {
	f.opSeq++
	o := &op{
		token:  compute.Pending(fmt.Sprintf("op-%06d/%s/%s/%s", f.opSeq, kind, ref.Group, ref.Name)),
		kind:   kind,
		ref:    ref,
		doneAt: f.now().Add(d),
		seq:    f.opSeq,
		apply:  apply,
	}
	f.ops[o.token] = o
	f.pending = append(f.pending, o)
	return o
}

// settle applies every operation whose end time has come, in order of end
// time, then start order.
func (f *Fabric) settle(ctx context.Context) {
	now := f.now()
	var due []*op
	keep := f.pending[:0]
	for _, o := range f.pending {
		if !o.doneAt.After(now) {
			due = append(due, o)
		} else {
			keep = append(keep, o)
		}
	}
	clear(f.pending[len(keep):])
	f.pending = keep
	sort.SliceStable(due, func(i, j int) bool {
		if !due[i].doneAt.Equal(due[j].doneAt) {
			return due[i].doneAt.Before(due[j].doneAt)
		}
		return due[i].seq < due[j].seq
	})
	for _, o := range due {
		o.err = o.apply(ctx)
		o.done = true
	}
}

// enter locks the fabric and applies what is due; the caller unlocks.
func (f *Fabric) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	f.settle(ctx)
	return nil
}

// Errors as Azure words them.

func errNotFound(what string) *compute.Error {
	return &compute.Error{Status: 404, Code: compute.CodeNotFound, Message: what + " not found"}
}

func errGroupNotFound(group string) *compute.Error {
	return &compute.Error{Status: 404, Code: "ResourceGroupNotFound", Message: fmt.Sprintf("resource group %q not found", group)}
}

func errExists(ref compute.Ref) *compute.Error {
	return &compute.Error{Status: 409, Code: compute.CodeExists, Message: ref.String() + " already exists"}
}

func errConflict(format string, args ...any) *compute.Error {
	return &compute.Error{Status: 409, Code: compute.CodeConflict, Message: fmt.Sprintf(format, args...)}
}

func errInvalid(format string, args ...any) *compute.Error {
	return &compute.Error{Status: 400, Code: compute.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// checkName refuses an empty name or one that cannot be part of an ARM ID.
func checkName(what, name string) *compute.Error {
	if name == "" || strings.ContainsAny(name, "/\\?#") {
		return errInvalid("%s name %q is empty or has a character Azure does not allow", what, name)
	}
	return nil
}

// needGroup checks that a group exists.
func (f *Fabric) needGroup(group string) *compute.Error {
	if !f.groups[group] {
		return errGroupNotFound(group)
	}
	return nil
}

// ret turns a possibly nil *compute.Error into an error.
func ret(e *compute.Error) error {
	if e == nil {
		return nil
	}
	return e
}

// CreateGroup implements compute.Fabric.
func (f *Fabric) CreateGroup(ctx context.Context, name string) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.mu.Unlock()
	if e := checkName("resource group", name); e != nil {
		return e
	}
	f.groups[name] = true
	return nil
}

// Poll implements compute.Fabric.
func (f *Fabric) Poll(ctx context.Context, p compute.Pending) (compute.Result, error) {
	if err := f.enter(ctx); err != nil {
		return compute.Result{}, err
	}
	defer f.mu.Unlock()
	o, ok := f.ops[p]
	if !ok {
		return compute.Result{}, errNotFound(fmt.Sprintf("operation %q", p))
	}
	if o.done {
		return compute.Result{Done: true, Err: ret(o.err)}, nil
	}
	after := o.doneAt.Sub(f.now())
	if iv := f.opts.PollInterval; iv > 0 && after > iv {
		after = iv
	}
	return compute.Result{After: after}, nil
}

// Reachable reports whether a and b can reach each other over the
// fabric's networks. Each may be a NIC (its network), a VM (the networks
// of its NICs) or a network (itself): they reach each other when some
// network of a is some network of b, or the two are peered (peering is
// not transitive). A resource that does not exist reaches nothing. It is
// not part of the port: it is what an isolation check asks of the
// simulated fabric.
func (f *Fabric) Reachable(ctx context.Context, a, b compute.Ref) bool {
	if f.enter(ctx) != nil {
		return false
	}
	defer f.mu.Unlock()
	for _, na := range f.networksOf(a) {
		for _, nb := range f.networksOf(b) {
			if na == nb {
				return true
			}
			if n := f.nets[na]; n != nil && n.peers[nb] {
				return true
			}
		}
	}
	return false
}

// networksOf is where a NIC, VM or network sits.
func (f *Fabric) networksOf(r compute.Ref) []compute.Ref {
	switch r.Kind {
	case compute.KindNetwork:
		if f.nets[r] != nil {
			return []compute.Ref{r}
		}
	case compute.KindNIC:
		if nc := f.nics[r]; nc != nil {
			return []compute.Ref{nc.Network}
		}
	case compute.KindVM:
		if v := f.vms[r]; v != nil {
			var out []compute.Ref
			for _, n := range v.NICs {
				out = append(out, f.networksOf(n)...)
			}
			return out
		}
	}
	return nil
}

// match reports whether a glob matches name ("" matches everything).
func match(glob, name string) bool {
	if glob == "" {
		return true
	}
	ok, _ := path.Match(glob, name)
	return ok
}

// sortedRefs returns the keys of a ref set in order.
func sortedRefs(m map[compute.Ref]bool) []compute.Ref {
	var out []compute.Ref
	for r, ok := range m {
		if ok {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, compute.Ref.Compare)
	return out
}
