package vsphere

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// GuestProgramFunc runs a program "inside" the guest of the VM named vm and
// returns its exit code. An error means the program could not be started
// at all (vSphere answers the StartProgramInGuest call with a fault); a
// program that ran and failed returns a non-zero code instead.
type GuestProgramFunc func(vm, path, args string) (exitCode int, err error)

// OnGuestProgram routes StartProgramInGuest to f, which runs before the
// call returns, on the caller's goroutine for the in-process client. Until
// it is set, guest operations fail with GuestOperationsUnavailable, as for a
// VM without VMware Tools.
func (w *World) OnGuestProgram(f GuestProgramFunc) {
	w.guest.mu.Lock()
	defer w.guest.mu.Unlock()
	w.guest.run = f
}

// SetGuestLogin makes guest operations on the VM named vm accept only user
// and password. Without it any non-empty user and password are accepted.
func (w *World) SetGuestLogin(vm, user, password string) {
	w.guest.mu.Lock()
	defer w.guest.mu.Unlock()
	w.guest.logins[vm] = [2]string{user, password}
}

// guestProcesses is the world's guest program state: the callback and the
// programs run so far, which ListProcessesInGuest reports as ended.
type guestProcesses struct {
	mu     sync.Mutex
	run    GuestProgramFunc
	logins map[string][2]string
	next   int64 // next pid; per world, so pids repeat across runs
	procs  []types.GuestProcessInfo
}

// guestTime stands in for process start and end times: the wall clock
// would make replies differ between runs.
var guestTime = time.Unix(0, 0).UTC()

// guestProcessManager replaces vcsim's GuestProcessManager, whose
// StartProgramInGuest runs "docker exec" (and panics without Docker).
type guestProcessManager struct {
	*simulator.GuestProcessManager
	g *guestProcesses
}

// installGuestOperations replaces the model's GuestProcessManager under
// the same reference, the way vcsim's own docs override a method.
func installGuestOperations(model *simulator.Model) (*guestProcesses, error) {
	reg := model.Map()
	gom, ok := reg.Get(*model.ServiceContent.GuestOperationsManager).(*simulator.GuestOperationsManager)
	if !ok || gom.ProcessManager == nil {
		return nil, fmt.Errorf("vsphere: simulator has no guest operations manager")
	}
	pm, ok := reg.Get(*gom.ProcessManager).(*simulator.GuestProcessManager)
	if !ok {
		return nil, fmt.Errorf("vsphere: simulator has no guest process manager")
	}
	g := &guestProcesses{next: 1000, logins: map[string][2]string{}}
	reg.Put(&guestProcessManager{GuestProcessManager: pm, g: g})
	return g, nil
}

// prepare checks what vSphere checks before a guest operation: the VM
// exists and is on, tools answer, and the login is accepted.
func (g *guestProcesses) prepare(ctx *simulator.Context, ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) (string, GuestProgramFunc, types.BaseMethodFault) {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return "", nil, &types.ManagedObjectNotFound{Obj: ref}
	}
	var name string
	var state types.VirtualMachinePowerState
	ctx.WithLock(vm, func() {
		name, state = vm.Name, vm.Runtime.PowerState
	})
	if state != types.VirtualMachinePowerStatePoweredOn {
		return "", nil, &types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOn, ExistingState: state}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.run == nil {
		return "", nil, new(types.GuestOperationsUnavailable)
	}
	creds, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || creds.Username == "" || creds.Password == "" {
		return "", nil, new(types.InvalidGuestLogin)
	}
	if want, ok := g.logins[name]; ok && (creds.Username != want[0] || creds.Password != want[1]) {
		return "", nil, new(types.InvalidGuestLogin)
	}
	return name, g.run, nil
}

// StartProgramInGuest runs the program through the world's callback and
// records it as ended with the callback's exit code.
func (m *guestProcessManager) StartProgramInGuest(ctx *simulator.Context, req *types.StartProgramInGuest) soap.HasFault {
	body := new(methods.StartProgramInGuestBody)
	name, run, f := m.g.prepare(ctx, req.Vm, req.Auth)
	if f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	spec, ok := req.Spec.(*types.GuestProgramSpec)
	if !ok || spec.ProgramPath == "" {
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "spec.programPath"})
		return body
	}
	// The callback runs without g.mu held: it may use the world's guest
	// operations itself.
	code, err := run(name, spec.ProgramPath, spec.Arguments)
	if err != nil {
		body.Fault_ = simulator.Fault(fmt.Sprintf("start %s in %s: %v", spec.ProgramPath, name, err),
			&types.SystemError{Reason: err.Error()})
		return body
	}
	auth := req.Auth.(*types.NamePasswordAuthentication)
	m.g.mu.Lock()
	pid := m.g.next
	m.g.next++
	end := guestTime
	m.g.procs = append(m.g.procs, types.GuestProcessInfo{
		Name:      spec.ProgramPath,
		Pid:       pid,
		Owner:     auth.Username,
		CmdLine:   spec.ProgramPath + " " + spec.Arguments,
		StartTime: guestTime,
		EndTime:   &end,
		ExitCode:  int32(code),
	})
	m.g.mu.Unlock()
	body.Res = &types.StartProgramInGuestResponse{Returnval: pid}
	return body
}

// ListProcessesInGuest lists the programs run so far (all ended), or those
// with the given pids.
func (m *guestProcessManager) ListProcessesInGuest(ctx *simulator.Context, req *types.ListProcessesInGuest) soap.HasFault {
	body := new(methods.ListProcessesInGuestBody)
	if _, _, f := m.g.prepare(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	body.Res = new(types.ListProcessesInGuestResponse)
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, p := range m.g.procs {
		if len(req.Pids) == 0 || slices.Contains(req.Pids, p.Pid) {
			body.Res.Returnval = append(body.Res.Returnval, p)
		}
	}
	return body
}

// TerminateProcessInGuest succeeds for a known pid (the program has ended
// already) and fails for an unknown one, as vSphere does.
func (m *guestProcessManager) TerminateProcessInGuest(ctx *simulator.Context, req *types.TerminateProcessInGuest) soap.HasFault {
	body := new(methods.TerminateProcessInGuestBody)
	if _, _, f := m.g.prepare(ctx, req.Vm, req.Auth); f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	if !slices.ContainsFunc(m.g.procs, func(p types.GuestProcessInfo) bool { return p.Pid == req.Pid }) {
		body.Fault_ = simulator.Fault("", &types.GuestProcessNotFound{Pid: req.Pid})
		return body
	}
	body.Res = new(types.TerminateProcessInGuestResponse)
	return body
}
