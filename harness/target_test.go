package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLoadTargetErrors: a bad target file is refused with the file, the
// key (with its line and section) and what is wrong; a good one with the
// TLS trust keys loads them.
func TestLoadTargetErrors(t *testing.T) {
	const head = "name: t\ninventory: fixtures/inventory/lab.yaml\n"
	const tp = "52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error; nil: loads
	}{
		{"thumbprint", head + "vsphere:\n  mode: url\n  url: https://vc/sdk\n  thumbprint: " + tp + "\n", nil},
		{"ca file", head + "vsphere:\n  mode: url\n  url: https://vc/sdk\n  caFile: ca.pem\n", nil},
		{"unknown top-level key", head + "vspere:\n  mode: url\n",
			[]string{"line 3: vspere", "unknown key", "known here: azure, inventory, name, network, storage, vsphere, world"}},
		{"unknown nested key", head + "vsphere:\n  mode: url\n  url: https://vc/sdk\n  thumbprnt: " + tp + "\n",
			[]string{"line 6: vsphere.thumbprnt", "unknown key", "caFile", "thumbprint"}},
		{"insecure and thumbprint", head + "vsphere:\n  mode: url\n  url: https://vc/sdk\n  insecure: true\n  thumbprint: " + tp + "\n",
			[]string{"vsphere.insecure", "excludes thumbprint and caFile"}},
		{"malformed thumbprint", head + "vsphere:\n  mode: url\n  url: https://vc/sdk\n  thumbprint: 52:6C\n",
			[]string{"vsphere.thumbprint", `"52:6C"`, "SHA-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "target.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadTarget(p)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("LoadTarget: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadTarget loaded %+v, want an error", got)
			}
			for _, s := range append([]string{p}, tt.want...) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q:\n%v", s, err)
				}
			}
		})
	}
}

// TestLoadTargetTLSKeys: the trust keys arrive as written.
func TestLoadTargetTLSKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "target.yaml")
	data := "name: t\ninventory: fixtures/inventory/lab.yaml\nvsphere:\n  mode: url\n  url: https://vc/sdk\n  thumbprint: aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd\n  caFile: ca.pem\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadTarget(p)
	if err != nil {
		t.Fatal(err)
	}
	want := VSphereTarget{Mode: "url", URL: "https://vc/sdk", Thumbprint: "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd", CAFile: "ca.pem"}
	if d := cmp.Diff(want, got.VSphere); d != "" {
		t.Errorf("vsphere (-want +got):\n%s", d)
	}
}
