package strictjson

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/util"
)

type node struct {
	ID     string         `json:"id"`
	Config map[string]any `json:"config,omitempty"`
}

type embedded struct {
	Extra string `json:"extra"`
}

type def struct {
	Name  string `json:"name"`
	Nodes []node `json:"nodes"`
	Plain int    // no tag: the field name
	Skip  string `json:"-"`
	embedded
}

func TestRefusesDuplicateAndCaseVariantKeys(t *testing.T) {
	for _, tc := range []struct {
		body, key, other, path string
		reason                 Reason
	}{
		{`{"name":"decoy","NAME":"payroll"}`, "NAME", "name", "$", CaseVariant},
		{`{"name":"decoy","name":"payroll"}`, "name", "name", "$", Duplicate},
		{`{"a":{"b":[{"x":1,"X":2}]}}`, "X", "x", "$.a.b[0]", CaseVariant},
		{`{"nodes":[{"id":"a","config":{"k":1,"k":2}}]}`, "k", "k", "$.nodes[0].config", Duplicate},
		// U+212A KELVIN SIGN folds to k, U+017F LONG S to s: encoding/json
		// matches both to "k" and "s".
		{`{"k":1,"` + "\u212a" + `":2}`, "\u212a", "k", "$", CaseVariant},
		{`{"names":1,"name` + "\u017f" + `":2}`, "name\u017f", "names", "$", CaseVariant},
		// escapes are compared decoded
		{`{"name":1,"\u004eame":2}`, "Name", "name", "$", CaseVariant},
		{`{"a b":{"q":1,"Q":1}}`, "Q", "q", `$["a b"]`, CaseVariant},
	} {
		var v any
		err := Unmarshal([]byte(tc.body), &v)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || ke.Other != tc.other || ke.Path != tc.path || ke.Reason != tc.reason {
			t.Errorf("%s: got %v (%#v), want %v of %q/%q at %s", tc.body, err, ke, tc.reason, tc.key, tc.other, tc.path)
			continue
		}
		if !strings.Contains(err.Error(), `"`+tc.key+`"`) && !strings.Contains(err.Error(), strings.Trim(jsonQuote(tc.key), `"`)) {
			t.Errorf("%s: message %q does not name the key", tc.body, err)
		}
	}
}

func jsonQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestStructKeysMustMatchExactly(t *testing.T) {
	var d def
	if err := Unmarshal([]byte(`{"name":"a","nodes":[{"id":"n","config":{"Any":"Case"}}],"Plain":3,"extra":"e"}`), &d); err != nil {
		t.Fatal(err)
	}
	if d.Name != "a" || d.Nodes[0].ID != "n" || d.Plain != 3 || d.Extra != "e" || d.Nodes[0].Config["Any"] != "Case" {
		t.Fatalf("decoded %+v", d)
	}
	for _, tc := range []struct {
		body, key, other, path string
		reason                 Reason
	}{
		{`{"NAME":"payroll"}`, "NAME", "name", "$", CaseMismatch},
		{`{"name":"a","nodes":[{"ID":"x"}]}`, "ID", "id", "$.nodes[0]", CaseMismatch},
		{`{"plain":1}`, "plain", "Plain", "$", CaseMismatch},
		{`{"nodeſ":[]}`, "nodeſ", "nodes", "$", CaseMismatch},
		{`{"Skip":"x"}`, "Skip", "", "$", Unknown},
		{`{"name":"a","other":1}`, "other", "", "$", Unknown},
		{`{"embedded":{}}`, "embedded", "", "$", Unknown},
	} {
		var d def
		err := Unmarshal([]byte(tc.body), &d)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key || ke.Other != tc.other || ke.Path != tc.path || ke.Reason != tc.reason {
			t.Errorf("%s: got %v, want %v of %q at %s", tc.body, err, tc.reason, tc.key, tc.path)
		}
	}
	// encoding/json alone takes all of these: the check is what refuses them.
	var plain def
	if err := json.Unmarshal([]byte(`{"name":"decoy","NAME":"payroll"}`), &plain); err != nil || plain.Name != "payroll" {
		t.Fatalf("encoding/json: %v %q", err, plain.Name)
	}
}

func TestSyntax(t *testing.T) {
	for _, body := range []string{``, `   `, `{`, `{"a":1}{"a":2}`, `{"a":1} x`, `{"a":1,}`, `[1,]`, `{"a"}`, `{1:2}`, `nul`, strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)} {
		var v any
		err := Unmarshal([]byte(body), &v)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: got %v, want a syntax error", trunc(body), err)
		}
	}
	for _, body := range []string{`{}`, `[]`, `null`, `1`, `"s"`, ` {"a":[1,{"b":null}]} `, strings.Repeat("[", 100) + strings.Repeat("]", 100)} {
		if err := Check([]byte(body)); err != nil {
			t.Errorf("%q: %v", trunc(body), err)
		}
	}
	if err := Unmarshal([]byte(`{}`), nil); err == nil {
		t.Error("nil target accepted")
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// FuzzStrictJSON: Unmarshal never panics, and a body it accepts is one OPA
// accepts (util.UnmarshalJSON, which builds parsed_body), decodes to the
// same value, holds no two keys equal under case folding anywhere, and
// decodes into a struct with each field equal to the map's exactly-named
// key.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range []string{
		`{"name":"decoy","NAME":"payroll"}`,
		`{"name":"decoy","name":"payroll"}`,
		`{"NAME":"payroll","nodes":[]}`,
		`{"name":"a","nodes":[{"id":"x","config":{"k":1,"K":2}}]}`,
		`{"name":"a","nodes":[{"id":"x","config":{"code":"result = 1"}}],"Plain":2,"extra":"e"}`,
		`{"k":1,"` + "\u212a" + `":2}`,
		`{"name":"\ud800","nam\u0065":1}`,
		`{"a":"\xff","a\xfe":1}`,
		`{"a":1e400}`,
		`[{"a":[{"b":{"c":null}}]}, 1, -0, 1.5e3, true]`,
		`{"a":1} {"a":2}`,
		``,
		`"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got any
		if err := Unmarshal(b, &got); err == nil {
			var opa any
			if err := util.UnmarshalJSON(b, &opa); err != nil {
				t.Fatalf("accepted %q, which OPA refuses: %v", b, err)
			}
			if want := floats(opa); !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: decoded %#v, OPA sees %#v", b, got, want)
			}
			if k := foldClash(opa); k != "" {
				t.Fatalf("%q: accepted with case-variant keys %s", b, k)
			}
		}
		var d def
		if err := Unmarshal(b, &d); err == nil {
			var m map[string]any
			if err := util.UnmarshalJSON(b, &m); err != nil {
				t.Fatalf("accepted %q into a struct, which OPA refuses: %v", b, err)
			}
			for k := range m {
				if k != "name" && k != "nodes" && k != "Plain" && k != "extra" {
					t.Fatalf("%q: key %q accepted into the struct", b, k)
				}
			}
			if n, _ := m["name"].(string); n != d.Name {
				t.Fatalf("%q: struct name %q, OPA's parsed_body.name %q", b, d.Name, n)
			}
			nodes, _ := m["nodes"].([]any)
			if len(nodes) != len(d.Nodes) {
				t.Fatalf("%q: %d nodes, OPA sees %d", b, len(d.Nodes), len(nodes))
			}
			for i, n := range nodes {
				if id, _ := n.(map[string]any)["id"].(string); id != d.Nodes[i].ID {
					t.Fatalf("%q: node %d id %q, OPA sees %q", b, i, d.Nodes[i].ID, id)
				}
			}
		}
	})
}

// floats turns OPA's json.Numbers into the float64s encoding/json gives.
func floats(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = floats(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = floats(v[k])
		}
	}
	return v
}

func foldClash(v any) string {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			if k := foldClash(x); k != "" {
				return k
			}
		}
	case map[string]any:
		seen := map[string]string{}
		for k, x := range v {
			for o := range seen {
				if strings.EqualFold(o, k) {
					return o + "/" + k
				}
			}
			seen[k] = k
			if k := foldClash(x); k != "" {
				return k
			}
		}
	}
	return ""
}
