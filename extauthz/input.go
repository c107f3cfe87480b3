package extauthz

import (
	"encoding/base64"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kailash-gw/kailash/internal/config"
)

// InputVersion is the version of the policy input schema built here
// (policies/README.md). It grows only by adding fields.
const InputVersion = "kailash/v1"

// InputError means the request itself cannot be turned into policy input
// (a bad percent escape in the path, a bad query, a JSON body that does not
// parse). The caller answers 400: the request is refused, not let through.
type InputError struct{ Detail string }

func (e *InputError) Error() string { return "bad request: " + e.Detail }

// BuildInput turns a Check request, the verified identity and the route's
// tenant into the policy input document. It is pure (no I/O) and matches
// opa-envoy-plugin's input — attributes (the request's AttributeContext as
// protojson: camelCase names, unset fields omitted), parsed_path,
// parsed_query, parsed_body, truncated_body, version, source_principal — and
// adds identity and tenant.
func BuildInput(req *authv3.CheckRequest, id *Identity, tenant *config.Tenant) (ast.Value, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	headers := httpReq.GetHeaders()

	path, query, err := parsePathQuery(httpReq.GetPath())
	if err != nil {
		return nil, err
	}
	body, truncated, err := parseBody(headers, httpReq.GetBody(), httpReq.GetRawBody())
	if err != nil {
		return nil, err
	}
	attrs := ast.NewObject()
	if a := req.GetAttributes(); a != nil {
		attrs = messageToAST(a.ProtoReflect())
	}
	obj := ast.NewObject(
		ast.Item(ast.InternedTerm("attributes"), ast.NewTerm(attrs)),
		ast.Item(ast.InternedTerm("parsed_path"), ast.NewTerm(path)),
		ast.Item(ast.InternedTerm("parsed_query"), ast.NewTerm(query)),
		ast.Item(ast.InternedTerm("parsed_body"), ast.NewTerm(body)),
		ast.Item(ast.InternedTerm("truncated_body"), ast.InternedTerm(truncated)),
		ast.Item(ast.InternedTerm("version"), ast.ObjectTerm(
			ast.Item(ast.InternedTerm("encoding"), ast.InternedTerm("protojson")),
			ast.Item(ast.InternedTerm("ext_authz"), ast.InternedTerm("v3")),
			ast.Item(ast.InternedTerm("kailash"), ast.InternedTerm(InputVersion)),
		)),
		ast.Item(ast.InternedTerm("identity"), identityTerm(id)),
		ast.Item(ast.InternedTerm("tenant"), tenantTerm(tenant)),
	)
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		obj.Insert(ast.InternedTerm("source_principal"), ast.StringTerm(p))
	}
	return obj, nil
}

// parsePathQuery splits the path as opa-envoy-plugin does: the part before
// "?" percent-decoded, leading slashes trimmed, split on "/"; the query as a
// map of lists.
func parsePathQuery(p string) (ast.Value, ast.Value, error) {
	rawPath, rawQuery, _ := strings.Cut(p, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, &InputError{Detail: "path: " + err.Error()}
	}
	segs := strings.Split(strings.TrimLeft(decoded, "/"), "/")
	terms := make([]*ast.Term, len(segs))
	for i, s := range segs {
		terms[i] = ast.StringTerm(s)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, &InputError{Detail: "query: " + err.Error()}
	}
	query := ast.NewObject()
	for k, vs := range q {
		vals := make([]*ast.Term, len(vs))
		for i, v := range vs {
			vals[i] = ast.StringTerm(v)
		}
		query.Insert(ast.StringTerm(k), ast.ArrayTerm(vals...))
	}
	return ast.NewArray(terms...), query, nil
}

// parseBody parses a JSON body; other content types give null. A body Envoy
// cut at max_request_bytes is reported as truncated and not parsed.
func parseBody(headers map[string]string, body string, raw []byte) (ast.Value, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return ast.Null{}, true, nil
	}
	if !strings.Contains(headers["content-type"], "application/json") {
		return ast.Null{}, false, nil
	}
	if body == "" {
		body = string(raw)
	}
	if body == "" {
		return ast.Null{}, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, &InputError{Detail: "content-length: " + cl}
		}
		if n > int64(len(body)) {
			return ast.Null{}, true, nil
		}
	}
	var v any
	if err := util.UnmarshalJSON([]byte(body), &v); err != nil {
		return nil, false, &InputError{Detail: "JSON body: " + err.Error()}
	}
	av, err := ast.InterfaceToValue(v)
	if err != nil {
		return nil, false, &InputError{Detail: "JSON body: " + err.Error()}
	}
	return av, false, nil
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

func identityTerm(id *Identity) *ast.Term {
	if id == nil {
		return ast.NullTerm()
	}
	attrs := ast.NewObject()
	keys := make([]string, 0, len(id.Attributes))
	for k := range id.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, err := ast.InterfaceToValue(id.Attributes[k])
		if err != nil {
			continue // claims came from JSON, so this does not happen
		}
		attrs.Insert(ast.StringTerm(k), ast.NewTerm(v))
	}
	return ast.ObjectTerm(
		ast.Item(ast.InternedTerm("sub"), ast.StringTerm(id.Subject)),
		ast.Item(ast.InternedTerm("tenant"), ast.StringTerm(id.Tenant)),
		ast.Item(ast.InternedTerm("issuer"), ast.StringTerm(id.Issuer)),
		ast.Item(ast.InternedTerm("roles"), stringsTerm(id.Roles)),
		ast.Item(ast.InternedTerm("groups"), stringsTerm(id.Groups)),
		ast.Item(ast.InternedTerm("attributes"), ast.NewTerm(attrs)),
		ast.Item(ast.InternedTerm("method"), ast.StringTerm(id.Method)),
	)
}

func tenantTerm(t *config.Tenant) *ast.Term {
	if t == nil {
		return ast.NullTerm()
	}
	features := t.Features
	if features == nil {
		features = []string{}
	}
	return ast.ObjectTerm(
		ast.Item(ast.InternedTerm("id"), ast.StringTerm(t.ID)),
		ast.Item(ast.InternedTerm("plan"), ast.StringTerm(t.Plan)),
		ast.Item(ast.InternedTerm("features"), stringsTerm(features)),
	)
}

// messageToAST converts a message to the value protojson.Marshal would
// produce (default options), without the JSON round trip.
func messageToAST(m protoreflect.Message) ast.Object {
	obj := ast.NewObject()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		obj.Insert(ast.StringTerm(fd.JSONName()), ast.NewTerm(fieldToAST(fd, v)))
		return true
	})
	return obj
}

func fieldToAST(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsMap():
		obj := ast.NewObject()
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			obj.Insert(ast.StringTerm(k.String()), ast.NewTerm(singularToAST(fd.MapValue(), mv)))
			return true
		})
		return obj
	case fd.IsList():
		l := v.List()
		terms := make([]*ast.Term, l.Len())
		for i := range terms {
			terms[i] = ast.NewTerm(singularToAST(fd, l.Get(i)))
		}
		return ast.NewArray(terms...)
	}
	return singularToAST(fd, v)
}

func singularToAST(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10)) // protojson: 64-bit ints are strings
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		return floatToAST(v.Float(), 32)
	case protoreflect.DoubleKind:
		return floatToAST(v.Float(), 64)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name())
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return wellKnownOrMessage(v.Message())
	}
	return ast.Null{}
}

func floatToAST(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, bits))
}

// wellKnownOrMessage handles the google.protobuf types, whose JSON form is
// special (Struct as an object, Timestamp as RFC 3339, ...).
func wellKnownOrMessage(m protoreflect.Message) ast.Value {
	switch x := m.Interface().(type) {
	case *structpb.Struct:
		if v, err := ast.InterfaceToValue(x.AsMap()); err == nil {
			return v
		}
	case *timestamppb.Timestamp:
		if x.IsValid() {
			return ast.String(formatTimestamp(x.AsTime()))
		}
	}
	if strings.HasPrefix(string(m.Descriptor().FullName()), "google.protobuf.") {
		if b, err := protojson.Marshal(m.Interface()); err == nil {
			var v any
			if err := util.UnmarshalJSON(b, &v); err == nil {
				if av, err := ast.InterfaceToValue(v); err == nil {
					return av
				}
			}
		}
	}
	return messageToAST(m)
}

// formatTimestamp is protojson's Timestamp form: RFC 3339 in UTC with 0, 3,
// 6 or 9 fractional digits.
func formatTimestamp(t time.Time) string {
	s := t.UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return s + "Z"
}
