//go:build scale

package main

// Helpers of the kill-anything scale test (e2e_scale_replicas_test.go): a
// DNS server that resolves the replicated services' names to the
// replicas, as a Kubernetes Service would, Envoy pointed at it, and the
// steady load with its per-request record.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// testDNS answers A queries for the names it holds with all their
// addresses (TTL 1s), AAAA and other types for them with no answer, and
// NXDOMAIN for any other name. Envoy's STRICT_DNS clusters of the
// replicated services (authz, ratelimit, runner) resolve through it.
func testDNS(t *testing.T, names map[string][]net.IP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed at cleanup
			}
			if out, err := dnsAnswer(buf[:n], names); err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func dnsAnswer(q []byte, names map[string][]net.IP) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, fmt.Errorf("want one question: %v", err)
	}
	question := qs[0]
	name := strings.TrimSuffix(strings.ToLower(question.Name.String()), ".")
	ips, known := names[name]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(question); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if question.Type == dnsmessage.TypeA {
		for _, ip := range ips {
			var a [4]byte
			copy(a[:], ip.To4())
			if err := b.AResource(dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: a}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// withResolver points the Envoy bootstrap boot at the DNS server dns (the
// c-ares resolver, no search domains, no fallback to the host's).
func withResolver(boot []byte, dns string) []byte {
	host, port, _ := net.SplitHostPort(dns)
	return append(boot, fmt.Sprintf(`
typed_dns_resolver_config:
  name: envoy.network.dns_resolver.cares
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
    resolvers:
      - socket_address: { address: %s, port_value: %s }
    dns_resolver_options: { no_default_search_domain: true, use_tcp_for_dns_lookups: false }
`, host, port)...)
}

// sharedPort is a port free on every one of ips (loopback addresses
// 127.0.0.x: Linux routes all of 127/8 to lo), so that replicas on one
// host can each bind ip:port and one DNS name with one port reaches all.
func sharedPort(t *testing.T, ips ...string) string {
	t.Helper()
	return testenv.FreePort(t, ips...)
}

// outcome is one request of the load: when it was sent and answered, its
// kind and what came back (code 0: no HTTP answer, err says why).
type outcome struct {
	kind       string
	start, end time.Time
	code       int
	err        error
}

// loadRecord collects the outcomes of every load client.
type loadRecord struct {
	mu  sync.Mutex
	all []outcome
}

func (l *loadRecord) add(o outcome) {
	l.mu.Lock()
	l.all = append(l.all, o)
	l.mu.Unlock()
}

func (l *loadRecord) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.all...)
}

// send makes one request through Envoy at addr for host, with the
// Authorization header auth when not empty, on a fresh connection (the
// kernel spreads connections over the Envoys sharing the listener).
func send(addr, method, host, path, auth, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Host = host
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
