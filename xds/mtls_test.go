package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devcert"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// mtlsFixture is a CA with the control plane's server certificate, client
// certificates for two nodes, and a second CA with a client certificate
// for node "kailash-envoy" that the control plane must not trust.
type mtlsFixture struct {
	dir                   string
	ca, other             *devcert.CA
	caFile                string
	serverCert, serverKey string
	// clients by name: "kailash-envoy", "node-a" (signed by ca) and
	// "foreign" (CN kailash-envoy, signed by other).
	clients map[string][2]string
}

func newMTLSFixture(t *testing.T) *mtlsFixture {
	t.Helper()
	f := &mtlsFixture{dir: t.TempDir(), clients: map[string][2]string{}}
	var err error
	if f.ca, err = devcert.NewCA("xds test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.other, err = devcert.NewCA("another CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.caFile, err = f.ca.WriteCA(f.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	srv, err := f.ca.Issue(time.Hour, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if f.serverCert, f.serverKey, err = srv.Write(f.dir, "server"); err != nil {
		t.Fatal(err)
	}
	for name, spec := range map[string]struct {
		ca *devcert.CA
		cn string
	}{"kailash-envoy": {f.ca, "kailash-envoy"}, "node-a": {f.ca, "node-a"}, "foreign": {f.other, "kailash-envoy"}} {
		p, err := spec.ca.IssueClient(time.Hour, spec.cn)
		if err != nil {
			t.Fatal(err)
		}
		c, k, err := p.Write(f.dir, "client-"+name)
		if err != nil {
			t.Fatal(err)
		}
		f.clients[name] = [2]string{c, k}
	}
	return f
}

// config is testConfig with xds.tls and envoy.xds_tls set.
func (f *mtlsFixture) config() *config.Config {
	cfg := testConfig()
	cfg.Envoy.Cluster = config.DefaultCluster
	cfg.XDS.TLS = config.ServerTLS{CertFile: f.serverCert, KeyFile: f.serverKey, ClientCAFile: f.caFile}
	c := f.clients["kailash-envoy"]
	cfg.Envoy.XDSTLS = config.ClientTLS{CertFile: c[0], KeyFile: c[1], CAFile: f.caFile}
	return cfg
}

// dialTLS dials addr trusting the fixture's CA and presenting client (a
// name in f.clients; "" presents no certificate).
func (f *mtlsFixture) dialTLS(t *testing.T, addr, client string, maxVersion uint16) *grpc.ClientConn {
	t.Helper()
	tc := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1", MaxVersion: maxVersion}
	if client != "" {
		c := f.clients[client]
		pair, err := tls.LoadX509KeyPair(c[0], c[1])
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// firstResponse opens an ADS stream as node, asks for clusters and returns
// the first response or the stream's error.
func firstResponse(t *testing.T, conn *grpc.ClientConn, node string) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return st.Recv()
}

// TestMTLSRefusesClientsWithoutValidCertificate: with xds.tls the ADS port
// refuses plaintext, a TLS client without a certificate, a certificate from
// another CA and TLS 1.2; a certificate from the configured CA gets config.
func TestMTLSRefusesClientsWithoutValidCertificate(t *testing.T) {
	f := newMTLSFixture(t)
	s := newServer(t, f.config())
	serve(t, s)

	plain, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	cases := []struct {
		name string
		conn *grpc.ClientConn
	}{
		{"plaintext", plain},
		{"TLS without a client certificate", f.dialTLS(t, s.GRPCAddr(), "", 0)},
		{"client certificate from another CA", f.dialTLS(t, s.GRPCAddr(), "foreign", 0)},
		{"valid certificate over TLS 1.2", f.dialTLS(t, s.GRPCAddr(), "kailash-envoy", tls.VersionTLS12)},
	}
	for _, c := range cases {
		resp, err := firstResponse(t, c.conn, "kailash-envoy")
		if err == nil {
			t.Errorf("%s: got %d resources, want the connection refused", c.name, len(resp.GetResources()))
			continue
		}
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("%s: %v, want Unavailable (handshake refused)", c.name, err)
		}
	}
	resp, err := firstResponse(t, f.dialTLS(t, s.GRPCAddr(), "kailash-envoy", 0), "kailash-envoy")
	if err != nil {
		t.Fatalf("valid client certificate: %v", err)
	}
	if len(resp.GetResources()) == 0 {
		t.Fatal("valid client certificate: no clusters")
	}
}

// TestMTLSBindsNodeIDToCertificate: a client with a valid certificate for
// node-a cannot open a stream (state of the world or delta), fetch, or
// switch mid-stream as another node; node_ids extends what it may claim,
// and bind_node_id: false turns the binding off.
func TestMTLSBindsNodeIDToCertificate(t *testing.T) {
	f := newMTLSFixture(t)
	cfg := f.config()
	cfg.XDS.TLS.NodeIDs = map[string][]string{"node-a": {"node-a-canary"}}
	// A tenant certificate, so that SDS carries a private key.
	tc, err := f.ca.Issue(time.Hour, "acme.localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := tc.Write(f.dir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS.Listen = config.MustHostPort("127.0.0.1:8443")
	cfg.Tenants[0].TLS = config.TenantTLS{CertFile: certFile, KeyFile: keyFile}
	s := newServer(t, cfg)
	serve(t, s)
	conn := f.dialTLS(t, s.GRPCAddr(), "node-a", 0)

	denied := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", what, err)
		}
	}
	// State of the world, as another node: refused, nothing sent.
	resp, err := firstResponse(t, conn, "kailash-envoy")
	if err == nil {
		t.Errorf("sotw as kailash-envoy: got %d resources", len(resp.GetResources()))
	}
	denied("sotw as kailash-envoy", err)

	// Delta, as another node.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "kailash-envoy"}, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	dresp, err := ds.Recv()
	if err == nil {
		t.Errorf("delta as kailash-envoy: got %d resources", len(dresp.GetResources()))
	}
	denied("delta as kailash-envoy", err)

	// Fetch (SDS unary), as another node.
	_, err = secretservice.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "kailash-envoy"}, TypeUrl: resource.SecretType})
	denied("fetch as kailash-envoy", err)

	// As itself, delta SDS delivers the tenant's secret.
	own, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-a"}, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	if r, err := own.Recv(); err != nil || len(r.GetResources()) != 1 {
		t.Fatalf("delta SDS as node-a: %v (%d secrets), want the tenant's secret", err, len(r.GetResources()))
	}

	// Its own node id and the one node_ids grants work.
	for _, node := range []string{"node-a", "node-a-canary"} {
		resp, err := firstResponse(t, conn, node)
		if err != nil || len(resp.GetResources()) == 0 {
			t.Errorf("as %s: %v (%d resources), want clusters", node, err, len(resp.GetResources()))
		}
	}

	// Switching node ids within a stream is refused.
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "node-a"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "kailash-envoy"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	denied("switch to kailash-envoy mid-stream", err)

	if n := testutil.ToFloat64(s.refused); n < 4 {
		t.Errorf("kailash_xds_streams_refused_total = %v, want at least 4", n)
	}

	// bind_node_id: false lets any valid certificate claim any node.
	off := false
	cfg2 := f.config()
	cfg2.XDS.TLS.BindNodeID = &off
	s2 := newServer(t, cfg2)
	serve(t, s2)
	if _, err := firstResponse(t, f.dialTLS(t, s2.GRPCAddr(), "node-a", 0), "kailash-envoy"); err != nil {
		t.Errorf("bind_node_id false: %v, want config", err)
	}
}

// TestMTLSReloadsRotatedClientCA: replacing client_ca_file (by rename, as
// a secret mount does) makes the server trust the new CA and refuse the old
// one, without a restart.
func TestMTLSReloadsRotatedClientCA(t *testing.T) {
	f := newMTLSFixture(t)
	s := newServer(t, f.config())
	serve(t, s)
	if _, err := firstResponse(t, f.dialTLS(t, s.GRPCAddr(), "kailash-envoy", 0), "kailash-envoy"); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	loaded0 := gaugeOf(t, s, "kailash_tls_certificate_last_load_timestamp_seconds")
	if loaded0 == 0 || gaugeOf(t, s, "kailash_tls_certificate_expiry_timestamp_seconds") < float64(time.Now().Unix()) {
		t.Fatalf("xds.tls metrics: loaded %v, expiry %v", loaded0, gaugeOf(t, s, "kailash_tls_certificate_expiry_timestamp_seconds"))
	}
	// The "foreign" client's CA becomes the trusted one.
	if _, err := f.other.WriteCA(f.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := firstResponse(t, f.dialTLS(t, s.GRPCAddr(), "foreign", 0), "kailash-envoy")
		return err
	})
	loaded1 := gaugeOf(t, s, "kailash_tls_certificate_last_load_timestamp_seconds")
	if loaded1 <= loaded0 {
		t.Errorf("last load %v after the rotation, was %v", loaded1, loaded0)
	}
	if _, err := firstResponse(t, f.dialTLS(t, s.GRPCAddr(), "kailash-envoy", 0), "kailash-envoy"); err == nil {
		t.Error("a certificate of the replaced CA is still accepted")
	}
	// A broken file is rejected; the last good CA keeps serving.
	before := testutil.ToFloat64(s.m.rejected)
	brokenAt := float64(time.Now().UnixNano()) / 1e9
	if err := os.WriteFile(filepath.Join(f.dir, "ca.pem"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if testutil.ToFloat64(s.m.rejected) <= before {
			return errors.New("broken CA file not rejected yet")
		}
		return nil
	})
	if _, err := firstResponse(t, f.dialTLS(t, s.GRPCAddr(), "foreign", 0), "kailash-envoy"); err != nil {
		t.Errorf("after a broken CA file: %v, want the last good CA to serve", err)
	}
	if got := gaugeOf(t, s, "kailash_tls_certificate_last_load_timestamp_seconds"); got >= brokenAt {
		t.Errorf("a rejected reload moved the last load time: %v, the broken file was written at %v", got, brokenAt)
	}
}

// gaugeOf is the value of the gauge name's only sample in s's registry.
func gaugeOf(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// TestMTLSRealEnvoy: Envoy, with the bootstrap kailash renders for
// envoy.xds_tls, gets its config from a control plane that requires client
// certificates, and serves; the same Envoy with a certificate from another
// CA gets nothing.
func TestMTLSRealEnvoy(t *testing.T) {
	bin := envoyBinary(t)
	f := newMTLSFixture(t)
	cfg := f.config()
	cfg.Envoy.Listen = config.MustHostPort(testenv.FreeAddr(t))
	cfg.Envoy.Admin = config.MustHostPort(testenv.FreeAddr(t))
	s := newServer(t, cfg)
	serve(t, s)
	cfg.XDS.GRPC = config.MustHostPort(s.GRPCAddr())

	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(boot), "UpstreamTlsContext") {
		t.Fatalf("bootstrap has no TLS transport socket:\n%s", boot)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: boot, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+cfg.Envoy.Listen.String()+"/", nil)
		req.Host = "nobody.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNotFound || string(b) != "unknown host\n" {
			return errors.New("listener not serving the pushed routes yet: " + resp.Status)
		}
		return nil
	})
	if n := testutil.CollectAndCount(s.m.nacks); n != 0 {
		t.Errorf("Envoy NACKed %d types", n)
	}

	// Envoy holding a certificate of another CA: no config, never ready.
	foreign := f.config()
	foreign.XDS.GRPC = config.MustHostPort(s.GRPCAddr())
	foreign.Envoy.Listen = config.MustHostPort(testenv.FreeAddr(t))
	c := f.clients["foreign"]
	foreign.Envoy.XDSTLS.CertFile, foreign.Envoy.XDSTLS.KeyFile = c[0], c[1]
	boot2, err := envoy.Bootstrap(foreign)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: boot2})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Stop()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if err := p2.WaitReady(rctx); err == nil {
		t.Error("Envoy with a certificate of another CA became ready (got config)")
	}
	admin, err := p2.AdminAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + admin + "/stats?filter=^cluster_manager\\.cds\\.update_success$")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != "cluster_manager.cds.update_success: 0" {
		t.Errorf("Envoy with a certificate of another CA: %q, want no CDS update", b)
	}
}
