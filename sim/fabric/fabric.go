// Package fabric is the simulated world's Azure compute: an in-memory
// fabric (impl/compute/memfabric) on the simulator's virtual clock, with
// the latency model below, jitter drawn from the run's seed, and a boot
// that runs each guest workload's own recovery on its disk images.
//
// # Latency model
//
// Each operation takes its base time scaled by a factor drawn uniformly
// from [1-Jitter, 1+Jitter), Jitter = 1/9, so that hydration spans exactly
// the documented 8–10 min:
//
//	operation              base    range          source
//	create NIC             10 s    8.9–11.1 s     v2a's choice (ARM NIC PUTs finish in seconds)
//	import disk (blob)     60 s    53–67 s        v2a's choice, inside the 30–90 s seen for managed-disk imports
//	create VM + boot       3 min   2.7–3.3 min    v2a's choice, inside the 2–4 min usual for an Azure VM to reach running
//	hydration (extra)      9 min   8–10 min       FAILOVER.md: "Hydration adds 8–10 min for Linux, physical servers, …" (TFO, TUT)
//	start (boot again)     60 s    53–67 s        v2a's choice
//	deallocate             45 s    40–50 s        v2a's choice
//	delete (any resource)  30 s    27–33 s        v2a's choice
//
// Azure publishes no service-level numbers for these (FAILOVER.md, RTO: no
// measured distributions exist); only hydration is documented. Hydration
// is added to VMs tagged compute.TagHydrate "true", which failover sets for
// Linux and physical sources, at their first boot only.
//
// The jitter is drawn from a source the caller gives (the run's
// sched.Sim.SubRand("fabric")), one draw per operation in call order, so
// the same seed and the same calls give the same timings.
package fabric

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/compute"
	"github.com/v2a-dr/v2a/impl/compute/memfabric"
	"github.com/v2a-dr/v2a/sim/workload"
)

// Jitter is the model's spread: ±1/9 around each base time.
const Jitter = 1.0 / 9

// Model is the latency model documented above.
func Model() memfabric.Latency {
	return memfabric.Latency{
		CreateNIC:  10 * time.Second,
		CreateDisk: 60 * time.Second,
		CreateVM:   3 * time.Minute,
		Hydrate:    9 * time.Minute,
		Start:      60 * time.Second,
		Deallocate: 45 * time.Second,
		Delete:     30 * time.Second,
		Jitter:     Jitter,
	}
}

// Config is what the simulated fabric needs from the world.
type Config struct {
	// Clock is the simulator's virtual clock (sched.Sim.Now). Required.
	Clock func() time.Time
	// Rand draws the jitter: give the run's sched.Sim.SubRand("fabric").
	// Required unless Latency says no jitter.
	Rand *rand.Rand
	// Booter runs a guest at each boot (see Boot); nil boots every guest
	// healthy.
	Booter memfabric.Booter
	// Latency replaces the model (nil: Model()).
	Latency *memfabric.Latency
	// PollInterval caps the suggested wait between polls, as Azure's
	// Retry-After does; 0 suggests polling exactly when the operation ends
	// (fewest events in the trace).
	PollInterval time.Duration
}

// New returns the simulated fabric, importing disks from store (the run's
// Azurite account).
func New(store blob.Store, cfg Config) (*memfabric.Fabric, error) {
	if cfg.Clock == nil {
		return nil, errors.New("fabric: no clock: the simulated fabric runs on the simulator's virtual time")
	}
	lat := Model()
	if cfg.Latency != nil {
		lat = *cfg.Latency
	}
	f, err := memfabric.New(store, memfabric.Options{
		Clock: cfg.Clock, Latency: lat, Rand: cfg.Rand, Booter: cfg.Booter, PollInterval: cfg.PollInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	return f, nil
}

// Check is a guest's own recovery and invariant check on its disk images,
// indexed as the source machine's disks (the OS disk is disk 0, then the
// data disks in order, as failover attaches them).
type Check func(disks []io.ReaderAt) error

// ErrNoCheck is the guest failure of a VM whose source has no check.
var ErrNoCheck = errors.New("fabric: no recovery check for this source")

// Boot returns a Booter that boots each VM by running the check of the
// machine its compute.TagSource tag names. A VM with no such tag, or whose
// machine has no check, boots with its guest not ready (ErrNoCheck): a
// guest nobody can vouch for is not called healthy.
func Boot(checks map[string]Check) memfabric.Booter {
	return func(_ context.Context, vm compute.VM, disks []io.ReaderAt) error {
		src := vm.Tags[compute.TagSource]
		check := checks[src]
		if check == nil {
			return fmt.Errorf("%w (VM %s, source %q)", ErrNoCheck, vm.Ref.Name, src)
		}
		return check(disks)
	}
}

// WorkloadCheck is the Check of a guest running w: its crash recovery
// (replay, not clean) and invariant, as after a power loss, since a
// failed-over VM boots from a crash-consistent or app-consistent image.
func WorkloadCheck(w workload.Workload) Check {
	return func(disks []io.ReaderAt) error {
		_, err := w.Check(disks, false)
		return err
	}
}
