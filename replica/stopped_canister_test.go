package replica_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/icws/icws/replica"
)

// A stopped canister rejects queries and calls as the IC does (reject code 5, IC0508) until it is
// started again; the switch is reachable over HTTP only with the test hooks on.
func TestStoppedCanisterRejectsQueriesAndCalls(t *testing.T) {
	e := start(t, replica.Config{TestHooks: true})
	a := e.agent(t, nil)
	control := func(op string) int {
		t.Helper()
		resp, err := http.Post(e.url+"/_/control/replica/"+op+"?canister="+testCanisterID.Encode(), "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := control("stop"); code != http.StatusNoContent {
		t.Fatalf("stop: HTTP %d", code)
	}
	var out string
	for name, err := range map[string]error{
		"query": a.Query(testCanisterID, "greet", []any{"x"}, []any{&out}),
		"call":  a.Call(testCanisterID, "echo", []any{"x"}, []any{&out}),
	} {
		if err == nil || !strings.Contains(err.Error(), "IC0508") || !strings.Contains(err.Error(), "is stopped") {
			t.Errorf("%s of a stopped canister: %v, want a reject with IC0508", name, err)
		}
	}
	if code := control("start"); code != http.StatusNoContent {
		t.Fatalf("start: HTTP %d", code)
	}
	if err := a.Query(testCanisterID, "greet", []any{"x"}, []any{&out}); err != nil {
		t.Fatalf("query after start: %v", err)
	}
	e2 := start(t, replica.Config{})
	resp, err := http.Post(e2.url+"/_/control/replica/stop?canister="+testCanisterID.Encode(), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("stop switch reachable without TestHooks: HTTP %d", resp.StatusCode)
	}
}
