package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTargetApplyEnv: the V2A_* variables override a target file key by
// key, the secrets stay in the environment (the target names the
// variable, never holds the value), and a bad value is refused with the
// variable's name.
func TestTargetApplyEnv(t *testing.T) {
	const tp = "52:6C:4E:88:1D:78:AE:12:1C:F3:BB:6C:5B:F4:E2:82:86:A7:08:AF"
	const file = "name: t\ninventory: fixtures/inventory/lab.yaml\nvsphere:\n  mode: url\n  url: https://vc.example/sdk\n  username: admin\n  passwordEnv: MY_PW\n  caFile: ca.pem\nstorage:\n  mode: external\n  connectionStringEnv: MY_CONN\nazure:\n  mode: arm\n"
	const secretPW, secretConn = "s3cret-pw", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=s3cret-key"
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		want    func(*Target)
		applied []string
		err     []string
	}{
		{"nothing set", file, nil, func(*Target) {}, nil, nil},
		{"every variable", file, map[string]string{
			EnvVCenterURL: "https://127.0.0.1:8989/sdk", EnvVCenterUsername: "v2a", EnvVCenterPassword: secretPW,
			EnvVCenterThumbprint: tp, EnvStorage: secretConn, EnvAzureMode: "sim",
		}, func(t *Target) {
			t.VSphere = VSphereTarget{Mode: "url", URL: "https://127.0.0.1:8989/sdk", Username: "v2a", PasswordEnv: EnvVCenterPassword, Thumbprint: tp}
			t.Storage = StorageTarget{Mode: "external", ConnectionStringEnv: EnvStorage}
			t.Azure.Mode = "sim"
		}, EnvOverrides, nil},
		{"url turns a vcsim target into url mode", "name: t\ninventory: fixtures/inventory/lab.yaml\n",
			map[string]string{EnvVCenterURL: "https://vc/sdk", EnvStorage: secretConn}, func(t *Target) {
				t.VSphere = VSphereTarget{Mode: "url", URL: "https://vc/sdk"}
				t.Storage = StorageTarget{Mode: "external", ConnectionStringEnv: EnvStorage}
			}, []string{EnvVCenterURL, EnvStorage}, nil},
		{"blank is unset", file, map[string]string{EnvVCenterURL: "  ", EnvAzureMode: ""}, func(*Target) {}, nil, nil},
		{"bad thumbprint", file, map[string]string{EnvVCenterThumbprint: "52:6C"}, nil, nil,
			[]string{"vsphere.thumbprint", `"52:6C"`, "after the environment's " + EnvVCenterThumbprint}},
		{"bad azure mode", file, map[string]string{EnvAzureMode: "cloud"}, nil, nil,
			[]string{EnvAzureMode, `"cloud"`, "want sim or arm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "target.yaml")
			if err := os.WriteFile(p, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			before, err := LoadTarget(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := LoadTarget(p)
			if err != nil {
				t.Fatal(err)
			}
			applied, err := got.ApplyEnv(func(k string) string { return tt.env[k] })
			if tt.err != nil {
				if err == nil {
					t.Fatalf("ApplyEnv = nil, want an error with %q", tt.err)
				}
				for _, s := range append(tt.err, p) {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error lacks %q: %v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyEnv: %v", err)
			}
			tt.want(before)
			if d := cmp.Diff(before, got); d != "" {
				t.Errorf("target (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.applied, applied); d != "" {
				t.Errorf("applied (-want +got):\n%s", d)
			}
			for _, secret := range []string{secretPW, secretConn} {
				if strings.Contains(fmt.Sprintf("%+v", *got), secret) {
					t.Errorf("the target holds a secret from the environment: %+v", got)
				}
			}
		})
	}
}
