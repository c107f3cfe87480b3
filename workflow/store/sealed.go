package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/sealed"
)

// Encryption at rest. With a keyring, every value of the sealed columns
// below is stored as a sealed.Field bound to (tenant, table, row, column):
// a ciphertext copied onto another row or tenant does not open. Values
// written before encryption was on (no "kse:" prefix) are read as they are
// and sealed by a rotation (Reencrypt); the format needs no schema change.

// sealedTable is a table with sealed columns and its primary key.
type sealedTable struct {
	name string
	pk   []string
	cols []string
}

// sealedTables are the columns sealed at rest: execution inputs, outputs
// and error text, node results, audit details, and the user recorded with
// an execution or an audit record.
var sealedTables = []sealedTable{
	{name: "executions", pk: []string{"id"}, cols: []string{"user", "input", "output", "error"}},
	{name: "node_results", pk: []string{"execution_id", "node"}, cols: []string{"output", "error"}},
	{name: "audit_log", pk: []string{"id"}, cols: []string{"user", "details"}},
}

// nodeRow names a node_results row (execution ids and node ids hold no '/').
func nodeRow(execID, node string) string { return execID + "/" + node }

func (t *tenantDB) field(table, row, col string) sealed.Field {
	return sealed.Field{Tenant: t.tenant, Table: table, Row: row, Column: col}
}

// seal is v as stored: sealed under the active key, or v without keys.
func (s *sqlStore) seal(t *tenantDB, table, row, col, v string) (string, error) {
	if s.keys == nil {
		return v, nil
	}
	return s.keys.Seal(t.field(table, row, col), []byte(v))
}

// sealNullable is seal for a nullable column: nil stays NULL.
func (s *sqlStore) sealNullable(t *tenantDB, table, row, col string, b []byte) (any, error) {
	if b == nil {
		return nil, nil
	}
	return s.seal(t, table, row, col, string(b))
}

// open is a stored value read back: opened when sealed, as it is when
// written in clear before encryption was on.
func (s *sqlStore) open(t *tenantDB, table, row, col, v string) (string, error) {
	if !sealed.IsSealed(v) {
		return v, nil
	}
	f := t.field(table, row, col)
	if s.keys == nil {
		kid, _ := sealed.KeyID(v)
		return "", &sealed.FieldError{Field: f, KeyID: kid, Err: sealed.ErrNoKeys}
	}
	b, err := s.keys.Open(f, v)
	return string(b), err
}

func quoteCols(cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = `"` + c + `"`
	}
	return out
}

// KeyMaintainer is what `kailash keys` needs of a store; the SQLite and
// PostgreSQL stores implement it.
type KeyMaintainer interface {
	// Tenants lists the tenants the store holds.
	Tenants(ctx context.Context) ([]string, error)
	// KeyStatus counts the stored values of the sealed columns by the key
	// id that sealed them ("" for values in clear).
	KeyStatus(ctx context.Context) (*KeyStatus, error)
	// Reencrypt makes one pass over every sealed column, sealing under key
	// target every value that is not yet (values in clear included), in
	// batches; see ReencryptOptions.
	Reencrypt(ctx context.Context, target string, o ReencryptOptions) (*ReencryptResult, error)
	// Keys is the store's keyring (nil: encryption is off).
	Keys() *sealed.Keyring
	Close() error
}

var _ KeyMaintainer = (*sqlStore)(nil)

// KeyStatus is how many values each key id sealed.
type KeyStatus struct {
	// Values counts by key id; "" is values in clear, "malformed" values
	// with the sealed prefix that do not parse.
	Values map[string]int
	// Columns counts by "table.column", then key id.
	Columns map[string]map[string]int
}

// ReencryptOptions tune a Reencrypt pass.
type ReencryptOptions struct {
	// Batch is the rows read and rewritten at a time (default 200).
	Batch int
	// Pause is slept between batches, to leave room to a serving runner.
	Pause time.Duration
	// Progress, when set, is called after each batch.
	Progress func(ReencryptProgress)
}

// ReencryptProgress is where a pass stands.
type ReencryptProgress struct {
	Tenant, Table string
	// Rows scanned and Rewritten so far in this pass (all tenants).
	Rows, Rewritten int
}

// ReencryptResult is one pass's outcome.
type ReencryptResult struct {
	Rows, Rewritten int
	// Conflicts are rows changed by a runner between our read and our
	// write: left alone, a next pass takes them.
	Conflicts int
	// Failed are values that would not open (each error names the field,
	// never the value); they are left as they are.
	Failed []error
}

func (s *sqlStore) Keys() *sealed.Keyring { return s.keys }

func (s *sqlStore) Tenants(ctx context.Context) ([]string, error) { return s.d.tenants(ctx) }

// KeyStatus implements KeyMaintainer.
func (s *sqlStore) KeyStatus(ctx context.Context) (*KeyStatus, error) {
	tenants, err := s.d.tenants(ctx)
	if err != nil {
		return nil, err
	}
	st := &KeyStatus{Values: map[string]int{}, Columns: map[string]map[string]int{}}
	for _, tenant := range tenants {
		t, err := s.db(ctx, tenant)
		if err != nil {
			return nil, err
		}
		for _, tb := range sealedTables {
			if err := t.countKeys(ctx, tb, st); err != nil {
				return nil, fmt.Errorf("tenant %s: %s: %w", tenant, tb.name, err)
			}
		}
	}
	return st, nil
}

func (t *tenantDB) countKeys(ctx context.Context, tb sealedTable, st *KeyStatus) error {
	rows, err := t.db.QueryContext(ctx, t.q(fmt.Sprintf(`SELECT %s FROM {t}%s`, strings.Join(quoteCols(tb.cols), ", "), tb.name)))
	if err != nil {
		return err
	}
	defer rows.Close()
	vals := make([]sql.NullString, len(tb.cols))
	ptrs := make([]any, len(tb.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i, v := range vals {
			if !v.Valid {
				continue
			}
			kid := ""
			if sealed.IsSealed(v.String) {
				var ok bool
				if kid, ok = sealed.KeyID(v.String); !ok {
					kid = "malformed"
				}
			}
			col := tb.name + "." + tb.cols[i]
			if st.Columns[col] == nil {
				st.Columns[col] = map[string]int{}
			}
			st.Columns[col][kid]++
			st.Values[kid]++
		}
	}
	return rows.Err()
}

// Reencrypt implements KeyMaintainer. It is resumable and idempotent: a
// value already under target is left as it is (its header alone is read),
// so a pass interrupted and started again only does what is left. It is
// safe beside a serving runner: each row is rewritten by one UPDATE that
// applies only if the row still holds what was read (else it counts as a
// conflict for a next pass), and readers open values under any key of the
// keyring meanwhile.
func (s *sqlStore) Reencrypt(ctx context.Context, target string, o ReencryptOptions) (*ReencryptResult, error) {
	if s.keys == nil {
		return nil, sealed.ErrNoKeys
	}
	if !s.keys.Has(target) {
		return nil, fmt.Errorf("key id %q: %w (known: %s)", target, sealed.ErrUnknownKey, strings.Join(s.keys.IDs(), ", "))
	}
	if o.Batch <= 0 {
		o.Batch = 200
	}
	tenants, err := s.d.tenants(ctx)
	if err != nil {
		return nil, err
	}
	res := &ReencryptResult{}
	for _, tenant := range tenants {
		t, err := s.db(ctx, tenant)
		if err != nil {
			return res, err
		}
		for _, tb := range sealedTables {
			if err := s.reencryptTable(ctx, t, tb, target, o, res); err != nil {
				return res, fmt.Errorf("tenant %s: %s: %w", tenant, tb.name, err)
			}
		}
	}
	return res, nil
}

func (s *sqlStore) reencryptTable(ctx context.Context, t *tenantDB, tb sealedTable, target string, o ReencryptOptions, res *ReencryptResult) error {
	pk, cols := strings.Join(quoteCols(tb.pk), ", "), quoteCols(tb.cols)
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(tb.pk)), ", ")
	sel := t.q(fmt.Sprintf(`SELECT %s, %s FROM {t}%s WHERE (%s) > (%s) ORDER BY %s LIMIT ?`,
		pk, strings.Join(cols, ", "), tb.name, pk, marks, pk))
	var set, where []string
	for _, c := range cols {
		set = append(set, c+" = ?")
	}
	for _, c := range quoteCols(tb.pk) {
		where = append(where, c+" = ?")
	}
	for _, c := range cols {
		where = append(where, c+" {is} ?")
	}
	upd := t.q(fmt.Sprintf(`UPDATE {t}%s SET %s WHERE %s`, tb.name, strings.Join(set, ", "), strings.Join(where, " AND ")))

	cursor := make([]any, len(tb.pk))
	for i := range cursor {
		cursor[i] = ""
	}
	type row struct {
		pk       []string
		old, new []any
		changed  bool
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, err := t.db.QueryContext(ctx, sel, append(append([]any{}, cursor...), o.Batch)...)
		if err != nil {
			return err
		}
		var batch []row
		for rows.Next() {
			keys := make([]string, len(tb.pk))
			vals := make([]sql.NullString, len(tb.cols))
			ptrs := make([]any, 0, len(keys)+len(vals))
			for i := range keys {
				ptrs = append(ptrs, &keys[i])
			}
			for i := range vals {
				ptrs = append(ptrs, &vals[i])
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return err
			}
			r := row{pk: keys}
			for _, v := range vals {
				if v.Valid {
					r.old = append(r.old, v.String)
				} else {
					r.old = append(r.old, nil)
				}
			}
			batch = append(batch, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		for i := range batch {
			r := &batch[i]
			id := strings.Join(r.pk, "/")
			r.new = make([]any, len(r.old))
			failed := false
			for j, v := range r.old {
				r.new[j] = v
				str, ok := v.(string)
				if !ok {
					continue
				}
				if kid, ok := sealed.KeyID(str); ok && kid == target {
					continue
				}
				plain, err := s.open(t, tb.name, id, tb.cols[j], str)
				if err != nil {
					res.Failed = append(res.Failed, err)
					failed = true
					break
				}
				sv, err := s.keys.SealWith(target, t.field(tb.name, id, tb.cols[j]), []byte(plain))
				if err != nil {
					return err
				}
				r.new[j], r.changed = sv, true
			}
			if failed || !r.changed {
				continue
			}
			args := append([]any{}, r.new...)
			for _, k := range r.pk {
				args = append(args, k)
			}
			args = append(args, r.old...)
			n, err := t.db.ExecContext(ctx, upd, args...)
			if err != nil {
				return err
			}
			if c, _ := n.RowsAffected(); c == 0 {
				res.Conflicts++
			} else {
				res.Rewritten++
			}
		}
		res.Rows += len(batch)
		for i, k := range batch[len(batch)-1].pk {
			cursor[i] = k
		}
		if o.Progress != nil {
			o.Progress(ReencryptProgress{Tenant: t.tenant, Table: tb.name, Rows: res.Rows, Rewritten: res.Rewritten})
		}
		if o.Pause > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(o.Pause):
			}
		}
	}
}

// GeneratedKeysFile is the keys file a runner on SQLite files generates in
// its data directory when no keys are configured.
const GeneratedKeysFile = "data-keys.yaml"

// DataKeyOptions say where OpenDataKeys finds the data keys.
type DataKeyOptions struct {
	// KeysFile is runner.encryption.keys_file, resolved.
	KeysFile string
	// Required refuses to run without keys.
	Required bool
	// DataDir is the SQLite data directory ("" in memory or on PostgreSQL):
	// without configured keys, a key is generated into it.
	DataDir string
	// Generate: without configured keys, generate one into DataDir. Off for
	// tools that must not create keys (kailash keys status).
	Generate bool
	Log      *slog.Logger
	// Getenv reads KAILASH_DATA_KEYS (os.Getenv by default).
	Getenv func(string) string
}

// OpenDataKeys loads the data keys: from KAILASH_DATA_KEYS and/or
// runner.encryption.keys_file when either is set (a key generated earlier
// in the data directory stays readable); else, on SQLite files, from
// <data_dir>/data-keys.yaml, generated (mode 0600, logged) when missing;
// else none (nil), with a warning on PostgreSQL, or an error when Required.
//
// Why generate rather than run in clear: a single-host runner then has its
// data encrypted with no setup, and the key sits beside the data only until
// an operator moves it (keys_file or the environment, which also keep
// reading the generated key). PostgreSQL is shared by replicas, which a
// key generated on one host would not serve, so there keys must be given.
func OpenDataKeys(o DataKeyOptions) (*sealed.Keyring, error) {
	log, getenv := o.Log, o.Getenv
	if log == nil {
		log = slog.Default()
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	env := getenv(sealed.EnvKeys)
	generated := ""
	if o.DataDir != "" {
		generated = filepath.Join(o.DataDir, GeneratedKeysFile)
	}
	if env != "" || o.KeysFile != "" {
		src := sealed.Sources{Env: env, EnvActive: getenv(sealed.EnvActive), File: o.KeysFile}
		if generated != "" && generated != o.KeysFile {
			src.ReadOnly = []string{generated}
		}
		return sealed.LoadKeyring(src)
	}
	if generated != "" {
		if _, err := os.Stat(generated); errors.Is(err, os.ErrNotExist) {
			if o.Required {
				return nil, errors.New("runner.encryption.required: no data keys (KAILASH_DATA_KEYS or runner.encryption.keys_file)")
			}
			if !o.Generate {
				return nil, nil
			}
			k, err := sealed.NewKey("k" + time.Now().UTC().Format("20060102T150405Z"))
			if err != nil {
				return nil, err
			}
			if err := sealed.WriteKeysFile(generated, &sealed.KeysFile{Active: k.ID, Keys: []sealed.FileKey{k.FileKey()}}); err != nil {
				return nil, fmt.Errorf("generating a data key in %s: %w", generated, err)
			}
			log.Warn("encryption at rest: generated a data key beside the data; back it up, or move it to runner.encryption.keys_file or "+sealed.EnvKeys,
				"file", generated, "key_id", k.ID)
		}
		return sealed.LoadKeyring(sealed.Sources{File: generated})
	}
	if o.Required {
		return nil, errors.New("runner.encryption.required: no data keys (KAILASH_DATA_KEYS or runner.encryption.keys_file)")
	}
	return nil, nil
}

// OpenConfiguredStore opens the store the runner config names
// (runner.postgres_dsn, else runner.data_dir, else memory) with the data
// keys OpenDataKeys finds, warning when PostgreSQL runs without them.
func OpenConfiguredStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (Store, error) {
	return OpenConfiguredStoreWith(ctx, cfg, StoreOptions{Log: log})
}

// OpenConfiguredStoreWith is OpenConfiguredStore with o's DeferTakeover
// (and Log); the keys and the lease TTL come from cfg.
func OpenConfiguredStoreWith(ctx context.Context, cfg *config.Config, so StoreOptions) (Store, error) {
	log := so.Log
	if log == nil {
		log = slog.Default()
	}
	r := cfg.Runner
	o := DataKeyOptions{KeysFile: cfg.Path(r.Encryption.KeysFile), Required: r.Encryption.Required, Log: log, Generate: true}
	if r.PostgresDSN == "" {
		o.DataDir = cfg.Path(r.DataDir)
	}
	keys, err := OpenDataKeys(o)
	if err != nil {
		return nil, err
	}
	if r.PostgresDSN != "" {
		if keys == nil {
			log.Warn("encryption at rest is off: execution payloads and audit details are stored in clear in PostgreSQL; set " +
				sealed.EnvKeys + " or runner.encryption.keys_file")
		}
		return OpenPostgresStoreWith(ctx, r.PostgresDSN, StoreOptions{Keys: keys, LeaseTTL: r.LeaseTTL, Log: log, DeferTakeover: so.DeferTakeover})
	}
	return OpenStoreWith(ctx, o.DataDir, StoreOptions{Keys: keys, LeaseTTL: r.LeaseTTL, Log: log, DeferTakeover: so.DeferTakeover})
}
