package vsphere

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/guest"
	"github.com/vmware/govmomi/vim25/types"

	port "github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
)

// serveLab builds the lab, routes its guest programs to ge with the
// default guest login, serves it over HTTPS and dials it by thumbprint.
func serveLab(t *testing.T, ge *GuestExec) (*World, *vcenter.Client) {
	t.Helper()
	ctx := context.Background()
	w, inv := buildLab(t)
	for _, vm := range inv.VMs {
		w.SetGuestLogin(vm.Name, inv.Guest().Username, inv.Guest().Password)
	}
	w.OnGuestStart(ge.Start)
	t.Cleanup(func() { ge.Close(time.Second) })
	u, leaf, err := w.Serve(ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.User = nil
	c, err := vcenter.Open(ctx, u.String(), vcenter.Options{Username: User, Password: Password, Thumbprint: vcenter.Thumbprint(leaf)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) })
	return w, c
}

var rootLogin = port.GuestAuth{Username: DefaultGuestAccount.Username, Password: DefaultGuestAccount.Password}

// TestGuestExecRuns: over HTTPS, RunInGuest runs the command with the VM,
// program and arguments in its environment and returns its exit code; a
// wrong login runs nothing.
func TestGuestExecRuns(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "ran")
	ge := &GuestExec{Command: `printf '%s|%s|%s' "$V2A_VM" "$V2A_GUEST_PROGRAM" "$V2A_GUEST_ARGS" >> '` + out + `'; exit 3`}
	_, c := serveLab(t, ge)
	db01 := findVM(t, c, "db01")

	code, err := c.RunInGuest(ctx, db01.Ref, rootLogin, "/tmp/install.sh", "-q --vault v1")
	if err != nil || code != 3 {
		t.Fatalf("RunInGuest = %d, %v; want exit code 3", code, err)
	}
	data, err := os.ReadFile(out)
	if err != nil || string(data) != "db01|/tmp/install.sh|-q --vault v1" {
		t.Fatalf("the command wrote %q (%v)", data, err)
	}
	_, err = c.RunInGuest(ctx, db01.Ref, port.GuestAuth{Username: "root", Password: "guess"}, "/tmp/install.sh", "")
	if !errors.Is(err, port.ErrGuestAuth) {
		t.Errorf("wrong password: error = %v, want %v", err, port.ErrGuestAuth)
	}
	if data, _ := os.ReadFile(out); strings.Count(string(data), "db01|") != 1 {
		t.Errorf("the command ran for a refused login: %q", data)
	}
}

// TestGuestExecRunning: a program that runs on is listed without an end
// time; terminating it ends it, as a signal would (128+15); another VM's
// process list does not show it; Close ends what still runs.
func TestGuestExecRunning(t *testing.T) {
	ctx := context.Background()
	ge := &GuestExec{Command: "sleep 60"}
	_, c := serveLab(t, ge)
	db01, web01 := findVM(t, c, "db01"), findVM(t, c, "web01")
	creds := &types.NamePasswordAuthentication{Username: rootLogin.Username, Password: rootLogin.Password}
	pm := func(ref port.VMRef) *guest.ProcessManager {
		m, err := guest.NewOperationsManager(c.Vim25(), types.ManagedObjectReference{Type: "VirtualMachine", Value: string(ref)}).ProcessManager(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	dbpm := pm(db01.Ref)
	pid, err := dbpm.StartProgram(ctx, creds, &types.GuestProgramSpec{ProgramPath: "/opt/agent", Arguments: "run"})
	if err != nil {
		t.Fatal(err)
	}
	procs, err := dbpm.ListProcesses(ctx, creds, []int64{pid})
	if err != nil || len(procs) != 1 || procs[0].EndTime != nil {
		t.Fatalf("a running program is listed as %+v (%v), want one entry without an end time", procs, err)
	}
	if other, err := pm(web01.Ref).ListProcesses(ctx, creds, nil); err != nil || len(other) != 0 {
		t.Errorf("web01 lists %d processes (%v), want none of db01's", len(other), err)
	}
	if err := dbpm.TerminateProcess(ctx, creds, pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, err := dbpm.ListProcesses(ctx, creds, []int64{pid})
		if err != nil || len(procs) != 1 {
			t.Fatalf("ListProcesses = %+v, %v", procs, err)
		}
		if procs[0].EndTime != nil {
			if procs[0].ExitCode != 128+15 {
				t.Errorf("terminated program exit code %d, want %d (SIGTERM)", procs[0].ExitCode, 128+15)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the terminated program still runs after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	p, err := ge.Start("web01", "/opt/agent", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ge.Close(5 * time.Second)
	if code, ended := p.Exit(); !ended || code != 128+15 {
		t.Errorf("after Close the program is ended=%v code=%d, want ended by SIGTERM", ended, code)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Close took %v: SIGTERM did not end the program", took)
	}
	if _, err := ge.Start("web01", "/opt/agent", ""); !errors.Is(err, ErrGuestExecClosed) {
		t.Errorf("Start after Close: error = %v, want %v", err, ErrGuestExecClosed)
	}
}

// TestServeErrors: a port already taken and a second Serve are errors,
// not vcsim's panics.
func TestServeErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	w, _ := buildLab(t)
	_, _, err = w.Serve(ServeOptions{Listen: taken.Addr().String()})
	if !errors.Is(err, ErrServe) || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Serve on a taken port: error = %v, want %v naming %s", err, ErrServe, taken.Addr())
	}

	w2, _ := buildLab(t)
	if _, _, err := w2.Serve(ServeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w2.Serve(ServeOptions{}); !errors.Is(err, ErrServe) {
		t.Errorf("second Serve: error = %v, want %v", err, ErrServe)
	}
}
