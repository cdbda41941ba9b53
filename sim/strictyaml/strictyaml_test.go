package strictyaml

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type doc struct {
	Name  string `json:"name"`
	Inner inner  `json:"inner"`
	Items []item `json:"items,omitempty"`
	File  string `json:"-"`
}

type inner struct {
	Mode string `json:"mode"`
	URL  string `json:"url,omitempty"`
}

type item struct {
	Size int `json:"size"`
}

func TestUnknownField(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		where     string
		wantKnown []string
	}{
		{"all known", "name: a\ninner:\n  mode: x\nitems:\n  - size: 1\n", "", nil},
		{"top level", "name: a\nnmae: b\n", "line 2: nmae", []string{"inner", "items", "name"}},
		{"nested", "name: a\ninner:\n  mode: x\n  ulr: y\n", "line 4: inner.ulr", []string{"mode", "url"}},
		{"in a list", "items:\n  - size: 1\n  - size: 2\n    sise: 3\n", "line 4: items[1].sise", []string{"size"}},
		{"json-ignored field", "File: x\n", "line 1: File", []string{"inner", "items", "name"}},
		{"not yaml", "a: [", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			where, known := UnknownField([]byte(tt.yaml), reflect.TypeFor[doc]())
			if where != tt.where {
				t.Errorf("where = %q, want %q", where, tt.where)
			}
			if d := cmp.Diff(tt.wantKnown, known); d != "" {
				t.Errorf("known keys (-want +got):\n%s", d)
			}
		})
	}
}
