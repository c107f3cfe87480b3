package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisInstall is the hint given when redis-server is missing.
const redisInstall = "apt-get install redis-server"

// Redis is a redis-server child process on 127.0.0.1 and a free port, with
// no persistence. It is stopped when the test ends; Stop and Start let a
// test take it down and bring it back on the same address.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd
}

// StartRedis starts redis-server, or fails the test in CI (skips elsewhere)
// when it is not installed.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Missing(t, "redis-server", redisInstall)
	}
	r := &Redis{t: t, bin: bin, dir: t.TempDir(), Addr: FreeAddr(t)}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) on Addr and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1", "--port", port, "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "yes",
		"--daemonize", "no", "--loglevel", "warning")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(r.Addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			r.cmd = nil
			r.t.Fatalf("redis-server on %s not ready: %v\n%s", r.Addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (no graceful shutdown: as if it died) and waits.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Client is a go-redis client of the server, closed when the test ends.
func (r *Redis) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DisableIdentity: true})
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisClient starts a redis-server for t and returns a client of it.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	return StartRedis(t).Client()
}

// MemoryAndRedis runs test twice, as subtests "memory" and "redis": a store
// suite picks its store by the subtest's name (IsRedis) and so runs against
// the in-memory store and against a real redis-server.
func MemoryAndRedis(t *testing.T, test func(t *testing.T)) {
	t.Run("memory", test)
	t.Run("redis", test)
}

// IsRedis reports whether t runs under MemoryAndRedis's "redis" subtest.
func IsRedis(t testing.TB) bool { return strings.Contains(t.Name(), "/redis") }
