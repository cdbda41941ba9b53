package configsrv

import (
	"context"
	"strings"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vsphere"
)

// discover starts one vCenter discovery unless one is running. Its Done
// re-arms the timer, so there is one discovery per period.
func (s *Server) discover(ctx runtime.Context) {
	if s.cfg.VSphere == nil || s.discovering {
		return
	}
	s.discovering = true
	client := s.cfg.VSphere
	// vCenter is on-premises beside the configuration server: Peer "".
	s.ops.Start(ctx, runtime.Op{Name: "discover vcenter", Run: func(ctx context.Context) (any, error) {
		return client.Discover(ctx)
	}}, pendingOp{kind: opDiscover})
}

// discovered merges a discovery into the machine list. VMs that vanished
// from vCenter stay known (marked so in Status): discovery never changes
// protection.
func (s *Server) discovered(ctx runtime.Context, ev runtime.Done) {
	s.discovering = false
	if ev.Err != nil {
		s.discoveryError = ev.Err.Error()
		ctx.Log().Warn("configsrv: discovery failed", "err", ev.Err)
		s.timers.Set(ctx, timerDiscover, min(discoverRetry, s.cfg.RediscoverEvery))
		return
	}
	vms, _ := ev.Value.([]vsphere.VM)
	s.discoveryError = ""
	s.lastDiscovery = ctx.Now()
	seen := map[string]bool{}
	added := 0
	for _, vm := range vms {
		seen[vm.Name] = true
		m, ok := s.machines[vm.Name]
		if !ok {
			m = newMachine(vm.Name)
			m.inVCenter, m.vm = true, cloneVM(vm)
			s.known(ctx, m, "discovered in vCenter")
			added++
			continue
		}
		m.inVCenter, m.physical, m.vm = true, false, cloneVM(vm)
	}
	for _, m := range s.machines {
		if m.inVCenter && !seen[m.name] {
			m.inVCenter = false
		}
	}
	s.discoveredVMs = len(vms)
	ctx.Log().Info("configsrv: discovery", "vms", len(vms), "new", added)
	s.timers.Set(ctx, timerDiscover, s.cfg.RediscoverEvery)
}

func cloneVM(vm vsphere.VM) vsphere.VM {
	vm.Disks = append([]vsphere.Disk(nil), vm.Disks...)
	return vm
}

// isWindows tells a Windows guest by its vSphere guest OS id
// ("windows2019srv_64Guest", "windows9_64Guest", ...).
func isWindows(guestOS string) bool {
	return strings.Contains(strings.ToLower(guestOS), "windows")
}

// installer is the program push install runs in a guest.
func installer(guestOS string) string {
	if isWindows(guestOS) {
		return WindowsInstaller
	}
	return LinuxInstaller
}
