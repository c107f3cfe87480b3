package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// `kailash authz -grpc A -http B` and `kailash runner -http C` serve on the
// flags' addresses, not the config's (replicas of one config on one host):
// the config's addresses stay closed, and a flag that is not an address
// stops the process with an error naming it.
func TestListenFlagsOverrideConfig(t *testing.T) {
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	a := &replica{name: "authz", grpc: testenv.FreeAddr(t), http: testenv.FreeAddr(t)}
	// The runner reads identity keys from the authz it is paired with: the
	// one on the flag's address.
	body := strings.Replace(configYAML(t, p, "acme"), "http://"+p.authzHTTP+"/auth", "http://"+a.http+"/auth", 1)
	writeConfig(t, path, body)

	a.kailashProc = startKailash(t, "authz", "-c", path, "-grpc", a.grpc, "-http", a.http)
	a.waitReady(t) // gRPC health SERVING on -grpc, /readyz 200 on -http

	runnerHTTP := testenv.FreeAddr(t)
	r := startKailash(t, "runner", "-c", path, "-http", runnerHTTP)
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case <-r.done:
			t.Fatalf("kailash runner exited: %v\n%s", r.err, r.out)
		default:
		}
		if code := httpStatus(runnerHTTP, "/readyz"); code != 200 {
			return fmt.Errorf("runner /readyz on -http %s: %d", runnerHTTP, code)
		}
		return nil
	})
	if code := httpStatus(runnerHTTP, "/openapi.json"); code != 200 {
		t.Fatalf("the runner's API is not on -http: %d", code)
	}
	for name, addr := range map[string]string{"authz.grpc": p.authz, "authz.http": p.authzHTTP, "runner.http": p.runner} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("the config's %s (%s) is served although a flag overrides it", name, addr)
		}
	}

	bad := startKailash(t, "runner", "-c", path, "-http", "no-port-here")
	select {
	case <-bad.done:
	case <-time.After(60 * time.Second):
		t.Fatal("a runner with -http no-port-here kept running")
	}
	if bad.err == nil || !strings.Contains(bad.out.String(), "no-port-here") {
		t.Fatalf("a bad -http: exit %v, output does not name it:\n%s", bad.err, bad.out)
	}
}
