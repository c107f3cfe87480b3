package extauthz

import (
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The policy input kept in the shared explain records loses the request's
// credentials, as the decision log's does.
func TestSharedInputWithoutCredentials(t *testing.T) {
	v := ast.MustParseTerm(`{"attributes": {"request": {"http": {"headers": {"authorization": "Bearer secret-token", "cookie": "kailash_session=s3", "accept": "*/*"}}}}}`).Value
	got := string(sharedInput(v))
	if strings.Contains(got, "secret-token") || strings.Contains(got, "kailash_session") || !strings.Contains(got, `"accept"`) {
		t.Errorf("shared input %s", got)
	}
}
