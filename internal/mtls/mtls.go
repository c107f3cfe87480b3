// Package mtls serves our gRPC ports (xds, authz, ratelimit) with mutual
// TLS from a config section: TLS 1.3 only, a client certificate signed by
// the configured CA required and verified, and the files re-read when they
// change, so a rotated certificate or CA applies to the next handshake
// without a restart. A set of files that fails to load (say, a key caught
// half-written) is rejected and the last good set keeps serving.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/fswatch"
)

// Server is one server's mutual-TLS material, reloadable.
type Server struct {
	field string
	cfg   *config.Config // resolves the section's relative paths
	sec   config.ServerTLS
	log   *slog.Logger

	mu  sync.Mutex // serialises Reload
	cur atomic.Pointer[config.ServerTLSMaterial]
	// loaded is when the files were last read and accepted (Unix
	// nanoseconds), changed or not.
	loaded atomic.Int64

	// OnReject, when set, is called with every rejected reload; OnReload
	// with every reload that put new files in force.
	OnReject func(error)
	OnReload func()
}

// NewServer loads the section field (e.g. "xds.tls") of cfg. It returns
// nil and no error when the section is not set: the server is plaintext.
func NewServer(cfg *config.Config, field string, sec config.ServerTLS, log *slog.Logger) (*Server, error) {
	if !sec.Enabled() {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := cfg.LoadServerTLS(field, sec)
	if err != nil {
		return nil, err
	}
	s := &Server{field: field, cfg: cfg, sec: sec, log: log}
	s.cur.Store(m)
	s.loaded.Store(time.Now().UnixNano())
	return s, nil
}

// Section is the config section the server was made from.
func (s *Server) Section() config.ServerTLS { return s.sec }

// Reload re-reads the files. On error the last good material stays; the
// error names the file and line. It reports whether the contents changed.
func (s *Server) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.cfg.LoadServerTLS(s.field, s.sec)
	if err != nil {
		if s.OnReject != nil {
			s.OnReject(err)
		}
		s.log.Error("mutual TLS files rejected; the last good certificate keeps serving", "section", s.field, "err", err)
		return false, err
	}
	s.loaded.Store(time.Now().UnixNano())
	if old := s.cur.Load(); old != nil && old.Digest == m.Digest {
		return false, nil
	}
	s.cur.Store(m)
	if s.OnReload != nil {
		s.OnReload()
	}
	s.log.Info("mutual TLS certificate reloaded", "section", s.field, "not_after", leafNotAfter(m))
	return true, nil
}

func leafNotAfter(m *config.ServerTLSMaterial) string {
	if c, err := x509.ParseCertificate(m.Certificate.Certificate[0]); err == nil {
		return c.NotAfter.UTC().Format("2006-01-02T15:04:05Z")
	}
	return ""
}

var (
	loadedDesc = prometheus.NewDesc("kailash_tls_certificate_last_load_timestamp_seconds",
		"When the section's certificate, key and client CA files were last read and accepted (Unix time); a rejected reload does not move it.",
		[]string{"section"}, nil)
	expiryDesc = prometheus.NewDesc("kailash_tls_certificate_expiry_timestamp_seconds",
		"The not-after time of the certificate the section serves (Unix time).",
		[]string{"section"}, nil)
)

// Collector exports kailash_tls_certificate_last_load_timestamp_seconds
// and kailash_tls_certificate_expiry_timestamp_seconds for the section.
func (s *Server) Collector() prometheus.Collector { return tlsCollector{s} }

type tlsCollector struct{ s *Server }

func (c tlsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- loadedDesc
	ch <- expiryDesc
}

func (c tlsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(loadedDesc, prometheus.GaugeValue, float64(c.s.loaded.Load())/1e9, c.s.field)
	if m := c.s.cur.Load(); m != nil && len(m.Certificate.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(m.Certificate.Certificate[0]); err == nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), c.s.field)
		}
	}
}

// TLSConfig is the server side: TLS 1.3, client certificate required and
// verified against the current client CA, the current certificate served.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.ClientCAs,
				Certificates: []tls.Certificate{m.Certificate},
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}

// Credentials are TLSConfig as gRPC server credentials.
func (s *Server) Credentials() credentials.TransportCredentials {
	return credentials.NewTLS(s.TLSConfig())
}

// Dirs are the directories of the section's files.
func (s *Server) Dirs() []string {
	return fswatch.Dirs(s.cfg.Path, s.sec.CertFile, s.sec.KeyFile, s.sec.ClientCAFile)
}

// Watch reloads the files whenever their directories change, until ctx
// ends. Servers that already follow certificate directories (the control
// plane) call Reload from their own watcher instead.
func (s *Server) Watch(ctx context.Context) error {
	w, err := fswatch.New(fswatch.Options{})
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Follow(s.Dirs()); err != nil {
		return err
	}
	w.Run(ctx, func() { _, _ = s.Reload() })
	return nil
}

// ErrNoPeerCertificate means the connection carried no verified client
// certificate.
var ErrNoPeerCertificate = errors.New("no verified client certificate")

// PeerIdentities are the identities of the verified client certificate of
// the gRPC call or stream ctx belongs to: its common name, DNS SANs and URI
// SANs, in that order.
func PeerIdentities(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ErrNoPeerCertificate
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, ErrNoPeerCertificate
	}
	return Identities(info.State.VerifiedChains[0][0]), nil
}

// Identities are a certificate's common name, DNS SANs and URI SANs.
func Identities(c *x509.Certificate) []string {
	var ids []string
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	ids = append(ids, c.DNSNames...)
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	return ids
}
