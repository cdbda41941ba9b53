// The capture check: what each crash of a protected machine cost its
// filter driver.

package harness

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/agent"
	"github.com/v2a-dr/v2a/impl/blockdev"
)

// captureCrash is one crash of a protected machine, as the harness saw it
// happen and the filter come back.
type captureCrash struct {
	vm    string
	whole bool // a machine crash; else the agent process's
	at    string
	// A machine crash: want is the number of distinct 4 KiB blocks the
	// guest wrote since the filter's oldest unacknowledged change (the
	// oracle's writes since the filter's DirtySinceWrite, counted by the
	// harness); got the blocks the reopened filter resynced (-1: it did
	// not resync its bitmap), set when the agent attached it.
	want, got int64
	attached  bool
	// An agent crash: the filter that must survive it; the filter the
	// machine had when the next machine crash came (judged then, or at the
	// check), and whether that one had been reopened after a crash.
	filter   *agent.Filter
	resolved bool
	survivor *agent.Filter
	reopened bool
}

// resolve judges the agent crashes of vm not judged yet against the filter
// the machine has now.
func (d *Deployment) resolve(vm string) {
	g := d.guests[vm]
	for _, c := range d.captureCrashes {
		if c.vm != vm || c.whole || c.resolved {
			continue
		}
		c.resolved = true
		if g != nil && g.filter != nil {
			c.survivor, c.reopened = g.filter, g.filter.Stats().CrashResync
		}
	}
}

// noteCrash records a crash of machine vm (whole: the machine, else its
// agent process) before it happens, with what its filter says now.
func (d *Deployment) noteCrash(vm string, whole bool) {
	if whole {
		if d.machineCrashes == nil {
			d.machineCrashes = map[string][]time.Time{}
		}
		d.machineCrashes[vm] = append(d.machineCrashes[vm], d.e.Sim.Now())
	}
	g := d.guests[vm]
	if g == nil || g.filter == nil {
		return
	}
	fs := g.filter.Stats()
	c := &captureCrash{vm: vm, whole: whole, at: d.e.Sim.Elapsed().String(), got: -1}
	if !whole {
		c.filter = g.filter
		d.captureCrashes = append(d.captureCrashes, c)
		return
	}
	d.resolve(vm)
	if !fs.Bitmap {
		return // no bitmap: nothing to expect of one
	}
	n := fs.CapturedWrites - fs.DirtySinceWrite
	ws := g.m.Oracle().Writes()
	if n < 0 || n > int64(len(ws)) {
		n = int64(len(ws)) + 1 // cannot be: the check says so
	}
	type blk struct {
		disk int
		b    int64
	}
	seen := map[blk]bool{}
	if n <= int64(len(ws)) {
		for _, w := range ws[int64(len(ws))-n:] {
			for b := w.Off / blockdev.BlockSize; b*blockdev.BlockSize < w.Off+int64(w.Len); b++ {
				seen[blk{w.Disk, b}] = true
			}
		}
		c.want = int64(len(seen))
	} else {
		c.want = -2
	}
	d.captureCrashes = append(d.captureCrashes, c)
}

// noteAttach records what a filter the agent installed (after a machine
// crash) resynced.
func (d *Deployment) noteAttach(vm string, f *agent.Filter) {
	for i := len(d.captureCrashes) - 1; i >= 0; i-- {
		c := d.captureCrashes[i]
		if c.vm != vm || !c.whole {
			continue
		}
		if !c.attached {
			c.attached = true
			if fs := f.Stats(); fs.CrashResync {
				c.got = fs.LastResyncBlocks
			}
		}
		return
	}
}

// CheckCapture judges each crash of a protected machine: after an agent
// crash the filter driver lived on (the same one, not reopened, no bitmap
// resync: nothing was lost that needed one); after a machine crash the
// reopened filter resynced exactly the blocks written since its oldest
// unacknowledged change. No crash to judge is Unknown.
func (d *Deployment) CheckCapture() []Result {
	if len(d.captureCrashes) == 0 {
		return []Result{{Check: "capture", Subject: "-", Verdict: Unknown, Evidence: "no crash of a protected machine to judge"}}
	}
	for _, c := range d.captureCrashes {
		d.resolve(c.vm)
	}
	var out []Result
	for _, c := range d.captureCrashes {
		r := Result{Check: "capture", Subject: c.vm + "@" + c.at, Verdict: OK}
		switch {
		case !c.whole:
			r.Detail = "agent crash: the filter lived on with its memory, no resync"
			switch {
			case c.survivor != c.filter:
				r.Verdict, r.Evidence = Illegal, "the filter driver did not survive the agent's crash"
			case c.reopened:
				r.Verdict, r.Evidence = Illegal, "the filter was reopened after a crash"
			}
		case c.want < 0:
			r.Verdict, r.Evidence = Illegal, "the filter's DirtySinceWrite is not among the oracle's writes"
		case !c.attached:
			r.Verdict, r.Evidence = Unknown, "the machine has not restarted its filter yet"
		default:
			r.Detail = fmt.Sprintf("machine crash: %d dirty blocks written since the last drained point, %d resynced", c.want, c.got)
			switch {
			case c.got < 0:
				r.Verdict, r.Evidence = Illegal, "the reopened filter did not resync its bitmap"
			case c.got != c.want:
				r.Verdict, r.Evidence = Illegal, fmt.Sprintf("resynced %d blocks, the guest wrote %d since the last drained point", c.got, c.want)
			}
		}
		out = append(out, r)
	}
	return out
}
