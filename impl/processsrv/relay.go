package processsrv

import (
	"slices"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Relay is the process server in Azure during failback (FAILOVER.md §B):
// a VM in the recovery network that the agents of failed-over VMs stream
// to, and that passes their streams on to the on-premises master target
// over the site-to-site VPN. Its rules:
//
//  1. StreamHello and ItemMsg from an agent go to the master target
//     unchanged (the frame as it came); the agent's address is remembered
//     by machine, and ItemAck from the master target goes back to it. The
//     master target answers a StreamHello with its durable position, so
//     the numbering is the master target's, as it is the process server's
//     in the forward direction.
//  2. The relay keeps nothing: an item is acknowledged only by the master
//     target, once applied and durable there, and the agent holds every
//     item (and its change log) until then. So a relay restart, or a VPN
//     that drops, loses nothing: the agent's retransmission resends what
//     was not acknowledged, from where the master target is — never from
//     the start. A production process server would also cache and
//     compress; v2a's relay measures what crosses the VPN instead.
//  3. Every HealthEvery it reports PSHealth (Server: its Name) to the
//     configuration server, which is how the configuration server knows
//     the Azure side can reach it (ASR's 95226 when it cannot).
type Relay struct {
	cfg    RelayConfig
	agents map[string]runtime.Addr
	per    map[string]*RelayMachine
	timers runtime.Timers
	st     RelayStatus
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	Name         string       // its host name, reported in PSHealth
	Target       runtime.Addr // the master target
	ConfigServer runtime.Addr
	HealthEvery  time.Duration // default 30 s
}

// RelayStatus counts what the relay passed on.
type RelayStatus struct {
	Items        int64 // ItemMsg frames sent to the master target
	ItemBytes    int64 // their frame bytes
	Hellos       int64
	Acks         int64 // ItemAck frames sent back to agents
	DroppedAcks  int64 // ItemAck for a machine no agent streamed from
	Machines     []string
	HealthReport int64
	// PerMachine counts each machine's items and their frame bytes.
	PerMachine []RelayMachine
}

// RelayMachine is what the relay passed on for one machine.
type RelayMachine struct {
	Machine   string
	Items     int64
	ItemBytes int64
}

const relayHealth = "health"

// NewRelay returns a relay; drive it as a runtime.Actor.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.HealthEvery <= 0 {
		cfg.HealthEvery = 30 * time.Second
	}
	return &Relay{cfg: cfg, agents: map[string]runtime.Addr{}, per: map[string]*RelayMachine{}}
}

// Handle implements runtime.Actor.
func (r *Relay) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		r.health(ctx)
	case runtime.Timer:
		if r.timers.Fired(ev) && ev.Name == relayHealth {
			r.health(ctx)
		}
	case runtime.Message:
		r.message(ctx, ev)
	}
}

func (r *Relay) health(ctx runtime.Context) {
	r.st.HealthReport++
	ctx.Send(r.cfg.ConfigServer, wire.Encode(&proto.PSHealth{Server: r.cfg.Name}))
	r.timers.Set(ctx, relayHealth, r.cfg.HealthEvery)
}

func (r *Relay) message(ctx runtime.Context, ev runtime.Message) {
	msg, err := ev.Decode() // the CRC checked once: by the runtime, else here
	if err != nil {
		ctx.Log().Warn("processsrv: relay dropped undecodable frame", "from", string(ev.From), "err", err.Error())
		return
	}
	switch m := msg.(type) {
	case *proto.StreamHello:
		r.learn(m.Machine, ev.From)
		r.st.Hellos++
		ctx.Send(r.cfg.Target, ev.Data)
	case *proto.ItemMsg:
		r.learn(m.Machine, ev.From)
		r.st.Items++
		r.st.ItemBytes += int64(len(ev.Data))
		pm := r.per[m.Machine]
		pm.Items++
		pm.ItemBytes += int64(len(ev.Data))
		ctx.Send(r.cfg.Target, ev.Data)
	case *proto.ItemAck:
		to, ok := r.agents[m.Machine]
		if !ok {
			r.st.DroppedAcks++
			ctx.Log().Warn("processsrv: relay dropped an ack for a machine that sent nothing", "machine", m.Machine)
			return
		}
		r.st.Acks++
		ctx.Send(to, ev.Data)
	default:
		ctx.Log().Warn("processsrv: relay dropped unexpected message", "from", string(ev.From), "kind", wire.KindName(msg.WireKind()))
	}
}

func (r *Relay) learn(machine string, from runtime.Addr) {
	if _, ok := r.agents[machine]; !ok {
		r.st.Machines = append(r.st.Machines, machine)
		slices.Sort(r.st.Machines)
		r.per[machine] = &RelayMachine{Machine: machine}
	}
	r.agents[machine] = from
}

// Status returns the counters (read through runtime.Inspect).
func (r *Relay) Status() RelayStatus {
	st := r.st
	st.Machines = slices.Clone(r.st.Machines)
	for _, m := range st.Machines {
		st.PerMachine = append(st.PerMachine, *r.per[m])
	}
	return st
}
