package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Workflow versions. A workflow's definitions are numbered from 1: create
// writes the first (or, for a name deleted before, the one after the
// name's last), every update the next. workflows holds the current one;
// workflow_versions every one, kept when the workflow is deleted, so an
// execution's workflow_version always names the definition it ran.

// VersionConflictError is an update conditional on a version (If-Match)
// that is no longer the current one.
type VersionConflictError struct {
	Name          string
	Want, Current int
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("workflow %q is at version %d, not %d", e.Name, e.Current, e.Want)
}

// recordVersion copies the current definition of name into
// workflow_versions, within tx.
func recordVersion(ctx context.Context, tx *sql.Tx, t *tenantDB, name string) error {
	_, err := tx.ExecContext(ctx, t.q(`INSERT INTO {t}workflow_versions (name, version, definition, created_by, created_at)
		SELECT name, version, definition, created_by, created_at FROM {t}workflows WHERE name = ?`), name)
	return err
}

// UpdateWorkflow writes the next version of an existing workflow. Two
// updates of one workflow are serialised by its row (each gets its own
// version); with ifVersion > 0 the update applies only while ifVersion is
// the current version.
func (s *sqlStore) UpdateWorkflow(ctx context.Context, tenant, user, name string, definition json.RawMessage, ifVersion int) (int, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return 0, err
	}
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var v int
	err = tx.QueryRowContext(ctx, t.q(`UPDATE {t}workflows SET definition = ?, version = version + 1
		WHERE name = ? AND (? = 0 OR version = ?) RETURNING version`), string(definition), name, ifVersion, ifVersion).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		var cur int
		err := tx.QueryRowContext(ctx, t.q(`SELECT version FROM {t}workflows WHERE name = ?`), name).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("workflow %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return 0, err
		}
		return 0, &VersionConflictError{Name: name, Want: ifVersion, Current: cur}
	}
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, t.q(`INSERT INTO {t}workflow_versions (name, version, definition, created_by, created_at) VALUES (?, ?, ?, ?, ?)`),
		name, v, string(definition), user, Now()); err != nil {
		return 0, err
	}
	return v, tx.Commit()
}

// GetWorkflowVersion reads version of name from its history (CreatedBy
// and CreatedAt, like UpdatedBy and UpdatedAt, are this version's).
func (s *sqlStore) GetWorkflowVersion(ctx context.Context, tenant, name string, version int) (*StoredWorkflow, error) {
	t, err := s.db(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return scanWorkflow(t.db.QueryRowContext(ctx, t.q(`SELECT definition, created_by, created_at, version, created_by, created_at
		FROM {t}workflow_versions WHERE name = ? AND version = ?`), name, version))
}
