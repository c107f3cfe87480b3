package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Retention (runner.retention, docs/deploy.md): Purge deletes finished
// executions with their node results, and audit_log rows, older than a
// cutoff, in every tenant. It never deletes a running execution, nor a
// finished one whose lease is still live (it finished less than a lease
// TTL ago, by the database's clock). Each batch of at most purgeBatch rows
// is its own short transaction, so a large purge never holds a tenant's
// tables for long: on SQLite the tenant's one connection is free between
// batches; on PostgreSQL the batch's rows are taken with FOR UPDATE SKIP
// LOCKED, so replicas purging at the same time split the rows between them
// instead of waiting on (or deleting) each other's.

// purgeBatch bounds the rows one purge transaction deletes.
var purgeBatch = 500

// PurgeResult counts the rows a Purge deleted.
type PurgeResult struct {
	Executions  int64
	NodeResults int64
	Audit       int64
}

// Add sums two results.
func (r PurgeResult) Add(o PurgeResult) PurgeResult {
	return PurgeResult{r.Executions + o.Executions, r.NodeResults + o.NodeResults, r.Audit + o.Audit}
}

// Purge deletes, in every tenant, the executions that finished before
// executionsBefore (with their node results) and the audit_log rows
// written before auditBefore; a zero time skips that table. A tenant that
// fails does not stop the others: the error names each, and the result
// counts what was deleted.
func (s *sqlStore) Purge(ctx context.Context, executionsBefore, auditBefore time.Time) (PurgeResult, error) {
	var total PurgeResult
	if executionsBefore.IsZero() && auditBefore.IsZero() {
		return total, nil
	}
	tenants, err := s.d.tenants(ctx)
	if err != nil {
		return total, err
	}
	var errs []error
	for _, tenant := range tenants {
		r, err := s.purgeTenant(ctx, tenant, executionsBefore, auditBefore)
		total = total.Add(r)
		if err != nil {
			if ctx.Err() != nil {
				return total, errors.Join(append(errs, ctx.Err())...)
			}
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
		}
	}
	return total, errors.Join(errs...)
}

func (s *sqlStore) purgeTenant(ctx context.Context, tenant string, executionsBefore, auditBefore time.Time) (PurgeResult, error) {
	var r PurgeResult
	t, err := s.db(ctx, tenant)
	if err != nil {
		return r, err
	}
	if !executionsBefore.IsZero() {
		cut := cutoff(executionsBefore)
		for {
			ex, nr, err := purgeExecutionBatch(ctx, t, cut)
			r.Executions += ex
			r.NodeResults += nr
			if err != nil {
				return r, fmt.Errorf("purging executions: %w", err)
			}
			if ex < int64(purgeBatch) {
				break
			}
		}
	}
	if !auditBefore.IsZero() {
		cut := cutoff(auditBefore)
		for {
			res, err := t.db.ExecContext(ctx, t.q(`DELETE FROM {t}audit_log WHERE id IN (SELECT id FROM {t}audit_log WHERE at < ? LIMIT ?{skiplocked})`), cut, purgeBatch)
			if err != nil {
				return r, fmt.Errorf("purging audit_log: %w", err)
			}
			n, _ := res.RowsAffected()
			r.Audit += n
			if n < int64(purgeBatch) {
				break
			}
		}
	}
	return r, nil
}

// purgeExecutionBatch deletes at most purgeBatch finished executions that
// ended before cut, with their node results, in one transaction; it
// returns how many of each it deleted.
func purgeExecutionBatch(ctx context.Context, t *tenantDB, cut string) (executions, nodes int64, err error) {
	tx, err := t.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	// A finished execution's lease is no longer renewed: it ends at most a
	// lease TTL after the execution did. Until then it is left alone.
	rows, err := tx.QueryContext(ctx, t.q(`SELECT id FROM {t}executions
		WHERE status <> ? AND finished_at IS NOT NULL AND finished_at < ? AND lease_expires < {now} LIMIT ?{skiplocked}`),
		StatusRunning, cut, purgeBatch)
	if err != nil {
		return 0, 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	if len(ids) == 0 {
		return 0, 0, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, 0, err
	}
	// Node results first and counted (the foreign key would cascade them
	// uncounted). The executions cannot have changed since the SELECT: on
	// PostgreSQL this transaction holds their row locks, on SQLite the
	// tenant's one connection; the DELETE checks again all the same.
	res, err := tx.ExecContext(ctx, t.q(`DELETE FROM {t}node_results WHERE execution_id IN ({ids})`), string(list))
	if err != nil {
		return 0, 0, err
	}
	nodes, _ = res.RowsAffected()
	res, err = tx.ExecContext(ctx, t.q(`DELETE FROM {t}executions WHERE id IN ({ids}) AND status <> ? AND lease_expires < {now}`), string(list), StatusRunning)
	if err != nil {
		return 0, 0, err
	}
	executions, _ = res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, 0, err
	}
	return executions, nodes, nil
}

// cutoff renders a purge cutoff for comparison with the stored timestamps
// (UTC RFC 3339, fractional seconds trimmed, so the text of two times in
// the same second does not order as the times do): the cutoff's second
// with no zone, which every timestamp of an earlier second sorts before
// and every one of that second or later sorts after. A purge therefore
// keeps up to a second more than asked, never less.
func cutoff(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05")
}
