package protocol_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// canisterSigVectors is testdata/upstream/agent-go-v0.8.0-canister-sig.json.
type canisterSigVectors struct {
	IIDelegation struct {
		Canister             string `json:"canister"`
		PublicKey            string `json:"public_key"`
		DelegationPubKey     string `json:"delegation_pubkey"`
		DelegationExpiration int64  `json:"delegation_expiration"`
		Signature            string `json:"signature"`
	} `json:"ii_delegation"`
	PublicKey struct {
		DER      string `json:"der"`
		Canister string `json:"canister"`
		Seed     string `json:"seed"`
	} `json:"canister_sig_public_key"`
}

func loadCanisterSigVectors(t testing.TB) canisterSigVectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/upstream/agent-go-v0.8.0-canister-sig.json")
	if err != nil {
		t.Fatal(err)
	}
	var v canisterSigVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// iiDelegation returns the recorded mainnet Internet Identity delegation: the canister-signature
// key, the bytes it signed and the signature.
func (v canisterSigVectors) iiDelegation(t testing.TB) (pub, payload, sig []byte) {
	t.Helper()
	d := v.IIDelegation
	payload, err := protocol.DelegationSignedBytes(protocol.Delegation{
		PubKey:     unhex(t, d.DelegationPubKey),
		Expiration: time.Unix(0, d.DelegationExpiration),
	})
	if err != nil {
		t.Fatal(err)
	}
	return unhex(t, d.PublicKey), payload, unhex(t, d.Signature)
}

// A delegation Internet Identity signed on mainnet verifies against the mainnet root key, and
// against nothing else.
func TestCanisterSignatureOfInternetIdentity(t *testing.T) {
	v := loadCanisterSigVectors(t)
	pub, payload, sig := v.iiDelegation(t)
	key, err := protocol.ParseCanisterSigPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := principal.MustDecode(v.IIDelegation.Canister); !key.Canister.Equal(want) {
		t.Fatalf("signing canister %s, want %s", key.Canister, want)
	}
	if err := protocol.VerifyCanisterSignature(certificate.MainnetRootKey(), pub, payload, sig); err != nil {
		t.Fatalf("mainnet delegation refused: %v", err)
	}
	other, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	later, err := protocol.DelegationSignedBytes(protocol.Delegation{
		PubKey:     unhex(t, v.IIDelegation.DelegationPubKey),
		Expiration: time.Unix(0, v.IIDelegation.DelegationExpiration+1),
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func() error{
		"another root key":   func() error { return protocol.VerifyCanisterSignature(other.RootKey(), pub, payload, sig) },
		"another expiration": func() error { return protocol.VerifyCanisterSignature(certificate.MainnetRootKey(), pub, later, sig) },
		"another seed": func() error {
			k := key
			k.Seed = append(bytes.Clone(k.Seed), 0)
			return protocol.VerifyCanisterSignature(certificate.MainnetRootKey(), k.DER(), payload, sig)
		},
		"no root key": func() error { return protocol.VerifyCanisterSignature(nil, pub, payload, sig) },
	} {
		if err := check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCanisterSigPublicKeyEncoding(t *testing.T) {
	v := loadCanisterSigVectors(t)
	der := unhex(t, v.PublicKey.DER)
	key, err := protocol.ParseCanisterSigPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Canister.Equal(principal.MustDecode(v.PublicKey.Canister)) || !bytes.Equal(key.Seed, unhex(t, v.PublicKey.Seed)) {
		t.Fatalf("parsed %s / %x", key.Canister, key.Seed)
	}
	if got := key.DER(); !bytes.Equal(got, der) {
		t.Fatalf("DER %x, want %x", got, der)
	}
	// Long seeds need long-form DER lengths.
	for _, n := range []int{0, 32, 100, 200, 300, 70000} {
		k := protocol.CanisterSigPublicKey{Canister: principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai"), Seed: bytes.Repeat([]byte{7}, n)}
		back, err := protocol.ParseCanisterSigPublicKey(k.DER())
		if err != nil || !back.Canister.Equal(k.Canister) || !bytes.Equal(back.Seed, k.Seed) {
			t.Fatalf("seed of %d bytes: %v", n, err)
		}
	}

	valid := func(mutate func([]byte) []byte) []byte { return mutate(bytes.Clone(der)) }
	cases := map[string][]byte{
		"empty":           nil,
		"truncated":       der[:len(der)-1],
		"trailing byte":   append(bytes.Clone(der), 0),
		"another OID":     valid(func(b []byte) []byte { b[15] = 0x01; return b }), // ...56387.1.1: COSE
		"ed25519 key":     unhex(t, "302a300506032b6570032100"+strings.Repeat("11", 32)),
		"unused bits":     valid(func(b []byte) []byte { b[18] = 0x01; return b }),
		"no key bytes":    unhex(t, "3011300c060a2b0601040183b8430102030100"),
		"id past the end": unhex(t, "3013300c060a2b0601040183b843010203030005ff"),
		"id of 30 bytes":  protocol.CanisterSigPublicKey{Canister: principal.Principal{Raw: bytes.Repeat([]byte{1}, 30)}}.DER(),
		"parameters":      unhex(t, "3021300e060a2b0601040183b84301020500030f000a000000000000000001012a482c"),
	}
	for name, b := range cases {
		if _, err := protocol.ParseCanisterSigPublicKey(b); !errors.Is(err, protocol.ErrCanisterSig) {
			t.Errorf("%s: %v, want ErrCanisterSig", name, err)
		}
	}
}

// sigFixture is a signing canister on a simulated network and one payload it signs.
type sigFixture struct {
	auth     *certauth.Authority
	canister principal.Principal
	seed     []byte
	signer   *certauth.CanisterSigner
	payload  []byte
}

func newSigFixture(t testing.TB, opts certauth.Options) sigFixture {
	t.Helper()
	a, err := certauth.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	canister := principal.MustDecode("rdmx6-jaaaa-aaaaa-aaadq-cai") // Internet Identity's id
	seed := []byte("user 10000 at https://app.example")
	return sigFixture{auth: a, canister: canister, seed: seed, signer: a.CanisterSigner(canister, seed), payload: []byte("\x0Aic-request payload")}
}

func (f sigFixture) sign(t testing.TB, tree *hashtree.Node) []byte {
	t.Helper()
	sig, err := f.auth.CanisterSignature(f.canister, tree, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func leaf(b string) *hashtree.Node { return hashtree.NewLeaf([]byte(b)) }

func labeled(l []byte, n *hashtree.Node) *hashtree.Node { return hashtree.NewLabeled(l, n) }

// nested returns depth labeled nodes around inner.
func nested(depth int, inner *hashtree.Node) *hashtree.Node {
	for range depth {
		inner = labeled([]byte("x"), inner)
	}
	return inner
}

func TestVerifyCanisterSignature(t *testing.T) {
	for _, layout := range []struct {
		name string
		opts certauth.Options
	}{{"root-signed", certauth.Options{}}, {"subnet delegation", certauth.Options{Delegated: true}}} {
		t.Run(layout.name, func(t *testing.T) {
			f := newSigFixture(t, layout.opts)
			pub := f.signer.PublicKey()
			seedHash, msgHash := sha256.Sum256(f.seed), sha256.Sum256(f.payload)
			otherMsg := sha256.Sum256([]byte("another payload"))
			good := f.signer.Sign(f.payload)
			if good == nil {
				t.Fatal("signer failed")
			}
			other, err := certauth.New(layout.opts)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := protocol.DecodeCanisterSignature(good)
			if err != nil {
				t.Fatal(err)
			}
			// withCert pairs the good tree with another certificate.
			withCert := func(cert []byte) []byte {
				return (&protocol.CanisterSignature{Certificate: cert, Tree: decoded.Tree}).Encode()
			}
			root := decoded.Tree.Digest()
			certFor := func(canister principal.Principal, data []byte) []byte {
				c, err := f.auth.Certificate(canister, data, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			badBLS, err := func() ([]byte, error) {
				tr := certauth.Tree{"time": certauth.TimeLeaf(time.Now())}
				tr.Sub([]byte("canister")).Sub(f.canister.Raw)["certified_data"] = root[:]
				return f.auth.CertifyWithBadSignature(tr.Node())
			}()
			if err != nil {
				t.Fatal(err)
			}
			noTime, err := func() ([]byte, error) {
				tr := certauth.Tree{}
				tr.Sub([]byte("canister")).Sub(f.canister.Raw)["certified_data"] = root[:]
				return f.auth.Certify(tr.Node())
			}()
			if err != nil {
				t.Fatal(err)
			}
			// sigTree is sig/<seed>/<msg> holding value, among other signatures as Internet
			// Identity's signature map has them.
			sigTree := func(seed, msg [32]byte, value *hashtree.Node) *hashtree.Node {
				before, after := bytes.Repeat([]byte{0x00}, 32), bytes.Repeat([]byte{0xff}, 32)
				users := hashtree.NewFork(
					labeled(before, hashtree.NewPruned(sha256.Sum256([]byte("a")))),
					hashtree.NewFork(labeled(seed[:], labeled(msg[:], value)), labeled(after, hashtree.NewPruned(sha256.Sum256([]byte("b"))))),
				)
				return labeled([]byte("sig"), users)
			}

			cases := []struct {
				name    string
				rootKey []byte
				pub     []byte
				sig     []byte
				wantErr string // "" accepts
			}{
				{"signed", f.auth.RootKey(), pub, good, ""},
				{"among other signatures", f.auth.RootKey(), pub, f.sign(t, sigTree(seedHash, msgHash, leaf(""))), ""},
				{"unknown keys in the signature map", f.auth.RootKey(), pub, extraKey(good), ""},
				{"no root key", nil, pub, good, "IC root key"},
				{"wrong root key", other.RootKey(), pub, good, "certificate"},
				{"tree without the message", f.auth.RootKey(), pub, f.sign(t, sigTree(seedHash, otherMsg, leaf(""))), "does not hold"},
				{"message under another seed", f.auth.RootKey(), pub, f.auth.CanisterSigner(f.canister, []byte("other")).Sign(f.payload), "does not hold"},
				{"non-empty leaf", f.auth.RootKey(), pub, f.sign(t, sigTree(seedHash, msgHash, leaf("x"))), "empty leaf"},
				{"subtree instead of a leaf", f.auth.RootKey(), pub, f.sign(t, sigTree(seedHash, msgHash, labeled([]byte("a"), leaf("")))), "empty leaf"},
				{"pruned where the message would be", f.auth.RootKey(), pub, f.sign(t, labeled([]byte("sig"), hashtree.NewPruned(sha256.Sum256(nil)))), "unknown"},
				{"labels out of order", f.auth.RootKey(), pub, f.sign(t, hashtree.NewFork(
					labeled([]byte("zzz"), leaf("")), protocol.CanisterSigTree(f.seed, f.payload))), "well formed"},
				{"certified_data mismatch", f.auth.RootKey(), pub, withCert(certFor(f.canister, make([]byte, 32))), "not the tree's root hash"},
				{"certificate for another canister", f.auth.RootKey(), pub, withCert(certFor(principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai"), root[:])), "certified_data is absent"},
				{"key of another canister", f.auth.RootKey(), protocol.CanisterSigPublicKey{Canister: principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai"), Seed: f.seed}.DER(), good, "certified_data is absent"},
				{"certificate without time", f.auth.RootKey(), pub, withCert(noTime), "time"},
				{"BLS signature does not verify", f.auth.RootKey(), pub, withCert(badBLS), "signature does not verify"},
				{"certificate is not CBOR", f.auth.RootKey(), pub, withCert([]byte{0xff}), "malformed"},
				{"no self-describe tag", f.auth.RootKey(), pub, good[3:], "self-describe"},
				{"not a map", f.auth.RootKey(), pub, append(bytes.Clone(protocol.SelfDescribeTag), 0x80), "map"},
				{"truncated", f.auth.RootKey(), pub, good[:len(good)-1], "signature"},
				{"trailing bytes", f.auth.RootKey(), pub, append(bytes.Clone(good), 0x00), "trailing"},
				{"tree missing", f.auth.RootKey(), pub, unhex(t, "d9d9f7a16b636572746966696361746540"), "missing"},
				{"duplicate tree", f.auth.RootKey(), pub, duplicateTree(good), "duplicate"},
				{"tree too deep", f.auth.RootKey(), pub, f.sign(t, nested(hashtree.MaxDepth, protocol.CanisterSigTree(f.seed, f.payload))), "deeper"},
				{"not a canister-signature key", f.auth.RootKey(), unhex(t, "302a300506032b6570032100"+strings.Repeat("11", 32)), good, "algorithm"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					err := protocol.VerifyCanisterSignature(tc.rootKey, tc.pub, f.payload, tc.sig)
					if tc.wantErr == "" {
						if err != nil {
							t.Fatalf("refused: %v", err)
						}
						return
					}
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
					}
				})
			}
		})
	}
}

// A subnet delegation whose canister ranges leave out the signing canister does not vouch for its
// certified data.
func TestCanisterSignatureOutsideTheSubnetsRanges(t *testing.T) {
	only := principal.MustDecode("ryjl3-tyaaa-aaaaa-aaaba-cai")
	f := newSigFixture(t, certauth.Options{Delegated: true, Ranges: []certificate.Range{{Low: only.Raw, High: only.Raw}}})
	err := protocol.VerifyCanisterSignature(f.auth.RootKey(), f.signer.PublicKey(), f.payload, f.signer.Sign(f.payload))
	if !errors.Is(err, certificate.ErrDelegation) {
		t.Fatalf("error %v, want certificate.ErrDelegation", err)
	}
}

// The cache accepts again exactly what verified, and nothing else.
func TestCanisterSigVerifierRemembers(t *testing.T) {
	f := newSigFixture(t, certauth.Options{Delegated: true})
	cache := protocol.NewCanisterSigVerifier(2, 1)
	pub, sig := f.signer.PublicKey(), f.signer.Sign(f.payload)
	for range 3 {
		if err := cache.Verify(f.auth.RootKey(), pub, f.payload, sig); err != nil {
			t.Fatal(err)
		}
	}
	tampered := bytes.Clone(sig)
	tampered[len(tampered)-1] ^= 1
	if err := cache.Verify(f.auth.RootKey(), pub, f.payload, tampered); err == nil {
		t.Fatal("a tampered signature was accepted")
	}
	if err := cache.Verify(f.auth.RootKey(), pub, []byte("another payload"), sig); err == nil {
		t.Fatal("another payload was accepted")
	}
	other, err := certauth.New(certauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Verify(other.RootKey(), pub, f.payload, sig); err == nil {
		t.Fatal("another root key was accepted")
	}
	// More signatures than the cache holds: the oldest is forgotten and checked again.
	for i := range 4 {
		p := []byte{byte(i)}
		if err := cache.Verify(f.auth.RootKey(), pub, p, f.signer.Sign(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cache.Verify(f.auth.RootKey(), pub, f.payload, sig); err != nil {
		t.Fatal(err)
	}
}

// extraKey adds an unknown key to a canister signature's map, as a newer signer might.
func extraKey(sig []byte) []byte {
	body := sig[len(protocol.SelfDescribeTag)+1:]
	out := append(bytes.Clone(protocol.SelfDescribeTag), 0xa3)
	out = append(out, 0x65, 'e', 'x', 't', 'r', 'a', 0x82, 0x01, 0x02)
	return append(out, body...)
}

// duplicateTree repeats the tree entry of a canister signature.
func duplicateTree(sig []byte) []byte {
	s, err := protocol.DecodeCanisterSignature(sig)
	if err != nil {
		panic(err)
	}
	body := sig[len(protocol.SelfDescribeTag)+1:]
	out := append(bytes.Clone(protocol.SelfDescribeTag), 0xa3)
	out = append(out, body...)
	out = append(out, 0x64, 't', 'r', 'e', 'e')
	return append(out, s.Tree.Encode()...)
}

// Verifications beyond the verifier's slots wait their turn; none is lost or refused.
func TestCanisterSigVerifierSharesItsSlots(t *testing.T) {
	f := newSigFixture(t, certauth.Options{})
	v := protocol.NewCanisterSigVerifier(64, 1)
	pub := f.signer.PublicKey()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			p := []byte{byte(i)}
			errs <- v.Verify(f.auth.RootKey(), pub, p, f.signer.Sign(p))
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
