package vsphere

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Environment variables a GuestExec command finds, naming what vCenter was
// asked to run and where.
const (
	EnvGuestVM      = "V2A_VM"            // the VM's name
	EnvGuestProgram = "V2A_GUEST_PROGRAM" // the program path of StartProgramInGuest
	EnvGuestArgs    = "V2A_GUEST_ARGS"    // its arguments, one string as vSphere has them
)

// GuestExec runs every program started in a guest as one local shell
// command: what a VM's VMware Tools would run inside the guest runs on this
// machine instead (a push install then starts the real installer, or the
// `v2a agent` daemon standing in for it). The command runs with `sh -c`,
// its environment extended with EnvGuestVM, EnvGuestProgram and
// EnvGuestArgs, in its own process group, its output going to Output.
//
// Unlike the in-process world's callbacks, these are real processes on the
// real clock: for the wire world and `v2a vcsim`, never for a scenario.
type GuestExec struct {
	Command string
	Output  io.Writer // stdout and stderr of every command; nil discards
	Env     []string  // extra variables (KEY=VALUE), after os.Environ()

	mu      sync.Mutex
	running map[*execProcess]bool
	closed  bool
}

// ErrGuestExecClosed is returned by Start after Close.
var ErrGuestExecClosed = errors.New("vsphere: guest exec closed")

// Start implements GuestStartFunc: it starts the command for the program
// path with args in the guest of vm and returns at once.
func (g *GuestExec) Start(vm, path, args string) (GuestProcess, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrGuestExecClosed
	}
	cmd := exec.Command("sh", "-c", g.Command)
	cmd.Env = append(os.Environ(), g.Env...)
	cmd.Env = append(cmd.Env, EnvGuestVM+"="+vm, EnvGuestProgram+"="+path, EnvGuestArgs+"="+args)
	cmd.Stdout, cmd.Stderr = g.Output, g.Output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A daemon the command leaves behind may hold its output open; its
	// exit is the command's end all the same.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vsphere: guest exec for %s: %w", vm, err)
	}
	p := &execProcess{cmd: cmd, done: make(chan struct{})}
	if g.running == nil {
		g.running = map[*execProcess]bool{}
	}
	g.running[p] = true
	go func() {
		// The exit status is the result; Wait's error only restates it
		// (or says the output copy was cut short by WaitDelay).
		_ = cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		if code < 0 { // killed by a signal: what a shell would report
			code = 128
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code += int(ws.Signal())
			}
		}
		p.mu.Lock()
		p.code, p.ended = code, true
		p.mu.Unlock()
		close(p.done)
		g.mu.Lock()
		delete(g.running, p)
		g.mu.Unlock()
	}()
	return p, nil
}

// Close terminates the commands still running (SIGTERM to each process
// group, SIGKILL after grace) and waits for them; later Starts fail.
func (g *GuestExec) Close(grace time.Duration) {
	g.mu.Lock()
	g.closed = true
	var ps []*execProcess
	for p := range g.running {
		ps = append(ps, p)
	}
	g.mu.Unlock()
	for _, p := range ps {
		_ = p.signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, p := range ps {
		select {
		case <-p.done:
		case <-timer.C:
			for _, q := range ps {
				_ = q.signal(syscall.SIGKILL)
			}
			for _, q := range ps {
				<-q.done
			}
			return
		}
	}
}

// execProcess is one running command.
type execProcess struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	code  int
	ended bool
}

// Exit implements GuestProcess.
func (p *execProcess) Exit() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code, p.ended
}

// Terminate implements GuestProcess: SIGTERM to the command's process
// group.
func (p *execProcess) Terminate() error { return p.signal(syscall.SIGTERM) }

func (p *execProcess) signal(sig syscall.Signal) error {
	if _, ended := p.Exit(); ended {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("vsphere: guest exec: signal %d: %w", p.cmd.Process.Pid, err)
	}
	return nil
}
