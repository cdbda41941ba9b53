// Checks of the live disks: write-order and the guest applications' invariants.

package harness

import (
	"fmt"
	"io"
)

// CheckLiveDisks judges every machine's current disks against its history:
// they must be exactly the state after all K acknowledged writes. A failure
// means a write reached a disk without the guest's write path (or the
// oracle itself is wrong).
func (e *Env) CheckLiveDisks() []Result {
	var out []Result
	for _, name := range e.names {
		m := e.Machines[name]
		imgs := make([]io.ReaderAt, m.Disks())
		for i := range imgs {
			imgs[i] = m.Device(i)
		}
		v, err := m.Oracle().Match(imgs, nil)
		r := Result{Check: "write-order", Subject: name}
		switch {
		case err != nil:
			r.Verdict, r.Evidence = Unknown, err.Error()
		case !v.OK():
			r.Verdict, r.Evidence = Illegal, v.Evidence
		case !v.Ks.Contains(m.Oracle().K()):
			r.Verdict = Illegal
			r.Evidence = fmt.Sprintf("live disks match k in %s, but %d writes were acknowledged", v.Ks, m.Oracle().K())
		default:
			r.Verdict, r.Detail = OK, fmt.Sprintf("k=%d", m.Oracle().K())
		}
		out = append(out, r)
	}
	return out
}

// CheckLiveInvariants runs each workload's recovery and invariant on its
// machine's current disks (a live disk is a crash-consistent image).
func (e *Env) CheckLiveInvariants() []Result {
	var out []Result
	for _, name := range e.names {
		wl := e.Workloads.Workload(name)
		if wl == nil {
			continue
		}
		m := e.Machines[name]
		imgs := make([]io.ReaderAt, m.Disks())
		for i := range imgs {
			imgs[i] = m.Device(i)
		}
		rep, err := wl.Check(imgs, false)
		r := Result{Check: "invariant", Subject: name, Verdict: OK, Detail: wl.Name() + " " + rep.Summary}
		if err != nil {
			r.Verdict, r.Evidence = Illegal, err.Error()
		}
		out = append(out, r)
	}
	return out
}
