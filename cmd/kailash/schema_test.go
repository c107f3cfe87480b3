package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/kailash-gw/kailash/internal/config/schema"
)

// `kailash schema` prints the generated JSON Schema; --markdown prints
// exactly the committed docs/configuration.md.
func TestSchemaCommand(t *testing.T) {
	out, err := runOut(t, "schema")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	props, _ := s["properties"].(map[string]any)
	if s["$id"] != schema.ID || props["tenants"] == nil || s["additionalProperties"] != false {
		t.Fatalf("unexpected schema: %.300s", out)
	}
	md, err := runOut(t, "schema", "--markdown")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../docs/configuration.md")
	if err != nil || !bytes.Equal([]byte(md), want) {
		t.Fatalf("schema --markdown differs from docs/configuration.md (err %v)", err)
	}
	if _, err := runOut(t, "schema", "extra"); err == nil {
		t.Fatal("unexpected argument accepted")
	}
}
