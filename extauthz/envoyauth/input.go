package envoyauth

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

// InputError means the request itself cannot be turned into policy input
// (no HTTP attributes, a bad percent escape or control character in the
// path, a body that does not parse as its content type says). The caller
// answers 400 with a request_parse_error body, as opa-envoy-plugin does:
// the request is refused, not let through.
type InputError struct{ Detail string }

func (e *InputError) Error() string { return "request_parse_error: " + e.Detail }

// InputOptions change how input is built.
type InputOptions struct {
	// SkipBodyParse leaves parsed_body and truncated_body out of the input
	// (opa-envoy-plugin's skip-request-body-parse).
	SkipBodyParse bool
	// DropIn builds opa-envoy-plugin's input exactly: no identity and no
	// tenant (the policy decides who the caller is).
	DropIn bool
	// Need, when set, says which input paths the policy can read (the
	// decision cache's plan, policies.InputNeed.Needs): the attributes the
	// policy never reads and a parsed_body it never reads are left out —
	// the body is still checked, so a malformed one is refused all the
	// same. Nil builds everything.
	Need func(path ...string) bool
}

// BuildInput turns a Check request, the verified identity and the route's
// tenant into the policy input document. It is pure (no I/O) and matches
// opa-envoy-plugin's input — attributes (the request's AttributeContext as
// protojson: camelCase names, unset fields omitted), parsed_path,
// parsed_query, parsed_body, truncated_body, version — and adds
// source_principal, identity and tenant.
func BuildInput(req *authv3.CheckRequest, id *Identity, tenant *config.Tenant) (ast.Value, error) {
	return BuildInputWith(req, id, tenant, InputOptions{})
}

// BuildInputWith is BuildInput with options.
func BuildInputWith(req *authv3.CheckRequest, id *Identity, tenant *config.Tenant, opts InputOptions) (ast.Value, error) {
	return BuildInputTerms(req, IdentityTerm(id), TenantTerm(tenant), opts)
}

// BuildInputTerms is BuildInputWith with the identity and tenant already
// terms (ignored in drop-in mode): the server keeps each tenant's term.
func BuildInputTerms(req *authv3.CheckRequest, id, tenant *ast.Term, opts InputOptions) (ast.Value, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		return nil, &InputError{Detail: "missing required attributes in v3 CheckRequest"}
	}
	path, query, err := parsePathQuery(httpReq.GetPath())
	if err != nil {
		return nil, err
	}
	obj := ast.NewObjectWithCapacity(9)
	need := opts.Need
	if opts.DropIn {
		obj.Insert(keyAttributes, ast.NewTerm(dropInAttributes(req.GetAttributes(), need)))
		obj.Insert(keyVersion, dropInVersionTerm)
	} else {
		obj.Insert(keyAttributes, ast.NewTerm(attributesToAST(req.GetAttributes(), need)))
		obj.Insert(keyVersion, versionTerm)
	}
	obj.Insert(keyParsedPath, ast.NewTerm(path))
	obj.Insert(keyParsedQuery, ast.NewTerm(query))
	if !opts.SkipBodyParse {
		body, truncated, err := parseBodyNeed(httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody(), need == nil || need("parsed_body"))
		if err != nil {
			return nil, err
		}
		obj.Insert(keyParsedBody, ast.NewTerm(body))
		obj.Insert(keyTruncatedBody, ast.InternedTerm(truncated))
	}
	if !opts.DropIn {
		obj.Insert(keyIdentity, id)
		obj.Insert(keyTenant, tenant)
	}
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		obj.Insert(keySourcePrincipal, ast.StringTerm(p))
	}
	return obj, nil
}

// Keys and constant values of the input document, made once: terms are
// never modified, so every input may share them.
var (
	keyAttributes, keyParsedPath, keyParsedQuery = ast.StringTerm("attributes"), ast.StringTerm("parsed_path"), ast.StringTerm("parsed_query")
	keyVersion, keyParsedBody, keyTruncatedBody  = ast.StringTerm("version"), ast.StringTerm("parsed_body"), ast.StringTerm("truncated_body")
	keyIdentity, keyTenant, keySourcePrincipal   = ast.StringTerm("identity"), ast.StringTerm("tenant"), ast.StringTerm("source_principal")
	versionTerm                                  = ast.ObjectTerm(
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
		ast.Item(ast.StringTerm(wire.PolicyInputKey), ast.StringTerm(wire.PolicyInputVersion)),
	)
	emptyObject ast.Value = ast.NewObject()
)

// parsePathQuery splits the path as opa-envoy-plugin does: the part before
// "?" percent-decoded, leading slashes trimmed, split on "/"; the query as a
// map of lists, malformed pairs left out (Go's url.Values, as there). One
// deliberate difference: a path starting with "//" is a path here, where
// opa-envoy-plugin's url.Parse reads its first segment as a host and drops
// it from parsed_path.
func parsePathQuery(p string) (ast.Value, ast.Value, error) {
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return nil, nil, &InputError{Detail: "error parsing path and query: invalid control character in URL"}
		}
	}
	rawPath, rawQuery, _ := strings.Cut(p, "?")
	rawPath, _, _ = strings.Cut(rawPath, "#")
	decoded, err := url.PathUnescape(rawPath) // returns rawPath itself when there is no escape
	if err != nil {
		return nil, nil, &InputError{Detail: "error parsing path and query: " + err.Error()}
	}
	decoded = strings.TrimLeft(decoded, "/")
	terms := make([]*ast.Term, 0, strings.Count(decoded, "/")+1)
	for {
		seg, rest, more := strings.Cut(decoded, "/")
		terms = append(terms, stringTerm(seg))
		if !more {
			break
		}
		decoded = rest
	}
	rawQuery, _, _ = strings.Cut(rawQuery, "#")
	if rawQuery == "" {
		return ast.NewArray(terms...), emptyObject, nil
	}
	q, _ := url.ParseQuery(rawQuery) // keeps the well-formed pairs
	query := ast.NewObjectWithCapacity(len(q))
	for k, vs := range q {
		query.Insert(ast.StringTerm(k), stringsTerm(vs))
	}
	return ast.NewArray(terms...), query, nil
}

// parseBodyNeed parses the body by content type as opa-envoy-plugin does: JSON
// as a document, application/x-www-form-urlencoded as {name: [values]},
// multipart/form-data as {name: [values]} (a part whose content type is JSON
// as a document, any other as a string); other types, and no body, give
// null. A body shorter than its content-length, or one Envoy marked partial,
// is truncated and not parsed. Without need (the policy never reads
// parsed_body) a JSON body is only checked — json.Valid accepts what
// util.UnmarshalJSON does: one value, nothing after it — its value null,
// and a malformed one parsed for the error.
func parseBodyNeed(headers map[string]string, body string, raw []byte, need bool) (ast.Value, bool, error) {
	ct, ok := headers["content-type"]
	if !ok {
		return ast.Null{}, false, nil
	}
	kind := ""
	switch {
	case strings.Contains(ct, "application/json"):
		kind = "json"
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		kind = "form"
	case strings.Contains(ct, "multipart/form-data"):
		kind = "multipart"
	default:
		return ast.Null{}, false, nil
	}
	if body == "" {
		body = string(raw)
	}
	if body == "" {
		return ast.Null{}, false, nil
	}
	if headers["x-envoy-auth-partial-body"] == "true" {
		return ast.Null{}, true, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, &InputError{Detail: "error parsing request body: content-length: " + err.Error()}
		}
		if n != -1 && n > int64(len(body)) {
			return ast.Null{}, true, nil
		}
	}
	var v ast.Value
	var err error
	switch kind {
	case "json":
		if !need && json.Valid([]byte(body)) {
			return ast.Null{}, false, nil
		}
		v, err = jsonToAST([]byte(body))
	case "form":
		var q url.Values
		if q, err = url.ParseQuery(body); err == nil {
			obj := ast.NewObject()
			for k, vs := range q {
				obj.Insert(ast.StringTerm(k), stringsTerm(vs))
			}
			v = obj
		}
	case "multipart":
		v, err = parseMultipart(ct, body)
	}
	if err != nil {
		return nil, false, &InputError{Detail: "error parsing request body: " + err.Error()}
	}
	return v, false, nil
}

func jsonToAST(b []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(b, &x); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(x)
}

// parseMultipart reads every named part; without a boundary the body is not
// parsed (null), as in opa-envoy-plugin.
func parseMultipart(ct, body string) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.Null{}, nil
	}
	values := map[string][]*ast.Term{}
	var names []string
	mr := multipart.NewReader(strings.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := part.FormName()
		if name == "" {
			continue
		}
		b, err := io.ReadAll(part)
		if err != nil {
			return nil, err
		}
		var t *ast.Term
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			v, err := jsonToAST(b)
			if err != nil {
				return nil, err
			}
			t = ast.NewTerm(v)
		} else {
			t = ast.StringTerm(string(b))
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = append(values[name], t)
	}
	obj := ast.NewObject()
	for _, n := range names {
		obj.Insert(ast.StringTerm(n), ast.ArrayTerm(values[n]...))
	}
	return obj, nil
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

// IdentityTerm is input.identity for id (null for nil), converted once per
// Identity and kept on it.
func IdentityTerm(id *Identity) *ast.Term {
	if id == nil {
		return ast.NullTerm()
	}
	if t := id.term.Load(); t != nil {
		return t
	}
	t := newIdentityTerm(id)
	id.term.Store(t)
	return t
}

// newIdentityTerm builds input.identity. Its value is shared by concurrent
// evaluations, which only read it.
func newIdentityTerm(id *Identity) *ast.Term {
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

// TenantTerm is input.tenant for t (null for nil): id, plan, features,
// and admin (true for tenant_store.admin_tenant, whose domains serve the
// admin API).
func TenantTerm(t *config.Tenant) *ast.Term {
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
		ast.Item(ast.InternedTerm("admin"), ast.BooleanTerm(t.Admin)),
	)
}

// messageToAST converts a message to the value protojson.Marshal would
// produce (default options), without the JSON round trip.
func messageToAST(m protoreflect.Message) ast.Object {
	obj := ast.NewObject()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		obj.Insert(fieldKey(fd), ast.NewTerm(fieldToAST(fd, v)))
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
	case *authv3.AttributeContext_HttpRequest:
		return httpRequestToAST(x)
	case *authv3.AttributeContext:
		return attributesToAST(x, nil)
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

// httpRequestFields is the number of fields httpRequestToAST handles; a
// test fails when a go-control-plane upgrade adds one.
const httpRequestFields = 13

// httpRequestToAST is messageToAST for the request's HTTP attributes, the
// bulk of every input, written out: reading the Go fields (the headers map
// above all) is several times cheaper than going through protoreflect. As
// protojson, proto3 zero values are left out.
func httpRequestToAST(h *authv3.AttributeContext_HttpRequest) ast.Value {
	obj := ast.NewObjectWithCapacity(8)
	str := func(key *ast.Term, v string) {
		if v != "" {
			obj.Insert(key, ast.StringTerm(v))
		}
	}
	str(keyID, h.Id)
	if h.Method != "" {
		obj.Insert(keyMethod, stringTerm(h.Method))
	}
	if len(h.Headers) > 0 {
		obj.Insert(keyHeaders, ast.NewTerm(stringMapToAST(h.Headers)))
	}
	if h.HeaderMap != nil {
		obj.Insert(keyHeaderMap, ast.NewTerm(messageToAST(h.HeaderMap.ProtoReflect())))
	}
	str(keyPath, h.Path)
	str(keyHost, h.Host)
	if h.Scheme != "" {
		obj.Insert(keyScheme, stringTerm(h.Scheme))
	}
	str(keyQuery, h.Query)
	str(keyFragment, h.Fragment)
	if h.Size != 0 {
		obj.Insert(keySize, ast.StringTerm(strconv.FormatInt(h.Size, 10)))
	}
	if h.Protocol != "" {
		obj.Insert(keyProtocol, stringTerm(h.Protocol))
	}
	str(keyBody, h.Body)
	if len(h.RawBody) > 0 {
		obj.Insert(keyRawBody, ast.StringTerm(base64.StdEncoding.EncodeToString(h.RawBody)))
	}
	return obj
}

// Keys of httpRequestToAST's object, made once (terms are never modified).
var (
	keyID, keyMethod, keyHeaders, keyHeaderMap = ast.StringTerm("id"), ast.StringTerm("method"), ast.StringTerm("headers"), ast.StringTerm("headerMap")
	keyPath, keyHost, keyScheme, keyQuery      = ast.StringTerm("path"), ast.StringTerm("host"), ast.StringTerm("scheme"), ast.StringTerm("query")
	keyFragment, keySize, keyProtocol, keyBody = ast.StringTerm("fragment"), ast.StringTerm("size"), ast.StringTerm("protocol"), ast.StringTerm("body")
	keyRawBody                                 = ast.StringTerm("rawBody")
)

// formatTimestamp is protojson's Timestamp form: RFC 3339 in UTC with 0, 3,
// 6 or 9 fractional digits.
func formatTimestamp(t time.Time) string {
	s := t.UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return s + "Z"
}

// The messages around the HTTP request that Envoy sends on every Check
// (AttributeContext, its peers and their socket addresses, the request) are
// converted field by field too; the field counts below are checked by a test
// so that a go-control-plane upgrade adding a field fails it.
const (
	attributeContextFields = 7
	peerFields             = 5
	requestFields          = 2
	socketAddressFields    = 7
)

// attributesToAST is messageToAST for the whole AttributeContext.
func attributesToAST(a *authv3.AttributeContext, need func(...string) bool) ast.Value {
	obj := ast.NewObjectWithCapacity(4)
	if a == nil {
		return obj
	}
	// Only what the policy can read (InputOptions.Need).
	want := func(k *ast.Term) bool { return need == nil || need("attributes", string(k.Value.(ast.String))) }
	if a.Source != nil && want(keySource) {
		obj.Insert(keySource, ast.NewTerm(peerToAST(a.Source)))
	}
	if a.Destination != nil && want(keyDestination) {
		obj.Insert(keyDestination, ast.NewTerm(peerToAST(a.Destination)))
	}
	if a.Request != nil && want(keyRequest) {
		r := ast.NewObjectWithCapacity(2)
		if a.Request.Time != nil {
			r.Insert(keyTime, ast.NewTerm(wellKnownOrMessage(a.Request.Time.ProtoReflect())))
		}
		if a.Request.Http != nil {
			r.Insert(keyHTTP, ast.NewTerm(httpRequestToAST(a.Request.Http)))
		}
		obj.Insert(keyRequest, ast.NewTerm(r))
	}
	if len(a.ContextExtensions) > 0 && want(keyContextExtensions) {
		obj.Insert(keyContextExtensions, ast.NewTerm(stringMapToAST(a.ContextExtensions)))
	}
	if a.MetadataContext != nil && want(keyMetadataContext) {
		obj.Insert(keyMetadataContext, ast.NewTerm(messageToAST(a.MetadataContext.ProtoReflect())))
	}
	if a.RouteMetadataContext != nil && want(keyRouteMetadataContext) {
		obj.Insert(keyRouteMetadataContext, ast.NewTerm(messageToAST(a.RouteMetadataContext.ProtoReflect())))
	}
	if a.TlsSession != nil && want(keyTLSSession) {
		obj.Insert(keyTLSSession, ast.NewTerm(messageToAST(a.TlsSession.ProtoReflect())))
	}
	return obj
}

func peerToAST(p *authv3.AttributeContext_Peer) ast.Value {
	obj := ast.NewObjectWithCapacity(2)
	if p.Address != nil {
		var addr ast.Value
		if sa := p.Address.GetSocketAddress(); sa != nil {
			addr = ast.NewObject(ast.Item(keySocketAddress, ast.NewTerm(socketAddressToAST(sa))))
		} else {
			addr = messageToAST(p.Address.ProtoReflect())
		}
		obj.Insert(keyAddress, ast.NewTerm(addr))
	}
	if p.Service != "" {
		obj.Insert(keyService, ast.StringTerm(p.Service))
	}
	if len(p.Labels) > 0 {
		obj.Insert(keyLabels, ast.NewTerm(stringMapToAST(p.Labels)))
	}
	if p.Principal != "" {
		obj.Insert(keyPrincipal, ast.StringTerm(p.Principal))
	}
	if p.Certificate != "" {
		obj.Insert(keyCertificate, ast.StringTerm(p.Certificate))
	}
	return obj
}

func socketAddressToAST(sa *corev3.SocketAddress) ast.Value {
	obj := ast.NewObjectWithCapacity(2)
	if sa.Protocol != corev3.SocketAddress_TCP {
		obj.Insert(keyProtocol, ast.NewTerm(singularToAST(socketProtocolField, protoreflect.ValueOfEnum(sa.Protocol.Number()))))
	}
	if sa.Address != "" {
		obj.Insert(keyAddress, ast.StringTerm(sa.Address))
	}
	switch ps := sa.PortSpecifier.(type) {
	case *corev3.SocketAddress_PortValue:
		obj.Insert(keyPortValue, ast.UIntNumberTerm(uint64(ps.PortValue)))
	case *corev3.SocketAddress_NamedPort:
		obj.Insert(keyNamedPort, ast.StringTerm(ps.NamedPort))
	}
	if sa.ResolverName != "" {
		obj.Insert(keyResolverName, ast.StringTerm(sa.ResolverName))
	}
	if sa.Ipv4Compat {
		obj.Insert(keyIpv4Compat, ast.InternedTerm(true))
	}
	if sa.NetworkNamespaceFilepath != "" {
		obj.Insert(keyNetnsPath, ast.StringTerm(sa.NetworkNamespaceFilepath))
	}
	return obj
}

var socketProtocolField = (&corev3.SocketAddress{}).ProtoReflect().Descriptor().Fields().ByName("protocol")

// Keys of attributesToAST's objects.
var (
	keySource, keyDestination, keyRequest, keyTime = ast.StringTerm("source"), ast.StringTerm("destination"), ast.StringTerm("request"), ast.StringTerm("time")
	keyHTTP, keyContextExtensions                  = ast.StringTerm("http"), ast.StringTerm("contextExtensions")
	keyMetadataContext, keyRouteMetadataContext    = ast.StringTerm("metadataContext"), ast.StringTerm("routeMetadataContext")
	keyTLSSession, keyAddress, keyService          = ast.StringTerm("tlsSession"), ast.StringTerm("address"), ast.StringTerm("service")
	keyLabels, keyPrincipal, keyCertificate        = ast.StringTerm("labels"), ast.StringTerm("principal"), ast.StringTerm("certificate")
	keySocketAddress, keyPortValue, keyNamedPort   = ast.StringTerm("socketAddress"), ast.StringTerm("portValue"), ast.StringTerm("namedPort")
	keyResolverName, keyIpv4Compat, keyNetnsPath   = ast.StringTerm("resolverName"), ast.StringTerm("ipv4Compat"), ast.StringTerm("networkNamespaceFilepath")
)

func stringMapToAST(m map[string]string) ast.Object {
	obj := ast.NewObjectWithCapacity(len(m))
	for k, v := range m {
		obj.Insert(stringTerm(k), ast.StringTerm(v))
	}
	return obj
}

// fieldKeys caches the JSON name term of every field messageToAST has met:
// a finite set, fixed by the compiled-in descriptors.
var fieldKeys sync.Map // protoreflect.FieldDescriptor → *ast.Term

func fieldKey(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := fieldKeys.Load(fd); ok {
		return t.(*ast.Term)
	}
	t, _ := fieldKeys.LoadOrStore(fd, ast.StringTerm(fd.JSONName()))
	return t.(*ast.Term)
}

// commonStrings are shared terms for the strings most requests repeat
// (header names, methods, schemes, protocols, the first path segments);
// stringTerm hands them out instead of allocating. The map is read-only
// after init.
var commonStrings = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, s := range []string{
		// Envoy's pseudo-headers and the headers most requests carry.
		":authority", ":method", ":path", ":scheme", ":protocol", "accept", "accept-encoding", "accept-language",
		"authorization", "cache-control", "connection", "content-length", "content-type", "cookie", "host",
		"origin", "referer", "user-agent", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
		"x-forwarded-client-cert", "x-request-id", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms",
		"x-envoy-auth-partial-body", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
		"traceparent", "tracestate", "te", "upgrade", "sec-websocket-key", "sec-websocket-version",
		"x-real-ip", "forwarded", "if-none-match", "if-modified-since", "pragma", "dnt",
		// Methods, schemes, protocols.
		"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
		"http", "https", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
		// Path segments.
		"", "v1", "v2", "api", "workflows", "executions", "events", "ws", "auth", "cancel", "healthz",
	} {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

// stringTerm is ast.StringTerm, shared for the commonest strings.
func stringTerm(s string) *ast.Term {
	if t, ok := commonStrings[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}
