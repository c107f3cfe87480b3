// Package store keeps the workflow runner's state: each tenant's workflows,
// executions, node results and audit records, on SQLite (a database file per
// tenant) or PostgreSQL (a schema per tenant), with versioned migrations and
// the sensitive columns sealed under the data keys.
package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/sealed"
)

// Store keeps each tenant's workflows, executions, node results and audit
// records apart from every other tenant's, and gives the sql node the
// tenant's own database. Two implementations share one schema and one set of
// versioned migrations: SQLite (OpenStore: one database file per tenant) and
// PostgreSQL (OpenPostgresStore: one schema per tenant).
type Store interface {
	PutWorkflow(ctx context.Context, tenant, user, name string, definition json.RawMessage, maxWorkflows int) error
	// UpdateWorkflow replaces an existing workflow's definition with a new
	// version (returned); with ifVersion > 0 only while that is the
	// current version (a *VersionConflictError otherwise).
	UpdateWorkflow(ctx context.Context, tenant, user, name string, definition json.RawMessage, ifVersion int) (int, error)
	GetWorkflow(ctx context.Context, tenant, name string) (*StoredWorkflow, error)
	// GetWorkflowVersion reads one version of a workflow, also one that
	// was deleted since (the version an execution ran).
	GetWorkflowVersion(ctx context.Context, tenant, name string, version int) (*StoredWorkflow, error)
	ListWorkflows(ctx context.Context, tenant string) ([]string, error)
	DeleteWorkflow(ctx context.Context, tenant, name string) error

	StartExecution(ctx context.Context, e *ExecutionRecord) error
	RecordNode(ctx context.Context, tenant, execID string, r NodeRun) error
	FinishExecution(ctx context.Context, tenant, id, status string, output map[string]any, errMsg string) error
	GetExecution(ctx context.Context, tenant, id string) (*ExecutionRecord, error)
	ListExecutions(ctx context.Context, tenant, workflow string, limit int) ([]ExecutionRecord, error)

	Audit(ctx context.Context, r AuditRecord) error

	// Purge deletes, in every tenant, the executions (any status but
	// running, and never one whose lease is live) that finished before
	// executionsBefore, with their node results, and the audit_log rows
	// written before auditBefore; a zero time skips that table
	// (runner.retention, retention.go).
	Purge(ctx context.Context, executionsBefore, auditBefore time.Time) (PurgeResult, error)

	// Owner is this runner's id as the executions it owns record it;
	// OnLeaseLost sets what is told of an execution it runs that another
	// runner took over; LeaseStats counts lost and taken-over leases.
	Owner() string
	OnLeaseLost(func(tenant, id string))
	LeaseStats() LeaseStats
	// SetResumer lets the takeover of a dead runner's executions resume
	// them here instead of marking them interrupted (resume.go), and runs
	// a takeover sweep at once (PostgreSQL).
	SetResumer(r Resumer)

	// TenantQuery runs one parameterized statement against the tenant's own
	// data database (not the runner's tables), as the tenant: on SQLite its
	// <tenant>.data.db under an authorizer, on PostgreSQL its own schema
	// through its own login role.
	TenantQuery(ctx context.Context, tenant string, q TenantQuery) (*QueryResult, error)

	// Ping checks that the store can be used now (for readiness):
	// PostgreSQL answers, the SQLite data directory is there.
	Ping(ctx context.Context) error

	Close() error
}

// TenantQuery is one statement of the sql node.
type TenantQuery struct {
	SQL      string
	Args     []any
	ReadOnly bool
	MaxRows  int
}

// QueryResult is what a statement returned.
type QueryResult struct {
	Columns   []string
	Rows      []map[string]any
	Truncated bool
}

// migrations are applied in order; a database (SQLite) or schema
// (PostgreSQL) records the last one it has. Append only: never edit a
// released migration. Only types and syntax both databases accept.
var migrations = []string{
	`CREATE TABLE workflows (
		name       TEXT PRIMARY KEY,
		definition TEXT NOT NULL,
		created_by TEXT NOT NULL,
		created_at TEXT NOT NULL
	);
	CREATE TABLE executions (
		id          TEXT PRIMARY KEY,
		workflow    TEXT NOT NULL,
		status      TEXT NOT NULL,
		"user"      TEXT NOT NULL,
		input       TEXT NOT NULL,
		output      TEXT,
		error       TEXT,
		created_at  TEXT NOT NULL,
		finished_at TEXT
	);
	CREATE INDEX executions_by_workflow ON executions (workflow, created_at);
	CREATE TABLE node_results (
		execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
		node         TEXT NOT NULL,
		type         TEXT NOT NULL,
		status       TEXT NOT NULL,
		output       TEXT,
		error        TEXT,
		started_at   TEXT NOT NULL,
		finished_at  TEXT NOT NULL,
		PRIMARY KEY (execution_id, node)
	);
	CREATE TABLE audit_log (
		id           TEXT PRIMARY KEY,
		at           TEXT NOT NULL,
		"user"       TEXT NOT NULL,
		workflow     TEXT NOT NULL,
		execution_id TEXT NOT NULL,
		node         TEXT NOT NULL,
		action       TEXT NOT NULL,
		resource     TEXT NOT NULL,
		details      TEXT NOT NULL
	);`,
	`CREATE INDEX executions_by_status ON executions (status);`,
	// Leases (docs/deploy.md): the runner that owns a running execution and
	// when its lease ends (milliseconds since the epoch, the database's
	// clock). Rows from before have no owner and an expired lease.
	`ALTER TABLE executions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
	ALTER TABLE executions ADD COLUMN lease_expires BIGINT NOT NULL DEFAULT 0;
	CREATE INDEX executions_running ON executions (lease_expires) WHERE status = 'running';`,
	// Retention (retention.go): the purge finds old rows by these.
	`CREATE INDEX executions_finished ON executions (finished_at) WHERE status <> 'running';
	CREATE INDEX audit_log_at ON audit_log (at);`,
	// Workflow versions (versions.go): every definition a workflow had,
	// numbered from 1 and never reused (a re-created name continues the
	// count); the version each execution ran, and the caller's roles (in
	// clear: PostgreSQL counts role_limits over them, and a resumed
	// execution runs for the same roles).
	`ALTER TABLE workflows ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
	CREATE TABLE workflow_versions (
		name       TEXT NOT NULL,
		version    INTEGER NOT NULL,
		definition TEXT NOT NULL,
		created_by TEXT NOT NULL,
		created_at TEXT NOT NULL,
		PRIMARY KEY (name, version)
	);
	INSERT INTO workflow_versions (name, version, definition, created_by, created_at)
		SELECT name, 1, definition, created_by, created_at FROM workflows;
	ALTER TABLE executions ADD COLUMN workflow_version INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE executions ADD COLUMN roles TEXT NOT NULL DEFAULT '';`,
}

// ValidTenant reports whether id is a tenant id the store accepts (a DNS
// label: it names a database file and a PostgreSQL schema and role).
func ValidTenant(id string) bool { return config.ValidTenantID(id) }

// Execution statuses.
const (
	StatusRunning     = "running"
	StatusCompleted   = "completed"
	StatusFailed      = "failed"
	StatusCancelled   = "cancelled"
	StatusTimedOut    = "timed_out"
	StatusInterrupted = "interrupted"
)

const interruptedMsg = "the runner stopped while this execution was running"

// Now is a timestamp as the store keeps them (UTC RFC 3339 with nanoseconds,
// so they order as strings): the CreatedAt of an ExecutionRecord.
func Now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// dialect is what differs between the SQLite and PostgreSQL stores.
type dialect interface {
	// tenant opens (once) and migrates the tenant's state database or schema.
	tenant(ctx context.Context, tenant string) (*tenantDB, error)
	// lockWorkflows serialises workflow creation within tx (max_workflows).
	lockWorkflows(ctx context.Context, tx *sql.Tx, t *tenantDB) error
	tenantQuery(ctx context.Context, tenant string, q TenantQuery) (*QueryResult, error)
	// tenants lists the tenants the store holds.
	tenants(ctx context.Context) ([]string, error)
	ping(ctx context.Context) error
	close() error
}

// tenantDB is a tenant's state: a database handle and how its queries are
// written (table prefix, placeholders).
type tenantDB struct {
	db *sql.DB
	// rdb, when set, serves reads beside db (SQLite in WAL: readers do not
	// wait for the group commit holding the writer connection).
	rdb    *sql.DB
	tenant string
	prefix string // "" (SQLite) or `"schema".` (PostgreSQL)
	dollar bool   // $n placeholders and IS NOT DISTINCT FROM (PostgreSQL) instead of ? and IS

	qs     sync.Map // query template -> rendered query
	stmts  sync.Map // query template -> *sql.Stmt (the hot writes, stmt)
	rstmts sync.Map // query template -> *sql.Stmt on reader() (the hot reads, readStmt)
}

// readStmt is a query template prepared once on the tenant's reader (the
// workflow lookup every execution makes).
func (t *tenantDB) readStmt(ctx context.Context, tmpl string) (*sql.Stmt, error) {
	if v, ok := t.rstmts.Load(tmpl); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := t.reader().PrepareContext(ctx, t.q(tmpl))
	if err != nil {
		return nil, err
	}
	if v, ok := t.rstmts.LoadOrStore(tmpl, st); ok {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// reader is the handle for reads that need no transaction.
func (t *tenantDB) reader() *sql.DB {
	if t.rdb != nil {
		return t.rdb
	}
	return t.db
}

// stmt is a query template prepared once per tenant database: the writes
// every execution makes (its start, each node, its end) are not parsed
// again each time (commit.go runs them in its transactions).
func (t *tenantDB) stmt(ctx context.Context, tmpl string) (*sql.Stmt, error) {
	if v, ok := t.stmts.Load(tmpl); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := t.db.PrepareContext(ctx, t.q(tmpl))
	if err != nil {
		return nil, err
	}
	if v, ok := t.stmts.LoadOrStore(tmpl, st); ok {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// q renders a query template: {t} becomes the table prefix, {now} the
// database's clock in milliseconds since the epoch (leases), {skiplocked}
// FOR UPDATE SKIP LOCKED on PostgreSQL, {ids} a subquery of the strings of
// a JSON array given as one parameter and, for PostgreSQL, each ? becomes
// $n. Templates are constants with no ? in
// literals.
func (t *tenantDB) q(tmpl string) string {
	if v, ok := t.qs.Load(tmpl); ok {
		return v.(string)
	}
	s := strings.ReplaceAll(tmpl, "{t}", t.prefix)
	if t.dollar {
		s = strings.ReplaceAll(s, "{is}", "IS NOT DISTINCT FROM")
		s = strings.ReplaceAll(s, "{now}", pgNowMillis)
		s = strings.ReplaceAll(s, "{skiplocked}", " FOR UPDATE SKIP LOCKED")
		s = strings.ReplaceAll(s, "{ids}", "SELECT jsonb_array_elements_text(CAST(CAST(? AS TEXT) AS jsonb))")
	} else {
		s = strings.ReplaceAll(s, "{is}", "IS")
		s = strings.ReplaceAll(s, "{now}", sqliteNowMillis)
		s = strings.ReplaceAll(s, "{skiplocked}", "")
		s = strings.ReplaceAll(s, "{ids}", "SELECT value FROM json_each(?)")
	}
	if t.dollar {
		var b strings.Builder
		n := 0
		for _, r := range s {
			if r == '?' {
				n++
				b.WriteString("$" + strconv.Itoa(n))
				continue
			}
			b.WriteRune(r)
		}
		s = b.String()
	}
	t.qs.Store(tmpl, s)
	return s
}

// sqlStore is the Store over a dialect.
type sqlStore struct {
	d dialect
	// keys seal the payload columns (sealedColumns); nil writes them in
	// clear (and still reads values sealed before, when it can).
	keys *sealed.Keyring
	// lease is this process's ownership of the executions it runs
	// (lease.go).
	lease *leaser

	cmu     sync.Mutex                  // guards commits
	commits map[committerKey]*committer // the group committers (commit.go): one per database handle, and PostgreSQL's asynchronous one
}

// StoreOptions tune OpenStoreWith and OpenPostgresStoreWith.
type StoreOptions struct {
	// Keys encrypt execution inputs, outputs and errors, node results,
	// audit details and the users recorded with them; nil stores them in
	// clear. See OpenDataKeys.
	Keys *sealed.Keyring
	// Maintenance opens the store for a tool working beside a serving
	// runner (kailash keys): executions left running are not marked
	// interrupted, no lease is renewed or taken over, and the SQLite data
	// directory's runner lock is not taken.
	Maintenance bool
	// LeaseTTL is how long an execution's lease lasts unless its runner
	// renews it (runner.lease_ttl); zero is DefaultLeaseTTL.
	LeaseTTL time.Duration
	// DeferTakeover holds the takeover of dead runners' executions back
	// until SetResumer is called, so the runner can resume them instead of
	// marking them interrupted (PostgreSQL).
	DeferTakeover bool
	// Log receives the lease loop's warnings; nil is slog.Default().
	Log *slog.Logger
}

var _ Store = (*sqlStore)(nil)

func (s *sqlStore) Ping(ctx context.Context) error { return s.d.ping(ctx) }

func (s *sqlStore) Close() error {
	s.lease.close()
	s.closeCommitters() // what is queued is committed
	return errors.Join(s.d.close(), s.lease.unlock())
}

func (s *sqlStore) db(ctx context.Context, tenant string) (*tenantDB, error) {
	if !ValidTenant(tenant) {
		return nil, fmt.Errorf("tenant %q: not a valid tenant id", tenant)
	}
	return s.d.tenant(ctx, tenant)
}

// migrate brings a tenant's database (SQLite) or schema (PostgreSQL; exec
// runs with the schema as search_path) to the latest version. It runs in tx.
func migrate(ctx context.Context, tx *sql.Tx, t *tenantDB) error {
	if _, err := tx.ExecContext(ctx, t.q(`CREATE TABLE IF NOT EXISTS {t}schema_migrations (version INTEGER NOT NULL)`)); err != nil {
		return err
	}
	var v int
	if err := tx.QueryRowContext(ctx, t.q(`SELECT COALESCE(MAX(version), 0) FROM {t}schema_migrations`)).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this runner's %d", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, t.q(`INSERT INTO {t}schema_migrations (version) VALUES (?)`), i+1); err != nil {
			return err
		}
	}
	return nil
}

// markInterrupted ends every execution a previous process left running:
// on SQLite, whose data directory only one runner may hold (lease.go), at
// start.
func (s *sqlStore) markInterrupted(ctx context.Context, t *tenantDB) error {
	rows, err := t.db.QueryContext(ctx, t.q(`SELECT id FROM {t}executions WHERE status = ?`), StatusRunning)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		msg, err := s.seal(t, "executions", id, "error", interruptedMsg)
		if err != nil {
			return err
		}
		if _, err := t.db.ExecContext(ctx, t.q(`UPDATE {t}executions SET status = ?, error = ?, finished_at = ?, owner = ? WHERE id = ? AND status = ?`),
			StatusInterrupted, msg, Now(), s.lease.owner, id, StatusRunning); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotFound is a missing workflow or execution.
var ErrNotFound = errors.New("not found")

// StoredWorkflow is a tenant's stored workflow: its definition as the
// runner encoded it (JSON), who created it and when.
type StoredWorkflow struct {
	Definition json.RawMessage `json:"definition"`
	CreatedBy  string          `json:"created_by"`
	CreatedAt  string          `json:"created_at"`
	// Version numbers the definitions of a name from 1; UpdatedBy and
	// UpdatedAt say who wrote this version and when.
	Version   int    `json:"version"`
	UpdatedBy string `json:"updated_by"`
	UpdatedAt string `json:"updated_at"`
	// Digest is the SHA-256 of the stored definition: compiled workflows
	// are cached by it.
	Digest string `json:"-"`
}

// PutWorkflow stores a new workflow, its definition as the runner encoded
// it; an existing name is ErrExists, a full tenant a *LimitError.
func (s *sqlStore) PutWorkflow(ctx context.Context, tenant, user, name string, definition json.RawMessage, maxWorkflows int) error {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.d.lockWorkflows(ctx, tx, t); err != nil {
		return err
	}
	// The count and the insert are one statement under the lock, so two
	// creates cannot both pass the limit.
	// Its version continues the name's history: a re-created name does not
	// reuse the versions an earlier workflow of that name had.
	res, err := tx.ExecContext(ctx, t.q(`INSERT INTO {t}workflows (name, definition, created_by, created_at, version)
		SELECT ?, ?, ?, ?, (SELECT COALESCE(MAX(version), 0) + 1 FROM {t}workflow_versions WHERE name = ?)
		WHERE (SELECT COUNT(*) FROM {t}workflows) < ?
		ON CONFLICT (name) DO NOTHING`), name, string(definition), user, Now(), name, maxWorkflows)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		err := tx.QueryRowContext(ctx, t.q(`SELECT 1 FROM {t}workflows WHERE name = ?`), name).Scan(&one)
		if err == nil {
			return fmt.Errorf("workflow %q: %w", name, ErrExists)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return &LimitError{tenant, "max_workflows", fmt.Sprintf("the tenant already has %d workflows", maxWorkflows)}
	}
	if err := recordVersion(ctx, tx, t, name); err != nil {
		return err
	}
	return tx.Commit()
}

// ErrExists is a workflow name the tenant already has.
var ErrExists = errors.New("already exists")

// GetWorkflow reads one workflow.
func (s *sqlStore) GetWorkflow(ctx context.Context, tenant, name string) (*StoredWorkflow, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	st, err := t.readStmt(ctx, `SELECT w.definition, w.created_by, w.created_at, w.version,
		COALESCE(v.created_by, w.created_by), COALESCE(v.created_at, w.created_at)
		FROM {t}workflows w LEFT JOIN {t}workflow_versions v ON v.name = w.name AND v.version = w.version
		WHERE w.name = ?`)
	if err != nil {
		return nil, err
	}
	return scanWorkflow(st.QueryRowContext(ctx, name))
}

func scanWorkflow(row *sql.Row) (*StoredWorkflow, error) {
	var w StoredWorkflow
	var def string
	err := row.Scan(&def, &w.CreatedBy, &w.CreatedAt, &w.Version, &w.UpdatedBy, &w.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(def))
	w.Digest = hex.EncodeToString(sum[:])
	w.Definition = json.RawMessage(def)
	return &w, nil
}

// ListWorkflows lists a tenant's workflow names.
func (s *sqlStore) ListWorkflows(ctx context.Context, tenant string) ([]string, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := t.reader().QueryContext(ctx, t.q(`SELECT name FROM {t}workflows ORDER BY name`))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// DeleteWorkflow removes a workflow (its executions stay, for the record).
func (s *sqlStore) DeleteWorkflow(ctx context.Context, tenant, name string) error {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	res, err := t.db.ExecContext(ctx, t.q(`DELETE FROM {t}workflows WHERE name = ?`), name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// ExecutionRecord is an execution as stored and shown.
type ExecutionRecord struct {
	ID       string `json:"execution_id"`
	Workflow string `json:"workflow"`
	// WorkflowVersion is the version of the tenant's workflow it ran; 0
	// for a shared workflow (runner.workflows) and executions from before
	// versions.
	WorkflowVersion int            `json:"workflow_version,omitempty"`
	Status          string         `json:"status"`
	Tenant          string         `json:"tenant"`
	User            string         `json:"user"`
	Input           map[string]any `json:"input,omitempty"`
	Output          map[string]any `json:"output,omitempty"`
	Error           string         `json:"error,omitempty"`
	CreatedAt       string         `json:"created_at"`
	FinishedAt      string         `json:"finished_at,omitempty"`
	Nodes           []NodeRun      `json:"nodes,omitempty"`
	// MaxRunning, when positive, bounds the tenant's running executions at
	// StartExecution, counted in the store over every runner's live leases
	// (a full tenant is a *LimitError).
	MaxRunning int `json:"-"`
	// Roles are the caller's roles, recorded with the execution (a resumed
	// execution runs for them). RoleLimits, when set, bound the running
	// executions of each role's holders in the tenant at StartExecution,
	// counted in PostgreSQL over every runner's live leases (SQLite: the
	// one runner's executor counts).
	Roles      []string       `json:"-"`
	RoleLimits map[string]int `json:"-"`
}

// rolesColumn is how executions.roles keeps roles: a JSON array, "" for
// none.
func rolesColumn(roles []string) (string, error) {
	if len(roles) == 0 {
		return "", nil
	}
	b, err := json.Marshal(roles)
	return string(b), err
}

// StartExecution records an execution before it starts, owned by this
// runner under a fresh lease; with e.MaxRunning on PostgreSQL the count of
// the tenant's running executions (live leases, any runner) and the insert
// are one call of start_execution under the tenant's execution lock (a
// full tenant is a *LimitError). On SQLite one runner holds the data
// directory, so the executor's own count is every runner's. It returns
// once committed (group commit, commit.go), or once queued under Deferred.
func (s *sqlStore) StartExecution(ctx context.Context, e *ExecutionRecord) error {
	t, err := s.db(ctx, e.Tenant)
	if err != nil {
		return err
	}
	in, err := json.Marshal(e.Input)
	if err != nil {
		return err
	}
	user, err := s.seal(t, "executions", e.ID, "user", e.User)
	if err != nil {
		return err
	}
	input, err := s.seal(t, "executions", e.ID, "input", string(in))
	if err != nil {
		return err
	}
	roles, err := rolesColumn(e.Roles)
	if err != nil {
		return err
	}
	w := &write{kind: writeStart, t: t, id: e.ID, workflow: e.Workflow, version: e.WorkflowVersion, user: user, input: input, created: e.CreatedAt,
		roles: roles, limited: max(e.MaxRunning, 0), roleLimits: e.RoleLimits}
	return s.submit(w, !deferred(ctx) || w.countedIn(t.dollar), deferred(ctx))
}

// RecordNode stores one node's outcome, while this runner owns the
// execution (ErrLeaseLost otherwise). It returns once committed, or once
// queued under Deferred (a refusal is then logged, and the execution's
// end, refused too, reports it).
func (s *sqlStore) RecordNode(ctx context.Context, tenant, execID string, r NodeRun) error {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	var out []byte
	if r.Output != nil {
		if out, err = json.Marshal(r.Output); err != nil {
			return err
		}
	}
	row := nodeRow(execID, r.Node)
	sout, err := s.sealNullable(t, "node_results", row, "output", out)
	if err != nil {
		return err
	}
	serr, err := s.seal(t, "node_results", row, "error", r.Error)
	if err != nil {
		return err
	}
	w := &write{kind: writeNode, t: t, id: execID, node: r.Node, typ: r.Type, status: r.Status, output: sout, errMsg: serr,
		started: r.Started.UTC().Format(time.RFC3339Nano), finished: r.Finished.UTC().Format(time.RFC3339Nano)}
	return s.submit(w, !deferred(ctx), deferred(ctx))
}

// FinishExecution records the end of an execution, unless it already ended
// (a cancel racing a completion keeps the first outcome), and returns once
// it is committed with every write queued before it. Only its owner writes
// it: when another runner took it over (this one's lease expired) the
// result is not stored and the error is an ErrLeaseLost, for the caller to
// log and count.
func (s *sqlStore) FinishExecution(ctx context.Context, tenant, id, status string, output map[string]any, errMsg string) error {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	var out []byte
	if output != nil {
		if out, err = json.Marshal(output); err != nil {
			return err
		}
	}
	sout, err := s.sealNullable(t, "executions", id, "output", out)
	if err != nil {
		return err
	}
	serr, err := s.seal(t, "executions", id, "error", errMsg)
	if err != nil {
		return err
	}
	return s.submit(&write{kind: writeFinish, t: t, id: id, status: status, output: sout, errMsg: serr, finished: Now()}, true, false)
}

// GetExecution reads an execution with its node results.
func (s *sqlStore) GetExecution(ctx context.Context, tenant, id string) (*ExecutionRecord, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	e := &ExecutionRecord{Tenant: tenant}
	var in string
	var out, errMsg, fin sql.NullString
	var roles string
	err = t.reader().QueryRowContext(ctx, t.q(`SELECT id, workflow, status, "user", input, output, error, created_at, finished_at, workflow_version, roles FROM {t}executions WHERE id = ?`), id).
		Scan(&e.ID, &e.Workflow, &e.Status, &e.User, &in, &out, &errMsg, &e.CreatedAt, &fin, &e.WorkflowVersion, &roles)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	e.FinishedAt = fin.String
	if roles != "" {
		_ = json.Unmarshal([]byte(roles), &e.Roles)
	}
	if e.User, err = s.open(t, "executions", e.ID, "user", e.User); err != nil {
		return nil, err
	}
	if e.Error, err = s.open(t, "executions", e.ID, "error", errMsg.String); err != nil {
		return nil, err
	}
	if in, err = s.open(t, "executions", e.ID, "input", in); err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(in), &e.Input)
	if out.Valid {
		o, err := s.open(t, "executions", e.ID, "output", out.String)
		if err != nil {
			return nil, err
		}
		_ = json.Unmarshal([]byte(o), &e.Output)
	}
	rows, err := t.reader().QueryContext(ctx, t.q(`SELECT node, type, status, output, error, started_at, finished_at FROM {t}node_results WHERE execution_id = ? ORDER BY started_at, node`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r NodeRun
		var o, em sql.NullString
		var st, ft string
		if err := rows.Scan(&r.Node, &r.Type, &r.Status, &o, &em, &st, &ft); err != nil {
			return nil, err
		}
		row := nodeRow(e.ID, r.Node)
		if o.Valid {
			plain, err := s.open(t, "node_results", row, "output", o.String)
			if err != nil {
				return nil, err
			}
			_ = json.Unmarshal([]byte(plain), &r.Output)
		}
		if r.Error, err = s.open(t, "node_results", row, "error", em.String); err != nil {
			return nil, err
		}
		r.Started, _ = time.Parse(time.RFC3339Nano, st)
		r.Finished, _ = time.Parse(time.RFC3339Nano, ft)
		e.Nodes = append(e.Nodes, r)
	}
	return e, rows.Err()
}

// ListExecutions lists a workflow's latest executions (without node results).
func (s *sqlStore) ListExecutions(ctx context.Context, tenant, workflow string, limit int) ([]ExecutionRecord, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := t.reader().QueryContext(ctx, t.q(`SELECT id, status, "user", error, created_at, finished_at, workflow_version FROM {t}executions WHERE workflow = ? ORDER BY created_at DESC LIMIT ?`), workflow, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ExecutionRecord{}
	for rows.Next() {
		e := ExecutionRecord{Tenant: tenant, Workflow: workflow}
		var em, fin sql.NullString
		if err := rows.Scan(&e.ID, &e.Status, &e.User, &em, &e.CreatedAt, &fin, &e.WorkflowVersion); err != nil {
			return nil, err
		}
		e.FinishedAt = fin.String
		if e.User, err = s.open(t, "executions", e.ID, "user", e.User); err != nil {
			return nil, err
		}
		if e.Error, err = s.open(t, "executions", e.ID, "error", em.String); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Audit stores an audit_log record in its tenant's database.
func (s *sqlStore) Audit(ctx context.Context, r AuditRecord) error {
	t, err := s.db(ctx, r.Tenant)
	if err != nil {
		return err
	}
	d, err := json.Marshal(r.Details)
	if err != nil {
		return err
	}
	user, err := s.seal(t, "audit_log", r.ID, "user", r.User)
	if err != nil {
		return err
	}
	details, err := s.seal(t, "audit_log", r.ID, "details", string(d))
	if err != nil {
		return err
	}
	_, err = t.db.ExecContext(ctx, t.q(`INSERT INTO {t}audit_log (id, at, "user", workflow, execution_id, node, action, resource, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.At.UTC().Format(time.RFC3339Nano), user, r.Workflow, r.Execution, r.Node, r.Action, r.Resource, details)
	return err
}

// TenantQuery runs the sql node's statement as the tenant.
func (s *sqlStore) TenantQuery(ctx context.Context, tenant string, q TenantQuery) (*QueryResult, error) {
	if !ValidTenant(tenant) {
		return nil, fmt.Errorf("tenant %q: not a valid tenant id", tenant)
	}
	return s.d.tenantQuery(ctx, tenant, q)
}

// scanRows reads at most max rows as JSON-like values.
func scanRows(rows *sql.Rows, max int) (*QueryResult, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	res := &QueryResult{Columns: cols, Rows: []map[string]any{}}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if len(res.Rows) >= max {
			res.Truncated = true
			break
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make(map[string]any, len(cols))
		for i, c := range cols {
			row[c] = jsonValue(vals[i])
		}
		res.Rows = append(res.Rows, row)
	}
	return res, rows.Err()
}

// jsonValue maps a database value onto JSON's types.
func jsonValue(v any) any {
	switch v := v.(type) {
	case nil, string, bool, float64:
		return v
	case []byte:
		return string(v)
	case int64:
		return float64(v)
	case int32:
		return float64(v)
	case float32:
		return float64(v)
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return string(b)
	}
	return out
}
