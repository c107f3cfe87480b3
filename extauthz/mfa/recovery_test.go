package mfa

import (
	"context"
	"strings"
	"testing"
)

func TestRecoveryCodes(t *testing.T) {
	codes, hashes, err := NewRecoveryCodes("acme/alice")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 11 || c[5] != '-' || seen[c] || hashes[i] != RecoveryHash("acme/alice", c) || strings.Contains(hashes[i], c[:5]) {
			t.Fatalf("code %q hash %q", c, hashes[i])
		}
		seen[c] = true
	}
	if RecoveryHash("acme/alice", strings.ToUpper(strings.ReplaceAll(codes[0], "-", " "))) != hashes[0] {
		t.Error("case, spaces and dashes change the hash")
	}
	if RecoveryHash("acme/bob", codes[0]) == hashes[0] {
		t.Error("the hash does not depend on the user")
	}
	ctx := context.Background()
	m := NewMemoryRecoveryCodes()
	_ = m.Replace(ctx, "acme/alice", hashes)
	if ok, _ := m.Use(ctx, "acme/alice", hashes[0]); !ok {
		t.Fatal("first use refused")
	}
	if ok, _ := m.Use(ctx, "acme/alice", hashes[0]); ok {
		t.Fatal("second use accepted")
	}
	if ok, _ := m.Use(ctx, "acme/bob", hashes[1]); ok {
		t.Fatal("another user's code accepted")
	}
	if n, _ := m.Remaining(ctx, "acme/alice"); n != RecoveryCodeCount-1 {
		t.Errorf("remaining %d", n)
	}
	_ = m.Replace(ctx, "acme/alice", nil)
	if ok, _ := m.Use(ctx, "acme/alice", hashes[1]); ok {
		t.Fatal("a replaced code accepted")
	}
}
