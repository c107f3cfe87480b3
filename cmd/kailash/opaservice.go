package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// opaService is one of OPA's config-file services: a URL and how to reach
// it (headers, TLS, credentials), as OPA's REST client takes them.
type opaService struct {
	Name                         string            `yaml:"name"`
	URL                          string            `yaml:"url"`
	Headers                      map[string]string `yaml:"headers"`
	ResponseHeaderTimeoutSeconds int               `yaml:"response_header_timeout_seconds"`
	AllowInsecureTLS             bool              `yaml:"allow_insecure_tls"`
	TLS                          *struct {
		CACert           string `yaml:"ca_cert"`
		SystemCARequired bool   `yaml:"system_ca_required"`
	} `yaml:"tls"`
	Credentials *opaCredentials `yaml:"credentials"`
}

// opaCredentials are the credential kinds kailash authz supports; others
// (s3_signing, gcp_metadata, azure_managed_identity, plugin) are unknown
// fields, refused by name.
type opaCredentials struct {
	Bearer *struct {
		Token     string `yaml:"token"`
		TokenPath string `yaml:"token_path"`
		Scheme    string `yaml:"scheme"`
	} `yaml:"bearer"`
	ClientTLS *struct {
		Cert       string `yaml:"cert"`
		PrivateKey string `yaml:"private_key"`
	} `yaml:"client_tls"`
	OAuth2 *struct {
		GrantType    string   `yaml:"grant_type"`
		TokenURL     string   `yaml:"token_url"`
		ClientID     string   `yaml:"client_id"`
		ClientSecret string   `yaml:"client_secret"`
		Scopes       []string `yaml:"scopes"`
	} `yaml:"oauth2"`
}

// client is the HTTP client that reaches s with its TLS settings and
// credentials.
func (s opaService) client() (*http.Client, error) {
	where := "services." + s.Name
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.AllowInsecureTLS {
		return nil, fmt.Errorf("%s.allow_insecure_tls: refused (give tls.ca_cert instead)", where)
	}
	if s.TLS != nil && s.TLS.CACert != "" {
		pem, err := os.ReadFile(s.TLS.CACert)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.ca_cert: %w", where, err)
		}
		pool := x509.NewCertPool()
		if s.TLS.SystemCARequired {
			if sys, err := x509.SystemCertPool(); err == nil {
				pool = sys
			}
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.tls.ca_cert: %s holds no PEM certificate", where, s.TLS.CACert)
		}
		tc.RootCAs = pool
	}
	c := s.Credentials
	kinds := 0
	if c != nil {
		for _, set := range []bool{c.Bearer != nil, c.ClientTLS != nil, c.OAuth2 != nil} {
			if set {
				kinds++
			}
		}
	}
	if kinds > 1 {
		return nil, fmt.Errorf("%s.credentials: give one kind (bearer, client_tls or oauth2)", where)
	}
	if c != nil && c.ClientTLS != nil {
		cert, err := tls.LoadX509KeyPair(c.ClientTLS.Cert, c.ClientTLS.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("%s.credentials.client_tls: %w", where, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tc
	if s.ResponseHeaderTimeoutSeconds > 0 {
		base.ResponseHeaderTimeout = time.Duration(s.ResponseHeaderTimeoutSeconds) * time.Second
	}
	var rt http.RoundTripper = base
	if c != nil && c.OAuth2 != nil {
		o := c.OAuth2
		if o.GrantType != "" && o.GrantType != "client_credentials" {
			return nil, fmt.Errorf("%s.credentials.oauth2.grant_type: %q: only client_credentials is supported", where, o.GrantType)
		}
		if o.TokenURL == "" || o.ClientID == "" || o.ClientSecret == "" {
			return nil, fmt.Errorf("%s.credentials.oauth2: token_url, client_id and client_secret are required", where)
		}
		cc := clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, TokenURL: o.TokenURL, Scopes: o.Scopes}
		// The token endpoint is reached with the service's TLS settings.
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base, Timeout: 30 * time.Second})
		rt = &oauth2.Transport{Source: cc.TokenSource(ctx), Base: base}
	}
	if c != nil && c.Bearer != nil {
		b := c.Bearer
		if (b.Token == "") == (b.TokenPath == "") {
			return nil, fmt.Errorf("%s.credentials.bearer: give token or token_path", where)
		}
		scheme := b.Scheme
		if scheme == "" {
			scheme = "Bearer"
		}
		rt = &bearerTransport{token: b.Token, path: b.TokenPath, scheme: scheme, next: rt}
	}
	if len(s.Headers) > 0 {
		rt = &headerTransport{headers: s.Headers, next: rt}
	}
	return &http.Client{Transport: rt, Timeout: 60 * time.Second}, nil
}

// bearerTransport adds "Authorization: <scheme> <token>"; a token_path is
// read on every request, as OPA does (rotated tokens are picked up).
type bearerTransport struct {
	token, path, scheme string
	next                http.RoundTripper
}

func (b *bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok := b.token
	if b.path != "" {
		raw, err := os.ReadFile(b.path)
		if err != nil {
			return nil, fmt.Errorf("credentials.bearer.token_path: %w", err)
		}
		tok = strings.TrimSpace(string(raw))
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.scheme+" "+tok)
	return b.next.RoundTrip(r)
}

type headerTransport struct {
	headers map[string]string
	next    http.RoundTripper
}

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.headers {
		r.Header.Set(k, v)
	}
	return h.next.RoundTrip(r)
}

// envRef is OPA's ${VAR} substitution in config files.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} with the environment's VAR, as OPA does for
// its config file (an unset variable is "").
func expandEnv(b []byte) []byte {
	return envRef.ReplaceAllFunc(b, func(m []byte) []byte {
		return []byte(os.Getenv(string(envRef.FindSubmatch(m)[1])))
	})
}
