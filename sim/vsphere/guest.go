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

// GuestProcess is a program started in a guest that may still be running,
// as ListProcessesInGuest sees it.
type GuestProcess interface {
	// Exit returns the program's exit code once it has ended; ended is
	// false while it runs.
	Exit() (code int, ended bool)
	// Terminate ends the program if it still runs (TerminateProcessInGuest);
	// it does not wait for the end.
	Terminate() error
}

// GuestStartFunc starts a program in the guest of the VM named vm and
// returns at once. An error means the program could not be started.
type GuestStartFunc func(vm, path, args string) (GuestProcess, error)

// OnGuestProgram routes StartProgramInGuest to f, which runs before the
// call returns, on the caller's goroutine for the in-process client. Until
// it (or OnGuestStart) is set, guest operations fail with
// GuestOperationsUnavailable, as for a VM without VMware Tools.
func (w *World) OnGuestProgram(f GuestProgramFunc) {
	w.OnGuestStart(func(vm, path, args string) (GuestProcess, error) {
		code, err := f(vm, path, args)
		if err != nil {
			return nil, err
		}
		return endedProcess(code), nil
	})
}

// OnGuestStart routes StartProgramInGuest to f, for programs that run on
// after the call returns: ListProcessesInGuest reports them without an end
// time until their Exit says they ended, as VMware Tools does.
func (w *World) OnGuestStart(f GuestStartFunc) {
	w.guest.mu.Lock()
	defer w.guest.mu.Unlock()
	w.guest.start = f
}

// SetGuestLogin makes guest operations on the VM named vm accept only user
// and password. Without it any non-empty user and password are accepted.
func (w *World) SetGuestLogin(vm, user, password string) {
	w.guest.mu.Lock()
	defer w.guest.mu.Unlock()
	w.guest.logins[vm] = [2]string{user, password}
}

// endedProcess is a program that ended before StartProgramInGuest returned.
type endedProcess int

func (p endedProcess) Exit() (int, bool) { return int(p), true }
func (p endedProcess) Terminate() error  { return nil }

// guestProcesses is the world's guest program state: the starter and the
// programs started so far, which ListProcessesInGuest reports.
type guestProcesses struct {
	mu     sync.Mutex
	start  GuestStartFunc
	logins map[string][2]string
	next   int64 // next pid; per world, so pids repeat across runs
	procs  []guestProc
}

// guestProc is one program started in a guest.
type guestProc struct {
	vm   string
	info types.GuestProcessInfo // EndTime and ExitCode filled in when listed
	p    GuestProcess
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
func (g *guestProcesses) prepare(ctx *simulator.Context, ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) (string, GuestStartFunc, types.BaseMethodFault) {
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
	if g.start == nil {
		return "", nil, new(types.GuestOperationsUnavailable)
	}
	creds, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || creds.Username == "" || creds.Password == "" {
		return "", nil, new(types.InvalidGuestLogin)
	}
	if want, ok := g.logins[name]; ok && (creds.Username != want[0] || creds.Password != want[1]) {
		return "", nil, new(types.InvalidGuestLogin)
	}
	return name, g.start, nil
}

// StartProgramInGuest starts the program through the world's starter and
// records it under a new pid.
func (m *guestProcessManager) StartProgramInGuest(ctx *simulator.Context, req *types.StartProgramInGuest) soap.HasFault {
	body := new(methods.StartProgramInGuestBody)
	name, start, f := m.g.prepare(ctx, req.Vm, req.Auth)
	if f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	spec, ok := req.Spec.(*types.GuestProgramSpec)
	if !ok || spec.ProgramPath == "" {
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "spec.programPath"})
		return body
	}
	// The starter runs without g.mu held: it may use the world's guest
	// operations itself.
	p, err := start(name, spec.ProgramPath, spec.Arguments)
	if err != nil {
		body.Fault_ = simulator.Fault(fmt.Sprintf("start %s in %s: %v", spec.ProgramPath, name, err),
			&types.SystemError{Reason: err.Error()})
		return body
	}
	auth := req.Auth.(*types.NamePasswordAuthentication)
	m.g.mu.Lock()
	pid := m.g.next
	m.g.next++
	m.g.procs = append(m.g.procs, guestProc{vm: name, p: p, info: types.GuestProcessInfo{
		Name:      spec.ProgramPath,
		Pid:       pid,
		Owner:     auth.Username,
		CmdLine:   spec.ProgramPath + " " + spec.Arguments,
		StartTime: guestTime,
	}})
	m.g.mu.Unlock()
	body.Res = &types.StartProgramInGuestResponse{Returnval: pid}
	return body
}

// ListProcessesInGuest lists the programs started in the VM's guest, or
// those of them with the given pids; a program that has ended carries its
// end time and exit code.
func (m *guestProcessManager) ListProcessesInGuest(ctx *simulator.Context, req *types.ListProcessesInGuest) soap.HasFault {
	body := new(methods.ListProcessesInGuestBody)
	name, _, f := m.g.prepare(ctx, req.Vm, req.Auth)
	if f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	body.Res = new(types.ListProcessesInGuestResponse)
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, p := range m.g.procs {
		if p.vm != name || len(req.Pids) > 0 && !slices.Contains(req.Pids, p.info.Pid) {
			continue
		}
		info := p.info
		if code, ended := p.p.Exit(); ended {
			end := guestTime
			info.EndTime, info.ExitCode = &end, int32(code)
		}
		body.Res.Returnval = append(body.Res.Returnval, info)
	}
	return body
}

// TerminateProcessInGuest ends a running program of the VM's guest and
// succeeds for one that has ended already; an unknown pid is a fault, as
// in vSphere.
func (m *guestProcessManager) TerminateProcessInGuest(ctx *simulator.Context, req *types.TerminateProcessInGuest) soap.HasFault {
	body := new(methods.TerminateProcessInGuestBody)
	name, _, f := m.g.prepare(ctx, req.Vm, req.Auth)
	if f != nil {
		body.Fault_ = simulator.Fault("", f)
		return body
	}
	m.g.mu.Lock()
	i := slices.IndexFunc(m.g.procs, func(p guestProc) bool { return p.vm == name && p.info.Pid == req.Pid })
	var p GuestProcess
	if i >= 0 {
		p = m.g.procs[i].p
	}
	m.g.mu.Unlock()
	if p == nil {
		body.Fault_ = simulator.Fault("", &types.GuestProcessNotFound{Pid: req.Pid})
		return body
	}
	if _, ended := p.Exit(); !ended {
		if err := p.Terminate(); err != nil {
			body.Fault_ = simulator.Fault(fmt.Sprintf("terminate %d in %s: %v", req.Pid, name, err), &types.SystemError{Reason: err.Error()})
			return body
		}
	}
	body.Res = new(types.TerminateProcessInGuestResponse)
	return body
}
