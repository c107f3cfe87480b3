package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary files to the loader: it never panics, every
// error (each problem of a joined one) names the file and, from there, the
// line or the field, and an
// accepted config validates again unchanged after its defaults are
// re-applied. Seeds: the example config and edits of it.
func FuzzLoad(f *testing.F) {
	name, err := filepath.Abs("../../examples/kailash.yaml")
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(strings.Replace(string(seed), "domains: [globex.localhost]", "domains: [acme.localhost]", 1)))
	f.Add([]byte(strings.Replace(string(seed), "tenants:", "tenants:\n  - id: x\n    colour: red", 1)))
	f.Add([]byte(strings.Replace(string(seed), "timeout: 500ms", "timeout: -1s", 1)))
	f.Add([]byte("shutdown: {drain_timeout: 1h}\n"))
	f.Add([]byte("tenants: [{id: a, domains: ['*.x:*']}]\n"))
	f.Add([]byte("envoy: [\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(name, b)
		if err != nil {
			// The error, and each of the problems it joins, starts with the
			// file ("file:line: field: ..." or "file: field: ...").
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), name+":") {
					t.Fatalf("error does not name the file: %q\nwhole error: %v", e, err)
				}
			}
			return
		}
		if c.File != name {
			t.Fatalf("File = %q, want %q", c.File, name)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("an accepted config does not validate again: %v", err)
		}
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			t.Fatalf("an accepted config does not validate after its defaults are re-applied: %v", err)
		}
	})
}
