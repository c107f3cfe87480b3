package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresDialect keeps each tenant in PostgreSQL schemas of one database:
//
//   - kailash_<tenant>: the runner's tables (the same migrations as SQLite),
//     owned by the runner's user;
//   - tenant_<tenant>: the tenant's own data for the sql node, owned by the
//     tenant's login role kailash_tenant_<tenant>, which has no privilege on
//     any other schema.
//
// The schema "kailash" (the runner's alone) lists the tenants and their
// roles' generated passwords. The sql node connects as the tenant's role,
// so isolation rests on PostgreSQL's privileges, not on the statement.
type postgresDialect struct {
	db   *sql.DB
	conf *pgx.ConnConfig // the runner's connection, copied for tenant roles

	mu   sync.Mutex // guards dbs and data
	dbs  map[string]*tenantDB
	data map[string]*sql.DB // tenant -> pool connected as its role
}

// OpenPostgresStore connects to PostgreSQL (dsn: a postgres:// URL or
// keyword/value string; its user needs CREATEROLE, or be a superuser, to
// create the tenants' roles) and takes over (marks interrupted) every
// running execution whose lease ended; live ones are left to their owner.
//
// Its data keys come from KAILASH_DATA_KEYS; without them values are
// stored in clear (OpenConfiguredStore warns, and honours
// runner.encryption).
func OpenPostgresStore(ctx context.Context, dsn string) (Store, error) {
	keys, err := OpenDataKeys(DataKeyOptions{})
	if err != nil {
		return nil, err
	}
	return OpenPostgresStoreWith(ctx, dsn, StoreOptions{Keys: keys})
}

// OpenPostgresStoreWith is OpenPostgresStore with its data keys (and
// options) given.
func OpenPostgresStoreWith(ctx context.Context, dsn string, o StoreOptions) (Store, error) {
	conf, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN and with it the password.
		return nil, errors.New("runner.postgres_dsn: not a valid PostgreSQL connection string")
	}
	db := stdlib.OpenDB(*conf)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	d := &postgresDialect{db: db, conf: conf, dbs: map[string]*tenantDB{}, data: map[string]*sql.DB{}}
	s := &sqlStore{d: d, keys: o.Keys, lease: newLeaser(o)}
	if err := d.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("runner.postgres_dsn: %w", err)
	}
	tenants, err := d.tenants(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	for _, tenant := range tenants {
		t, err := d.tenant(ctx, tenant)
		if err == nil && !o.Maintenance {
			// Only executions whose lease ended: others may be live on
			// another runner.
			err = s.takeOver(ctx, t)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("tenant %s: taking over expired executions: %w", tenant, err)
		}
	}
	if !o.Maintenance {
		s.startLeases(true)
	}
	return s, nil
}

// startExecutionFunc is the tenant schema's start_execution: it inserts
// an execution when the tenant has fewer than p_max running executions
// with a live lease, on every runner — the tenant's advisory lock, the
// count and the insert in one round trip. A VOLATILE function takes a new
// snapshot per statement, so the count, made under the lock, sees every
// start committed before it; its SQL is static (the schema is written in),
// so its plans are cached per connection.
func startExecutionFunc(schema string) string {
	s := ident(schema)
	return `CREATE OR REPLACE FUNCTION ` + s + `.start_execution(p_tenant TEXT, p_id TEXT,
	p_workflow TEXT, p_user TEXT, p_input TEXT, p_created TEXT, p_owner TEXT, p_ttl BIGINT, p_max BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('kailash:executions:' || p_tenant));
	IF (SELECT COUNT(*) FROM ` + s + `.executions WHERE status = 'running' AND lease_expires > ` + pgNowMillis + `) >= p_max THEN
		RETURN FALSE;
	END IF;
	INSERT INTO ` + s + `.executions (id, workflow, status, "user", input, created_at, owner, lease_expires)
		VALUES (p_id, p_workflow, 'running', p_user, p_input, p_created, p_owner, ` + pgNowMillis + ` + p_ttl);
	RETURN TRUE;
END
$fn$`
}

// tenants lists the tenants of kailash.tenants.
func (d *postgresDialect) tenants(ctx context.Context) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT tenant FROM kailash.tenants ORDER BY tenant`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tenants []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tenants = append(tenants, t)
	}
	return tenants, rows.Err()
}

func (d *postgresDialect) init(ctx context.Context) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`SELECT pg_advisory_xact_lock(hashtext('kailash:init'))`,
		`CREATE SCHEMA IF NOT EXISTS kailash`,
		`REVOKE ALL ON SCHEMA kailash FROM PUBLIC`,
		`CREATE TABLE IF NOT EXISTS kailash.tenants (
			tenant      TEXT PRIMARY KEY,
			schema_name TEXT NOT NULL,
			data_schema TEXT NOT NULL,
			role_name   TEXT NOT NULL,
			password    TEXT NOT NULL
		)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// ping is a round trip to the server on the runner's pool.
func (d *postgresDialect) ping(ctx context.Context) error {
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("postgresql: %w", err)
	}
	return nil
}

func (d *postgresDialect) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for t, db := range d.data {
		errs = append(errs, db.Close())
		delete(d.data, t)
	}
	return errors.Join(append(errs, d.db.Close())...)
}

// pgName is prefix+tenant, shortened with a digest when longer than
// PostgreSQL's 63-byte identifiers (which it would silently truncate).
func pgName(prefix, tenant string) string {
	n := prefix + tenant
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(tenant))
	return n[:63-17] + "_" + hex.EncodeToString(sum[:8])
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// tenant creates (once, under an advisory lock so replicas agree) the
// tenant's role and schemas, and migrates its state schema.
func (d *postgresDialect) tenant(ctx context.Context, tenant string) (*tenantDB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.dbs[tenant]; ok {
		return t, nil
	}
	schema, data, role := pgName("kailash_", tenant), pgName("tenant_", tenant), pgName("kailash_tenant_", tenant)
	t := &tenantDB{db: d.db, tenant: tenant, prefix: ident(schema) + ".", dollar: true}
	err := func() error {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('kailash:tenant:' || $1))`, tenant); err != nil {
			return err
		}
		var known string
		err = tx.QueryRowContext(ctx, `SELECT role_name FROM kailash.tenants WHERE tenant = $1`, tenant).Scan(&known)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			pw := rand.Text()
			var exists bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
				return err
			}
			// The password is our own base32 text: safe as a literal (DDL
			// takes no parameters).
			verb := "CREATE"
			if exists {
				verb = "ALTER"
			}
			stmts := []string{
				fmt.Sprintf(`%s ROLE %s LOGIN NOINHERIT NOCREATEDB NOCREATEROLE PASSWORD '%s'`, verb, ident(role), pw),
				fmt.Sprintf(`GRANT %s TO CURRENT_USER`, ident(role)),
				fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s`, ident(schema)),
				fmt.Sprintf(`REVOKE ALL ON SCHEMA %s FROM PUBLIC`, ident(schema)),
				fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s AUTHORIZATION %s`, ident(data), ident(role)),
				fmt.Sprintf(`REVOKE ALL ON SCHEMA %s FROM PUBLIC`, ident(data)),
			}
			for _, q := range stmts {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO kailash.tenants (tenant, schema_name, data_schema, role_name, password) VALUES ($1, $2, $3, $4, $5)`,
				tenant, schema, data, role, pw); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL search_path TO %s`, ident(schema))); err != nil {
			return err
		}
		if err := migrate(ctx, tx, t); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, startExecutionFunc(schema)); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	d.dbs[tenant] = t
	return t, nil
}

// lockWorkflows takes the workflows table for the transaction, so two
// creates cannot both pass max_workflows (READ COMMITTED would let them).
func (d *postgresDialect) lockWorkflows(ctx context.Context, tx *sql.Tx, t *tenantDB) error {
	_, err := tx.ExecContext(ctx, t.q(`LOCK TABLE {t}workflows IN SHARE ROW EXCLUSIVE MODE`))
	return err
}

// dataDB is a small pool connected as the tenant's own role, its data
// schema first on the search path.
func (d *postgresDialect) dataDB(ctx context.Context, tenant string) (*sql.DB, error) {
	if _, err := d.tenant(ctx, tenant); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if db, ok := d.data[tenant]; ok {
		return db, nil
	}
	var role, pw, data string
	if err := d.db.QueryRowContext(ctx, `SELECT role_name, password, data_schema FROM kailash.tenants WHERE tenant = $1`, tenant).Scan(&role, &pw, &data); err != nil {
		return nil, err
	}
	conf := d.conf.Copy()
	conf.User, conf.Password = role, pw
	if conf.RuntimeParams == nil {
		conf.RuntimeParams = map[string]string{}
	}
	conf.RuntimeParams["search_path"] = ident(data)
	conf.RuntimeParams["application_name"] = "kailash-sql-node"
	// Every statement goes through the extended protocol, one statement
	// per Parse: a second statement after a ';' is a syntax error.
	conf.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	db := stdlib.OpenDB(*conf)
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	d.data[tenant] = db
	return db, nil
}

// tenantQuery runs q as the tenant's role; read-only in a READ ONLY
// transaction, which no single statement can turn writable.
func (d *postgresDialect) tenantQuery(ctx context.Context, tenant string, q TenantQuery) (*QueryResult, error) {
	db, err := d.dataDB(ctx, tenant)
	if err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: q.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, q.SQL, q.Args...)
	if err != nil {
		return nil, err
	}
	res, err := scanRows(rows, q.MaxRows)
	rows.Close()
	if err != nil {
		return nil, err
	}
	return res, tx.Commit()
}
