package replica

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/bls"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/aviate-labs/leb128"
	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
	"github.com/fxamacker/cbor/v2"
)

// selfDescribeTag is CBOR tag 55799, which the IC puts in front of certificates and responses.
var selfDescribeTag = []byte{0xd9, 0xd9, 0xf7}

// ed25519DERPrefix is the DER SubjectPublicKeyInfo prefix of a raw 32-byte Ed25519 key.
var ed25519DERPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}

// tree is a labeled hash tree under construction: values are []byte (leaves) or tree (subtrees).
type tree map[string]any

// node builds the hash tree with labels in byte order, as both agents' lookups require.
func (t tree) node() hashtree.Node {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys) // Go compares strings bytewise
	nodes := make([]hashtree.Node, 0, len(keys))
	for _, k := range keys {
		var sub hashtree.Node
		switch v := t[k].(type) {
		case []byte:
			// A nil leaf would be encoded as CBOR null, which agents refuse.
			sub = hashtree.Leaf(append([]byte{}, v...))
		case tree:
			sub = v.node()
		default:
			sub = hashtree.Empty{}
		}
		nodes = append(nodes, hashtree.Labeled{Label: hashtree.Label(k), Tree: sub})
	}
	return forkOf(nodes)
}

func forkOf(n []hashtree.Node) hashtree.Node {
	switch len(n) {
	case 0:
		return hashtree.Empty{}
	case 1:
		return n[0]
	default:
		mid := len(n) / 2
		return hashtree.Fork{LeftTree: forkOf(n[:mid]), RightTree: forkOf(n[mid:])}
	}
}

// sub returns the subtree at label, creating it.
func (t tree) sub(label []byte) tree {
	if s, ok := t[string(label)].(tree); ok {
		return s
	}
	s := tree{}
	t[string(label)] = s
	return s
}

func leb(n uint64) []byte {
	b, _ := leb128.EncodeUnsigned(new(big.Int).SetUint64(n))
	return b
}

func timeLeaf(t time.Time) []byte { return leb(uint64(t.UnixNano())) }

type certificateCBOR struct {
	Tree       cbor.RawMessage `cbor:"tree"`
	Signature  []byte          `cbor:"signature"`
	Delegation *delegationCBOR `cbor:"delegation,omitempty"`
}

type delegationCBOR struct {
	SubnetID    []byte `cbor:"subnet_id"`
	Certificate []byte `cbor:"certificate"`
}

// keys is the simulated network's key material: root key, subnet key with its root-signed
// delegation (unless disabled), and one node key for query signatures.
type keys struct {
	rootSK     *bls.SecretKey
	rootDER    []byte
	signSK     *bls.SecretKey // the key that signs state certificates (subnet key, or root key)
	signDER    []byte
	subnetIDs  []principal.Principal // labels under which the subnet's data is published
	delegation *delegationCBOR
	nodeSK     ed25519.PrivateKey
	nodeDER    []byte
	nodeID     principal.Principal
	ranges     []byte // CBOR [[lo, hi]]
}

func blsKeyDER(sk *bls.SecretKey) ([]byte, error) {
	pk := sk.PublicKey()
	raw := (*bls12381.G2Affine)(pk).Bytes()
	return certification.PublicBLSKeyToDER(raw[:])
}

func newKeys(withDelegation bool, now time.Time) (*keys, error) {
	k := &keys{}
	k.rootSK = bls.NewSecretKeyByCSPRNG()
	if k.rootSK == nil {
		return nil, errors.New("generate root key")
	}
	var err error
	if k.rootDER, err = blsKeyDER(k.rootSK); err != nil {
		return nil, fmt.Errorf("encode root key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	k.nodeSK = priv
	k.nodeDER = append(append([]byte{}, ed25519DERPrefix...), pub...)
	k.nodeID = principal.NewSelfAuthenticating(k.nodeDER)
	// Every non-empty principal of up to 29 bytes lies in [0x00, 0xff*29], so every installed
	// canister is covered, and so is whatever agent-js syncTime reads.
	k.ranges, err = cbor.Marshal([][][]byte{{{0x00}, bytes.Repeat([]byte{0xff}, 29)}})
	if err != nil {
		return nil, fmt.Errorf("encode canister ranges: %w", err)
	}
	if !withDelegation {
		// Layout 2 of IC-HTTP.md §4: agent-js looks for the subnet under selfAuthenticating(root
		// key), agent-go under the hard-coded NNS subnet id, so publish both.
		k.signSK, k.signDER = k.rootSK, k.rootDER
		k.subnetIDs = []principal.Principal{
			principal.NewSelfAuthenticating(k.rootDER),
			principal.MustDecode(certification.RootSubnetID),
		}
		return k, nil
	}
	k.signSK = bls.NewSecretKeyByCSPRNG()
	if k.signSK == nil {
		return nil, errors.New("generate subnet key")
	}
	if k.signDER, err = blsKeyDER(k.signSK); err != nil {
		return nil, fmt.Errorf("encode subnet key: %w", err)
	}
	sid := principal.NewSelfAuthenticating(k.signDER)
	k.subnetIDs = []principal.Principal{sid}
	t := tree{"time": timeLeaf(now)}
	t.sub([]byte("subnet")).sub(sid.Raw)["public_key"] = k.signDER
	t.sub([]byte("subnet")).sub(sid.Raw)["canister_ranges"] = k.ranges
	inner, err := k.sign(t, k.rootSK, nil, false)
	if err != nil {
		return nil, fmt.Errorf("sign delegation: %w", err)
	}
	k.delegation = &delegationCBOR{SubnetID: sid.Raw, Certificate: inner}
	return k, nil
}

// subnetTree adds subnet/<sid>/{public_key, canister_ranges, node/<nid>/public_key}.
func (k *keys) subnetTree(t tree) {
	for _, sid := range k.subnetIDs {
		s := t.sub([]byte("subnet")).sub(sid.Raw)
		s["public_key"] = k.signDER
		s["canister_ranges"] = k.ranges
		s.sub([]byte("node")).sub(k.nodeID.Raw)["public_key"] = k.nodeDER
	}
}

// certify signs t as a state certificate. corrupt (TEST-ONLY) makes the signature a valid curve
// point that does not verify.
func (k *keys) certify(t tree, corrupt bool) ([]byte, error) {
	return k.sign(t, k.signSK, k.delegation, corrupt)
}

func (k *keys) sign(t tree, sk *bls.SecretKey, d *delegationCBOR, corrupt bool) ([]byte, error) {
	root := t.node()
	digest := root.Reconstruct()
	msg := append(hashtree.DomainSeparator("ic-state-root"), digest[:]...)
	if corrupt {
		msg[len(msg)-1] ^= 0x01
	}
	sig, err := sk.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("bls sign: %w", err)
	}
	sigBytes := (*bls12381.G1Affine)(sig).Bytes()
	treeCBOR, err := hashtree.Serialize(root)
	if err != nil {
		return nil, fmt.Errorf("serialize tree: %w", err)
	}
	body, err := cbor.Marshal(certificateCBOR{Tree: treeCBOR, Signature: sigBytes[:], Delegation: d})
	if err != nil {
		return nil, fmt.Errorf("encode certificate: %w", err)
	}
	return append(append([]byte{}, selfDescribeTag...), body...), nil
}
