package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
)

type vcsimFlags struct {
	inventory string
	listen    string
	tlsCert   string
	tlsKey    string
	dir       string
	env       string
	guestExec string
}

func newVCSimCmd() *cobra.Command {
	var f vcsimFlags
	c := &cobra.Command{
		Use:   "vcsim --inventory FILE [--listen ADDR] [--guest-exec CMD] [--env FILE]",
		Short: "Serve an inventory as a standalone vCenter simulator over HTTPS",
		Long: `Serve an inventory file (fixtures/inventory/*.yaml) as a vCenter: govmomi's
simulator built by the same code as the harness's in-process one, reached by
URL over HTTPS as a real vCenter is. It stands in for a vCenter in the wire
world and in anyone's pipeline (target file: vsphere.mode url).

When serving, it prints one line on stdout and nothing else there:

  url=https://127.0.0.1:PORT/sdk thumbprint=AB:CD:…

the SDK URL and the SHA-1 thumbprint of its certificate as govc prints it
(a target file's vsphere.thumbprint). The SDK login is user v2a, password
v2a-lab. With --env FILE it also writes, for scripts (mode 0600; removed at
exit):

  V2A_VCENTER_URL, V2A_VCENTER_USERNAME, V2A_VCENTER_PASSWORD,
  V2A_VCENTER_THUMBPRINT, GOVC_URL, GOVC_USERNAME, GOVC_PASSWORD

Guest operations (push install) log in with the inventory's guestAccount
(default root / v2a). Without --guest-exec they fail with
GuestOperationsUnavailable, as for VMs without VMware Tools. With it, each
StartProgramInGuest runs CMD with 'sh -c' on this machine, with V2A_VM (the
VM's name), V2A_GUEST_PROGRAM and V2A_GUEST_ARGS in its environment; the
process list vCenter clients poll shows it running until it exits, then its
exit code. Its output goes to stderr. Commands still running at exit get
SIGTERM (their process group), then SIGKILL after 5 s.

It runs until SIGINT or SIGTERM, then stops cleanly and exits 0. Exit code 2:
bad flags, an inventory that does not load, a certificate that does not
load, an address that cannot be listened on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return serveVCSim(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	c.Flags().StringVar(&f.inventory, "inventory", "", "inventory file to serve (required), e.g. fixtures/inventory/lab.yaml")
	c.Flags().StringVar(&f.listen, "listen", "127.0.0.1:0", "TCP address to serve HTTPS on (port 0: a free port, printed)")
	c.Flags().StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve; with --tls-key (default: a fresh self-signed one)")
	c.Flags().StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	c.Flags().StringVar(&f.dir, "dir", "", "directory for the datastores (each a subdirectory; default: a temporary one removed at exit)")
	c.Flags().StringVar(&f.env, "env", "", "also write the URL, credentials and thumbprint to this file as KEY=VALUE lines")
	c.Flags().StringVar(&f.guestExec, "guest-exec", "", "shell command to run for each program started in a guest (default: no guest operations)")
	return c
}

// guestExecGrace is how long commands still running at exit get between
// SIGTERM and SIGKILL.
const guestExecGrace = 5 * time.Second

func serveVCSim(ctx context.Context, stdout, stderr io.Writer, f vcsimFlags) (err error) {
	if f.inventory == "" {
		return errors.New("vcsim: --inventory is required")
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return fmt.Errorf("vcsim: --listen: listen address %q: %w", f.listen, err)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("vcsim: --tls-cert and --tls-key go together")
	}
	var cert *tls.Certificate
	if f.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("vcsim: --tls-cert %s / --tls-key %s: %w", f.tlsCert, f.tlsKey, err)
		}
		cert = &c
	}
	inv, err := simvs.Load(f.inventory)
	if err != nil {
		return err
	}
	dir := f.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "v2a-vcsim-"); err != nil {
			return fmt.Errorf("vcsim: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	w, err := simvs.Build(ctx, inv, dir)
	if err != nil {
		return err
	}
	defer w.Close()
	guest := inv.Guest()
	vms := 0
	for _, vm := range inv.VMs {
		if !vm.Physical { // vCenter does not know physical servers
			w.SetGuestLogin(vm.Name, guest.Username, guest.Password)
			vms++
		}
	}
	if f.guestExec != "" {
		ge := &simvs.GuestExec{Command: f.guestExec, Output: stderr}
		w.OnGuestStart(ge.Start)
		defer ge.Close(guestExecGrace) // before the world closes: runs first
	}
	u, leaf, err := w.Serve(simvs.ServeOptions{Listen: f.listen, Certificate: cert})
	if err != nil {
		return fmt.Errorf("vcsim: %w", err)
	}
	user := u.User.Username()
	pass, _ := u.User.Password()
	u.User = nil
	thumbprint := vcenter.Thumbprint(leaf)
	if f.env != "" {
		if err := writeEnvFile(f.env, [][2]string{
			{"V2A_VCENTER_URL", u.String()},
			{"V2A_VCENTER_USERNAME", user},
			{"V2A_VCENTER_PASSWORD", pass},
			{"V2A_VCENTER_THUMBPRINT", thumbprint},
			{"GOVC_URL", u.String()},
			{"GOVC_USERNAME", user},
			{"GOVC_PASSWORD", pass},
		}); err != nil {
			return err
		}
		defer os.Remove(f.env)
	}
	fmt.Fprintf(stdout, "url=%s thumbprint=%s\n", u, thumbprint)
	fmt.Fprintf(stderr, "v2a vcsim: serving %s (%d VMs, datastores in %s); SIGINT or SIGTERM stops it\n", inv.File, vms, dir)
	<-ctx.Done()
	fmt.Fprintln(stderr, "v2a vcsim: stopping")
	return nil
}

// writeEnvFile writes KEY=VALUE lines to path, whole or not at all (a
// script waiting for the file never reads half of it), readable by the
// owner only: it holds a password.
func writeEnvFile(path string, vars [][2]string) error {
	var b strings.Builder
	for _, kv := range vars {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".v2a-env-*")
	if err != nil {
		return fmt.Errorf("vcsim: --env: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("vcsim: --env: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("vcsim: --env: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("vcsim: --env: %w", err)
	}
	return nil
}
