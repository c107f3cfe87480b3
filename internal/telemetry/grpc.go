package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultGRPCGrace is how long ServeGRPC lets open RPCs and streams finish
// after its context ends, unless GRPCOptions.Grace says otherwise.
const DefaultGRPCGrace = 5 * time.Second

// GRPCOptions are what ServeGRPC needs besides the server itself.
type GRPCOptions struct {
	// Name names the server in the log line (e.g. "xds").
	Name string
	// Health lists the services the gRPC health service reports SERVING
	// ("" is the whole server). The health service is registered even if
	// the list is empty (then every query is NOT_FOUND).
	Health []string
	// Grace bounds GracefulStop before open streams are cut (Stop);
	// DefaultGRPCGrace when zero.
	Grace time.Duration
	// Log, when set, is told when the grace ran out.
	Log *slog.Logger
}

// ServeGRPC registers the gRPC health service on gs (which must not have
// one, and must not be serving yet), then serves gs on ln until ctx ends
// or serving fails. When ctx ends, health turns NOT_SERVING, GracefulStop
// lets open RPCs finish for up to the grace, then Stop cuts the rest. The
// server's own options (credentials, interceptors, keepalive) are the
// caller's: gs comes built. ln is closed when ServeGRPC returns. It
// returns nil after a clean stop, else the error that ended serving.
func ServeGRPC(ctx context.Context, ln net.Listener, gs *grpc.Server, o GRPCOptions) error {
	defer func() { _ = ln.Close() }() // gRPC closes it too; a second Close is harmless
	hs := health.NewServer()
	for _, name := range o.Health {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(gs, hs)
	grace := o.Grace
	if grace <= 0 {
		grace = DefaultGRPCGrace
	}

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
		// Serving failed on its own (Serve returns nil only after a stop):
		// cut whatever connections it still holds.
		gs.Stop()
	case <-ctx.Done():
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		t := time.NewTimer(grace)
		select {
		case <-stopped:
			t.Stop()
		case <-t.C:
			if o.Log != nil {
				o.Log.Warn(o.Name+" graceful stop timed out; closing streams", "after", grace)
			}
			gs.Stop()
			<-stopped
		}
		err = <-errc
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
