package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	"github.com/v2a-dr/v2a/impl/blob"
	"github.com/v2a-dr/v2a/impl/blob/azblob"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/sim/azurite"
)

// One Azurite serves every world of a process: starting one takes a second
// or two, and each world keeps to its own containers (a random prefix that
// never reaches the trace).
var shared struct {
	sync.Mutex
	inst *azurite.Instance
	mode azurite.Mode
}

func stopSharedStorage() {
	shared.Lock()
	defer shared.Unlock()
	if shared.inst != nil {
		shared.inst.Stop()
		shared.inst = nil
	}
}

// Storage returns the world's blob store and its container prefix, starting
// (or connecting to) storage on first use as the target says.
func (e *Env) Storage() (blob.Store, string, error) {
	if e.store != nil {
		return e.store, e.prefix, nil
	}
	st := e.Target.Storage
	if e.memStore != nil {
		e.counts = &countingStore{Store: e.memStore, n: map[string]int64{}}
		e.store, e.prefix = e.counts, "v2a-mem-"
		return e.store, e.prefix, nil
	}
	var conn string
	switch st.Mode {
	case "external":
		conn = os.Getenv(st.ConnectionStringEnv)
		if conn == "" {
			return nil, "", fmt.Errorf("harness: target %s: storage.mode=external but %s is not set", e.Target.File, st.ConnectionStringEnv)
		}
	default:
		inst, err := sharedAzurite(e.ctx, azurite.Mode(st.Mode))
		if err != nil {
			return nil, "", err
		}
		conn = inst.ConnectionString()
	}
	s, err := azblob.NewFromConnectionString(conn)
	if err != nil {
		return nil, "", fmt.Errorf("harness: storage: %w", err)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", err
	}
	e.counts = &countingStore{Store: s, n: map[string]int64{}}
	e.store, e.prefix = e.counts, "v2a-"+hex.EncodeToString(b[:])+"-"
	e.closers = append(e.closers, e.deleteContainers)
	return e.store, e.prefix, nil
}

func sharedAzurite(ctx context.Context, mode azurite.Mode) (*azurite.Instance, error) {
	shared.Lock()
	defer shared.Unlock()
	if shared.inst != nil {
		return shared.inst, nil
	}
	if mode == "auto" {
		mode = "" // let $V2A_AZURITE choose, else auto
	}
	inst, err := azurite.Start(ctx, azurite.Options{Mode: mode})
	if err != nil {
		return nil, err
	}
	shared.inst = inst
	return inst, nil
}

// StorageRequests reports the requests made to blob storage so far.
func (e *Env) StorageRequests() string {
	if e.counts == nil {
		return "requests=0"
	}
	return e.counts.Counts()
}

// StorageBytes reports the payload bytes of blob storage requests so far
// (sent by puts and page writes, received by gets), by method.
func (e *Env) StorageBytes() string {
	if e.counts == nil {
		return ""
	}
	return e.counts.Bytes()
}

// deleteContainers removes the world's containers from a shared store.
func (e *Env) deleteContainers() {
	if e.keepContainers {
		return
	}
	ctx := context.Background()
	for _, c := range proto.Containers() {
		e.store.DeleteContainer(ctx, e.prefix+c)
	}
}
