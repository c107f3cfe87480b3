package xds

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/mtls"
)

// callbacks hook the xDS server: they give every new node the current
// snapshot before its first watch is created, count streams, and count and
// log NACKs. go-control-plane calls them synchronously on stream goroutines.
//
// With xds.tls and its node binding (the default), they also refuse any
// stream or fetch whose node id the client certificate may not claim
// (config.ServerTLS.MayClaim): the snapshot, tenants' private keys
// included, goes only to a node that proved it is that node.
type callbacks struct {
	s *Server
}

var _ serverv3.Callbacks = (*callbacks)(nil)

func (c *callbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	c.s.m.streams.Inc() // OnStreamClosed follows even a refused open
	c.s.track.opened(id)
	if err := c.openPeer(ctx, id); err != nil {
		return err
	}
	c.s.log.Debug("xds stream opened", "stream", id, "type_url", typeURL)
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, node *corev3.Node) {
	c.s.peers.Delete(id)
	c.s.track.closed(id)
	c.s.m.streams.Dec()
	c.s.log.Debug("xds stream closed", "stream", id, "node", node.GetId())
}

func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	c.s.m.streams.Inc() // OnStreamClosed follows even a refused open
	c.s.track.opened(id)
	if err := c.openPeer(ctx, id); err != nil {
		return err
	}
	c.s.log.Debug("xds delta stream opened", "stream", id, "type_url", typeURL)
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	c.s.peers.Delete(id)
	c.s.track.closed(id)
	c.s.m.streams.Dec()
	c.s.log.Debug("xds delta stream closed", "stream", id, "node", node.GetId())
}

func (c *callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if err := c.checkStream(id, req.GetNode().GetId()); err != nil {
		return err
	}
	c.s.seeNode(req.GetNode().GetId())
	refused := c.s.track.request(id, req.GetNode().GetId(), req.GetNode().GetCluster(), req.GetTypeUrl(), req.GetResponseNonce(), errorMessage(req.GetErrorDetail()))
	if req.GetErrorDetail() != nil {
		c.nack(id, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), refused, req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.s.track.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
	c.s.log.Debug("xds response sent", "stream", id, "type_url", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := c.checkStream(id, req.GetNode().GetId()); err != nil {
		return err
	}
	c.s.seeNode(req.GetNode().GetId())
	refused := c.s.track.request(id, req.GetNode().GetId(), req.GetNode().GetCluster(), req.GetTypeUrl(), req.GetResponseNonce(), errorMessage(req.GetErrorDetail()))
	if req.GetErrorDetail() != nil {
		c.nack(id, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), refused, "", req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.s.track.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
	c.s.log.Debug("xds delta response sent", "stream", id, "type_url", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(), "resources", len(resp.GetResources()))
}

func (c *callbacks) OnFetchRequest(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	if c.binds() {
		ids, err := mtls.PeerIdentities(ctx)
		if err != nil {
			return c.refuse(0, nil, req.GetNode().GetId(), err.Error())
		}
		if node := req.GetNode().GetId(); !c.s.tls.Section().MayClaim(ids, node) {
			return c.refuse(0, ids, node, "the client certificate may not claim this node id")
		}
	}
	c.s.seeNode(req.GetNode().GetId())
	return nil
}

func (c *callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// nack logs that Envoy rejected a response (the tracker counted it). Envoy
// keeps using the previous version of that type, so the config it names
// needs fixing.
func (c *callbacks) nack(stream int64, node, typeURL, nonce, refused, acked, msg string) {
	c.s.log.Error("envoy rejected xds config (NACK)", "stream", stream, "node", node, "type_url", typeURL,
		"nonce", nonce, "refused_version", refused, "still_using_version", acked, "error", msg)
}

// errorMessage is a NACK's message ("" for an ACK or a subscription); a
// NACK without a message still counts as one.
func errorMessage(d *rpcstatus.Status) string {
	if d == nil {
		return ""
	}
	if d.GetMessage() == "" {
		return "(no message)"
	}
	return d.GetMessage()
}

// streamPeer is what a stream has proved: its certificate's identities,
// and the node id it claimed first (later requests may omit the node).
type streamPeer struct {
	ids  []string
	node string // set by the first request; go-control-plane serialises a stream's callbacks
}

// binds reports whether node ids are bound to client certificates.
func (c *callbacks) binds() bool {
	return c.s.tls != nil && c.s.tls.Section().BindsNodeID()
}

// openPeer records the verified identities of a new stream's client.
func (c *callbacks) openPeer(ctx context.Context, id int64) error {
	if !c.binds() {
		return nil
	}
	ids, err := mtls.PeerIdentities(ctx)
	if err != nil {
		return c.refuse(id, nil, "", err.Error())
	}
	c.s.peers.Store(id, &streamPeer{ids: ids})
	return nil
}

// checkStream refuses a request whose node id the stream's certificate may
// not claim, or that switches node ids mid-stream. A request without a
// node (Envoy sends it on the first message only) is the stream's first.
func (c *callbacks) checkStream(id int64, node string) error {
	if !c.binds() {
		return nil
	}
	v, ok := c.s.peers.Load(id)
	if !ok {
		return c.refuse(id, nil, node, "stream has no verified client certificate")
	}
	p := v.(*streamPeer)
	switch {
	case node == "" && p.node == "":
		return c.refuse(id, p.ids, node, "the first request names no node id")
	case node == "":
		return nil
	case p.node != "" && node != p.node:
		return c.refuse(id, p.ids, node, "node id changed within the stream (first "+p.node+")")
	case p.node == node:
		return nil
	}
	if !c.s.tls.Section().MayClaim(p.ids, node) {
		return c.refuse(id, p.ids, node, "the client certificate may not claim this node id")
	}
	p.node = node
	return nil
}

// refuse counts and logs a refused stream or fetch and returns the gRPC
// error that ends it.
func (c *callbacks) refuse(stream int64, ids []string, node, why string) error {
	c.s.refused.Inc()
	c.s.log.Warn("xds client refused", "stream", stream, "node", node, "certificate", strings.Join(ids, ","), "reason", why)
	return status.Errorf(codes.PermissionDenied, "xds: node %q refused: %s", node, why)
}
