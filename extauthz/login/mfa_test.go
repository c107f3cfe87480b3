package login

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/extauthz/mfa"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

type mfaServer struct {
	srv    *Service
	mux    *http.ServeMux
	mu     sync.Mutex
	events []mfa.Event // received by the webhook
}

func startMFAServer(t *testing.T, enrolment string) *mfaServer {
	t.Helper()
	sl := testenv.StartSlapd(t)
	t.Setenv("KAILASH_TEST_MFA_LDAP_PW", testenv.SlapdServicePW)
	ms := &mfaServer{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev mfa.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		ms.mu.Lock()
		ms.events = append(ms.events, ev)
		ms.mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	cfg := testConfig(t)
	cfg.Lockout = config.Lockout{MaxAddressFailures: 1000}
	acme := &cfg.Tenants[0]
	acme.LDAP = &config.LDAP{URL: config.MustURL(sl.URL), BindDN: testenv.SlapdService, BindPasswordEnv: "KAILASH_TEST_MFA_LDAP_PW",
		UserBaseDN: testenv.SlapdPeople, UserFilter: "(uid=%s)",
		GroupRoles: map[string]string{testenv.GroupDN("admins"): "admin", testenv.GroupDN("engineering"): "data_scientist"}}
	acme.MFA = config.MFA{Roles: []string{"admin"}, Enrolment: enrolment, AdminRoles: []string{"admin"}, NotifyURL: config.MustURL(hook.URL)}
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ms.srv, ms.mux = srv, http.NewServeMux()
	srv.Routes(ms.mux)
	return ms
}

func (ms *mfaServer) post(t *testing.T, tenant, path string, body any, bearerToken string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest("POST", path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(wire.HeaderTenant, tenant)
	if bearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+bearerToken)
	}
	rec := httptest.NewRecorder()
	ms.mux.ServeHTTP(rec, req)
	raw, _ := io.ReadAll(rec.Result().Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return rec.Code, m
}

// waitEvents waits for the webhook to have received the events named.
func (ms *mfaServer) waitEvents(t *testing.T, want ...string) []mfa.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ms.mu.Lock()
		got := append([]mfa.Event(nil), ms.events...)
		ms.mu.Unlock()
		if len(got) >= len(want) {
			for i, w := range want {
				if got[i].Event != w {
					t.Fatalf("webhook events %+v, want %v", got, want)
				}
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %+v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTOTPAdminEnrolment(t *testing.T) {
	ms := startMFAServer(t, config.EnrolmentAdmin)
	ctx := t.Context()
	alice := map[string]string{"username": "alice", "password": "alice-pw"}

	// Self-enrolment is refused, and the login says to ask an admin.
	if code, b := ms.post(t, "acme", "/auth/totp/enroll", alice, ""); code != 403 || b["error"] != "enrolment_code_required" {
		t.Fatalf("self-enrolment in admin mode: %d %v", code, b)
	}
	if code, b := ms.post(t, "acme", "/auth/login", alice, ""); code != 403 || b["error"] != "mfa_enrollment_required" {
		t.Fatalf("login before enrolment: %d %v", code, b)
	}

	// Only a session of the tenant holding an mfa admin role may issue codes.
	issue := func(id session.Identity) string {
		tok, err := ms.srv.sessions.Issue(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	admin := issue(session.Identity{Subject: "root", Tenant: "acme", Roles: []string{"admin"}, Method: "ldap"})
	user := issue(session.Identity{Subject: "bob", Tenant: "acme", Roles: []string{"data_scientist"}, Method: "ldap"})
	otherAdmin := issue(session.Identity{Subject: "root", Tenant: "globex", Roles: []string{"admin"}, Method: "ldap"})
	for _, c := range []struct {
		name, token string
		want        int
	}{{"no session", "", 401}, {"not an admin", user, 403}, {"another tenant's admin", otherAdmin, 401}} {
		if code, b := ms.post(t, "acme", "/auth/totp/provision", map[string]string{"username": "alice"}, c.token); code != c.want {
			t.Fatalf("%s: %d %v", c.name, code, b)
		}
	}
	if code, b := ms.post(t, "acme", "/auth/totp/provision", map[string]string{"username": "nobody"}, admin); code != 404 {
		t.Fatalf("unknown user: %d %v", code, b)
	}
	code, b := ms.post(t, "acme", "/auth/totp/provision", map[string]string{"username": "alice"}, admin)
	enrolCode, _ := b["enrolment_code"].(string)
	if code != 200 || enrolCode == "" {
		t.Fatalf("provision: %d %v", code, b)
	}

	// A wrong code is refused; the right one enrols once.
	if code, b := ms.post(t, "acme", "/auth/totp/enroll", map[string]string{"username": "alice", "password": "alice-pw", "enrolment_code": "AAAA-BBBB"}, ""); code != 401 || b["error"] != "invalid_enrolment_code" {
		t.Fatalf("wrong code: %d %v", code, b)
	}
	if code, b := ms.post(t, "acme", "/auth/totp/enroll", map[string]string{"username": "alice", "password": "wrong", "enrolment_code": enrolCode}, ""); code != 401 {
		t.Fatalf("the code without the password: %d %v", code, b)
	}
	code, b = ms.post(t, "acme", "/auth/totp/enroll", map[string]string{"username": "ALICE", "password": "alice-pw", "enrolment_code": enrolCode}, "")
	secret, _ := b["secret"].(string)
	if code != 200 || secret == "" {
		t.Fatalf("enrol with the code: %d %v", code, b)
	}
	if code, _ := ms.post(t, "acme", "/auth/totp/enroll", map[string]string{"username": "alice", "password": "alice-pw", "enrolment_code": enrolCode}, ""); code != 401 {
		t.Fatalf("the code reused: %d", code)
	}
	otp, _ := totp.GenerateCode(secret, time.Now())
	if code, b := ms.post(t, "acme", "/auth/login", map[string]string{"username": "alice", "password": "alice-pw", "totp": otp}, ""); code != 200 {
		t.Fatalf("login with the enrolled secret: %d %v", code, b)
	}
	evs := ms.waitEvents(t, mfa.EventCodeIssued, mfa.EventEnrolmentStarted, mfa.EventEnrolmentCompleted)
	if evs[0].By != "root" || evs[0].Tenant != "acme" || evs[1].Via != "code" || evs[2].Account == "" {
		t.Fatalf("events: %+v", evs)
	}
	for _, ev := range evs {
		raw, _ := json.Marshal(ev)
		if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(enrolCode)) {
			t.Fatalf("an event carries a secret: %s", raw)
		}
	}
	if n := testutil.ToFloat64(ms.srv.mfaEvents.WithLabelValues(mfa.EventEnrolmentStarted, "code")); n != 1 {
		t.Fatalf("enrolment_started{via=code} = %v", n)
	}
}

func TestTOTPSelfEnrolmentNotifies(t *testing.T) {
	ms := startMFAServer(t, config.EnrolmentSelf)
	code, b := ms.post(t, "acme", "/auth/totp/enroll", map[string]string{"username": "alice", "password": "alice-pw"}, "")
	if code != 200 || b["secret"] == "" {
		t.Fatalf("self-enrolment: %d %v", code, b)
	}
	evs := ms.waitEvents(t, mfa.EventEnrolmentStarted)
	if evs[0].Via != "self" || evs[0].User != "alice" || evs[0].Tenant != "acme" {
		t.Fatalf("event: %+v", evs[0])
	}
	if n := testutil.ToFloat64(ms.srv.mfaEvents.WithLabelValues(mfa.EventEnrolmentStarted, "self")); n != 1 {
		t.Fatalf("enrolment_started{via=self} = %v", n)
	}
}
