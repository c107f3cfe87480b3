package store

import (
	"fmt"
	"time"
)

// LimitError is a tenant limit hit. Limit is the config key
// (runner.limits.<Limit>) and doubles as a metric label. The store returns
// it for max_workflows; the runner for the other limits.
type LimitError struct {
	Tenant string
	Limit  string
	Msg    string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("limit %s of tenant %q: %s", e.Limit, e.Tenant, e.Msg)
}

// NodeRun is one node's outcome, reported as soon as the node ends.
type NodeRun struct {
	Node     string         `json:"node"`
	Type     string         `json:"type"`
	Status   string         `json:"status"` // completed | failed
	Output   map[string]any `json:"output,omitempty"`
	Error    string         `json:"error,omitempty"`
	Started  time.Time      `json:"started_at"`
	Finished time.Time      `json:"finished_at"`
}

// AuditRecord is what the audit_log node records.
type AuditRecord struct {
	ID        string         `json:"id"`
	At        time.Time      `json:"at"`
	Tenant    string         `json:"tenant"`
	User      string         `json:"user"`
	Workflow  string         `json:"workflow"`
	Execution string         `json:"execution_id"`
	Node      string         `json:"node"`
	Action    string         `json:"action"`
	Resource  string         `json:"resource,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}
