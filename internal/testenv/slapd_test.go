package testenv

import (
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestSlapdSeedsDirectory(t *testing.T) {
	s := StartSlapd(t)
	c, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest(SlapdPeople, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(uid=alice)", []string{"department", "clearance", "memberOf"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 1 {
		t.Fatalf("want alice, got %d entries", len(res.Entries))
	}
	e := res.Entries[0]
	if got := e.GetAttributeValue("department"); got != "engineering" {
		t.Errorf("department = %q", got)
	}
	if got := e.GetAttributeValues("memberOf"); len(got) != 2 {
		t.Errorf("memberOf = %q, want engineering and admins", got)
	}
	// The user can bind with her password, over LDAPS too.
	tc, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(s.TLSConfig()))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.Bind(SlapdUsers[0].DN(), SlapdUsers[0].Password); err != nil {
		t.Fatalf("bind over ldaps: %v", err)
	}
	s.Kill()
	if c2, err := s.Dial(); err == nil {
		c2.Close()
		t.Fatal("dial after Kill succeeded")
	}
	s.Restart()
	c3, err := s.Dial()
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	c3.Close()
}
