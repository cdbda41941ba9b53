package harness

import (
	"fmt"

	"github.com/v2a-dr/v2a/impl/configsrv"
	"github.com/v2a-dr/v2a/impl/proto"
)

// csStatus is the configuration server's view, or an error while it is down.
func (d *Deployment) csStatus() (configsrv.Status, error) {
	st, err := d.ConfigStatus()
	if err != nil {
		return configsrv.Status{}, fmt.Errorf("the configuration server is down")
	}
	return st, nil
}

// MachineStatus is a machine's row in the configuration server's view.
func (d *Deployment) MachineStatus(machine string) (configsrv.MachineStatus, bool) {
	st, err := d.csStatus()
	if err != nil {
		return configsrv.MachineStatus{}, false
	}
	for _, m := range st.Machines {
		if m.Name == machine {
			return m, true
		}
	}
	return configsrv.MachineStatus{}, false
}

// PolicyOf is the policy a machine is protected with (the default when
// unknown).
func (d *Deployment) PolicyOf(machine string) proto.Policy {
	st, err := d.csStatus()
	if err != nil {
		return proto.DefaultPolicy()
	}
	name := "default"
	for _, m := range st.Machines {
		if m.Name == machine && m.Policy != "" {
			name = m.Policy
		}
	}
	for _, p := range st.Policies {
		if p.Name == name {
			return p
		}
	}
	return proto.DefaultPolicy()
}

func (d *Deployment) protectedMachines() []string {
	st, err := d.csStatus()
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range st.Machines {
		if m.State != configsrv.StateUnprotected && m.State != configsrv.StateDisabled && m.Policy != "" {
			out = append(out, m.Name)
		}
	}
	return out
}
