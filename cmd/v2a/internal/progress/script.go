package progress

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/harness"
)

// ScriptOptions configure a Script.
type ScriptOptions struct {
	// Steps names the commands counter (default "commands").
	Steps string
	// Protected, when set, adds a counter of these machines protected
	// (certify: the drill's machines).
	Protected []string
}

// Script shows a scenario run from the runner's reports
// (harness.Runner.OnProgress): the script's commands done of its total;
// the virtual time of the running command toward its target (a `run
// for=`, a `wait` or a job's limit), one counter a command; the initial
// copy (bytes synced of the syncing machines' disks) while any machine
// syncs; and, when asked, machines protected.
type Script struct {
	p    *Progress
	opts ScriptOptions

	steps *Counter

	span      *Counter
	spanKey   string
	spanStart time.Duration
	spanLen   time.Duration

	sync    *Counter
	syncKey string

	protected *Counter
}

// Script starts showing a scenario run.
func (p *Progress) Script(opts ScriptOptions) *Script {
	if opts.Steps == "" {
		opts.Steps = "commands"
	}
	return &Script{p: p, opts: opts}
}

// Observe takes one report; give it to harness.Runner.OnProgress.
func (s *Script) Observe(pr harness.Progress) {
	// The span first: a command's end is reported once, and its span
	// counter ends there before the commands counter moves on.
	s.observeSpan(pr)
	if s.steps == nil {
		s.steps = s.p.Counter(s.opts.Steps, int64(pr.Total))
	}
	s.steps.Set(int64(pr.Done))
	if pr.MachinesKnown {
		s.observeSync(pr.Machines)
		s.observeProtected(pr.Machines)
	}
}

// observeSpan keeps one counter for the running command's clock span.
// A command's first report comes before it starts the clock; the span is
// known from its first report during the command (Runner.ProgressEvery of
// virtual time in): a command that takes less shows no counter.
func (s *Script) observeSpan(pr harness.Progress) {
	key := ""
	if pr.Command != "" && pr.SpanEnd > pr.SpanStart {
		key = fmt.Sprintf("%d@%d", pr.Done, pr.SpanStart)
	}
	if key != s.spanKey && s.span != nil {
		// The span ended: the command finished (pr.Elapsed is where the
		// clock stopped) or started another span.
		s.span.Set(int64(min(pr.Elapsed-s.spanStart, s.spanLen)))
		s.span.Done()
		s.span = nil
	}
	s.spanKey = key
	if key == "" {
		return
	}
	if s.span == nil {
		s.spanStart, s.spanLen = pr.SpanStart, pr.SpanEnd-pr.SpanStart
		s.span = s.p.Counter(pr.Command, int64(s.spanLen), WithUnit(Duration), Transient())
	}
	s.span.Set(int64(pr.Elapsed - s.spanStart))
}

// observeSync keeps one counter for the initial copy of the machines
// syncing together. Its bytes come with the agents' heartbeats (every
// 30 s): until the first, the total is unknown (0).
func (s *Script) observeSync(ms []harness.MachineProgress) {
	var names []string
	var synced, total int64
	for _, m := range ms {
		if m.Syncing() {
			names = append(names, m.Name)
			synced += min(m.SyncedBytes, m.SyncTotalBytes)
			total += m.SyncTotalBytes
		}
	}
	key := strings.Join(names, ",")
	if key != s.syncKey && s.sync != nil {
		s.sync.Done()
		s.sync = nil
	}
	s.syncKey = key
	if key == "" {
		return
	}
	if s.sync == nil {
		s.sync = s.p.Counter("initial copy "+key, total, WithUnit(Bytes), Transient())
	}
	s.sync.SetTotal(total)
	s.sync.Set(synced)
}

func (s *Script) observeProtected(ms []harness.MachineProgress) {
	if len(s.opts.Protected) == 0 {
		return
	}
	if s.protected == nil {
		s.protected = s.p.Counter("machines protected", int64(len(s.opts.Protected)))
	}
	n := 0
	for _, m := range ms {
		for _, want := range s.opts.Protected {
			if m.Name == want && m.Protected() {
				n++
			}
		}
	}
	s.protected.Set(int64(n))
}
