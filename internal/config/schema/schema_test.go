package schema

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// The committed docs_gen.go, examples/kailash.schema.json and
// docs/configuration.md are what go
// generate writes from today's types and comments.
func TestSchemaGeneratedFilesFresh(t *testing.T) {
	docs, err := ExtractDocs("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 100 {
		t.Fatalf("only %d field docs extracted", len(docs))
	}
	got, err := os.ReadFile("docs_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, DocsGo(docs)) {
		t.Fatal("internal/config/schema/docs_gen.go is stale: run go generate ./internal/config/schema")
	}
	md, err := os.ReadFile("../../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, Markdown()) {
		t.Fatal("docs/configuration.md is stale: run go generate ./internal/config/schema")
	}
	js, err := os.ReadFile("../../../examples/kailash.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := JSON(); !bytes.Equal(js, want) {
		t.Fatal("examples/kailash.schema.json is stale: run go generate ./internal/config/schema")
	}
	for _, key := range []string{"`tenants[].cors.allow_origins`", "`tenants[].ip_allowlist`", "`tenants[].limits.requests_per_second`", "`envoy.listen`"} {
		if !bytes.Contains(md, []byte("### "+key)) {
			t.Errorf("docs/configuration.md lacks %s", key)
		}
	}
}

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(ID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(ID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlToJSON decodes YAML (anchors resolved) into the JSON data model.
func yamlToJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Every example config validates against the generated schema; wrong ones
// do not.
func TestSchemaValidatesExamples(t *testing.T) {
	s := compile(t)
	files, _ := filepath.Glob("../../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(yamlToJSON(t, b)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"
	tenant := "tenants:\n  - id: a\n    domains: [a.test]\n"
	if err := s.Validate(yamlToJSON(t, []byte(head+tenant))); err != nil {
		t.Fatalf("minimal config refused: %v", err)
	}
	bad := map[string]string{
		"unknown key":       head + tenant + "    colour: red\n",
		"address":           strings.Replace(head, "127.0.0.1:1", "nowhere", 1) + tenant,
		"duration":          strings.Replace(head, "{grpc: 127.0.0.1:3}", "{grpc: 127.0.0.1:3, timeout: soon}", 1) + tenant,
		"top-level key":     head + tenant + "envoy_routes: x\n",
		"routes":            strings.Replace(head, "{listen: 127.0.0.1:1}", "{listen: 127.0.0.1:1, routes: everywhere}", 1) + tenant,
		"missing tenant id": head + "tenants:\n  - domains: [a.test]\n",
		"integer":           head + tenant + "    limits: {burst: lots}\n",
	}
	for name, body := range bad {
		err := s.Validate(yamlToJSON(t, []byte(body)))
		if err == nil {
			t.Errorf("%s: accepted by the schema:\n%s", name, body)
			continue
		}
		t.Logf("%s: %v", name, strings.ReplaceAll(err.Error(), "\n", " "))
	}
}
