package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/csstore"
	"github.com/v2a-dr/v2a/impl/csstore/sqlite"
)

// openConfigStore (re)opens the configuration server's database for a new
// incarnation of cs01, closing the previous one's handle: what the crashed
// process committed is what the restarted one finds. A database that does
// not open gives a store that fails every call, so the server logs the
// error and serves nothing (as the daemon would refuse to start).
func (d *Deployment) openConfigStore() csstore.Store {
	if d.opts.MemoryOnlyConfigServer {
		return nil
	}
	d.closeConfigStore()
	// NoSync: a simulated crash stops the actor, not this machine, so
	// what it committed is in the file when the next incarnation opens
	// it, as synchronous=FULL promises after a real power loss (the
	// sqlite package's own tests hold it to that); an fsync per commit
	// would only cost real time.
	st, err := sqlite.OpenWith(d.csDB, sqlite.Options{NoSync: true})
	if err != nil {
		return brokenStore{err}
	}
	d.csStore = st
	return st
}

func (d *Deployment) closeConfigStore() {
	if d.csStore != nil {
		d.csStore.Close()
		d.csStore = nil
	}
}

// brokenStore is a database that did not open.
type brokenStore struct{ err error }

func (b brokenStore) Load(context.Context) ([]csstore.Record, error) { return nil, b.err }
func (b brokenStore) Apply(context.Context, csstore.Batch) error     { return b.err }
func (b brokenStore) Close() error                                   { return nil }

// noteConfigCrash keeps the configuration server's status as it is just
// before a crash, for cs-kept.
func (d *Deployment) noteConfigCrash() {
	if st, err := d.ConfigStatus(); err == nil {
		d.csBefore = &st
	}
}

// keptView is the part of a configuration server's status a restart must
// keep: what is learnt again from outside (discovery, process servers'
// reports, heartbeat figures, the RPO as last evaluated) is left out.
func keptView(st configsrv.Status) configsrv.Status {
	st.LastDiscovery, st.DiscoveredVMs, st.DiscoveryError, st.ProcessServers = configsrv.Status{}.LastDiscovery, 0, "", nil
	st.Machines = slices.Clone(st.Machines)
	for i := range st.Machines {
		m := &st.Machines[i]
		m.InVCenter = false
		m.LastHeartbeat, m.Phase, m.CaptureMode = configsrv.MachineStatus{}.LastHeartbeat, "", ""
		m.PendingBytes, m.PendingRecords, m.SyncedBytes, m.SyncTotalBytes, m.SentBytes = 0, 0, 0, 0, 0
		m.RPO, m.RPOAt, m.Applied = 0, configsrv.MachineStatus{}.RPOAt, 0
	}
	st.Groups = slices.Clone(st.Groups)
	for i := range st.Groups {
		g := &st.Groups[i]
		g.RPO, g.RPOAt = 0, configsrv.GroupStatus{}.RPOAt
		g.Members = slices.Clone(g.Members)
		for j := range g.Members {
			g.Members[j].AgentGroup, g.Members[j].AgentGroupVersion, g.Members[j].ConfigApplied = "", 0, false
		}
	}
	return st
}

// CheckConfigKept compares the configuration server's machines, policies,
// groups, jobs and alerts with what they were at the last crash of cs01:
// run it right after the restart, before anything new happens. One result
// per kind; Unknown when cs01 never crashed or is down, or a kind was
// empty before the crash (nothing to judge).
func (d *Deployment) CheckConfigKept() []Result {
	if d.csBefore == nil {
		return []Result{{Check: "cs-kept", Subject: HostConfigServer, Verdict: Unknown, Evidence: "cs01 has not crashed: nothing to compare"}}
	}
	now, err := d.ConfigStatus()
	if err != nil {
		return []Result{{Check: "cs-kept", Subject: HostConfigServer, Verdict: Unknown, Evidence: "cs01 is down: " + err.Error()}}
	}
	before, after := keptView(*d.csBefore), keptView(now)
	kinds := []struct {
		name string
		n    int
		b, a any
	}{
		{"machines", len(before.Machines), before.Machines, after.Machines},
		{"policies", len(before.Policies), before.Policies, after.Policies},
		{"groups", len(before.Groups), before.Groups, after.Groups},
		{"jobs", len(before.Jobs), before.Jobs, after.Jobs},
		{"alerts", len(before.Alerts), before.Alerts, after.Alerts},
	}
	var out []Result
	for _, k := range kinds {
		r := Result{Check: "cs-kept", Subject: HostConfigServer + "/" + k.name}
		diff := cmp.Diff(k.b, k.a, cmpopts.EquateEmpty())
		switch {
		case k.n == 0:
			r.Verdict, r.Evidence = Unknown, "none before the crash: nothing to judge"
		case diff != "":
			r.Verdict, r.Evidence = Illegal, "changed by the restart (-before +after): "+firstLines(diff, 12)
		default:
			r.Verdict, r.Detail = OK, fmt.Sprintf("%d kept", k.n)
		}
		out = append(out, r)
	}
	return out
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n      ")
}
