package vsphere

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDatastorePath(t *testing.T) {
	tests := []struct {
		in      string
		want    DatastorePath
		wantErr error
	}{
		{"[ds1] db01/db01.vmdk", DatastorePath{"ds1", "db01/db01.vmdk"}, nil},
		{"[ds 2] a b/c.vmdk", DatastorePath{"ds 2", "a b/c.vmdk"}, nil},
		{"[ds1]", DatastorePath{"ds1", ""}, nil},
		{"[ds1]db01", DatastorePath{"ds1", "db01"}, nil},
		{"ds1/db01", DatastorePath{}, ErrInvalidArgument},
		{"[] db01", DatastorePath{}, ErrInvalidArgument},
		{"[ds1 db01", DatastorePath{}, ErrInvalidArgument},
	}
	for _, tt := range tests {
		got, err := ParseDatastorePath(tt.in)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("ParseDatastorePath(%q) error = %v, want %v", tt.in, err, tt.wantErr)
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("ParseDatastorePath(%q) (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestDatastorePathRoundTrip(t *testing.T) {
	for _, s := range []string{"[ds1] db01/db01.vmdk", "[ds1]", "[ds 2] x"} {
		p, err := ParseDatastorePath(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.String(); got != s {
			t.Errorf("ParseDatastorePath(%q).String() = %q", s, got)
		}
	}
}

func TestFlatExtentPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  error
	}{
		{"[ds1] db01/db01.vmdk", "[ds1] db01/db01-flat.vmdk", nil},
		{"[ds 2] a b/c_1.vmdk", "[ds 2] a b/c_1-flat.vmdk", nil},
		{"[ds1] db01/db01-flat.vmdk", "", ErrInvalidArgument},
		{"[ds1] db01/db01.vmx", "", ErrInvalidArgument},
		{"[ds1]", "", ErrInvalidArgument},
		{"db01.vmdk", "", ErrInvalidArgument},
	}
	for _, tt := range tests {
		got, err := FlatExtentPath(tt.in)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("FlatExtentPath(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
