package telemetry

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func dialHealth(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// serve runs ServeGRPC on a fresh loopback listener; cancel stops it and
// done gets its result.
func serve(t *testing.T, o GRPCOptions) (ln net.Listener, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- ServeGRPC(ctx, ln, grpc.NewServer(), o) }()
	return ln, cancel, errc
}

// ServeGRPC registers health with the listed services SERVING, and a
// cancelled context stops it cleanly (nil) with the listener closed.
func TestServeGRPCHealthAndCleanStop(t *testing.T) {
	ln, cancel, done := serve(t, GRPCOptions{Name: "test", Health: []string{"", "svc.A"}})
	hc := dialHealth(t, ln.Addr().String())
	for _, svc := range []string{"", "svc.A"} {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := hc.Check(cctx, &healthpb.HealthCheckRequest{Service: svc}, grpc.WaitForReady(true))
		ccancel()
		if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v; want SERVING", svc, res, err)
		}
	}
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "svc.B"}); err == nil {
		t.Fatal("health of an unlisted service answered; want NOT_FOUND")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeGRPC after cancel = %v; want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeGRPC did not return after cancel")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		_ = c.Close()
		t.Fatal("listener still accepts after ServeGRPC returned")
	}
}

// An open stream that outlives the grace is cut (Stop), and ServeGRPC
// still returns nil; health turned NOT_SERVING before the cut.
func TestServeGRPCCutsStreamsAfterGrace(t *testing.T) {
	ln, cancel, done := serve(t, GRPCOptions{Name: "test", Health: []string{""}, Grace: 200 * time.Millisecond})
	hc := dialHealth(t, ln.Addr().String())
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := w.Recv(); err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watch answer = %v, %v; want SERVING", res, err)
	}
	cancel()
	if res, err := w.Recv(); err != nil || res.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch answer after cancel = %v, %v; want NOT_SERVING", res, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeGRPC = %v; want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeGRPC waited on an open stream past its grace")
	}
	if _, err := w.Recv(); err == nil {
		t.Fatal("the open watch stream survived the stop")
	}
}

type failingListener struct {
	net.Listener
	err error
}

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }

// A listener that fails is ServeGRPC's error, without ctx ending.
func TestServeGRPCReturnsServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("accept exploded")
	done := make(chan error, 1)
	go func() {
		done <- ServeGRPC(context.Background(), failingListener{ln, boom}, grpc.NewServer(), GRPCOptions{})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("ServeGRPC = %v; want %v", err, boom)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeGRPC did not return on a failing listener")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		_ = c.Close()
		t.Fatal("listener still open after ServeGRPC returned")
	}
}
