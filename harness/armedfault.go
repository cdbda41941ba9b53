// Armed faults and their outcomes: a fault that could not be injected, or
// never fired, fails the run.

package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/sim/sched"
)

// A fault armed to fire later (`fault KIND ... on=EVENT`, and every
// `fault corrupt-blob`, which is armed on the machine's next upload) has
// one of these outcomes, and the Runner keeps each with the script line
// that armed it. The rule, so that a scenario never passes having tested
// nothing it claims to:
//
//   - fired: it was injected when its trigger came. It passes.
//   - failed: its trigger came and the injection returned an error (a
//     corrupt-blob that found no item, a crash of a host that is gone).
//     The command during which it fired prints `error: fault ... failed:
//     WHY`, and the run fails — whatever the expected output recorded: a
//     golden cannot bless it.
//   - never fired: the script ended with the fault still armed (or
//     triggered, but not yet injected). The run fails, naming the fault's
//     line — unless the fault was armed with `unfired=ok`, which says it
//     may legitimately not fire.
//
// Only the end of the script judges a fault that never fired: `fault heal`
// removes partitions and clogs, not armed faults, which stay armed across
// it.
type armedFault struct {
	pos  string // FILE:LINE of the fault command
	text string // the fault as written, without its trigger keys
	// on is what it waits for, in order: an on= fault that is a
	// corrupt-blob waits for its event, then for the upload.
	on       []string
	optional bool // unfired=ok
	state    faultState
	at       time.Duration // virtual time it fired (triggered, fired or failed)
	err      error         // why it failed
	reported bool          // a failure was printed by the command it fired in
}

type faultState int

const (
	faultArmed     faultState = iota // waiting for its trigger
	faultTriggered                   // the trigger came; the injection is scheduled
	faultFired                       // injected
	faultFailed                      // the injection failed: err
)

// faultTriggerKeys are the keys that arm a fault rather than describe it.
var faultTriggerKeys = map[string]bool{"on": true, "onhost": true, "unfired": true}

// describe names the fault, its line and its triggers: `fault crash
// host=ord-db (line 68) armed on "group tag" of ord-db`.
func (f *armedFault) describe() string {
	line := f.pos
	if i := strings.LastIndexByte(line, ':'); i >= 0 {
		line = line[i+1:]
	}
	return fmt.Sprintf("%s (line %s) armed on %s", f.text, line, strings.Join(f.on, ", then on "))
}

// failure is the message of a fault that failed or never fired, "" for
// one that passes.
func (f *armedFault) failure() string {
	switch {
	case f.state == faultFailed:
		return fmt.Sprintf("%s fired at %s and failed: %v", f.describe(), sched.FormatElapsed(f.at), f.err)
	case f.optional || f.state == faultFired:
		return ""
	case f.state == faultTriggered:
		return fmt.Sprintf("%s fired at %s, but the script ended before it was injected", f.describe(), sched.FormatElapsed(f.at))
	}
	return f.describe() + " never fired (say unfired=ok if it need not)"
}

// arm records a fault armed on trigger, from the command being run — or,
// when a triggered fault arms again (an on= corrupt-blob, which then waits
// for the upload), adds the trigger to that fault's record.
func (r *Runner) arm(a argMap, trigger string) *armedFault {
	if f := r.injecting; f != nil {
		f.on = append(f.on, trigger)
		f.state = faultArmed
		return f
	}
	text := "fault"
	for _, arg := range r.cur.Args {
		if !faultTriggerKeys[arg.Key] {
			text += " " + arg.String()
		}
	}
	f := &armedFault{pos: r.cur.Pos, text: text, on: []string{trigger}, optional: a.str("unfired", "fail") == "ok"}
	r.faults = append(r.faults, f)
	return f
}

// triggered marks f's trigger as come; the caller schedules the injection.
func (r *Runner) triggered(f *armedFault) {
	f.state, f.at = faultTriggered, r.Env.Sim.Elapsed()
}

// inject runs a triggered fault's injection and records its outcome: an
// error fails it; success fires it, unless the injection armed it again.
func (r *Runner) inject(f *armedFault, do func() error) {
	prev := r.injecting
	r.injecting = f
	err := do()
	r.injecting = prev
	f.at = r.Env.Sim.Elapsed()
	switch {
	case err != nil:
		f.state, f.err = faultFailed, err
	case f.state == faultTriggered:
		f.state = faultFired
	}
}

// takeFailedFaults returns, once each, the faults that failed since the
// last call: the command during which they fired reports them.
func (r *Runner) takeFailedFaults() []*armedFault {
	var out []*armedFault
	for _, f := range r.faults {
		if f.state == faultFailed && !f.reported {
			f.reported = true
			out = append(out, f)
		}
	}
	return out
}

// Finish judges what only the end of a script can: every fault still armed
// (or triggered but not yet injected) fails the run, as a "script" failure
// on the line that armed it, unless it was armed with unfired=ok. RunScript
// and Verdict call it (it counts once); a run that was interrupted, or
// could not be set up, is not judged.
func (r *Runner) Finish() {
	if r.finished || r.interrupted() || r.SetupFailed {
		return
	}
	r.finished = true
	for _, f := range r.faults {
		if f.state == faultFailed && f.reported {
			continue // counted by the command it fired in
		}
		if msg := f.failure(); msg != "" {
			r.Tally.Add(Result{Check: "script", Subject: f.pos, Verdict: Illegal, Evidence: r.clean("error: " + msg)})
		}
	}
}
