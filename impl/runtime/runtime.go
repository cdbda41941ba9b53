// Package runtime is the contract between v2a components and whatever drives
// them. Every component (agent, configuration server, process server, Azure
// service, master target) is an Actor: it reacts to one Event at a time through
// a Context, and never starts goroutines, reads the wall clock, sleeps, draws
// from the global random source or dials the network itself.
//
// Two drivers implement Context: the deterministic simulator in sim/sched (one
// goroutine, virtual time, every actor stepped from one ordered queue) and the
// Real runtime in this package (one goroutine and mailbox per actor, the real
// clock, TCP). Component code is the same under both; that is what lets a
// scenario that passed in simulation run unchanged against real vCenter and
// Azure.
//
// Logging: an actor logs through Context.Log (or LogAt, for a record whose
// level is data). A message says what happened and starts with the package's
// name, "azuresvc: item applied"; the facts go in slog key/value pairs, and
// every key is lower-case words joined by underscores ("machine", "seq",
// "applied_log_seq"), with "err" for an error. impl/archtest enforces both
// (TestLogStyle).
package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/v2a-dr/v2a/impl/wire"
)

// Addr is an actor's network address, "host:port". Port numbers are the real
// product's (443 configuration server, 9443 process server, 20004 the
// multi-VM tag protocol) in every world.
type Addr string

// MakeAddr joins host and port into an Addr.
func MakeAddr(host string, port int) Addr {
	return Addr(net.JoinHostPort(host, strconv.Itoa(port)))
}

// Host is the host part of a.
func (a Addr) Host() string {
	h, _, err := net.SplitHostPort(string(a))
	if err != nil {
		return string(a)
	}
	return h
}

// Port is the port part of a, or 0 when a has none.
func (a Addr) Port() int {
	_, p, err := net.SplitHostPort(string(a))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// The well-known ports of the product.
const (
	PortConfig  = 443   // configuration server: registration, management
	PortProcess = 9443  // process server: replication data
	PortTag     = 20004 // multi-VM consistency: distributed tag protocol
	// PortTarget is the on-premises master target's (failback): the
	// stream the process server in Azure sends over the VPN. ASR does not
	// document one; v2a's choice.
	PortTarget = 9080
)

// Event is what an actor handles: one of Started, Message, Timer or Done.
type Event interface{ isEvent() }

// Started is the first event an actor sees, after every (re)start. An actor
// that was restarted must rebuild its state from durable storage here.
type Started struct{}

// Message is a frame received from another actor. Data is an impl/wire frame;
// decode it with Decode, which rejects a corrupt or foreign frame.
//
// Who checks a frame's CRC-32C: the driver that received it, if it did
// (Opened), else Decode — once per frame either way. The Real checks every
// frame it reads off a connection (wire.Open, before delivery: a corrupt
// frame closes its connection and never reaches the actor); the simulator
// and the test driver deliver the bytes as sent, not Opened.
type Message struct {
	From Addr
	Data []byte
	// Opened: the driver checked Data with wire.Open on arrival.
	Opened bool
}

// Decode decodes the message's frame: wire.DecodeOpened when the driver
// checked it on arrival (Opened), else wire.Decode, which checks its CRC.
func (m Message) Decode() (wire.Msg, error) {
	if m.Opened {
		return wire.DecodeOpened(m.Data)
	}
	return wire.Decode(m.Data)
}

// Timer is a timer set with Context.After firing.
type Timer struct {
	ID   TimerID
	Name string
}

// Done is the completion of an Op started with Context.Start.
type Done struct {
	ID    OpID
	Name  string
	Value any
	Err   error
}

func (Started) isEvent() {}
func (Message) isEvent() {}
func (Timer) isEvent()   {}
func (Done) isEvent()    {}

// TimerID names a pending timer so that it can be cancelled.
type TimerID uint64

// OpID names a started Op; the matching Done carries it.
type OpID uint64

// Op is an I/O an actor starts: a call to a port (blob storage, vSphere, a
// block device) whose result comes back later as a Done event.
//
// Run executes outside the actor's event handling in the Real runtime (on a
// goroutine of its own), so it must only use what it captured when the Op was
// built and must not touch the actor's fields: copy what it needs, return the
// result, and apply the result when Done arrives. In the simulator Run
// executes at once, in queue order, and Done is delivered after the virtual
// time that the network model gives Bytes travelling to Peer.
//
// Run's ctx is the op's lifetime: the Real runtime cancels it when the actor
// crashes or the runtime stops (its Done is dropped then anyway), so a port
// call must pass it on and return soon after it is done. The simulator and
// runtimetest run ops synchronously with a context that is never cancelled.
// Component code never makes a context of its own (context.Background is
// forbidden in impl/ outside tests): it uses this one.
//
// Disk declares the local disk work Run does (file writes, reads, fsyncs),
// so that the simulator can charge it virtual time from its disk model
// (sim/sched.DiskModel): per-device fsync latency and throughput, one op
// at a time per device. An op that touches a local disk must say so here,
// or the simulator charges it a flat sched.LocalIOLatency and its fsyncs
// never show in RPO or hold figures. The Real runtime ignores Disk: the
// real disk takes what it takes.
type Op struct {
	Name  string // shown in the trace
	Peer  string // the host the I/O talks to; "" for a local device
	Bytes int64  // payload size, for the network model
	Disk  *DiskIO
	Run   func(ctx context.Context) (any, error)
}

// DiskIO is an Op's local disk work, a hint for the simulator's disk model.
// It describes what Run does, not what it must do: an op whose Run fails
// early was still charged the whole of it.
type DiskIO struct {
	// Device names the disk on the actor's host ("os": the system disk
	// holding the agent's state and change log; "cache": a process
	// server's cache disk). Ops on one device of one host are served one
	// at a time, in the order started: a busy disk queues.
	Device string
	// Bytes is the data read or written. Writes count here even when they
	// only reach the page cache: the fsync that follows pays for moving
	// them to the disk.
	Bytes int64
	// Syncs is the number of fsyncs (of files or directories) Run waits for.
	Syncs int
}

// Disk devices the components use (DiskIO.Device).
const (
	DeviceOS    = "os"    // the machine's system disk: agent state, change log
	DeviceCache = "cache" // the process server's cache disk
)

// Context is what an actor sees while it handles one event. It is valid only
// during that call: an actor must not keep it.
type Context interface {
	// Self is the actor's own address.
	Self() Addr
	// Now is the current time: virtual in the simulator, real otherwise.
	Now() time.Time
	// After sets a timer that delivers Timer{Name: name} after d.
	After(d time.Duration, name string) TimerID
	// Cancel stops a pending timer; cancelling a fired one does nothing.
	Cancel(id TimerID)
	// Send delivers data (a wire frame) to the actor at to, at most once and
	// possibly never: links lose, partition and reorder across connections.
	// Protocols that need delivery retry on a timer. Send keeps data as it
	// is (the real runtime writes it from another goroutine, without a
	// copy: a replication item is a megabyte): the caller must not modify
	// data after the call; sending the same frame again is fine.
	Send(to Addr, data []byte)
	// Rand is the actor's own seeded source. In the simulator it is derived
	// from the run's seed and the actor's address, so runs are repeatable.
	Rand() *rand.Rand
	// Log is the actor's logger. In the simulator its records go to the
	// event trace stamped with virtual time, so keep them deterministic.
	Log() *slog.Logger
	// Start begins op; its result arrives later as a Done event.
	Start(op Op) OpID
}

// Actor is a component. Handle is called with one event at a time, never
// concurrently, and must not block: slow work goes through Context.Start.
type Actor interface {
	Handle(ctx Context, ev Event)
}

// Factory builds an actor. Drivers call it at first start and again after a
// simulated crash, so it must not carry in-memory state across calls: what
// must survive a crash lives on a device or in storage the factory reopens.
type Factory func() Actor

// ErrStopped is returned by a driver's calls after it was stopped.
var ErrStopped = fmt.Errorf("runtime: stopped")
