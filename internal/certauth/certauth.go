// Package certauth is the key material of a simulated IC network: a BLS root key, optionally a
// subnet key that the root key delegates to, and one Ed25519 node key. It signs state
// certificates and query answers the way the IC does. The replica simulator serves what it signs
// (also at run time, in `icws dev`), and every test that needs certificates or certified
// ic-websocket frames builds them here.
package certauth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
	"github.com/consensys/gnark-crypto/ecc/bls12-381/fr"

	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// Options configures an Authority. The zero value signs with the root key directly.
type Options struct {
	// Delegated signs certificates with a subnet key that a root-signed delegation vouches for
	// (the mainnet layout) instead of with the root key (the local-replica layout).
	Delegated bool
	// Ranges are the subnet's canister ranges. Default: every principal.
	Ranges []certificate.Range
	// ShardedRanges publishes the delegation's ranges only in the newer encoding,
	// canister_ranges/<subnet>/<first canister>, instead of subnet/<subnet>/canister_ranges.
	ShardedRanges bool
	// DelegationTime is the time of the delegation's certificate. Default: now.
	DelegationTime time.Time
}

// Authority signs certificates and query answers. It is safe for concurrent use.
type Authority struct {
	rootSK  fr.Element
	rootDER []byte
	// signSK signs state certificates: the subnet key, or the root key without delegation.
	signSK     fr.Element
	signDER    []byte
	subnetIDs  []principal.Principal
	delegation *certificate.Delegation
	ranges     []byte
	nodeSK     ed25519.PrivateKey
	nodeDER    []byte
	nodeID     principal.Principal
}

// allPrincipals covers every principal of up to 29 bytes.
var allPrincipals = certificate.Range{Low: []byte{0x00}, High: bytes.Repeat([]byte{0xff}, 29)}

// New creates an authority with fresh keys.
func New(opts Options) (*Authority, error) {
	a := &Authority{}
	var err error
	if a.rootDER, err = newBLSKey(&a.rootSK); err != nil {
		return nil, fmt.Errorf("certauth: root key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certauth: node key: %w", err)
	}
	a.nodeSK, a.nodeDER = priv, certificate.Ed25519PublicKeyDER(pub)
	a.nodeID = principal.NewSelfAuthenticating(a.nodeDER)
	ranges := opts.Ranges
	if len(ranges) == 0 {
		ranges = []certificate.Range{allPrincipals}
	}
	a.ranges = certificate.EncodeRanges(ranges)
	if !opts.Delegated {
		a.signSK, a.signDER = a.rootSK, a.rootDER
		a.subnetIDs = []principal.Principal{principal.NewSelfAuthenticating(a.rootDER), principal.MustDecode(certificate.NNSSubnetID)}
		return a, nil
	}
	if a.signDER, err = newBLSKey(&a.signSK); err != nil {
		return nil, fmt.Errorf("certauth: subnet key: %w", err)
	}
	sid := principal.NewSelfAuthenticating(a.signDER)
	a.subnetIDs = []principal.Principal{sid}
	at := opts.DelegationTime
	if at.IsZero() {
		at = time.Now()
	}
	t := Tree{"time": TimeLeaf(at)}
	t.Sub([]byte("subnet")).Sub(sid.Raw)["public_key"] = a.signDER
	if opts.ShardedRanges {
		shards := t.Sub([]byte("canister_ranges")).Sub(sid.Raw)
		for _, r := range ranges {
			shards[string(r.Low)] = certificate.EncodeRanges([]certificate.Range{r})
		}
	} else {
		t.Sub([]byte("subnet")).Sub(sid.Raw)["canister_ranges"] = a.ranges
	}
	inner, err := a.sign(t.Node(), &a.rootSK, nil, false)
	if err != nil {
		return nil, fmt.Errorf("certauth: sign delegation: %w", err)
	}
	a.delegation = &certificate.Delegation{SubnetID: sid.Raw, Certificate: inner}
	return a, nil
}

func newBLSKey(sk *fr.Element) ([]byte, error) {
	if _, err := sk.SetRandom(); err != nil {
		return nil, err
	}
	_, _, _, g2 := bls12381.Generators()
	var pk bls12381.G2Affine
	pk.ScalarMultiplication(&g2, sk.BigInt(new(big.Int)))
	raw := pk.Bytes()
	return certificate.BLSPublicKeyDER(raw[:])
}

// RootKey is the DER-encoded BLS root public key, as /api/v2/status serves it.
func (a *Authority) RootKey() []byte { return bytes.Clone(a.rootDER) }

// SubnetIDs are the ids under which the subnet's keys are published: the delegated subnet, or,
// for a root-signed authority, the two ids agents look under (agent-js: selfAuthenticating(root
// key); agent-go: the mainnet NNS subnet id).
func (a *Authority) SubnetIDs() []principal.Principal { return slices.Clone(a.subnetIDs) }

// NodeID is the id of the node that signs query answers.
func (a *Authority) NodeID() principal.Principal { return a.nodeID }

// responseDomain prefixes the hash a node signs over a query answer.
var responseDomain = []byte("\x0Bic-response")

// SignQueryAnswer returns the node's signature over the representation-independent hash of a
// query answer (with its timestamp).
func (a *Authority) SignQueryAnswer(hash [32]byte) []byte {
	return ed25519.Sign(a.nodeSK, append(bytes.Clone(responseDomain), hash[:]...))
}

// AddSubnet adds subnet/<id>/{public_key, canister_ranges, node/<node>/public_key} for every
// subnet id to t, as a read_state of /subnet answers.
func (a *Authority) AddSubnet(t Tree) {
	for _, sid := range a.subnetIDs {
		s := t.Sub([]byte("subnet")).Sub(sid.Raw)
		s["public_key"] = a.signDER
		s["canister_ranges"] = a.ranges
		s.Sub([]byte("node")).Sub(a.nodeID.Raw)["public_key"] = a.nodeDER
	}
}

// Certify signs tree and returns the certificate's CBOR (self-describe tag included), with the
// delegation if the authority has one.
func (a *Authority) Certify(tree *hashtree.Node) ([]byte, error) {
	c, err := a.sign(tree, &a.signSK, a.delegation, false)
	if err != nil {
		return nil, err
	}
	return c.Encode(), nil
}

// CertifyWithBadSignature is Certify with a signature that is a valid curve point but does not
// verify: for tests that check certificates are refused (nothing like it exists on the IC).
func (a *Authority) CertifyWithBadSignature(tree *hashtree.Node) ([]byte, error) {
	c, err := a.sign(tree, &a.signSK, a.delegation, true)
	if err != nil {
		return nil, err
	}
	return c.Encode(), nil
}

// blsDST is the ciphersuite of IC signatures.
var blsDST = []byte("BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_")

func (a *Authority) sign(tree *hashtree.Node, sk *fr.Element, d *certificate.Delegation, wrong bool) (*certificate.Certificate, error) {
	root := tree.Digest()
	msg := append([]byte("\x0Dic-state-root"), root[:]...)
	if wrong {
		msg[len(msg)-1] ^= 0x01
	}
	h, err := bls12381.HashToG1(msg, blsDST)
	if err != nil {
		return nil, fmt.Errorf("certauth: hash to curve: %w", err)
	}
	var sig bls12381.G1Affine
	sig.ScalarMultiplication(&h, sk.BigInt(new(big.Int)))
	raw := sig.Bytes()
	return &certificate.Certificate{Tree: tree, Signature: raw[:], Delegation: d}, nil
}

// Certificate returns a certificate whose tree holds time t and
// canister/<canister>/certified_data = certifiedData, what ic0.data_certificate returns.
func (a *Authority) Certificate(canister principal.Principal, certifiedData []byte, t time.Time) ([]byte, error) {
	tree := Tree{"time": TimeLeaf(t)}
	tree.Sub([]byte("canister")).Sub(canister.Raw)["certified_data"] = certifiedData
	return a.Certify(tree.Node())
}

// Message is one queued canister message: its queue key and its CBOR content.
type Message struct {
	Key     string
	Content []byte
}

// WebsocketTree builds the CDK's tree labeled("websocket", {key: sha256(content)}) for msgs and
// returns it CBOR-encoded (with the self-describe tag) together with its root hash, which is the
// canister's certified_data.
func WebsocketTree(msgs []Message) ([]byte, [32]byte) {
	leaves := Tree{}
	for _, m := range msgs {
		sum := sha256.Sum256(m.Content)
		leaves[m.Key] = sum[:]
	}
	root := hashtree.NewLabeled([]byte("websocket"), leaves.Node())
	return append(bytes.Clone(protocol.SelfDescribeTag), root.Encode()...), root.Digest()
}

// Frames certifies msgs as one ws_get_messages batch at time t and returns one gateway → client
// frame per message, each with the batch's cert and tree, as the gateway forwards them.
func (a *Authority) Frames(canister principal.Principal, t time.Time, msgs ...Message) ([]protocol.CanisterToClientMessage, error) {
	tree, root := WebsocketTree(msgs)
	cert, err := a.Certificate(canister, root[:], t)
	if err != nil {
		return nil, err
	}
	out := make([]protocol.CanisterToClientMessage, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, protocol.CanisterToClientMessage{Key: m.Key, Content: m.Content, Cert: cert, Tree: tree})
	}
	return out, nil
}

// Tree is a labeled tree under construction: each value is a []byte (a leaf) or a Tree.
type Tree map[string]any

// Sub returns the subtree at label, creating it.
func (t Tree) Sub(label []byte) Tree {
	if s, ok := t[string(label)].(Tree); ok {
		return s
	}
	s := Tree{}
	t[string(label)] = s
	return s
}

// Node builds the hash tree: labels in byte order under balanced forks, the shape agents' lookups
// expect.
func (t Tree) Node() *hashtree.Node {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys) // strings compare bytewise
	nodes := make([]*hashtree.Node, 0, len(keys))
	for _, k := range keys {
		var sub *hashtree.Node
		switch v := t[k].(type) {
		case []byte:
			sub = hashtree.NewLeaf(v)
		case Tree:
			sub = v.Node()
		default:
			sub = hashtree.NewEmpty()
		}
		nodes = append(nodes, hashtree.NewLabeled([]byte(k), sub))
	}
	return balanced(nodes)
}

func balanced(n []*hashtree.Node) *hashtree.Node {
	switch len(n) {
	case 0:
		return hashtree.NewEmpty()
	case 1:
		return n[0]
	}
	mid := len(n) / 2
	return hashtree.NewFork(balanced(n[:mid]), balanced(n[mid:]))
}

// TimeLeaf is the state tree's encoding of a time: nanoseconds since the epoch in LEB128.
func TimeLeaf(t time.Time) []byte { return certificate.AppendULEB128(nil, uint64(t.UnixNano())) }

// CanisterSignature returns the canister signature made of tree: a certificate at time t whose
// canister/<canister>/certified_data is tree's root hash, and tree, encoded as the IC interface
// specification's canister signatures are. Tests pass odd trees to see them refused; CanisterSigner
// builds the right one.
func (a *Authority) CanisterSignature(canister principal.Principal, tree *hashtree.Node, t time.Time) ([]byte, error) {
	root := tree.Digest()
	cert, err := a.Certificate(canister, root[:], t)
	if err != nil {
		return nil, err
	}
	return (&protocol.CanisterSignature{Certificate: cert, Tree: tree}).Encode(), nil
}

// CanisterSigner is the canister-signature key of canister and seed on the authority's network,
// as Internet Identity holds one per user and app, with which its delegation chains start. It is
// an agent-go identity, so it signs delegations (protocol.SignDelegation) and requests
// (protocol.SignEnvelope) like any key.
type CanisterSigner struct {
	a        *Authority
	canister principal.Principal
	seed     []byte
	der      []byte
}

// CanisterSigner returns the signer of canister's key for seed.
func (a *Authority) CanisterSigner(canister principal.Principal, seed []byte) *CanisterSigner {
	key := protocol.CanisterSigPublicKey{Canister: canister, Seed: bytes.Clone(seed)}
	return &CanisterSigner{a: a, canister: canister, seed: key.Seed, der: key.DER()}
}

// Sender is the self-authenticating id of the key.
func (s *CanisterSigner) Sender() principal.Principal { return principal.NewSelfAuthenticating(s.der) }

// PublicKey is the key's DER encoding.
func (s *CanisterSigner) PublicKey() []byte { return bytes.Clone(s.der) }

// Sign returns the canister signature of msg (the domain separator included), certified now, or
// nil if certification fails.
func (s *CanisterSigner) Sign(msg []byte) []byte {
	sig, err := s.a.CanisterSignature(s.canister, protocol.CanisterSigTree(s.seed, msg), time.Now())
	if err != nil {
		return nil
	}
	return sig
}

// Verify checks a canister signature of this key against the authority's root key.
func (s *CanisterSigner) Verify(msg, sig []byte) bool {
	return protocol.VerifyCanisterSignature(s.a.RootKey(), s.der, msg, sig) == nil
}

// ToPEM refuses: a canister-signature key has no private key.
func (s *CanisterSigner) ToPEM() ([]byte, error) {
	return nil, fmt.Errorf("certauth: a canister-signature key has no private key")
}
