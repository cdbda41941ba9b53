package daemon

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// summaries of each daemon, for its --help.
var summaries = map[string][2]string{
	"configsrv": {"Run the configuration server (cs01:443) as a daemon",
		`Run the configuration server: agents register with it (proving the vault
passphrase), it orders syncs, relays checksums and watches health. Without a
vCenter it protects physical servers: a machine is enabled once its agent
has registered, by a standing request (--protect MACHINE=POLICY). With
--vcenter-url it discovers the vCenter's VMs and enables those listed in
--protect once discovered, by a push install through vCenter. Its state is
in a SQLite database (--db), kept across restarts.`},
	"processsrv": {"Run the process server (ps01:9443) as a daemon",
		`Run the process server: agents stream their change logs to it; it spools
each item to its cache directory (data-dir/cache) before acknowledging it,
then compresses, encrypts and uploads it to the storage account's cache
container.`},
	"azuresvc": {"Run the Azure side (asr.azure:443) as a daemon",
		`Run the Azure side of Site Recovery: it applies the uploaded change logs
to the replica disks (page blobs) in the storage account and snapshots them
at bookmarks: those snapshots are the recovery points.`},
	"agent": {"Run a protected machine: the Mobility agent over disk image files",
		`Run a protected machine: the Mobility agent (machine:20004) with its write
filter over the machine's disk image files (created sparse when missing),
its change log and agent.state in data-dir, and optionally a guest workload
writing through the filter (--workload), whose acknowledged writes are
appended to a history file (one JSON line each) that a checker can read.`},
}

const commonHelp = `

Every flag is also a key of the YAML file given with --config (the same
name, e.g. "listen: 127.0.0.2:8443"); flags override the file, and a key the
daemon does not know is an error. Secrets are never flags or keys: the vault
passphrase comes from $V2A_PASSPHRASE or --passphrase-file, the storage
connection string from $V2A_STORAGE_CONNECTION_STRING or
--storage-connection-string-file.

Peers are named by logical host (cs01:443, ps01:9443, asr.azure:443,
MACHINE:20004) as components address each other; --peers maps them to TCP
addresses. With --tls-dir every connection is mutual TLS (cert.pem, key.pem,
ca.pem; certificates name the logical hosts). The configuration server's
tls-dir is the vault CA's, made at its first start, and it serves
enrollment on --enroll-listen; another daemon given --enroll URL whose
tls-dir has no certificate yet gets one there at start by proving the
passphrase (a wrong one: exit 2, "wrong vault passphrase").

SIGTERM or SIGINT drains: stop accepting, let in-flight operations finish
(at most --stop-timeout), flush, log "daemon: drained" and exit 0; a second
signal exits at once (130). Exit codes: 0 drained; 1 the drain failed; 2 the
daemon could not start (bad flag or config key, missing secret, address in
use, a refused enrollment, a certificate that is not the vault's or has
expired, an unreachable vCenter, a storage account refusing the key, a
database of a newer schema).`

// Command is the v2a subcommand running daemon.
func Command(daemon string) *cobra.Command {
	flagged := Defaults(daemon)
	s := summaries[daemon]
	c := &cobra.Command{
		Use:   daemon + " [flags]",
		Short: s[0],
		Long:  s[1] + commonHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := resolveConfig(daemon, &flagged, cmd.Flags().Changed)
			if err != nil {
				return err
			}
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sig)
			return Run(cmd.Context(), daemon, cfg, cmd.ErrOrStderr(), sig)
		},
	}
	bind(c.Flags(), daemon, &flagged)
	return c
}
