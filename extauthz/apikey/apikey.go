// Package apikey is the tenants' API keys and service accounts: machine
// callers present "Authorization: ApiKey kl_<id>_<secret>" (or a tenant's
// configured header) and are the service account the key names, with its
// roles. Keys are kept hashed (SHA-256 of the secret; the secret is shown
// once, at creation), may expire and may be bound to networks (CIDRs).
//
// In single-node mode the keys live in a file (authz.api_keys_file) that
// `kailash apikey create|list|revoke|rotate` edits and authz follows.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
)

// Prefix starts every key: a scanner (GitHub's, a DLP rule) can find one.
const Prefix = "kl_"

// Key is one API key as stored: never the secret.
type Key struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	// Name is the service account ("ci-deployer"): the identity's subject
	// is "sa:<name>".
	Name    string    `json:"name"`
	Roles   []string  `json:"roles,omitempty"`
	Hash    string    `json:"hash"` // hex SHA-256 of the secret
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	// CIDRs, when set, are the networks the key may be used from (the
	// client address Envoy decided, trusted proxies applied).
	CIDRs   []string  `json:"cidrs,omitempty"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// File is the keys file.
type File struct {
	Keys []Key `json:"keys"`
}

// New makes a key for tenant: the stored Key and the secret key string to
// hand over (shown once).
func New(tenant, name string, roles, cidrs []string, ttl time.Duration, now time.Time) (Key, string, error) {
	if tenant == "" || name == "" {
		return Key{}, "", errors.New("apikey: tenant and name are required")
	}
	for _, c := range cidrs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return Key{}, "", fmt.Errorf("apikey: cidr %q: %v", c, err)
		}
	}
	id, err := random(8)
	if err != nil {
		return Key{}, "", err
	}
	secret, err := random(32)
	if err != nil {
		return Key{}, "", err
	}
	k := Key{ID: id, Tenant: tenant, Name: name, Roles: roles, Hash: hash(secret), Created: now.UTC(), CIDRs: cidrs}
	if ttl > 0 {
		k.Expires = now.Add(ttl).UTC()
	}
	return k, Prefix + id + "_" + secret, nil
}

// Rotate gives k a new secret (same id, tenant, roles): the old one stops
// working as soon as the file is read.
func Rotate(k Key) (Key, string, error) {
	secret, err := random(32)
	if err != nil {
		return Key{}, "", err
	}
	k.Hash = hash(secret)
	return k, Prefix + k.ID + "_" + secret, nil
}

func random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

func hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ReadFile reads a keys file (a missing file is no keys).
func ReadFile(path string) (File, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return File{}, nil
	}
	if err != nil {
		return File{}, err
	}
	return ParseFile(path, b)
}

// ParseFile decodes the content b of the keys file path.
func ParseFile(path string, b []byte) (File, error) {
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %v", path, err)
	}
	return f, nil
}

// WriteFile writes f atomically, readable by its owner only.
func WriteFile(path string, f File) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".apikeys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// UpdateFile applies change to the keys file under an exclusive lock (a
// ".lock" file beside it, flock(2)) and writes the result atomically, so
// that the admin API and `kailash apikey`, in whichever processes, do not
// lose each other's writes.
func UpdateFile(path string, change func(*File) error) error {
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("%s: lock: %w", path, err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too
	f, err := ReadFile(path)
	if err != nil {
		return err
	}
	if err := change(&f); err != nil {
		return err
	}
	return WriteFile(path, f)
}

// Upsert puts k in f: in place of the key with its id, else appended.
func (f *File) Upsert(k Key) {
	if i := slices.IndexFunc(f.Keys, func(o Key) bool { return o.ID == k.ID }); i >= 0 {
		f.Keys[i] = k
		return
	}
	f.Keys = append(f.Keys, k)
}

// Store answers key checks from a set of keys; Replace swaps them whole.
// Safe for concurrent use.
type Store struct {
	mu   sync.RWMutex
	byID map[string]Key

	lastMu   sync.Mutex
	lastUsed map[string]time.Time
}

// NewStore is an empty store.
func NewStore() *Store { return &Store{byID: map[string]Key{}, lastUsed: map[string]time.Time{}} }

// Replace puts f's keys in force.
func (s *Store) Replace(f File) {
	m := make(map[string]Key, len(f.Keys))
	for _, k := range f.Keys {
		m[k.ID] = k
	}
	s.mu.Lock()
	s.byID = m
	s.mu.Unlock()
}

// Len is the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byID)
}

// LastUsed is when key id last authenticated a request here.
func (s *Store) LastUsed(id string) time.Time {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	return s.lastUsed[id]
}

// LastUsedAll is every key's last use here.
func (s *Store) LastUsedAll() map[string]time.Time {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	out := make(map[string]time.Time, len(s.lastUsed))
	for k, v := range s.lastUsed {
		out[k] = v
	}
	return out
}

// Verify checks a presented key for tenant from client (the trusted client
// address; invalid: no CIDR matches). Errors are *envoyauth.AuthError with
// a reason naming the check that failed.
func (s *Store) Verify(presented, tenant string, client netip.Addr, now time.Time) (*envoyauth.Identity, error) {
	fail := func(r envoyauth.Reason, detail string) (*envoyauth.Identity, error) {
		return nil, &envoyauth.AuthError{Reason: r, Detail: detail}
	}
	rest, ok := strings.CutPrefix(presented, Prefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || id == "" || secret == "" {
		return fail(envoyauth.ReasonMalformed, "an API key is kl_<id>_<secret>")
	}
	s.mu.RLock()
	k, found := s.byID[id]
	s.mu.RUnlock()
	// The hash is compared in constant time, and computed even for an
	// unknown id, so timing does not tell ids apart.
	got := hash(secret)
	want := k.Hash
	if !found {
		want = strings.Repeat("0", len(got))
	}
	match := subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
	switch {
	case !found || !match:
		return fail(ReasonUnknownKey, "the API key is not known")
	case !k.Revoked.IsZero():
		return fail(ReasonRevokedKey, "the API key was revoked")
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return fail(envoyauth.ReasonExpired, "the API key expired at "+k.Expires.Format(time.RFC3339))
	case k.Tenant != tenant:
		return fail(envoyauth.ReasonWrongTenant, "the API key belongs to another tenant")
	}
	if len(k.CIDRs) > 0 {
		allowed := false
		for _, c := range k.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && client.IsValid() && p.Contains(client.Unmap()) {
				allowed = true
				break
			}
		}
		if !allowed {
			return fail(ReasonNetwork, "the API key may not be used from "+client.String())
		}
	}
	s.lastMu.Lock()
	s.lastUsed[id] = now
	s.lastMu.Unlock()
	return &envoyauth.Identity{Subject: "sa:" + k.Name, Tenant: k.Tenant, Roles: slices.Clone(k.Roles), Method: "apikey",
		Attributes: map[string]any{"api_key_id": k.ID}, ExpiresAt: k.Expires}, nil
}

// Reasons of refused keys besides envoyauth's.
const (
	ReasonUnknownKey envoyauth.Reason = "unknown_api_key"
	ReasonRevokedKey envoyauth.Reason = "revoked_api_key"
	ReasonNetwork    envoyauth.Reason = "api_key_network"
)
