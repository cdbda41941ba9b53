// The fault command and its kinds: network, host, change-log and storage faults.

package harness

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/proto"

	simnet "github.com/v2a-dr/v2a/sim/net"
)

// fault changes the network or crashes hosts:
//
//	fault partition a=X b=Y          X, Y: hosts or sites
//	fault clog [path=internet] [from=onprem] [to=azure] factor=N for=DURATION
//	fault loss [path=lan] [from=onprem] [to=onprem] p=0.1
//	fault jitter [path=lan] [from=onprem] [to=onprem] max=20ms
//	fault duplicate [path=lan] [from=onprem] [to=onprem] p=0.05
//	fault reorder [path=lan] [from=onprem] [to=onprem] p=0.1 window=10ms
//	fault corrupt-blob vm=X [container=cache]
//	fault delete-snapshot vm=X [point=ID|oldest]
//	fault vpn state=up|down|absent
//	fault crash host=X [what=agent|machine]
//	                                 a protected machine: what=agent (the
//	                                 default) crashes its agent process (the
//	                                 filter driver, its memory and the page
//	                                 cache live on); what=machine crashes the
//	                                 machine (as machine-crash: the filter's
//	                                 memory is lost, its bitmap drives a
//	                                 resync). Any other host: the host, whose
//	                                 disk loses what was not fsynced
//	                                 (host=recovery: the failover
//	                                 orchestrator, whose jobs and records
//	                                 are reloaded from storage on restart)
//	fault restart host=X [what=agent|machine]
//	fault lose-cache host=ps01       the process server crashes and comes back
//	                                 on a new, empty cache disk
//	fault heal
//
// Any fault can be armed to fire later: on=EVENT [onhost=H] injects it right
// after the first trace line (of H) that contains EVENT, '-' read as a
// space; corrupt-blob is always armed, on the machine's next upload. An
// armed fault must do what it says (armedfault.go): one whose trigger came
// but whose injection failed fails the run, at the command during which it
// fired; one still armed when the script ends fails it too, naming the
// line that armed it — unless armed with unfired=ok, for a fault that may
// legitimately not fire. `fault heal` does not disarm armed faults.
//
// A fault that finds nothing to damage is an error, not a silent pass
// (delete-snapshot of a point without snapshots, corrupt-blob with no item,
// tear-hrl or corrupt-hrl of a machine without a change log). One
// exception: corrupt-hrl of a log with no record on stable media is a
// documented no-op that counts as injected (hrlFault: swarm seed 317).
func (r *Runner) fault(a argMap) (string, error) {
	e := r.Env
	if len(a) == 0 {
		return "", fmt.Errorf("fault: say which: partition, clog, loss, vpn, crash, restart or heal")
	}
	// The fault is the one bare word (a key without a value). Two are
	// refused: ranging over the arguments would pick one at random.
	var bare []string
	for _, k := range sortedKeys(a) {
		if len(a[k]) == 0 {
			bare = append(bare, k)
		}
	}
	if len(bare) != 1 {
		return "", fmt.Errorf("fault: name exactly one fault, got %d (%s)", len(bare), strings.Join(bare, ", "))
	}
	kind := bare[0]
	// Values first, also for a fault armed to fire later: a bad one is
	// refused now, not found when the trigger fires.
	if err := checkFaultValues(kind, a); err != nil {
		return "", err
	}
	if on := a.str("on", ""); on != "" {
		// A fault triggered by an event: it happens right after the first
		// event whose trace line (from onhost, default host=) contains on,
		// with '-' read as a space — e.g. on=group-tag onhost=ord-db.
		who := a.str("onhost", a.str("host", ""))
		if who != "" {
			who += ":"
		}
		rest := argMap{}
		for k, v := range a {
			if !faultTriggerKeys[k] {
				rest[k] = v
			}
		}
		text := strings.ReplaceAll(on, "-", " ")
		of := strings.TrimSuffix(who, ":")
		trigger := fmt.Sprintf("%q", text)
		if of != "" {
			trigger += " of " + of
		}
		f := r.arm(a, trigger)
		e.Trace.OnLine(who, text, func() {
			r.triggered(f)
			e.Sim.After(0, "fault/"+kind, func() {
				r.inject(f, func() error {
					_, err := r.fault(rest)
					if err != nil {
						e.Trace.Add(e.Sim.Elapsed(), "harness", "error", "triggered fault: "+err.Error())
					}
					return err
				})
			})
		})
		return fmt.Sprintf("armed: %s after the next %q of %s\n", kind, text, of), nil
	}
	var msg string
	switch kind {
	case "partition":
		x, err := a.need("a")
		if err != nil {
			return "", err
		}
		y, err := a.need("b")
		if err != nil {
			return "", err
		}
		e.Net.Partition(x, y)
		msg = fmt.Sprintf("partition %s | %s", x, y)
	case "heal":
		e.Net.Heal()
		msg = "healed: partitions and clogs removed"
	case "clog", "loss":
		p := simnet.Path(a.str("path", map[string]string{"clog": "internet", "loss": "lan"}[kind]))
		from, to := simnet.Site(a.str("from", "onprem")), simnet.Site(a.str("to", map[string]string{"clog": "azure", "loss": "onprem"}[kind]))
		if kind == "clog" {
			f, err := a.intIn("factor", 10, 1, 1<<20)
			if err != nil {
				return "", err
			}
			d, err := a.durMin("for", time.Hour, 1)
			if err != nil {
				return "", err
			}
			if err := e.Net.Clog(p, from, to, f, e.Sim.Now().Add(d)); err != nil {
				return "", err
			}
			msg = fmt.Sprintf("clog %s %s->%s bandwidth/%d for %s", p, from, to, f, d)
		} else {
			prob, err := a.floatIn("p", 0.1, 0, 1)
			if err != nil {
				return "", err
			}
			lp, ok := e.Net.Link(p, from, to)
			if !ok {
				return "", fmt.Errorf("fault loss: no %s link %s->%s", p, from, to)
			}
			lp.Loss = prob
			if err := e.Net.SetLink(p, from, to, lp); err != nil {
				return "", err
			}
			msg = fmt.Sprintf("loss %s %s->%s p=%g", p, from, to, prob)
		}
	case "jitter", "duplicate", "reorder":
		m, err := r.linkFault(kind, a)
		if err != nil {
			return "", err
		}
		msg = m
	case "vpn":
		st, err := a.need("state")
		if err != nil {
			return "", err
		}
		m := map[string]simnet.VPNState{"up": simnet.VPNUp, "down": simnet.VPNDown, "absent": simnet.VPNAbsent}
		s, ok := m[st]
		if !ok {
			return "", fmt.Errorf("fault vpn: state=%s, want up, down or absent", st)
		}
		e.Net.SetVPN(s)
		msg = "vpn " + st
	case "machine-crash", "machine-restart":
		d, err := r.deployment()
		if err != nil {
			return "", err
		}
		vm, err := a.need("vm")
		if err != nil {
			return "", err
		}
		if kind == "machine-crash" {
			err = d.MachineCrash(vm)
		} else {
			err = d.MachineRestart(vm)
		}
		if err != nil {
			return "", err
		}
		msg = kind + " " + vm
	case "corrupt-blob":
		return r.corruptBlob(a)
	case "delete-snapshot":
		return r.deleteSnapshot(a)
	case "tear-hrl", "corrupt-hrl":
		out, err := r.hrlFault(kind, a)
		if err != nil {
			return "", err
		}
		e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", strings.TrimSpace(out))
		return out, nil
	case "lose-cache":
		d, err := r.deployment()
		if err != nil {
			return "", err
		}
		h, err := a.need("host")
		if err != nil {
			return "", err
		}
		if h != HostProcessServer {
			return "", fmt.Errorf("fault lose-cache: host=%s has no cache disk (want host=%s)", h, HostProcessServer)
		}
		if err := d.LoseCache(); err != nil {
			return "", err
		}
		msg = "lose-cache " + h + ": restarted on an empty cache disk"
	case "crash", "restart":
		h, err := a.need("host")
		if err != nil {
			return "", err
		}
		if _, ok := e.Net.Host(h); !ok {
			return "", fmt.Errorf("fault %s: no host %q", kind, h)
		}
		what := a.str("what", "")
		guest := e.Deployment != nil && e.Deployment.guests[h] != nil
		switch {
		case what != "" && what != "agent" && what != "machine":
			return "", fmt.Errorf("fault %s: what=%s, want agent or machine", kind, what)
		case what != "" && !guest:
			return "", fmt.Errorf("fault %s: what=%s: %s is not a guest machine (what= says which part of one)", kind, what, h)
		case what == "machine" && kind == "crash":
			if err := e.Deployment.MachineCrash(h); err != nil {
				return "", err
			}
			msg = "machine-crash " + h
		case what == "machine":
			if err := e.Deployment.MachineRestart(h); err != nil {
				return "", err
			}
			msg = "machine-restart " + h
		}
		if msg != "" {
			break
		}
		if kind == "crash" && guest && !e.Sim.Down(h) {
			e.Deployment.noteCrash(h, false)
		}
		if kind == "crash" {
			if h == HostConfigServer && e.Deployment != nil && !e.Sim.Down(h) {
				e.Deployment.noteConfigCrash()
			}
			if h == HostAzurePS && e.Deployment != nil && !e.Sim.Down(h) {
				e.Deployment.fb.noteRelayCrash()
			}
			e.Sim.Crash(h)
		} else {
			e.Sim.Restart(h)
		}
		msg = kind + " " + h
	default:
		return "", fmt.Errorf("fault: unknown fault %q (want partition, clog, loss, jitter, duplicate, reorder, vpn, crash, restart, lose-cache, machine-crash, machine-restart, tear-hrl, corrupt-hrl, corrupt-blob, delete-snapshot or heal)", kind)
	}
	e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", msg)
	return msg + "\n", nil
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
	if kind == "corrupt-hrl" {
		// The newest segment long enough to corrupt inside: a segment
		// just opened (rotated or trimmed to nothing) holds no record yet.
		for i := len(files) - 1; i >= 0 && st.Size() < 64; i-- {
			if s2, err := fs.Stat(files[i]); err == nil && s2.Size() >= 64 {
				last, st = files[i], s2
			}
		}
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
			// Nothing on stable media to damage: the filter keeps its
			// changes in memory until a drain, and what was drained and
			// acknowledged is trimmed, so a machine that crashes before
			// its first drain, or with everything acknowledged, leaves
			// empty segments (swarm seed 317). A byte flipped in the one
			// short record there might be would look like a torn tail,
			// which is tear-hrl's. The fault is a no-op, and says so.
			var total int64
			for _, f := range files {
				if s2, err := fs.Stat(f); err == nil {
					total += s2.Size()
				}
			}
			msg := fmt.Sprintf("corrupt-hrl left %s's change log as it was: no segment of 64 bytes or more (%d bytes in %d segment(s)), nothing to corrupt inside", vm, total, len(files))
			return msg + "\n", nil
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
		which := "last segment"
		if last != files[len(files)-1] {
			which = "newest segment with records"
		}
		return fmt.Sprintf("corrupted %s's change log: flipped a byte a third of the way into its %s\n", vm, which), nil
	}
}

// linkFault sets one direction of a path to jitter, duplicate or reorder
// its transfers:
//
//	fault jitter [path=lan] [from=onprem] [to=onprem] max=20ms
//	fault duplicate [path=lan] [from=onprem] [to=onprem] p=0.05
//	fault reorder [path=lan] [from=onprem] [to=onprem] p=0.1 window=10ms
//
// Each replaces only its own parameter of the link (max=0 or p=0 turns it
// off); `fault heal` does not undo them (it removes partitions and clogs).
func (r *Runner) linkFault(kind string, a argMap) (string, error) {
	msg, err := r.setLinkFault(kind, a)
	if err != nil && !strings.HasPrefix(err.Error(), "fault ") {
		err = fmt.Errorf("fault %s: %w", kind, err)
	}
	return msg, err
}

func (r *Runner) setLinkFault(kind string, a argMap) (string, error) {
	p := simnet.Path(a.str("path", "lan"))
	from, to := simnet.Site(a.str("from", "onprem")), simnet.Site(a.str("to", "onprem"))
	lp, ok := r.Env.Net.Link(p, from, to)
	if !ok {
		return "", fmt.Errorf("fault %s: no %s link %s->%s (paths: lan, internet, vpn; sites: onprem, azure)", kind, p, from, to)
	}
	switch kind {
	case "jitter":
		d, err := a.durMin("max", 20*time.Millisecond, 0)
		if err != nil {
			return "", err
		}
		lp.Jitter = d
	case "duplicate":
		prob, err := a.floatIn("p", 0.05, 0, 1)
		if err != nil {
			return "", err
		}
		lp.Dup = prob
	case "reorder":
		prob, err := a.floatIn("p", 0.1, 0, 1)
		if err != nil {
			return "", err
		}
		w, err := a.durMin("window", 10*time.Millisecond, 0)
		if err != nil {
			return "", err
		}
		lp.Reorder, lp.ReorderWindow = prob, w
	}
	if err := r.Env.Net.SetLink(p, from, to, lp); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s %s->%s%s", kind, p, from, to, linkExtras(lp)), nil
}

// linkExtras describes a link's jitter, duplication and reordering, ""
// when it has none.
func linkExtras(lp simnet.LinkParams) string {
	var parts []string
	if lp.Jitter > 0 {
		parts = append(parts, "jitter="+lp.Jitter.String())
	}
	if lp.Dup > 0 {
		parts = append(parts, fmt.Sprintf("dup=%g", lp.Dup))
	}
	if lp.Reorder > 0 {
		parts = append(parts, fmt.Sprintf("reorder=%g/%s", lp.Reorder, lp.ReorderWindow))
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}

// corruptBlob arms a corruption of a machine's next stream item uploaded
// to the cache container:
//
//	fault corrupt-blob vm=NAME [container=cache]
//
// Right after the process server's upload of the machine's next item
// completes — before the Azure side hears of it — one bit of the sealed
// blob's ciphertext is flipped. Arming on the upload (rather than picking a
// blob now) makes the fault hit an item the Azure side has not fetched yet,
// the same one in every run. The bit is chosen the way an attacker who can
// write to storage would choose it (see tamperDecodable): the item still
// decompresses and decodes, with different write data, so that only the
// AES-GCM tag stands between it and the replica.
func (r *Runner) corruptBlob(a argMap) (string, error) {
	d, err := r.deployment()
	if err != nil {
		return "", err
	}
	vm, err := a.need("vm")
	if err != nil {
		return "", err
	}
	if _, ok := r.Env.Machines[vm]; !ok {
		return "", fmt.Errorf("fault corrupt-blob: no machine %q", vm)
	}
	if c := a.str("container", proto.ContainerCache); c != proto.ContainerCache {
		return "", fmt.Errorf("fault corrupt-blob: container=%s: only the cache container's items can be corrupted", c)
	}
	e := r.Env
	f := r.arm(a, fmt.Sprintf("%q of %s", "done upload "+vm+"/", HostProcessServer))
	e.Trace.OnLine(HostProcessServer, "done upload "+vm+"/", func() {
		r.triggered(f)
		e.Sim.After(0, "fault/corrupt-blob", func() {
			r.inject(f, func() error {
				msg, err := d.corruptNewestItem(vm)
				if err != nil {
					e.Trace.Add(e.Sim.Elapsed(), "harness", "error", "fault corrupt-blob: "+err.Error())
					return err // the message names the fault
				}
				e.Trace.Add(e.Sim.Elapsed(), "harness", "fault", msg)
				return nil
			})
		})
	})
	return fmt.Sprintf("armed: corrupt-blob of %s's next item uploaded to the cache container\n", vm), nil
}

// deleteSnapshot deletes the replica snapshots behind one recovery point,
// as an operator or a storage fault might:
//
//	fault delete-snapshot vm=NAME [point=ID|oldest]
func (r *Runner) deleteSnapshot(a argMap) (string, error) {
	d, vm, err := r.deployedMachine("fault delete-snapshot", a)
	if err != nil {
		return "", err
	}
	// One catalog read (storage request counts are part of some outputs).
	cat, err := d.Catalog(vm)
	if errors.Is(err, blob.ErrNotFound) {
		return "", fmt.Errorf("fault delete-snapshot: %s", strings.TrimSuffix(noReplica(d, vm), "\n"))
	}
	if err != nil {
		return "", fmt.Errorf("fault delete-snapshot: %w", err)
	}
	if len(cat.Points) == 0 {
		return "", fmt.Errorf("fault delete-snapshot: %s has no recovery points", vm)
	}
	want := a.str("point", "oldest")
	pts := cat.Points
	sort.Slice(pts, func(i, j int) bool { return pts[i].Seq < pts[j].Seq })
	i := 0
	if want != "oldest" {
		i = -1
		for j, p := range pts {
			if p.ID == want {
				i = j
			}
		}
		if i < 0 {
			return "", fmt.Errorf("fault delete-snapshot: %s", d.pointGone(vm, want, len(pts)))
		}
	}
	p := pts[i]
	store, prefix, err := d.e.Storage()
	if err != nil {
		return "", err
	}
	deleted := 0
	for k, s := range p.Snapshots {
		if k >= len(cat.Disks) {
			break
		}
		if err := store.DeleteSnapshot(d.e.ctx, prefix+"replica", cat.Disks[k].Blob, s); err != nil {
			return "", fmt.Errorf("fault delete-snapshot: disk %d of %s: %w", k, vm, err)
		}
		deleted++
	}
	if deleted == 0 {
		// Nothing deleted is no fault injected: say so rather than pass.
		return "", fmt.Errorf("fault delete-snapshot: point %s of %s has no snapshot of a catalogued disk to delete (%d snapshot(s), %d disk(s))", p.ID, vm, len(p.Snapshots), len(cat.Disks))
	}
	msg := fmt.Sprintf("delete-snapshot %s: deleted the %d snapshot(s) of point %s (%s)", vm, deleted, p.ID, p.Kind)
	r.Env.Trace.Add(r.Env.Sim.Elapsed(), "harness", "fault", msg)
	return msg + "\n", nil
}
