package envoyauth

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/wire"
)

// The rate-limit descriptors read ext_authz's dynamic metadata only: the
// user, and each role the caller holds as has_role.<role> = "<role>" (a
// string, the only kind Envoy's metadata action reads).
func TestMetadataHasRolePerRole(t *testing.T) {
	resp, allowed, err := MapDecision(true, testDecision())
	if err != nil || !allowed {
		t.Fatalf("allowed %v, err %v", allowed, err)
	}
	f := resp.GetDynamicMetadata().GetFields()
	if got := f["user"].GetStringValue(); got != "alice" {
		t.Errorf("user %q", got)
	}
	has := f[wire.MetadataHasRole].GetStructValue().GetFields()
	if len(has) != 2 || has["admin"].GetStringValue() != "admin" || has["business_user"].GetStringValue() != "business_user" {
		t.Errorf("has_role %v: want {admin: admin, business_user: business_user}", has)
	}
}

// A policy cannot put the keys the descriptors read into the metadata: for
// an anonymous caller they stay absent, for a known one ours win.
func TestMetadataPolicyCannotSetQuotaKeys(t *testing.T) {
	result := map[string]any{"allowed": true, "dynamic_metadata": map[string]any{
		"user": "mallory", "roles": []any{"admin"}, wire.MetadataHasRole: map[string]any{"admin": "admin"}, "note": "kept",
	}}
	anon := testDecision()
	anon.Identity = nil
	resp, _, err := MapDecision(result, anon)
	if err != nil {
		t.Fatal(err)
	}
	f := resp.GetDynamicMetadata().GetFields()
	for _, k := range []string{"user", "roles", wire.MetadataHasRole} {
		if v, ok := f[k]; ok {
			t.Errorf("anonymous: policy set %s = %v", k, v)
		}
	}
	if f["note"].GetStringValue() != "kept" {
		t.Errorf("the policy's other metadata was dropped: %v", f)
	}
	resp, _, err = MapDecision(result, testDecision())
	if err != nil {
		t.Fatal(err)
	}
	f = resp.GetDynamicMetadata().GetFields()
	if f["user"].GetStringValue() != "alice" {
		t.Errorf("user %v: ours must win", f["user"])
	}
	if has := f[wire.MetadataHasRole].GetStructValue().GetFields(); len(has) != 2 {
		t.Errorf("has_role %v", has)
	}
}
