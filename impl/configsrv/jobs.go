package configsrv

import (
	"fmt"
	"time"

	"github.com/v2a-dr/v2a/impl/runtime"
)

// Job kinds.
const (
	JobEnable  = "enable-replication"
	JobResync  = "resync"
	JobDisable = "disable-replication"
	// JobReprotect: Azure -> on-premises (failback replication).
	JobReprotect = "reprotect"
	// JobReprotectAzure: on-premises -> Azure again, after a failback.
	JobReprotectAzure = "reprotect-to-azure"
)

// Job and step statuses.
const (
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobSkipped   = "skipped" // steps only: not needed (e.g. install when an agent is registered)
)

// Step names.
const (
	StepPrerequisites = "check prerequisites"
	StepInstall       = "install mobility service"
	StepRegister      = "register agent"
	StepOrderResync   = "order resync"
	StepReplicate     = "replicate to sync-complete"
	StepStop          = "stop replication"
	StepTargetVM      = "prepare on-premises vm"
	StepAttach        = "attach master target"
	StepResume        = "resume replication in azure"
)

type job struct {
	id      int
	kind    string
	machine string
	status  string
	started time.Time
	ended   time.Time
	reason  string
	steps   []*step
}

type step struct {
	name    string
	status  string
	started time.Time
	ended   time.Time
	detail  string
}

func (s *Server) newJob(ctx runtime.Context, kind, machine string) *job {
	j := &job{id: len(s.jobs) + 1, kind: kind, machine: machine, status: JobRunning, started: ctx.Now()}
	s.jobs = append(s.jobs, j)
	ctx.Log().Info("configsrv: job started", "job", j.id, "kind", kind, "machine", machine)
	return j
}

// stepRun starts (or finds running) the named step.
func (j *job) stepRun(now time.Time, name, detail string) *step {
	if st := j.step(name); st != nil {
		if detail != "" {
			st.detail = detail
		}
		return st
	}
	st := &step{name: name, status: JobRunning, started: now, detail: detail}
	j.steps = append(j.steps, st)
	return st
}

// stepEnd ends the named step (starting it first if needed). An ended step
// keeps its first outcome: late duplicates do not rewrite history.
func (j *job) stepEnd(now time.Time, name, status, detail string) {
	st := j.stepRun(now, name, "")
	if st.status != JobRunning {
		return
	}
	st.status, st.ended = status, now
	if detail != "" {
		st.detail = detail
	}
}

func (j *job) step(name string) *step {
	for _, st := range j.steps {
		if st.name == name {
			return st
		}
	}
	return nil
}

// finish ends j and any step still running with the same outcome.
func (s *Server) finish(ctx runtime.Context, j *job, status, reason string) {
	if j == nil || j.status != JobRunning {
		return
	}
	now := ctx.Now()
	for _, st := range j.steps {
		if st.status == JobRunning {
			st.status, st.ended = status, now
		}
	}
	j.status, j.ended, j.reason = status, now, reason
	ctx.Log().Info("configsrv: job ended", "job", j.id, "kind", j.kind, "machine", j.machine,
		"status", status, "reason", reason)
}

func (j *job) String() string { return fmt.Sprintf("job %d %s %s", j.id, j.kind, j.machine) }
