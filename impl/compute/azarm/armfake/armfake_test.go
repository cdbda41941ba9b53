package armfake

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources"
)

// The router's own answers, which the SDK clients never provoke in the
// adapter's tests: an export without a valid signature, a bad range, a
// path no fake serves, a poll of an operation never begun.
func TestRouterAnswers(t *testing.T) {
	s := New(Options{})
	s.disks["rg/d"] = &disk{data: []byte("0123456789"), sas: "sig1"}
	s.groups["rg"] = &armresources.ResourceGroup{}
	do := func(method, url, api string, hdr map[string]string) (int, string) {
		t.Helper()
		ctx := context.Background()
		if api != "" {
			ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := s.Transport().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	export := "https://" + ExportHost + "/rg/d/abcd?sig="
	for _, tc := range []struct {
		name, method, url, api string
		hdr                    map[string]string
		status                 int
		body                   string
	}{
		{"export range", "GET", export + "sig1", "", map[string]string{"Range": "bytes=2-4"}, 206, "234"},
		{"export range past the end is cut", "GET", export + "sig1", "", map[string]string{"Range": "bytes=8-20"}, 206, "89"},
		{"export whole", "GET", export + "sig1", "", nil, 200, "0123456789"},
		{"export bad range", "GET", export + "sig1", "", map[string]string{"Range": "bytes=20-30"}, 416, "InvalidRange"},
		{"export revoked or unknown signature", "GET", export + "sig2", "", nil, 403, "AuthenticationFailed"},
		{"export write", "PUT", export + "sig1", "", nil, 403, "AuthenticationFailed"},
		{"unknown provider", "GET", "https://management.azure.com/subscriptions/s/providers/Microsoft.Web/sites", "X.Get", nil, 404, "InvalidResourceType"},
		{"missing group", "GET", "https://management.azure.com/subscriptions/s/resourceGroups/nope/providers/Microsoft.Compute/disks/d", "DisksClient.Get", nil, 404, "ResourceGroupNotFound"},
		{"poll never begun", "GET", "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d/get/fake/status", "DisksClient.BeginDelete", nil, 404, "no operation DisksClient.BeginDelete"},
	} {
		status, body := do(tc.method, tc.url, tc.api, tc.hdr)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, status, body, tc.status, tc.body)
		}
	}
	if n := s.Calls("DisksClient.Get"); n != 1 {
		t.Errorf("Calls(DisksClient.Get) = %d, want 1", n)
	}
}
