package replica_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/replica"
)

// iiCanister is Internet Identity's canister id on mainnet; on the simulator any id signs.
var iiCanister = principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai")

// signInWithII returns what an Internet Identity login gives a dapp: a delegation from the user's
// canister-signature key (made by user) to a fresh session key.
func signInWithII(t *testing.T, user identity.Identity, targets ...principal.Principal) *protocol.DelegationIdentity {
	t.Helper()
	session := testkit.NewIdentity(t)
	d := protocol.Delegation{PubKey: session.PublicKey(), Expiration: time.Now().Add(30 * time.Minute)}
	if len(targets) > 0 {
		d.Targets = targets
	}
	sd, err := protocol.SignDelegation(user, d)
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewDelegationIdentity(user.PublicKey(), []protocol.SignedDelegation{sd}, session)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The replica verifies canister signatures against its own root key: calls of Internet Identity
// users execute as their principal; canister signatures of another network are refused.
func TestInternetIdentityCallers(t *testing.T) {
	for _, layout := range []struct {
		name string
		cfg  replica.Config
	}{{"subnet delegation", replica.Config{}}, {"root-signed", replica.Config{NoDelegation: true}}} {
		t.Run(layout.name, func(t *testing.T) {
			e := start(t, layout.cfg)
			user := e.r.CanisterSigner(iiCanister, []byte("user 10000 at https://app.example"))
			other, err := certauth.New(certauth.Options{Delegated: true})
			if err != nil {
				t.Fatal(err)
			}
			stranger := other.CanisterSigner(iiCanister, []byte("user 10000 at https://app.example"))
			whoami := testkit.CandidArgs(t)
			cases := []struct {
				name     string
				id       identity.Identity
				status   int
				contains string
			}{
				{"delegation from a canister signature", signInWithII(t, user), 200, ""},
				{"delegation for this canister", signInWithII(t, user, testCanisterID), 200, ""},
				{"request signed by the canister key", user, 200, ""},
				{"delegation for another canister", signInWithII(t, user, principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")), 400, "not one of the delegation targets"},
				{"canister signature of another network", signInWithII(t, stranger), 400, "Invalid delegation"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					body, rid, err := protocol.SignEnvelope(tc.id, protocol.SignRequest{
						Type: protocol.RequestCall, Canister: testCanisterID, Method: "whoami", Arg: whoami,
						IngressExpiry: time.Now().Add(3 * time.Minute), Nonce: nonce(t, 16),
					})
					if err != nil {
						t.Fatal(err)
					}
					code, resp := post(t, e.endpoint("v3", testCanisterID.String(), "call"), body)
					if code != tc.status || !strings.Contains(string(resp), tc.contains) {
						t.Fatalf("HTTP %d %q, want %d naming %q", code, resp, tc.status, tc.contains)
					}
					if code != 200 {
						return
					}
					var caller principal.Principal
					if err := candid.Unmarshal(certifiedReply(t, e, resp, rid[:]), []any{&caller}); err != nil {
						t.Fatal(err)
					}
					if !caller.Equal(user.Sender()) {
						t.Fatalf("the canister saw caller %s, want the Internet Identity user %s", caller, user.Sender())
					}
				})
			}
		})
	}
}

// agent-go signs with any identity; with a canister-signature key its calls and queries pass the
// replica's verification.
func TestAgentGoWithCanisterSignatureKey(t *testing.T) {
	e := start(t, replica.Config{})
	user := e.r.CanisterSigner(iiCanister, []byte("agent-go user"))
	a := e.agent(t, user)
	var caller principal.Principal
	if err := a.Call(testCanisterID, "whoami", []any{}, []any{&caller}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if !caller.Equal(user.Sender()) {
		t.Fatalf("update caller %s, want %s", caller, user.Sender())
	}
	if err := a.Query(testCanisterID, "whoami", []any{}, []any{&caller}); err != nil || !caller.Equal(user.Sender()) {
		t.Fatalf("query caller %s, %v", caller, err)
	}
}

// The TEST-ONLY hook signs as the Go form does, and only when test hooks are on.
func TestCanisterSignatureHook(t *testing.T) {
	payload := []byte("\x1Aic-request-auth-delegation payload")
	u := "/_/control/replica/canister-signature?canister=" + iiCanister.String() + "&seed=0102"
	off := start(t, replica.Config{})
	if code, _ := post(t, off.url+u, payload); code != 404 {
		t.Fatalf("hook without TestHooks: HTTP %d, want 404", code)
	}
	e := start(t, replica.Config{TestHooks: true})
	code, body := post(t, e.url+u, payload)
	if code != 200 {
		t.Fatalf("HTTP %d: %s", code, body)
	}
	var ans struct {
		PublicKey string `json:"public_key"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	pub, err1 := hex.DecodeString(ans.PublicKey)
	sig, err2 := hex.DecodeString(ans.Signature)
	if err1 != nil || err2 != nil {
		t.Fatalf("answer %s", body)
	}
	if !bytes.Equal(pub, e.r.CanisterSigner(iiCanister, []byte{1, 2}).PublicKey()) {
		t.Fatalf("public key %x is not CanisterSigner's", pub)
	}
	if err := protocol.VerifyCanisterSignature(e.r.RootKey(), pub, payload, sig); err != nil {
		t.Fatalf("hook signature: %v", err)
	}
	if code, _ := post(t, e.url+"/_/control/replica/canister-signature?canister=nope", payload); code != 400 {
		t.Fatalf("bad canister: HTTP %d, want 400", code)
	}
}
