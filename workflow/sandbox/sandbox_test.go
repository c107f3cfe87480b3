package sandbox

import (
	"sort"
	"testing"

	"go.starlark.net/starlark"
)

// TestCodeMethodsAllVetted: every method of every built-in type a script
// can reach is in methodCost; a method Starlark adds later would be
// refused until it is classified here.
func TestCodeMethodsAllVetted(t *testing.T) {
	set := starlark.NewSet(0)
	for _, v := range []starlark.Value{starlark.String(""), starlark.Bytes(""), starlark.NewList(nil), starlark.NewDict(0), set} {
		for _, name := range v.(starlark.HasAttrs).AttrNames() {
			if _, ok := methodCost[name]; !ok {
				t.Errorf("%s.%s is not classified in methodCost", v.Type(), name)
			}
		}
	}
	var names []string
	for name := range starlark.Universe {
		names = append(names, name)
	}
	sort.Strings(names)
	known := map[string]bool{"abs": true, "bool": true, "chr": true, "dir": true, "float": true, "getattr": true, "hasattr": true,
		"hash": true, "int": true, "len": true, "ord": true, "range": true, "type": true, "min": true, "max": true, "any": true, "all": true,
		"None": true, "True": true, "False": true}
	for _, name := range names {
		if !known[name] && !materializers[name] && !printers[name] {
			t.Errorf("builtin %s is not classified (materializers, printers or known bounded)", name)
		}
	}
}
