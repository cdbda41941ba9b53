// Package net models the network between v2a's hosts in virtual time: sites
// (on-premises and Azure), hosts placed in them, links with latency,
// bandwidth and loss, partitions and clogging, and the site-to-site VPN
// tunnel that failback needs.
//
// Replication traffic from on-premises reaches Azure's public endpoints (the
// storage account, the service) over the internet link; traffic between a
// private host in Azure (a VM, a temporary process server) and a private host
// on-premises needs the VPN, as in the real product, and is lost with the
// reason "no-vpn" while the tunnel is absent or down.
//
// Bandwidth is modelled as a queue per directed link: a transfer starts when
// the link is free, occupies it for bytes/bandwidth, and arrives one latency
// later. That gives throttling, backlog and RPO growth without a packet
// model.
package net

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"time"
)

// Site is where a host lives.
type Site string

// The two sites of the product.
const (
	OnPrem Site = "onprem"
	Azure  Site = "azure"
)

// LinkParams describe one direction of a link.
type LinkParams struct {
	Latency     time.Duration
	BytesPerSec int64   // 0 means unlimited
	Loss        float64 // probability that a transfer is lost, 0..1
	// Jitter adds a uniform random delay in [0, Jitter) to each transfer,
	// so that messages on one link can overtake each other.
	Jitter time.Duration
	// Dup is the probability that a message is delivered twice (the second
	// copy up to one latency later), as retransmitting middleboxes do.
	Dup float64
	// Reorder is the probability that a transfer is held back by a uniform
	// random delay in [0, ReorderWindow], so that later transfers on the
	// link overtake it (a multipath or load-balanced route).
	Reorder       float64
	ReorderWindow time.Duration
}

// Validate says what is wrong with p, if anything: probabilities must be
// in [0, 1] and durations not negative.
func (p LinkParams) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"loss", p.Loss}, {"dup", p.Dup}, {"reorder", p.Reorder}} {
		if !(f.v >= 0 && f.v <= 1) {
			return fmt.Errorf("net: %s=%g, want a probability in [0, 1]", f.name, f.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"latency", p.Latency}, {"jitter", p.Jitter}, {"reorder window", p.ReorderWindow}} {
		if d.v < 0 {
			return fmt.Errorf("net: %s=%s, want a duration >= 0", d.name, d.v)
		}
	}
	if p.BytesPerSec < 0 {
		return fmt.Errorf("net: bandwidth %d bytes/s, want >= 0", p.BytesPerSec)
	}
	return nil
}

// Path names a route class between two hosts.
type Path string

// The paths a transfer can take.
const (
	PathLocal    Path = "local"    // same host
	PathLAN      Path = "lan"      // same site
	PathInternet Path = "internet" // on-premises to an Azure public endpoint, or back
	PathVPN      Path = "vpn"      // private host to private host across sites
)

// VPNState is the site-to-site tunnel's state.
type VPNState int

// The tunnel's states.
const (
	VPNAbsent VPNState = iota // never configured
	VPNUp
	VPNDown // configured, currently broken
)

func (v VPNState) String() string {
	switch v {
	case VPNUp:
		return "up"
	case VPNDown:
		return "down"
	default:
		return "absent"
	}
}

// Host is a machine on the network.
type Host struct {
	Name   string
	Site   Site
	Public bool // an Azure public endpoint (storage, service): reachable without VPN
}

// Defaults for the links of a new network: a 1 Gb/s LAN on each site and a
// 100 Mb/s, 20 ms internet uplink.
var (
	DefaultLAN      = LinkParams{Latency: 200 * time.Microsecond, BytesPerSec: 125_000_000}
	DefaultInternet = LinkParams{Latency: 20 * time.Millisecond, BytesPerSec: 12_500_000}
	DefaultVPN      = LinkParams{Latency: 25 * time.Millisecond, BytesPerSec: 6_250_000}
)

type linkKey struct {
	path     Path
	from, to Site
}

type link struct {
	params    LinkParams
	busyUntil time.Time
	clog      *clog
	bytes     int64 // carried, for reports
	lost      int64
}

type clog struct {
	factor int64 // bandwidth divided by factor
	until  time.Time
}

// Net is the network model. Not safe for concurrent use.
type Net struct {
	hosts map[string]Host
	links map[linkKey]*link
	cut   map[[2]string]bool // partitioned pairs of hosts or sites, both orders
	vpn   VPNState
	// pairs counts the bytes carried from one host to another, by path.
	pairs map[PairKey]int64
}

// PairKey names one direction between two hosts on one path.
type PairKey struct {
	Path     Path
	From, To string
}

// New returns a network with the default links and no hosts.
func New() *Net {
	n := &Net{hosts: map[string]Host{}, links: map[linkKey]*link{}, cut: map[[2]string]bool{}, pairs: map[PairKey]int64{}}
	for _, s := range []Site{OnPrem, Azure} {
		n.links[linkKey{PathLAN, s, s}] = &link{params: DefaultLAN}
	}
	for _, pair := range [][2]Site{{OnPrem, Azure}, {Azure, OnPrem}} {
		n.links[linkKey{PathInternet, pair[0], pair[1]}] = &link{params: DefaultInternet}
		n.links[linkKey{PathVPN, pair[0], pair[1]}] = &link{params: DefaultVPN}
	}
	return n
}

// AddHost places a host. Adding a name twice is an error.
func (n *Net) AddHost(h Host) error {
	if h.Name == "" {
		return fmt.Errorf("net: host with no name")
	}
	if h.Site != OnPrem && h.Site != Azure {
		return fmt.Errorf("net: host %s: unknown site %q (want %s or %s)", h.Name, h.Site, OnPrem, Azure)
	}
	if _, dup := n.hosts[h.Name]; dup {
		return fmt.Errorf("net: host %s added twice", h.Name)
	}
	n.hosts[h.Name] = h
	return nil
}

// Host returns a host by name.
func (n *Net) Host(name string) (Host, bool) {
	h, ok := n.hosts[name]
	return h, ok
}

// Hosts lists the hosts by name.
func (n *Net) Hosts() []Host {
	out := make([]Host, 0, len(n.hosts))
	for _, h := range n.hosts {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SetLink changes one direction of a path between two sites (for LAN, from
// and to are the same site).
func (n *Net) SetLink(p Path, from, to Site, lp LinkParams) error {
	l := n.links[linkKey{p, from, to}]
	if l == nil {
		return fmt.Errorf("net: no %s link from %s to %s", p, from, to)
	}
	if err := lp.Validate(); err != nil {
		return err
	}
	l.params = lp
	return nil
}

// Link returns one direction's parameters.
func (n *Net) Link(p Path, from, to Site) (LinkParams, bool) {
	l := n.links[linkKey{p, from, to}]
	if l == nil {
		return LinkParams{}, false
	}
	return l.params, true
}

// SetVPN sets the tunnel's state.
func (n *Net) SetVPN(s VPNState) { n.vpn = s }

// VPN is the tunnel's state.
func (n *Net) VPN() VPNState { return n.vpn }

// Partition cuts all traffic between a and b, each a host or a site name.
func (n *Net) Partition(a, b string) {
	n.cut[[2]string{a, b}] = true
	n.cut[[2]string{b, a}] = true
}

// Heal removes every partition and clog.
func (n *Net) Heal() {
	n.cut = map[[2]string]bool{}
	for _, l := range n.links {
		l.clog = nil
	}
}

// Clog divides the bandwidth of one direction of a path by factor until the
// given time (FoundationDB's "swizzle clogging", done from the seed by the
// harness).
func (n *Net) Clog(p Path, from, to Site, factor int64, until time.Time) error {
	l := n.links[linkKey{p, from, to}]
	if l == nil {
		return fmt.Errorf("net: no %s link from %s to %s", p, from, to)
	}
	if factor < 1 {
		return fmt.Errorf("net: clog factor %d, want at least 1", factor)
	}
	l.clog = &clog{factor: factor, until: until}
	return nil
}

// Route says which path a transfer between two hosts takes, or why none
// exists.
func (n *Net) Route(from, to string) (Path, error) {
	hf, ok := n.hosts[from]
	if !ok {
		return "", fmt.Errorf("unknown-host:%s", from)
	}
	ht, ok := n.hosts[to]
	if !ok {
		return "", fmt.Errorf("unknown-host:%s", to)
	}
	switch {
	case from == to:
		return PathLocal, nil
	case hf.Site == ht.Site:
		return PathLAN, nil
	case hf.Public || ht.Public:
		return PathInternet, nil
	case n.vpn == VPNUp:
		return PathVPN, nil
	default:
		return "", fmt.Errorf("no-vpn(%s)", n.vpn)
	}
}

func (n *Net) partitioned(hf, ht Host) bool {
	for _, a := range []string{hf.Name, string(hf.Site)} {
		for _, b := range []string{ht.Name, string(ht.Site)} {
			if n.cut[[2]string{a, b}] {
				return true
			}
		}
	}
	return false
}

// Transit implements sched.Network.
func (n *Net) Transit(now time.Time, from, to string, bytes int64, r *rand.Rand) (time.Time, bool, string) {
	p, err := n.Route(from, to)
	if err != nil {
		return time.Time{}, false, err.Error()
	}
	if p == PathLocal {
		return now, true, ""
	}
	hf, ht := n.hosts[from], n.hosts[to]
	if n.partitioned(hf, ht) {
		return time.Time{}, false, "partitioned"
	}
	l := n.links[linkKey{p, hf.Site, ht.Site}]
	start := now
	if l.busyUntil.After(start) {
		start = l.busyUntil
	}
	bps := l.params.BytesPerSec
	if l.clog != nil {
		if now.Before(l.clog.until) {
			bps /= l.clog.factor
			if bps < 1 {
				bps = 1
			}
		} else {
			l.clog = nil
		}
	}
	var tx time.Duration
	if bps > 0 && bytes > 0 {
		tx = time.Duration(float64(bytes) / float64(bps) * float64(time.Second))
	}
	l.busyUntil = start.Add(tx)
	if l.params.Loss > 0 && r.Float64() < l.params.Loss {
		l.lost++
		return time.Time{}, false, "lost"
	}
	l.bytes += bytes
	n.pairs[PairKey{p, from, to}] += bytes
	arrive := start.Add(tx + l.params.Latency)
	if l.params.Jitter > 0 {
		arrive = arrive.Add(time.Duration(r.Int64N(int64(l.params.Jitter))))
	}
	// Drawn only on links that reorder, so that turning it on elsewhere
	// does not shift other draws.
	if l.params.Reorder > 0 && r.Float64() < l.params.Reorder {
		arrive = arrive.Add(time.Duration(r.Int64N(int64(l.params.ReorderWindow) + 1)))
	}
	return arrive, true, ""
}

// Duplicate says whether a message from one host to another that arrived
// is delivered a second time, and how much later. It draws from r only on
// links that duplicate, so turning duplication on elsewhere does not shift
// other draws.
func (n *Net) Duplicate(from, to string, r *rand.Rand) (time.Duration, bool) {
	p, err := n.Route(from, to)
	if err != nil || p == PathLocal {
		return 0, false
	}
	hf, ht := n.hosts[from], n.hosts[to]
	l := n.links[linkKey{p, hf.Site, ht.Site}]
	if l.params.Dup <= 0 || r.Float64() >= l.params.Dup {
		return 0, false
	}
	return time.Duration(r.Int64N(int64(l.params.Latency) + 1)), true
}

// Backlog is how long a new transfer on one direction of a path would wait
// for the link to be free.
func (n *Net) Backlog(now time.Time, p Path, from, to Site) time.Duration {
	l := n.links[linkKey{p, from, to}]
	if l == nil || !l.busyUntil.After(now) {
		return 0
	}
	return l.busyUntil.Sub(now)
}

// Carried reports bytes carried and transfers lost on one direction.
func (n *Net) Carried(p Path, from, to Site) (bytes, lost int64) {
	l := n.links[linkKey{p, from, to}]
	if l == nil {
		return 0, 0
	}
	return l.bytes, l.lost
}

// Pairs returns the bytes carried between hosts so far (transfers that
// arrived or were still in flight; lost ones not), by path and direction:
// what the failback path check judges.
func (n *Net) Pairs() map[PairKey]int64 { return maps.Clone(n.pairs) }
