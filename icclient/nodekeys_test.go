package icclient

import (
	"errors"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol/certificate"
)

// nodeKeysOf reads the node keys of a read_state [subnet] certificate, under the subnet id the
// certificate's layout implies, and checks a root-signed subnet's ranges in either encoding.
func TestNodeKeysOf(t *testing.T) {
	root, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	delegated, err := certauth.New(certauth.Options{Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	other := principal.MustDecode("bd3sg-teaaa-aaaaa-qaaba-cai")
	withSubnet := func(a *certauth.Authority, edit func(certauth.Tree)) *certificate.Certificate {
		t.Helper()
		tr := certauth.Tree{"time": certauth.TimeLeaf(time.Now())}
		a.AddSubnet(tr)
		if edit != nil {
			edit(tr)
		}
		raw, err := a.Certify(tr.Node())
		if err != nil {
			t.Fatal(err)
		}
		c, err := certificate.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	only := func(p principal.Principal) []byte {
		return certificate.EncodeRanges([]certificate.Range{{Low: p.Raw, High: p.Raw}})
	}
	// Keep only agent-js's subnet id, with other's range in the given encoding.
	narrow := func(sharded bool) func(certauth.Tree) {
		return func(tr certauth.Tree) {
			sid := principal.NewSelfAuthenticating(root.RootKey())
			subnets := tr.Sub([]byte("subnet"))
			for k := range subnets {
				if k != string(sid.Raw) {
					delete(subnets, k)
				}
			}
			if sharded {
				delete(subnets.Sub(sid.Raw), "canister_ranges")
				tr.Sub([]byte("canister_ranges")).Sub(sid.Raw)[string(other.Raw)] = only(other)
			} else {
				subnets.Sub(sid.Raw)["canister_ranges"] = only(other)
			}
		}
	}
	tests := []struct {
		name     string
		cert     *certificate.Certificate
		rootKey  []byte
		canister principal.Principal
		ok       bool
	}{
		{"root-signed", withSubnet(root, nil), root.RootKey(), testCanisterID, true},
		{"delegated", withSubnet(delegated, nil), delegated.RootKey(), testCanisterID, true},
		{"canister in sharded ranges", withSubnet(root, narrow(true)), root.RootKey(), other, true},
		{"canister outside sharded ranges", withSubnet(root, narrow(true)), root.RootKey(), testCanisterID, false},
		{"canister outside ranges", withSubnet(root, narrow(false)), root.RootKey(), testCanisterID, false},
		{"no subnet", withSubnet(root, func(tr certauth.Tree) { delete(tr, "subnet") }), root.RootKey(), testCanisterID, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nk, err := nodeKeysOf(tt.cert, tt.rootKey, tt.canister)
			if !tt.ok {
				var ve *VerificationError
				if !errors.As(err, &ve) {
					t.Fatalf("nodeKeysOf = %v, %v; want a VerificationError", nk, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(nk.keys) != 1 {
				t.Fatalf("%d node keys", len(nk.keys))
			}
		})
	}
}
