package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/v2a-dr/v2a/cmd/v2a/internal/progress"
	"github.com/v2a-dr/v2a/harness"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	simvs "github.com/v2a-dr/v2a/sim/vsphere"
)

type certifyFlags struct {
	target      string
	report      string
	machines    []string
	destructive bool
	timeout     time.Duration
	seed        uint64
	keep        bool
	progress    string
}

func newCertifyCmd() *cobra.Command {
	var f certifyFlags
	c := &cobra.Command{
		Use:   "certify --target FILE [--report DIR] [--machines a,b] [--destructive] [--timeout D]",
		Short: "Run the DR drill on a target and write JUnit, a drill certificate and an HTML summary",
		Long: `Run the disaster-recovery drill on a target (a vCenter and a storage account,
real or simulated) and certify it: the nightly DR drill.

The drill is a scenario script (written to DIR/drill.scn; 'v2a run
DIR/drill.scn --target FILE' replays it) stepped by the scenario runner with
the commands and property checks every .scn file uses:

  world          discovery: the target's vCenter, its VMs and disks
  deploy         the vault, configuration server, process server, Azure side
  protect, wait  the machines protected (bank workload on each), until
                 protected; then 30 minutes of replication
  check points,schedule
                 every recovery point judged: write order, the workload's
                 invariant, monotonic ids, retention, the policy's schedule
  test-failover  a one-group plan to the latest processed point into an
                 isolated network, with a smoke-test post-action
  check image,isolation,plan-order
                 each booted disk equals its point byte for byte and
                 recovers; no test VM reaches production; plan order
  cleanup, check leftovers
                 the fabric and its IP tables as they were before the test

With --destructive it then fails over for real (sources shut down, image),
commits, brings up the failback infrastructure and the VPN, reprotects to
the original location and fails back (round-trip, path). A check with
nothing to judge fails.

Machines: --machines, each a powered-on VM of the target's inventory;
default the inventory's first 2 powered-on VMs (the certificate says which).

The target file is read as 'v2a run --target' reads it, and these
variables override it (secrets come only from the environment and are never
written to a report):

  V2A_VCENTER_URL         vsphere.url (vsphere.mode becomes url)
  V2A_VCENTER_USERNAME    vsphere.username
  V2A_VCENTER_PASSWORD    the vCenter password
  V2A_VCENTER_THUMBPRINT  vsphere.thumbprint (SHA-1 "AB:CD:…", for a
                          self-signed vCenter; replaces caFile/insecure)
  V2A_STORAGE_CONNECTION_STRING
                          storage.mode external with this connection string
  V2A_AZURE_MODE          azure.mode: sim lands the test failover in the
                          simulated Azure fabric (a drill without a
                          subscription; the certificate and the summary say
                          so), arm in the subscription of the AZURE_*
                          variables

The components run on the simulator's scheduler (virtual time) with
simulated guests; vCenter and storage are reached by URL and connection
string through the same adapters as production.

Reports in DIR (created): junit.xml (one test case per check, a failure
with its evidence for each failed one), certificate.json (target, vCenter
URL without credentials, storage account name, machines, point ids, image
hashes, RTO of the test failover, leftovers, seed, trace hash, v2a version,
start and end), summary.html (one self-contained page), drill.scn and
drill.log (every command's output).

Progress goes to stderr (--progress): bars on a terminal, else a plain
line now and then (drill steps, the running step's virtual time, machines
protected); --progress none leaves stderr to the reason line below.

Exit codes: 0 every check passed; 1 a check failed or the drill did not
finish (timeout), with a one-line reason on stderr; 2 the drill could not be
set up (bad flags, a bad target file or variable, an unknown machine);
130 interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			return runCertify(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	c.Flags().StringVar(&f.target, "target", "", "target file (required), e.g. fixtures/targets/real.yaml")
	c.Flags().StringVar(&f.report, "report", "certify-report", "directory for junit.xml, certificate.json, summary.html, drill.scn and drill.log")
	c.Flags().StringSliceVar(&f.machines, "machines", nil, "machines to protect, comma-separated (default: the inventory's first 2 powered-on VMs)")
	c.Flags().BoolVar(&f.destructive, "destructive", false, "also fail over (shutting the sources down), commit, reprotect and fail back")
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Minute, "wall-clock limit for the drill; past it the drill stops and fails")
	c.Flags().Uint64Var(&f.seed, "seed", 1, "seed of the drill's world (the certificate records it)")
	c.Flags().BoolVar(&f.keep, "keep", false, "leave the drill's containers in the storage account (an audit of its points; default: removed)")
	addProgressFlag(c, &f.progress)
	return c
}

// errDrillFailed marks a drill that ran and did not pass: exit 1.
var errDrillFailed = fmt.Errorf("certify: %w", errChecksFailed)

// certifyRun is one drill: its inputs, what it saw, and its verdict.
type certifyRun struct {
	flags       certifyFlags
	target      *harness.Target
	overrides   []string
	machines    []string
	chosen      string // how the machines were chosen
	script      string
	started     time.Time
	finished    time.Time
	results     []harness.Result
	images      []harness.DrillImage
	facts       harness.DrillFacts
	prefix      string
	interrupted bool
	timedOut    bool
	log         strings.Builder
}

func runCertify(ctx context.Context, w, errw io.Writer, f certifyFlags) error {
	if f.target == "" {
		return errors.New("certify: --target is required")
	}
	mode, err := progress.ParseMode(f.progress)
	if err != nil {
		return fmt.Errorf("certify: --progress: %w", err)
	}
	if f.timeout <= 0 {
		return fmt.Errorf("certify: --timeout %s: want a positive duration", f.timeout)
	}
	t, err := harness.LoadTarget(f.target)
	if err != nil {
		return err
	}
	overrides, err := t.ApplyEnv(os.Getenv)
	if err != nil {
		return err
	}
	invPath, invData, err := harness.ReadFixture(t.Inventory)
	if err != nil {
		return fmt.Errorf("vsphere: load inventory: %w", err)
	}
	inv, err := simvs.Parse(invPath, invData)
	if err != nil {
		return err
	}
	machines, err := harness.DrillMachines(inv, f.machines)
	if err != nil {
		return err
	}
	chosen := "--machines"
	if len(f.machines) == 0 {
		chosen = fmt.Sprintf("default: the first %d powered-on VMs of %s", harness.DrillDefaultMachines, t.Inventory)
	}
	text, err := harness.DrillScript(harness.DrillOptions{Machines: machines, Destructive: f.destructive, Seed: f.seed})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.report, 0o755); err != nil {
		return fmt.Errorf("certify: --report: %w", err)
	}
	scriptPath := filepath.Join(f.report, "drill.scn")
	if err := os.WriteFile(scriptPath, []byte(text), 0o644); err != nil {
		return fmt.Errorf("certify: --report: %w", err)
	}
	s, err := harness.NewScript(scriptPath, []byte(text))
	if err != nil {
		return err
	}
	c := &certifyRun{flags: f, target: t, overrides: overrides, machines: machines, chosen: chosen, script: text, started: time.Now().UTC()}
	pg := progress.New(progress.Options{Mode: mode, Err: errw, Out: w})
	defer pg.Close()
	w = pg.Out()
	fmt.Fprintf(w, "v2a certify: target %s (%s), machines %s (%s), destructive=%t, seed %d\n",
		t.Name, f.target, strings.Join(machines, ","), chosen, f.destructive, f.seed)
	if len(overrides) > 0 {
		fmt.Fprintf(w, "v2a certify: from the environment: %s\n", strings.Join(overrides, ", "))
	}
	if note := azureNote(t, overrides); note != "" {
		fmt.Fprintf(w, "v2a certify: %s\n", note)
	}

	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	seed := f.seed
	r := &harness.Runner{Seed: &seed, Target: t, Ctx: dctx, Script: scriptPath}
	if mode != progress.None {
		r.OnProgress = pg.Script(progress.ScriptOptions{Steps: "drill steps", Protected: machines}).Observe
	}
	defer r.Close()
	steps := 0
	r.RunScript(s, func(d harness.Directive, out string) {
		steps++
		cmdline := d.Cmd
		for _, a := range d.Args {
			cmdline += " " + a.String()
		}
		block := fmt.Sprintf("\n> %s\n%s", cmdline, indent(out))
		c.log.WriteString(block)
		fmt.Fprint(w, block)
		if d.Cmd == "world" && f.keep {
			r.KeepStorage()
		}
		if d.Cmd == "check" && checksImages(d) && r.Env != nil {
			// The booted VMs exist only until the cleanup: hash them now.
			imgs, err := r.FailoverImages()
			if err != nil {
				r.Tally.Add(harness.Result{Check: "certify", Subject: "images", Verdict: harness.Unknown, Evidence: "hashing the booted disks: " + err.Error()})
				return
			}
			c.images = append(c.images, imgs...)
		}
	})
	c.timedOut = dctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	c.interrupted = ctx.Err() != nil
	r.Tally.Add(c.completeness(s, steps, r.Tally.Results)...)
	if r.Env != nil && !r.SetupFailed {
		c.prefix = r.StoragePrefix()
		// A drill cut short has only some of its facts; the steps check
		// already failed it.
		if c.facts, err = r.DrillFacts(machines); err != nil && steps == len(s.Directives) {
			r.Tally.Add(harness.Result{Check: "certify", Subject: "facts", Verdict: harness.Unknown, Evidence: err.Error()})
		}
	}
	c.results = r.Tally.Results
	c.finished = time.Now().UTC()
	if c.facts.TraceSHA256 == "" && r.Env != nil {
		c.facts.TraceSHA256 = r.Env.Trace.Sum()
	}
	if err := c.writeReports(); err != nil {
		return err
	}
	failed := c.failed()
	fmt.Fprintf(w, "\n%s\ntrace-sha256: %s\nreports: %s\n", r.Tally.Line(), orNone(c.facts.TraceSHA256), f.report)
	switch {
	case c.interrupted:
		return errInterrupted
	case len(failed) > 0:
		return fmt.Errorf("%w: %s", errDrillFailed, c.reason())
	}
	return nil
}

// checksImages: the directive is a check with the image check in it.
func checksImages(d harness.Directive) bool {
	for _, a := range d.Args {
		if a.Key == "what" && slices.Contains(a.Vals, "image") {
			return true
		}
	}
	return false
}

// completeness judges the drill itself: it ran every step of its script,
// each check it asks for judged something (the check command already
// fails a check with nothing to judge; this catches a step that never
// ran), and every machine was booted and hashed by the test failover.
func (c *certifyRun) completeness(s *harness.Script, steps int, results []harness.Result) []harness.Result {
	var out []harness.Result
	ran := harness.Result{Check: "drill", Subject: "steps", Verdict: harness.OK, Detail: fmt.Sprintf("%d of %d steps ran", steps, len(s.Directives))}
	switch {
	case c.timedOut:
		ran.Verdict, ran.Evidence = harness.Unknown, fmt.Sprintf("timed out after %s (--timeout) at step %d of %d", c.flags.timeout, steps, len(s.Directives))
	case c.interrupted:
		ran.Verdict, ran.Evidence = harness.Unknown, fmt.Sprintf("interrupted at step %d of %d", steps, len(s.Directives))
	case steps != len(s.Directives):
		ran.Verdict, ran.Evidence = harness.Unknown, fmt.Sprintf("stopped after step %d of %d (see the script failure)", steps, len(s.Directives))
	}
	out = append(out, ran)
	want := []string{"write-order", "invariant", "schedule", "image", "isolation", "plan-order", "leftovers"}
	if c.flags.destructive {
		want = append(want, "round-trip", "path")
	}
	var missing []string
	for _, k := range want {
		if !slices.ContainsFunc(results, func(r harness.Result) bool { return r.Check == k }) {
			missing = append(missing, k)
		}
	}
	cov := harness.Result{Check: "drill", Subject: "coverage", Verdict: harness.OK, Detail: "judged by " + strings.Join(want, ", ")}
	if len(missing) > 0 {
		cov.Verdict, cov.Evidence = harness.Unknown, "no result from "+strings.Join(missing, ", ")
	}
	out = append(out, cov)
	booted := map[string]bool{}
	for _, im := range c.images {
		if strings.HasSuffix(im.VM, "-test") {
			booted[im.Source] = true
		}
	}
	var notBooted []string
	for _, m := range c.machines {
		if !booted[m] {
			notBooted = append(notBooted, m)
		}
	}
	img := harness.Result{Check: "drill", Subject: "test-failover", Verdict: harness.OK, Detail: fmt.Sprintf("%d machines booted and hashed", len(c.machines))}
	if len(notBooted) > 0 {
		img.Verdict, img.Evidence = harness.Unknown, "not booted (or not hashed) by the test failover: "+strings.Join(notBooted, ", ")
	}
	return append(out, img)
}

func (c *certifyRun) failed() []harness.Result {
	var out []harness.Result
	for _, r := range c.results {
		if r.Verdict != harness.OK {
			out = append(out, r)
		}
	}
	return out
}

// reason is the one line that says why the drill did not pass.
func (c *certifyRun) reason() string {
	f := c.failed()
	if len(f) == 0 {
		return ""
	}
	first := f[0]
	ev := first.Evidence
	if i := strings.IndexByte(ev, '\n'); i >= 0 {
		ev = ev[:i]
	}
	return fmt.Sprintf("%d of %d checks failed; first: %s %s %s: %s", len(f), len(c.results), first.Check, first.Subject, first.Verdict, ev)
}

// azureNote says where the test failover lands when that is not the
// target file's own choice.
func azureNote(t *harness.Target, overrides []string) string {
	mode := t.Azure.Mode
	if mode == "" {
		mode = "sim"
	}
	if mode == "sim" {
		s := "azure.mode sim: the test failover lands in the simulated Azure fabric (sim/fabric), not in a subscription"
		if slices.Contains(overrides, harness.EnvAzureMode) {
			s += " (" + harness.EnvAzureMode + "=sim)"
		}
		return s
	}
	return ""
}

// safeURL is a URL with no credentials, query or fragment.
func safeURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// storageAccount is the account name of a connection string (never its
// key), or "" when there is none.
func storageAccount(conn string) string {
	if name := azblob.ConnectionStringField(conn, "AccountName"); name != "" {
		return name
	}
	if u, err := url.Parse(azblob.ConnectionStringField(conn, "BlobEndpoint")); err == nil {
		return u.Host
	}
	return ""
}

// buildVersion is the module version and VCS commit the binary was built
// from, as the Go toolchain recorded them.
func buildVersion() (version, commit string) {
	version, commit = "(unknown)", "(unknown)"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				commit += "+modified"
			}
		}
	}
	return
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
