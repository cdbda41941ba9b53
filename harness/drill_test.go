package harness

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	simvs "github.com/v2a-dr/v2a/sim/vsphere"
)

// TestDrillMachines: the default is the inventory's first powered-on VMs;
// named machines must be powered-on vCenter VMs of the inventory, once
// each; the script protects exactly them and adds the destructive steps
// only when asked.
func TestDrillMachines(t *testing.T) {
	inv := &simvs.Inventory{File: "inv.yaml", VMs: []simvs.VM{
		{Name: "off01", PowerState: simvs.PoweredOff}, {Name: "phys01", Physical: true},
		{Name: "a"}, {Name: "b", PowerState: simvs.PoweredOn}, {Name: "c"},
	}}
	tests := []struct {
		named []string
		want  []string
		err   string
	}{
		{nil, []string{"a", "b"}, ""},
		{[]string{"c", "a"}, []string{"c", "a"}, ""},
		{[]string{"zz"}, nil, `machine "zz" is not in inventory inv.yaml (powered-on VMs: a, b, c)`},
		{[]string{"phys01"}, nil, `"phys01" is a physical server`},
		{[]string{"off01"}, nil, `"off01" is powered off`},
		{[]string{"a", "a"}, nil, `"a" named twice`},
	}
	for _, tt := range tests {
		got, err := DrillMachines(inv, tt.named)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("DrillMachines(%v) = %v, %v; want error %q", tt.named, got, err, tt.err)
			}
			continue
		}
		if err != nil || !cmp.Equal(got, tt.want) {
			t.Errorf("DrillMachines(%v) = %v, %v; want %v", tt.named, got, err, tt.want)
		}
	}
	if _, err := DrillMachines(&simvs.Inventory{File: "x", VMs: []simvs.VM{{Name: "p", Physical: true}}}, nil); err == nil {
		t.Errorf("an inventory without powered-on VMs gave a default")
	}

	for _, destructive := range []bool{false, true} {
		text, err := DrillScript(DrillOptions{Machines: []string{"a", "c"}, Destructive: destructive, Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewScript("drill.scn", []byte(text))
		if err != nil {
			t.Fatalf("the drill script does not parse: %v\n%s", err, text)
		}
		var cmds []string
		for _, d := range s.Directives {
			cmds = append(cmds, d.Cmd)
		}
		if s.Directives[0].Cmd != "world" || !strings.Contains(text, "world seed=9 machines=(a,c)") || !strings.Contains(text, "protect vms=(a,c)") {
			t.Errorf("script:\n%s", text)
		}
		if has := strings.Contains(text, "failback vms=(a,c)"); has != destructive {
			t.Errorf("destructive=%t: failback in the script: %t", destructive, has)
		}
		for _, c := range cmds {
			if _, ok := commandNamed(c); !ok {
				t.Errorf("the drill uses an unknown command %q", c)
			}
		}
	}
	if _, err := DrillScript(DrillOptions{}); err == nil {
		t.Errorf("a drill without machines was written")
	}
}
