// Package sealed encrypts single database fields at rest: AES-256-GCM with a
// random 96-bit nonce, the key id stored with each value (so keys can be
// rotated) and the field's place (tenant, table, row, column) as associated
// data, so a ciphertext copied onto another row, column or tenant does not
// open.
//
// A sealed value is text, for TEXT columns:
//
//	"kse:" + base64url(version 0x01 | len(key id) | key id | nonce (12) | ciphertext+tag)
//
// A value without the prefix is plaintext written before encryption was on;
// readers pass it through and a rotation seals it.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// KeySize is the size of a data key (AES-256).
const KeySize = 32

// Prefix starts every sealed value.
const Prefix = "kse:"

const (
	version   = 1
	nonceSize = 12
)

var (
	// ErrUnknownKey: the value was sealed with a key id the keyring lacks.
	ErrUnknownKey = errors.New("sealed with a key that is not in the keyring")
	// ErrAuth: the value does not authenticate: tampered with, moved from
	// another row, column or tenant, or sealed with other key material under
	// the same id.
	ErrAuth = errors.New("authentication failed (the value was tampered with, moved from another row, column or tenant, or the key under this id is not the one it was sealed with)")
	// ErrMalformed: the value has the sealed prefix but not the format.
	ErrMalformed = errors.New("malformed sealed value")
	// ErrNoKeys: a sealed value was read but no data keys are configured.
	ErrNoKeys = errors.New("no data keys are configured (KAILASH_DATA_KEYS or runner.encryption.keys_file)")
)

// Field is the place of a value; it is bound to the ciphertext.
type Field struct {
	Tenant, Table, Row, Column string
}

func (f Field) String() string {
	return fmt.Sprintf("%s.%s of row %q (tenant %s)", f.Table, f.Column, f.Row, f.Tenant)
}

// aad is the associated data: a label and each part length-prefixed, so no
// two places share an encoding.
func (f Field) aad() []byte {
	parts := []string{"kailash-field-v1", f.Tenant, f.Table, f.Row, f.Column}
	n := 0
	for _, p := range parts {
		n += 4 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// FieldError is a value that could not be opened; it names the place, never
// the value.
type FieldError struct {
	Field Field
	KeyID string // "" when not known
	Err   error
}

func (e *FieldError) Error() string {
	if e.KeyID != "" {
		return fmt.Sprintf("%s: key id %q: %v", e.Field, e.KeyID, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidKeyID reports whether id may name a key: letters, digits, '_', '.'
// and '-', at most 64, starting with a letter or digit.
func ValidKeyID(id string) bool { return keyIDRe.MatchString(id) }

// Key is one data key.
type Key struct {
	ID     string
	Secret []byte
}

// ParseKey decodes a key given as base64 (standard or URL alphabet, padded
// or not) or as 64 hex digits; it must be 32 bytes. Errors never quote it.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("key is %d bytes, want %d (e.g. openssl rand -base64 32)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("key is neither base64 nor hex (e.g. openssl rand -base64 32)")
}

// NewKey generates a random key.
func NewKey(id string) (Key, error) {
	if !ValidKeyID(id) {
		return Key{}, fmt.Errorf("key id %q: want letters, digits, '_', '.' and '-' (at most 64)", id)
	}
	k := Key{ID: id, Secret: make([]byte, KeySize)}
	if _, err := rand.Read(k.Secret); err != nil {
		return Key{}, err
	}
	return k, nil
}

// FileKey is k as a keys file lists it (the key in base64).
func (k Key) FileKey() FileKey {
	return FileKey{ID: k.ID, Key: base64.StdEncoding.EncodeToString(k.Secret)}
}

// ring is an immutable set of keys, one of them active.
type ring struct {
	active string
	aeads  map[string]cipher.AEAD
	ids    []string // sorted
	raw    map[string][]byte
}

func newRing(active string, keys []Key) (*ring, error) {
	r := &ring{active: active, aeads: map[string]cipher.AEAD{}, raw: map[string][]byte{}}
	for _, k := range keys {
		if !ValidKeyID(k.ID) {
			return nil, fmt.Errorf("key id %q: want letters, digits, '_', '.' and '-' (at most 64)", k.ID)
		}
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("key %q: %d bytes, want %d", k.ID, len(k.Secret), KeySize)
		}
		if prev, dup := r.raw[k.ID]; dup {
			if string(prev) != string(k.Secret) {
				return nil, fmt.Errorf("key id %q is given twice with different keys", k.ID)
			}
			continue
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		r.aeads[k.ID], r.raw[k.ID] = aead, slices.Clone(k.Secret)
		r.ids = append(r.ids, k.ID)
	}
	slices.Sort(r.ids)
	if len(r.ids) == 0 {
		return nil, errors.New("no keys")
	}
	if _, ok := r.aeads[active]; !ok {
		return nil, fmt.Errorf("active key %q is not among the keys (%s)", active, strings.Join(r.ids, ", "))
	}
	return r, nil
}

func (r *ring) seal(kid string, f Field, plain []byte) (string, error) {
	aead, ok := r.aeads[kid]
	if !ok {
		return "", fmt.Errorf("%s: key id %q: %w (known: %s)", f, kid, ErrUnknownKey, strings.Join(r.ids, ", "))
	}
	hdr := 2 + len(kid)
	b := make([]byte, hdr+nonceSize, hdr+nonceSize+len(plain)+aead.Overhead())
	b[0], b[1] = version, byte(len(kid))
	copy(b[2:], kid)
	nonce := b[hdr : hdr+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	b = aead.Seal(b, nonce, plain, f.aad())
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// decode splits a sealed value into key id, nonce and ciphertext.
func decode(v string) (kid string, nonce, ct []byte, err error) {
	s, ok := strings.CutPrefix(v, Prefix)
	if !ok {
		return "", nil, nil, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || b[0] != version {
		return "", nil, nil, ErrMalformed
	}
	n := int(b[1])
	if len(b) < 2+n+nonceSize+16 {
		return "", nil, nil, ErrMalformed
	}
	return string(b[2 : 2+n]), b[2+n : 2+n+nonceSize], b[2+n+nonceSize:], nil
}

func (r *ring) open(f Field, v string) ([]byte, error) {
	kid, nonce, ct, err := decode(v)
	if err != nil {
		return nil, &FieldError{Field: f, Err: err}
	}
	aead, ok := r.aeads[kid]
	if !ok {
		return nil, &FieldError{Field: f, KeyID: kid, Err: fmt.Errorf("%w (known: %s)", ErrUnknownKey, strings.Join(r.ids, ", "))}
	}
	plain, err := aead.Open(nil, nonce, ct, f.aad())
	if err != nil {
		return nil, &FieldError{Field: f, KeyID: kid, Err: ErrAuth}
	}
	return plain, nil
}

// IsSealed reports whether v is a sealed value (by its prefix).
func IsSealed(v string) bool { return strings.HasPrefix(v, Prefix) }

// KeyID is the key id a sealed value names; ok is false for plaintext or a
// malformed value.
func KeyID(v string) (kid string, ok bool) {
	kid, _, _, err := decode(v)
	return kid, err == nil
}
