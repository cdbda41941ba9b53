// Failback commands: the VPN, the failback infrastructure, the guests'
// work in Azure, reprotect in both directions, failover back, and the
// view of it all.

package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/v2a-dr/v2a/impl/failover"
	"github.com/v2a-dr/v2a/impl/mastertarget"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	simnet "github.com/v2a-dr/v2a/sim/net"
)

// defaultReprotectWait is how long reprotect runs the world for the
// machines' syncs unless wait= says otherwise.
const defaultReprotectWait = 6 * time.Hour

// vpn sets the site-to-site VPN's state:
//
//	vpn state=up|down|absent
func (r *Runner) vpn(a argMap) (string, error) {
	st, err := a.need("state")
	if err != nil {
		return "", err
	}
	var s simnet.VPNState
	switch st {
	case "up":
		s = simnet.VPNUp
	case "down":
		s = simnet.VPNDown
	case "absent":
		s = simnet.VPNAbsent
	default:
		return "", fmt.Errorf("vpn: state=%s, want up, down or absent", st)
	}
	r.Env.Net.SetVPN(s)
	r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "vpn", s.String())
	return fmt.Sprintf("vpn %s\n", s), nil
}

// failbackInfra starts the failback infrastructure:
//
//	failback-infra [mt=HOST] [public]
func (r *Runner) failbackInfra(a argMap) (string, error) {
	fo, err := r.orchestrator()
	if err != nil {
		return "", err
	}
	fb, err := r.failbackSide()
	if err != nil {
		return "", err
	}
	_, public := a["public"]
	return fb.infra(fo, a.str("mt", HostConfigServer), public)
}

// azureWorkloadCmd runs or stops a failed-over VM's guest application:
//
//	azure-workload vms=(…) [churn=BYTES] [at=BYTES] [len=BYTES] [stop]
//
// The writes go to [at, at+len) of disk 0: by default the guest's own
// files below the application's region (azureChurnStart, azureChurnLen).
func (r *Runner) azureWorkloadCmd(a argMap) (string, error) {
	fb, err := r.failbackSide()
	if err != nil {
		return "", err
	}
	vms := a.list("vms")
	if len(vms) == 0 {
		return "", fmt.Errorf("azure-workload: want vms=(…)")
	}
	churn, err := a.intIn("churn", 16*1024, 1, 1<<30)
	if err != nil {
		return "", err
	}
	at, err := a.intIn("at", azureChurnStart, 0, 1<<50)
	if err != nil {
		return "", err
	}
	n, err := a.intIn("len", azureChurnLen, 4096, 1<<50)
	if err != nil {
		return "", err
	}
	if at%4096 != 0 || n%4096 != 0 {
		return "", fmt.Errorf("azure-workload: at=%d len=%d: want whole 4 KiB blocks", at, n)
	}
	_, stop := a["stop"]
	var b strings.Builder
	for _, vm := range vms {
		if err := fb.azureWorkload(vm, churn, at, n, stop); err != nil {
			return b.String(), fmt.Errorf("azure-workload: %w", err)
		}
		if stop {
			fmt.Fprintf(&b, "%s in Azure: workload stopped\n", vm)
		} else {
			fmt.Fprintf(&b, "%s in Azure: random writes, %s/s, to [%d MiB, +%d MiB) of disk 0\n", vm, fmtBytes(churn), at>>20, n>>20)
		}
	}
	return b.String(), nil
}

// reprotectCmd reprotects machines to on-premises:
//
//	reprotect vms=(…) [location=original|alternate] [host=ESX] [datastore=DS] [wait=6h]
func (r *Runner) reprotectCmd(a argMap) (string, error) {
	fb, err := r.failbackSide()
	if err != nil {
		return "", err
	}
	if !fb.started {
		return "", fmt.Errorf("reprotect: no failback infrastructure yet: run `failback-infra` first")
	}
	vms := a.list("vms")
	if len(vms) == 0 {
		return "", fmt.Errorf("reprotect: want vms=(…)")
	}
	loc := a.str("location", proto.LocationOriginal)
	if loc != proto.LocationOriginal && loc != proto.LocationAlternate {
		return "", fmt.Errorf("reprotect: location=%s, want original or alternate", loc)
	}
	wait, err := a.dur("wait", defaultReprotectWait)
	if err != nil {
		return "", err
	}
	host, ds := a.str("host", ""), a.str("datastore", "")
	if loc == proto.LocationAlternate && (host == "" || ds == "") {
		// The master target's host and datastore, as ASR defaults them.
		host, ds = r.defaultPlacement(host, ds)
	}
	if _, err := fb.reprotect(vms, proto.ReprotectToOnPrem, loc, host, ds); err != nil {
		return "", fmt.Errorf("reprotect: %w", err)
	}
	return fb.waitProtected(vms, wait, "reprotect")
}

// defaultPlacement picks the first ESXi host and datastore of the
// inventory for a new VM.
func (r *Runner) defaultPlacement(host, ds string) (string, string) {
	for _, vm := range r.Env.VMs {
		if host == "" {
			host = vm.Host
		}
		if ds == "" {
			ds = vm.Datastore
		}
		if host != "" && ds != "" {
			break
		}
	}
	return host, ds
}

// reprotectAzureCmd reprotects failed-back machines to Azure again:
//
//	reprotect-azure vms=(…) [wait=6h]
func (r *Runner) reprotectAzureCmd(a argMap) (string, error) {
	fb, err := r.failbackSide()
	if err != nil {
		return "", err
	}
	vms := a.list("vms")
	if len(vms) == 0 {
		return "", fmt.Errorf("reprotect-azure: want vms=(…)")
	}
	wait, err := a.dur("wait", defaultReprotectWait)
	if err != nil {
		return "", err
	}
	if _, err := fb.reprotect(vms, proto.ReprotectToAzure, "", "", ""); err != nil {
		return "", fmt.Errorf("reprotect-azure: %w", err)
	}
	return fb.waitProtected(vms, wait, "reprotect-azure")
}

// waitProtected runs until every machine is protected again (wait 0: not
// at all) and prints where each stands.
func (fb *Failback) waitProtected(vms []string, wait time.Duration, what string) (string, error) {
	d := fb.d
	start := d.e.Sim.Now()
	done := func() bool {
		for _, m := range vms {
			ms, ok := d.MachineStatus(m)
			if !ok || string(ms.State) != "protected" {
				return false
			}
		}
		return true
	}
	if wait > 0 {
		d.e.RunUntil(wait, func() bool {
			fb.observe()
			return done()
		})
	}
	fb.observe()
	var b strings.Builder
	for _, m := range vms {
		ms, _ := d.MachineStatus(m)
		fmt.Fprintf(&b, "%s: %s", m, ms.State)
		if rec := fb.reprotects[m]; rec != nil && what == "reprotect" {
			if rec.synced {
				fmt.Fprintf(&b, ", sync sent %s over the VPN", fmtBytes(rec.vpnBytes()))
			}
		}
		b.WriteString("\n")
	}
	if wait > 0 && !done() {
		return b.String(), fmt.Errorf("%s: not every machine protected after %s", what, fmtDur(d.e.Sim.Now().Sub(start)))
	}
	return b.String(), nil
}

// failbackCmd fails machines back to on-premises.
func (r *Runner) failbackCmd(a argMap) (string, error) { return r.startJob(a, proto.OpFailback) }

// deleteVM destroys a VM in vCenter (a site that lost it):
//
//	delete-vm vm=NAME
func (r *Runner) deleteVM(a argMap) (string, error) {
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	e := r.Env
	if e.VCSim == nil {
		return "", fmt.Errorf("delete-vm: only in a simulated vCenter")
	}
	var ref string
	vms, err := e.VC.Discover(e.ctx)
	if err != nil {
		return "", err
	}
	for _, v := range vms {
		if v.Name == vm {
			ref = string(v.Ref)
		}
	}
	if ref == "" {
		return "", fmt.Errorf("delete-vm: no VM %q in vCenter", vm)
	}
	obj := object.NewVirtualMachine(e.VCSim.Client(), types.ManagedObjectReference{Type: "VirtualMachine", Value: ref})
	if st, err := obj.PowerState(e.ctx); err == nil && st == types.VirtualMachinePowerStatePoweredOn {
		if t, err := obj.PowerOff(e.ctx); err == nil {
			t.Wait(e.ctx)
		}
		if d := e.Deployment; d != nil {
			d.guestPowerOff(vm)
		}
	}
	t, err := obj.Destroy(e.ctx)
	if err != nil {
		return "", fmt.Errorf("delete-vm: %w", err)
	}
	if err := t.Wait(e.ctx); err != nil {
		return "", fmt.Errorf("delete-vm: %w", err)
	}
	e.Trace.Add(e.Sim.Elapsed(), "harness", "delete-vm", vm)
	return fmt.Sprintf("%s deleted from vCenter\n", vm), nil
}

// failbackView shows the failback side: the VPN, the process server in
// Azure, the master target and each machine's reprotect.
func (r *Runner) failbackView(argMap) (string, error) {
	fb, err := r.failbackSide()
	if err != nil {
		return "", err
	}
	fb.observe()
	e := r.Env
	var b strings.Builder
	up, _ := e.Net.Carried(simnet.PathVPN, simnet.Azure, simnet.OnPrem)
	down, _ := e.Net.Carried(simnet.PathVPN, simnet.OnPrem, simnet.Azure)
	fmt.Fprintf(&b, "vpn %s: Azure→on-premises %s, on-premises→Azure %s\n", e.Net.VPN(), fmtBytes(up), fmtBytes(down))
	if fb.started {
		rs, err := fb.relayStatus()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "process server in Azure %s: items %d (%s), acks %d, machines %s\n", AddrAzurePS, rs.Items, fmtBytes(rs.ItemBytes), rs.Acks, orNone(rs.Machines))
		st, err := fb.targetStatus()
		if err != nil {
			return "", err
		}
		b.WriteString(formatTargetStatus(fb.mt, st))
	} else {
		b.WriteString("no failback infrastructure (run `failback-infra`)\n")
	}
	for _, m := range sortedKeys(fb.guests) {
		ag := fb.guests[m]
		fmt.Fprintf(&b, "%-10s Azure VM %s (host %s), %d writes in Azure, %s changed since failover", m, ag.vm, ag.host, ag.m.Oracle().K(), fmtBytes(ag.changedBytes()))
		if rec := fb.reprotects[m]; rec != nil {
			fmt.Fprintf(&b, "; reprotect %s", rec.location)
			if rec.synced {
				fmt.Fprintf(&b, ", synced with %s over the VPN", fmtBytes(rec.vpnBytes()))
			}
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

// failbacks are the machines failed back by a succeeded failback job: the
// point each came back to and its on-premises VM.
type failbackRec struct{ point, vm, job string }

func (fo *Failover) failbacks() (map[string]failbackRec, error) {
	js, err := fo.Jobs()
	if err != nil {
		return nil, err
	}
	out := map[string]failbackRec{}
	for _, j := range js {
		if j.Op != proto.OpFailback || j.State != failover.JobSucceeded {
			continue
		}
		for vm, p := range j.Point {
			out[vm] = failbackRec{point: p, vm: vm, job: j.ID}
		}
	}
	return out, nil
}

// formatTargetStatus prints the master target's view.
func formatTargetStatus(addr runtime.Addr, st mastertarget.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "master target %s: %d of %d disks in use\n", addr, st.DisksUsed, st.MaxDisks)
	for _, m := range st.Machines {
		state := "syncing"
		switch {
		case m.FailedBack != "":
			state = "failed back to " + m.FailedBack
		case m.RollingBack != "":
			state = "rolling back to " + m.RollingBack
		case m.Synced:
			state = "protected"
		}
		fmt.Fprintf(&b, "  %-10s %s, gen %d, applied item %d, %d points (newest %s), journal %s", m.Machine, state, m.Gen, m.Applied,
			m.Points, orNone(nonEmpty(m.NewestPoint)), fmtBytes(m.JournalBytes))
		if m.LastError != "" {
			fmt.Fprintf(&b, ", error: %s", m.LastError)
		}
		b.WriteString("\n")
	}
	for _, br := range st.Broken {
		fmt.Fprintf(&b, "  broken state file: %s\n", br)
	}
	return b.String()
}

// nonEmpty is s as a list: none for "".
func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
