package certificate_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// agentJSVector is protocol/testdata/upstream/agent-js-bls-verify-sample-cert.json: a mainnet
// certificate with a subnet delegation, recorded by agent-js (see the README there).
type agentJSVector struct {
	RootKey     string   `json:"root_key"`
	Certificate string   `json:"certificate"`
	InRange     []string `json:"in_range"`
	OutOfRange  []string `json:"out_of_range"`
	BLS         struct {
		PublicKey    string `json:"public_key"`
		Signature    string `json:"signature"`
		Message      string `json:"message"`
		WrongMessage string `json:"wrong_message"`
	} `json:"bls"`
}

func loadAgentJSVector(t testing.TB) agentJSVector {
	t.Helper()
	raw, err := os.ReadFile("../testdata/upstream/agent-js-bls-verify-sample-cert.json")
	if err != nil {
		t.Fatal(err)
	}
	var v agentJSVector
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMainnetCertificateWithDelegation(t *testing.T) {
	v := loadAgentJSVector(t)
	c, err := certificate.Decode(unhex(t, v.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	rootKey := unhex(t, v.RootKey)
	for _, id := range v.InRange {
		if err := c.Verify(rootKey, unhex(t, id)); err != nil {
			t.Errorf("canister %s: %v", id, err)
		}
	}
	for _, id := range v.OutOfRange {
		if err := c.Verify(rootKey, unhex(t, id)); !errors.Is(err, certificate.ErrDelegation) {
			t.Errorf("canister %s outside the ranges: %v", id, err)
		}
	}
	at, err := c.Time()
	if err != nil || at.Year() < 2021 || at.After(time.Now()) {
		t.Fatalf("time %v, %v", at, err)
	}
	status, st := c.Tree.Lookup([]byte("request_status"), unhex(t, "edad510eaaa08ed2acd4781324e6446269da6753ec17760f206bbe81c465ff52"), []byte("status"))
	if st != hashtree.Found || string(status) != "rejected" {
		t.Fatalf("request status %q, %s", status, st)
	}
	// A flipped bit anywhere in the signature is refused.
	sig := c.Signature
	for i := range sig {
		sig[i] ^= 1 << (i % 8)
		if err := c.Verify(rootKey, unhex(t, v.InRange[0])); err == nil {
			t.Fatalf("signature with byte %d changed verifies", i)
		}
		sig[i] ^= 1 << (i % 8)
	}
}

func TestBLSVector(t *testing.T) {
	v := loadAgentJSVector(t)
	pk, sig := unhex(t, v.BLS.PublicKey), unhex(t, v.BLS.Signature)
	if err := certificate.VerifyBLS(pk, sig, []byte(v.BLS.Message)); err != nil {
		t.Fatal(err)
	}
	if err := certificate.VerifyBLS(pk, sig, []byte(v.BLS.WrongMessage)); !errors.Is(err, certificate.ErrSignature) {
		t.Fatalf("wrong message: %v", err)
	}
}
