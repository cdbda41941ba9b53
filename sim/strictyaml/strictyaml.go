// Package strictyaml says where a YAML fixture has a key its Go type does
// not know. sigs.k8s.io/yaml's strict mode refuses such a key but names it
// bare ("unknown field \"thin\""), which does not say which of many VMs, or
// which section of a target file, has it.
package strictyaml

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
)

// UnknownField finds the first mapping key in data that names no
// json-tagged field of t, and returns where it is ("line 12:
// vms[0].disks[0].thin") and the keys its mapping may have, sorted; or ""
// and nil if every key is known (or data is not YAML).
func UnknownField(data []byte, t reflect.Type) (where string, known []string) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return "", nil
	}
	return walk(doc.Content[0], t, "")
}

func walk(n *yamlv3.Node, t reflect.Type, path string) (string, []string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yamlv3.MappingNode && t.Kind() == reflect.Struct:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := jsonField(t, key.Value)
			p := key.Value
			if path != "" {
				p = path + "." + key.Value
			}
			if !ok {
				return fmt.Sprintf("line %d: %s", key.Line, p), jsonNames(t)
			}
			if w, k := walk(val, f.Type, p); w != "" {
				return w, k
			}
		}
	case n.Kind == yamlv3.SequenceNode && t.Kind() == reflect.Slice:
		for i, e := range n.Content {
			if w, k := walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); w != "" {
				return w, k
			}
		}
	}
	return "", nil
}

// jsonField returns the field of struct t whose json tag names key.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if jsonName(f) == key && key != "" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := jsonName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
