package harness

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/sched"
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
	d, err := r.Env.Deploy(DeployOptions{Passphrase: a.str("passphrase", ""), CacheCapBytes: cache, AgentDataBytes: data, AgentMetaRecs: meta, AgentDrain: drain})
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

// hrlFault damages a crashed machine's change log on disk:
//
//	fault tear-hrl vm=NAME [bytes=37]     a record half written at the crash
//	fault corrupt-hrl vm=NAME             a flipped byte inside the log
func (r *Runner) hrlFault(kind string, a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if !r.Env.Sim.Down(vm) {
		return "", fmt.Errorf("fault %s: crash the machine first (fault machine-crash vm=%s): a live filter owns its log", kind, vm)
	}
	files, err := d.ChangeLogFiles(vm)
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("fault %s: %s has no change log (%v)", kind, vm, err)
	}
	// The damage is done on the machine's own disk (sim/simfs), and made
	// durable: it is what the crash left on stable media.
	fs := d.disks[vm]
	last := files[len(files)-1]
	st, err := fs.Stat(last)
	if err != nil {
		return "", err
	}
	switch kind {
	case "tear-hrl":
		n, err := a.intIn("bytes", 37, 1, 1<<20)
		if err != nil {
			return "", err
		}
		garbage := make([]byte, n)
		rnd := r.Env.Rand("tear/" + vm)
		for i := range garbage {
			garbage[i] = byte(rnd.Uint32())
		}
		f, err := fs.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "", err
		}
		_, err = f.Write(garbage)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("tore %s's change log: %d bytes of a half-written record at its end\n", vm, n), nil
	default:
		if st.Size() < 64 {
			return "", fmt.Errorf("fault corrupt-hrl: %s's log is too short (%d bytes) to corrupt inside", vm, st.Size())
		}
		f, err := fs.OpenFile(last, os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		at := st.Size() / 3
		b := make([]byte, 1)
		if _, err = f.ReadAt(b, at); err == nil {
			b[0] ^= 0x5a
			if _, err = f.WriteAt(b, at); err == nil {
				err = f.Sync()
			}
		}
		f.Close()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("corrupted %s's change log: flipped a byte a third of the way into its last segment\n", vm), nil
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

func fmtTime(e *Env, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return sched.FormatElapsed(t.Sub(sched.Epoch))
}
