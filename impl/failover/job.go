package failover

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
)

// JobState is a job's state as the portal shows it.
type JobState string

// Job states.
const (
	JobInProgress JobState = "in-progress"
	JobWaiting    JobState = "waiting" // a manual action waits for "ack"
	JobFailed     JobState = "failed"
	JobSucceeded  JobState = "succeeded"
)

// Task states.
const (
	TaskInProgress = "in-progress"
	TaskSucceeded  = "succeeded"
	TaskFailed     = "failed"
	TaskSkipped    = "skipped"
	TaskWaiting    = "waiting"
	TaskWarning    = "warning" // failed, and the job goes on (source shutdown)
)

// ASR error codes a Task may carry.
const (
	CodeVMCreate  = 28031
	CodeNICCreate = 28092
	CodeHydration = 170010
)

// Job is one failover operation, as the portal shows it.
type Job struct {
	ID, Op, Plan   string // Op: proto.Op*; Plan "" for VMs
	State          JobState
	Tasks          []Task
	Errors         []string
	Warnings       []string // what failed without failing the job (source shutdown)
	AllowedActions []string // proto.Action* as they apply
	Requested      time.Time
	Ended          time.Time         // zero until succeeded or failed for good
	Point          map[string]string // machine → chosen point id
	VMs            []string          // the machines, in boot order
}

// Task is one step of a job. Group is the boot group (1-based), 0 for a
// step of no group.
type Task struct {
	Name, VM   string
	Group      int
	State      string
	Start, End time.Time
	Code       int
	Reason     string
}

func (j Job) clone() Job {
	c := j
	c.Tasks = slices.Clone(j.Tasks)
	c.Errors = slices.Clone(j.Errors)
	c.Warnings = slices.Clone(j.Warnings)
	c.AllowedActions = slices.Clone(j.AllowedActions)
	c.Point = maps.Clone(j.Point)
	c.VMs = slices.Clone(j.VMs)
	return c
}

// Task names, in the order a VM meets them.
const (
	TaskPrerequisites = "Prerequisites check"
	TaskShutdown      = "Shut down the source"
	TaskLatest        = "Process pending data (latest)"
	TaskStop          = "Stop replication"
	TaskPoint         = "Choose the recovery point"
	TaskCopy          = "Copy disks from the recovery point"
	TaskDisks         = "Create managed disks"
	TaskNIC           = "Create the network interface"
	TaskVM            = "Create and start the virtual machine"
	TaskHealth        = "Check the guest's health"
	TaskDeleteVM      = "Delete the virtual machine"
	TaskDeleteNICs    = "Delete the network interfaces"
	TaskDeleteDisks   = "Delete the managed disks"
	TaskDeleteBlobs   = "Delete the copied blobs"
	TaskCommit        = "Commit the recovery point"
	TaskSkipVM        = "Skipped: deployed by another job"
)

// RTO is the job's recovery time: from request to end (to now's last task
// end while it runs). Zero before anything ended.
func (j Job) RTO() time.Duration {
	if !j.Ended.IsZero() {
		return j.Ended.Sub(j.Requested)
	}
	var last time.Time
	for _, t := range j.Tasks {
		if t.End.After(last) {
			last = t.End
		}
	}
	if last.IsZero() {
		return 0
	}
	return last.Sub(j.Requested)
}

// VMRTO is a VM's recovery time: from the request until it was healthy
// (in Azure, or on premises for a failback); zero if it never was.
func (j Job) VMRTO(vm string) time.Duration {
	for _, t := range j.Tasks {
		if t.VM == vm && (t.Name == TaskHealth || t.Name == TaskOnPremHealth) && t.State == TaskSucceeded {
			return t.End.Sub(j.Requested)
		}
	}
	return 0
}

// GroupRTO is a boot group's recovery time: from the request until its
// last VM was healthy; zero unless every VM of it was.
func (j Job) GroupRTO(g int) time.Duration {
	var rto time.Duration
	n := 0
	for _, t := range j.Tasks {
		if t.Group == g && (t.Name == TaskVM || t.Name == TaskPowerOn) {
			n++
			r := j.VMRTO(t.VM)
			if r == 0 {
				return 0
			}
			rto = max(rto, r)
		}
	}
	if n == 0 {
		return 0
	}
	return rto
}

// job is a Job with what runs it.
type job struct {
	Job
	req    *proto.FailoverRequest
	groups [][]string // boot groups of machine names
	phases []phase
	pi     int // the phase running
	// gen changes whenever the job stops or resumes: completions of the
	// attempt before are dropped.
	gen         int
	outstanding int
	failing     string        // the phase's first failure, while its other chains end
	failed      *failedAction // a plan action that failed (resume/skip)
	retry       *int          // the task a resumed action runs again
	waitingTask int           // the manual action's task while waiting
	vms         map[string]*vmRun
}

// failedAction is a failed plan action: its phase and task.
type failedAction struct{ task int }

// vmRun is one machine's working state in a job.
type vmRun struct {
	machine string
	group   int
	name    string // the Azure VM's name
	skipped bool
	cat     *proto.Catalog
	point   proto.Point
	blobs   []string
	disks   []compute.Ref
	nic     compute.Ref
	vm      compute.Ref
	// change point: what the new point replaces
	oldVM    compute.Ref
	oldDisks []compute.Ref
	oldBlobs []string
	// redo: a change point that makes the VM its failover never brought
	// up (see changePoint).
	redo bool
	// failback
	replGroup  string              // its replication group at failover
	backPoints []proto.TargetPoint // the master target's, oldest first
	backPoint  string              // the chosen one's id
	onPremVM   string
}

// phase is one stage of a job: start launches its chains with run.
type phase struct {
	name  string
	start func(ctx runtime.Context, j *job)
}

// chain is one sequence of steps; it calls done once, at its end.
type chain func(ctx runtime.Context, done func(runtime.Context, error))

func (o *Orchestrator) task(ctx runtime.Context, j *job, name, vm string, group int) int {
	j.Tasks = append(j.Tasks, Task{Name: name, VM: vm, Group: group, State: TaskInProgress, Start: ctx.Now()})
	ctx.Log().Info("failover: task started", "job", j.ID, "task", name, "vm", vm, "group", group)
	return len(j.Tasks) - 1
}

func (o *Orchestrator) taskEnd(ctx runtime.Context, j *job, ti int, state string, code int, reason string) {
	t := &j.Tasks[ti]
	t.State, t.End, t.Code, t.Reason = state, ctx.Now(), code, reason
	args := []any{"job", j.ID, "task", t.Name, "vm", t.VM, "group", t.Group, "state", state, "took", t.End.Sub(t.Start).String()}
	if code != 0 {
		args = append(args, "code", code)
	}
	if reason != "" {
		args = append(args, "reason", reason)
	}
	ctx.Log().Info("failover: task ended", args...)
}

// run starts chains in parallel as the current phase; when all ended well
// the next phase starts. The first failure fails the job.
func (o *Orchestrator) run(ctx runtime.Context, j *job, chains []chain) {
	gen := j.gen
	if len(chains) == 0 {
		o.next(ctx, j)
		return
	}
	j.outstanding, j.failing = len(chains), ""
	for _, c := range chains {
		ended := false
		c(ctx, func(ctx runtime.Context, err error) {
			if ended || j.gen != gen || j.State != JobInProgress {
				return
			}
			ended = true
			if err != nil && j.failing == "" {
				// The job fails once the phase's other chains have
				// ended: none starts another operation (lro), and what
				// is in flight is seen to its end, so nothing is still
				// being made when the job ends (a cleanup would meet it).
				j.failing = err.Error()
			}
			j.outstanding--
			switch {
			case j.outstanding > 0:
			case j.failing != "":
				o.fail(ctx, j, j.failing, false)
			default:
				o.next(ctx, j)
			}
		})
	}
}

// next starts the next phase, or ends the job.
func (o *Orchestrator) next(ctx runtime.Context, j *job) {
	j.pi++
	if j.pi < len(j.phases) {
		p := j.phases[j.pi]
		ctx.Log().Debug("failover: phase", "job", j.ID, "phase", p.name)
		p.start(ctx, j)
		return
	}
	o.succeed(ctx, j)
}

// fail ends the job's attempt with reason. A resumable failure (a plan
// action) keeps the machines; any other releases them.
func (o *Orchestrator) fail(ctx runtime.Context, j *job, reason string, resumable bool) {
	j.gen++
	j.State = JobFailed
	j.Errors = append(j.Errors, reason)
	if resumable {
		j.AllowedActions = []string{proto.ActionResume, proto.ActionSkip}
		ctx.Log().Warn("failover: job stopped", "job", j.ID, "op", j.Op, "reason", reason, "allowed", strings.Join(j.AllowedActions, ","))
		return
	}
	j.AllowedActions = nil
	j.Ended = ctx.Now()
	for i := range j.Tasks {
		if j.Tasks[i].State == TaskInProgress {
			o.taskEnd(ctx, j, i, TaskFailed, 0, "the job failed: "+reason)
		}
	}
	o.release(j)
	ctx.Log().Warn("failover: job failed", "job", j.ID, "op", j.Op, "plan", j.Plan, "reason", reason, "rto", j.RTO().String())
}

func (o *Orchestrator) succeed(ctx runtime.Context, j *job) {
	j.gen++
	j.State, j.Ended, j.AllowedActions = JobSucceeded, ctx.Now(), nil
	o.release(j)
	for _, vm := range j.VMs {
		if r := j.VMRTO(vm); r > 0 {
			ctx.Log().Info("failover: rto", "job", j.ID, "vm", vm, "rto", r.String())
		}
	}
	for g := range j.groups {
		if r := j.GroupRTO(g + 1); r > 0 {
			ctx.Log().Info("failover: rto", "job", j.ID, "group", g+1, "rto", r.String())
		}
	}
	ctx.Log().Info("failover: job succeeded", "job", j.ID, "op", j.Op, "plan", j.Plan, "vms", len(j.VMs), "rto", j.RTO().String())
}

// release frees the job's machines.
func (o *Orchestrator) release(j *job) {
	for _, vm := range j.VMs {
		if m := o.machines[vm]; m != nil && m.Busy == j.ID {
			m.Busy = ""
		}
	}
}

// action serves a JobAction.
func (o *Orchestrator) action(ctx runtime.Context, m *proto.JobAction) error {
	j, ok := o.byID[m.JobID]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownJob, m.JobID)
	}
	switch m.Action {
	case proto.ActionAck, proto.ActionResume, proto.ActionSkip:
	default:
		if slices.Contains(j.AllowedActions, m.Action) {
			return fmt.Errorf("%w: %s on job %s: an operation, not a job action: request %s of the job's machines", ErrAction, m.Action, j.ID, m.Action)
		}
		return fmt.Errorf("%w: %s on job %s: want ack, resume or skip", ErrAction, m.Action, j.ID)
	}
	if !slices.Contains(j.AllowedActions, m.Action) {
		return fmt.Errorf("%w: %s on job %s (%s; allowed: %s)", ErrAction, m.Action, j.ID, j.State, strings.Join(j.AllowedActions, ","))
	}
	ctx.Log().Info("failover: job action", "job", j.ID, "action", m.Action)
	j.AllowedActions = nil
	switch m.Action {
	case proto.ActionAck:
		j.State = JobInProgress
		o.taskEnd(ctx, j, j.waitingTask, TaskSucceeded, 0, "acknowledged")
		o.next(ctx, j)
	case proto.ActionResume:
		j.State = JobInProgress
		j.gen++
		ti := j.failed.task
		j.retry, j.failed = &ti, nil
		j.Errors = append(j.Errors[:0:0], j.Errors...)
		j.phases[j.pi].start(ctx, j) // the action again, in its own task
	case proto.ActionSkip:
		j.State = JobInProgress
		j.gen++
		o.taskEnd(ctx, j, j.failed.task, TaskSkipped, 0, "skipped by the user")
		j.failed = nil
		o.next(ctx, j)
	}
	return nil
}
