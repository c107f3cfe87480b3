// Package tenantstore keeps tenants in PostgreSQL beside kailash.yaml's:
// the rows the admin API writes (Store), what every xds and authz replica
// follows (Follow: LISTEN/NOTIFY, a periodic full read, reconnects), the
// combination of file and store the servers are given (Source), and the
// admin API itself (API, served by authz behind Envoy).
//
// A row holds the tenant document exactly as an entry of kailash.yaml's
// tenants (config.ParseTenant, config.Config.WithTenants validate it), a
// suspended flag, a version for optimistic concurrency, and who wrote it
// when. Domains have a table of their own, so two rows can never claim
// one domain, whichever replica writes them.
package tenantstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kailash-gw/kailash/internal/config"
)

// Channel is the NOTIFY channel of tenant changes; the payload is the
// tenant id.
const Channel = "kailash_tenants"

// Source is the config.Tenant Source of the store's tenants.
const SourceName = "tenant store"

// Doc is one stored tenant.
type Doc struct {
	ID string `json:"id"`
	// Document is the tenant as JSON, with exactly kailash.yaml's keys.
	Document json.RawMessage `json:"tenant"`
	// Suspended tenants are refused at the edge (403) until resumed.
	Suspended bool      `json:"suspended"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// Tenant is d's document decoded, inactive when suspended.
func (d Doc) Tenant() (config.Tenant, error) {
	t, err := config.ParseTenant("tenant store "+d.ID, d.Document)
	if err != nil {
		return t, err
	}
	if t.ID != d.ID {
		return t, fmt.Errorf("tenant store %s: the document's id is %q", d.ID, t.ID)
	}
	if d.Suspended {
		off := false
		t.Active = &off
	}
	return t, nil
}

// Errors of writes; ConflictError says who owns what was claimed.
var (
	ErrNotFound        = errors.New("no such tenant")
	ErrVersionMismatch = errors.New("the tenant changed since that version")
)

// ConflictError is a tenant id or domain claimed by another tenant.
type ConflictError struct {
	What   string // "id" or "domain"
	Value  string
	Owner  string // the tenant that has it
	Source string // "file" or "tenant store"
}

func (e *ConflictError) Error() string {
	if e.What == "id" {
		return fmt.Sprintf("tenant %q already exists (%s)", e.Value, e.Source)
	}
	return fmt.Sprintf("domain %q is already served by tenant %q (%s)", e.Value, e.Owner, e.Source)
}

// Store is the tenants table. Safe for concurrent use.
type Store struct {
	db   *sql.DB
	conf *pgx.ConnConfig
}

// Open connects to dsn and creates the tables when missing (under an
// advisory lock, so replicas starting together do not race).
func Open(ctx context.Context, dsn string) (*Store, error) {
	conf, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN and with it the password.
		return nil, errors.New("tenant_store.postgres_dsn: not a valid PostgreSQL connection string")
	}
	db := stdlib.OpenDB(*conf)
	db.SetMaxOpenConns(8)
	s := &Store{db: db, conf: conf}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("tenant_store.postgres_dsn: %w", err)
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

const schema = `
CREATE TABLE IF NOT EXISTS kailash_tenants (
	id         text PRIMARY KEY,
	document   jsonb NOT NULL,
	suspended  boolean NOT NULL DEFAULT false,
	version    bigint NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL,
	updated_by text NOT NULL
);
CREATE TABLE IF NOT EXISTS kailash_tenant_domains (
	domain text PRIMARY KEY,
	tenant text NOT NULL REFERENCES kailash_tenants(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS kailash_tenant_domains_tenant ON kailash_tenant_domains(tenant);`

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7243118)`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, schema)
		return err
	})
}

func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

const columns = `id, document::text, suspended, version, created_at, updated_at, updated_by`

type scanner interface{ Scan(...any) error }

func scanDoc(r scanner) (Doc, error) {
	var d Doc
	var doc string
	err := r.Scan(&d.ID, &doc, &d.Suspended, &d.Version, &d.CreatedAt, &d.UpdatedAt, &d.UpdatedBy)
	d.Document = json.RawMessage(doc)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, err
}

// List is every stored tenant, by id.
func (s *Store) List(ctx context.Context) ([]Doc, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+columns+` FROM kailash_tenants ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Doc
	for rows.Next() {
		d, err := scanDoc(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Get is one tenant (ErrNotFound when there is none).
func (s *Store) Get(ctx context.Context, id string) (Doc, error) {
	d, err := scanDoc(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM kailash_tenants WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Doc{}, ErrNotFound
	}
	return d, err
}

// Create stores a new tenant (version 1). t must be d's document decoded
// (its domains are claimed); an id or domain taken in the store is a
// *ConflictError.
func (s *Store) Create(ctx context.Context, doc json.RawMessage, t config.Tenant, actor string, now time.Time) (Doc, error) {
	var out Doc
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO kailash_tenants (id, document, version, created_at, updated_at, updated_by)
			VALUES ($1, $2, 1, $3, $3, $4)`, t.ID, string(doc), now, actor)
		if uniqueViolation(err) {
			return &ConflictError{What: "id", Value: t.ID, Owner: t.ID, Source: SourceName}
		}
		if err != nil {
			return err
		}
		if err := claimDomains(ctx, tx, t.ID, t.Domains); err != nil {
			return err
		}
		if out, err = scanDoc(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM kailash_tenants WHERE id = $1`, t.ID)); err != nil {
			return err
		}
		return notify(ctx, tx, t.ID)
	})
	return out, err
}

// Update replaces a tenant's document when its version is ifVersion
// (ErrVersionMismatch otherwise); the version goes up by one.
func (s *Store) Update(ctx context.Context, doc json.RawMessage, t config.Tenant, ifVersion int64, actor string, now time.Time) (Doc, error) {
	return s.change(ctx, t.ID, ifVersion, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE kailash_tenants SET document = $2 WHERE id = $1`, t.ID, string(doc)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM kailash_tenant_domains WHERE tenant = $1`, t.ID); err != nil {
			return err
		}
		return claimDomains(ctx, tx, t.ID, t.Domains)
	}, actor, now)
}

// SetSuspended suspends or resumes a tenant (ifVersion 0: any version).
func (s *Store) SetSuspended(ctx context.Context, id string, suspended bool, ifVersion int64, actor string, now time.Time) (Doc, error) {
	return s.change(ctx, id, ifVersion, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE kailash_tenants SET suspended = $2 WHERE id = $1`, id, suspended)
		return err
	}, actor, now)
}

// Delete removes a tenant and its domains (ifVersion 0: any version) and
// returns what it was.
func (s *Store) Delete(ctx context.Context, id string, ifVersion int64) (Doc, error) {
	var out Doc
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if out, err = lockRow(ctx, tx, id, ifVersion); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM kailash_tenants WHERE id = $1`, id); err != nil {
			return err
		}
		return notify(ctx, tx, id)
	})
	return out, err
}

// change runs f on a locked row of the right version, then bumps the
// version, records who and when, and notifies.
func (s *Store) change(ctx context.Context, id string, ifVersion int64, f func(*sql.Tx) error, actor string, now time.Time) (Doc, error) {
	var out Doc
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := lockRow(ctx, tx, id, ifVersion); err != nil {
			return err
		}
		if err := f(tx); err != nil {
			return err
		}
		var err error
		out, err = scanDoc(tx.QueryRowContext(ctx, `UPDATE kailash_tenants SET version = version + 1, updated_at = $2, updated_by = $3
			WHERE id = $1 RETURNING `+columns, id, now, actor))
		if err != nil {
			return err
		}
		return notify(ctx, tx, id)
	})
	return out, err
}

func lockRow(ctx context.Context, tx *sql.Tx, id string, ifVersion int64) (Doc, error) {
	d, err := scanDoc(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM kailash_tenants WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Doc{}, ErrNotFound
	}
	if err != nil {
		return Doc{}, err
	}
	if ifVersion != 0 && d.Version != ifVersion {
		return d, ErrVersionMismatch
	}
	return d, nil
}

// claimDomains inserts id's domains (lower-cased, as Envoy matches them);
// one another tenant holds is a *ConflictError naming it.
func claimDomains(ctx context.Context, tx *sql.Tx, id string, domains []string) error {
	seen := map[string]bool{}
	for _, d := range domains {
		key := strings.ToLower(d)
		if seen[key] {
			continue // Validate reports it
		}
		seen[key] = true
		var owner string
		err := tx.QueryRowContext(ctx, `INSERT INTO kailash_tenant_domains (domain, tenant) VALUES ($1, $2)
			ON CONFLICT (domain) DO NOTHING RETURNING tenant`, key, id).Scan(&owner)
		if errors.Is(err, sql.ErrNoRows) {
			if err := tx.QueryRowContext(ctx, `SELECT tenant FROM kailash_tenant_domains WHERE domain = $1`, key).Scan(&owner); err != nil {
				return err
			}
			return &ConflictError{What: "domain", Value: d, Owner: owner, Source: SourceName}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// notify tells every follower (on commit) that id changed.
func notify(ctx context.Context, tx *sql.Tx, id string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, Channel, id)
	return err
}

func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// sortDocs orders docs by id.
func sortDocs(docs []Doc) {
	slices.SortFunc(docs, func(a, b Doc) int { return strings.Compare(a.ID, b.ID) })
}
