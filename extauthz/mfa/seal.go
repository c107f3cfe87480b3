package mfa

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/kailash-gw/kailash/internal/sealed"
)

// KeySize is the size of a Sealer key (AES-256).
const KeySize = 32

// sealVersion is the first byte of a sealed secret.
const sealVersion = 1

// sealHeader is version (1) + key id (4) + nonce (12).
const sealHeader = 1 + 4 + 12

// ErrWrongKey: a sealed secret was sealed with another key (or for
// another user): it cannot be opened.
var ErrWrongKey = errors.New("mfa: sealed secret does not open with this key")

// Sealer encrypts TOTP secrets at rest with AES-256-GCM. The user the
// secret belongs to is authenticated data: a ciphertext copied onto another
// user does not open. A sealed secret is
//
//	0x01 | key id (4 bytes: SHA-256 of the key) | nonce (12) | ciphertext+tag
//
// so that a secret sealed with another key is told apart from tampering.
type Sealer struct {
	aead cipher.AEAD
	id   [4]byte
}

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("mfa: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("mfa: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("mfa: %w", err)
	}
	s := &Sealer{aead: aead}
	sum := sha256.Sum256(key)
	copy(s.id[:], sum[:4])
	return s, nil
}

// ParseKey decodes a key given as base64 (standard or URL alphabet,
// padded or not) or as 64 hex digits; it must be 32 bytes. It is the data
// keys' parser (internal/sealed), so both kinds of key are written alike.
func ParseKey(s string) ([]byte, error) {
	b, err := sealed.ParseKey(s)
	if err != nil {
		return nil, fmt.Errorf("mfa: %w", err)
	}
	return b, nil
}

func sealAAD(user string) []byte { return []byte("kailash-totp-secret\x00" + user) }

// Seal encrypts secret, which belongs to user.
func (s *Sealer) Seal(user, secret string) ([]byte, error) {
	out := make([]byte, sealHeader, sealHeader+len(secret)+s.aead.Overhead())
	out[0] = sealVersion
	copy(out[1:5], s.id[:])
	if _, err := rand.Read(out[5:sealHeader]); err != nil {
		return nil, fmt.Errorf("mfa: %w", err)
	}
	return s.aead.Seal(out, out[5:sealHeader], []byte(secret), sealAAD(user)), nil
}

// Open decrypts a secret of user sealed by Seal.
func (s *Sealer) Open(user string, sealed []byte) (string, error) {
	if len(sealed) < sealHeader+s.aead.Overhead() || sealed[0] != sealVersion {
		return "", errors.New("mfa: sealed secret is malformed")
	}
	if [4]byte(sealed[1:5]) != s.id {
		return "", fmt.Errorf("%w (sealed with key %x, this is %x)", ErrWrongKey, sealed[1:5], s.id)
	}
	plain, err := s.aead.Open(nil, sealed[5:sealHeader], sealed[sealHeader:], sealAAD(user))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrWrongKey, err)
	}
	return string(plain), nil
}
