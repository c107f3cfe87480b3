package xds

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// callbacks hook the xDS server: they give every new node the current
// snapshot before its first watch is created, count streams, and count and
// log NACKs. go-control-plane calls them synchronously on stream goroutines.
type callbacks struct {
	s *Server
}

var _ serverv3.Callbacks = (*callbacks)(nil)

func (c *callbacks) OnStreamOpen(_ context.Context, id int64, typeURL string) error {
	c.s.m.streams.Inc()
	c.s.log.Debug("xds stream opened", "stream", id, "type_url", typeURL)
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, node *corev3.Node) {
	c.s.m.streams.Dec()
	c.s.log.Debug("xds stream closed", "stream", id, "node", node.GetId())
}

func (c *callbacks) OnDeltaStreamOpen(_ context.Context, id int64, typeURL string) error {
	c.s.m.streams.Inc()
	c.s.log.Debug("xds delta stream opened", "stream", id, "type_url", typeURL)
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	c.s.m.streams.Dec()
	c.s.log.Debug("xds delta stream closed", "stream", id, "node", node.GetId())
}

func (c *callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	c.s.seeNode(req.GetNode().GetId())
	if req.GetErrorDetail() != nil {
		c.nack(id, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.s.log.Debug("xds response sent", "stream", id, "type_url", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	c.s.seeNode(req.GetNode().GetId())
	if req.GetErrorDetail() != nil {
		c.nack(id, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.s.log.Debug("xds delta response sent", "stream", id, "type_url", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(), "resources", len(resp.GetResources()))
}

func (c *callbacks) OnFetchRequest(_ context.Context, req *discoveryv3.DiscoveryRequest) error {
	c.s.seeNode(req.GetNode().GetId())
	return nil
}

func (c *callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// nack records that Envoy rejected a response. Envoy keeps using the
// previous version of that type, so the config it names needs fixing.
func (c *callbacks) nack(stream int64, node, typeURL, nonce, acked, msg string) {
	c.s.m.nacks.WithLabelValues(typeURL).Inc()
	c.s.log.Error("envoy rejected xds config (NACK)", "stream", stream, "node", node, "type_url", typeURL,
		"nonce", nonce, "still_using_version", acked, "error", msg)
}
