package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"modernc.org/sqlite" // the pure-Go SQLite driver, "sqlite"
)

// sqliteDialect keeps each tenant in its own files under dir:
// <tenant>.db (the runner's tables) and <tenant>.data.db (the tenant's own
// data, for the sql node). With no dir both live in memory.
type sqliteDialect struct {
	dir string
	mem string // unique name prefix of in-memory databases

	mu   sync.Mutex // guards dbs and data
	dbs  map[string]*tenantDB
	data map[string]*sqliteData
}

// sqliteData is a tenant's data database: a read-only handle and a
// read-write one, each under its authorizer.
type sqliteData struct {
	ro, rw *sql.DB
}

var memStores atomic.Int64

// OpenStore opens the SQLite store in dir (in memory when dir is empty),
// takes dir's runner lock (a second runner on dir fails) and marks every
// execution a previous process left running as interrupted.
// Its data keys are OpenDataKeys's for dir: KAILASH_DATA_KEYS, else a key
// generated into dir; none in memory without KAILASH_DATA_KEYS.
func OpenStore(ctx context.Context, dir string) (Store, error) {
	keys, err := OpenDataKeys(DataKeyOptions{DataDir: dir, Generate: true})
	if err != nil {
		return nil, err
	}
	return OpenStoreWith(ctx, dir, StoreOptions{Keys: keys})
}

// OpenStoreWith is OpenStore with its data keys (and options) given.
func OpenStoreWith(ctx context.Context, dir string, o StoreOptions) (Store, error) {
	d := &sqliteDialect{dir: dir, dbs: map[string]*tenantDB{}, data: map[string]*sqliteData{},
		mem: fmt.Sprintf("kailash-%d-%d", os.Getpid(), memStores.Add(1))}
	s := &sqlStore{d: d, keys: o.Keys, lease: newLeaser(o)}
	if dir == "" {
		if !o.Maintenance {
			s.startLeases(false)
		}
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runner.data_dir: %w", err)
	}
	if !o.Maintenance {
		if err := s.lease.lockDataDir(dir); err != nil {
			return nil, err
		}
	}
	tenants, err := d.tenants(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, tenant := range tenants {
		t, err := d.tenant(ctx, tenant)
		if err != nil {
			s.Close()
			return nil, err
		}
		if o.Maintenance {
			continue
		}
		if err := s.markInterrupted(ctx, t); err != nil {
			s.Close()
			return nil, fmt.Errorf("tenant %s: marking interrupted executions: %w", tenant, err)
		}
	}
	if !o.Maintenance {
		s.startLeases(false) // no other runner: nothing to take over
	}
	return s, nil
}

// tenants are the <tenant>.db files of the directory, and the tenants
// opened in memory.
func (d *sqliteDialect) tenants(context.Context) ([]string, error) {
	if d.dir == "" {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Sorted(maps.Keys(d.dbs)), nil
	}
	files, err := filepath.Glob(filepath.Join(d.dir, "*.db"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		tenant := strings.TrimSuffix(filepath.Base(f), ".db")
		if ValidTenant(tenant) {
			out = append(out, tenant) // not <tenant>.data.db nor strangers
		}
	}
	return out, nil
}

// ping checks that the data directory is still a directory (nothing to
// check in memory): its databases are files the runner opens on demand.
func (d *sqliteDialect) ping(context.Context) error {
	if d.dir == "" {
		return nil
	}
	fi, err := os.Stat(d.dir)
	if err != nil {
		return fmt.Errorf("runner.data_dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("runner.data_dir: %s is not a directory", d.dir)
	}
	return nil
}

func (d *sqliteDialect) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for t, db := range d.dbs {
		errs = append(errs, db.db.Close())
		if db.rdb != nil {
			errs = append(errs, db.rdb.Close())
		}
		delete(d.dbs, t)
	}
	for t, db := range d.data {
		errs = append(errs, db.ro.Close(), db.rw.Close())
		delete(d.data, t)
	}
	return errors.Join(errs...)
}

func (d *sqliteDialect) tenant(ctx context.Context, tenant string) (*tenantDB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.dbs[tenant]; ok {
		return t, nil
	}
	// Durability (docs/deploy.md): WAL with synchronous=FULL, so a COMMIT
	// returns once the WAL is fsynced, and survives a power loss as well as
	// a crash (NORMAL would only fsync at checkpoints: a power loss could
	// take the last commits). Group commit (commit.go) pays that fsync once
	// per batch, not per write.
	file := "file:" + filepath.Join(d.dir, tenant+".db") + "?_pragma=busy_timeout(5000)"
	dsn := file + "&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"
	if d.dir == "" {
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
	t := &tenantDB{db: db, tenant: tenant}
	err = func() error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := migrate(ctx, tx, t); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	if d.dir != "" {
		// Readers beside the one writer connection (WAL): a read sees
		// every committed transaction and never waits for a commit.
		if t.rdb, err = sql.Open("sqlite", file+"&_pragma=query_only(1)"); err != nil {
			db.Close()
			return nil, err
		}
		t.rdb.SetMaxOpenConns(4)
		t.rdb.SetMaxIdleConns(4)
	}
	d.dbs[tenant] = t
	return t, nil
}

// lockWorkflows: SQLite has one connection per tenant, so the transaction
// is already alone.
func (d *sqliteDialect) lockWorkflows(context.Context, *sql.Tx, *tenantDB) error { return nil }

// tenantQuery runs q on the tenant's data database. Isolation does not rest
// on the SQL: the authorizer of the connection refuses ATTACH (reaching
// another file), PRAGMA, virtual tables and transactions, and, read-only,
// anything but reading; the read-only handle also opens the file read-only.
func (d *sqliteDialect) tenantQuery(ctx context.Context, tenant string, q TenantQuery) (*QueryResult, error) {
	data, err := d.dataDB(tenant)
	if err != nil {
		return nil, err
	}
	db := data.rw
	if q.ReadOnly {
		db = data.ro
	}
	rows, err := db.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanRows(rows, q.MaxRows)
}

func (d *sqliteDialect) dataDB(tenant string) (*sqliteData, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if data, ok := d.data[tenant]; ok {
		return data, nil
	}
	base := "file:" + filepath.Join(d.dir, tenant+".data.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
	ro := "file:" + filepath.Join(d.dir, tenant+".data.db") + "?mode=ro&_pragma=busy_timeout(5000)"
	if d.dir == "" {
		base = "file:" + d.mem + "-" + tenant + "?mode=memory&cache=shared"
		ro = base
	}
	rw, err := openAuthorized(base, false)
	if err != nil {
		return nil, err
	}
	rw.SetMaxOpenConns(1)
	// The read-write handle creates the file (and keeps a shared in-memory
	// database alive) before the read-only one opens it.
	if err := rw.Ping(); err != nil {
		rw.Close()
		return nil, err
	}
	rdb, err := openAuthorized(ro, true)
	if err != nil {
		rw.Close()
		return nil, err
	}
	rdb.SetMaxOpenConns(4)
	data := &sqliteData{ro: rdb, rw: rw}
	d.data[tenant] = data
	return data, nil
}

// authorizedConnector installs the tenant authorizer on every connection
// it opens.
type authorizedConnector struct {
	driver.Connector
	readOnly bool
}

func (c authorizedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	reg, ok := conn.(sqlite.AuthorizerRegisterer)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("sqlite driver offers no authorizer (%T)", conn)
	}
	if err := reg.RegisterAuthorizer(tenantAuthorizer(c.readOnly)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func openAuthorized(dsn string, readOnly bool) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(authorizedConnector{Connector: c, readOnly: readOnly}), nil
}

// tenantAuthorizer is the policy for tenant SQL: never another database
// (ATTACH), never the connection's settings (PRAGMA), no virtual tables or
// transaction control; read-only allows only reading.
func tenantAuthorizer(readOnly bool) sqlite.AuthorizerFn {
	return func(action sqlite.AuthorizerActionCode, arg1, arg2, dbName, _ string) sqlite.AuthorizerReturnCode {
		switch action {
		case sqlite.AuthAttach, sqlite.AuthDetach, sqlite.AuthPragma, sqlite.AuthCreateVTable, sqlite.AuthDropVTable,
			sqlite.AuthTransaction, sqlite.AuthSavepoint:
			return sqlite.AuthorizerDeny
		case sqlite.AuthFunction:
			switch strings.ToLower(arg2) {
			case "load_extension", "readfile", "writefile", "fts3_tokenizer", "edit":
				return sqlite.AuthorizerDeny
			}
			return sqlite.AuthorizerOK
		case sqlite.AuthSelect, sqlite.AuthRead, sqlite.AuthRecursive:
			return sqlite.AuthorizerOK
		}
		if dbName != "" && dbName != "main" && dbName != "temp" {
			return sqlite.AuthorizerDeny
		}
		if readOnly {
			return sqlite.AuthorizerDeny
		}
		return sqlite.AuthorizerOK
	}
}
