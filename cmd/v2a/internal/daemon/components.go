package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/fsys"
	"github.com/v2a-dr/v2a/impl/hrl"
	"github.com/v2a-dr/v2a/impl/processsrv"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/vault"
	"github.com/v2a-dr/v2a/impl/vsphere"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	"github.com/v2a-dr/v2a/impl/wire"
)

// Daemons are the daemon names, each a v2a subcommand.
var Daemons = []string{"agent", "azuresvc", "configsrv", "processsrv"}

// build makes daemon's component from c: the same constructors and
// configurations the harness deploys in the simulated world
// (harness/replication.go), on the OS file system and real storage.
func build(daemon string, c Config, pass string, log *slog.Logger) (component, error) {
	keys, err := vault.Derive(c.VaultID, pass)
	if err != nil {
		return component{}, fmt.Errorf("%w: %s: %w", ErrConfig, daemon, err)
	}
	if daemon == "processsrv" || daemon == "agent" {
		if c.DataDir == "" {
			return component{}, fmt.Errorf("%w: %s: data-dir is empty", ErrConfig, daemon)
		}
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			return component{}, fmt.Errorf("%w: %s: data-dir: %w", ErrConfig, daemon, err)
		}
	}
	for name, a := range map[string]string{"config-server": c.ConfigServer, "process-server": c.ProcessServer, "azure": c.Azure} {
		if runtime.Addr(a).Port() == 0 {
			return component{}, fmt.Errorf("%w: %s: %s %q is not a logical host:port", ErrConfig, daemon, name, a)
		}
	}
	switch daemon {
	case "configsrv":
		return buildConfigServer(c, pass, log)
	case "processsrv":
		return buildProcessServer(c, keys)
	case "azuresvc":
		return buildAzure(c, keys)
	case "agent":
		return buildAgent(c, pass, log)
	}
	return component{}, fmt.Errorf("%w: no daemon %q (want one of %v)", ErrConfig, daemon, Daemons)
}

func buildConfigServer(c Config, pass string, log *slog.Logger) (component, error) {
	var policies []proto.Policy
	names := map[string]bool{proto.DefaultPolicy().Name: true}
	for _, pc := range c.Policies {
		p := proto.Policy{Name: pc.Name, RPOThreshold: pc.RPOThreshold.D(), Retention: pc.Retention.D(),
			CrashInterval: pc.CrashInterval.D(), AppInterval: pc.AppInterval.D()}
		if err := p.Validate(); err != nil {
			return component{}, fmt.Errorf("%w: configsrv: policies: %w", ErrConfig, err)
		}
		policies = append(policies, p)
		names[p.Name] = true
	}
	for m, p := range c.Protect {
		if !names[p] {
			return component{}, fmt.Errorf("%w: configsrv: protect %s=%s: no policy %q (have the default and the config's policies)", ErrConfig, m, p, p)
		}
	}
	self := runtime.MakeAddr(c.Host, runtime.PortConfig)
	cfg := configsrv.Config{VaultID: c.VaultID, Passphrase: pass, ProcessServer: runtime.Addr(c.ProcessServer),
		Azure: runtime.Addr(c.Azure), Policies: policies, RediscoverEvery: c.RediscoverEvery.D()}
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	if c.VCenterURL != "" {
		vc, auth, err := openVCenter(c)
		if err != nil {
			return component{}, err
		}
		cfg.VSphere, cfg.InstallAuth = vc, auth
		closers = append(closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return vc.Close(ctx)
		})
		log.Info("daemon: vCenter", "url", c.VCenterURL, "user", c.VCenterUser)
	}
	db := c.DB
	if db == "" {
		if c.DataDir == "" {
			closeAll()
			return component{}, fmt.Errorf("%w: configsrv: db and data-dir are empty", ErrConfig)
		}
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			closeAll()
			return component{}, fmt.Errorf("%w: configsrv: data-dir: %w", ErrConfig, err)
		}
		db = filepath.Join(c.DataDir, "cs.db")
	}
	store, err := sqlite.Open(db)
	if err != nil {
		closeAll()
		return component{}, fmt.Errorf("%w: configsrv: db: %w", ErrConfig, err)
	}
	cfg.Store = store
	closers = append(closers, store.Close)
	log.Info("daemon: database", "db", db)
	return component{addr: self, factory: func() runtime.Actor {
		return &protector{srv: configsrv.New(cfg), want: c.Protect, asked: map[string]bool{}}
	}, stopped: closeAll, certs: store}, nil
}

// openVCenter logs in to the configuration server's vCenter: an
// unreachable or untrusted one is an ErrConfig error naming it.
func openVCenter(c Config) (*vcenter.Client, vsphere.GuestAuth, error) {
	pw, err := readSecret("configsrv", SecretVCenter, c.VCenterPasswordFile)
	if err != nil {
		return nil, vsphere.GuestAuth{}, err
	}
	ipw, err := readSecret("configsrv", SecretInstall, c.InstallPasswordFile)
	if err != nil {
		return nil, vsphere.GuestAuth{}, err
	}
	if c.VCenterUser == "" {
		return nil, vsphere.GuestAuth{}, fmt.Errorf("%w: configsrv: vcenter-user is empty", ErrConfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vc, err := vcenter.Open(ctx, c.VCenterURL, vcenter.Options{Username: c.VCenterUser, Password: pw,
		Thumbprint: c.VCenterThumbprint, CAFile: c.VCenterCAFile, Insecure: c.VCenterInsecure})
	if err != nil {
		hint := ""
		if errors.Is(err, vcenter.ErrUntrusted) {
			hint = " (this daemon's flags: --vcenter-thumbprint, --vcenter-ca-file or --vcenter-insecure)"
		}
		return nil, vsphere.GuestAuth{}, fmt.Errorf("%w: configsrv: vcenter-url: %w%s", ErrConfig, err, hint)
	}
	return vc, vsphere.GuestAuth{Username: c.InstallUser, Password: ipw}, nil
}

func buildProcessServer(c Config, keys vault.Keys) (component, error) {
	store, err := openStore("processsrv", c)
	if err != nil {
		return component{}, err
	}
	cfg := processsrv.Config{Name: c.Host, CacheDir: filepath.Join(c.DataDir, "cache"), FS: fsys.OS{}, CacheCapBytes: c.CacheBytes,
		Store: store, ContainerPrefix: c.ContainerPrefix, Key: keys.Data, Codec: batch.CodecS2,
		Azure: runtime.Addr(c.Azure), ConfigServer: runtime.Addr(c.ConfigServer)}
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		return component{}, fmt.Errorf("%w: processsrv: cache directory: %w", ErrConfig, err)
	}
	return component{addr: runtime.MakeAddr(c.Host, runtime.PortProcess), factory: func() runtime.Actor { return processsrv.New(cfg) }}, nil
}

func buildAzure(c Config, keys vault.Keys) (component, error) {
	store, err := openStore("azuresvc", c)
	if err != nil {
		return component{}, err
	}
	cfg := azureConfig(c, store, keys)
	return component{addr: runtime.MakeAddr(c.Host, runtime.PortConfig), factory: func() runtime.Actor { return azuresvc.New(cfg) }}, nil
}

// azureConfig is the Azure side's configuration from the daemon's.
func azureConfig(c Config, store blob.Store, keys vault.Keys) azuresvc.Config {
	return azuresvc.Config{Store: store, ContainerPrefix: c.ContainerPrefix, Key: keys.Data,
		ConfigServer: runtime.Addr(c.ConfigServer), PollEvery: c.PollEvery.D(), PollMax: c.PollMax.D(),
		DeferFor: c.DeferFor.D()}
}

func openStore(daemon string, c Config) (*azblob.Store, error) {
	conn, err := readSecret(daemon, SecretStorage, c.StorageConnectionStringFile)
	if err != nil {
		return nil, err
	}
	s, err := azblob.NewFromConnectionString(conn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, daemon, err)
	}
	// One request before anything starts: a wrong key or an unreachable
	// account is a clear error now, not a component retrying forever.
	ctx, cancel := context.WithTimeout(context.Background(), storageProbeTimeout)
	defer cancel()
	if _, err := s.List(ctx, c.ContainerPrefix+proto.ContainerCache, ""); err != nil && !errors.Is(err, blob.ErrNotFound) {
		var re *azcore.ResponseError
		if errors.As(err, &re) {
			hint := ""
			if re.StatusCode == 403 {
				hint = " (check the connection string's AccountKey)"
			}
			return nil, fmt.Errorf("%w: %s: storage account %q refused the first request: HTTP %d %s%s",
				ErrConfig, daemon, accountName(conn), re.StatusCode, re.ErrorCode, hint)
		}
		return nil, fmt.Errorf("%w: %s: storage account %q did not answer a first request within %s (check the connection string's endpoint): %w",
			ErrConfig, daemon, accountName(conn), storageProbeTimeout, err)
	}
	return s, nil
}

// storageProbeTimeout bounds the first request to the storage account.
const storageProbeTimeout = 20 * time.Second

// accountName is a connection string's AccountName (never its key).
func accountName(conn string) string {
	if name := azblob.ConnectionStringField(conn, "AccountName"); name != "" {
		return name
	}
	return "(no AccountName)"
}

func buildAgent(c Config, pass string, log *slog.Logger) (component, error) {
	if c.Machine == "" {
		return component{}, fmt.Errorf("%w: agent: machine is empty (--machine NAME)", ErrConfig)
	}
	if len(c.Disks) == 0 {
		return component{}, fmt.Errorf("%w: agent: no disks (--disks FILE[,FILE...])", ErrConfig)
	}
	if c.DiskBytes <= 0 || c.DiskBytes%4096 != 0 {
		return component{}, fmt.Errorf("%w: agent: disk-bytes %d: want a positive multiple of 4096", ErrConfig, c.DiskBytes)
	}
	hist := c.History
	if hist == "" {
		hist = filepath.Join(c.DataDir, "history.jsonl")
	}
	g, err := openGuest(log, c.Machine, c.Disks, c.DiskBytes, c.Workload, c.WorkloadRate, hist)
	if err != nil {
		return component{}, fmt.Errorf("%w: agent: %w", ErrConfig, err)
	}
	cfg := agent.Config{Machine: c.Machine, InstanceUUID: c.InstanceUUID, Physical: c.InstanceUUID == "",
		ConfigServer: runtime.Addr(c.ConfigServer), VaultID: c.VaultID, Passphrase: pass,
		StateDir: c.DataDir, FS: fsys.OS{}, Guest: g,
		// The guest's disk writes are acknowledged once on the image file
		// (as sim/disk's write-through disks): a record must be durable
		// before that, or a machine crash would lose a write the disk has.
		// The filter lives in this process: write-through.
		LogOptions:         hrl.Options{SyncEveryAppend: true},
		FilterWriteThrough: true,
		DrainInterval:      c.DrainInterval.D()}
	return component{
		addr:    runtime.MakeAddr(c.Machine, runtime.PortTag),
		factory: func() runtime.Actor { return agent.New(cfg) },
		started: func() { g.start(c.Seed) },
		stopping: func() error {
			err := g.close()
			if err != nil {
				return fmt.Errorf("agent: guest: %w", err)
			}
			b, w := g.m.Written()
			log.Info("guest: workload stopped", "writes", w, "bytes", b, "history", hist)
			return nil
		},
		stopped: func() error {
			// The filter is the guest kernel's; the process ends, so it
			// closes: its log is flushed for the next start to recover.
			if f := g.Filter(); f != nil {
				if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
					return fmt.Errorf("agent: filter: %w", err)
				}
			}
			return nil
		},
	}, nil
}

// protector is the configuration server with the daemon's standing
// requests: every machine listed in --protect is enabled with its policy,
// once its agent has registered, as the portal's EnableReplication would
// (the request comes from the server's own address; its reply comes back
// there and is logged).
type protector struct {
	srv    *configsrv.Server
	want   map[string]string // machine -> policy
	asked  map[string]bool
	timers runtime.Timers
}

// protectEvery is how often the standing requests are looked at.
const protectEvery = time.Second

const tProtect = "daemon-protect"

func (p *protector) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		p.srv.Handle(ctx, ev)
		if len(p.want) > 0 {
			p.timers.Set(ctx, tProtect, protectEvery)
		}
		return
	case runtime.Timer:
		if p.timers.Fired(ev) {
			p.tick(ctx)
			return
		}
	case runtime.Message:
		if ev.From == ctx.Self() {
			if msg, err := wire.Decode(ev.Data); err == nil {
				if r, ok := msg.(*proto.Reply); ok {
					ctx.Log().Info("daemon: standing request answered", "request", r.Request, "subject", r.Subject, "ok", r.OK, "reason", r.Reason)
					return
				}
			}
		}
	}
	p.srv.Handle(ctx, ev)
}

func (p *protector) tick(ctx runtime.Context) {
	st := p.srv.Status()
	byName := map[string]configsrv.MachineStatus{}
	for _, m := range st.Machines {
		byName[m.Name] = m
	}
	names := make([]string, 0, len(p.want))
	for n := range p.want {
		names = append(names, n)
	}
	sort.Strings(names)
	pending := false
	for _, n := range names {
		if p.asked[n] {
			continue
		}
		m, ok := byName[n]
		if !ok || !m.Registered && !m.InVCenter {
			pending = true
			continue
		}
		p.asked[n] = true
		if m.Policy != "" {
			continue // enabled already (by the portal)
		}
		ctx.Log().Info("daemon: enabling replication (standing request)", "machine", n, "policy", p.want[n])
		p.srv.Handle(ctx, runtime.Message{From: ctx.Self(), Data: wire.Encode(&proto.EnableReplication{Machine: n, Policy: p.want[n]})})
	}
	if pending {
		p.timers.Set(ctx, tProtect, protectEvery)
	}
}
