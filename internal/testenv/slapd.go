package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1" // {SSHA} is what slapd understands without extra modules
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// SlapdBinary is where Debian's slapd package installs the server.
const SlapdBinary = "/usr/sbin/slapd"

// slapdInstall is the hint given when slapd is missing.
const slapdInstall = "apt-get install slapd ldap-utils"

// The seeded directory. Tests refer to these names; they never change.
const (
	SlapdBaseDN    = "dc=example,dc=com"
	SlapdRootDN    = "cn=admin,dc=example,dc=com"
	SlapdRootPW    = "root-secret"
	SlapdPeople    = "ou=people,dc=example,dc=com"
	SlapdGroups    = "ou=groups,dc=example,dc=com"
	SlapdService   = "cn=kailash-svc,ou=services,dc=example,dc=com"
	SlapdServicePW = "svc-secret"
)

// SlapdUser is one seeded person.
type SlapdUser struct {
	UID, Password                   string
	GivenName, Surname, Mail, Title string
	Department, Clearance, Location string
	Groups                          []string // group cn under SlapdGroups
}

// DN is the user's entry.
func (u SlapdUser) DN() string { return "uid=" + u.UID + "," + SlapdPeople }

// SlapdUsers are the people the harness seeds: alice (engineering, admins),
// bob (engineering), carol (sales).
var SlapdUsers = []SlapdUser{
	{UID: "alice", Password: "alice-pw", GivenName: "Alice", Surname: "Liddell", Mail: "alice@example.com",
		Title: "Staff Engineer", Department: "engineering", Clearance: "secret", Location: "Zurich",
		Groups: []string{"engineering", "admins"}},
	{UID: "bob", Password: "bob-pw", GivenName: "Bob", Surname: "Builder", Mail: "bob@example.com",
		Title: "Engineer", Department: "engineering", Clearance: "internal", Location: "Berlin",
		Groups: []string{"engineering"}},
	{UID: "carol", Password: "carol-pw", GivenName: "Carol", Surname: "Danvers", Mail: "carol@example.com",
		Title: "Account Executive", Department: "sales", Clearance: "public", Location: "London",
		Groups: []string{"sales"}},
}

// GroupDN is the DN of a seeded group.
func GroupDN(cn string) string { return "cn=" + cn + "," + SlapdGroups }

// Slapd is a throwaway OpenLDAP server: a plain slapd process on 127.0.0.1
// with its own directory, config, schema and TLS certificates.
type Slapd struct {
	// URL is ldap://127.0.0.1:port (plain, StartTLS-capable); LDAPSURL is
	// ldaps://127.0.0.1:port.
	URL, LDAPSURL string
	// CAFile is the PEM file of the CA that signed the server certificate
	// (valid for 127.0.0.1 and localhost); CAPool holds the same CA.
	CAFile string
	CAPool *x509.CertPool
	// Dir is the temporary directory holding config, data and logs.
	Dir string

	t    testing.TB
	conf string

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// StartSlapd starts a seeded slapd for the test and stops it on cleanup. It
// skips (fails in CI) when slapd is not installed.
func StartSlapd(t testing.TB) *Slapd {
	t.Helper()
	if _, err := os.Stat(SlapdBinary); err != nil {
		Missing(t, "slapd", slapdInstall)
	}
	dir := t.TempDir()
	s := &Slapd{Dir: dir, t: t}
	if err := s.writeFiles(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	// The ports are picked free a moment before slapd binds them; retry a
	// couple of times if another process won the race.
	var err error
	for range 3 {
		s.URL = "ldap://" + FreeAddr(t)
		s.LDAPSURL = "ldaps://" + FreeAddr(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("slapd: %v", err)
	}
	t.Cleanup(s.Stop)
	if err := s.seed(); err != nil {
		t.Fatalf("slapd seed: %v", err)
	}
	return s
}

// Stop terminates slapd (SIGTERM, then SIGKILL after 5s) and waits for it.
// It is safe to call more than once.
func (s *Slapd) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends slapd at once, as a crash would: tests use it for "LDAP down".
func (s *Slapd) Kill() { s.signal(syscall.SIGKILL) }

// Restart starts slapd again on the same ports with the same data.
func (s *Slapd) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("slapd restart: %v", err)
	}
}

// Log returns what slapd wrote so far (for failure messages).
func (s *Slapd) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Dial connects to the plain listener and binds as the root DN.
func (s *Slapd) Dial() (*ldap.Conn, error) {
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(5 * time.Second)
	if err := c.Bind(SlapdRootDN, SlapdRootPW); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s *Slapd) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (s *Slapd) start() error {
	var log bytes.Buffer
	// Any -d keeps slapd in the foreground (we own the process); level 0
	// prints only startup errors.
	cmd := exec.Command(SlapdBinary,
		"-d", "0", "-f", s.conf,
		"-h", s.URL+"/ "+s.LDAPSURL+"/",
	)
	cmd.Stdout = &log
	cmd.Stderr = &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, &log
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("slapd exited: %s", strings.TrimSpace(log.String()))
		default:
		}
		c, err := s.Dial()
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("slapd not ready after 10s: %v; log: %s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kailashSchema adds what the standard schemas lack: department and
// clearance, on an auxiliary class. OIDs are under IANA's documentation
// enterprise number 32473.
const kailashSchema = `attributetype ( 1.3.6.1.4.1.32473.1.1.1 NAME 'department'
	DESC 'Kailash test schema: department name'
	EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.1.1.2 NAME 'clearance'
	DESC 'Kailash test schema: security clearance'
	EQUALITY caseIgnoreMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{64} SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'kailashPerson'
	DESC 'Kailash test schema: enterprise attributes'
	SUP top AUXILIARY MAY ( department $ clearance ) )
`

var slapdConf = template.Must(template.New("slapd.conf").Parse(`# generated by internal/testenv
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {{.Dir}}/kailash.schema

pidfile  {{.Dir}}/slapd.pid
argsfile {{.Dir}}/slapd.args

modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof

TLSCACertificateFile  {{.Dir}}/ca.pem
TLSCertificateFile    {{.Dir}}/server.pem
TLSCertificateKeyFile {{.Dir}}/server.key

database mdb
maxsize  67108864
suffix   "{{.Base}}"
rootdn   "{{.RootDN}}"
rootpw   {{.RootPW}}
directory {{.Dir}}/data
index objectClass eq
index uid eq

overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE

access to attrs=userPassword
	by self write
	by anonymous auth
	by * none
access to *
	by users read
	by anonymous auth
`))

func (s *Slapd) writeFiles() error {
	if err := os.Mkdir(filepath.Join(s.Dir, "data"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "kailash.schema"), []byte(kailashSchema), 0o600); err != nil {
		return err
	}
	if err := s.writeCerts(); err != nil {
		return err
	}
	var conf bytes.Buffer
	if err := slapdConf.Execute(&conf, map[string]string{
		"Dir": s.Dir, "Base": SlapdBaseDN, "RootDN": SlapdRootDN, "RootPW": SlapdRootPW,
	}); err != nil {
		return err
	}
	s.conf = filepath.Join(s.Dir, "slapd.conf")
	return os.WriteFile(s.conf, conf.Bytes(), 0o600)
}

// writeCerts generates a CA and a server certificate for 127.0.0.1/localhost.
func (s *Slapd) writeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kailash test LDAP CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	s.CAFile = filepath.Join(s.Dir, "ca.pem")
	s.CAPool = x509.NewCertPool()
	s.CAPool.AddCert(ca)
	files := map[string][]byte{
		"ca.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// TLSConfig trusts the harness CA.
func (s *Slapd) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.CAPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// SSHA hashes a password the way slapd's {SSHA} scheme expects.
func SSHA(password string) string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...))
}

// seed adds the entries through the protocol, so the memberof overlay sees
// the groups and maintains memberOf on the people.
func (s *Slapd) seed() error {
	c, err := s.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	add := func(dn string, attrs map[string][]string) error {
		r := ldap.NewAddRequest(dn, nil)
		for _, k := range sortedKeys(attrs) {
			r.Attribute(k, attrs[k])
		}
		if err := c.Add(r); err != nil {
			return fmt.Errorf("add %s: %w", dn, err)
		}
		return nil
	}
	entries := []struct {
		dn    string
		attrs map[string][]string
	}{
		{SlapdBaseDN, map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"example"}, "o": {"Example"}}},
		{SlapdPeople, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}}},
		{SlapdGroups, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"groups"}}},
		{"ou=services," + SlapdBaseDN, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"services"}}},
		{SlapdService, map[string][]string{
			"objectClass": {"organizationalRole", "simpleSecurityObject"}, "cn": {"kailash-svc"},
			"userPassword": {SSHA(SlapdServicePW)},
		}},
	}
	for _, e := range entries {
		if err := add(e.dn, e.attrs); err != nil {
			return err
		}
	}
	members := map[string][]string{}
	for _, u := range SlapdUsers {
		if err := add(u.DN(), map[string][]string{
			"objectClass": {"inetOrgPerson", "kailashPerson"},
			"uid":         {u.UID}, "cn": {u.GivenName + " " + u.Surname},
			"givenName": {u.GivenName}, "sn": {u.Surname}, "mail": {u.Mail}, "title": {u.Title},
			"department": {u.Department}, "clearance": {u.Clearance}, "l": {u.Location},
			"userPassword": {SSHA(u.Password)},
		}); err != nil {
			return err
		}
		for _, g := range u.Groups {
			members[g] = append(members[g], u.DN())
		}
	}
	for _, g := range sortedKeys(members) {
		if err := add(GroupDN(g), map[string][]string{
			"objectClass": {"groupOfNames"}, "cn": {g}, "member": members[g],
		}); err != nil {
			return err
		}
	}
	// The overlay must have done its job, or every group test would lie.
	res, err := c.Search(ldap.NewSearchRequest(SlapdUsers[0].DN(), ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"memberOf"}, nil))
	if err != nil {
		return err
	}
	if len(res.Entries) != 1 || len(res.Entries[0].GetAttributeValues("memberOf")) == 0 {
		return errors.New("memberof overlay did not set memberOf on alice")
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
