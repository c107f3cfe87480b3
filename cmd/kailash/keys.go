package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/sealed"
	"github.com/kailash-gw/kailash/workflow/store"
)

// runKeys is `kailash keys status|add|rotate`: the data keys that encrypt
// the runner's execution payloads, node results and audit details at rest.
func runKeys(ctx context.Context, args []string, w io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(w, "Usage: kailash keys status|add|rotate -c kailash.yaml [flags]")
		fmt.Fprintln(w, "  status   count the stored values under each key id (and in clear)")
		fmt.Fprintln(w, "  add      add a new key to the keys file, not active (distribute it to every host first)")
		fmt.Fprintln(w, "  rotate   make a key active (a new one, or --to ID) and re-encrypt every value under it")
		if len(args) == 0 {
			return errors.New("keys: a subcommand is required")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("keys " + sub)
	var path, to, id string
	var batch, passes int
	var pause time.Duration
	fs.StringVar(&path, "c", "kailash.yaml", "config file")
	fs.StringVar(&path, "config", "kailash.yaml", "config file (same as -c)")
	switch sub {
	case "status":
	case "add":
		fs.StringVar(&id, "id", "", "id of the new key (default k<UTC time>)")
	case "rotate":
		fs.StringVar(&to, "to", "", "key id to rotate to (default: a new key, added to the keys file)")
		fs.IntVar(&batch, "batch", 200, "rows re-encrypted per batch")
		fs.DurationVar(&pause, "pause", 0, "pause between batches, to spare a busy database")
		fs.IntVar(&passes, "passes", 10, "passes at most (rows a runner writes under the old key meanwhile are taken by the next)")
	default:
		return fmt.Errorf("keys: unknown subcommand %q (status, add, rotate)", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	record := func(action, target string, err error) error {
		return recordCLI(ctx, cfg, action, target, map[string]any{"config": cfg.File}, err)
	}
	if sub == "add" {
		return record(audit.KeyAdd, "runner data key "+id, keysAdd(cfg, id, w))
	}
	st, err := openKeyStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if sub == "status" {
		return keysStatus(ctx, st, w)
	}
	err = keysRotate(ctx, st, to, store.ReencryptOptions{Batch: batch, Pause: pause}, passes, w)
	return record(audit.KeyRotate, "runner data key (to "+st.Keys().Active()+")", err)
}

// openKeyStore opens the runner's store beside a serving runner (nothing
// marked interrupted, no key generated).
func openKeyStore(ctx context.Context, cfg *config.Config) (store.KeyMaintainer, error) {
	r := cfg.Runner
	o := store.DataKeyOptions{KeysFile: cfg.Path(r.Encryption.KeysFile)}
	if r.PostgresDSN == "" {
		if r.DataDir == "" {
			return nil, errors.New("keys: the runner keeps its data in memory (no runner.data_dir or runner.postgres_dsn): nothing is stored")
		}
		o.DataDir = cfg.Path(r.DataDir)
	}
	keys, err := store.OpenDataKeys(o)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, fmt.Errorf("keys: no data keys: set %s or runner.encryption.keys_file", sealed.EnvKeys)
	}
	var st store.Store
	so := store.StoreOptions{Keys: keys, Maintenance: true}
	if r.PostgresDSN != "" {
		st, err = store.OpenPostgresStoreWith(ctx, r.PostgresDSN, so)
	} else {
		st, err = store.OpenStoreWith(ctx, o.DataDir, so)
	}
	if err != nil {
		return nil, err
	}
	return st.(store.KeyMaintainer), nil
}

// keysFilePath is the keys file add and rotate write: runner.encryption.
// keys_file, else the key generated in the data directory.
func keysFilePath(cfg *config.Config) (string, error) {
	if cfg.Runner.Encryption.KeysFile != "" {
		return cfg.Path(cfg.Runner.Encryption.KeysFile), nil
	}
	if cfg.Runner.PostgresDSN == "" && cfg.Runner.DataDir != "" {
		return filepath.Join(cfg.Path(cfg.Runner.DataDir), store.GeneratedKeysFile), nil
	}
	return "", fmt.Errorf("keys: no keys file to write (runner.encryption.keys_file); with %s, add the key to the environment", sealed.EnvKeys)
}

func newKeyID(taken []string) string {
	base := "k" + time.Now().UTC().Format("20060102T150405Z")
	id := base
	for i := 2; slices.Contains(taken, id); i++ {
		id = fmt.Sprintf("%s-%d", base, i)
	}
	return id
}

// addKey appends a new key to the keys file, active or not, and returns its id.
func addKey(path, id string, activate bool) (string, error) {
	kf, _, err := sealed.ReadKeysFile(path)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, k := range kf.Keys {
		ids = append(ids, k.ID)
	}
	if id == "" {
		id = newKeyID(ids)
	} else if slices.Contains(ids, id) {
		return "", fmt.Errorf("%s: key id %q exists already", path, id)
	}
	k, err := sealed.NewKey(id)
	if err != nil {
		return "", err
	}
	kf.Keys = append(kf.Keys, k.FileKey())
	if activate {
		kf.Active = id
	}
	return id, sealed.WriteKeysFile(path, kf)
}

func keysAdd(cfg *config.Config, id string, w io.Writer) error {
	path, err := keysFilePath(cfg)
	if err != nil {
		return err
	}
	id, err = addKey(path, id, false)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "added key %s to %s (not active: copy the file to every runner, then kailash keys rotate --to %s)\n", id, path, id)
	return err
}

func keysStatus(ctx context.Context, st store.KeyMaintainer, w io.Writer) error {
	s, err := st.KeyStatus(ctx)
	if err != nil {
		return err
	}
	k := st.Keys()
	fmt.Fprintf(w, "active key: %s (keys: %s)\n", k.Active(), strings.Join(k.IDs(), ", "))
	printCounts(w, s.Values)
	cols := make([]string, 0, len(s.Columns))
	for c := range s.Columns {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for _, c := range cols {
		fmt.Fprintf(w, "  %-22s %s\n", c, countLine(s.Columns[c]))
	}
	return nil
}

func label(kid string) string {
	if kid == "" {
		return "(clear)"
	}
	return kid
}

func printCounts(w io.Writer, m map[string]int) {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	fmt.Fprintf(w, "%-24s %s\n", "key id", "values")
	for _, id := range ids {
		fmt.Fprintf(w, "%-24s %d\n", label(id), m[id])
	}
}

func countLine(m map[string]int) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s=%d", label(id), m[id]))
	}
	return strings.Join(parts, " ")
}

// remaining counts the values not under target.
func remaining(s *store.KeyStatus, target string) int {
	n := 0
	for kid, c := range s.Values {
		if kid != target {
			n += c
		}
	}
	return n
}

func keysRotate(ctx context.Context, st store.KeyMaintainer, to string, o store.ReencryptOptions, passes int, w io.Writer) error {
	keys := st.Keys()
	file := keys.File()
	switch {
	case to == "" && file == "":
		return fmt.Errorf("keys rotate: the active key comes from %s: add the new key there on every runner (and %s), then give --to", sealed.EnvKeys, sealed.EnvActive)
	case to == "":
		id, err := addKey(file, "", true)
		if err != nil {
			return err
		}
		to = id
		fmt.Fprintf(w, "new key %s added to %s and made active\n", to, file)
	case !keys.Has(to):
		return fmt.Errorf("keys rotate: key id %q is not in the keyring (known: %s)", to, strings.Join(keys.IDs(), ", "))
	case file != "":
		kf, _, err := sealed.ReadKeysFile(file)
		if err != nil {
			return err
		}
		if kf.Active != to {
			kf.Active = to
			if err := sealed.WriteKeysFile(file, kf); err != nil {
				return err
			}
			fmt.Fprintf(w, "key %s made active in %s\n", to, file)
		}
	default:
		if keys.Active() != to {
			fmt.Fprintf(w, "note: %s names %s active; runners keep writing under their own active key until %s=%s\n", sealed.EnvActive, keys.Active(), sealed.EnvActive, to)
		}
	}
	if err := keys.Reload(); err != nil {
		return err
	}
	if passes <= 0 {
		passes = 1
	}
	o.Progress = func(p store.ReencryptProgress) {
		fmt.Fprintf(w, "  tenant %s, %s: %d rows scanned, %d re-encrypted\n", p.Tenant, p.Table, p.Rows, p.Rewritten)
	}
	var left int
	for pass := 1; pass <= passes; pass++ {
		res, err := st.Reencrypt(ctx, to, o)
		if err != nil {
			return err
		}
		s, err := st.KeyStatus(ctx)
		if err != nil {
			return err
		}
		left = remaining(s, to)
		fmt.Fprintf(w, "pass %d: %d rows, %d re-encrypted, %d changed meanwhile, %d failed; %d values not under %s\n",
			pass, res.Rows, res.Rewritten, res.Conflicts, len(res.Failed), left, to)
		for i, e := range res.Failed {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more\n", len(res.Failed)-10)
				break
			}
			fmt.Fprintf(w, "  failed: %v\n", e)
		}
		if left == 0 {
			fmt.Fprintf(w, "done: every value is under %s\n", to)
			return nil
		}
		if res.Rewritten == 0 && res.Conflicts == 0 {
			break // what is left will not move (values that do not open)
		}
		// Runners re-read the keys file within a second; rows they wrote
		// under the old key meanwhile are taken by the next pass.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return fmt.Errorf("keys rotate: %d values are not under %s yet (kailash keys status; run rotate again --to %s)", left, to, to)
}
