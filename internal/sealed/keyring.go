package sealed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvKeys names the environment variable holding data keys:
// "id1:base64key,id2:base64key". EnvActive names the one that writes; by
// default the last listed.
const (
	EnvKeys   = "KAILASH_DATA_KEYS"
	EnvActive = "KAILASH_DATA_KEY_ACTIVE"
)

// KeysFile is the keys file (YAML, mode 0600):
//
//	active: k2
//	keys:
//	  - id: k1
//	    key: <base64 of 32 bytes>
//	  - id: k2
//	    key: <base64 of 32 bytes>
//
// The active key writes; every key reads. Without active, the last key.
type KeysFile struct {
	Active string    `yaml:"active,omitempty"`
	Keys   []FileKey `yaml:"keys"`
}

// FileKey is one key of a KeysFile.
type FileKey struct {
	ID  string `yaml:"id"`
	Key string `yaml:"key"`
}

// ReadKeysFile reads and checks a keys file: strict YAML, valid ids and
// keys, and no access for group or others (as ssh wants of private keys).
// Errors name the file and the key id, never a key.
func ReadKeysFile(path string) (*KeysFile, []Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s: mode %04o lets group or others read the data keys: chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var kf KeysFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&kf); err != nil {
		return nil, nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var keys []Key
	for i, k := range kf.Keys {
		if !ValidKeyID(k.ID) {
			return nil, nil, fmt.Errorf("%s: keys[%d]: id %q: want letters, digits, '_', '.' and '-' (at most 64)", path, i, k.ID)
		}
		secret, err := ParseKey(k.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: key %q: %v", path, k.ID, err)
		}
		keys = append(keys, Key{ID: k.ID, Secret: secret})
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("%s: no keys", path)
	}
	if kf.Active == "" {
		kf.Active = keys[len(keys)-1].ID
	}
	return &kf, keys, nil
}

// WriteKeysFile writes kf to path atomically (a temporary file renamed
// over it) with mode 0600.
func WriteKeysFile(path string, kf *KeysFile) error {
	var buf bytes.Buffer
	buf.WriteString("# Kailash data keys (AES-256-GCM). Secret: keep this file mode 0600, back it up.\n" +
		"# The active key encrypts; every key listed decrypts. Rotate with `kailash keys rotate`.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(kf); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".data-keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// ParseEnvKeys parses KAILASH_DATA_KEYS's form "id1:key1,id2:key2"; the
// active key is active, or the last listed when empty.
func ParseEnvKeys(v, active string) (string, []Key, error) {
	var keys []Key
	for i, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, raw, ok := strings.Cut(item, ":")
		if !ok || !ValidKeyID(id) {
			return "", nil, fmt.Errorf("%s: item %d: want <key id>:<base64 key>", EnvKeys, i+1)
		}
		secret, err := ParseKey(raw)
		if err != nil {
			return "", nil, fmt.Errorf("%s: key %q: %v", EnvKeys, id, err)
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	if len(keys) == 0 {
		return "", nil, fmt.Errorf("%s: no keys", EnvKeys)
	}
	if active == "" {
		active = keys[len(keys)-1].ID
	}
	return active, keys, nil
}

// Sources say where a Keyring's keys come from.
type Sources struct {
	// Env is the value of KAILASH_DATA_KEYS and EnvActive of
	// KAILASH_DATA_KEY_ACTIVE; when Env is set it names the active key.
	Env, EnvActive string
	// File is a keys file; it names the active key when Env is empty.
	File string
	// ReadOnly are more keys files whose keys only decrypt (e.g. a key
	// generated into the data directory before keys were configured).
	ReadOnly []string
}

// Keyring holds the data keys: the active one seals, all open. Keys files
// are re-read when they change (checked at most once a second when
// sealing, and at once when a value names an unknown key), so a rotation
// that adds a key to the file is seen by a runner that is serving; a file
// that fails to load keeps the last good keys. Safe for concurrent use.
type Keyring struct {
	src Sources

	cur atomic.Pointer[ring]

	mu      sync.Mutex // guards stamp, checked, loadErr
	stamp   string     // files' identity (mtime, size) at the last load
	checked time.Time
	loadErr error
}

// NewKeyring is a fixed keyring (no files).
func NewKeyring(active string, keys ...Key) (*Keyring, error) {
	r, err := newRing(active, keys)
	if err != nil {
		return nil, err
	}
	k := &Keyring{}
	k.cur.Store(r)
	return k, nil
}

// LoadKeyring loads the keys of src. It fails when a source is broken or
// when no source names an active key.
func LoadKeyring(src Sources) (*Keyring, error) {
	k := &Keyring{src: src}
	r, stamp, err := k.load()
	if err != nil {
		return nil, err
	}
	k.cur.Store(r)
	k.stamp, k.checked = stamp, time.Now()
	return k, nil
}

func (k *Keyring) files() []string {
	var fs []string
	if k.src.File != "" {
		fs = append(fs, k.src.File)
	}
	return append(fs, k.src.ReadOnly...)
}

func stampOf(files []string) string {
	var b strings.Builder
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			var ino uint64
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				ino = st.Ino // a rename over the file changes it
			}
			fmt.Fprintf(&b, "%s|%d|%d|%d;", f, fi.ModTime().UnixNano(), fi.Size(), ino)
		} else {
			fmt.Fprintf(&b, "%s|missing;", f)
		}
	}
	return b.String()
}

func (k *Keyring) load() (*ring, string, error) {
	stamp := stampOf(k.files())
	var keys []Key
	active := ""
	if k.src.Env != "" {
		a, ks, err := ParseEnvKeys(k.src.Env, k.src.EnvActive)
		if err != nil {
			return nil, "", err
		}
		active, keys = a, ks
	}
	if k.src.File != "" {
		kf, ks, err := ReadKeysFile(k.src.File)
		if err != nil {
			return nil, "", fmt.Errorf("runner.encryption.keys_file: %w", err)
		}
		if active == "" {
			active = kf.Active
		}
		keys = append(keys, ks...)
	}
	for _, f := range k.src.ReadOnly {
		kf, ks, err := ReadKeysFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		if active == "" {
			active = kf.Active
		}
		keys = append(keys, ks...)
	}
	if len(keys) == 0 {
		return nil, "", ErrNoKeys
	}
	r, err := newRing(active, keys)
	if err != nil {
		return nil, "", err
	}
	return r, stamp, nil
}

// refresh re-reads the files when they changed since the last load,
// looking at most once a second; with force (an unknown key id), now.
func (k *Keyring) refresh(force bool) {
	if len(k.files()) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !force && time.Since(k.checked) < time.Second {
		return
	}
	k.checked = time.Now()
	if stampOf(k.files()) == k.stamp {
		return
	}
	r, stamp, err := k.load()
	if err != nil {
		k.loadErr = err // keep the last good keys
		return
	}
	k.cur.Store(r)
	k.stamp, k.loadErr = stamp, nil
}

// Reload re-reads the keys files now; on error the last good keys stay.
func (k *Keyring) Reload() error {
	if len(k.files()) == 0 {
		return nil
	}
	r, stamp, err := k.load()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.checked = time.Now()
	if err != nil {
		k.loadErr = err
		return err
	}
	k.cur.Store(r)
	k.stamp, k.loadErr = stamp, nil
	return nil
}

// File is the keys file that names the active key, "" when the
// environment does (or the keyring is fixed): a rotation writes there.
func (k *Keyring) File() string {
	if k.src.Env != "" {
		return ""
	}
	return k.src.File
}

// Active is the id of the key that seals.
func (k *Keyring) Active() string {
	k.refresh(false)
	return k.cur.Load().active
}

// IDs lists the key ids, sorted.
func (k *Keyring) IDs() []string { return append([]string(nil), k.cur.Load().ids...) }

// Has reports whether the keyring holds the key id.
func (k *Keyring) Has(id string) bool {
	if _, ok := k.cur.Load().aeads[id]; ok {
		return true
	}
	k.refresh(true)
	_, ok := k.cur.Load().aeads[id]
	return ok
}

// Seal encrypts plain for f under the active key.
func (k *Keyring) Seal(f Field, plain []byte) (string, error) {
	k.refresh(false)
	r := k.cur.Load()
	return r.seal(r.active, f, plain)
}

// SealWith encrypts plain for f under the key id (a rotation's target).
func (k *Keyring) SealWith(id string, f Field, plain []byte) (string, error) {
	if !k.Has(id) {
		return "", fmt.Errorf("key id %q: %w (known: %s)", id, ErrUnknownKey, strings.Join(k.IDs(), ", "))
	}
	return k.cur.Load().seal(id, f, plain)
}

// Open decrypts a sealed value of f. An unknown key id re-reads the keys
// files first (a rotation may have just added it).
func (k *Keyring) Open(f Field, v string) ([]byte, error) {
	plain, err := k.cur.Load().open(f, v)
	if err != nil && errors.Is(err, ErrUnknownKey) {
		k.refresh(true)
		plain, err = k.cur.Load().open(f, v)
	}
	return plain, err
}
