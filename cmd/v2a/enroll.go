package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/daemon"
	"github.com/v2a-dr/v2a/impl/pki"
	"github.com/v2a-dr/v2a/impl/pki/enroll"
	"github.com/v2a-dr/v2a/impl/vault"
)

// vaultPassphrase reads the vault passphrase from file when one is given,
// else from $V2A_PASSPHRASE (daemon.ReadSecret: the daemons' reader).
func vaultPassphrase(who, file string) (string, error) {
	return daemon.ReadSecret(who, daemon.SecretPassphrase, file)
}

func newEnrollCmd() *cobra.Command {
	var cs, host, dir, passFile string
	c := &cobra.Command{
		Use:   "enroll --cs URL --host NAME --dir DIR",
		Short: "Get this host's certificate from the configuration server (proving the vault passphrase)",
		Long: `Enroll a host (a process server, an agent's machine, the Azure side) with
the configuration server, as an ASR installer registers with the vault
passphrase: prove the passphrase, receive a certificate for the logical host
name NAME and the vault CA, and write them into DIR as cert.pem, key.pem
(mode 0600) and ca.pem — the --tls-dir of the daemons.

The passphrase comes from $V2A_PASSPHRASE or --passphrase-file, never a
flag. The configuration server's CA is not known beforehand: the answer is
authenticated with a key derived from the passphrase, and the CA must have
signed the HTTPS server's certificate, so a man in the middle without the
passphrase can neither get a certificate nor plant a CA. Nothing is written
unless every check passed.

Errors (exit 2): "wrong vault passphrase" when the configuration server
refuses the proof; "answer not authenticated by the vault passphrase" for a
tampered answer or a server that does not know the passphrase; a bad host
name; an unreachable URL.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := vaultPassphrase("enroll", passFile)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			id, err := enroll.Enroll(ctx, cs, host, pass, dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled %s: certificate valid until %s, vault CA %s (sha256 %s), in %s\n",
				id.Host, id.Cert.NotAfter.UTC().Format(time.RFC3339), id.CA.Subject.CommonName, fingerprint(id.CA.Raw), dir)
			return nil
		},
	}
	c.Flags().StringVar(&cs, "cs", "", "the configuration server's enrollment URL (https://HOST:PORT)")
	c.Flags().StringVar(&host, "host", "", "this host's logical name (cs01, ps01, a machine's name): the certificate's name")
	c.Flags().StringVar(&dir, "dir", "", "the directory to write cert.pem, key.pem and ca.pem into")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "read the vault passphrase from this file (default: $V2A_PASSPHRASE)")
	for _, f := range []string{"cs", "host", "dir"} {
		c.MarkFlagRequired(f)
	}
	return c
}

func newRevokeCmd() *cobra.Command {
	var cs, host, serial, passFile string
	c := &cobra.Command{
		Use:   "revoke --cs URL (--host NAME | --serial HEX)",
		Short: "Revoke a host's certificates (a machine unregistered) or one certificate (reported stolen)",
		Long: `Ask the running configuration server to revoke every certificate it issued
to the logical host NAME (its enrollment and every renewal), or the one
certificate with serial number HEX (as 'enroll' and the daemons' logs print
it), proving the vault passphrase as enrollment does. The revocation is kept
in the configuration server's database.

From then on the configuration server refuses the certificate at once: new
connections fail their TLS handshake, and a connection already open is cut
at its next message; it can no longer renew. Process servers, the Azure side
and agents fetch the revocation list every --cert-check (1 min by default),
so they refuse it within that period plus one request (30 s at most). The
host's own log says that its certificate was revoked. To let the machine back
in, enroll it again (a new certificate).

The passphrase comes from $V2A_PASSPHRASE or --passphrase-file, never a
flag. Errors (exit 2): "wrong vault passphrase"; "no certificate on record"
for a host the configuration server never issued one to.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (host == "") == (serial == "") {
				return fmt.Errorf("revoke: give --host or --serial, not both")
			}
			pass, err := vaultPassphrase("revoke", passFile)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			done, err := enroll.Client{}.Revoke(ctx, cs, pass, host, serial)
			if err != nil {
				return err
			}
			if len(done) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing new revoked: revoked already")
			}
			for _, r := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s serial %s\n", r.Host, r.Serial)
			}
			return nil
		},
	}
	c.Flags().StringVar(&cs, "cs", "", "the configuration server's enrollment URL (https://HOST:PORT)")
	c.Flags().StringVar(&host, "host", "", "revoke every certificate of this logical host")
	c.Flags().StringVar(&serial, "serial", "", "revoke the certificate with this serial number (hexadecimal)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "read the vault passphrase from this file (default: $V2A_PASSPHRASE)")
	c.MarkFlagRequired("cs")
	return c
}

func newCACmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "The vault's certificate authority (the configuration server's)",
	}
	var dir, vaultID, host, listen, passFile string
	initCmd := &cobra.Command{
		Use:   "init --dir DIR --vault ID [--host cs01]",
		Short: "Create the vault CA and the configuration server's certificate (or load them)",
		Long: `Create the vault CA in DIR (ca.pem, ca-key.pem) and the configuration
server's own certificate for --host (cert.pem, key.pem): DIR is then the
configuration server's --tls-dir. Run again, it loads the CA and keeps a
valid certificate for the same host; a CA of another vault is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, id, err := pki.InitServer(dir, vaultID, host, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (sha256 %s), valid until %s\n%s: certificate valid until %s\nin %s\n",
				ca.Cert.Subject.CommonName, fingerprint(ca.Cert.Raw), ca.Cert.NotAfter.UTC().Format(time.RFC3339),
				id.Host, id.Cert.NotAfter.UTC().Format(time.RFC3339), dir)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "the configuration server's TLS directory")
	initCmd.Flags().StringVar(&vaultID, "vault", "", "the vault ID")
	initCmd.Flags().StringVar(&host, "host", "cs01", "the configuration server's logical host name")
	initCmd.MarkFlagRequired("dir")
	initCmd.MarkFlagRequired("vault")

	var serveDir string
	serveCmd := &cobra.Command{
		Use:   "serve --dir DIR [--listen ADDR]",
		Short: "Serve the enrollment endpoint alone (the configuration server daemon serves it too)",
		Long: `Serve the vault CA in DIR (made by 'v2a ca init') as the enrollment
endpoint over HTTPS, until interrupted. It prints the URL to give
'v2a enroll --cs'. The passphrase comes from $V2A_PASSPHRASE or
--passphrase-file; every issue and refusal is logged on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := vaultPassphrase("ca serve", passFile)
			if err != nil {
				return err
			}
			ca, err := pki.OS.LoadCA(serveDir)
			if err != nil {
				return err
			}
			id, err := pki.OS.LoadIdentity(serveDir, time.Now())
			if err != nil {
				return err
			}
			keys, err := vault.Derive(ca.VaultID(), pass)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("ca serve: %w", err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			fmt.Fprintf(cmd.OutOrStdout(), "enrollment: https://%s\n", ln.Addr())
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return serveEnrollment(ctx, ln, ca, id, keys, log)
		},
	}
	serveCmd.Flags().StringVar(&serveDir, "dir", "", "the configuration server's TLS directory (from 'v2a ca init')")
	serveCmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "the address to listen on")
	serveCmd.Flags().StringVar(&passFile, "passphrase-file", "", "read the vault passphrase from this file (default: $V2A_PASSPHRASE)")
	serveCmd.MarkFlagRequired("dir")
	c.AddCommand(initCmd, serveCmd)
	return c
}

// serveEnrollment serves the enrollment endpoint on ln over HTTPS with the
// configuration server's identity until ctx ends, then shuts down.
func serveEnrollment(ctx context.Context, ln net.Listener, ca *pki.CA, id pki.Identity, keys vault.Keys, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle(enroll.Path, &enroll.Handler{CA: ca, Keys: keys, Now: time.Now, Log: log})
	srv := &http.Server{Handler: mux, TLSConfig: enroll.ServerTLS(id), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("ca serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ca serve: %w", err)
	}
	return nil // stopping is a server's normal end
}

// fingerprint is a certificate's SHA-256, as operators compare it.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fmt.Sprintf("%X", sum[:])
}
