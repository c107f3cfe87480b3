package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kailash-gw/kailash/internal/wire"
)

// extAuthzFilter sends every request for a known host to kailash's ext_authz
// service, fail closed: errors and timeouts become 503, never an allow. The
// tenant reaches the service as a context extension set here, per virtual
// host, never from a client header.
type extAuthzFilter struct{}

var _ httpFilter = extAuthzFilter{}

func (extAuthzFilter) name() string { return wellknown.HTTPExternalAuthorization }

func (extAuthzFilter) listenerConfig(ir *IR) (proto.Message, error) {
	f := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: AuthzCluster,
			}},
			Timeout:     durationpb.New(ir.Authz.Timeout),
			RetryPolicy: grpcRetryPolicy(true),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       false,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		IncludePeerCertificate: true,
	}
	if ir.Authz.MaxRequestBytes > 0 {
		f.WithRequestBody = &extauthzv3.BufferSettings{
			MaxRequestBytes:     ir.Authz.MaxRequestBytes,
			AllowPartialMessage: true,
			PackAsBytes:         true,
		}
	}
	return f, nil
}

func (extAuthzFilter) tenantConfig(_ *IR, vh *VirtualHost) (proto.Message, error) {
	return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
		CheckSettings: &extauthzv3.CheckSettings{
			ContextExtensions: map[string]string{wire.ContextTenant: vh.TenantID},
		},
	}}, nil
}

// unknownHostConfig disables the check for unknown hosts: there is no tenant
// to decide for, and the virtual host only ever answers 404.
func (extAuthzFilter) unknownHostConfig(*IR) (proto.Message, error) {
	return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}, nil
}
