package envoyauth

// Drop-in mode's attributes: opa-envoy-plugin (v1.1.0-envoy-1 and later,
// envoyauth/protomap.go) does not use protojson for the v3 CheckRequest
// but walks the message with protoreflect, keyed by JSON names, and hands
// the Go values to ast.InterfaceToValue. So, unlike protojson:
// google.protobuf.Timestamp (attributes.request.time) is an object
// {"seconds": n, "nanos": n} (zero fields left out), 64-bit integers
// (request.http.size) are numbers, enums are numbers. Struct fields are
// their AsMap form; bytes are base64 strings (InterfaceToValue's JSON
// round trip of []byte). Unset fields are left out, as there.

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// dropInVersionTerm is opa-envoy-plugin's input.version for v3 requests:
// exactly {"ext_authz": "v3", "encoding": "protojson"}.
var dropInVersionTerm = ast.ObjectTerm(
	ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
	ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
)

func dropInAttributes(a *authv3.AttributeContext, need func(...string) bool) ast.Value {
	if a == nil {
		return emptyObject
	}
	if need == nil {
		return protomapAST(a.ProtoReflect())
	}
	obj := ast.NewObject()
	a.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if name := fd.JSONName(); need("attributes", name) {
			obj.Insert(ast.StringTerm(name), ast.NewTerm(protomapField(fd, v)))
		}
		return true
	})
	return obj
}

// protomapAST converts a message as opa-envoy-plugin's protomap followed by
// ast.InterfaceToValue does.
func protomapAST(m protoreflect.Message) ast.Value {
	switch x := m.Interface().(type) {
	case *structpb.Struct:
		if v, err := ast.InterfaceToValue(x.AsMap()); err == nil {
			return v
		}
		return emptyObject
	case *authv3.AttributeContext_HttpRequest:
		// The bulk of every input, on httpRequestToAST's fast path: its
		// fields are strings, a string map and bytes (base64), the same
		// here, but for size, a number here.
		obj := httpRequestToAST(x).(ast.Object)
		if x.Size != 0 {
			obj.Insert(keySize, ast.NumberTerm(json.Number(strconv.FormatInt(x.Size, 10))))
		}
		return obj
	}
	obj := ast.NewObject()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		obj.Insert(ast.StringTerm(fd.JSONName()), ast.NewTerm(protomapField(fd, v)))
		return true
	})
	return obj
}

// protomapField is one set field's value.
func protomapField(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch {
	case fd.IsMap():
		mo := ast.NewObject()
		vd := fd.MapValue()
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			mo.Insert(ast.StringTerm(k.String()), ast.NewTerm(protomapScalar(vd, mv)))
			return true
		})
		return mo
	case fd.IsList():
		l := v.List()
		terms := make([]*ast.Term, l.Len())
		for i := range terms {
			terms[i] = ast.NewTerm(protomapScalar(fd, l.Get(i)))
		}
		return ast.NewArray(terms...)
	}
	return protomapScalar(fd, v)
}

func protomapScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) ast.Value {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protomapAST(v.Message())
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind:
		return floatToAST(v.Float(), 32)
	case protoreflect.DoubleKind:
		return floatToAST(v.Float(), 64)
	}
	return ast.Null{}
}
