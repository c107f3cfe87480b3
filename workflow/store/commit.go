package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Group commit (docs/deploy.md, "Durability"). The writes of the execution
// path (an execution's start, each node's result, its end) do not each
// take a transaction and an fsync: they are queued to their database's
// committer, one goroutine that takes every write queued while the last
// commit ran and commits them in one transaction — SQLite: one transaction
// on the tenant's database (synchronous=FULL: the WAL is fsynced before
// COMMIT returns); PostgreSQL: one pipelined pgx batch, an implicit
// transaction, for every tenant at once. A caller that waits returns once
// its batch is committed, so concurrency makes batches larger, not fsyncs
// more frequent, and adds no timer to a waited write (a batch of only
// Deferred writes lingers up to lingerFor for the end that follows them).
//
// Within a batch an execution's start and end fold into one INSERT of the
// finished row (and its node results are written without the ownership
// check: the row is this batch's own); an execution longer than a commit
// has its start and each node committed on their own, as they happen.
//
// Nothing is acknowledged before its commit: the writes a caller does not
// wait for (Deferred) are those no client has been told of yet, and a
// later write it waits for (the end) commits after them.

// maxBatch bounds the writes of one transaction.
const maxBatch = 1024

type writeKind uint8

const (
	writeStart writeKind = iota
	writeNode
	writeFinish
)

// write is one queued write and, once done is closed, its outcome.
type write struct {
	kind writeKind
	t    *tenantDB
	id   string // the execution's

	// start
	workflow, user, input, created string
	version                        int            // the workflow version it runs
	roles                          string         // rolesColumn
	limited                        int            // MaxRunning: PostgreSQL counts it in start_execution_v2
	roleLimits                     map[string]int // RoleLimits: PostgreSQL counts them there too

	// node
	node, typ, started string

	// node and finish (the end's time for finish)
	status   string
	output   any    // sealed, or nil
	errMsg   string // sealed
	finished string

	// planned per batch
	fin           *write // start: the end folded into its INSERT
	folded        bool   // finish: written by its start's INSERT
	unconditional bool   // node: its execution is inserted in this batch

	// outcome
	wait     bool          // a caller waits for it (else a refusal is logged)
	done     chan struct{} // closed once committed or failed
	err      error
	full     string // limited start: "" inserted, else the full limit ("tenant", "role:<role>")
	affected int64  // rows the statement changed
}

// Deferred marks the execution writes made with ctx (StartExecution,
// RecordNode) as ones the caller acknowledges to no one: they return once
// queued, not once committed, and commit with the next batch. A caller
// uses it only when a later write it waits for (FinishExecution) comes
// before any acknowledgement: the end is committed in the same batch as
// the deferred writes before it, or a later one. A start whose tenant
// limit PostgreSQL counts (MaxRunning, RoleLimits) is waited for anyway:
// its answer is the count.
func Deferred(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferredKey{}, true)
}

type deferredKey struct{}

func deferred(ctx context.Context) bool { v, _ := ctx.Value(deferredKey{}).(bool); return v }

// errClosed is a write after Close.
var errClosed = errors.New("workflow store: closed")

// committer is the single writer of one database handle (a SQLite
// tenant's database, or the PostgreSQL pool).
type committer struct {
	s  *sqlStore
	db *sql.DB
	pg bool
	// async: PostgreSQL's second writer, of the counted starts no client
	// has been told of (Deferred): committed with synchronous_commit off,
	// so their batch does not wait for a WAL flush. The execution's end,
	// a synchronous commit on the other writer queued after the start's
	// commit, flushes the WAL up to itself and so the start with it: a
	// crash before that loses only a start nobody was told of, and its
	// end, refused (the row is gone), reports the failure to the caller.
	async bool

	mu     sync.RWMutex // guards closed (and in's closing)
	closed bool
	in     chan *write
	done   chan struct{}

	batches, writes, busy atomic.Int64 // busy: nanoseconds in transactions
}

// committerKey names a committer: its database handle and whether it
// commits asynchronously.
type committerKey struct {
	db    *sql.DB
	async bool
}

// committer is the writer of t's database handle (its asynchronous one
// with async), started on first use.
func (s *sqlStore) committer(t *tenantDB, async bool) *committer {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	k := committerKey{t.db, async}
	if c, ok := s.commits[k]; ok {
		return c
	}
	c := &committer{s: s, db: t.db, pg: t.dollar, async: async, in: make(chan *write, 4*maxBatch), done: make(chan struct{})}
	if s.commits == nil {
		s.commits = map[committerKey]*committer{}
	}
	s.commits[k] = c
	go c.loop()
	return c
}

// closeCommitters commits what is queued and stops every writer.
func (s *sqlStore) closeCommitters() {
	s.cmu.Lock()
	cs := make([]*committer, 0, len(s.commits))
	for _, c := range s.commits {
		cs = append(cs, c)
	}
	s.cmu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		if !c.closed {
			c.closed = true
			close(c.in)
		}
		c.mu.Unlock()
		<-c.done
	}
}

// CommitStats counts the group commits since the store opened.
type CommitStats struct {
	Batches int64         // transactions
	Writes  int64         // queued writes they carried
	Busy    time.Duration // spent running them (a writer busy all the time is the bottleneck)
	Async   int64         // of Batches, those committed with synchronous_commit off (deferred counted starts)
}

// CommitStats sums the committers' counters.
func (s *sqlStore) CommitStats() CommitStats {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	var st CommitStats
	for _, c := range s.commits {
		st.Batches += c.batches.Load()
		st.Writes += c.writes.Load()
		st.Busy += time.Duration(c.busy.Load())
		if c.async {
			st.Async += c.batches.Load()
		}
	}
	return st
}

// submit queues w; with wait it returns w's outcome once committed. A
// deferred start that PostgreSQL counts (the caller waits for the count,
// not for durability) goes to the asynchronous writer.
func (s *sqlStore) submit(w *write, wait, deferred bool) error {
	c := s.committer(w.t, deferred && w.countedIn(w.t.dollar))
	w.done, w.wait = make(chan struct{}), wait
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return errClosed
	}
	c.in <- w
	c.mu.RUnlock()
	if !wait {
		return nil
	}
	<-w.done
	return w.err
}

func (c *committer) loop() {
	defer close(c.done)
	batch := make([]*write, 0, maxBatch)
	for {
		w, ok := <-c.in
		if !ok {
			return
		}
		batch = append(batch[:0], w)
		waited := w.wait
	more:
		for len(batch) < maxBatch {
			select {
			case w, ok := <-c.in:
				if !ok {
					break more
				}
				batch = append(batch, w)
				waited = waited || w.wait
			default:
				break more
			}
		}
		if !waited {
			// Only Deferred writes, which nobody waits for and which a
			// waited one (their execution's end) follows: the end is
			// usually microseconds behind (a short synchronous
			// execution), so rather than commit them alone and then the
			// end in a second fsync, linger for it a little.
			batch = c.linger(batch)
		}
		c.commit(batch)
		clear(batch)
	}
}

// lingerFor bounds how long a batch of Deferred writes waits for a write
// somebody waits for.
const lingerFor = 2 * time.Millisecond

// linger adds to batch the writes queued until one is waited for, the
// batch is full, or lingerFor passed.
func (c *committer) linger(batch []*write) []*write {
	timer := time.NewTimer(lingerFor)
	defer timer.Stop()
	for len(batch) < maxBatch {
		select {
		case w, ok := <-c.in:
			if !ok {
				return batch
			}
			batch = append(batch, w)
			if w.wait {
				// Take what else is queued with it.
				for len(batch) < maxBatch {
					select {
					case w, ok := <-c.in:
						if !ok {
							return batch
						}
						batch = append(batch, w)
					default:
						return batch
					}
				}
				return batch
			}
		case <-timer.C:
			return batch
		}
	}
	return batch
}

type execKey struct {
	t  *tenantDB
	id string
}

// commit writes batch in one transaction and tells every write its
// outcome. When the transaction fails, each write is retried alone, so
// one bad write fails only itself.
func (c *committer) commit(batch []*write) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	c.plan(batch)
	for _, w := range batch {
		if w.kind == writeFinish {
			// Before its end is written: a heartbeat racing the write
			// does not take the ended execution for a lost one.
			c.s.lease.release(w.t.tenant, w.id)
		}
	}
	var err error
	if c.pg {
		err = c.execPostgres(ctx, batch)
	} else {
		err = c.execSQLite(ctx, batch)
	}
	if err != nil {
		for _, w := range batch {
			w.fin, w.folded, w.unconditional = nil, false, false
			w.err = c.execOne(ctx, w)
		}
	}
	c.busy.Add(int64(time.Since(t0)))
	c.batches.Add(1)
	c.writes.Add(int64(len(batch)))
	for _, w := range batch {
		c.outcome(ctx, w)
		close(w.done)
	}
}

// plan folds each end into its start's INSERT when both are in batch.
func (c *committer) plan(batch []*write) {
	starts := map[execKey]*write{}
	for _, w := range batch {
		k := execKey{w.t, w.id}
		switch w.kind {
		case writeStart:
			// PostgreSQL's limited start is a call of
			// start_execution_v2, which inserts a running row.
			if !w.countedIn(c.pg) {
				starts[k] = w
			}
		case writeNode:
			w.unconditional = starts[k] != nil
		case writeFinish:
			if st := starts[k]; st != nil && st.fin == nil {
				st.fin, w.folded = w, true
			}
		}
	}
}

// outcome sets a committed write's error: a conditional write that
// matched nothing, explained; the lease of a started execution taken.
func (c *committer) outcome(ctx context.Context, w *write) {
	if w.err != nil {
		return
	}
	switch w.kind {
	case writeStart:
		if w.countedIn(c.pg) && w.full != "" {
			w.err = w.limitError()
			return
		}
		if w.fin == nil {
			c.s.lease.own(w.t.tenant, w.id)
		}
	case writeNode, writeFinish:
		if !w.folded && w.affected == 0 {
			w.err = c.s.whyNotOwned(ctx, w.t, w.id)
		}
	}
	if w.err != nil && !w.wait {
		c.s.lease.log.Warn("runner: a queued execution write was refused", "tenant", w.t.tenant, "execution", w.id, "err", w.err)
	}
}

// The statements of the execution path.
const (
	qStart = `INSERT INTO {t}executions (id, workflow, status, "user", input, created_at, owner, lease_expires, workflow_version, roles)
		VALUES (?, ?, ?, ?, ?, ?, ?, {now} + ?, ?, ?)`
	// qStartEnded is a start and its end in one row.
	qStartEnded = `INSERT INTO {t}executions (id, workflow, status, "user", input, output, error, created_at, finished_at, owner, lease_expires, workflow_version, roles)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now} + ?, ?, ?)`
	qStartLimited = `SELECT {t}start_execution_v2(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qNodeUpsert   = ` ON CONFLICT (execution_id, node) DO UPDATE SET type = excluded.type, status = excluded.status, output = excluded.output,
			error = excluded.error, started_at = excluded.started_at, finished_at = excluded.finished_at`
	qNode = `INSERT INTO {t}node_results (execution_id, node, type, status, output, error, started_at, finished_at)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?
		WHERE EXISTS (SELECT 1 FROM {t}executions WHERE id = ? AND owner = ? AND status = ?)` + qNodeUpsert
	// qNodeOwn is a node of an execution inserted in the same transaction.
	qNodeOwn = `INSERT INTO {t}node_results (execution_id, node, type, status, output, error, started_at, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)` + qNodeUpsert
	qFinish = `UPDATE {t}executions SET status = ?, output = ?, error = ?, finished_at = ? WHERE id = ? AND status = ? AND owner = ?`
	// qNodes is several nodes of one execution started in an earlier
	// batch, under one ownership check (PostgreSQL; the columns are TEXT,
	// the type VALUES gives its parameters). VALUES_ROWS is replaced by
	// the tuples.
	qNodes = `INSERT INTO {t}node_results (execution_id, node, type, status, output, error, started_at, finished_at)
		SELECT * FROM (VALUES VALUES_ROWS) AS v (execution_id, node, type, status, output, error, started_at, finished_at)
		WHERE EXISTS (SELECT 1 FROM {t}executions WHERE id = ? AND owner = ? AND status = ?)` + qNodeUpsert
)

// statement is w's query template and arguments; "" for an end folded
// into its start.
func (c *committer) statement(w *write) (string, []any) {
	owner, ttl := c.s.lease.owner, c.s.lease.ttl.Milliseconds()
	switch w.kind {
	case writeStart:
		if f := w.fin; f != nil {
			return qStartEnded, []any{w.id, w.workflow, f.status, w.user, w.input, f.output, f.errMsg, w.created, f.finished, owner, ttl, w.version, w.roles}
		}
		if w.countedIn(c.pg) {
			return qStartLimited, []any{w.t.tenant, w.id, w.workflow, w.version, w.user, w.input, w.created, owner, ttl, w.limited, w.roles, roleLimitsArg(w.roleLimits)}
		}
		return qStart, []any{w.id, w.workflow, StatusRunning, w.user, w.input, w.created, owner, ttl, w.version, w.roles}
	case writeNode:
		args := []any{w.id, w.node, w.typ, w.status, w.output, w.errMsg, w.started, w.finished}
		if w.unconditional {
			return qNodeOwn, args
		}
		return qNode, append(args, w.id, owner, StatusRunning)
	default:
		if w.folded {
			return "", nil
		}
		return qFinish, []any{w.status, w.output, w.errMsg, w.finished, w.id, StatusRunning, owner}
	}
}

// stmt is one statement of a batch: the writes it carries (several for a
// multi-row INSERT).
type stmt struct {
	t     *tenantDB
	q     string
	args  []any
	ws    []*write
	multi bool
	// allOrNone: rows of one execution under one ownership check (qNodes):
	// all written, or none.
	allOrNone bool
}

// maxRows bounds the rows of a multi-row INSERT (and so the prepared
// variants of each: one per row count).
const maxRows = 64

// statements is batch as few statements as keep its order's meaning: the
// executions inserted (ended in the batch, then still running), the
// limited starts, the nodes of executions this batch inserts — each kind
// as multi-row INSERTs per tenant — then the writes of executions started
// in an earlier batch, one by one in their order.
func (c *committer) statements(batch []*write) []stmt {
	type group struct {
		t    *tenantDB
		q    string // the single-row template, its VALUES last
		rows []*write
	}
	var ended, running, nodes []*group
	var limited, rest []stmt
	add := func(gs *[]*group, t *tenantDB, q string, w *write) {
		for _, g := range *gs {
			if g.t == t {
				g.rows = append(g.rows, w)
				return
			}
		}
		*gs = append(*gs, &group{t: t, q: q, rows: []*write{w}})
	}
	for _, w := range batch {
		q, args := c.statement(w)
		switch {
		case q == "":
		case q == qStartEnded:
			add(&ended, w.t, q, w)
		case q == qStart:
			add(&running, w.t, q, w)
		case q == qNodeOwn:
			add(&nodes, w.t, q, w)
		case q == qStartLimited:
			limited = append(limited, stmt{t: w.t, q: q, args: args, ws: []*write{w}})
		default:
			rest = append(rest, stmt{t: w.t, q: q, args: args, ws: []*write{w}})
		}
	}
	var out []stmt
	for _, gs := range [][]*group{ended, running} {
		for _, g := range gs {
			out = append(out, c.multi(g.t, g.q, g.rows)...)
		}
	}
	out = append(out, limited...)
	for _, g := range nodes {
		out = append(out, c.multi(g.t, g.q, g.rows)...)
	}
	if c.pg {
		rest = c.groupNodes(rest)
	}
	return append(out, rest...)
}

// groupNodes folds the node results of one execution started in an
// earlier batch (qNode, each with its own ownership check) into one
// statement at the place of the first: PostgreSQL plans, checks and
// inserts once. Only nodes before any other write of their execution in
// the batch, and only distinct nodes (an upsert cannot touch a row twice),
// are folded; the order of each execution's writes is kept.
func (c *committer) groupNodes(rest []stmt) []stmt {
	type group struct {
		at    int // index in out
		nodes map[string]bool
		open  bool // no other write of the execution since
	}
	groups := map[execKey]*group{}
	out := rest[:0:0]
	for _, x := range rest {
		w := x.ws[0]
		k := execKey{w.t, w.id}
		g := groups[k]
		if x.q != qNode {
			if g != nil {
				g.open = false
			}
			out = append(out, x)
			continue
		}
		if g != nil && g.open && !g.nodes[w.node] && len(out[g.at].ws) < maxRows {
			g.nodes[w.node] = true
			out[g.at].ws = append(out[g.at].ws, w)
			continue
		}
		groups[k] = &group{at: len(out), nodes: map[string]bool{w.node: true}, open: true}
		out = append(out, x)
	}
	for i, x := range out {
		if x.q != qNode || len(x.ws) == 1 {
			continue
		}
		tuples := strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?), ", len(x.ws)), ", ")
		st := stmt{t: x.t, q: strings.Replace(qNodes, "VALUES_ROWS", tuples, 1), ws: x.ws, allOrNone: true}
		for _, w := range x.ws {
			st.args = append(st.args, w.id, w.node, w.typ, w.status, w.output, w.errMsg, w.started, w.finished)
		}
		st.args = append(st.args, x.ws[0].id, c.s.lease.owner, StatusRunning)
		out[i] = st
	}
	return out
}

// multi is rows (of one single-row template whose VALUES (…) ends it or
// precedes its ON CONFLICT) as INSERTs of at most maxRows rows each.
func (c *committer) multi(t *tenantDB, q string, rows []*write) []stmt {
	var out []stmt
	for len(rows) > 0 {
		n := min(len(rows), maxRows)
		st := stmt{t: t, q: multiRow(q, n), ws: rows[:n], multi: n > 1}
		for _, w := range rows[:n] {
			_, args := c.statement(w)
			st.args = append(st.args, args...)
		}
		out = append(out, st)
		rows = rows[n:]
	}
	return out
}

var multiRows sync.Map // template + row count -> the template with that many VALUES tuples

// multiRow repeats the VALUES tuple of q n times.
func multiRow(q string, n int) string {
	if n == 1 {
		return q
	}
	key := fmt.Sprint(n, q)
	if v, ok := multiRows.Load(key); ok {
		return v.(string)
	}
	i := strings.Index(q, "VALUES (")
	j := i + strings.Index(q[i:], ")") + 1
	tuple := q[i+len("VALUES ") : j]
	var b strings.Builder
	b.WriteString(q[:j])
	for range n - 1 {
		b.WriteString(", ")
		b.WriteString(tuple)
	}
	b.WriteString(q[j:])
	multiRows.Store(key, b.String())
	return b.String()
}

// execSQLite runs batch in one transaction on the tenant's connection,
// each statement prepared once (before the transaction takes the
// connection, the database's only one).
func (c *committer) execSQLite(ctx context.Context, batch []*write) error {
	stmts := c.statements(batch)
	prepared := make([]*sql.Stmt, len(stmts))
	for i, x := range stmts {
		st, err := x.t.stmt(ctx, x.q)
		if err != nil {
			return err
		}
		prepared[i] = st
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for i, x := range stmts {
		res, err := tx.StmtContext(ctx, prepared[i]).ExecContext(ctx, x.args...)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		x.done(n)
	}
	return tx.Commit()
}

// done credits a statement's rows to its writes: each row of a multi-row
// INSERT is written (any failure fails the statement).
func (x stmt) done(n int64) {
	if x.allOrNone {
		for _, w := range x.ws {
			w.affected = min(n, 1)
		}
		return
	}
	if x.multi {
		for _, w := range x.ws {
			w.affected = 1
		}
		return
	}
	x.ws[0].affected = n
}

// execPostgres sends batch as one pgx batch: one round trip, one implicit
// transaction (the first error rolls it all back), its statements
// prepared once per connection by pgx's cache.
func (c *committer) execPostgres(ctx context.Context, batch []*write) error {
	stmts := c.statements(batch)
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) (err error) {
		pc := dc.(*stdlib.Conn).Conn()
		if c.async {
			// After an error PostgreSQL skips the batch up to its end,
			// COMMIT included: the explicit transaction stays open and
			// failed, and is rolled back before the connection goes back
			// to the pool.
			defer func() {
				if err != nil {
					pc.Exec(ctx, "ROLLBACK")
				}
			}()
		}
		b := &pgx.Batch{}
		if c.async {
			b.Queue("BEGIN")
			b.Queue("SET LOCAL synchronous_commit TO off")
		}
		for _, x := range stmts {
			b.Queue(x.t.q(x.q), x.args...)
		}
		if c.async {
			b.Queue("COMMIT")
		}
		br := pc.SendBatch(ctx, b)
		if c.async {
			for range 2 {
				if _, err := br.Exec(); err != nil {
					br.Close()
					return err
				}
			}
		}
		for _, x := range stmts {
			if x.q == qStartLimited {
				if err := br.QueryRow().Scan(&x.ws[0].full); err != nil {
					br.Close()
					return err
				}
				continue
			}
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			x.done(tag.RowsAffected())
		}
		if c.async {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		return br.Close()
	})
}

// execOne runs w alone, in its own transaction.
func (c *committer) execOne(ctx context.Context, w *write) error {
	q, args := c.statement(w)
	if w.kind == writeStart && w.countedIn(c.pg) {
		return c.db.QueryRowContext(ctx, w.t.q(q), args...).Scan(&w.full)
	}
	res, err := c.db.ExecContext(ctx, w.t.q(q), args...)
	if err != nil {
		return err
	}
	w.affected, _ = res.RowsAffected()
	return nil
}

// countedIn reports whether a start's limits are counted by the database
// (PostgreSQL: start_execution_v2 over every runner's live leases). On
// SQLite one runner holds the data directory and its executor's count
// (its reservations, made before StartExecution) is already every
// runner's, so a start there is a plain INSERT.
func (w *write) countedIn(pg bool) bool {
	return pg && w.kind == writeStart && (w.limited > 0 || len(w.roleLimits) > 0)
}

// limitError is the *LimitError of a start refused by start_execution_v2.
func (w *write) limitError() error {
	if role, ok := strings.CutPrefix(w.full, "role:"); ok {
		return &LimitError{w.t.tenant, "max_concurrent_executions",
			fmt.Sprintf("role %s: %d executions are already running (role limit, on all runners)", role, w.roleLimits[role])}
	}
	return &LimitError{w.t.tenant, "max_concurrent_executions", fmt.Sprintf("%d executions are already running (on all runners)", w.limited)}
}

// roleLimitsArg is start_execution_v2's p_role_limits: {"role": max}.
func roleLimitsArg(m map[string]int) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m) // a map[string]int always marshals
	return string(b)
}
