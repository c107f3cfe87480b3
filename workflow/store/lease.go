package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Execution leases (docs/deploy.md). Every execution row names its owner,
// the runner process that runs it, and a lease end. The owner renews the
// leases of all its running executions with one UPDATE per tenant every
// LeaseTTL/3; every write of a running execution (node results, its end)
// is conditional on owner = this runner. A runner on PostgreSQL sweeps every
// LeaseTTL/2 for running executions of other owners whose lease ended, takes
// them over (SELECT … FOR UPDATE SKIP LOCKED, so replicas never take the
// same row twice) and marks them interrupted, naming the dead owner. It
// never touches an execution whose lease is live. On SQLite one runner holds
// the data directory (an flock on runner.lock), so at start every execution
// left running is a dead process's and is marked interrupted at once.

// DefaultLeaseTTL is the lease of an execution unless runner.lease_ttl
// sets another.
const DefaultLeaseTTL = 15 * time.Second

// ErrLeaseLost is a write refused because this runner no longer owns the
// execution: its lease expired and another runner took it over.
var ErrLeaseLost = errors.New("execution lease lost")

// The database clock in milliseconds since the epoch: leases are compared
// on one clock, whichever replica writes them.
const (
	pgNowMillis     = `(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT`
	sqliteNowMillis = `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
)

// LeaseStats counts what happened to leases since the store opened.
type LeaseStats struct {
	Lost      int64 // executions this runner found owned by another (heartbeat or write)
	TakenOver int64 // executions of dead runners this runner marked interrupted
	Resumed   int64 // executions of dead runners this runner took over and resumed
}

// leaser is this process's side of the leases: its owner id, the
// executions it owns and the loop renewing them.
type leaser struct {
	owner string
	ttl   time.Duration
	log   *slog.Logger

	mu     sync.Mutex                   // guards owned, gen, onLost, resumer, deferred, sweeps
	owned  map[string]map[string]uint64 // tenant -> execution id -> generation it was added in
	gen    uint64
	onLost func(tenant, id string)
	// resumer, when set, may resume taken-over executions (resume.go);
	// deferred holds every takeover back until it is set; sweeps is set
	// when this store sweeps (PostgreSQL).
	resumer  Resumer
	deferred bool
	sweeps   bool

	lost, takenOver, resumed atomic.Int64

	stop context.CancelFunc
	done chan struct{}
	lock *os.File // the SQLite data directory's runner.lock, held
}

// NewReplicaID is a runner process's owner id: host, pid and a random
// suffix, so a restarted process on the same host is another owner.
func NewReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "runner"
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strings.ToLower(rand.Text()[:8]))
}

func newLeaser(o StoreOptions) *leaser {
	ttl := o.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	return &leaser{owner: NewReplicaID(), ttl: ttl, log: log, owned: map[string]map[string]uint64{}, deferred: o.DeferTakeover}
}

func (l *leaser) own(tenant, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.owned[tenant]
	if m == nil {
		m = map[string]uint64{}
		l.owned[tenant] = m
	}
	l.gen++
	m[id] = l.gen
}

// release forgets id before its end is written, so a heartbeat racing the
// write does not take the ended execution for a lost one.
func (l *leaser) release(tenant, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.owned[tenant]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(l.owned, tenant)
		}
	}
}

// Owner is this runner's owner id, as execution rows record it.
func (s *sqlStore) Owner() string { return s.lease.owner }

// OnLeaseLost sets what is called (from the lease loop) for an execution
// this runner runs but no longer owns: the runner cancels it.
func (s *sqlStore) OnLeaseLost(f func(tenant, id string)) {
	s.lease.mu.Lock()
	defer s.lease.mu.Unlock()
	s.lease.onLost = f
}

// LeaseStats reports the lease counters.
func (s *sqlStore) LeaseStats() LeaseStats {
	return LeaseStats{Lost: s.lease.lost.Load(), TakenOver: s.lease.takenOver.Load(), Resumed: s.lease.resumed.Load()}
}

// whyNotOwned explains a conditional write of execution id that matched no
// row: nil when this runner owns it and it already ended (the first
// outcome stays), ErrLeaseLost (counted) when another runner owns it.
func (s *sqlStore) whyNotOwned(ctx context.Context, t *tenantDB, id string) error {
	var owner, status string
	err := t.db.QueryRowContext(ctx, t.q(`SELECT owner, status FROM {t}executions WHERE id = ?`), id).Scan(&owner, &status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("execution %s: %w", id, ErrNotFound)
	case err != nil:
		return err
	case owner == s.lease.owner:
		return nil
	}
	s.lease.lost.Add(1)
	return fmt.Errorf("execution %s of tenant %s: %w: runner %s owns it now (status %s); this runner is %s", id, t.tenant, ErrLeaseLost, owner, status, s.lease.owner)
}

// startLeases runs the lease loop until Close: heartbeats always (the
// concurrency limit counts live leases), takeover sweeps when sweep is set
// (PostgreSQL: other runners may have died).
func (s *sqlStore) startLeases(sweep bool) {
	ctx, stop := context.WithCancel(context.Background())
	s.lease.stop, s.lease.done = stop, make(chan struct{})
	s.lease.mu.Lock()
	s.lease.sweeps = sweep
	s.lease.mu.Unlock()
	go func() {
		defer close(s.lease.done)
		beat := time.NewTicker(s.lease.ttl / 3)
		defer beat.Stop()
		var sweeps <-chan time.Time
		if sweep {
			t := time.NewTicker(s.lease.ttl / 2)
			defer t.Stop()
			sweeps = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-beat.C:
				s.heartbeat(ctx)
			case <-sweeps:
				if err := s.sweep(ctx); err != nil && ctx.Err() == nil {
					s.lease.log.Warn("runner: taking over expired executions failed; retrying", "err", err)
				}
			}
		}
	}()
}

func (l *leaser) close() {
	if l.stop != nil {
		l.stop()
		<-l.done
	}
}

// heartbeat renews the leases of every running execution this runner owns:
// one UPDATE per tenant that has any. An execution it runs that the UPDATE
// did not renew belongs to another runner now: counted, logged and handed
// to onLost.
func (s *sqlStore) heartbeat(ctx context.Context) {
	l := s.lease
	l.mu.Lock()
	gen := l.gen
	tenants := make([]string, 0, len(l.owned))
	for t := range l.owned {
		tenants = append(tenants, t)
	}
	l.mu.Unlock()
	for _, tenant := range tenants {
		t, err := s.db(ctx, tenant)
		if err != nil {
			l.log.Warn("runner: renewing execution leases failed", "tenant", tenant, "err", err)
			continue
		}
		rows, err := t.db.QueryContext(ctx, t.q(`UPDATE {t}executions SET lease_expires = {now} + ? WHERE owner = ? AND status = ? RETURNING id`),
			l.ttl.Milliseconds(), l.owner, StatusRunning)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("runner: renewing execution leases failed; retrying", "tenant", tenant, "err", err)
			}
			continue
		}
		renewed := map[string]bool{}
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				renewed[id] = true
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			continue
		}
		var lost []string
		l.mu.Lock()
		for id, g := range l.owned[tenant] {
			if g <= gen && !renewed[id] {
				lost = append(lost, id)
				delete(l.owned[tenant], id)
			}
		}
		onLost := l.onLost
		l.mu.Unlock()
		for _, id := range lost {
			l.lost.Add(1)
			l.log.Error("runner: lost the lease of a running execution (another runner took it over); cancelling it here",
				"tenant", tenant, "execution", id, "owner", l.owner)
			if onLost != nil {
				onLost(tenant, id)
			}
		}
	}
}

// sweep takes over every running execution of another owner whose lease
// ended, in every tenant, and marks it interrupted with a reason naming
// the dead owner.
func (s *sqlStore) sweep(ctx context.Context) error {
	tenants, err := s.d.tenants(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, tenant := range tenants {
		t, err := s.db(ctx, tenant)
		if err == nil {
			err = s.takeOver(ctx, t)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
		}
	}
	return errors.Join(errs...)
}

func (s *sqlStore) takeOver(ctx context.Context, t *tenantDB) error {
	resumer, deferred := s.lease.resumerSet()
	if deferred {
		return nil // the runner sets its resumer first (SetResumer)
	}
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, t.q(`SELECT id, owner, lease_expires FROM {t}executions
		WHERE status = ? AND lease_expires < {now} AND owner <> ? LIMIT 500{skiplocked}`), StatusRunning, s.lease.owner)
	if err != nil {
		return err
	}
	type dead struct {
		id, owner string
		expired   int64
		resume    *ExecutionRecord
	}
	var ds []dead
	for rows.Next() {
		var d dead
		if err := rows.Scan(&d.id, &d.owner, &d.expired); err != nil {
			rows.Close()
			return err
		}
		ds = append(ds, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range ds {
		d := &ds[i]
		why := "no runner resumes executions"
		if resumer != nil {
			// Read beside the locked row (the record and its node results
			// are not locked against reading).
			e, err := s.GetExecution(ctx, t.tenant, d.id)
			if err != nil {
				return err
			}
			if why = resumer.Resumable(ctx, e); why == "" {
				d.resume = e
				if _, err := tx.ExecContext(ctx, t.q(`UPDATE {t}executions SET owner = ?, lease_expires = {now} + ? WHERE id = ? AND status = ? AND owner = ?`),
					s.lease.owner, s.lease.ttl.Milliseconds(), d.id, StatusRunning, d.owner); err != nil {
					return err
				}
				continue
			}
		}
		reason := fmt.Sprintf("runner %s stopped renewing its lease (expired %s); taken over by runner %s and marked interrupted: %s",
			d.owner, time.UnixMilli(d.expired).UTC().Format(time.RFC3339), s.lease.owner, why)
		if d.owner == "" {
			reason = "the runner that started this execution stopped (it predates execution leases); taken over by runner " + s.lease.owner + ": " + why
		}
		msg, err := s.seal(t, "executions", d.id, "error", reason)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, t.q(`UPDATE {t}executions SET status = ?, error = ?, finished_at = ?, owner = ? WHERE id = ? AND status = ? AND owner = ?`),
			StatusInterrupted, msg, Now(), s.lease.owner, d.id, StatusRunning, d.owner); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	// Owned after the commit: the claim set a full lease, and a heartbeat
	// before the commit would have found the row still the dead runner's.
	for _, d := range ds {
		if d.resume != nil {
			s.lease.own(t.tenant, d.id)
		}
	}
	for _, d := range ds {
		if d.resume != nil {
			s.lease.resumed.Add(1)
			s.lease.log.Warn("runner: took over an execution whose runner died; resuming it from its last completed node",
				"tenant", t.tenant, "execution", d.id, "dead_owner", d.owner, "owner", s.lease.owner, "completed_nodes", len(d.resume.Nodes))
			resumer.Resume(d.resume)
			continue
		}
		s.lease.takenOver.Add(1)
		s.lease.log.Warn("runner: took over an execution whose runner died; marked interrupted",
			"tenant", t.tenant, "execution", d.id, "dead_owner", d.owner, "owner", s.lease.owner)
	}
	return nil
}

// lockDataDir takes dir/runner.lock (flock, exclusive, not waiting), so a
// second runner on the same SQLite data directory fails at start instead of
// marking the first one's executions interrupted.
func (l *leaser) lockDataDir(dir string) error {
	p := filepath.Join(dir, "runner.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("runner.data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 64)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := strings.TrimSpace(string(b[:n]))
		if holder == "" {
			holder = "unknown"
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("runner.data_dir %s: another runner holds %s (pid %s): a SQLite data directory serves one runner; "+
				"stop it, or run replicas on runner.postgres_dsn", dir, p, holder)
		}
		return fmt.Errorf("runner.data_dir %s: locking %s: %w", dir, p, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	l.lock = f
	return nil
}

func (l *leaser) unlock() error {
	if l.lock == nil {
		return nil
	}
	err := l.lock.Close() // releases the flock
	l.lock = nil
	return err
}
