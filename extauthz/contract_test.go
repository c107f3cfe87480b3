package extauthz

// opa-envoy-plugin's exact contract in drop-in mode (issue 14, item 3).
// Each test names the opa-envoy-plugin behaviour it matches; the reference
// is open-policy-agent/opa-envoy-plugin (envoyauth/protomap.go,
// envoyauth/request.go, envoyauth/response.go, internal/internal.go and
// their tests), v1.1.0-envoy-1 and later.

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// echoPolicy allows and echoes parts of its input as response headers.
const echoPolicy = `package envoy.authz

allow := {"allowed": true, "headers": {
	"x-time": json.marshal(object.get(input.attributes.request, "time", null)),
	"x-size": json.marshal(object.get(input.attributes.request.http, "size", null)),
	"x-version": json.marshal(input.version),
}}
`

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func echoed(t *testing.T, resp *authv3.CheckResponse) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return got
}

// opa-envoy-plugin: envoyauth.NewEvalResult sets DecisionID to
// uuid.NewString() (a random version 4 UUID); internal.go puts it in the
// response's dynamic metadata as decision_id and in the decision log; its
// test checks 36 characters.
func TestDropInDecisionIDIsUUIDv4(t *testing.T) {
	cfg := dropInConfig(t, policyDir(t, echoPolicy))
	cfg.Policy.DecisionLogs.Console = true
	var out bytes.Buffer
	r := startDropIn(t, cfg, &out)
	resp, err := r.client.Check(t.Context(), dropInReq("GET", "/x", "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	if !uuidV4.MatchString(id) {
		t.Fatalf("decision_id %q is not a v4 UUID", id)
	}
	r.stop()
	var ev map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &ev); err != nil {
		t.Fatalf("decision log %q: %v", out.String(), err)
	}
	if ev["decision_id"] != id {
		t.Fatalf("decision log decision_id %v, response %q", ev["decision_id"], id)
	}
}

// opa-envoy-plugin: RequestToInput builds the v3 input with protomap
// (protoreflect, JSON names, Go values into ast.InterfaceToValue), not
// protojson: a google.protobuf.Timestamp is the object {seconds, nanos}
// (not an RFC 3339 string) and an int64 such as http.size is a number
// (not a string). (Before v1.1.0-envoy-1 it was protojson.)
func TestDropInTimestampIsSecondsNanos(t *testing.T) {
	r := startDropIn(t, dropInConfig(t, policyDir(t, echoPolicy)), nil)
	req := dropInReq("GET", "/x", "", "", "")
	req.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 5}
	req.Attributes.Request.Http.Size = 42
	resp, err := r.client.Check(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	h := echoed(t, resp)
	if h["x-time"] != `{"nanos":5,"seconds":1700000000}` {
		t.Errorf("input.attributes.request.time = %s", h["x-time"])
	}
	if h["x-size"] != `42` {
		t.Errorf("input.attributes.request.http.size = %s", h["x-size"])
	}
	// protomap leaves zero fields out: a whole second has no nanos.
	req.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: 1700000000}
	if resp, err = r.client.Check(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if got := echoed(t, resp)["x-time"]; got != `{"seconds":1700000000}` {
		t.Errorf("whole-second time = %s", got)
	}
}

// opa-envoy-plugin: input.version is v3Info, exactly
// {"ext_authz": "v3", "encoding": "protojson"}.
func TestDropInVersionHasExactlyTheirKeys(t *testing.T) {
	r := startDropIn(t, dropInConfig(t, policyDir(t, echoPolicy)), nil)
	resp, err := r.client.Check(t.Context(), dropInReq("GET", "/x", "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := echoed(t, resp)["x-version"]; got != `{"encoding":"protojson","ext_authz":"v3"}` {
		t.Fatalf("input.version = %s", got)
	}
}

// opa-envoy-plugin: an evaluation error (undefined decision included) or an
// unusable decision is returned from Check as a plain Go error, which
// grpc-go sends as status Unknown (its TestCheckEvalErrorWithLogger expects
// an error and no response).
func TestDropInEvalErrorIsUnknown(t *testing.T) {
	for name, pol := range map[string]string{
		"undefined":    "package envoy.authz\nallow if input.parsed_path[0] == \"x\"\n",
		"conflict":     "package envoy.authz\nallow := true if input.parsed_path[0] == \"y\"\nallow := false if true\n",
		"bad decision": "package envoy.authz\nallow := \"yes\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			r := startDropIn(t, dropInConfig(t, policyDir(t, pol)), nil)
			resp, err := r.client.Check(t.Context(), dropInReq("GET", "/y", "", "", ""))
			if status.Code(err) != codes.Unknown || resp != nil {
				t.Fatalf("want gRPC Unknown, got %v %v", resp, err)
			}
		})
	}
}

// opa-envoy-plugin: a request that cannot become input (RequestParseErr) is
// denied 400 with body "request_parse_error: …" and DynamicMetadata nil:
// no decision_id in the response (the decision log still has one).
func TestDropInParseErrorHasNoDecisionID(t *testing.T) {
	r := startDropIn(t, dropInConfig(t, policyDir(t, echoPolicy)), nil)
	resp, err := r.client.Check(t.Context(), dropInReq("POST", "/x", "", "application/json", "{not json"))
	if err != nil {
		t.Fatal(err)
	}
	den := resp.GetDeniedResponse()
	if den.GetStatus().GetCode() != 400 || !strings.HasPrefix(den.GetBody(), "request_parse_error: ") {
		t.Fatalf("parse error response %v", resp)
	}
	if resp.GetDynamicMetadata() != nil {
		t.Fatalf("dynamic metadata %v, want none", resp.GetDynamicMetadata())
	}
	for _, h := range den.GetHeaders() {
		if strings.Contains(strings.ToLower(h.GetHeader().GetKey()), "decision") {
			t.Fatalf("header %v carries a decision id", h)
		}
	}
}
