package configsrv

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// asker is a portal that sends one request at start and reports replies.
type asker struct {
	req     wire.Msg
	replies chan *proto.Reply
}

func (a *asker) Handle(ctx runtime.Context, ev runtime.Event) {
	switch ev := ev.(type) {
	case runtime.Started:
		ctx.Send(csAddr, wire.Encode(a.req))
	case runtime.Message:
		if m, err := wire.Decode(ev.Data); err == nil {
			if r, ok := m.(*proto.Reply); ok {
				a.replies <- r
			}
		}
	}
}

// TestRealRuntimeStore: on the real runtime (goroutines, the real clock,
// TCP on loopback) a policy the portal created is committed before its
// Reply, and the server restarted on its reopened database has it.
// Run it with -race: the store's ops run on goroutines of their own.
func TestRealRuntimeStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	var st *sqlite.Store
	r := runtime.NewReal(runtime.RealOptions{Listen: func(runtime.Addr) string { return "127.0.0.1:0" }})
	defer r.Stop()
	factory := func() runtime.Actor {
		if st != nil {
			st.Close()
		}
		var err error
		if st, err = sqlite.Open(path); err != nil {
			t.Errorf("open: %v", err)
			return New(Config{VaultID: vaultID, Passphrase: passphrase})
		}
		return New(Config{VaultID: vaultID, Passphrase: passphrase, Store: st})
	}
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	if err := r.Spawn(csAddr, factory); err != nil {
		t.Fatal(err)
	}
	gold := proto.Policy{Name: "gold", RPOThreshold: time.Hour, Retention: time.Hour, CrashInterval: 5 * time.Minute, AppInterval: time.Hour}
	p := &asker{req: &proto.CreatePolicy{Policy: gold}, replies: make(chan *proto.Reply, 4)}
	if err := r.Spawn(portal, func() runtime.Actor { return p }); err != nil {
		t.Fatal(err)
	}
	select {
	case rep := <-p.replies:
		if !rep.OK {
			t.Fatalf("refused: %s", rep.Reason)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reply in 20 s")
	}
	if err := r.Crash(csAddr); err != nil {
		t.Fatal(err)
	}
	if err := r.Restart(csAddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		pols, err := runtime.InspectAs(ctx, r, csAddr, func(a runtime.Actor) []proto.Policy { return a.(*Server).Status().Policies })
		cancel()
		if err == nil && slices.Contains(pols, gold) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: policies %v, %v; want gold among them", pols, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
