package certificate_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/testkit/cputime"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

var testCanister = principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai")

func newAuthority(t testing.TB, opts certauth.Options) *certauth.Authority {
	t.Helper()
	a, err := certauth.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func certify(t testing.TB, a *certauth.Authority, at time.Time) []byte {
	t.Helper()
	raw, err := a.Certificate(testCanister, []byte("data"), at)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	only := func(p principal.Principal) []certificate.Range { return []certificate.Range{{Low: p.Raw, High: p.Raw}} }
	other := principal.MustDecode("bd3sg-teaaa-aaaaa-qaaba-cai")
	root := newAuthority(t, certauth.Options{})
	delegated := newAuthority(t, certauth.Options{Delegated: true, Ranges: only(testCanister), DelegationTime: now})
	sharded := newAuthority(t, certauth.Options{Delegated: true, ShardedRanges: true, DelegationTime: now,
		Ranges: []certificate.Range{{Low: []byte{0x00}, High: []byte{0x01}}, {Low: testCanister.Raw, High: testCanister.Raw}}})
	stranger := newAuthority(t, certauth.Options{})

	tests := []struct {
		name     string
		cert     []byte
		rootKey  []byte
		canister principal.Principal
		want     error
	}{
		{"root-signed", certify(t, root, now), root.RootKey(), testCanister, nil},
		{"root-signed for any canister", certify(t, root, now), root.RootKey(), other, nil},
		{"delegated", certify(t, delegated, now), delegated.RootKey(), testCanister, nil},
		{"delegated with sharded ranges", certify(t, sharded, now), sharded.RootKey(), testCanister, nil},
		{"another root key", certify(t, stranger, now), root.RootKey(), testCanister, certificate.ErrSignature},
		{"delegation from another root key", certify(t, delegated, now), root.RootKey(), testCanister, certificate.ErrDelegation},
		{"canister outside the delegation", certify(t, delegated, now), delegated.RootKey(), other, certificate.ErrDelegation},
		{"canister outside sharded ranges", certify(t, sharded, now), sharded.RootKey(), other, certificate.ErrDelegation},
		{"bad signature", func() []byte {
			raw, err := root.CertifyWithBadSignature(hashtree.NewLabeled([]byte("time"), hashtree.NewLeaf(certauth.TimeLeaf(now))))
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}(), root.RootKey(), testCanister, certificate.ErrSignature},
		{"root key is not DER", certify(t, root, now), []byte{1, 2, 3}, testCanister, certificate.ErrKey},
	}
	// A KeyCache shared by every case, each run twice: what it remembers never changes an answer.
	var cache certificate.KeyCache
	for _, tt := range append(tests, tests...) {
		t.Run(tt.name, func(t *testing.T) {
			c, err := certificate.Decode(tt.cert)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Verify(tt.rootKey, tt.canister.Raw)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			err = c.VerifyCached(&cache, tt.rootKey, tt.canister.Raw)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("VerifyCached = %v, want %v", err, tt.want)
			}
			if got, err := c.Time(); err != nil || !got.Equal(now) {
				t.Fatalf("Time = %v, %v", got, err)
			}
		})
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	a := newAuthority(t, certauth.Options{Delegated: true})
	raw := certify(t, a, time.Now())
	c, err := certificate.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Encode(), raw) {
		t.Fatal("re-encoding differs")
	}
	if c.Delegation == nil || c.Delegation.Certificate.Delegation != nil {
		t.Fatal("delegation lost")
	}
	// Without the self-describe tag, and with an unknown key of any shape, it still decodes.
	extra := append([]byte{0xa4, 0x65, 'e', 'x', 't', 'r', 'a', 0x82, 0xa1, 0x61, 'x', 0x80, 0xf5}, raw[4:]...)
	if _, err := certificate.Decode(extra); err != nil {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	a := newAuthority(t, certauth.Options{Delegated: true})
	good, err := certificate.Decode(certify(t, a, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	nested := *good
	inner := *good.Delegation.Certificate
	inner.Delegation = good.Delegation
	nested.Delegation = &certificate.Delegation{SubnetID: good.Delegation.SubnetID, Certificate: &inner}
	tests := []struct {
		name string
		raw  []byte
	}{
		{"nothing", nil},
		{"not a map", []byte{0x80}},
		{"no tree", []byte{0xa1, 0x69, 's', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', 0x40}},
		{"no signature", []byte{0xa1, 0x64, 't', 'r', 'e', 'e', 0x81, 0x00}},
		{"duplicate tree", []byte{0xa3, 0x64, 't', 'r', 'e', 'e', 0x81, 0x00, 0x64, 't', 'r', 'e', 'e', 0x81, 0x00, 0x69, 's', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', 0x40}},
		{"map count beyond the input", []byte{0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"nested delegation", nested.Encode()},
		{"trailing bytes", append(good.Encode(), 0x00)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := certificate.Decode(tt.raw); !errors.Is(err, certificate.ErrMalformed) {
				t.Fatalf("Decode = %v, %v; want ErrMalformed", c, err)
			}
		})
	}
}

func TestDeepTreeInCertificate(t *testing.T) {
	a := newAuthority(t, certauth.Options{})
	n := hashtree.NewLeaf([]byte("x"))
	for range hashtree.MaxDepth - 3 { // under a fork and a label: depth MaxDepth
		n = hashtree.NewFork(n, hashtree.NewPruned([32]byte{}))
	}
	tree := hashtree.NewFork(hashtree.NewLabeled([]byte("deep"), n), hashtree.NewLabeled([]byte("time"), hashtree.NewLeaf([]byte{1})))
	raw, err := a.Certify(tree)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certificate.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(a.RootKey(), testCanister.Raw); err != nil {
		t.Fatal(err)
	}
	deeper := hashtree.NewFork(hashtree.NewLabeled([]byte("deep"), hashtree.NewFork(n, n)), hashtree.NewEmpty())
	if raw, err = a.Certify(deeper); err != nil {
		t.Fatal(err)
	}
	if _, err := certificate.Decode(raw); !errors.Is(err, hashtree.ErrTooDeep) {
		t.Fatalf("a tree one level too deep: %v", err)
	}
}

func TestKeyDER(t *testing.T) {
	a := newAuthority(t, certauth.Options{})
	raw, err := certificate.ParseBLSPublicKeyDER(a.RootKey())
	if err != nil || len(raw) != 96 {
		t.Fatalf("root key: %x, %v", raw, err)
	}
	if der, err := certificate.BLSPublicKeyDER(raw); err != nil || !bytes.Equal(der, a.RootKey()) {
		t.Fatal("DER round trip")
	}
	bad := a.RootKey()
	bad[len(bad)-1] ^= 0xff // no longer a point of the subgroup (or not on the curve)
	if _, err := certificate.ParseBLSPublicKeyDER(bad); !errors.Is(err, certificate.ErrKey) {
		t.Fatalf("corrupted key accepted: %v", err)
	}
	if _, err := certificate.ParseEd25519PublicKeyDER(a.RootKey()); !errors.Is(err, certificate.ErrKey) {
		t.Fatalf("BLS key parsed as Ed25519: %v", err)
	}
}

func TestMainnetRootKey(t *testing.T) {
	if _, err := certificate.ParseBLSPublicKeyDER(certificate.MainnetRootKey()); err != nil {
		t.Fatal(err)
	}
}

// A certificate of another subnet's delegation, or one re-signed, is checked in full even after a
// delegation was remembered.
func TestKeyCacheDoesNotLendADelegation(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuthority(t, certauth.Options{Delegated: true, DelegationTime: now})
	var cache certificate.KeyCache
	good, err := certificate.Decode(certify(t, a, now))
	if err != nil {
		t.Fatal(err)
	}
	if err := good.VerifyCached(&cache, a.RootKey(), testCanister.Raw); err != nil {
		t.Fatal(err)
	}
	forged, err := certificate.Decode(certify(t, a, now))
	if err != nil {
		t.Fatal(err)
	}
	forged.Delegation.Certificate.Signature = bytes.Clone(forged.Delegation.Certificate.Signature)
	forged.Delegation.Certificate.Signature[5] ^= 1
	if err := forged.VerifyCached(&cache, a.RootKey(), testCanister.Raw); !errors.Is(err, certificate.ErrDelegation) {
		t.Fatalf("a delegation with another signature: %v", err)
	}
	nested, _ := certificate.Decode(certify(t, a, now))
	nested.Delegation.Certificate.Delegation = good.Delegation
	if err := nested.VerifyCached(&cache, a.RootKey(), testCanister.Raw); !errors.Is(err, certificate.ErrDelegation) {
		t.Fatalf("a nested delegation: %v", err)
	}
}

// BenchmarkVerifyDelegated verifies a delegated certificate: each time in full, and with a
// KeyCache that remembers the delegation (what a gateway or client pays from the second
// certificate of a subnet on).
func BenchmarkVerifyDelegated(b *testing.B) {
	now := time.Now()
	a := newAuthority(b, certauth.Options{Delegated: true, DelegationTime: now})
	c, err := certificate.Decode(certify(b, a, now))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("full", func(b *testing.B) {
		meter := cputime.Start()
		for b.Loop() {
			if err := c.Verify(a.RootKey(), testCanister.Raw); err != nil {
				b.Fatal(err)
			}
		}
		meter.Report(b, 0, "")
	})
	b.Run("cached", func(b *testing.B) {
		var cache certificate.KeyCache
		meter := cputime.Start()
		for b.Loop() {
			if err := c.VerifyCached(&cache, a.RootKey(), testCanister.Raw); err != nil {
				b.Fatal(err)
			}
		}
		meter.Report(b, 0, "")
	})
}
