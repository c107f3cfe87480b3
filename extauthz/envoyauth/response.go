package envoyauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kailash-gw/kailash/internal/wire"
)

// Decision is what the server knows about a request besides the policy
// result: the pieces response mapping needs.
type Decision struct {
	ID       string
	Tenant   string
	Identity *Identity
	// ClientHeaders are names of the request's headers; every one starting
	// with x-kailash- (in any case) is stripped on allow, the others are
	// ignored (the server lists only those).
	ClientHeaders []string
	// DropIn maps the result exactly as opa-envoy-plugin does: no identity
	// headers, no default deny body; only decision_id is added (to the
	// dynamic metadata).
	DropIn bool
	// IdentityToken, when set, is sent upstream as x-kailash-identity.
	IdentityToken string
}

// ErrBadDecision wraps every policy result that is not a valid decision.
var ErrBadDecision = errors.New("invalid policy decision")

func badDecision(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadDecision, fmt.Sprintf(format, args...))
}

// policyResult is a decoded opa-envoy-plugin style result.
type policyResult struct {
	allowed         bool
	headers         []*corev3.HeaderValueOption
	removeHeaders   []string
	responseHeaders []*corev3.HeaderValueOption
	querySet        []*corev3.QueryParameter
	queryRemove     []string
	body            string
	hasBody         bool
	status          int
	metadata        map[string]any
}

// parseResult accepts a boolean or an object with a boolean "allowed" and the
// optional fields headers, request_headers_to_remove,
// response_headers_to_add, body, http_status and dynamic_metadata. Anything
// else is an error: the caller fails closed.
func parseResult(v any) (*policyResult, error) {
	switch x := v.(type) {
	case bool:
		return &policyResult{allowed: x}, nil
	case map[string]any:
		return parseObject(x)
	}
	return nil, badDecision("result is %T, want a boolean or an object", v)
}

func parseObject(m map[string]any) (*policyResult, error) {
	r := &policyResult{}
	allowed, ok := m["allowed"].(bool)
	if !ok {
		return nil, badDecision(`"allowed" is %s, want a boolean`, describe(m["allowed"]))
	}
	r.allowed = allowed
	var err error
	if r.headers, err = headerOptions(m, "headers"); err != nil {
		return nil, err
	}
	if r.responseHeaders, err = headerOptions(m, "response_headers_to_add"); err != nil {
		return nil, err
	}
	rm, err := resultStrings(m, "request_headers_to_remove")
	if err != nil {
		return nil, err
	}
	for _, name := range rm {
		r.removeHeaders = append(r.removeHeaders, strings.ToLower(name))
	}
	if r.queryRemove, err = resultStrings(m, "query_parameters_to_remove"); err != nil {
		return nil, err
	}
	if r.querySet, err = queryParams(m); err != nil {
		return nil, err
	}
	if raw, ok := m["body"]; ok {
		s, ok := raw.(string)
		if !ok {
			return nil, badDecision(`"body" is %s, want a string`, describe(raw))
		}
		r.body, r.hasBody = s, true
	}
	if raw, ok := m["http_status"]; ok {
		n, ok := raw.(json.Number)
		i, err := n.Int64()
		// As opa-envoy-plugin: a code Envoy's StatusCode enum knows.
		if _, known := typev3.StatusCode_name[int32(i)]; !ok || err != nil || !known || i != int64(int32(i)) {
			return nil, badDecision(`"http_status" is %v, want an HTTP status code`, raw)
		}
		r.status = int(i)
	}
	if raw, ok := m["dynamic_metadata"]; ok {
		md, ok := raw.(map[string]any)
		if !ok {
			return nil, badDecision(`"dynamic_metadata" is %s, want an object`, describe(raw))
		}
		r.metadata = md
	}
	return r, nil
}

func describe(v any) string {
	if v == nil {
		return "missing"
	}
	return fmt.Sprintf("%T", v)
}

// headerOptions reads {"name": "value" | ["v1", "v2"]}, or a list of such
// objects (as opa-envoy-plugin accepts): the first value of a name
// overwrites, further values are appended. Names are sorted within each
// object for a stable response.
func headerOptions(m map[string]any, field string) ([]*corev3.HeaderValueOption, error) {
	raw, ok := m[field]
	if !ok {
		return nil, nil
	}
	var objs []map[string]any
	switch x := raw.(type) {
	case map[string]any:
		objs = []map[string]any{x}
	case []any:
		for _, e := range x {
			o, ok := e.(map[string]any)
			if !ok {
				return nil, badDecision("%q holds %s, want objects", field, describe(e))
			}
			objs = append(objs, o)
		}
	default:
		return nil, badDecision("%q is %s, want an object", field, describe(raw))
	}
	var out []*corev3.HeaderValueOption
	seen := map[string]bool{}
	for _, hm := range objs {
		names := make([]string, 0, len(hm))
		for k := range hm {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, name := range names {
			vals, err := stringOrList(hm[name])
			if err != nil {
				return nil, badDecision("%q[%q]: %v", field, name, err)
			}
			key := strings.ToLower(name)
			for _, val := range vals {
				action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
				if seen[key] {
					action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				}
				seen[key] = true
				out = append(out, header(key, val, action))
			}
		}
	}
	return out, nil
}

func stringOrList(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("holds %s, want strings", describe(e))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("is %s, want a string or a list of strings", describe(v))
}

// resultStrings reads an optional list of strings.
func resultStrings(m map[string]any, field string) ([]string, error) {
	raw, ok := m[field]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, badDecision("%q is %s, want a list of strings", field, describe(raw))
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, badDecision("%q holds %s, want strings", field, describe(e))
		}
		out = append(out, s)
	}
	return out, nil
}

// queryParams reads query_parameters_to_set: {"name": "value" | [values]}.
func queryParams(m map[string]any) ([]*corev3.QueryParameter, error) {
	raw, ok := m["query_parameters_to_set"]
	if !ok {
		return nil, nil
	}
	qm, ok := raw.(map[string]any)
	if !ok {
		return nil, badDecision(`"query_parameters_to_set" is %s, want an object`, describe(raw))
	}
	names := make([]string, 0, len(qm))
	for k := range qm {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []*corev3.QueryParameter
	for _, name := range names {
		vals, err := stringOrList(qm[name])
		if err != nil {
			return nil, badDecision(`"query_parameters_to_set"[%q]: %v`, name, err)
		}
		for _, v := range vals {
			out = append(out, &corev3.QueryParameter{Key: name, Value: v})
		}
	}
	return out, nil
}

func header(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func set(k, v string) *corev3.HeaderValueOption {
	return header(k, v, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
}

// MapDecision turns a policy result into a CheckResponse. It returns whether
// the request is allowed; an error (an invalid result) must become a gRPC
// error so Envoy answers 503.
//
// On allow, the upstream request gets x-kailash-tenant, -user, -roles and
// -decision-id (overwriting), the policy's headers, and loses every other
// client-sent x-kailash-* header. Envoy applies headers_to_remove after the
// headers it sets, so the names set here are never listed for removal (an
// overwrite already replaces the client's value).
func MapDecision(result any, d Decision) (*authv3.CheckResponse, bool, error) {
	r, err := parseResult(result)
	if err != nil {
		return nil, false, err
	}
	md, err := metadata(r.metadata, d)
	if err != nil {
		return nil, false, err
	}
	if d.DropIn {
		return dropInResponse(r, result, md), r.allowed, nil
	}
	if !r.allowed {
		return denied(r, d, md), false, nil
	}
	ours := identityHeaders(d)
	headers := make([]*corev3.HeaderValueOption, 0, len(r.headers)+len(ours))
	for _, h := range r.headers {
		if isIdentityHeader(h.Header.Key) {
			continue // the policy cannot forge the identity headers
		}
		headers = append(headers, h)
	}
	headers = append(headers, ours...)
	// isSet reports whether the response sets name (a handful of headers: a
	// linear scan beats a map).
	isSet := func(name string) bool {
		for _, h := range headers {
			if h.Header.Key == name {
				return true
			}
		}
		return false
	}
	var remove []string
	for _, names := range [][]string{d.ClientHeaders, r.removeHeaders} {
		for _, name := range names {
			name = strings.ToLower(name)
			isOurs := strings.HasPrefix(name, wire.HeaderPrefix)
			fromPolicy := slices.Contains(r.removeHeaders, name)
			if (!isOurs && !fromPolicy) || isSet(name) || slices.Contains(remove, name) {
				continue
			}
			remove = append(remove, name)
		}
	}
	sort.Strings(remove)
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:                 headers,
			HeadersToRemove:         remove,
			ResponseHeadersToAdd:    r.responseHeaders,
			QueryParametersToSet:    r.querySet,
			QueryParametersToRemove: r.queryRemove,
		}},
		DynamicMetadata: md,
	}, true, nil
}

// dropInResponse is opa-envoy-plugin's mapping: a boolean result sets only
// the status (Envoy then answers 403 itself on deny); an object result sets
// the policy's headers, removals and query changes on allow, or its
// headers, body and http_status (default 403) on deny.
func dropInResponse(r *policyResult, result any, md *structpb.Struct) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}, DynamicMetadata: md}
	if r.allowed {
		resp.Status.Code = int32(code.Code_OK)
	}
	if _, isObject := result.(map[string]any); !isObject {
		return resp
	}
	if r.allowed {
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:                 r.headers,
			HeadersToRemove:         r.removeHeaders,
			ResponseHeadersToAdd:    r.responseHeaders,
			QueryParametersToSet:    r.querySet,
			QueryParametersToRemove: r.queryRemove,
		}}
		return resp
	}
	status := r.status
	if status == 0 {
		status = 403
	}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: r.headers,
		Body:    r.body,
	}}
	return resp
}

// DryRunAllow is the answer in dry-run mode for a request the policy
// denied: allowed, as opa-envoy-plugin answers (an empty OK response in
// drop-in mode; with the identity headers otherwise), with the decision_id
// in the dynamic metadata.
func DryRunAllow(d Decision) *authv3.CheckResponse {
	if d.DropIn {
		md, _ := metadata(nil, d)
		return &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: md,
		}
	}
	resp, _, _ := MapDecision(true, d) // a boolean never fails to map
	return resp
}

// identityHeaders are the headers set on the upstream request on allow,
// allocated together.
func identityHeaders(d Decision) []*corev3.HeaderValueOption {
	var kv [5][2]string
	n := 0
	add := func(k, v string) { kv[n] = [2]string{k, v}; n++ }
	add(wire.HeaderDecisionID, d.ID)
	add(wire.HeaderTenant, d.Tenant)
	if d.Identity != nil {
		add(wire.HeaderUser, d.Identity.Subject)
		add(wire.HeaderRoles, strings.Join(d.Identity.Roles, ","))
	}
	if d.IdentityToken != "" {
		add(wire.HeaderIdentity, d.IdentityToken)
	}
	opts := make([]corev3.HeaderValueOption, n)
	values := make([]corev3.HeaderValue, n)
	out := make([]*corev3.HeaderValueOption, n)
	for i := range n {
		values[i].Key, values[i].Value = kv[i][0], kv[i][1]
		opts[i].Header, opts[i].AppendAction = &values[i], corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}

func isIdentityHeader(name string) bool {
	switch name {
	case wire.HeaderTenant, wire.HeaderUser, wire.HeaderRoles, wire.HeaderDecisionID, wire.HeaderIdentity:
		return true
	}
	return false
}

func denied(r *policyResult, d Decision, md *structpb.Struct) *authv3.CheckResponse {
	status := r.status
	if status == 0 {
		status = 403
	}
	headers := make([]*corev3.HeaderValueOption, 0, len(r.headers)+2)
	for _, h := range r.headers {
		if h.Header.Key != wire.HeaderDecisionID {
			headers = append(headers, h)
		}
	}
	body := r.body
	if !r.hasBody {
		b, _ := json.Marshal(map[string]string{"error": "forbidden", "decision_id": d.ID})
		body = string(b)
		headers = append(headers, set("content-type", "application/json"))
	}
	headers = append(headers, set(wire.HeaderDecisionID, d.ID))
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headers,
			Body:    body,
		}},
		DynamicMetadata: md,
	}
}

// metadata is the policy's dynamic_metadata plus ours (which wins): read by
// the rate-limit filter and access logs.
func metadata(policy map[string]any, d Decision) (*structpb.Struct, error) {
	fields := make(map[string]*structpb.Value, len(policy)+4)
	for k, v := range policy {
		if !utf8.ValidString(k) {
			return nil, badDecision("dynamic_metadata: invalid UTF-8 in key %q", k)
		}
		sv, err := structpb.NewValue(plain(v))
		if err != nil {
			return nil, badDecision("dynamic_metadata: %v", err)
		}
		fields[k] = sv
	}
	fields[wire.MetadataDecisionID] = structpb.NewStringValue(d.ID)
	if !d.DropIn {
		fields[wire.MetadataTenant] = structpb.NewStringValue(d.Tenant)
		// The rate-limit descriptors read these: only we set them, never
		// the policy (an anonymous caller has none of them).
		delete(fields, wire.MetadataUser)
		delete(fields, wire.MetadataRoles)
		delete(fields, wire.MetadataHasRole)
		if d.Identity != nil {
			fields[wire.MetadataUser] = structpb.NewStringValue(d.Identity.Subject)
			roles := make([]*structpb.Value, len(d.Identity.Roles))
			// has_role is {role: role}: Envoy's metadata rate-limit action
			// reads a string by path (has_role.<R>), never a list element.
			has := make(map[string]*structpb.Value, len(d.Identity.Roles))
			for i, r := range d.Identity.Roles {
				roles[i] = structpb.NewStringValue(r)
				has[r] = structpb.NewStringValue(r)
			}
			fields[wire.MetadataRoles] = structpb.NewListValue(&structpb.ListValue{Values: roles})
			fields[wire.MetadataHasRole] = structpb.NewStructValue(&structpb.Struct{Fields: has})
		}
	}
	return &structpb.Struct{Fields: fields}, nil
}

// plain converts OPA's json.Number into float64 for structpb.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// Unauthenticated is the 401 for an identity failure.
func Unauthenticated(e *AuthError, decisionID string) *authv3.CheckResponse {
	challenge := `Bearer realm="kailash"`
	if e.Reason != ReasonMissingToken {
		challenge = fmt.Sprintf(`Bearer realm="kailash", error="invalid_token", error_description="%s"`, e.Reason)
	}
	b, _ := json.Marshal(map[string]string{"error": "unauthenticated", "reason": string(e.Reason), "decision_id": decisionID})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_UNAUTHENTICATED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			Headers: []*corev3.HeaderValueOption{
				set("www-authenticate", challenge),
				set("content-type", "application/json"),
				set(wire.HeaderDecisionID, decisionID),
			},
			Body: string(b),
		}},
		DynamicMetadata: idMetadata(decisionID),
	}
}

func idMetadata(id string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetadataDecisionID: structpb.NewStringValue(id)}}
}

// BadRequest is the 400 for a request that cannot become policy input, as
// opa-envoy-plugin answers it: status PERMISSION_DENIED, body
// "request_parse_error: <detail>". The decision_id is in the dynamic
// metadata and x-kailash-decision-id; in drop-in mode the response carries
// no decision id at all, as opa-envoy-plugin's (its parse-error denial has
// nil dynamic metadata; the id is only in its decision log).
func BadRequest(e *InputError, d Decision) *authv3.CheckResponse {
	var md *structpb.Struct
	var headers []*corev3.HeaderValueOption
	if !d.DropIn {
		md = idMetadata(d.ID)
		headers = []*corev3.HeaderValueOption{set("content-type", "text/plain"), set(wire.HeaderDecisionID, d.ID)}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: e.Error()},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_BadRequest},
			Headers: headers,
			Body:    e.Error(),
		}},
		DynamicMetadata: md,
	}
}

// UnknownHost denies a Check that carries no tenant: Envoy found no route
// for the request's host (per-tenant routes: no scope), so there is no
// tenant whose policy could decide. 404, as for any unknown host.
func UnknownHost(decisionID string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: "no tenant serves this host"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_NotFound},
			Headers: []*corev3.HeaderValueOption{set("content-type", "text/plain"), set(wire.HeaderDecisionID, decisionID)},
			Body:    wire.UnknownHostBody,
		}},
		DynamicMetadata: idMetadata(decisionID),
	}
}
