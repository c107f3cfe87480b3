package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// oidcProviderInstall is the hint given when node or npm is missing.
const oidcProviderInstall = "apt-get install nodejs npm (Node.js >= 20.19: Debian trixie, or NodeSource on bookworm)"

// OIDCClient is a client registered at the test OpenID provider.
type OIDCClient struct {
	ID                     string   `json:"client_id"`
	Secret                 string   `json:"client_secret,omitempty"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
}

// OIDCUser is a user of the test OpenID provider: the password its login
// form checks and the claims it releases (by scope: email, profile's
// name, groups, roles).
type OIDCUser struct {
	Password string         `json:"password"`
	Claims   map[string]any `json:"claims"`
}

// OIDCProvider is a real OpenID provider, the npm package oidc-provider
// (pinned in internal/testenv/oidcprovider), run by node as a child
// process on 127.0.0.1 and a free port; it is stopped when the test ends.
// Its login page (GET /interaction/:uid) is a form with fields login and
// password, posted back to the same path.
type OIDCProvider struct {
	// Issuer is http://127.0.0.1:port (discovery at
	// Issuer/.well-known/openid-configuration).
	Issuer string
	cmd    *exec.Cmd
	out    LogBuffer
}

// StartOIDCProvider installs oidc-provider (npm ci into a cache directory
// shared by test runs, once per lock file) and starts it with clients and
// users. Without node or npm the test fails in CI and is skipped elsewhere.
func StartOIDCProvider(t testing.TB, clients []OIDCClient, users map[string]OIDCUser) *OIDCProvider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		Missing(t, "node", oidcProviderInstall)
	}
	if v, err := exec.Command(node, "--version").Output(); err != nil || !nodeRecentEnough(strings.TrimSpace(string(v))) {
		Missing(t, fmt.Sprintf("Node.js >= 20.19 (found %q)", strings.TrimSpace(string(v))), oidcProviderInstall)
	}
	dir := installOIDCProvider(t)
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	p := &OIDCProvider{Issuer: "http://" + addr}
	cfg, err := json.Marshal(map[string]any{"issuer": p.Issuer, "port": json.Number(port), "clients": clients, "users": users})
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(node, "provider.mjs")
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "OIDC_TEST_CONFIG="+string(cfg), "NODE_ENV=test")
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("oidc-provider: %v", err)
	}
	t.Cleanup(p.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.ready()
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("oidc-provider on %s not ready: %v\n%s", addr, err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeRecentEnough reports whether `node --version` (v20.19.2) is at
// least 20.19, oidc-provider 9's floor (its dependency jose 6 needs it).
func nodeRecentEnough(v string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(v, "v%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 20 || major == 20 && minor >= 19
}

// ready reports whether the discovery document is served.
func (p *OIDCProvider) ready() error {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(p.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var d struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != 200 || d.Issuer != p.Issuer {
		return fmt.Errorf("discovery: %d, issuer %q (%v)", resp.StatusCode, d.Issuer, err)
	}
	return nil
}

// Log is what the provider printed.
func (p *OIDCProvider) Log() string { return p.out.String() }

// stop ends the provider's process group (node and nothing else of ours).
func (p *OIDCProvider) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// installOIDCProvider is a directory holding the provider script and its
// node_modules, installed by `npm ci` from the pinned lock file into the
// user's cache (one directory per lock file and script; a lock file
// guards concurrent test processes).
func installOIDCProvider(t testing.TB) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		Missing(t, "npm", oidcProviderInstall)
	}
	src := RepoPath("internal/testenv/oidcprovider")
	files := []string{"package.json", "package-lock.json", "provider.mjs"}
	h := sha256.New()
	contents := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		contents[f] = b
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kailash-testenv", "oidc-provider-"+hex.EncodeToString(h.Sum(nil))[:16])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	stamp := filepath.Join(dir, ".installed")
	if _, err := os.Stat(stamp); err == nil {
		return dir
	}
	for f, b := range contents {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (oidc-provider) in %s: %v\n%s", dir, err, out)
	}
	if err := os.WriteFile(stamp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
