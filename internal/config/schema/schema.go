// Package schema derives, from config's Go types, the JSON Schema of
// kailash.yaml (for editors, through yaml-language-server) and the
// reference page docs/configuration.md.
//
// Descriptions are the doc comments already written next to the Go fields
// in internal/config: they serve readers of the code and of the docs
// alike, and one text cannot drift from the other. Comments are not in the
// binary, so `go generate` (gen/) copies them into docs_gen.go, and a test
// fails when that copy or docs/configuration.md is stale. What comments
// cannot say (defaults set in code, enums, required keys) is in the tables
// below, next to the constants they name.
package schema

//go:generate go run ./gen

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

// ID is the schema's $id (also what examples/kailash.yaml points at).
const ID = "https://kailash-gw.github.io/kailash/kailash.schema.json"

// Defaults of fields SetDefaults fills, by Type.Field.
var Defaults = map[string]any{
	"Envoy.NodeID":       config.DefaultNodeID,
	"Envoy.Cluster":      config.DefaultCluster,
	"Envoy.Routes":       config.RoutesAuto,
	"Envoy.XDSProtocol":  config.XDSDelta,
	"Authz.Timeout":      config.DefaultAuthzTimout.String(),
	"Policy.Decision":    config.DefaultDecision,
	"JWT.ClockSkew":      config.DefaultClockSkew.String(),
	"JWT.RolesClaim":     "roles",
	"JWT.TenantClaim":    "tenant",
	"Tenant.Active":      true,
	"Tenant.Compression": true,
}

// Enums of fields Validate restricts to a set, by Type.Field.
var Enums = map[string][]string{
	"Envoy.Routes":      {config.RoutesAuto, config.RoutesSingle, config.RoutesPerTenant},
	"Envoy.XDSProtocol": {config.XDSDelta, config.XDSSotW},
}

// Required keys Validate insists on, by Type.
var Required = map[string][]string{
	"Config": {"envoy", "xds", "authz", "runner", "tenants"},
	"Envoy":  {"listen"},
	"XDS":    {"grpc"},
	"Authz":  {"grpc"},
	"Runner": {"http"},
	"Tenant": {"id", "domains"},
}

// Examples of values, by Type.Field (a type's own example, by type name,
// covers every field of that type).
var Examples = map[string]any{
	"HostPort":          "127.0.0.1:8080",
	"Prefix":            "10.0.0.0/8",
	"URL":               "https://idp.example.com/.well-known/jwks.json",
	"Duration":          "30s",
	"Tenant.ID":         "acme",
	"Tenant.Domains":    []string{"acme.example.com"},
	"JWT.Issuer":        "https://idp.example.com/",
	"JWT.Audiences":     []string{"kailash"},
	"JWT.JWKSFile":      "keys/acme.jwks.json",
	"Policy.Decision":   config.DefaultDecision,
	"CORS.AllowOrigins": []string{"https://app.acme.example.com"},
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	hostPortType = reflect.TypeOf(config.HostPort{})
	prefixType   = reflect.TypeOf(config.Prefix{})
	urlType      = reflect.TypeOf(config.URL{})
)

// DurationPattern is Go's time.ParseDuration syntax.
const DurationPattern = `^-?(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`

// Field is one key of the document, for the reference page.
type Field struct {
	Path, Type, Doc  string
	Default, Example any
	Enum             []string
	Required         bool
}

// JSON is the schema, indented.
func JSON() ([]byte, error) {
	b, err := json.MarshalIndent(Schema(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Schema is the JSON Schema (draft 2020-12) of kailash.yaml.
func Schema() map[string]any {
	s := object(reflect.TypeOf(config.Config{}), "", nil)
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = ID
	s["title"] = "kailash.yaml"
	s["description"] = "Configuration of Kailash Gateway (see docs/configuration.md)."
	return s
}

// Fields lists every key in document order, depth first.
func Fields() []Field {
	var out []Field
	object(reflect.TypeOf(config.Config{}), "", &out)
	return out
}

type field struct {
	key, name string
	t         reflect.Type
	owner     string
}

// fieldsOf is t's yaml keys in declaration order (inline structs
// flattened), each with the Type.Field naming it in the tables.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		inline := strings.Contains(","+opts+",", ",inline,")
		if name == "-" || (!f.IsExported() && !inline) {
			continue
		}
		if inline {
			out = append(out, fieldsOf(f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{key: name, name: f.Name, t: f.Type, owner: t.Name()})
	}
	return out
}

func object(t reflect.Type, path string, out *[]Field) map[string]any {
	props := map[string]any{}
	for _, f := range fieldsOf(t) {
		id := f.owner + "." + f.name
		p := join(path, f.key)
		s := of(f.t, p, out, id)
		if d := Docs[id]; d != "" {
			s["description"] = d
		}
		if d, ok := Defaults[id]; ok {
			s["default"] = d
		}
		if e, ok := Enums[id]; ok {
			s["enum"] = e
		}
		props[f.key] = s
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if r := Required[t.Name()]; len(r) > 0 {
		s["required"] = r
	}
	return s
}

// of is the schema of a value of type t at path; id names the field in
// the tables. Fields are appended to out as they are met.
func of(t reflect.Type, path string, out *[]Field, id string) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var rec *Field
	if out != nil && id != "" {
		*out = append(*out, Field{Path: path, Type: typeName(t), Doc: Docs[id], Enum: Enums[id]})
		rec = &(*out)[len(*out)-1]
		if d, ok := Defaults[id]; ok {
			rec.Default = d
		}
		owner, fieldName, _ := strings.Cut(id, ".")
		for _, r := range Required[owner] {
			if strings.HasSuffix(path, r) && r == lastKey(path) {
				rec.Required = true
			}
		}
		_ = fieldName
		if e, ok := Examples[id]; ok {
			rec.Example = e
		} else if e, ok := Examples[typeName(t)]; ok {
			rec.Example = e
		}
	}
	switch t {
	case durationType:
		return map[string]any{"type": "string", "pattern": DurationPattern}
	case hostPortType:
		return map[string]any{"type": "string", "pattern": `^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):[0-9]{1,5}$`}
	case prefixType:
		return map[string]any{"type": "string", "pattern": `^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$`}
	case urlType:
		return map[string]any{"type": "string", "format": "uri"}
	}
	switch t.Kind() {
	case reflect.Struct:
		return object(t, path, out)
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": of(t.Elem(), path+"[]", out, "")}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": of(t.Elem(), path+".<name>", out, "")}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}

func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case durationType:
		return "Duration"
	case hostPortType, prefixType, urlType:
		return t.Name()
	}
	switch t.Kind() {
	case reflect.Struct:
		return "object"
	case reflect.Slice, reflect.Array:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Bool:
		return "bool"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	}
	return t.Kind().String()
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func lastKey(path string) string {
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[i+1:]
	}
	return path
}

// Markdown is docs/configuration.md.
func Markdown() []byte {
	var b strings.Builder
	b.WriteString("<!-- Generated by `go generate ./internal/config/schema` from the Go types and their doc comments; do not edit. -->\n\n")
	b.WriteString("# kailash.yaml reference\n\n")
	b.WriteString("Every key of the configuration file, with its type, default and an example.\n")
	b.WriteString("`kailash schema` prints the same as a JSON Schema: point your editor at it with a\n")
	b.WriteString("`# yaml-language-server: $schema=<file or URL>` first line (see examples/kailash.yaml).\n\n")
	b.WriteString("Types: `HostPort` is `host:port` (`[v6]:port` for IPv6); `Prefix` a CIDR or a single IP;\n")
	b.WriteString("`URL` an absolute URL; `Duration` Go's syntax (`500ms`, `30s`, `1h30m`). `name` in a path is\n")
	b.WriteString("a key of your choosing (a tenant id, a role). YAML anchors, aliases and merge keys (`<<`) work.\n\n")
	var top string
	for _, f := range Fields() {
		root, _, _ := strings.Cut(f.Path, ".")
		root, _, _ = strings.Cut(root, "[")
		if root != top {
			top = root
			fmt.Fprintf(&b, "## %s\n\n", top)
		}
		fmt.Fprintf(&b, "### `%s`\n\n", f.Path)
		meta := []string{"type: " + f.Type}
		if f.Required {
			meta = append(meta, "**required**")
		}
		if f.Default != nil {
			meta = append(meta, fmt.Sprintf("default: `%v`", f.Default))
		}
		if len(f.Enum) > 0 {
			meta = append(meta, "one of: `"+strings.Join(f.Enum, "`, `")+"`")
		}
		if f.Example != nil {
			ex, _ := json.Marshal(f.Example)
			meta = append(meta, "example: `"+string(ex)+"`")
		}
		b.WriteString(strings.Join(meta, " · ") + "\n\n")
		if f.Doc != "" {
			b.WriteString(f.Doc + "\n\n")
		}
	}
	return []byte(strings.TrimRight(b.String(), "\n") + "\n")
}

// sortedKeys is m's keys, sorted (for the generator).
func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
