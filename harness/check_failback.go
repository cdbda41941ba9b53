package harness

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/disk"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

// The failback checks (FAILOVER.md §B; issue 10):
//
//   - round-trip: after a failback, the on-premises disks are the Azure
//     guest's disks at the failback point, byte for byte (its history's
//     state right after the writes logged before the point's bookmark),
//     and the application recovers on them; after a reprotect to Azure,
//     the first Azure point made since is the on-premises disks at its
//     bookmark.
//   - vpn-bytes: what the VPN carried from Azure to on-premises during a
//     reprotect's sync, against the bytes of the blocks changed since the
//     failover; an original-location reprotect must stay within
//     vpnBytesFactor of them plus vpnDiskAllowance of the disks (a full
//     copy fails).
//   - path: forward replication never used the VPN, and failback used
//     nothing else: every byte between a failback host in Azure and a host
//     on premises crossed the VPN, and some did.

// The vpn-bytes bound.
const (
	vpnBytesFactor   = 1.05
	vpnDiskAllowance = 0.01
)

// judgeVPNBytes is the vpn-bytes verdict on one machine's reprotect.
func judgeVPNBytes(machine, location string, synced bool, vpn, changed, diskBytes int64) Result {
	r := Result{Check: "vpn-bytes", Subject: machine}
	if !synced {
		r.Verdict, r.Evidence = Unknown, "the reprotect's sync has not completed: nothing to measure yet"
		return r
	}
	ratio := "∞"
	if changed > 0 {
		ratio = fmt.Sprintf("%.3f", float64(vpn)/float64(changed))
	}
	limit := int64(vpnBytesFactor*float64(changed) + vpnDiskAllowance*float64(diskBytes))
	r.Detail = fmt.Sprintf("%s location: %s over the VPN for %s of changed blocks (ratio %s; disks %s)",
		location, fmtBytes(vpn), fmtBytes(changed), ratio, fmtBytes(diskBytes))
	switch {
	case location != proto.LocationOriginal:
		// An alternate location is a full copy by design: the figure is
		// reported, and round-trip judges what arrived.
		r.Verdict = OK
		r.Detail += ": a full copy, as an alternate location must"
	case vpn > limit:
		r.Verdict = Illegal
		r.Evidence = fmt.Sprintf("%s over the VPN, over the bound %s (%.2f × changed + %.0f%% of the disks): the reprotect sent more than the blocks that differ",
			fmtBytes(vpn), fmtBytes(limit), vpnBytesFactor, vpnDiskAllowance*100)
	case vpn == 0:
		r.Verdict = Illegal
		r.Evidence = "nothing crossed the VPN, yet the sync completed: the data came some other way"
	default:
		r.Verdict = OK
	}
	return r
}

// fmtBytes prints a byte count with a binary unit.
func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// judgePath is the path verdict: pairs are the bytes carried between
// hosts; failback says which hosts are failback's in Azure, site where
// each host is.
func judgePath(pairs map[simnet.PairKey]int64, failback func(host string) bool, onPrem func(host string) bool) []Result {
	var keys []simnet.PairKey
	for k := range pairs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	fwd := Result{Check: "path", Subject: "forward", Verdict: OK}
	back := Result{Check: "path", Subject: "failback", Verdict: OK}
	var fwdInternet, backVPN int64
	var fwdBad, backBad []string
	for _, k := range keys {
		n := pairs[k]
		fb := failback(k.From) || failback(k.To)
		crossSite := onPrem(k.From) != onPrem(k.To)
		switch {
		case fb && crossSite && k.Path == simnet.PathVPN:
			backVPN += n
		case fb && crossSite:
			backBad = append(backBad, fmt.Sprintf("%s→%s %s over %s", k.From, k.To, fmtBytes(n), k.Path))
		case !fb && k.Path == simnet.PathVPN:
			fwdBad = append(fwdBad, fmt.Sprintf("%s→%s %s over the VPN", k.From, k.To, fmtBytes(n)))
		case !fb && k.Path == simnet.PathInternet:
			fwdInternet += n
		}
	}
	fwd.Detail = fmt.Sprintf("%s over the Internet path, none over the VPN", fmtBytes(fwdInternet))
	switch {
	case len(fwdBad) > 0:
		fwd.Verdict, fwd.Evidence = Illegal, "forward replication used the VPN: "+strings.Join(fwdBad, "; ")
	case fwdInternet == 0:
		fwd.Verdict, fwd.Evidence = Unknown, "forward replication sent nothing to Azure: nothing to judge"
	}
	back.Detail = fmt.Sprintf("%s between Azure and on-premises over the VPN, nothing outside it", fmtBytes(backVPN))
	switch {
	case len(backBad) > 0:
		back.Verdict, back.Evidence = Illegal, "failback traffic outside the VPN: "+strings.Join(backBad, "; ")
	case backVPN == 0:
		back.Verdict, back.Evidence = Unknown, "failback sent nothing across sites yet: nothing to judge"
	}
	return []Result{fwd, back}
}

// checkFailback runs one failback check.
func (fb *Failback) check(what string, vms []string) ([]Result, error) {
	fb.observe()
	switch what {
	case "vpn-bytes":
		var out []Result
		for _, m := range sortedKeys(fb.reprotects) {
			if len(vms) > 0 && !slices.Contains(vms, m) {
				continue
			}
			rec := fb.reprotects[m]
			out = append(out, judgeVPNBytes(m, rec.location, rec.synced, rec.vpnBytes(), rec.changed, rec.diskBytes))
		}
		return out, nil
	case "path":
		e := fb.d.e
		failbackHost := func(h string) bool {
			if h == HostAzurePS {
				return true
			}
			for _, ag := range fb.guests {
				if ag.host == h {
					return true
				}
			}
			return false
		}
		onPrem := func(h string) bool {
			host, ok := e.Net.Host(h)
			return ok && host.Site == simnet.OnPrem
		}
		return judgePath(e.Net.Pairs(), failbackHost, onPrem), nil
	case "round-trip":
		return fb.roundTrip(vms)
	}
	return nil, fmt.Errorf("unknown failback check %q", what)
}

// roundTrip judges every failed-back machine.
func (fb *Failback) roundTrip(vms []string) ([]Result, error) {
	d := fb.d
	fo := d.fo
	var out []Result
	if fo == nil {
		return nil, nil
	}
	backs, err := fo.failbacks()
	if err != nil {
		return nil, err
	}
	for _, m := range sortedKeys(backs) {
		if len(vms) > 0 && !slices.Contains(vms, m) {
			continue
		}
		b := backs[m]
		subj := m + "@" + b.point
		ag := fb.guests[m]
		if ag == nil {
			out = append(out, Result{Check: "round-trip", Subject: subj, Verdict: Unknown, Evidence: "no Azure guest recorded for it"})
			continue
		}
		st, err := fb.targetStatus()
		if err != nil {
			return nil, err
		}
		seq, ok := st.PointSeq(m, b.point)
		if !ok {
			out = append(out, Result{Check: "round-trip", Subject: subj, Verdict: Unknown, Evidence: "the master target does not know the point"})
			continue
		}
		onprem := d.e.Machines[b.vm]
		snap := fb.booted[b.vm]
		if onprem == nil || snap == nil {
			out = append(out, Result{Check: "round-trip", Subject: subj, Verdict: Unknown, Evidence: fmt.Sprintf("no guest booted for on-premises VM %s", b.vm)})
			continue
		}
		var imgs []io.ReaderAt
		for _, s := range snap {
			imgs = append(imgs, bytes.NewReader(s))
		}
		r := judgePoint(ag.m.Oracle(), subj, seq, imgs, nil)
		r.Check = "round-trip"
		if r.Verdict == OK {
			r.Detail = fmt.Sprintf("on-premises %s = the Azure disks at point %s (k=%d)", b.vm, b.point, ag.m.Oracle().KForSeq(seq))
		}
		out = append(out, r)
		if wl := d.e.Workloads.Workload(m); wl != nil {
			rep, err := wl.Check(imgs, false)
			ir := Result{Check: "round-trip", Subject: subj + "/app", Verdict: OK, Detail: wl.Name() + " " + rep.Summary}
			if err != nil {
				ir.Verdict, ir.Evidence = Illegal, "the application does not recover on the failed-back disks: "+err.Error()
			}
			out = append(out, ir)
		}
		// After a reprotect to Azure: the first Azure point since.
		at, ok := fb.toAzure[m]
		if !ok {
			continue
		}
		cat, err := d.Catalog(m)
		if err != nil {
			return nil, err
		}
		var next *azuresvc.Point
		for i := range cat.Points {
			p := &cat.Points[i]
			if p.Time.After(at) && (next == nil || p.Seq < next.Seq) {
				next = p
			}
		}
		rr := Result{Check: "round-trip", Subject: m + "@reprotect"}
		if next == nil {
			rr.Verdict, rr.Evidence = Unknown, "no Azure point since the reprotect to Azure yet"
			out = append(out, rr)
			continue
		}
		pimgs, ranges, err := d.PointImages(cat, *next)
		if err != nil {
			rr.Verdict, rr.Evidence = Unknown, err.Error()
			out = append(out, rr)
			continue
		}
		rr = judgePoint(onprem.Oracle(), m+"@"+next.ID, next.Seq, pimgs, ranges)
		rr.Check = "round-trip"
		out = append(out, rr)
	}
	return out, nil
}

// machineImages are a guest's disks as readers.
func machineImages(m *disk.Machine) []io.ReaderAt {
	out := make([]io.ReaderAt, m.Disks())
	for i := range out {
		out[i] = m.Device(i)
	}
	return out
}
