package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/kailash-gw/kailash/internal/telemetry"
)

// StatusOptions are OPA's status plugin (drop-in mode's config file): a
// report of the bundle and plugins, sent at start and whenever the active
// bundle changes, to URL (OPA's status API: POST <service>/status[/<partition>])
// and/or the console.
type StatusOptions struct {
	URL     string
	Client  *http.Client
	Console bool
	Labels  map[string]string
	// BundleName names the bundle in the report (OPA's bundles.<name>).
	BundleName string
}

// opaStatus is OPA's status report (the parts that apply here).
type opaStatus struct {
	Labels  map[string]string         `json:"labels"`
	Bundles map[string]opaBundleState `json:"bundles,omitempty"`
	Plugins map[string]opaPluginState `json:"plugins"`
}

type opaBundleState struct {
	Name                     string    `json:"name"`
	ActiveRevision           string    `json:"active_revision"`
	LastSuccessfulActivation time.Time `json:"last_successful_activation"`
	Code                     string    `json:"code,omitempty"`
	Message                  string    `json:"message,omitempty"`
}

type opaPluginState struct {
	State string `json:"state"`
}

// runStatus reports until ctx ends: at once, then each time the active
// revision changes or a reload fails (checked every second).
func (s *Server) runStatus(ctx context.Context, o StatusOptions) {
	labels := map[string]string{"id": uuid.NewString(), "version": telemetry.Version()}
	for k, v := range o.Labels {
		labels[k] = v
	}
	name := o.BundleName
	if name == "" {
		name = "bundle"
	}
	client := o.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		rev, errMsg := s.engine.Revision(), ""
		if r := s.reloaded.policy("active"); r != nil {
			if st := r.Status(); st.Failing {
				errMsg = st.LastError
			}
		}
		if key := rev + "\x00" + errMsg; key != last {
			st := opaStatus{Labels: labels,
				Bundles: map[string]opaBundleState{name: {Name: name, ActiveRevision: rev, LastSuccessfulActivation: s.engine.LoadedAt().UTC()}},
				Plugins: map[string]opaPluginState{"bundle": {"OK"}, "envoy_ext_authz_grpc": {"OK"}, "status": {"OK"}, "decision_logs": {"OK"}}}
			if errMsg != "" {
				b := st.Bundles[name]
				b.Code, b.Message = "bundle_error", errMsg
				st.Bundles[name] = b
			}
			if s.sendStatus(ctx, client, o, st) {
				last = key
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) sendStatus(ctx context.Context, client *http.Client, o StatusOptions, st opaStatus) bool {
	b, err := json.Marshal(st)
	if err != nil {
		return false
	}
	if o.Console {
		fmt.Fprintf(os.Stdout, "%s\n", b)
	}
	if o.URL == "" {
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, o.URL, bytes.NewReader(b))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		s.log.Warn("status report not sent", "url", o.URL, "err", err)
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.log.Warn("status report refused", "url", o.URL, "status", resp.StatusCode)
		return false
	}
	return true
}
