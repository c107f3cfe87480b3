package config

import (
	"strings"
	"testing"
	"time"
)

func TestRunnerRetention(t *testing.T) {
	const y = "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4%s}\n" +
		"tenants:\n  - id: acme\n    domains: [acme.localhost]\n    jwt: {issuer: https://i.test, audiences: [k], jwks_url: https://i.test/jwks}\n"
	parse := func(runner string) (*Config, error) {
		return Parse("kailash.yaml", []byte(strings.Replace(y, "%s", runner, 1)))
	}

	c, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Runner.Retention; r.Enabled() || r.PurgeInterval() != DefaultRetentionInterval {
		t.Fatalf("unset retention: enabled %v, interval %s", r.Enabled(), r.PurgeInterval())
	}

	c, err = parse(", retention: {executions: 720h, audit: 8760h, interval: 10m}")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Runner.Retention; r.Executions != 720*time.Hour || r.Audit != 8760*time.Hour || r.PurgeInterval() != 10*time.Minute || !r.Enabled() {
		t.Fatalf("parsed %+v", r)
	}
	c, err = parse(", retention: {audit: 24h}")
	if err != nil || !c.Runner.Retention.Enabled() || c.Runner.Retention.Executions != 0 || c.Runner.Retention.PurgeInterval() != time.Hour {
		t.Fatalf("audit only: %v %+v", err, c)
	}

	for _, tc := range []struct{ runner, want string }{
		{", retention: {executions: -1h}", "runner.retention.executions: -1h0m0s is negative"},
		{", retention: {audit: -5m}", "runner.retention.audit: -5m0s is negative"},
		{", retention: {executions: 30s}", "runner.retention.executions: 30s is too short"},
		{", retention: {audit: 1s}", "runner.retention.audit: 1s is too short"},
		{", retention: {executions: 24h, interval: 10s}", "runner.retention.interval: 10s is too short"},
		{", retention: {executions: 24h, interval: -1m}", "runner.retention.interval: -1m0s is negative"},
		{", retention: {executions: 24h, keep: 1h}", "keep"},
		{", retention: {executions: forever}", "executions"},
	} {
		_, err := parse(tc.runner)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.runner, err, tc.want)
		}
	}

	// Every problem at once.
	_, err = parse(", retention: {executions: -1h, audit: 1s, interval: 1s}")
	for _, f := range []string{"runner.retention.executions", "runner.retention.audit", "runner.retention.interval"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("combined: %v lacks %s", err, f)
		}
	}
}
