// Package report is the model of a run as an HTML report shows it, and its
// rendering: one self-contained HTML file (inline SVG and CSS, no network,
// no JavaScript) with the world as a diagram, an RPO timeline per machine,
// the recovery points on a time axis, the multi-VM rounds, the failover
// jobs as Gantt bars, and the check results with their evidence.
//
// The model knows nothing of the harness: the harness fills it as the run
// goes (harness.ReportRecorder) and Render draws it. Every time in the
// model is virtual time since the run's epoch (a time.Duration), so that
// the same run gives the same bytes: Render never reads the wall clock and
// emits slices in the order they are given (the filler sorts them).
package report

import "time"

// Run is one run of a scenario.
type Run struct {
	Scenario    string
	Seed        uint64
	TraceSHA256 string
	Reproduce   string        // the command line that reproduces the run
	Elapsed     time.Duration // virtual time the run lasted
	// SampleEvery is the interval of the RPO samples.
	SampleEvery time.Duration

	World    World
	Machines []Machine // sorted by Name
	Groups   []Group   // sorted by Name
	Jobs     []Job     // in the order they started
	Checks   Checks
}

// World is the simulated network: hosts, links, the VPN.
type World struct {
	Hosts []Host // in the network's order
	Links []Link
	VPN   string // as the network describes it ("down", "up ...")
}

// Host is one host of the network.
type Host struct {
	Name   string
	Site   string // "onprem" or "azure"
	Public bool
}

// Link is one directed link between two sites.
type Link struct {
	Path     string // lan, internet, vpn
	From, To string // sites
	Latency  time.Duration
	Mbps     float64 // bandwidth in megabits per second
	Loss     float64 // probability a packet is lost
}

// Machine is one protected machine.
type Machine struct {
	Name   string
	State  string // replication state at the end of the run
	Policy string
	// Threshold is the policy's RPO threshold (an alert above it).
	Threshold time.Duration
	// RPO is the machine's RPO sampled on the virtual clock, as the
	// configuration server measures it (now − newest point), oldest
	// first; a sample with Known false was before its first point.
	RPO []Sample
	// Final is the RPO at the end of the run (the status view's), Known
	// false when there is no point yet; Max is the largest sample.
	Final, Max Sample
	Alerts     []Alert
	// Points are its recovery points, live and gone, oldest first.
	Points []Point
	// Crash and App count the live points by kind (the status view's).
	Crash, App int
}

// Sample is one RPO sample.
type Sample struct {
	At    time.Duration
	RPO   time.Duration
	Known bool
}

// Alert is one raising of an alert.
type Alert struct {
	Name, Detail string
	Raised       time.Duration
	Cleared      time.Duration // 0 while active
	Active       bool
}

// Point is one recovery point.
type Point struct {
	ID   string
	Kind string // "crash" or "app"
	At   time.Duration
	// Gone is why it is no longer live ("retention", "revoked",
	// "snapshot-lost"); "" for a live point.
	Gone string
	// Group is the replication group of a group point; "" for a
	// machine's own.
	Group string
}

// Group is one replication group.
type Group struct {
	Name    string
	State   string
	Master  string
	Members []string
	Points  []Point // the group catalog's points, oldest first
	// Count is the configuration server's count of live group points
	// (the groups view's).
	Count int
	// Rounds, Committed, Revoked are the configuration server's counts
	// (the groups view's); Shown are the rounds drawn (the last ones the
	// server keeps, gathered as the run went).
	Rounds, Committed, Revoked int
	Shown                      []Round
	// HoldMax, HoldP50, HoldP99 are the write holds over every round.
	HoldMax, HoldP50, HoldP99 time.Duration
}

// Round is one multi-VM consistency round.
type Round struct {
	Tag      string
	Kind     string // crash or app
	Outcome  string // committed or revoked
	Reason   string // why it was revoked
	Started  time.Duration
	Reported time.Duration
	Holds    []Hold // per member, sorted by machine
	// Phases are the master's phases of the round in order (none from a
	// master that reports none).
	Phases []Phase
}

// Phase is one phase of a round as its master saw it: Start when it sent
// the phase, End when it left it; OK when every member acknowledged it.
type Phase struct {
	Name       string // begin, prepare, quiesce, commit, resume, revoke
	Start, End time.Duration
	OK         bool
}

// Hold is how long one member held its guest's writes in a round.
type Hold struct {
	Machine string
	Hold    time.Duration // < 0: unknown
}

// Job is a job: an enablement, a failover, a cleanup, a failback...
type Job struct {
	ID      string
	Kind    string // enable, test-failover, failover, test-cleanup, failback, commit, ...
	Subject string // machine or plan
	Status  string
	Start   time.Duration
	End     time.Duration // 0 while running
	// RTO is, for a failover-like job, the time from its request to the
	// end of its last VM's boot; 0 otherwise.
	RTO   time.Duration
	Steps []Step
}

// Step is one step of a job.
type Step struct {
	Name   string
	VM     string
	Group  int // boot group, 0 for none
	Status string
	Start  time.Duration
	End    time.Duration
}

// Checks are the run's check results.
type Checks struct {
	Passed, Failed int
	Results        []Check // in the order they were judged
}

// Check is one check result.
type Check struct {
	Check, Subject, Verdict, Detail, Evidence string
}
