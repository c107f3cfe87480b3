package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	"google.golang.org/protobuf/proto"
)

// compressorFilter gzips responses for clients that accept it (Envoy's
// default content types: JSON, text, JavaScript, ...; at least 30 bytes).
// A listener with compression off leaves it out of its chain
// (connectionManager); a tenant with compression off disables it on its
// virtual host.
type compressorFilter struct{}

var _ httpFilter = compressorFilter{}

// CompressorFilterName is the Envoy name of the compressor filter.
const CompressorFilterName = "envoy.filters.http.compressor"

func (compressorFilter) name() string { return CompressorFilterName }

func (compressorFilter) listenerConfig(*IR) (proto.Message, error) {
	gz, err := toAny(&gzipv3.Gzip{})
	if err != nil {
		return nil, err
	}
	return &compressorv3.Compressor{
		CompressorLibrary: &corev3.TypedExtensionConfig{Name: "gzip", TypedConfig: gz},
	}, nil
}

func (compressorFilter) tenantConfig(_ *IR, vh *VirtualHost) (proto.Message, error) {
	if vh.Compression || !vh.Active {
		return nil, nil
	}
	return &compressorv3.CompressorPerRoute{Override: &compressorv3.CompressorPerRoute_Disabled{Disabled: true}}, nil
}

func (compressorFilter) unknownHostConfig(*IR) (proto.Message, error) { return nil, nil }
