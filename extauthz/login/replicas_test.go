package login

// Two authz replicas sharing one Redis (sessions.redis): TOTP enrolment and
// SAML logins started on one replica complete on the other. Real
// redis-server and slapd, the test plays the SAML IdP with a key of its own.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/samltest"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

const (
	replicaIdPEntity = "https://idp.example.com/metadata"
	replicaIdPSSO    = "https://idp.example.com/sso"
	replicaSPEntity  = "https://acme.localhost/auth/saml/metadata"
	replicaACSURL    = "https://acme.localhost/auth/saml/acs"
	replicaTOTPKey   = "KAILASH_TEST_REPLICAS_TOTP_KEY"
)

// replicaClock is the replicas' clock: real time plus an offset the test
// moves to reach the next TOTP step.
type replicaClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *replicaClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *replicaClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// replicas is one Redis, one directory, one IdP and two authz servers.
type replicas struct {
	server *testenv.Redis
	redis  *redis.Client
	idp    *samltest.IdP
	clock  *replicaClock
	a, b   *replica
}

type replica struct {
	name string
	srv  *Service
	mux  *http.ServeMux
}

func startReplicas(t *testing.T) *replicas {
	t.Helper()
	rd := testenv.StartRedis(t)
	sl := testenv.StartSlapd(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv(replicaTOTPKey, base64.StdEncoding.EncodeToString(key))
	t.Setenv("KAILASH_TEST_REPLICAS_LDAP_PW", testenv.SlapdServicePW)

	dir := t.TempDir()
	idp := samltest.NewIdP(t, replicaIdPEntity, replicaIdPSSO)
	keyFile, certFile := samltest.NewKeyPair(t, "kailash-sp").WriteFiles(t, dir, "sp")
	mdFile := idp.WriteMetadata(t, dir)

	clock := &replicaClock{}
	rs := &replicas{server: rd, idp: idp, clock: clock}
	for _, name := range []string{"A", "B"} {
		cfg := testConfig(t)
		cfg.Sessions.Redis = &config.Redis{Addr: config.MustHostPort(rd.Addr), Timeout: time.Second}
		cfg.Sessions.RecheckEvery = time.Second
		cfg.Sessions.TOTPKeyEnv = replicaTOTPKey
		acme := &cfg.Tenants[0]
		acme.LDAP = &config.LDAP{URL: config.MustURL(sl.URL), BindDN: testenv.SlapdService, BindPasswordEnv: "KAILASH_TEST_REPLICAS_LDAP_PW",
			UserBaseDN: testenv.SlapdPeople, UserFilter: "(uid=%s)",
			GroupRoles: map[string]string{testenv.GroupDN("admins"): "admin", testenv.GroupDN("engineering"): "data_scientist"}}
		acme.MFA = config.MFA{Roles: []string{"admin"}}
		acme.SAML = &config.SAML{EntityID: replicaSPEntity, ACSURL: config.MustURL(replicaACSURL), KeyFile: keyFile, CertFile: certFile,
			IDPMetadataFile: mdFile, GroupRoles: map[string]string{"Engineering": "data_scientist"}}
		srv, err := New(cfg, Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		mux := http.NewServeMux()
		srv.Routes(mux)
		r := &replica{name: name, srv: srv, mux: mux}
		if name == "A" {
			rs.a = r
		} else {
			rs.b = r
		}
	}
	rs.redis = redis.NewClient(&redis.Options{Addr: rd.Addr, DisableIdentity: true})
	t.Cleanup(func() { _ = rs.redis.Close() })
	return rs
}

// do serves one request on the replica, as Envoy would pass it on.
func (r *replica) do(req *http.Request) *http.Response {
	req.Header.Set(wire.HeaderTenant, "acme")
	rec := httptest.NewRecorder()
	r.mux.ServeHTTP(rec, req)
	return rec.Result()
}

type authResult struct {
	code int
	body map[string]string
	all  map[string]any // the whole JSON answer
	resp *http.Response
}

func (r *replica) post(t *testing.T, path string, body map[string]string) authResult {
	t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest("POST", path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp := r.do(req)
	raw, _ := io.ReadAll(resp.Body)
	out := authResult{code: resp.StatusCode, body: map[string]string{}, resp: resp}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	out.all = m
	for k, v := range m {
		if s, ok := v.(string); ok {
			out.body[k] = s
		}
	}
	return out
}

func (rs *replicas) code(t *testing.T, secret string) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, rs.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The keys of the test's Redis under prefix, with their TTLs.
func (rs *replicas) keys(t *testing.T, prefix string) map[string]time.Duration {
	t.Helper()
	ctx := context.Background()
	out := map[string]time.Duration{}
	for _, k := range rs.redis.Keys(ctx, prefix+"*").Val() {
		out[k] = rs.redis.PTTL(ctx, k).Val()
	}
	return out
}

func TestReplicasShareTOTPEnrolment(t *testing.T) {
	rs := startReplicas(t)
	alice := map[string]string{"username": "alice", "password": "alice-pw"}
	with := func(code string) map[string]string {
		return map[string]string{"username": "alice", "password": "alice-pw", "totp": code}
	}
	if r := rs.b.post(t, "/auth/login", alice); r.code != http.StatusForbidden || r.body["error"] != "mfa_enrollment_required" {
		t.Fatalf("admin before enrolment: %d %v", r.code, r.body)
	}

	// Enrol on A; the pending enrolment is in Redis, sealed, with a TTL.
	e := rs.a.post(t, "/auth/totp/enroll", alice)
	secret := e.body["secret"]
	if e.code != 200 || secret == "" || !strings.HasPrefix(e.body["otpauth_uri"], "otpauth://totp/") {
		t.Fatalf("enrol on A: %d %v", e.code, e.body)
	}
	const user = "acme/uid=alice,ou=people,dc=example,dc=com"
	pending := rs.keys(t, "kailash:mfa:")
	if ttl, ok := pending["kailash:mfa:pending:"+user]; len(pending) != 1 || !ok || ttl <= 0 || ttl > 15*time.Minute {
		t.Fatalf("after enrolment, keys %v", pending)
	}

	// B confirms it with the first code and logs alice in.
	first := rs.code(t, secret)
	r := rs.b.post(t, "/auth/login", with(first))
	if r.code != 200 || r.body["access_token"] == "" {
		t.Fatalf("first code on B: %d %v", r.code, r.body)
	}
	// The completed enrolment's recovery codes, shown this once.
	codes, _ := r.all["recovery_codes"].([]any)
	if len(codes) != 10 {
		t.Fatalf("recovery codes %v, want 10", r.all["recovery_codes"])
	}
	enrolled := rs.keys(t, "kailash:mfa:secret:")
	if ttl, ok := enrolled["kailash:mfa:secret:"+user]; len(enrolled) != 1 || !ok || ttl != -1 {
		t.Fatalf("after confirmation, keys %v (the enrolled secret has no TTL)", enrolled)
	}
	recoveryKey := "kailash:mfa:recovery:" + user
	if members := rs.redis.SMembers(context.Background(), recoveryKey).Val(); len(members) != 10 || slices.Contains(members, codes[0].(string)) {
		t.Fatalf("recovery codes in Redis %v: want 10 hashes, not the codes", members)
	}
	// A recovery code logs in once, on any replica, in place of a TOTP code.
	rec := map[string]string{"username": "alice", "password": "alice-pw", "recovery_code": strings.ToUpper(codes[0].(string))}
	if r := rs.a.post(t, "/auth/login", rec); r.code != 200 || r.body["access_token"] == "" || r.all["recovery_codes"] != nil {
		t.Fatalf("recovery code on A: %d %v", r.code, r.all)
	}
	if r := rs.b.post(t, "/auth/login", rec); r.code != http.StatusUnauthorized || r.body["error"] != "invalid_mfa_code" {
		t.Fatalf("the used recovery code on B: %d %v", r.code, r.body)
	}
	if n := rs.redis.SCard(context.Background(), recoveryKey).Val(); n != 9 {
		t.Errorf("%d recovery codes left, want 9", n)
	}
	raw := rs.redis.Get(context.Background(), "kailash:mfa:secret:"+user).Val()
	if strings.Contains(raw, secret) {
		t.Fatal("the TOTP secret is stored in clear")
	}

	// The code is spent for both replicas; the next step's code works on A,
	// which never saw the enrolment.
	if r := rs.a.post(t, "/auth/login", with(first)); r.code != http.StatusUnauthorized || r.body["error"] != "invalid_mfa_code" {
		t.Fatalf("the spent code on A: %d %v", r.code, r.body)
	}
	rs.clock.Add(30 * time.Second)
	if r := rs.a.post(t, "/auth/login", with(rs.code(t, secret))); r.code != 200 {
		t.Fatalf("next code on A: %d %v", r.code, r.body)
	}
	if r := rs.a.post(t, "/auth/login", alice); r.code != http.StatusUnauthorized || r.body["error"] != "mfa_required" {
		t.Fatalf("no code on A: %d %v", r.code, r.body)
	}

	// Re-enrolment on B needs a code; the old secret keeps working on A
	// until the new one is confirmed there, then stops.
	if r := rs.b.post(t, "/auth/totp/enroll", alice); r.code != http.StatusUnauthorized {
		t.Fatalf("re-enrolment without a code: %d %v", r.code, r.body)
	}
	rs.clock.Add(30 * time.Second)
	e2 := rs.b.post(t, "/auth/totp/enroll", with(rs.code(t, secret)))
	next := e2.body["secret"]
	if e2.code != 200 || next == "" || next == secret {
		t.Fatalf("re-enrolment on B: %d %v", e2.code, e2.body)
	}
	rs.clock.Add(30 * time.Second)
	if r := rs.a.post(t, "/auth/login", with(rs.code(t, secret))); r.code != 200 {
		t.Fatalf("old secret while re-enrolling: %d %v", r.code, r.body)
	}
	rs.clock.Add(30 * time.Second)
	if r := rs.a.post(t, "/auth/login", with(rs.code(t, next))); r.code != 200 {
		t.Fatalf("new secret's first code on A: %d %v", r.code, r.body)
	}
	rs.clock.Add(30 * time.Second)
	if r := rs.b.post(t, "/auth/login", with(rs.code(t, secret))); r.code != http.StatusUnauthorized {
		t.Fatalf("old secret after re-enrolment: %d %v", r.code, r.body)
	}
	if r := rs.b.post(t, "/auth/login", with(rs.code(t, next))); r.code != 200 {
		t.Fatalf("new secret on B: %d %v", r.code, r.body)
	}
	if k := rs.keys(t, "kailash:mfa:"); len(k) != 2 {
		t.Fatalf("keys after re-enrolment %v (the secret and the recovery codes)", k)
	}
	// The re-enrolment replaced the recovery codes: the old ones are void.
	if n := rs.redis.SCard(context.Background(), recoveryKey).Val(); n != 10 {
		t.Errorf("%d recovery codes after re-enrolment, want a fresh 10", n)
	}
	rec2 := map[string]string{"username": "alice", "password": "alice-pw", "recovery_code": codes[1].(string)}
	if r := rs.a.post(t, "/auth/login", rec2); r.code != http.StatusUnauthorized {
		t.Errorf("a recovery code of the replaced enrolment: %d %v", r.code, r.body)
	}
}

// Another spelling of the username that the directory resolves to the same
// entry (slapd matches uid case- and width-insensitively) shares alice's
// enrolment: it cannot enrol a second factor of its own with the password
// alone.
func TestTOTPEnrolmentKeyedByDirectoryEntry(t *testing.T) {
	rs := startReplicas(t)
	e := rs.a.post(t, "/auth/totp/enroll", map[string]string{"username": "alice", "password": "alice-pw"})
	if e.code != 200 {
		t.Fatalf("enrol: %d %v", e.code, e.body)
	}
	if r := rs.b.post(t, "/auth/login", map[string]string{"username": "alice", "password": "alice-pw", "totp": rs.code(t, e.body["secret"])}); r.code != 200 {
		t.Fatalf("confirm: %d %v", r.code, r.body)
	}
	for _, spelling := range []string{"ALICE", "ａｌｉｃｅ", "alİce"} {
		if r := rs.b.post(t, "/auth/totp/enroll", map[string]string{"username": spelling, "password": "alice-pw"}); r.code != http.StatusUnauthorized || r.body["error"] != "mfa_required" {
			t.Fatalf("enrolment as %q: %d %v", spelling, r.code, r.body)
		}
		if r := rs.b.post(t, "/auth/login", map[string]string{"username": spelling, "password": "alice-pw"}); r.code != http.StatusUnauthorized || r.body["error"] != "mfa_required" {
			t.Fatalf("login as %q without a code: %d %v", spelling, r.code, r.body)
		}
	}
}

// samlStart is GET /auth/saml/login on r: the AuthnRequest id (read from
// the redirect, as the IdP would) and the request cookie.
func (rs *replicas) samlStart(t *testing.T, r *replica) (string, *http.Cookie) {
	t.Helper()
	resp := r.do(httptest.NewRequest("GET", "/auth/saml/login?return_to=%2Fapp", nil))
	if resp.StatusCode != http.StatusFound {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("saml login on %s: %d %s", r.name, resp.StatusCode, b)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	authn := samltest.AuthnRequest(t, loc)
	for _, c := range resp.Cookies() {
		if c.Name == CookieSAMLRequest && c.Value == authn.ID {
			return authn.ID, c
		}
	}
	t.Fatalf("no request cookie for %s: %v", authn.ID, resp.Header.Values("Set-Cookie"))
	return "", nil
}

// samlPost posts a response to r's ACS with the request cookie.
func (rs *replicas) samlPost(r *replica, response string, cookie *http.Cookie) *http.Response {
	req := httptest.NewRequest("POST", replicaACSURL, strings.NewReader(samltest.PostForm(response, "/app").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	return r.do(req)
}

// samlResponse is the IdP's signed response for alice to requestID.
func (rs *replicas) samlResponse(t *testing.T, requestID, assertionID string) string {
	t.Helper()
	return rs.idp.ResponseXML(t, samltest.Response{
		AssertionID: assertionID, InResponseTo: requestID, IssueInstant: rs.clock.Now().UTC(),
		NameID: "alice@example.com", Audience: replicaSPEntity, Destination: replicaACSURL,
		Attributes: map[string][]string{
			"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": {"alice@example.com"},
			"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups":     {"Engineering"},
		},
	})
}

func sessionOf(resp *http.Response) string {
	for _, c := range resp.Cookies() {
		if c.Name == CookieSession {
			return c.Value
		}
	}
	return ""
}

func TestReplicasShareSAMLRequests(t *testing.T) {
	rs := startReplicas(t)
	ctx := context.Background()

	// Started on A, the request id waits in Redis with a TTL.
	id, cookie := rs.samlStart(t, rs.a)
	// (one sorted set per tenant, expiring with its last request)
	if k := rs.keys(t, "kailash:saml:req:"); len(k) != 1 || k["kailash:saml:req:acme"] <= 0 || k["kailash:saml:req:acme"] > samlRequestTTL {
		t.Fatalf("pending request keys %v", k)
	}
	if _, err := rs.redis.ZScore(ctx, "kailash:saml:req:acme", id).Result(); err != nil {
		t.Fatalf("the request id is not in acme's pending set: %v", err)
	}

	// The ACS on B accepts the response to it, and the session works on A.
	response := rs.samlResponse(t, id, "_a-1")
	resp := rs.samlPost(rs.b, response, cookie)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app" || sessionOf(resp) == "" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("ACS on B: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), b)
	}
	if idn, ours, err := rs.a.srv.VerifySession(ctx, sessionOf(resp), "acme"); !ours || err != nil || idn.Subject != "alice@example.com" || idn.Method != "saml" {
		t.Fatalf("B's SAML session on A: %+v %v %v", idn, ours, err)
	}
	if k := rs.keys(t, "kailash:saml:req:"); len(k) != 0 {
		t.Fatalf("the request id outlived its response: %v", k)
	}

	// Replayed on either replica, it is refused.
	for _, r := range []*replica{rs.a, rs.b} {
		if resp := rs.samlPost(r, response, cookie); resp.StatusCode != http.StatusUnauthorized || sessionOf(resp) != "" {
			t.Fatalf("replay on %s: %d", r.name, resp.StatusCode)
		}
	}

	// A pending id is consumed once: a second, fresh assertion answering
	// the same request is refused on the other replica (InResponseTo).
	id2, cookie2 := rs.samlStart(t, rs.b)
	if resp := rs.samlPost(rs.a, rs.samlResponse(t, id2, "_a-2"), cookie2); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("ACS on A for B's request: %d", resp.StatusCode)
	}
	if resp := rs.samlPost(rs.b, rs.samlResponse(t, id2, "_a-3"), cookie2); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a second response to one request: %d", resp.StatusCode)
	}

	// Concurrent posts of distinct assertions to one request, on both
	// replicas: exactly one session.
	id3, cookie3 := rs.samlStart(t, rs.a)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 8 {
		r := []*replica{rs.a, rs.b}[i%2]
		doc := rs.samlResponse(t, id3, "_c-"+string(rune('a'+i)))
		wg.Go(func() {
			if resp := rs.samlPost(r, doc, cookie3); resp.StatusCode == http.StatusSeeOther {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d concurrent responses to one request were accepted", won)
	}

	// Every key the logins left has the prefix and a TTL, except the
	// enrolled TOTP secrets (none here).
	for k, ttl := range rs.keys(t, "") {
		if !strings.HasPrefix(k, "kailash:") || ttl <= 0 {
			t.Errorf("key %q: TTL %s", k, ttl)
		}
	}
}

// With Redis down, a SAML login neither starts nor completes: 503, never a
// login without its InResponseTo check.
func TestSAMLRequestStoreDown(t *testing.T) {
	rs := startReplicas(t)
	id, cookie := rs.samlStart(t, rs.a)
	response := rs.samlResponse(t, id, "_d-1")
	rs.server.Stop()
	if resp := rs.samlPost(rs.b, response, cookie); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ACS with Redis down: %d", resp.StatusCode)
	}
	if resp := rs.a.do(httptest.NewRequest("GET", "/auth/saml/login?return_to=%2F", nil)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login with Redis down: %d", resp.StatusCode)
	}
	if r := rs.a.post(t, "/auth/totp/enroll", map[string]string{"username": "alice", "password": "alice-pw"}); r.code != http.StatusServiceUnavailable {
		t.Fatalf("enrolment with Redis down: %d %v", r.code, r.body)
	}
}

// A session token signed just after replica A rotated the shared key ring
// is recognised and verified on replica B, which has not synced yet: an
// unknown kid makes B's ring sync (at most once a second) before the token
// is judged another issuer's.
func TestReplicasRecogniseATokenSignedAfterRotation(t *testing.T) {
	rs := startReplicas(t)
	ctx := context.Background()
	bob := map[string]string{"username": "bob", "password": "bob-pw"}
	before := rs.a.post(t, "/auth/login", bob)
	if before.code != 200 {
		t.Fatalf("login on A: %d %v", before.code, before.body)
	}
	oldKID := rs.b.srv.ring.SignerKID()
	if err := rs.a.srv.ring.Rotate(); err != nil {
		t.Fatal(err)
	}
	after := rs.a.post(t, "/auth/login", bob)
	if after.code != 200 {
		t.Fatalf("login on A after rotating: %d %v", after.code, after.body)
	}
	if rs.b.srv.ring.SignerKID() != oldKID {
		t.Fatal("B synced on its own; the test needs it stale")
	}
	time.Sleep(1100 * time.Millisecond) // past B's last sync: the next unknown kid may sync
	for _, tok := range []string{before.body["access_token"], after.body["access_token"]} {
		idn, ours, err := rs.b.srv.VerifySession(ctx, tok, "acme")
		if !ours || err != nil || idn.Subject != "bob" {
			t.Fatalf("A's token on B: ours %v, %+v, %v", ours, idn, err)
		}
	}
}
