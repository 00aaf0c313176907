package testkit

import (
	"testing"

	"github.com/aviate-labs/agent-go/candid"
)

// CandidArgs encodes v as a Candid argument list (one value per argument), failing the test when
// it cannot.
func CandidArgs(t testing.TB, v ...any) []byte {
	t.Helper()
	b, err := candid.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
