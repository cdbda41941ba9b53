// Package harness builds a v2a environment from a target, runs scenarios on
// it, injects faults, records the event trace and runs the property checks.
//
// A target (fixtures/targets/*.yaml) says which world to build: the vSphere
// inventory, where vSphere comes from (the in-process govmomi simulator, or
// a vCenter URL), where blob storage comes from (an Azurite the harness
// starts, or a connection string), and the network between the sites.
//
// # Scenarios in your own tests
//
// A team writes its own DR scenarios in `go test` through two entry
// points, both on the one runner `v2a run` uses (same verdict rule):
//
//   - RunScenario(t, "testdata/drill.scn") runs a .scn script as a Go
//     test: outputs compared with the file (-rewrite records them), an
//     unexpected `error:` or a failed check fails the test;
//   - NewScenario(t) builds the same in Go: World, Deploy, Protect, Run,
//     Crash, Restart, Partition, Heal, Check, and Do for any other command
//     (CommandTable lists them; `v2a help` prints it).
//
// Call Shutdown from TestMain after m.Run. See ExampleRunScenario and
// ExampleNewScenario (harness/example_test.go, written as another module
// would write it).
package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/v2a-dr/v2a/fixtures"
	"github.com/v2a-dr/v2a/impl/vsphere/vcenter"
	"github.com/v2a-dr/v2a/sim/azurite"
	"github.com/v2a-dr/v2a/sim/strictyaml"
)

// Target selects and configures a world.
type Target struct {
	Name string `json:"name"`
	// World is "sim" (virtual time, one goroutine: every scenario and check
	// runs here), "wire" or "real" (real runtime and sockets).
	World     string        `json:"world"`
	Inventory string        `json:"inventory"`
	VSphere   VSphereTarget `json:"vsphere"`
	Storage   StorageTarget `json:"storage"`
	Network   NetworkTarget `json:"network"`
	Azure     AzureTarget   `json:"azure"`

	File string `json:"-"`
}

// VSphereTarget says where vCenter is.
type VSphereTarget struct {
	// Mode is "vcsim" (the govmomi simulator built from Inventory) or "url"
	// (a real vCenter, or a vcsim reached over HTTP, at URL).
	Mode        string `json:"mode"`
	URL         string `json:"url,omitempty"`
	Username    string `json:"username,omitempty"`
	PasswordEnv string `json:"passwordEnv,omitempty"` // the password is read from this variable
	// How to trust the vCenter's certificate when the system's roots do
	// not (a self-signed one): Thumbprint, its SHA-1 fingerprint as govc
	// and `v2a vcsim` print it ("AB:CD:…"); CAFile, a PEM file of its CA
	// (relative to the module root); or Insecure, no verification at all.
	// Insecure excludes the other two.
	Thumbprint string `json:"thumbprint,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
	Insecure   bool   `json:"insecure,omitempty"`
}

// StorageTarget says where blob storage is.
type StorageTarget struct {
	// Mode is "auto" (an Azurite the harness starts: a local process if
	// `make tools` installed one, else testcontainers if a Docker engine
	// answers), "local", "testcontainers", or "external" (an Azurite or a
	// real storage account reached by the connection string in
	// ConnectionStringEnv). The environment variable V2A_AZURITE overrides
	// it.
	Mode                string `json:"mode"`
	ConnectionStringEnv string `json:"connectionStringEnv,omitempty"`
}

// AzureTarget says where failovers land.
type AzureTarget struct {
	// Mode is "sim" (default: the simulated Azure fabric, sim/fabric) or
	// "arm" (a real subscription through impl/compute/azarm, configured by
	// the AZURE_* environment variables azarm.ConfigFromEnv reads; the
	// harness works in the resource group v2a-recovery).
	Mode string `json:"mode,omitempty"`
}

// NetworkTarget sets the simulated network (sim world only).
type NetworkTarget struct {
	InternetLatency Duration `json:"internetLatency,omitempty"`
	InternetMbps    float64  `json:"internetMbps,omitempty"`
	VPN             string   `json:"vpn,omitempty"` // "absent" (default), "up", "down"
}

// Duration is a time.Duration written as "20ms" in YAML.
type Duration time.Duration

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := yaml.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// DefaultTarget is the sim world on the lab inventory.
const DefaultTarget = "fixtures/targets/sim.yaml"

// LoadTarget reads a target file. Relative paths inside it are relative to
// the module root.
func LoadTarget(path string) (*Target, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("harness: target: %w", err)
	}
	return parseTarget(path, data)
}

// parseTarget decodes and validates a target read from path.
func parseTarget(path string, data []byte) (*Target, error) {
	var t Target
	if err := yaml.UnmarshalStrict(data, &t); err != nil {
		if where, known := strictyaml.UnknownField(data, reflect.TypeFor[Target]()); where != "" {
			return nil, fmt.Errorf("harness: target %s: %s: unknown key (known here: %s)", path, where, strings.Join(known, ", "))
		}
		return nil, fmt.Errorf("harness: target %s: %w", path, err)
	}
	t.File = path
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Validate fills defaults and checks the target.
func (t *Target) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("harness: target %s: %s: %s", t.File, field, fmt.Sprintf(format, args...))
	}
	if t.World == "" {
		t.World = "sim"
	}
	if t.VSphere.Mode == "" {
		t.VSphere.Mode = "vcsim"
	}
	if t.Storage.Mode == "" {
		t.Storage.Mode = "auto"
	}
	if t.Network.VPN == "" {
		t.Network.VPN = "absent"
	}
	switch t.World {
	case "sim":
	case "wire", "real":
		return bad("world", "%q worlds run the components on the real runtime; this version of the harness drives scenarios in the sim world only (vCenter and storage can still be real: set vsphere.mode=url and storage.mode=external)", t.World)
	default:
		return bad("world", "unknown world %q (want sim, wire or real)", t.World)
	}
	switch t.VSphere.Mode {
	case "vcsim":
		if t.Inventory == "" {
			return bad("inventory", "required with vsphere.mode=vcsim")
		}
	case "url":
		if t.VSphere.URL == "" {
			return bad("vsphere.url", "required with vsphere.mode=url")
		}
		if t.VSphere.Insecure && (t.VSphere.Thumbprint != "" || t.VSphere.CAFile != "") {
			return bad("vsphere.insecure", "excludes thumbprint and caFile (choose one way to trust the vCenter's certificate)")
		}
		if t.VSphere.Thumbprint != "" {
			if _, err := vcenter.ParseThumbprint(t.VSphere.Thumbprint); err != nil {
				return bad("vsphere.thumbprint", "%v", err)
			}
		}
	default:
		return bad("vsphere.mode", "unknown mode %q (want vcsim or url)", t.VSphere.Mode)
	}
	switch t.Storage.Mode {
	case "auto", "local", "testcontainers":
	case "external":
		if t.Storage.ConnectionStringEnv == "" {
			return bad("storage.connectionStringEnv", "required with storage.mode=external")
		}
	default:
		return bad("storage.mode", "unknown mode %q (want auto, local, testcontainers or external)", t.Storage.Mode)
	}
	switch t.Network.VPN {
	case "absent", "up", "down":
	default:
		return bad("network.vpn", "unknown state %q (want absent, up or down)", t.Network.VPN)
	}
	if t.Network.InternetMbps < 0 || t.Network.InternetLatency < 0 {
		return bad("network", "negative bandwidth or latency")
	}
	return nil
}

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory, so that fixtures resolve from tests and the CLI alike.
func ModuleRoot() (string, error) {
	root, err := azurite.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("harness: %w: run v2a from the v2a checkout", err)
	}
	return root, nil
}

// ReadFixture reads a file named relative to the module root (a target's
// inventory, the default target, world target=PATH): an absolute path as
// it is; a relative one from the checkout v2a runs in, when it runs in one
// (the files on disk win, so an edited fixture needs no rebuild); else,
// for a path under fixtures/, the copy built into v2a (package fixtures),
// so that an installed v2a builds its worlds anywhere. It returns the path
// read (the relative path itself for a built-in copy), for messages.
func ReadFixture(path string) (string, []byte, error) {
	if filepath.IsAbs(path) {
		b, err := os.ReadFile(path)
		return path, b, err
	}
	root, rootErr := ModuleRoot()
	if rootErr == nil {
		p := filepath.Join(root, path)
		b, err := os.ReadFile(p)
		return p, b, err
	}
	b, err := fixtures.Read(filepath.ToSlash(path))
	if err != nil {
		if errors.Is(err, fixtures.ErrNotFixture) {
			// Neither a checkout nor a built-in fixture: the checkout is
			// what is missing.
			return "", nil, fmt.Errorf("%w; %s is not built into v2a either", rootErr, path)
		}
		return "", nil, err
	}
	return path, b, nil
}

// loadFixtureTarget reads a target with ReadFixture.
func loadFixtureTarget(path string) (*Target, error) {
	p, data, err := ReadFixture(path)
	if err != nil {
		return nil, fmt.Errorf("harness: target: %w", err)
	}
	return parseTarget(p, data)
}

// Resolve makes a fixture path absolute against the module root.
func Resolve(path string) (string, error) {
	if filepath.IsAbs(path) {
		return path, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, path), nil
}

// The environment variables that override a target file, so that a
// pipeline points one file at its own vCenter and storage account without
// editing it. Secrets travel only through the environment: the password and
// the connection string are never copied into the Target, which names the
// variable to read instead (PasswordEnv, ConnectionStringEnv).
const (
	EnvVCenterURL        = "V2A_VCENTER_URL"               // vsphere.url (and vsphere.mode url)
	EnvVCenterUsername   = "V2A_VCENTER_USERNAME"          // vsphere.username
	EnvVCenterPassword   = "V2A_VCENTER_PASSWORD"          // the password (vsphere.passwordEnv becomes this name)
	EnvVCenterThumbprint = "V2A_VCENTER_THUMBPRINT"        // vsphere.thumbprint (SHA-1, "AB:CD:…")
	EnvStorage           = "V2A_STORAGE_CONNECTION_STRING" // storage.mode external, storage.connectionStringEnv this name
	EnvAzureMode         = "V2A_AZURE_MODE"                // azure.mode: sim (drills without a subscription) or arm
)

// EnvOverrides lists the variables ApplyEnv reads, in the order it applies
// them.
var EnvOverrides = []string{EnvVCenterURL, EnvVCenterUsername, EnvVCenterPassword, EnvVCenterThumbprint, EnvStorage, EnvAzureMode}

// ApplyEnv overrides the target with the variables of EnvOverrides that
// getenv reports set (non-empty), then validates it again. It returns the
// names it applied, for the run's report (names only: never a value).
//
// V2A_VCENTER_URL switches vsphere.mode to url (the in-process simulator
// has no URL to replace); a thumbprint from the environment replaces the
// file's caFile and insecure (the pipeline says how to trust its vCenter).
// The password and the connection string stay in the environment: the
// target records which variable holds them. V2A_AZURE_MODE=sim lands test
// failovers in the simulated fabric: the drill of a target whose azure.mode
// is arm, run where there is no subscription; the certificate says so.
//
// `v2a run --target` and `v2a certify` apply it; a scenario's default
// target does not (a developer's shell must not change a golden).
func (t *Target) ApplyEnv(getenv func(string) string) ([]string, error) {
	var applied []string
	set := func(name string) (string, bool) {
		v := strings.TrimSpace(getenv(name))
		if v != "" {
			applied = append(applied, name)
		}
		return v, v != ""
	}
	if v, ok := set(EnvVCenterURL); ok {
		t.VSphere.Mode, t.VSphere.URL = "url", v
	}
	if v, ok := set(EnvVCenterUsername); ok {
		t.VSphere.Username = v
	}
	if _, ok := set(EnvVCenterPassword); ok {
		t.VSphere.PasswordEnv = EnvVCenterPassword
	}
	if v, ok := set(EnvVCenterThumbprint); ok {
		t.VSphere.Thumbprint, t.VSphere.CAFile, t.VSphere.Insecure = v, "", false
	}
	if _, ok := set(EnvStorage); ok {
		t.Storage.Mode, t.Storage.ConnectionStringEnv = "external", EnvStorage
	}
	if v, ok := set(EnvAzureMode); ok {
		switch v {
		case "sim", "arm":
			t.Azure.Mode = v
		default:
			return applied, fmt.Errorf("harness: target %s: %s=%q: want sim or arm", t.File, EnvAzureMode, v)
		}
	}
	if err := t.Validate(); err != nil {
		if len(applied) > 0 {
			return applied, fmt.Errorf("%w (after the environment's %s)", err, strings.Join(applied, ", "))
		}
		return applied, err
	}
	return applied, nil
}
