package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/internal/telemetry"
)

// runEnvoy runs the pinned Envoy alone, as a container does (deploy/helm,
// deploy/compose.yaml): the bootstrap rendered from the config (the same one
// `kailash bootstrap` prints: ADS at xds.grpc, admin at envoy.admin), Envoy
// as a child, and on SIGTERM the same drain as `kailash up` (readiness
// fails, pre_stop_delay, drain_timeout). --http-addr serves /healthz (Envoy
// is running) and /readyz (Envoy's admin /ready says LIVE, its listener
// answers envoy.health_check_path with 200, and no drain has begun), so a
// probe never needs Envoy's admin interface, which stays on envoy.admin
// (keep it on 127.0.0.1: it can stop Envoy).
func runEnvoy(ctx context.Context, args []string, _ io.Writer) error {
	var envoyBin, envoyLog, httpAddr string
	var concurrency int
	_, cfg, log, err := loadServerFlags("envoy", args, func(fs *flagSetT) {
		fs.StringVar(&envoyBin, "envoy", "", "Envoy binary (default: $ENVOY_BIN, envoy on PATH, or bin/envoy)")
		fs.StringVar(&envoyLog, "envoy-log-level", "warning", "Envoy's log level")
		fs.StringVar(&httpAddr, "http-addr", "", "serve /healthz and /readyz here, e.g. 0.0.0.0:9902 (none when empty)")
		fs.IntVar(&concurrency, "concurrency", 2, "Envoy worker threads")
	})
	if err != nil {
		return err
	}
	if envoyBin == "" {
		if envoyBin, err = envoy.FindBinary(); err != nil {
			return err
		}
	}
	if concurrency < 1 {
		return fmt.Errorf("envoy: --concurrency %d: must be at least 1", concurrency)
	}
	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		return err
	}
	var ln net.Listener
	if httpAddr != "" {
		if ln, err = net.Listen("tcp", httpAddr); err != nil {
			return fmt.Errorf("envoy: --http-addr: %w", err)
		}
		defer ln.Close()
	}
	telemetry.SetShutdownGrace(cfg.Shutdown.DrainTimeout)
	defer telemetry.SetDraining(false)
	// Envoy outlives the signal: it is drained, then stopped.
	pctx, stopEnvoy := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEnvoy()
	proc, err := envoy.Start(pctx, envoy.Options{Binary: envoyBin, Bootstrap: boot, Log: os.Stderr, LogLevel: envoyLog,
		Concurrency: concurrency, DrainTime: cfg.Shutdown.DrainTimeout})
	if err != nil {
		return err
	}
	hctx, stopHTTP := context.WithCancel(context.Background())
	httpDone := make(chan error, 1)
	if ln != nil {
		ready := telemetry.NewReadiness("envoy", telemetry.CheckFunc("envoy_live", func() error { return envoyLive(pctx, proc) }))
		if path := cfg.HealthCheckPath(); path != "" {
			ready.Add(telemetry.Check{Name: "listener", Run: func(ctx context.Context) error {
				return listenerHealthy(ctx, cfg.Envoy.Listen.Host(), cfg.Envoy.Listen.Port(), path)
			}})
		}
		reg := telemetry.NewRegistry()
		reg.MustRegister(ready)
		mux := telemetry.NewMux(reg, ready)
		go func() { httpDone <- telemetry.ServeHTTP(hctx, ln, mux) }()
		log.Info("envoy health serving", "http", ln.Addr().String())
	} else {
		httpDone <- nil
	}
	log.Info("envoy started", "pid", proc.Pid(), "version", envoy.Version, "xds", cfg.XDS.GRPC, "listen", cfg.Envoy.Listen)
	var exitErr error
	select {
	case <-ctx.Done():
		shutdownUp(log, cfg, proc)
	case <-proc.Done():
		exitErr = fmt.Errorf("envoy exited unexpectedly: %v", proc.Wait())
	}
	stopEnvoy()
	<-proc.Done() // never return with Envoy still running
	stopHTTP()
	if err := <-httpDone; err != nil && !errors.Is(err, net.ErrClosed) && exitErr == nil {
		exitErr = err
	}
	log.Info("stopped")
	return exitErr
}

// envoyLive asks Envoy's admin /ready; nil when it answers LIVE (its first
// xDS fetch is done and it is not draining).
func envoyLive(ctx context.Context, proc *envoy.Process) error {
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	addr, err := proc.AdminAddr(actx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(actx, http.MethodGet, "http://"+addr+"/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("envoy admin %s: %w", addr, err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 256)).ReadString('\n')
	if state := strings.TrimSpace(line); resp.StatusCode != http.StatusOK || state != "LIVE" {
		return fmt.Errorf("envoy admin /ready: %d %s", resp.StatusCode, state)
	}
	return nil
}

// listenerHealthy asks Envoy's own listener (envoy.listen; a wildcard
// address is asked on loopback) for its health check path: 200 once the
// listener pushed over xDS is up and Envoy is not failing health checks.
func listenerHealthy(ctx context.Context, host string, port uint32, path string) error {
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	url := "http://" + net.JoinHostPort(host, fmt.Sprint(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("envoy listener: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("envoy listener %s: %d", url, resp.StatusCode)
	}
	return nil
}
