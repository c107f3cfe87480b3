package envoy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// DrainOptions shape Drain.
type DrainOptions struct {
	// PreStop is how long Envoy keeps accepting new connections after its
	// health check fails, so load balancers stop sending first.
	PreStop time.Duration
	// Timeout bounds the wait for requests in flight (default 15s).
	Timeout time.Duration
	// Poll is how often the in-flight count is read (default 100ms).
	Poll time.Duration
}

// Drain takes Envoy out of service without cutting requests in flight:
//
//  1. POST /healthcheck/fail: Envoy's health check fails, and every
//     response from now on closes its connection (HTTP/1 Connection: close,
//     HTTP/2 GOAWAY), so keep-alive clients go elsewhere;
//  2. waits o.PreStop (still accepting);
//  3. POST /drain_listeners: the listeners stop accepting (new connections
//     are refused) while the open ones finish what they serve;
//  4. waits until no downstream request is active (the admin listener's own
//     excepted), for at most o.Timeout.
//
// It returns nil when Envoy is idle, an error when the timeout (or ctx)
// ended the wait first or the admin interface did not answer; in every case
// Envoy is left running, for Stop.
func (p *Process) Drain(ctx context.Context, o DrainOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = DefaultDrainTime
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, o.PreStop+o.Timeout)
	defer cancel()
	addr, err := p.AdminAddr(ctx)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	post := func(path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("envoy admin %s: %w", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("envoy admin %s: %s", path, resp.Status)
		}
		return nil
	}
	if err := post("/healthcheck/fail"); err != nil {
		return err
	}
	if o.PreStop > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("envoy drain: %w", ctx.Err())
		case <-p.done:
			return fmt.Errorf("envoy exited while draining: %v", p.err)
		case <-time.After(o.PreStop):
		}
	}
	if err := post("/drain_listeners"); err != nil {
		return err
	}
	// A connection accepted just before the listeners stopped may not have
	// sent its request yet: idle must be seen twice in a row.
	idle := 0
	for {
		n, err := p.activeRequests(ctx, client, addr)
		if err == nil && n == 0 {
			if idle++; idle >= 2 {
				return nil
			}
		} else {
			idle = 0
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("envoy drain: %w (last stats read: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("envoy drain: %d requests still in flight: %w", n, ctx.Err())
		case <-p.done:
			return fmt.Errorf("envoy exited while draining: %v", p.err)
		case <-time.After(o.Poll):
		}
	}
}

// activeRequests sums http.<prefix>.downstream_rq_active over every
// connection manager but the admin interface's.
func (p *Process) activeRequests(ctx context.Context, client *http.Client, addr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats?format=json&filter=downstream_rq_active$", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("envoy admin /stats: %s", resp.Status)
	}
	var body struct {
		Stats []struct {
			Name  string `json:"name"`
			Value *int64 `json:"value"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("envoy admin /stats: %w", err)
	}
	n := 0
	for _, s := range body.Stats {
		if s.Value == nil || !strings.HasPrefix(s.Name, "http.") || strings.HasPrefix(s.Name, "http.admin.") {
			continue
		}
		n += int(*s.Value)
	}
	return n, nil
}

// StopWithin stops Envoy: SIGTERM, then SIGKILL if it has not exited after
// grace; it returns once Envoy has exited.
func (p *Process) StopWithin(grace time.Duration) {
	p.stopWithin(grace)
}
