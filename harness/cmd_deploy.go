// Script commands of the deploy family: deploy, policy, protect, install, wait.

package harness

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
)

func (r *Runner) deployment() (*Deployment, error) {
	if r.Env.Deployment == nil {
		return nil, fmt.Errorf("no replication deployed yet: run `deploy` first")
	}
	return r.Env.Deployment, nil
}

// deploy starts the configuration server, process server and Azure side:
//
//	deploy [passphrase=TEXT] [cache=BYTES] [agent-data=BYTES] [agent-meta=RECORDS] [drain=60s]
func (r *Runner) deploy(a argMap) (string, error) {
	cache, err := a.intIn("cache", 0, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	data, err := a.intIn("agent-data", 0, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	meta, err := a.intIn("agent-meta", 0, 0, math.MaxInt64)
	if err != nil {
		return "", err
	}
	drain, err := a.durMin("drain", 0, 0)
	if err != nil {
		return "", err
	}
	csDB := a.str("cs-db", "sqlite")
	if csDB != "sqlite" && csDB != "memory" {
		return "", fmt.Errorf("deploy: cs-db=%q: want sqlite (the default: cs01's state in a database in the world's directory) or memory (forgotten at a restart)", csDB)
	}
	d, err := r.Env.Deploy(DeployOptions{Passphrase: a.str("passphrase", ""), CacheCapBytes: cache, AgentDataBytes: data, AgentMetaRecs: meta, AgentDrain: drain,
		MemoryOnlyConfigServer: csDB == "memory"})
	if err != nil {
		return "", err
	}
	// Let the servers start and discover.
	r.Env.Sim.RunFor(time.Second)
	return fmt.Sprintf("deployed vault %s: configuration server %s, process server %s, Azure %s\n",
		d.opts.VaultID, AddrConfigServer, AddrProcessServer, AddrAzure), nil
}

// policy creates a replication policy:
//
//	policy name=NAME [rpo=60m] [retention=24h] [crash=5m] [app=60m] [compression=s2]
func (r *Runner) policy(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	p := proto.DefaultPolicy()
	if p.Name, err = a.need("name"); err != nil {
		return "", err
	}
	for _, f := range []struct {
		key string
		dst *time.Duration
		min time.Duration // 0: the schedule is off
	}{{"rpo", &p.RPOThreshold, 1}, {"retention", &p.Retention, 1}, {"crash", &p.CrashInterval, 0}, {"app", &p.AppInterval, 0}} {
		if *f.dst, err = a.durMin(f.key, *f.dst, f.min); err != nil {
			return "", err
		}
	}
	p.Compression = a.str("compression", p.Compression)
	if err := d.Request(&proto.CreatePolicy{Policy: p}); err != nil {
		return "", err
	}
	return r.awaitReplies(d, 1)
}

// policies lists the configuration server's replication policies, each
// failback policy marked as such (the configuration server refuses to edit
// one: `policy name=default-failback` says why).
func (r *Runner) policies() (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	st, err := d.csStatus()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, p := range st.Policies {
		fmt.Fprintf(&b, "%-18s rpo=%s retention=%s crash=%s app=%s compression=%s", p.Name, fmtDur(p.RPOThreshold),
			fmtDur(p.Retention), fmtDur(p.CrashInterval), fmtDur(p.AppInterval), p.Compression)
		if base, ok := proto.FailbackOf(p.Name); ok {
			fmt.Fprintf(&b, "  failback policy of %s: fixed, for reprotect only", base)
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

// protect enables replication of machines:
//
//	protect vms=(a,b) [policy=default] [passphrase=TEXT]
//
// passphrase= makes the agent installer on those machines use another
// passphrase than the vault's (to show a refused registration).
func (r *Runner) protect(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vms := a.list("vms")
	if len(vms) == 0 {
		return "", fmt.Errorf("protect: missing vms=(...)")
	}
	if pass := a.str("passphrase", ""); pass != "" {
		for _, vm := range vms {
			d.SetGuestPassphrase(vm, pass)
		}
	}
	for _, vm := range vms {
		if err := d.Request(&proto.EnableReplication{Machine: vm, Policy: a.str("policy", "default")}); err != nil {
			return "", err
		}
	}
	return r.awaitReplies(d, len(vms))
}

// install installs the agent by hand (physical servers):
//
//	install vm=NAME [passphrase=TEXT]
func (r *Runner) install(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if pass := a.str("passphrase", ""); pass != "" {
		d.SetGuestPassphrase(vm, pass)
	}
	if err := d.InstallAgent(vm); err != nil {
		return "", err
	}
	r.Env.Sim.RunFor(10 * time.Second)
	return fmt.Sprintf("agent installed on %s by hand\n", vm), nil
}

// awaitReplies runs the world until n replies came (at most a minute).
func (r *Runner) awaitReplies(d *Deployment, n int) (string, error) {
	var got []proto.Reply
	r.Env.RunUntil(time.Minute, func() bool {
		got = append(got, d.Replies()...)
		return len(got) >= n
	})
	var b strings.Builder
	for _, rp := range got {
		st := "ok"
		if !rp.OK {
			st = "refused: " + rp.Reason
		}
		fmt.Fprintf(&b, "%s %s: %s\n", rp.Request, rp.Subject, st)
	}
	if len(got) < n {
		fmt.Fprintf(&b, "(%d of %d replies within a minute)\n", len(got), n)
	}
	return b.String(), nil
}

// wait runs the world until machines reach a state:
//
//	wait [state=protected] [vms=(a,b)] [timeout=2h]
func (r *Runner) wait(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	want := configsrv.State(a.str("state", string(configsrv.StateProtected)))
	timeout, err := a.durMin("timeout", 2*time.Hour, 1)
	if err != nil {
		return "", err
	}
	vms := a.list("vms")
	if len(vms) == 0 {
		vms = d.protectedMachines()
	}
	start := r.Env.Sim.Elapsed()
	reached := r.Env.RunUntil(timeout, func() bool {
		for _, vm := range vms {
			ms, ok := d.MachineStatus(vm)
			if !ok || ms.State != want {
				return false
			}
		}
		return true
	})
	var b strings.Builder
	if !reached {
		for _, vm := range vms {
			ms, _ := d.MachineStatus(vm)
			if ms.State != want {
				fmt.Fprintf(&b, "%s is %s", vm, ms.State)
				if n := len(ms.History); n > 0 {
					fmt.Fprintf(&b, " (%s)", ms.History[n-1].Reason)
				}
				b.WriteByte('\n')
			}
		}
		return b.String(), fmt.Errorf("wait: not all %s after %s", want, timeout)
	}
	fmt.Fprintf(&b, "%s %s after %s (at %s)\n", strings.Join(vms, ","), want, fmtDur(r.Env.Sim.Elapsed()-start), fmtTime(r.Env, r.Env.Sim.Now()))
	return b.String(), nil
}
