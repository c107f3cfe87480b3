package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxHTTPResponse bounds the body the http node reads.
const maxHTTPResponse = 1 << 20

type httpPrep struct {
	url     *url.URL
	method  string
	headers map[string]string
}

// prepareHTTP checks config: url (absolute http or https), method (default
// GET) and headers (string values).
func prepareHTTP(cfg map[string]any) (any, error) {
	raw, err := str(cfg, "url")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("url: %q must be an absolute http(s) URL without credentials", raw)
	}
	p := &httpPrep{url: u, method: http.MethodGet, headers: map[string]string{}}
	if m, _ := str(cfg, "method"); m != "" {
		p.method = strings.ToUpper(m)
	}
	switch p.method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead:
	default:
		return nil, fmt.Errorf("method: %q is not supported", p.method)
	}
	if hs, ok := cfg["headers"]; ok {
		m, ok := hs.(map[string]any)
		if !ok {
			return nil, errors.New("headers: want an object of strings")
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("headers.%s: want a string", k)
			}
			p.headers[k] = s
		}
	}
	return p, nil
}

// allowed reports whether the http node may call u: its host must be in
// runner.http_allow, as "host:port", or as "host" for the scheme's default
// port.
func (x *Executor) allowed(u *url.URL) bool {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" || (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		if x.allow[host] {
			return true
		}
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return x.allow[host+":"+port]
}

// newHTTPClient refuses redirects that leave the allowlist.
func newHTTPClient(allowed func(*url.URL) bool) *http.Client {
	return &http.Client{
		Timeout: time.Minute, // the node's context is the real bound
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if !allowed(req.URL) {
				return fmt.Errorf("redirect to %s: host is not in runner.http_allow", req.URL.Host)
			}
			return nil
		},
	}
}

// runHTTP sends one request to an allowlisted host. Input "query" (an
// object) is added to the URL; for methods with a body, input "body" (or
// the whole input) is sent as JSON. Output: status, headers, body (parsed
// when JSON).
func runHTTP(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*httpPrep)
	u := *p.url
	if !x.allowed(&u) {
		return nil, fmt.Errorf("host %s is not in runner.http_allow", u.Host)
	}
	if q, ok := c.input["query"].(map[string]any); ok {
		vals := u.Query()
		for k, v := range q {
			vals.Set(k, fmt.Sprint(v))
		}
		u.RawQuery = vals.Encode()
	}
	var body io.Reader
	if p.method == http.MethodPost || p.method == http.MethodPut || p.method == http.MethodPatch {
		var v any = c.input
		if b, ok := c.input["body"]; ok {
			v = b
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, p.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range p.headers {
		req.Header.Set(k, v)
	}
	resp, err := x.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", p.method, u.Redacted(), errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the response: %w", p.method, u.Redacted(), err)
	}
	if len(b) > maxHTTPResponse {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", p.method, u.Redacted(), maxHTTPResponse)
	}
	hdrs := map[string]any{}
	for k := range resp.Header {
		hdrs[strings.ToLower(k)] = resp.Header.Get(k)
	}
	var out any = string(b)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); (mt == "application/json" || strings.HasSuffix(mt, "+json")) && len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("%s %s: response is not JSON: %w", p.method, u.Redacted(), err)
		}
	}
	return map[string]any{"status": float64(resp.StatusCode), "headers": hdrs, "body": out}, nil
}
