package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// A mask policy that fails leaves the input and result out (fails closed);
// one that answers erases and upserts on /input and /result only.
func TestDecisionLogMaskPolicy(t *testing.T) {
	run := func(fn func(context.Context, map[string]any) (any, bool, error)) map[string]any {
		t.Helper()
		var out bytes.Buffer
		l, err := NewDecisionLogger(DecisionLogOptions{Console: &out, MaskPolicy: fn})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		l.Log(&DecisionEvent{DecisionID: "d1", Input: map[string]any{"user": "alice", "password": "pw", "n": map[string]any{"k": 1}}, Result: map[string]any{"allow": true}})
		cancel()
		<-done
		var ev map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &ev); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		return ev
	}
	ev := run(func(_ context.Context, doc map[string]any) (any, bool, error) {
		if doc["decision_id"] != "d1" {
			return nil, true, errors.New("no decision id in the mask input")
		}
		return []any{"/input/password", map[string]any{"op": "upsert", "path": "/input/user", "value": "***"}, "/labels/x", "/result/allow"}, true, nil
	})
	in := ev["input"].(map[string]any)
	if _, ok := in["password"]; ok || in["user"] != "***" || ev["result"].(map[string]any)["allow"] != nil {
		t.Errorf("masked event %v", ev)
	}
	if !strings.Contains(mustJSON(t, ev["erased"]), "/input/password") || !strings.Contains(mustJSON(t, ev["masked"]), "/input/user") {
		t.Errorf("erased %v masked %v", ev["erased"], ev["masked"])
	}
	ev = run(func(context.Context, map[string]any) (any, bool, error) { return nil, true, errors.New("boom") })
	if ev["input"] != nil || ev["result"] != nil || !strings.Contains(ev["error"].(string), "mask policy failed") {
		t.Errorf("failed mask policy: %v", ev)
	}
	ev = run(func(context.Context, map[string]any) (any, bool, error) { return nil, false, nil })
	if ev["input"].(map[string]any)["password"] != "pw" {
		t.Errorf("undefined mask policy changed the event: %v", ev)
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
