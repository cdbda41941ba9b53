package azblob

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/v2a-dr/v2a/impl/blob"
)

// TestMapErr covers the error codes real Azure answers with that Azurite
// does not produce (the Azurite ones are covered by the conformance suite
// in sim/azurite).
func TestMapErr(t *testing.T) {
	re := func(status int, code string) error {
		return &azcore.ResponseError{StatusCode: status, ErrorCode: code}
	}
	createOnly := blob.WriteOptions{IfNoneMatch: "*"}
	ifMatch := blob.WriteOptions{IfMatch: `"0x1"`}
	tests := []struct {
		name string
		opts blob.WriteOptions
		err  error
		want []error
	}{
		{"create-only, Azure's 409", createOnly, re(409, "BlobAlreadyExists"), []error{blob.ErrExists, blob.ErrConditionFailed}},
		{"create-only, Azurite's 412", createOnly, re(412, "ConditionNotMet"), []error{blob.ErrExists, blob.ErrConditionFailed}},
		{"if-match on a missing blob, 404", ifMatch, re(404, "BlobNotFound"), []error{blob.ErrConditionFailed}},
		{"if-match, missing container stays not found", ifMatch, re(404, "ContainerNotFound"), []error{blob.ErrNotFound}},
		{"stale etag", ifMatch, re(412, "ConditionNotMet"), []error{blob.ErrConditionFailed}},
		{"lease missing", blob.WriteOptions{}, re(412, "LeaseIdMissing"), []error{blob.ErrLeased}},
		{"lease broken", blob.WriteOptions{}, re(409, "LeaseIsBrokenAndCannotBeRenewed"), []error{blob.ErrLeased}},
		{"page range", blob.WriteOptions{}, re(416, "InvalidPageRange"), []error{blob.ErrInvalidRange}},
		{"416 without a code", blob.WriteOptions{}, re(416, ""), []error{blob.ErrInvalidRange}},
		{"bad metadata", blob.WriteOptions{}, re(400, "InvalidMetadata"), []error{blob.ErrInvalid}},
		{"404 without a code", blob.WriteOptions{}, re(404, ""), []error{blob.ErrNotFound}},
	}
	all := []error{blob.ErrNotFound, blob.ErrExists, blob.ErrConditionFailed, blob.ErrLeased, blob.ErrInvalidRange, blob.ErrInvalid}
	for _, tc := range tests {
		err := mapWriteErr("put", "c0", "b0", tc.opts, tc.err)
		for _, s := range all {
			want := false
			for _, w := range tc.want {
				want = want || w == s
			}
			if errors.Is(err, s) != want {
				t.Errorf("%s: %v: errors.Is(%v) = %v, want %v", tc.name, err, s, !want, want)
			}
		}
		if !strings.HasPrefix(err.Error(), "blob: put c0/b0: ") {
			t.Errorf("%s: message %q lacks the operation and names", tc.name, err)
		}
	}

	// An error the port has no word for keeps the SDK's error and matches
	// none of the sentinels.
	err := mapErr("get", "c0", "b0", re(http.StatusInternalServerError, "InternalError"))
	var sdkErr *azcore.ResponseError
	if !errors.As(err, &sdkErr) {
		t.Errorf("unknown error %v lost the SDK error", err)
	}
	for _, s := range all {
		if errors.Is(err, s) {
			t.Errorf("unknown error %v matches %v", err, s)
		}
	}
	if mapErr("get", "c0", "b0", nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
}
