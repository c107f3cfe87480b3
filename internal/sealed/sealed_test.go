package sealed

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func key(t *testing.T, id string) Key {
	t.Helper()
	k, err := NewKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenBindsThePlace(t *testing.T) {
	k1, k2 := key(t, "k1"), key(t, "k2")
	ring, err := NewKeyring("k1", k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	f := Field{Tenant: "acme", Table: "executions", Row: "e1", Column: "input"}
	v, err := ring.Seal(f, []byte("secret value"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(v) || strings.Contains(v, "secret") {
		t.Fatalf("sealed %q", v)
	}
	if kid, ok := KeyID(v); !ok || kid != "k1" {
		t.Fatalf("key id %q %v", kid, ok)
	}
	v2, _ := ring.Seal(f, []byte("secret value"))
	if v2 == v {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	if p, err := ring.Open(f, v); err != nil || string(p) != "secret value" {
		t.Fatalf("open %q %v", p, err)
	}
	for _, other := range []Field{
		{Tenant: "globex", Table: "executions", Row: "e1", Column: "input"},
		{Tenant: "acme", Table: "audit_log", Row: "e1", Column: "input"},
		{Tenant: "acme", Table: "executions", Row: "e2", Column: "input"},
		{Tenant: "acme", Table: "executions", Row: "e1", Column: "output"},
		{Tenant: "acme", Table: "executions", Row: "e1inp", Column: "ut"}, // no ambiguity in the encoding
	} {
		_, err := ring.Open(other, v)
		var fe *FieldError
		if !errors.Is(err, ErrAuth) || !errors.As(err, &fe) || fe.Field != other || !strings.Contains(err.Error(), other.Table+"."+other.Column) {
			t.Fatalf("moved to %v: %v", other, err)
		}
	}
	// Tampered.
	b, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(v, Prefix))
	b[len(b)-1] ^= 1
	if _, err := ring.Open(f, Prefix+base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
	// Same id, other key material: authentication, not a crash.
	imp, _ := NewKeyring("k1", key(t, "k1"))
	if _, err := imp.Open(f, v); !errors.Is(err, ErrAuth) {
		t.Fatalf("other k1: %v", err)
	}
	// Unknown id: named.
	only2, _ := NewKeyring("k2", k2)
	if _, err := only2.Open(f, v); !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), `"k1"`) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := ring.Open(f, Prefix+"!!"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed: %v", err)
	}
	if v, err := ring.SealWith("k2", f, []byte("x")); err != nil || mustKID(v) != "k2" {
		t.Fatalf("seal with k2: %v", err)
	}
	if _, err := ring.SealWith("k3", f, []byte("x")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("seal with k3: %v", err)
	}
}

func mustKID(v string) string { k, _ := KeyID(v); return k }

func TestKeySources(t *testing.T) {
	k1, k2 := key(t, "k1"), key(t, "k2")
	env := "k1:" + k1.FileKey().Key + ", k2:" + k2.FileKey().Key
	active, keys, err := ParseEnvKeys(env, "")
	if err != nil || active != "k2" || len(keys) != 2 {
		t.Fatalf("env %v %v %d", err, active, len(keys))
	}
	for _, bad := range []string{"k1", "k1:short", ":abc", "bad id:" + k1.FileKey().Key} {
		if _, _, err := ParseEnvKeys(bad, ""); err == nil {
			t.Errorf("env %q accepted", bad)
		} else if strings.Contains(err.Error(), k1.FileKey().Key) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
	if _, err := LoadKeyring(Sources{Env: env, EnvActive: "k9"}); err == nil {
		t.Fatal("an active key not in the keys was accepted")
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "keys.yaml")
	if err := WriteKeysFile(file, &KeysFile{Active: "k1", Keys: []FileKey{k1.FileKey()}}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ring, err := LoadKeyring(Sources{File: file})
	if err != nil || ring.Active() != "k1" || ring.File() != file {
		t.Fatalf("file %v", err)
	}
	f := Field{Tenant: "t", Table: "x", Row: "r", Column: "c"}
	// Another process adds k2 and makes it active: an unknown k2 value
	// opens at once, and sealing switches to k2.
	other, _ := NewKeyring("k2", k1, k2)
	v, _ := other.Seal(f, []byte("p"))
	if err := WriteKeysFile(file, &KeysFile{Active: "k2", Keys: []FileKey{k1.FileKey(), k2.FileKey()}}); err != nil {
		t.Fatal(err)
	}
	if p, err := ring.Open(f, v); err != nil || string(p) != "p" {
		t.Fatalf("after the file changed: %v", err)
	}
	if ring.Active() != "k2" {
		t.Fatalf("active %s", ring.Active())
	}
	// A broken file keeps the last good keys.
	if err := os.WriteFile(file, []byte("keys: [oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ring.Reload(); err == nil {
		t.Fatal("a broken file loaded")
	}
	if _, err := ring.Open(f, v); err != nil {
		t.Fatalf("last good keys lost: %v", err)
	}
	// A file others can read is refused.
	loose := filepath.Join(dir, "loose.yaml")
	if err := WriteKeysFile(loose, &KeysFile{Keys: []FileKey{k1.FileKey()}}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	if _, err := LoadKeyring(Sources{File: loose}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("mode 0644: %v", err)
	}
	// Env names the active key; a read-only file adds old keys.
	os.Chmod(loose, 0o600)
	r2, err := LoadKeyring(Sources{Env: "k2:" + k2.FileKey().Key, ReadOnly: []string{loose, filepath.Join(dir, "missing.yaml")}})
	if err != nil || r2.Active() != "k2" || !r2.Has("k1") || r2.File() != "" {
		t.Fatalf("env + read-only: %v", err)
	}
	// One id, two keys: refused.
	if _, err := LoadKeyring(Sources{Env: "k1:" + k2.FileKey().Key, ReadOnly: []string{loose}}); err == nil {
		t.Fatal("k1 twice with different keys accepted")
	}
}

// One seal and one open of a 1 KiB value.
func BenchmarkSealOpen1KiB(b *testing.B) {
	k, _ := NewKey("k1")
	ring, _ := NewKeyring("k1", k)
	f := Field{Tenant: "acme", Table: "executions", Row: "01234567890123456789012345", Column: "input"}
	plain := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		v, err := ring.Seal(f, plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ring.Open(f, v); err != nil {
			b.Fatal(err)
		}
	}
}
