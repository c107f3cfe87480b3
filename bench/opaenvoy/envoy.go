package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Through a real Envoy: one static Envoy config with a listener per arm —
// no ext_authz (Envoy alone), ext_authz to kailash drop-in with and without
// its decision cache, ext_authz to opa-envoy-plugin — in front of a trivial
// upstream (a Go HTTP server answering 200 "ok"). Each arm gets the same
// open-loop HTTP load (rate req/s over keep-alive connections) in turn; the
// p99 an authz adds is its arm's p99 less Envoy alone's.

type envoyArm struct {
	name     string
	cluster  string // "" for no ext_authz
	authAddr string
	port     int
}

const envoyListener = `
  - name: %[1]s
    address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %[1]s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: upstream}}]
          http_filters:%[3]s
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

const envoyExtAuthz = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {code: 503}
              grpc_service: {envoy_grpc: {cluster_name: %s}, timeout: 2s}`

const envoyCluster = `
  - name: %[1]s
    type: STATIC
    connect_timeout: 1s
%[3]s    load_assignment:
      cluster_name: %[1]s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}}}]}]
`

const envoyH2 = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
`

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

// envoyConfig is the one static config of every arm.
func envoyConfig(adminPort int, upstream string, arms []envoyArm) string {
	var b strings.Builder
	fmt.Fprintf(&b, "admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\nstatic_resources:\n  listeners:", adminPort)
	for _, a := range arms {
		filter := ""
		if a.cluster != "" {
			filter = fmt.Sprintf(envoyExtAuthz, a.cluster)
		}
		fmt.Fprintf(&b, envoyListener, a.name, a.port, filter)
	}
	b.WriteString("  clusters:")
	fmt.Fprintf(&b, envoyCluster, "upstream", port(upstream), "")
	for _, a := range arms {
		if a.cluster != "" {
			fmt.Fprintf(&b, envoyCluster, a.cluster, port(a.authAddr), envoyH2)
		}
	}
	return b.String()
}

// envoyResult is one arm's latencies.
type envoyResult struct {
	name          string
	achieved      float64
	p50, p99      time.Duration
	authzCPUPerRq float64 // the authz server's CPU µs per request (0: none)
}

// runEnvoy measures every arm through one Envoy; servers are the authz
// processes, already started and ready, by arm name.
func runEnvoy(envoyBin, dir string, servers map[string]*proc, token string, rate float64, streams int, dur, warmup time.Duration) ([]envoyResult, error) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(up) }()
	defer srv.Close()

	arms := []envoyArm{{name: "envoy_alone"}}
	for _, name := range []string{"kailash drop-in", "kailash drop-in, no cache", "opa-envoy"} {
		p := servers[name]
		if p == nil {
			continue
		}
		arms = append(arms, envoyArm{name: strings.NewReplacer(" ", "_", ",", "", "-", "_").Replace(name), cluster: "authz_" + fmt.Sprint(len(arms)), authAddr: p.addr})
	}
	for i := range arms {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		arms[i].port = port(a)
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, []byte(envoyConfig(port(admin), up.Addr().String(), arms)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(envoyBin, "-c", cfgPath, "--concurrency", "1", "--disable-hot-restart", "-l", "error")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	envoy := &proc{cmd: cmd, out: out}
	defer envoy.stop()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * streams, DisableCompression: true}, Timeout: 5 * time.Second}
	var results []envoyResult
	for _, a := range arms {
		url := fmt.Sprintf("http://127.0.0.1:%d/people/alice?fields=name,email", a.port)
		get := func() error {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Accept", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: status %d", a.name, resp.StatusCode)
			}
			return nil
		}
		deadline := time.Now().Add(30 * time.Second)
		for err := get(); err != nil; err = get() {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("envoy arm %s not ready: %w\n%s", a.name, err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := openLoopOf(get, streams, rate, warmup); err != nil {
			return nil, err
		}
		var auth *proc
		for _, p := range servers {
			if a.authAddr == p.addr {
				auth = p
			}
		}
		var cpu0 time.Duration
		if auth != nil {
			cpu0 = auth.cpu()
		}
		lat, err := openLoopOf(get, streams, rate, dur)
		if err != nil {
			return nil, err
		}
		slices.Sort(lat)
		r := envoyResult{name: a.name, achieved: float64(len(lat)) / dur.Seconds(),
			p50: lat[len(lat)/2], p99: lat[int(0.99*float64(len(lat)-1))]}
		if auth != nil {
			r.authzCPUPerRq = float64((auth.cpu() - cpu0).Microseconds()) / float64(len(lat))
		}
		results = append(results, r)
	}
	return results, nil
}

// openLoopOf offers rate calls of get per second for d from streams
// goroutines, each on its own schedule (open loop: a late answer does not
// delay the next call's schedule), and returns the latencies.
func openLoopOf(get func() error, streams int, rate float64, d time.Duration) ([]time.Duration, error) {
	interval := time.Duration(float64(time.Second) * float64(streams) / rate)
	start := time.Now()
	end := start.Add(d)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			local := make([]time.Duration, 0, int(d/interval)+1)
			for next := start.Add(time.Duration(i) * interval / time.Duration(streams)); next.Before(end); next = next.Add(interval) {
				time.Sleep(time.Until(next))
				t := time.Now()
				if err := get(); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return nil, *err
	}
	if len(lat) == 0 {
		return nil, errors.New("no answers")
	}
	return lat, nil
}
