package sched_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/sim/sched"
)

// diskUser starts the ops it is given at Started and records when each
// completes, in virtual time since Epoch.
type diskUser struct {
	ops  []runtime.Op
	done map[string]time.Duration
}

func (a *diskUser) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		for _, op := range a.ops {
			ctx.Start(op)
		}
	case runtime.Done:
		a.done[ev.Name] = ctx.Now().Sub(sched.Epoch)
	}
}

func diskOp(name, device string, bytes int64, syncs int) runtime.Op {
	return runtime.Op{Name: name, Disk: &runtime.DiskIO{Device: device, Bytes: bytes, Syncs: syncs},
		Run: func(context.Context) (any, error) { return nil, nil }}
}

// TestDiskModel: two fsyncs on one device serialise; another device (or
// another host's device of the same name) does not wait; bytes are charged
// at the model's throughput; an op without Disk keeps the flat latency.
func TestDiskModel(t *testing.T) {
	m := sched.DiskModel{OpLatency: 100 * time.Microsecond, SyncLatency: time.Millisecond, BytesPerSec: 100_000_000}
	s := sched.New(1, nil, nil)
	s.SetDiskModel(m)
	a := &diskUser{done: map[string]time.Duration{}, ops: []runtime.Op{
		diskOp("sync1", "cache", 0, 1),
		diskOp("sync2", "cache", 0, 1),
		diskOp("other-device", "os", 0, 1),
		diskOp("bytes", "data", 1_000_000, 0), // 1 MB at 100 MB/s: 10 ms
		{Name: "no-disk", Run: func(context.Context) (any, error) { return nil, nil }},
	}}
	b := &diskUser{done: map[string]time.Duration{}, ops: []runtime.Op{diskOp("other-host", "cache", 0, 1)}}
	must(t, s.Spawn("a:1", func() runtime.Actor { return a }))
	must(t, s.Spawn("b:1", func() runtime.Actor { return b }))
	s.RunFor(time.Second)
	want := map[string]time.Duration{
		"sync1":        1100 * time.Microsecond,
		"sync2":        2200 * time.Microsecond, // queued behind sync1 on the same device
		"other-device": 1100 * time.Microsecond,
		"bytes":        10100 * time.Microsecond,
		"no-disk":      sched.LocalIOLatency,
	}
	if diff := cmp.Diff(want, a.done); diff != "" {
		t.Errorf("completion times (-want +got):\n%s", diff)
	}
	if got, want := b.done["other-host"], 1100*time.Microsecond; got != want {
		t.Errorf("other host's cache device: done at %v, want %v (hosts do not share disks)", got, want)
	}
}

// TestDiskModelCost pins the cost formula of DefaultDisk on a typical
// group commit: 8 items of 1 MiB and 9 fsyncs.
func TestDiskModelCost(t *testing.T) {
	got := sched.DefaultDisk.Cost(runtime.DiskIO{Device: "cache", Bytes: 8 << 20, Syncs: 9})
	want := 100*time.Microsecond + 9*time.Millisecond + 27962026*time.Nanosecond // 8 MiB / 300 MB/s
	if got != want {
		t.Errorf("Cost = %v, want %v", got, want)
	}
	if got < 35*time.Millisecond || got > 40*time.Millisecond {
		t.Errorf("Cost = %v: 8 MiB at 300 MB/s plus 9 ms of fsyncs should be about 37 ms", got)
	}
}
