package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/sealed"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// Encryption at rest, on real SQLite files and a real PostgreSQL: raw rows
// hold no plaintext, the store reads it back, ciphertexts do not move
// between rows or tenants, and a rotation re-encrypts every value while
// reads go on.

func testKey(t testing.TB, id string) sealed.Key {
	t.Helper()
	k, err := sealed.NewKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fixedRing(t testing.TB, active string, keys ...sealed.Key) *sealed.Keyring {
	t.Helper()
	k, err := sealed.NewKeyring(active, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealedBackend opens stores on one database, with the keys given.
type sealedBackend struct {
	name string
	open func(t *testing.T, o StoreOptions) Store
	// files are the database files to grep for plaintext (SQLite).
	files func() []string
}

func sealedBackends(t *testing.T) []sealedBackend {
	dir := t.TempDir()
	pg := testenv.StartPostgres(t)
	return []sealedBackend{
		{"sqlite", func(t *testing.T, o StoreOptions) Store {
			st, err := OpenStoreWith(t.Context(), dir, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}, func() []string {
			fs, _ := filepath.Glob(filepath.Join(dir, "*.db*"))
			return fs
		}},
		{"postgres", func(t *testing.T, o StoreOptions) Store {
			st, err := OpenPostgresStoreWith(t.Context(), pg.DSN, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}, nil},
	}
}

// rawColumns reads every sealed column of a tenant with plain SQL:
// "table.column" -> non-NULL values.
func rawColumns(t *testing.T, st Store, tenant string) map[string][]string {
	t.Helper()
	td, err := st.(*sqlStore).db(t.Context(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, tb := range sealedTables {
		for _, c := range tb.cols {
			rows, err := td.db.QueryContext(t.Context(), td.q(fmt.Sprintf(`SELECT "%s" FROM {t}%s WHERE "%s" IS NOT NULL`, c, tb.name, c)))
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var v string
				if err := rows.Scan(&v); err != nil {
					t.Fatal(err)
				}
				out[tb.name+"."+c] = append(out[tb.name+"."+c], v)
			}
			rows.Close()
		}
	}
	return out
}

func rawExec(t *testing.T, st Store, tenant, query string, args ...any) {
	t.Helper()
	td, err := st.(*sqlStore).db(t.Context(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := td.db.ExecContext(t.Context(), td.q(query), args...); err != nil {
		t.Fatal(err)
	}
}

func rawGet(t *testing.T, st Store, tenant, query string, args ...any) string {
	t.Helper()
	td, err := st.(*sqlStore).db(t.Context(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := td.db.QueryRowContext(t.Context(), td.q(query), args...).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// writeExecution stores one execution the way the server does: start, two
// node results (one failed), the end, and an audit record.
func writeExecution(t *testing.T, st Store, tenant, id, secret string) {
	t.Helper()
	if err := writeExecutionErr(t.Context(), st, tenant, id, secret); err != nil {
		t.Fatal(err)
	}
}

func writeExecutionErr(ctx context.Context, st Store, tenant, id, secret string) error {
	now := time.Now().UTC()
	return errors.Join(
		st.StartExecution(ctx, &ExecutionRecord{ID: id, Workflow: "payroll", Tenant: tenant, User: "user-" + secret,
			Input: map[string]any{"ssn": secret, "n": 1.0}, CreatedAt: now.Format(time.RFC3339Nano)}),
		st.RecordNode(ctx, tenant, id, NodeRun{Node: "lookup", Type: "http", Status: "completed",
			Output: map[string]any{"token": "tok-" + secret}, Started: now, Finished: now}),
		st.RecordNode(ctx, tenant, id, NodeRun{Node: "check", Type: "code", Status: "failed",
			Error: `node "check" (code): bad ssn ` + secret, Started: now, Finished: now}),
		st.FinishExecution(ctx, tenant, id, StatusFailed, map[string]any{"echo": secret}, "failed on "+secret),
		st.Audit(ctx, AuditRecord{ID: "audit-" + id, At: now, Tenant: tenant, User: "user-" + secret, Workflow: "payroll",
			Execution: id, Node: "audit", Action: "payroll.read", Details: map[string]any{"ssn": secret}}))
}

func TestEncryptionAtRest(t *testing.T) {
	for _, b := range sealedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			k1 := testKey(t, "k1")
			keys := fixedRing(t, "k1", k1)
			st := b.open(t, StoreOptions{Keys: keys})
			secret := "SSN-" + rand.Text()
			writeExecution(t, st, "acme", "ex1", secret)
			writeExecution(t, st, "acme", "ex2", secret+"-two")
			writeExecution(t, st, "globex", "ex1", secret+"-globex")

			// Raw SQL: every sealed column holds sealed values under k1, and
			// none holds the secret.
			for _, tenant := range []string{"acme", "globex"} {
				cols := rawColumns(t, st, tenant)
				for _, tb := range sealedTables {
					for _, c := range tb.cols {
						if len(cols[tb.name+"."+c]) == 0 {
							t.Fatalf("%s: no values in %s.%s", tenant, tb.name, c)
						}
					}
				}
				for col, vs := range cols {
					for _, v := range vs {
						if strings.Contains(v, secret) || strings.Contains(v, "ssn") {
							t.Fatalf("%s %s holds plaintext: %q", tenant, col, v)
						}
						if kid, ok := sealed.KeyID(v); !ok || kid != "k1" {
							t.Fatalf("%s %s: %q is not sealed under k1", tenant, col, v)
						}
					}
				}
			}
			if b.files != nil {
				for _, f := range b.files() {
					raw, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					if bytes.Contains(raw, []byte(secret)) {
						t.Fatalf("the database file %s holds the secret", f)
					}
				}
			}

			// Through the store: the plaintext.
			e, err := st.GetExecution(ctx, "acme", "ex1")
			if err != nil {
				t.Fatal(err)
			}
			if e.Input["ssn"] != secret || e.User != "user-"+secret || e.Output["echo"] != secret || e.Error != "failed on "+secret ||
				len(e.Nodes) != 2 {
				t.Fatalf("read back %+v", e)
			}
			for _, n := range e.Nodes {
				if (n.Node == "lookup" && n.Output["token"] != "tok-"+secret) || (n.Node == "check" && !strings.HasSuffix(n.Error, secret)) {
					t.Fatalf("node %+v", n)
				}
			}
			list, err := st.ListExecutions(ctx, "acme", "payroll", 10)
			if err != nil || len(list) != 2 || !strings.HasPrefix(list[0].User, "user-"+secret) || !strings.HasPrefix(list[0].Error, "failed on") {
				t.Fatalf("list %v %+v", err, list)
			}
			details := rawGet(t, st, "acme", `SELECT details FROM {t}audit_log WHERE id = ?`, "audit-ex1")
			plain, err := keys.Open(sealed.Field{Tenant: "acme", Table: "audit_log", Row: "audit-ex1", Column: "details"}, details)
			if err != nil || !strings.Contains(string(plain), secret) {
				t.Fatalf("audit details: %v %q", err, plain)
			}

			// A ciphertext moved onto another row, or into another tenant,
			// does not open, and the error names the place, not the value.
			expectAuth := func(tenant, id, col string) {
				t.Helper()
				_, err := st.GetExecution(ctx, tenant, id)
				if !errors.Is(err, sealed.ErrAuth) {
					t.Fatalf("%s/%s: got %v, want an authentication failure", tenant, id, err)
				}
				if !strings.Contains(err.Error(), "executions."+col) || !strings.Contains(err.Error(), id) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q: want the table, column and row, never the value", err)
				}
			}
			in2 := rawGet(t, st, "acme", `SELECT input FROM {t}executions WHERE id = ?`, "ex2")
			in1 := rawGet(t, st, "acme", `SELECT input FROM {t}executions WHERE id = ?`, "ex1")
			rawExec(t, st, "acme", `UPDATE {t}executions SET input = ? WHERE id = ?`, in2, "ex1")
			expectAuth("acme", "ex1", "input")
			rawExec(t, st, "globex", `UPDATE {t}executions SET input = ? WHERE id = ?`, in1, "ex1") // same row id, other tenant
			expectAuth("globex", "ex1", "input")
			out1 := rawGet(t, st, "acme", `SELECT output FROM {t}executions WHERE id = ?`, "ex2")
			rawExec(t, st, "acme", `UPDATE {t}executions SET input = ?, error = ? WHERE id = ?`, in1, out1, "ex1") // another column
			expectAuth("acme", "ex1", "error")
			// Tampered: one byte of the ciphertext changed.
			b64 := []byte(in2)
			i := len(b64) - 5
			// Another base64 letter, so the value still decodes (a flipped
			// bit could leave the alphabet: "malformed", not tampering).
			b64[i] = 'A'
			if in2[i] == 'A' {
				b64[i] = 'B'
			}
			rawExec(t, st, "acme", `UPDATE {t}executions SET input = ? WHERE id = ?`, string(b64), "ex2")
			expectAuth("acme", "ex2", "input")

			// A keyring without k1: the error names the key id.
			st2 := b.open(t, StoreOptions{Keys: fixedRing(t, "k9", testKey(t, "k9")), Maintenance: true}) // a reader beside the runner
			if _, err := st2.GetExecution(ctx, "globex", "ex1"); !errors.Is(err, sealed.ErrUnknownKey) || !strings.Contains(err.Error(), `"k1"`) {
				t.Fatalf("unknown key: %v", err)
			}
			// No keys at all: the same, clearly.
			st3 := b.open(t, StoreOptions{Maintenance: true})
			if _, err := st3.GetExecution(ctx, "acme", "ex1"); !errors.Is(err, sealed.ErrNoKeys) {
				t.Fatalf("no keys: %v", err)
			}
		})
	}
}

// Rows written in clear (by a runner before encryption) stay readable and
// are sealed by a rotation, which re-encrypts every value under the new key
// while a runner reads and writes beside it.
func TestRotationReencryptsWhileServing(t *testing.T) {
	for _, b := range sealedBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			file := filepath.Join(dir, "keys.yaml")
			k1 := testKey(t, "k1")
			if err := sealed.WriteKeysFile(file, &sealed.KeysFile{Active: "k1", Keys: []sealed.FileKey{k1.FileKey()}}); err != nil {
				t.Fatal(err)
			}
			// Legacy rows, in clear.
			legacy := b.open(t, StoreOptions{})
			writeExecution(t, legacy, "acme", "old1", "legacy-secret")
			if e, err := legacy.GetExecution(ctx, "acme", "old1"); err != nil || e.Input["ssn"] != "legacy-secret" {
				t.Fatalf("legacy %v %+v", err, e)
			}
			legacy.Close()

			serveKeys, err := sealed.LoadKeyring(sealed.Sources{File: file})
			if err != nil {
				t.Fatal(err)
			}
			serving := b.open(t, StoreOptions{Keys: serveKeys})
			const n = 40
			for i := range n {
				writeExecution(t, serving, []string{"acme", "globex"}[i%2], fmt.Sprintf("ex%03d", i), fmt.Sprintf("secret-%d", i))
			}
			if e, err := serving.GetExecution(ctx, "acme", "old1"); err != nil || e.Input["ssn"] != "legacy-secret" {
				t.Fatalf("legacy row through an encrypting store: %v %+v", err, e)
			}

			// The rotation: k2 added to the file and made active, then a
			// maintenance store re-encrypts in small batches.
			k2 := testKey(t, "k2")
			if err := sealed.WriteKeysFile(file, &sealed.KeysFile{Active: "k2", Keys: []sealed.FileKey{k1.FileKey(), k2.FileKey()}}); err != nil {
				t.Fatal(err)
			}
			rotKeys, err := sealed.LoadKeyring(sealed.Sources{File: file})
			if err != nil {
				t.Fatal(err)
			}
			rot := b.open(t, StoreOptions{Keys: rotKeys, Maintenance: true}).(KeyMaintainer)

			// The runner keeps serving: reads of every row, and new writes.
			var stop atomic.Bool
			var wg sync.WaitGroup
			var readErr atomic.Value
			var reads, writes atomic.Int64
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					tenant, id := []string{"acme", "globex"}[i%2], fmt.Sprintf("ex%03d", i%n)
					if id == "ex000" || id == "ex001" {
						id = "old1"
						tenant = "acme"
					}
					e, err := serving.GetExecution(context.Background(), tenant, id)
					if err != nil {
						readErr.Store(fmt.Errorf("read %s/%s during the rotation: %w", tenant, id, err))
						return
					}
					if !strings.Contains(fmt.Sprint(e.Input["ssn"]), "secret") {
						readErr.Store(fmt.Errorf("read %s/%s: %v", tenant, id, e.Input))
						return
					}
					reads.Add(1)
					if i%7 == 0 {
						if err := writeExecutionErr(context.Background(), serving, "acme", fmt.Sprintf("new%04d", i), "fresh-secret"); err != nil {
							readErr.Store(fmt.Errorf("write during the rotation: %w", err))
							return
						}
						writes.Add(1)
					}
				}
			}()
			var progress []ReencryptProgress
			left := -1
			for pass := 0; pass < 10 && left != 0; pass++ {
				res, err := rot.Reencrypt(ctx, "k2", ReencryptOptions{Batch: 7, Progress: func(p ReencryptProgress) { progress = append(progress, p) }})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Failed) > 0 {
					t.Fatalf("failed: %v", res.Failed)
				}
				if pass == 0 {
					time.Sleep(1200 * time.Millisecond) // the serving keyring sees k2 active within a second
				}
				s, err := rot.KeyStatus(ctx)
				if err != nil {
					t.Fatal(err)
				}
				left = 0
				for kid, c := range s.Values {
					if kid != "k2" {
						left += c
					}
				}
				if pass > 0 && left == 0 {
					stop.Store(true)
					wg.Wait()
					// One last pass after the writer stopped.
					if _, err := rot.Reencrypt(ctx, "k2", ReencryptOptions{}); err != nil {
						t.Fatal(err)
					}
				}
			}
			stop.Store(true)
			wg.Wait()
			if e, _ := readErr.Load().(error); e != nil {
				t.Fatal(e)
			}
			if reads.Load() == 0 || writes.Load() == 0 || len(progress) < 3 {
				t.Fatalf("reads %d, writes %d, progress %d: the rotation did not run beside the runner", reads.Load(), writes.Load(), len(progress))
			}
			// Every raw value is under k2 now, the legacy ones included.
			for _, tenant := range []string{"acme", "globex"} {
				for col, vs := range rawColumns(t, serving, tenant) {
					for _, v := range vs {
						if kid, ok := sealed.KeyID(v); !ok || kid != "k2" {
							t.Fatalf("%s %s: %.30q is not under k2", tenant, col, v)
						}
						if strings.Contains(v, "secret") {
							t.Fatalf("%s %s holds plaintext", tenant, col)
						}
					}
				}
			}
			s, err := rot.KeyStatus(ctx)
			if err != nil || s.Values["k2"] == 0 || len(s.Values) != 1 {
				t.Fatalf("status %v %+v", err, s)
			}
			// Idempotent: a second pass rewrites nothing.
			res, err := rot.Reencrypt(ctx, "k2", ReencryptOptions{})
			if err != nil || res.Rewritten != 0 || res.Rows == 0 {
				t.Fatalf("second pass %v %+v", err, res)
			}
			// Reads still work, through the runner's keyring and a k2-only one.
			only2 := b.open(t, StoreOptions{Keys: fixedRing(t, "k2", k2), Maintenance: true})
			for _, st := range []Store{serving, only2} {
				if e, err := st.GetExecution(ctx, "acme", "old1"); err != nil || e.Input["ssn"] != "legacy-secret" || e.Nodes[0].Output == nil && e.Nodes[1].Output == nil {
					t.Fatalf("after the rotation: %v %+v", err, e)
				}
			}
		})
	}
}
