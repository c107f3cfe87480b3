package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kailash-gw/kailash/internal/status"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// getStatus reads one server's /debug/status as JSON.
func getStatus(addr string) (status.Report, error) {
	var r status.Report
	b, err := httpGet("http://" + addr + status.Path)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal([]byte(b), &r)
}

func envoyNamed(r status.Report, node string) *status.Envoy {
	if r.Envoys == nil {
		return nil
	}
	for i := range r.Envoys.List {
		if r.Envoys.List[i].NodeID == node {
			return &r.Envoys.List[i]
		}
	}
	return nil
}

// The status page of a running stack, with a real Envoy: the control
// plane lists the Envoy by node id with the snapshot version it acked
// (the one served) and the tenants; authz lists the tenants and the policy
// revision in force; `kailash status` prints the same; a NACK shows with
// its message; a node that disconnects leaves the list.
func TestStatusEndToEnd(t *testing.T) {
	s := startStack(t, "acme", "globex")

	// The Envoy has acked the snapshot being served, every type at it.
	var xr status.Report
	testenv.Eventually(t, 60*time.Second, func() error {
		var err error
		if xr, err = getStatus(s.ports.xdsHTTP); err != nil {
			return err
		}
		e := envoyNamed(xr, "e2e-envoy")
		switch {
		case e == nil:
			return fmt.Errorf("e2e-envoy not listed: %+v", xr.Envoys)
		case xr.Snapshot == nil || xr.Snapshot.Version != s.xds.Version():
			return fmt.Errorf("snapshot %+v, served %s", xr.Snapshot, s.xds.Version())
		case e.AckedVersion != xr.Snapshot.Version || !e.InSync || len(e.Acked) < 3:
			return fmt.Errorf("e2e-envoy acked %q (%v, in sync %v), snapshot %s", e.AckedVersion, e.Acked, e.InSync, xr.Snapshot.Version)
		}
		return nil
	})
	e := envoyNamed(xr, "e2e-envoy")
	if e.ACKs < 3 || e.NACKs != 0 || e.LastNACK != nil || e.ConnectedSince.IsZero() {
		t.Errorf("e2e-envoy: %+v", e)
	}
	if xr.Tenants.Count != 2 || xr.Tenants.List[0].ID != "acme" || xr.Tenants.List[1].ID != "globex" ||
		xr.Tenants.List[0].Domains[0] != "acme.localhost" || !xr.Tenants.List[0].Active || xr.Tenants.List[0].Plan != "enterprise" {
		t.Errorf("xds tenants: %+v", xr.Tenants)
	}
	cfgBytes, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(cfgBytes); xr.ConfigHash != hex.EncodeToString(sum[:]) || xr.Build.Version == "" {
		t.Errorf("config hash %q, want the file's SHA-256 %x; build %+v", xr.ConfigHash, sum, xr.Build)
	}
	metrics, err := httpGet("http://" + s.ports.xdsHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, `kailash_xds_acks_total{node="e2e-envoy",type_url="`+resource.ListenerType+`"}`) {
		t.Errorf("/metrics has no ACK count for e2e-envoy's listeners")
	}

	ar, err := getStatus(s.ports.authzHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if ar.Component != "authz" || ar.Tenants.Count != 2 || ar.Policy == nil || ar.Policy.Revision == "" || ar.ConfigHash != xr.ConfigHash {
		t.Errorf("authz status: %+v", ar)
	}

	// An edit: both report the new hash, the Envoy acks the new snapshot.
	writeConfig(t, s.cfgPath, configYAML(t, s.ports, "acme", "globex", "initech"))
	testenv.Eventually(t, 60*time.Second, func() error {
		xr, err = getStatus(s.ports.xdsHTTP)
		if err != nil {
			return err
		}
		e := envoyNamed(xr, "e2e-envoy")
		if xr.Tenants.Count != 3 || e == nil || e.AckedVersion != xr.Snapshot.Version || !e.InSync || xr.Snapshot.Version != s.xds.Version() {
			return fmt.Errorf("after the edit: %d tenants, envoy %+v, snapshot %+v", xr.Tenants.Count, e, xr.Snapshot)
		}
		if ar, err = getStatus(s.ports.authzHTTP); err != nil || ar.ConfigHash != xr.ConfigHash {
			return fmt.Errorf("authz config hash %q, xds %q (%v)", ar.ConfigHash, xr.ConfigHash, err)
		}
		return nil
	})

	// kailash status, from the config file and as JSON.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"status", "-c", s.cfgPath}, &out); err != nil {
		t.Fatalf("kailash status: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Logf("kailash status:\n%s", text)
	for _, want := range []string{"xds ", "authz ", "e2e-envoy", "acked " + xr.Snapshot.Version, "in sync", "initech", "globex.localhost",
		"revision " + ar.Policy.Revision, "config", xr.ConfigHash} {
		if !strings.Contains(text, want) {
			t.Errorf("kailash status lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"status", "-json", "-addr", s.ports.xdsHTTP, "-addr", "http://" + s.ports.authzHTTP}, &out); err != nil {
		t.Fatal(err)
	}
	var reps []status.Report
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil || len(reps) != 2 || reps[0].Component != "xds" || reps[1].Component != "authz" ||
		envoyNamed(reps[0], "e2e-envoy") == nil {
		t.Fatalf("kailash status -json: %v %s", err, out.String())
	}
	if err := run(t.Context(), []string{"status", "-addr", testenv.FreeAddr(t)}, &out); err == nil {
		t.Error("kailash status against nothing succeeded")
	}

	// A NACK on the ADS protocol: listed with its message and the version
	// it refused, and counted; the node leaves the list when it disconnects.
	nackStatus(t, s.ports.xds, s.ports.xdsHTTP, "e2e-nacker")
	testenv.Eventually(t, 30*time.Second, func() error {
		r, err := getStatus(s.ports.xdsHTTP)
		if err != nil {
			return err
		}
		if envoyNamed(r, "e2e-nacker") != nil {
			return errors.New("e2e-nacker still listed after its stream closed")
		}
		if envoyNamed(r, "e2e-envoy") == nil {
			return errors.New("e2e-envoy gone")
		}
		return nil
	})
}

// nackStatus opens an ADS stream as node, refuses the clusters it is sent,
// checks /debug/status and /metrics show the NACK, then closes the stream.
func nackStatus(t *testing.T, addr, httpAddr, node string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := &corev3.Node{Id: node, Cluster: "probes"}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("ADS: %v", err)
	}
	const msg = `e2e: cluster "kailash_runner" refused <b>`
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: msg}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		rep, err := getStatus(httpAddr)
		if err != nil {
			return err
		}
		e := envoyNamed(rep, node)
		if e == nil || e.LastNACK == nil {
			return fmt.Errorf("%s: no NACK listed: %+v", node, e)
		}
		if e.LastNACK.Message != msg || e.LastNACK.Version != r.VersionInfo || e.LastNACK.TypeURL != resource.ClusterType || e.NACKs != 1 || e.Cluster != "probes" {
			return fmt.Errorf("%s: %+v %+v", node, e, e.LastNACK)
		}
		b, err := httpGet("http://" + httpAddr + "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(b, `kailash_xds_nacks_total{node="`+node+`",type_url="`+resource.ClusterType+`"} 1`) {
			return errors.New("NACK not counted by node")
		}
		return nil
	})
	_ = st.CloseSend()
}

// The HTML status page in a real browser (headless chromium): the DOM it
// renders, after its script has fetched the page again, holds the live
// Envoy's node id, its acked version and the tenants; nothing unescaped.
func TestStatusPageInBrowser(t *testing.T) {
	browser := findChromium(t)
	s := startStack(t, "acme", "globex")
	var version string
	testenv.Eventually(t, 60*time.Second, func() error {
		r, err := getStatus(s.ports.xdsHTTP)
		if err != nil {
			return err
		}
		if e := envoyNamed(r, "e2e-envoy"); e == nil || !e.InSync {
			return fmt.Errorf("e2e-envoy not in sync: %+v", r.Envoys)
		}
		version = r.Snapshot.Version
		return nil
	})
	dom := dumpDOM(t, browser, "http://"+s.ports.xdsHTTP+status.Path)
	for _, want := range []string{`data-refreshed="`, `<code class="node-id">e2e-envoy</code>`, `<code class="acked-version">` + version + `</code>`,
		`<code class="tenant-id">acme</code>`, `<code class="tenant-id">globex</code>`, "acme.localhost", `id="snapshot-version">` + version} {
		if !strings.Contains(dom, want) {
			t.Errorf("xds page DOM lacks %q:\n%s", want, dom)
		}
	}
	ar, err := getStatus(s.ports.authzHTTP)
	if err != nil {
		t.Fatal(err)
	}
	dom = dumpDOM(t, browser, "http://"+s.ports.authzHTTP+status.Path)
	for _, want := range []string{`data-refreshed="`, `<code class="tenant-id">globex</code>`, `id="policy-revision">` + ar.Policy.Revision + "<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("authz page DOM lacks %q:\n%s", want, dom)
		}
	}
}

// findChromium is Debian's chromium; missing, the test fails in CI and
// skips elsewhere.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM_BIN"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "chromium", "apt-get install -y chromium")
	return ""
}

// dumpDOM loads url in headless chromium, lets its scripts run (virtual
// time: the page's first refresh included) and returns the serialised DOM.
// Chromium and its helper processes run in their own process group, which
// is killed when it is done or after a minute.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000", "--dump-dom", url}
	if os.Geteuid() == 0 {
		args = append([]string{"--no-sandbox"}, args...) // chromium refuses to run as root otherwise
	}
	cmd := exec.CommandContext(ctx, browser, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind
	}
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	if stdout.Len() == 0 {
		t.Fatalf("chromium dumped nothing:\n%s", stderr.String())
	}
	return stdout.String()
}
