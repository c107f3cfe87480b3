// Package testenv is the shared test plumbing: free loopback ports, the CI
// rule for missing real components, and polling with generous deadlines.
package testenv

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true), where a missing real
// component (Envoy, slapd, Redis, PostgreSQL) fails the test instead of
// skipping it.
func InCI() bool { return os.Getenv("CI") != "" && os.Getenv("CI") != "false" }

// Missing fails the test in CI and skips it elsewhere, with how to install.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required in CI but missing: %s", what, install)
	}
	t.Skipf("%s not available (%s); skipping outside CI", what, install)
}

// SkipShort skips a long test under -short on a developer's machine. In CI
// it never skips: a -short run there would hide the real components (Envoy,
// the runner binary, the scale runs) the suite must exercise, so it fails.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if InCI() {
		t.Fatalf("-short in CI would skip %s; CI runs the whole suite (make test)", why)
	}
	t.Skipf("-short: %s", why)
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago. Prefer binding ":0" directly where the server allows it.
//
// The port is drawn at random from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): a port the kernel handed out for ":0" is
// in that range, and so is every outgoing connection's local port, so
// between this call and the server's bind an unrelated connect (a health
// poll, a Redis dial) could take it — CI saw "Address already in use" from
// Envoy that way. Below the range only another listener can, and the port
// is checked free and never handed out twice by this process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", FreePort(t, "127.0.0.1"))
}

// FreePort returns a port free on every one of ips (e.g. loopback addresses
// 127.0.0.x, so that replicas on one host each bind ip:port), drawn as
// FreeAddr's is.
func FreePort(t testing.TB, ips ...string) string {
	t.Helper()
	lo, hi := pool()
	for range 500 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
			if !claim(port) {
				continue
			}
		}
		p, ok := bindsOn(port, ips)
		if !ok {
			continue
		}
		if n, _ := strconv.Atoi(p); port == 0 && !claim(n) {
			continue // the kernel's pick was handed out before
		}
		return p
	}
	t.Fatalf("no port free on all of %v", ips)
	return ""
}

// bindsOn reports whether port (0: one the kernel picks on ips[0]) can be
// bound on every address in ips, and which port that was.
func bindsOn(port int, ips []string) (string, bool) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], strconv.Itoa(port)))
	if err != nil {
		return "", false
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	for _, ip := range ips[1:] {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, p))
		if err != nil {
			return "", false
		}
		l.Close()
	}
	return p, true
}

var (
	portsMu     sync.Mutex
	portsIssued = map[int]bool{}
)

// claim records port as handed out; false when it already was.
func claim(port int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	if portsIssued[port] {
		return false
	}
	portsIssued[port] = true
	return true
}

// pool is portPool; a test replaces it to exercise the ":0" fallback.
var pool = portPool

// portPool is the range FreeAddr draws from: [10000, start of the ephemeral
// range), or empty when that range starts too low to leave room.
func portPool() (lo, hi int) {
	lo, ephemeral := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				ephemeral = n
			}
		}
	}
	if ephemeral-lo < 2000 {
		return 0, 0
	}
	return lo, ephemeral
}

// Eventually polls cond every 50ms until it returns nil or the deadline
// passes, then fails with the last error.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
