package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/v2a-dr/v2a/impl/azuresvc"
	"github.com/v2a-dr/v2a/sim/workload"
)

// orderFlow is a running order flow and the group it belongs to.
type orderFlow struct {
	group string
	o     *workload.Orders
}

// StartOrders runs the cross-VM order flow on three machines (database,
// web, report), recording every cross-machine dependency.
func (e *Env) StartOrders(group string, names [3]string, rate float64) error {
	var ws [3]workload.Writer
	for i, n := range names {
		m := e.Machines[n]
		if m == nil {
			return fmt.Errorf("harness: no machine %q (have %s)", n, strings.Join(e.names, ", "))
		}
		if e.Workloads.Workload(n) != nil {
			return fmt.Errorf("harness: machine %s already runs a workload", n)
		}
		ws[i] = &tracedWriter{e: e, m: m}
	}
	o, err := workload.NewOrders(names, ws, workload.Spec{RegionStart: 32 << 20}, rate, e.hb.add)
	if err != nil {
		return err
	}
	e.orders = append(e.orders, orderFlow{group: group, o: o})
	r := e.Sim.SubRand("workload/orders/" + group)
	e.Workloads.Start("orders/"+group, o, r, time.Duration(r.IntN(1000))*time.Millisecond)
	e.Trace.Add(e.Sim.Elapsed(), "harness", "workload", fmt.Sprintf("orders group=%s db=%s web=%s report=%s", group, names[0], names[1], names[2]))
	return nil
}

// orderFlowOn returns the flow a machine takes part in, if any.
func (e *Env) orderFlowOn(machine string) *workload.Orders {
	for _, f := range e.orders {
		for _, n := range f.o.Machines() {
			if n == machine {
				return f.o
			}
		}
	}
	return nil
}

// GroupCatalog reads a replication group's catalog from storage.
func (d *Deployment) GroupCatalog(group string) (*azuresvc.GroupCatalog, error) {
	store, prefix, err := d.e.Storage()
	if err != nil {
		return nil, err
	}
	c, _, err := azuresvc.LoadGroupCatalog(d.e.ctx, store, prefix, group)
	return c, err
}

func pointName(e *Env, id string, t time.Time) string {
	if id == "" {
		return "-"
	}
	return id + " (" + fmtTime(e, t) + ")"
}
