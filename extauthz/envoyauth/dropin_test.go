package envoyauth

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// referenceProtomap is opa-envoy-plugin's algorithm as its protomap.go
// describes it: protoreflect over populated fields by JSON name, messages
// recursively (Struct via AsMap), other values as their Go values; the
// result then goes through ast.InterfaceToValue.
func referenceProtomap(m protoreflect.Message) map[string]any {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return s.AsMap()
	}
	conv := func(k protoreflect.Kind, v protoreflect.Value) any {
		if k == protoreflect.MessageKind {
			return referenceProtomap(v.Message())
		}
		return v.Interface()
	}
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mm := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				mm[k.String()] = conv(fd.MapValue().Kind(), mv)
				return true
			})
			out[fd.JSONName()] = mm
		case fd.IsList():
			var l []any
			for i := 0; i < v.List().Len(); i++ {
				l = append(l, conv(fd.Kind(), v.List().Get(i)))
			}
			out[fd.JSONName()] = l
		default:
			out[fd.JSONName()] = conv(fd.Kind(), v)
		}
		return true
	})
	return out
}

// Drop-in attributes equal opa-envoy-plugin's protomap for a request with
// every commonly set field (the HTTP fast path included).
func TestDropInAttributesMatchProtomap(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"k": "v", "n": 1.5})
	a := &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:   &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5000}, Protocol: corev3.SocketAddress_UDP}}},
			Principal: "spiffe://x", Labels: map[string]string{"a": "b"}, Certificate: "pem",
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Unix(1700000000, 123)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "1", Method: "POST", Path: "/a?b=c", Host: "h", Scheme: "https", Protocol: "HTTP/2", Size: 9,
				Headers: map[string]string{":method": "POST", "x": "y"}, Body: "{}", RawBody: []byte{0, 1, 2},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", RawValue: []byte("v")}}},
			},
		},
		ContextExtensions: map[string]string{"tenant": "acme"},
		MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": md}},
		TlsSession:        &authv3.AttributeContext_TLSSession{Sni: "h"},
	}
	want, err := ast.InterfaceToValue(referenceProtomap(a.ProtoReflect()))
	if err != nil {
		t.Fatal(err)
	}
	if got := dropInAttributes(a, nil); got.Compare(want) != 0 {
		t.Fatalf("drop-in attributes\n got %v\nwant %v", got, want)
	}
}
