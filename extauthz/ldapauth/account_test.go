package ldapauth

import (
	"errors"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// OpenLDAP matches uid case- and width-insensitively: every spelling of
// alice is her one account, and her identity carries the name as stored.
func TestSpellingsResolveToOneAccount(t *testing.T) {
	s := testenv.StartSlapd(t)
	a := newAuth(t, config(s))
	ctx := testenv.Context(t)
	for _, spelling := range []string{"alice", "ALICE", "Alice", "ａｌｉｃｅ", "alİce"} {
		acct, err := a.Lookup(ctx, spelling)
		if err != nil {
			t.Fatalf("%q: %v", spelling, err)
		}
		if !acct.Found() || acct.DN != "uid=alice,ou=people,dc=example,dc=com" || acct.Username != "alice" {
			t.Fatalf("%q: account %+v", spelling, acct)
		}
		id, err := a.Authenticate(ctx, spelling, "alice-pw")
		if err != nil {
			t.Fatalf("%q: %v", spelling, err)
		}
		if id.Username != "alice" || id.DN != acct.DN {
			t.Fatalf("%q: identity %q %q, want alice", spelling, id.Username, id.DN)
		}
	}

	unknown, err := a.Lookup(ctx, "MALLORY")
	if err != nil || unknown.Found() || unknown.DN != "" || unknown.Username != "" {
		t.Fatalf("unknown: %+v %v", unknown, err)
	}
	_, err = a.Verify(ctx, unknown, "alice-pw")
	if !errors.Is(err, ErrInvalidCredentials) || Reason(err) != ReasonUnknownUser {
		t.Fatalf("verify unknown: %v (%s)", err, Reason(err))
	}
	if _, err := a.Lookup(ctx, "alice\x00"); !errors.Is(err, ErrInvalidCredentials) || Reason(err) != ReasonInvalidUsername {
		t.Fatalf("invalid username: %v (%s)", err, Reason(err))
	}
	acct, _ := a.Lookup(ctx, "ALICE")
	if _, err := a.Verify(ctx, acct, "wrong"); !errors.Is(err, ErrInvalidCredentials) || Reason(err) != ReasonWrongPassword {
		t.Fatalf("wrong password: %v (%s)", err, Reason(err))
	}
	if _, err := a.Verify(ctx, acct, ""); !errors.Is(err, ErrInvalidCredentials) || Reason(err) != ReasonEmptyPassword {
		t.Fatalf("empty password: %v (%s)", err, Reason(err))
	}
}

// The username attribute follows the filter (mail here), or is named.
func TestUsernameAttribute(t *testing.T) {
	s := testenv.StartSlapd(t)
	ctx := testenv.Context(t)

	byMail := config(s)
	byMail.UserFilter = "(&(objectClass=inetOrgPerson)(mail=%s))"
	id, err := newAuth(t, byMail).Authenticate(ctx, "ALICE@Example.COM", "alice-pw")
	if err != nil || id.Username != "alice@example.com" {
		t.Fatalf("by mail: %+v %v", id, err)
	}

	named := config(s)
	named.Attributes.Username = "uid"
	named.UserFilter = "(&(objectClass=inetOrgPerson)(mail=%s))"
	if id, err := newAuth(t, named).Authenticate(ctx, "alice@example.com", "alice-pw"); err != nil || id.Username != "alice" {
		t.Fatalf("named uid: %+v %v", id, err)
	}

	// An entry without the attribute has no name to give the session: the
	// login fails as a directory problem (503), never with the typed name.
	missing := config(s)
	missing.Attributes.Username = "employeeNumber"
	_, err = newAuth(t, missing).Authenticate(ctx, "alice", "alice-pw")
	if !errors.Is(err, ErrUnavailable) || Reason(err) != ReasonNoUsername {
		t.Fatalf("no username attribute: %v (%s)", err, Reason(err))
	}
	// ... and only after the password was checked.
	if _, err := newAuth(t, missing).Authenticate(ctx, "alice", "wrong"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("no username attribute, wrong password: %v", err)
	}
}

func TestFilterAttribute(t *testing.T) {
	for filter, want := range map[string]string{
		"(uid=%s)": "uid",
		"(&(objectClass=user)(sAMAccountName=%s))":                 "sAMAccountName",
		"(&(objectClass=inetOrgPerson)(!(pwdLocked=TRUE))(cn=%s))": "cn",
		"(userPrincipalName=%s)":                                   "userPrincipalName",
		"(uid=%s*)":                                                "uid", // substrings: the default
		"(cn~=%s)":                                                 "uid",
		"(cn:caseExactMatch:=%s)":                                  "uid",
		"(cn>=%s)":                                                 "uid",
	} {
		if got := filterAttribute(filter); got != want {
			t.Errorf("filterAttribute(%q) = %q, want %q", filter, got, want)
		}
	}
}

// Of several values of the username attribute, the one in the DN, else the
// least: the same name whichever value was typed.
func TestCanonicalNameOfSeveralValues(t *testing.T) {
	e := ldap.NewEntry("uid=asmith,ou=people,dc=example,dc=com", map[string][]string{"uid": {"alice", "ASmith", "al"}})
	if got := canonicalName(e, "UID"); got != "ASmith" {
		t.Errorf("in the DN: got %q", got)
	}
	e = ldap.NewEntry("cn=Alice Smith,ou=people,dc=example,dc=com", map[string][]string{"uid": {"alice", "al"}})
	if got := canonicalName(e, "uid"); got != "al" {
		t.Errorf("not in the DN: got %q", got)
	}
	e = ldap.NewEntry("cn=Alice Smith,ou=people,dc=example,dc=com", map[string][]string{"mail": {"a@example.com"}})
	if got := canonicalName(e, "uid"); got != "" {
		t.Errorf("none: got %q", got)
	}
}
