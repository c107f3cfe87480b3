package testenv

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr's ports come from below the ephemeral range (where no outgoing
// connection takes them), are bindable and never repeat within a process.
func TestFreeAddrBelowEphemeralRange(t *testing.T) {
	lo, hi := pool()
	seen := map[string]bool{}
	for range 200 {
		addr := FreeAddr(t)
		host, p, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("FreeAddr = %q", addr)
		}
		port, _ := strconv.Atoi(p)
		// With no room below the ephemeral range FreeAddr falls back to
		// ":0"; its ports are then only checked distinct and bindable.
		if hi > lo && (port < lo || port >= hi) {
			t.Fatalf("port %d outside [%d, %d)", port, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %s handed out twice", p)
		}
		seen[p] = true
	}
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeAddr's %s is not bindable: %v", addr, err)
	}
	ln.Close()
}

func TestNodeRecentEnough(t *testing.T) {
	for v, want := range map[string]bool{"v20.20.2": true, "v20.19.0": true, "v22.1.0": true, "v20.18.3": false, "v18.19.0": false, "": false, "20.19": false} {
		if got := nodeRecentEnough(v); got != want {
			t.Errorf("nodeRecentEnough(%q) = %v", v, got)
		}
	}
}

// Where the ephemeral range leaves no room below it, FreeAddr falls back to
// the kernel's ":0" ports, still distinct within the process and bindable.
func TestFreeAddrFallback(t *testing.T) {
	saved := pool
	pool = func() (int, int) { return 0, 0 }
	t.Cleanup(func() { pool = saved })
	seen := map[string]bool{}
	for range 50 {
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("fallback %s is not bindable: %v", addr, err)
		}
		ln.Close()
	}
}
