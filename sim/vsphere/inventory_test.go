package vsphere

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const labFixture = "../../fixtures/inventory/lab.yaml"

func TestLoadLab(t *testing.T) {
	inv, err := Load(labFixture)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		Datacenter string
		Hosts      map[string][]string
		Datastores []string
		VMs        []string
		Physical   []string
	}
	got := summary{Datacenter: inv.Datacenter, Hosts: map[string][]string{}}
	for _, c := range inv.Clusters {
		for _, h := range c.Hosts {
			got.Hosts[c.Name] = append(got.Hosts[c.Name], h.Name)
		}
	}
	for _, d := range inv.Datastores {
		got.Datastores = append(got.Datastores, d.Name)
	}
	for _, vm := range inv.VMs {
		if vm.Physical {
			got.Physical = append(got.Physical, vm.Name)
		} else {
			got.VMs = append(got.VMs, vm.Name)
		}
	}
	want := summary{
		Datacenter: "LabDC",
		Hosts:      map[string][]string{"Cluster01": {"esx01.lab.local", "esx02.lab.local"}},
		Datastores: []string{"ds-ssd01", "ds-hdd01"},
		VMs:        []string{"db01", "web01", "app01", "ord-db", "ord-web", "ord-report"},
		Physical:   []string{"phys01"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("lab inventory (-want +got):\n%s", d)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string // substrings the error must contain
	}{
		{"testdata/bad_yaml.yaml", []string{"testdata/bad_yaml.yaml", "line 5"}},
		{"testdata/unknown_field.yaml", []string{"testdata/unknown_field.yaml", "line 17: vms[0].disks[0].thin", "unknown field"}},
		{"testdata/duplicate_vm.yaml", []string{"testdata/duplicate_vm.yaml: vms[1] (v1).name", `duplicate vm "v1" (first at vms[0] (v1))`}},
		{"testdata/zero_disk.yaml", []string{"testdata/zero_disk.yaml: vms[0] (v1).disks[0].capacityMiB", "must be > 0, got 0"}},
		{"testdata/unknown_datastore.yaml", []string{"testdata/unknown_datastore.yaml: vms[0] (v1).datastore", `unknown datastore "ds9"`}},
		{"testdata/missing_name.yaml", []string{"testdata/missing_name.yaml: vms[0].name", "missing name"}},
		{"testdata/physical_with_host.yaml", []string{"vms[0] (p1).host", "a physical server has no host"}},
		{"testdata/absent.yaml", []string{"testdata/absent.yaml", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			inv, err := Load(tt.file)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", tt.file, inv)
			}
			if !strings.Contains(tt.file, "absent") && !errors.Is(err, ErrInvalidInventory) {
				t.Errorf("error %q does not wrap ErrInvalidInventory", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	inv := &Inventory{
		File:       "mem.yaml",
		Datacenter: "",
		Clusters:   []Cluster{{Name: "C", Hosts: []Host{{Name: "h"}, {Name: "h"}}}},
		Datastores: []Datastore{{Name: "ds"}},
		VMs: []VM{{
			Name: "v", GuestID: "notAGuest", CPUs: 0, MemoryMB: 1, IP: "10.0.0.300",
			PowerState: "asleep", Host: "h9", Datastore: "ds", Network: "nope",
			Disks: []Disk{{CapacityMiB: 1, Datastore: "ds7"}},
		}},
	}
	err := inv.Validate()
	if err == nil {
		t.Fatal("Validate = nil, want errors")
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		field, _, _ := strings.Cut(strings.TrimPrefix(line, "mem.yaml: "), ": ")
		got = append(got, field)
	}
	want := []string{
		"datacenter",
		"clusters[0].hosts[1].name",
		"vms[0] (v).guestId",
		"vms[0] (v).cpus",
		"vms[0] (v).ip",
		"vms[0] (v).powerState",
		"vms[0] (v).disks[0].datastore",
		"vms[0] (v).host",
		"vms[0] (v).network",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("fields with problems (-want +got):\n%s\nerror:\n%v", d, err)
	}
}
