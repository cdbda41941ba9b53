package runtimetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// echo answers every StreamHello with an ItemAck, re-arms a 1 s tick, and
// starts an op on each tick whose result it sends on.
type echo struct{ ticks int }

func (e *echo) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		ctx.After(time.Second, "tick")
	case runtime.Message:
		m, err := wire.Decode(ev.Data)
		if err != nil {
			ctx.Send(ev.From, wire.Encode(&proto.ItemAck{Status: proto.AckRefused, Reason: err.Error()}))
			return
		}
		ctx.Send(ev.From, wire.Encode(&proto.ItemAck{Machine: m.(*proto.StreamHello).Machine, Status: proto.AckOK}))
	case runtime.Timer:
		e.ticks++
		n := e.ticks
		ctx.After(time.Second, "tick")
		ctx.Start(runtime.Op{Name: "io", Run: func(context.Context) (any, error) {
			if n == 2 {
				return nil, errors.New("boom")
			}
			return n, nil
		}})
	case runtime.Done:
		reason := ""
		if ev.Err != nil {
			reason = ev.Err.Error()
		}
		ctx.Send("log:1", wire.Encode(&proto.Reply{Request: ev.Name, OK: ev.Err == nil, Reason: reason}))
	}
}

func TestDriver(t *testing.T) {
	d := New(t, "a:1", &echo{})
	d.Receive("b:2", &proto.StreamHello{Machine: "db01"})
	if got := d.SentTo("b:2"); len(got) != 1 || got[0].(*proto.ItemAck).Machine != "db01" {
		t.Fatalf("reply = %v", got)
	}
	d.ReceiveFrame("b:2", []byte("garbage"))
	if got := d.SentTo("b:2"); len(got) != 1 || got[0].(*proto.ItemAck).Status != proto.AckRefused {
		t.Fatalf("corrupt frame reply = %v", got)
	}
	d.Advance(2500 * time.Millisecond)
	got := d.SentTo("log:1")
	if len(got) != 2 || !got[0].(*proto.Reply).OK || got[1].(*proto.Reply).Reason != "boom" {
		t.Fatalf("op results = %v", got)
	}
	if tm := d.Timers(); len(tm) != 1 || !tm[0].At.Equal(Epoch.Add(3*time.Second)) {
		t.Fatalf("timers = %v", tm)
	}
}
