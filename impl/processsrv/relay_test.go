package processsrv

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/runtime/runtimetest"
	"github.com/v2a-dr/v2a/impl/wire"
)

func TestRelayPassesStreamsBothWays(t *testing.T) {
	mt := runtime.MakeAddr("cs01", runtime.PortTarget)
	cs := runtime.MakeAddr("cs01", runtime.PortConfig)
	a1 := runtime.MakeAddr("db01-az", 7000)
	a2 := runtime.MakeAddr("web01-az", 7000)
	d := runtimetest.New(t, runtime.MakeAddr("ps-azure", runtime.PortProcess), NewRelay(RelayConfig{Name: "ps-azure", Target: mt, ConfigServer: cs}))
	if got := d.SentTo(cs); len(got) != 1 || got[0].(*proto.PSHealth).Server != "ps-azure" {
		t.Fatalf("at start: sent the configuration server %v, want one PSHealth from ps-azure", got)
	}
	hello := &proto.StreamHello{Machine: "db01"}
	item := &proto.ItemMsg{Machine: "web01", Seq: 1, Data: []byte("item")}
	d.Receive(a1, hello)
	d.Receive(a2, item)
	want := []wire.Msg{hello, item}
	if diff := cmp.Diff(want, d.SentTo(mt)); diff != "" {
		t.Errorf("to the master target (-want +got):\n%s", diff)
	}
	ack1 := &proto.ItemAck{Machine: "db01", Acked: 0, Status: proto.AckOK}
	ack2 := &proto.ItemAck{Machine: "web01", Acked: 1, Status: proto.AckOK}
	stray := &proto.ItemAck{Machine: "app01", Acked: 3, Status: proto.AckOK}
	d.Receive(mt, ack1)
	d.Receive(mt, ack2)
	d.Receive(mt, stray)
	if diff := cmp.Diff([]wire.Msg{ack1}, d.SentTo(a1)); diff != "" {
		t.Errorf("to db01's agent (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]wire.Msg{ack2}, d.SentTo(a2)); diff != "" {
		t.Errorf("to web01's agent (-want +got):\n%s", diff)
	}
	if rest := d.Sent(); len(rest) != 0 {
		t.Errorf("sent %v besides; an ack for a machine that never streamed must be dropped", rest)
	}
	st := d.Actor.(*Relay).Status()
	if st.Items != 1 || st.Hellos != 1 || st.Acks != 2 || st.DroppedAcks != 1 || !cmp.Equal(st.Machines, []string{"db01", "web01"}) {
		t.Errorf("status %+v", st)
	}
	wantPer := []RelayMachine{{Machine: "db01"}, {Machine: "web01", Items: 1, ItemBytes: int64(len(wire.Encode(item)))}}
	if diff := cmp.Diff(wantPer, st.PerMachine); diff != "" {
		t.Errorf("per machine (-want +got):\n%s", diff)
	}
	// The agent moved (a restarted VM with another address): acks follow it.
	a1b := runtime.MakeAddr("db01-az2", 7000)
	d.Receive(a1b, &proto.ItemMsg{Machine: "db01", Seq: 1})
	d.Receive(mt, ack1)
	if got := d.SentTo(a1b); len(got) != 1 {
		t.Errorf("after the agent moved, acks went elsewhere: %v", d.Sent())
	}
	d.Sent()
	d.Advance(30 * time.Second)
	if got := d.SentTo(cs); len(got) != 1 {
		t.Errorf("after 30 s: %d health reports, want 1", len(got))
	}
}
