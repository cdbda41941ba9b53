// Package daemon runs one v2a component as an operating-system process on
// the real runtime (impl/runtime.Real): the configuration server, the
// process server, the Azure side or a protected machine's agent. It is the
// wiring of the wire and real worlds — flags and a YAML config file, logs,
// TLS files, the logical-host-to-TCP-address map, signals — and builds each
// component with the same constructors and configs the harness uses in the
// simulated world.
//
// A daemon's life: load its configuration (a bad one is ErrConfig, exit
// code 2), listen (a taken address is ErrConfig too, naming the daemon and
// the address), run until SIGTERM or SIGINT, then drain: stop accepting,
// let in-flight ops finish (bounded by stop-timeout), flush, log "daemon:
// drained" and exit 0. A second signal during the drain exits at once.
package daemon

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Errors of a daemon's set-up (exit code 2) and run (exit code 1).
var (
	// ErrConfig: the configuration cannot be used (a bad flag or config
	// key, a missing secret, an address already in use). Nothing started.
	ErrConfig = errors.New("daemon: bad configuration")
	// ErrRun: the daemon started but failed while running or draining.
	ErrRun = errors.New("daemon: failed")
)

// Environment variables holding secrets, which are never flag values.
const (
	EnvPassphrase       = "V2A_PASSPHRASE"
	EnvStorageConnected = "V2A_STORAGE_CONNECTION_STRING"
	EnvVCenterPassword  = "V2A_VCENTER_PASSWORD"
	EnvInstallPassword  = "V2A_INSTALL_PASSWORD"
)

// Duration is a time.Duration written as Go does ("90s", "1m30s") in flags
// and config files.
type Duration time.Duration

// String implements pflag.Value.
func (d *Duration) String() string { return time.Duration(*d).String() }

// Set implements pflag.Value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Type implements pflag.Value.
func (*Duration) Type() string { return "duration" }

// UnmarshalJSON reads a duration string (sigs.k8s.io/yaml goes through JSON).
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration %s: want a string such as \"90s\"", b)
	}
	return d.Set(s)
}

// PolicyConfig is a replication policy the configuration server creates at
// start (config file only: key "policies").
type PolicyConfig struct {
	Name          string   `json:"name"`
	RPOThreshold  Duration `json:"rpo-threshold"`
	Retention     Duration `json:"retention"`
	CrashInterval Duration `json:"crash-interval"`
	AppInterval   Duration `json:"app-interval"`
}

// Config is every daemon's configuration. A field's JSON name is both its
// config-file key and its flag name; each daemon accepts only its own
// (Options). Flags override the file.
type Config struct {
	ConfigFile string `json:"-"`

	Listen         string            `json:"listen"`
	Peers          map[string]string `json:"peers"`
	DataDir        string            `json:"data-dir"`
	LogLevel       string            `json:"log-level"`
	LogFormat      string            `json:"log-format"`
	PassphraseFile string            `json:"passphrase-file"`
	TLSDir         string            `json:"tls-dir"`
	VaultID        string            `json:"vault-id"`
	StopTimeout    Duration          `json:"stop-timeout"`
	Seed           uint64            `json:"seed"`

	// Logical addresses of the peers ("host:port"), resolved through Peers.
	Host          string `json:"host"`
	ConfigServer  string `json:"config-server"`
	ProcessServer string `json:"process-server"`
	Azure         string `json:"azure"`

	// Enroll is the configuration server's enrollment URL: a daemon whose
	// tls-dir has no certificate yet gets one there at start, renews it
	// there, and fetches the revocation list from there.
	Enroll string `json:"enroll"`

	// Certificate lifecycle (certs.go).
	CertCheck    Duration `json:"cert-check"`    // period of the expiry check and the revocation list's fetch
	CertRenew    bool     `json:"cert-renew"`    // renew when a third of the validity is left
	CertValidity Duration `json:"cert-validity"` // configsrv: validity of the host certificates it issues

	// Configuration server.
	Protect             map[string]string `json:"protect"`
	Policies            []PolicyConfig    `json:"policies"`
	DB                  string            `json:"db"`
	EnrollListen        string            `json:"enroll-listen"`
	VCenterURL          string            `json:"vcenter-url"`
	VCenterUser         string            `json:"vcenter-user"`
	VCenterThumbprint   string            `json:"vcenter-thumbprint"`
	VCenterCAFile       string            `json:"vcenter-ca-file"`
	VCenterInsecure     bool              `json:"vcenter-insecure"`
	VCenterPasswordFile string            `json:"vcenter-password-file"`
	InstallUser         string            `json:"install-user"`
	InstallPasswordFile string            `json:"install-password-file"`
	RediscoverEvery     Duration          `json:"rediscover-every"`

	// Process server and Azure side.
	StorageConnectionStringFile string   `json:"storage-connection-string-file"`
	ContainerPrefix             string   `json:"container-prefix"`
	CacheBytes                  int64    `json:"cache-bytes"`
	PollEvery                   Duration `json:"poll-every"`
	PollMax                     Duration `json:"poll-max"`
	DeferFor                    Duration `json:"defer-for"`

	// Agent.
	Machine       string   `json:"machine"`
	InstanceUUID  string   `json:"instance-uuid"`
	Disks         []string `json:"disks"`
	DiskBytes     int64    `json:"disk-bytes"`
	Workload      string   `json:"workload"`
	WorkloadRate  float64  `json:"workload-rate"`
	History       string   `json:"history"`
	DrainInterval Duration `json:"drain-interval"`
}

// option is one flag and config key.
type option struct {
	name  string
	usage string
	field func(*Config) any // a pointer to the field
}

// Options a daemon accepts, by group.
var (
	commonOptions = []option{
		{"listen", "TCP address to listen on (host:port; port 0 picks a free one)", func(c *Config) any { return &c.Listen }},
		{"peers", "logical host (or host:port) = TCP address of a peer, e.g. cs01=127.0.0.2:8443,ps01=127.0.0.3; a host not listed is dialled by its own name", func(c *Config) any { return &c.Peers }},
		{"log-level", "debug, info, warn or error", func(c *Config) any { return &c.LogLevel }},
		{"log-format", "text or json (log/slog), on stderr", func(c *Config) any { return &c.LogFormat }},
		{"passphrase-file", "file holding the vault passphrase (else $" + EnvPassphrase + "; never a flag value)", func(c *Config) any { return &c.PassphraseFile }},
		{"tls-dir", "directory with cert.pem, key.pem and ca.pem: mutual TLS with peers whose certificates ca.pem signed (empty: plain TCP)", func(c *Config) any { return &c.TLSDir }},
		{"vault-id", "the Recovery Services vault's id", func(c *Config) any { return &c.VaultID }},
		{"stop-timeout", "how long a drain waits for in-flight operations", func(c *Config) any { return &c.StopTimeout }},
		{"seed", "seed of the components' random draws", func(c *Config) any { return &c.Seed }},
		{"cert-check", "with tls-dir: how often the daemon checks its certificate's expiry and (with enroll) fetches the vault's revocation list from the configuration server, so its TLS listener refuses revoked peers", func(c *Config) any { return &c.CertCheck }},
		{"cert-renew", "with tls-dir: when less than a third of the certificate's validity is left, get a new one (a new key, over mutual TLS with the current certificate; the configuration server renews its own from the CA) and use it for new connections without a restart", func(c *Config) any { return &c.CertRenew }},
	}
	dataDirOption = option{"data-dir", "directory for the daemon's durable files", func(c *Config) any { return &c.DataDir }}
	hostOption    = option{"host", "this daemon's logical host name (its address is host:port of its service)", func(c *Config) any { return &c.Host }}
	enrollOption  = option{"enroll", "the configuration server's enrollment URL (https://HOST:PORT): at start, when tls-dir has no cert.pem, prove the vault passphrase there and write the certificate it issues into tls-dir (while nothing answers there, it tries again for up to 2 min; a refusal is final)", func(c *Config) any { return &c.Enroll }}
	csOptions     = []option{
		hostOption,
		dataDirOption,
		{"db", "the configuration server's SQLite database (empty: data-dir/cs.db); machines, policies, jobs, alerts, groups and registrations survive a restart", func(c *Config) any { return &c.DB }},
		{"enroll-listen", "TCP address of the enrollment endpoint (HTTPS), served when tls-dir is set: the vault CA is made there at first start; it also renews certificates, serves the revocation list and takes revocations (v2a revoke)", func(c *Config) any { return &c.EnrollListen }},
		{"cert-validity", "validity of the host certificates the vault CA issues at enrollment and renewal (0: one year); short ones are for tests", func(c *Config) any { return &c.CertValidity }},
		{"vcenter-url", "the vCenter SDK URL to discover VMs from and push-install through (https://HOST/sdk; empty: physical servers only)", func(c *Config) any { return &c.VCenterURL }},
		{"vcenter-user", "the vCenter user", func(c *Config) any { return &c.VCenterUser }},
		{"vcenter-thumbprint", "SHA-1 (or SHA-256) thumbprint of the vCenter's certificate, trusted as govc does", func(c *Config) any { return &c.VCenterThumbprint }},
		{"vcenter-ca-file", "PEM file of the CA certificates to verify the vCenter with, instead of the system's roots", func(c *Config) any { return &c.VCenterCAFile }},
		{"vcenter-insecure", "trust any vCenter certificate (lab only; excludes vcenter-thumbprint and vcenter-ca-file)", func(c *Config) any { return &c.VCenterInsecure }},
		{"vcenter-password-file", "file holding the vCenter password (else $" + EnvVCenterPassword + ")", func(c *Config) any { return &c.VCenterPasswordFile }},
		{"install-user", "the guest account push install runs the installer with", func(c *Config) any { return &c.InstallUser }},
		{"install-password-file", "file holding the guest account's password (else $" + EnvInstallPassword + ")", func(c *Config) any { return &c.InstallPasswordFile }},
		{"rediscover-every", "period of vCenter discovery (0: the server's default, 15m)", func(c *Config) any { return &c.RediscoverEvery }},
		{"process-server", "logical address of the process server agents stream to", func(c *Config) any { return &c.ProcessServer }},
		{"azure", "logical address of the Azure side", func(c *Config) any { return &c.Azure }},
		{"protect", "machine = policy: enable replication of the machine with the policy once its agent registers, as a portal request would", func(c *Config) any { return &c.Protect }},
	}
	storageOptions = []option{
		{"storage-connection-string-file", "file holding the storage account's connection string (else $" + EnvStorageConnected + ")", func(c *Config) any { return &c.StorageConnectionStringFile }},
		{"container-prefix", "prefix of the deployment's containers (cache, replica, catalog)", func(c *Config) any { return &c.ContainerPrefix }},
	}
	psOptions = []option{
		hostOption,
		enrollOption,
		dataDirOption,
		{"config-server", "logical address of the configuration server", func(c *Config) any { return &c.ConfigServer }},
		{"azure", "logical address of the Azure side", func(c *Config) any { return &c.Azure }},
		{"cache-bytes", "cache disk space the process server may use (0: its default)", func(c *Config) any { return &c.CacheBytes }},
	}
	azureOptions = []option{
		hostOption,
		enrollOption,
		{"config-server", "logical address of the configuration server", func(c *Config) any { return &c.ConfigServer }},
		{"poll-every", "how often the cache container is listed while anything is pending (0: the service's default)", func(c *Config) any { return &c.PollEvery }},
		{"poll-max", "the longest time between two listings while they find nothing the process server's hints had not announced (0: the service's default, 5m)", func(c *Config) any { return &c.PollMax }},
		{"defer-for", "how long a log item of writes only may wait to be applied with the items after it (0: the service's default, 10m; negative: apply each item at once)", func(c *Config) any { return &c.DeferFor }},
	}
	agentOptions = []option{
		dataDirOption,
		enrollOption,
		{"config-server", "logical address of the configuration server", func(c *Config) any { return &c.ConfigServer }},
		{"machine", "the protected machine's name (required)", func(c *Config) any { return &c.Machine }},
		{"instance-uuid", "the VM's vCenter instance UUID (empty: a physical server)", func(c *Config) any { return &c.InstanceUUID }},
		{"disks", "the machine's disk image files, in order (created sparse at disk-bytes when missing)", func(c *Config) any { return &c.Disks }},
		{"disk-bytes", "size of a disk image file the agent creates", func(c *Config) any { return &c.DiskBytes }},
		{"workload", "guest workload writing through the filter: bank, fs, random or idle (empty: none)", func(c *Config) any { return &c.Workload }},
		{"workload-rate", "the workload's transactions a second (random: bytes a second)", func(c *Config) any { return &c.WorkloadRate }},
		{"history", "file the guest's acknowledged writes are appended to, one JSON line each (empty: data-dir/history.jsonl)", func(c *Config) any { return &c.History }},
		{"drain-interval", "how often the agent drains its change log (0: the agent's default)", func(c *Config) any { return &c.DrainInterval }},
	}
)

// configOnlyKeys are config-file keys that have no flag, by daemon.
var configOnlyKeys = map[string][]string{"configsrv": {"policies"}}

// Defaults returns the configuration of a daemon before any file or flag.
func Defaults(daemon string) Config {
	c := Config{LogLevel: "info", LogFormat: "text", VaultID: "vault-1", StopTimeout: Duration(10 * time.Second),
		CertCheck: Duration(time.Minute), CertRenew: true,
		ContainerPrefix: "v2a-", DataDir: "v2a-" + daemon, DiskBytes: 64 << 20, WorkloadRate: 5,
		ConfigServer: "cs01:443", ProcessServer: "ps01:9443", Azure: "asr.azure:443"}
	switch daemon {
	case "configsrv":
		c.Listen, c.Host, c.EnrollListen, c.InstallUser = ":443", "cs01", ":8443", "root"
	case "processsrv":
		c.Listen, c.Host = ":9443", "ps01"
	case "azuresvc":
		c.Listen, c.Host = ":443", "asr.azure"
	case "agent":
		c.Listen = ":20004"
	}
	return c
}

// options lists the options of a daemon, sorted by name.
func options(daemon string) []option {
	opts := append([]option(nil), commonOptions...)
	switch daemon {
	case "configsrv":
		opts = append(opts, csOptions...)
	case "processsrv":
		opts = append(opts, psOptions...)
		opts = append(opts, storageOptions...)
	case "azuresvc":
		opts = append(opts, azureOptions...)
		opts = append(opts, storageOptions...)
	case "agent":
		opts = append(opts, agentOptions...)
	}
	sort.Slice(opts, func(i, j int) bool { return opts[i].name < opts[j].name })
	return opts
}

// bind defines a daemon's flags on fs, bound to c's fields (their current
// values are the defaults shown).
func bind(fs *pflag.FlagSet, daemon string, c *Config) {
	fs.StringVar(&c.ConfigFile, "config", "", "YAML config file; its keys are the flag names below, and flags override it")
	for _, o := range options(daemon) {
		switch p := o.field(c).(type) {
		case *string:
			fs.StringVar(p, o.name, *p, o.usage)
		case *int64:
			fs.Int64Var(p, o.name, *p, o.usage)
		case *uint64:
			fs.Uint64Var(p, o.name, *p, o.usage)
		case *float64:
			fs.Float64Var(p, o.name, *p, o.usage)
		case *bool:
			fs.BoolVar(p, o.name, *p, o.usage)
		case *Duration:
			fs.Var(p, o.name, o.usage)
		case *[]string:
			fs.StringSliceVar(p, o.name, *p, o.usage)
		case *map[string]string:
			fs.StringToStringVar(p, o.name, *p, o.usage)
		default:
			panic(fmt.Sprintf("daemon: option %s has an unsupported type %T", o.name, p))
		}
	}
}

// copyField sets dst's field of option o to src's.
func copyField(o option, dst, src *Config) {
	switch d := o.field(dst).(type) {
	case *string:
		*d = *o.field(src).(*string)
	case *int64:
		*d = *o.field(src).(*int64)
	case *uint64:
		*d = *o.field(src).(*uint64)
	case *float64:
		*d = *o.field(src).(*float64)
	case *bool:
		*d = *o.field(src).(*bool)
	case *Duration:
		*d = *o.field(src).(*Duration)
	case *[]string:
		*d = *o.field(src).(*[]string)
	case *map[string]string:
		*d = *o.field(src).(*map[string]string)
	}
}

// resolveConfig is the configuration of a daemon: its defaults, then the
// config file named by flagged.ConfigFile if any, then every flag the
// command line set (changed), taken from flagged.
func resolveConfig(daemon string, flagged *Config, changed func(name string) bool) (Config, error) {
	if flagged.ConfigFile == "" {
		return *flagged, nil
	}
	c := Defaults(daemon)
	if err := loadFile(daemon, flagged.ConfigFile, &c); err != nil {
		return Config{}, err
	}
	c.ConfigFile = flagged.ConfigFile
	for _, o := range options(daemon) {
		if changed(o.name) {
			copyField(o, &c, flagged)
		}
	}
	return c, nil
}

// loadFile reads a YAML config file over c. Only the daemon's own keys are
// accepted: an unknown or misplaced key is an error naming it.
func loadFile(daemon, path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %s: config: %w", ErrConfig, daemon, err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("%w: %s: config %s: %w", ErrConfig, daemon, path, err)
	}
	known := map[string]bool{}
	for _, o := range options(daemon) {
		known[o.name] = true
	}
	for _, k := range configOnlyKeys[daemon] {
		known[k] = true
	}
	var unknown []string
	for k := range keys {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		if strings.Contains(k, "passphrase") && k != "passphrase-file" || strings.Contains(k, "connection-string") && k != "storage-connection-string-file" {
			return fmt.Errorf("%w: %s: config %s: key %q: secrets are never config values (use $%s, $%s or the -file keys)",
				ErrConfig, daemon, path, k, EnvPassphrase, EnvStorageConnected)
		}
	}
	if len(unknown) > 0 {
		names := make([]string, 0, len(known))
		for k := range known {
			names = append(names, k)
		}
		sort.Strings(names)
		return fmt.Errorf("%w: %s: config %s: unknown key %s (%s accepts: %s)", ErrConfig, daemon, path,
			strings.Join(quoteAll(unknown), ", "), daemon, strings.Join(names, ", "))
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return fmt.Errorf("%w: %s: config %s: %w", ErrConfig, daemon, path, err)
	}
	return nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// Secret names a secret a daemon or command reads (ReadSecret): what it
// is, the environment variable holding it, and the flag naming a file
// holding it instead.
type Secret struct {
	What string // "vault passphrase"
	Env  string // EnvPassphrase
	Flag string // "passphrase-file"
}

// Secrets the daemons and commands read.
var (
	SecretPassphrase = Secret{"vault passphrase", EnvPassphrase, "passphrase-file"}
	SecretStorage    = Secret{"storage connection string", EnvStorageConnected, "storage-connection-string-file"}
	SecretVCenter    = Secret{"vCenter password", EnvVCenterPassword, "vcenter-password-file"}
	SecretInstall    = Secret{"guest account password", EnvInstallPassword, "install-password-file"}
)

// ReadSecret reads secret s from file (trailing newlines trimmed) or, when
// file is empty, from its environment variable: the one reader of secrets
// for every daemon and for 'v2a enroll' and 'v2a ca serve', with one set
// of messages, each prefixed with who (the daemon or command). Secrets are
// never flag values.
func ReadSecret(who string, s Secret, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %s: %w", who, s.What, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%s: %s: %s is empty", who, s.What, file)
		}
		return v, nil
	}
	if v := os.Getenv(s.Env); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("%s: no %s: set $%s or give a file with --%s (never a flag value)", who, s.What, s.Env, s.Flag)
}

// readSecret is ReadSecret for a daemon's set-up: its error is ErrConfig.
func readSecret(daemon string, s Secret, file string) (string, error) {
	v, err := ReadSecret(daemon, s, file)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return v, nil
}
