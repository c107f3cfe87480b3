package workflow

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, "sqlite"
)

// Store keeps each tenant's workflows, executions, node results and audit
// records in its own SQLite database (<data_dir>/<tenant>.db), so one
// tenant's data never shares a file with another's. With no directory the
// databases live in memory.
type Store struct {
	dir string

	mu  sync.Mutex         // guards dbs
	dbs map[string]*sql.DB // tenant -> database
}

// migrations are applied in order; a database records the last one it has.
// Append only: never edit a released migration.
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
		user        TEXT NOT NULL,
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
		user         TEXT NOT NULL,
		workflow     TEXT NOT NULL,
		execution_id TEXT NOT NULL,
		node         TEXT NOT NULL,
		action       TEXT NOT NULL,
		resource     TEXT NOT NULL,
		details      TEXT NOT NULL
	);`,
}

var tenantRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Execution statuses.
const (
	StatusRunning     = "running"
	StatusCompleted   = "completed"
	StatusFailed      = "failed"
	StatusCancelled   = "cancelled"
	StatusTimedOut    = "timed_out"
	StatusInterrupted = "interrupted"
)

// OpenStore opens the store and marks every execution a previous process
// left running as interrupted.
func OpenStore(ctx context.Context, dir string) (*Store, error) {
	s := &Store{dir: dir, dbs: map[string]*sql.DB{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runner.data_dir: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.db"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		tenant := strings.TrimSuffix(filepath.Base(f), ".db")
		if !tenantRe.MatchString(tenant) {
			continue
		}
		db, err := s.db(ctx, tenant)
		if err != nil {
			return nil, err
		}
		if _, err := db.ExecContext(ctx, `UPDATE executions SET status = ?, error = ?, finished_at = ? WHERE status = ?`,
			StatusInterrupted, "the runner stopped while this execution was running", now(), StatusRunning); err != nil {
			return nil, fmt.Errorf("tenant %s: marking interrupted executions: %w", tenant, err)
		}
	}
	return s, nil
}

// Close closes every database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for t, db := range s.dbs {
		errs = append(errs, db.Close())
		delete(s.dbs, t)
	}
	return errors.Join(errs...)
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// db opens (once) and migrates a tenant's database.
func (s *Store) db(ctx context.Context, tenant string) (*sql.DB, error) {
	if !tenantRe.MatchString(tenant) {
		return nil, fmt.Errorf("tenant %q: not a valid tenant id", tenant)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if db, ok := s.dbs[tenant]; ok {
		return db, nil
	}
	dsn := "file:" + filepath.Join(s.dir, tenant+".db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	if s.dir == "" {
		dsn = "file::memory:?_pragma=foreign_keys(1)"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One connection: SQLite has one writer anyway, and an in-memory
	// database lives exactly as long as its connection.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	s.dbs[tenant] = db
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this runner's %d", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// ErrNotFound is a missing workflow or execution.
var ErrNotFound = errors.New("not found")

// StoredWorkflow is a tenant's workflow as the API shows it.
type StoredWorkflow struct {
	Definition Definition `json:"definition"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  string     `json:"created_at"`
}

// PutWorkflow stores a new workflow; an existing name is an error.
func (s *Store) PutWorkflow(ctx context.Context, tenant, user string, d Definition, maxWorkflows int) error {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	// The count and the insert are one statement, so two creates cannot
	// both pass the limit.
	res, err := db.ExecContext(ctx, `INSERT INTO workflows (name, definition, created_by, created_at)
		SELECT ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM workflows) < ?
		ON CONFLICT (name) DO NOTHING`, d.Name, string(b), user, now(), maxWorkflows)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.GetWorkflow(ctx, tenant, d.Name); err == nil {
			return fmt.Errorf("workflow %q: %w", d.Name, errExists)
		}
		return &LimitError{tenant, "max_workflows", fmt.Sprintf("the tenant already has %d workflows", maxWorkflows)}
	}
	return nil
}

var errExists = errors.New("already exists")

// GetWorkflow reads one workflow.
func (s *Store) GetWorkflow(ctx context.Context, tenant, name string) (*StoredWorkflow, error) {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	var w StoredWorkflow
	var def string
	err = db.QueryRowContext(ctx, `SELECT definition, created_by, created_at FROM workflows WHERE name = ?`, name).Scan(&def, &w.CreatedBy, &w.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &w, json.Unmarshal([]byte(def), &w.Definition)
}

// ListWorkflows lists a tenant's workflow names.
func (s *Store) ListWorkflows(ctx context.Context, tenant string) ([]string, error) {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT name FROM workflows ORDER BY name`)
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
func (s *Store) DeleteWorkflow(ctx context.Context, tenant, name string) error {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	res, err := db.ExecContext(ctx, `DELETE FROM workflows WHERE name = ?`, name)
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
	ID         string         `json:"execution_id"`
	Workflow   string         `json:"workflow"`
	Status     string         `json:"status"`
	Tenant     string         `json:"tenant"`
	User       string         `json:"user"`
	Input      map[string]any `json:"input,omitempty"`
	Output     map[string]any `json:"output,omitempty"`
	Error      string         `json:"error,omitempty"`
	CreatedAt  string         `json:"created_at"`
	FinishedAt string         `json:"finished_at,omitempty"`
	Nodes      []NodeRun      `json:"nodes,omitempty"`
}

// StartExecution records an execution before it starts.
func (s *Store) StartExecution(ctx context.Context, e *ExecutionRecord) error {
	db, err := s.db(ctx, e.Tenant)
	if err != nil {
		return err
	}
	in, err := json.Marshal(e.Input)
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `INSERT INTO executions (id, workflow, status, user, input, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		e.ID, e.Workflow, StatusRunning, e.User, string(in), e.CreatedAt)
	return err
}

// RecordNode stores one node's outcome.
func (s *Store) RecordNode(ctx context.Context, tenant, execID string, r NodeRun) error {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	var out []byte
	if r.Output != nil {
		if out, err = json.Marshal(r.Output); err != nil {
			return err
		}
	}
	_, err = db.ExecContext(ctx, `INSERT OR REPLACE INTO node_results (execution_id, node, type, status, output, error, started_at, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, execID, r.Node, r.Type, r.Status, nullable(out), r.Error,
		r.Started.UTC().Format(time.RFC3339Nano), r.Finished.UTC().Format(time.RFC3339Nano))
	return err
}

func nullable(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// FinishExecution records the end of an execution, unless it already ended
// (a cancel racing a completion keeps the first outcome).
func (s *Store) FinishExecution(ctx context.Context, tenant, id, status string, output map[string]any, errMsg string) error {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return err
	}
	var out []byte
	if output != nil {
		if out, err = json.Marshal(output); err != nil {
			return err
		}
	}
	_, err = db.ExecContext(ctx, `UPDATE executions SET status = ?, output = ?, error = ?, finished_at = ? WHERE id = ? AND status = ?`,
		status, nullable(out), errMsg, now(), id, StatusRunning)
	return err
}

// GetExecution reads an execution with its node results.
func (s *Store) GetExecution(ctx context.Context, tenant, id string) (*ExecutionRecord, error) {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	e := &ExecutionRecord{Tenant: tenant}
	var in string
	var out, errMsg, fin sql.NullString
	err = db.QueryRowContext(ctx, `SELECT id, workflow, status, user, input, output, error, created_at, finished_at FROM executions WHERE id = ?`, id).
		Scan(&e.ID, &e.Workflow, &e.Status, &e.User, &in, &out, &errMsg, &e.CreatedAt, &fin)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	e.Error, e.FinishedAt = errMsg.String, fin.String
	_ = json.Unmarshal([]byte(in), &e.Input)
	if out.Valid {
		_ = json.Unmarshal([]byte(out.String), &e.Output)
	}
	rows, err := db.QueryContext(ctx, `SELECT node, type, status, output, error, started_at, finished_at FROM node_results WHERE execution_id = ? ORDER BY started_at, node`, id)
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
		if o.Valid {
			_ = json.Unmarshal([]byte(o.String), &r.Output)
		}
		r.Error = em.String
		r.Started, _ = time.Parse(time.RFC3339Nano, st)
		r.Finished, _ = time.Parse(time.RFC3339Nano, ft)
		e.Nodes = append(e.Nodes, r)
	}
	return e, rows.Err()
}

// ListExecutions lists a workflow's latest executions (without node results).
func (s *Store) ListExecutions(ctx context.Context, tenant, workflow string, limit int) ([]ExecutionRecord, error) {
	db, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT id, status, user, error, created_at, finished_at FROM executions WHERE workflow = ? ORDER BY created_at DESC LIMIT ?`, workflow, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ExecutionRecord{}
	for rows.Next() {
		e := ExecutionRecord{Tenant: tenant, Workflow: workflow}
		var em, fin sql.NullString
		if err := rows.Scan(&e.ID, &e.Status, &e.User, &em, &e.CreatedAt, &fin); err != nil {
			return nil, err
		}
		e.Error, e.FinishedAt = em.String, fin.String
		out = append(out, e)
	}
	return out, rows.Err()
}

// Audit stores an audit_log record in its tenant's database.
func (s *Store) Audit(ctx context.Context, r AuditRecord) error {
	db, err := s.db(ctx, r.Tenant)
	if err != nil {
		return err
	}
	d, err := json.Marshal(r.Details)
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, `INSERT INTO audit_log (id, at, user, workflow, execution_id, node, action, resource, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.At.Format(time.RFC3339Nano), r.User, r.Workflow, r.Execution, r.Node, r.Action, r.Resource, string(d))
	return err
}
