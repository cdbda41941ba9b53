// Package scenarios holds v2a's scripted scenarios: *.scn files in the
// cockroachdb/datadriven format. `go test ./scenarios` runs every one and
// compares outputs; `v2a run NAME` runs one from the CLI.
package scenarios

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.scn
var files embed.FS

// Names lists the scenarios, without the .scn suffix.
func Names() []string {
	ents, _ := fs.ReadDir(files, ".")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".scn"))
	}
	sort.Strings(out)
	return out
}

// Read returns a scenario's script by name.
func Read(name string) ([]byte, error) {
	return files.ReadFile(strings.TrimSuffix(name, ".scn") + ".scn")
}
