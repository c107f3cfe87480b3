package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Postgres is a throwaway PostgreSQL server started for one test.
type Postgres struct {
	// DSN connects as the superuser "postgres" (trust authentication on
	// 127.0.0.1 only) to the database "postgres".
	DSN string
	// Addr is the 127.0.0.1:port the server listens on.
	Addr string

	stop func()
}

// Stop shuts the server down now (fast shutdown: open sessions are cut),
// as if the database went away; the test's cleanup then has nothing left
// to stop. It waits until the server has exited.
func (p *Postgres) Stop() { p.stop() }

// postgresBin finds the directory of initdb and postgres: $POSTGRES_BIN,
// the newest /usr/lib/postgresql/*/bin (Debian), or initdb on PATH.
func postgresBin() (string, error) {
	if d := os.Getenv("POSTGRES_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no initdb/postgres found")
}

// StartPostgres initialises a database cluster in a temporary directory and
// runs a PostgreSQL server on 127.0.0.1 and a free port, its unix socket in
// that directory, until the test ends. PostgreSQL refuses to run as root, so
// as root the cluster belongs to, and the server runs as, the "postgres"
// user. Durability is switched off (fsync, synchronous_commit): this is a
// test server. Without PostgreSQL the test is skipped, or fails in CI.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	return startPostgres(t, false)
}

// StartPostgresDurable is StartPostgres with PostgreSQL's production
// durability (fsync, synchronous_commit and full_page_writes on): a commit
// returns once its WAL is on disk. For benchmarks of the write path.
func StartPostgresDurable(t testing.TB) *Postgres {
	t.Helper()
	return startPostgres(t, true)
}

func startPostgres(t testing.TB, durable bool) *Postgres {
	t.Helper()
	bin, err := postgresBin()
	if err != nil {
		Missing(t, "PostgreSQL", "apt-get install postgresql")
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Missing(t, "the postgres user (PostgreSQL refuses to run as root)", "apt-get install postgresql")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parent is 0700 and root's, out of the postgres
	// user's reach.
	dir, err := os.MkdirTemp("", "kailash-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
		// Pdeathsig: a killed test process takes its server with it.
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := cmd("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	durability := []string{"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"}
	if durable {
		durability = []string{"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"}
	}
	srv := cmd("postgres", append([]string{"-D", data, "-h", "127.0.0.1", "-p", port, "-k", dir,
		"-c", "max_connections=300", "-c", "shared_buffers=32MB"}, durability...)...)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait(); logf.Close() }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = srv.Process.Signal(syscall.SIGINT) // fast shutdown
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = srv.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(stop)
	pg := &Postgres{Addr: addr, DSN: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr), stop: stop}
	// Ready once it answers the startup of a real session.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres exited: %v\n%s", err, b)
		default:
		}
		if pgReady(addr) {
			return pg
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres not ready within 30s\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pgReady sends a startup message and reports whether the server asks for
// (or skips) authentication rather than refusing because it is starting up.
func pgReady(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	params := "user\x00postgres\x00database\x00postgres\x00\x00"
	msg := make([]byte, 8+len(params))
	n := len(msg)
	msg[0], msg[1], msg[2], msg[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	msg[4], msg[5], msg[6], msg[7] = 0, 3, 0, 0 // protocol 3.0
	copy(msg[8:], params)
	if _, err := c.Write(msg); err != nil {
		return false
	}
	buf := make([]byte, 512)
	k, err := c.Read(buf)
	if err != nil || k == 0 {
		return false
	}
	// 'R' is an authentication request (AuthenticationOk under trust);
	// 'E' is an error such as "the database system is starting up".
	return buf[0] == 'R' && !strings.Contains(string(buf[:k]), "starting up")
}
