// Package certtest builds IC certificates and certified ic-websocket frames for tests: a test root
// key (optionally with a subnet delegation) signs certificates whose certified_data covers a
// "websocket" hash tree, exactly the shape ic-websocket-cdk produces. It is test support for the
// client and protocol packages; it never talks to a network.
package certtest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"github.com/aviate-labs/agent-go/certification"
	"github.com/aviate-labs/agent-go/certification/bls"
	"github.com/aviate-labs/agent-go/certification/hashtree"
	"github.com/aviate-labs/agent-go/principal"
	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Authority signs certificates with a root key, or with a subnet key delegated by the root key.
type Authority struct {
	root    *bls.SecretKey
	rootDER []byte
	// With a delegation, certificates are signed by subnet and carry delegation.
	subnet     *bls.SecretKey
	delegation *delegation
}

type delegation struct {
	SubnetID    []byte `cbor:"subnet_id"`
	Certificate []byte `cbor:"certificate"`
}

type certificate struct {
	Tree       hashtree.HashTree `cbor:"tree"`
	Signature  []byte            `cbor:"signature"`
	Delegation *delegation       `cbor:"delegation,omitempty"`
}

// New returns an authority whose certificates are signed directly by a fresh root key.
func New() (*Authority, error) {
	sk := bls.NewSecretKeyByCSPRNG()
	if sk == nil {
		return nil, fmt.Errorf("certtest: generate root key")
	}
	der, err := publicDER(sk)
	if err != nil {
		return nil, err
	}
	return &Authority{root: sk, rootDER: der}, nil
}

// NewDelegated returns an authority whose certificates are signed by a subnet key, delegated by the
// root key for the canister range [from, to]. The delegation is stamped with time t.
func NewDelegated(from, to principal.Principal, t time.Time) (*Authority, error) {
	a, err := New()
	if err != nil {
		return nil, err
	}
	a.subnet = bls.NewSecretKeyByCSPRNG()
	subnetDER, err := publicDER(a.subnet)
	if err != nil {
		return nil, err
	}
	subnetID := principal.NewSelfAuthenticating(subnetDER)
	ranges, err := cbor.Marshal([][][]byte{{from.Raw, to.Raw}})
	if err != nil {
		return nil, fmt.Errorf("certtest: encode ranges: %w", err)
	}
	tree := fork(
		labeled("subnet", labeled(string(subnetID.Raw), fork(
			labeled("canister_ranges", hashtree.Leaf(ranges)),
			labeled("public_key", hashtree.Leaf(subnetDER)),
		))),
		labeled("time", hashtree.Leaf(uleb128(uint64(t.UnixNano())))),
	)
	raw, err := encodeCertificate(a.root, tree, nil)
	if err != nil {
		return nil, err
	}
	a.delegation = &delegation{SubnetID: subnetID.Raw, Certificate: raw}
	return a, nil
}

// RootKey is the DER-encoded BLS root public key, as /api/v2/status serves it.
func (a *Authority) RootKey() []byte { return bytes.Clone(a.rootDER) }

// Certificate returns a CBOR certificate (self-describe tag included) whose tree holds time t and
// canister/<canister>/certified_data = certifiedData.
func (a *Authority) Certificate(canister principal.Principal, certifiedData []byte, t time.Time) ([]byte, error) {
	tree := fork(
		labeled("canister", labeled(string(canister.Raw), labeled("certified_data", hashtree.Leaf(certifiedData)))),
		labeled("time", hashtree.Leaf(uleb128(uint64(t.UnixNano())))),
	)
	key := a.root
	if a.subnet != nil {
		key = a.subnet
	}
	return encodeCertificate(key, tree, a.delegation)
}

// Message is one queued canister message: its queue key and its CBOR content.
type Message struct {
	Key     string
	Content []byte
}

// WebsocketTree builds the CDK's witness labeled("websocket", {key: sha256(content)}) for msgs and
// returns it CBOR-encoded (with the self-describe tag) together with its root hash, which is the
// canister's certified_data.
func WebsocketTree(msgs []Message) ([]byte, [32]byte, error) {
	sorted := slices.Clone(msgs)
	slices.SortFunc(sorted, func(a, b Message) int { return bytes.Compare([]byte(a.Key), []byte(b.Key)) })
	leaves := make([]hashtree.Node, 0, len(sorted))
	for _, m := range sorted {
		sum := sha256.Sum256(m.Content)
		leaves = append(leaves, labeled(m.Key, hashtree.Leaf(sum[:])))
	}
	root := labeled("websocket", forkAll(leaves))
	b, err := hashtree.Serialize(root)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("certtest: encode tree: %w", err)
	}
	return append(bytes.Clone(protocol.SelfDescribeTag), b...), root.Reconstruct(), nil
}

// Frames certifies msgs as one ws_get_messages batch at time t and returns one gateway → client
// frame per message, each with the batch's cert and tree, as the gateway forwards them.
func (a *Authority) Frames(canister principal.Principal, t time.Time, msgs ...Message) ([]protocol.CanisterToClientMessage, error) {
	tree, root, err := WebsocketTree(msgs)
	if err != nil {
		return nil, err
	}
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

func encodeCertificate(key *bls.SecretKey, tree hashtree.Node, d *delegation) ([]byte, error) {
	root := tree.Reconstruct()
	sig, err := key.Sign(append(hashtree.DomainSeparator("ic-state-root"), root[:]...))
	if err != nil {
		return nil, fmt.Errorf("certtest: sign: %w", err)
	}
	sigBytes := (*bls12381.G1Affine)(sig).Bytes()
	b, err := cbor.Marshal(certificate{Tree: hashtree.NewHashTree(tree), Signature: sigBytes[:], Delegation: d})
	if err != nil {
		return nil, fmt.Errorf("certtest: encode certificate: %w", err)
	}
	return append(bytes.Clone(protocol.SelfDescribeTag), b...), nil
}

func publicDER(sk *bls.SecretKey) ([]byte, error) {
	pk := (*bls12381.G2Affine)(sk.PublicKey()).Bytes()
	der, err := certification.PublicBLSKeyToDER(pk[:])
	if err != nil {
		return nil, fmt.Errorf("certtest: encode public key: %w", err)
	}
	return der, nil
}

func labeled(label string, n hashtree.Node) hashtree.Node {
	return hashtree.Labeled{Label: hashtree.Label(label), Tree: n}
}

func fork(l, r hashtree.Node) hashtree.Node { return hashtree.Fork{LeftTree: l, RightTree: r} }

// forkAll joins sorted labeled nodes into a balanced tree of forks.
func forkAll(ns []hashtree.Node) hashtree.Node {
	switch len(ns) {
	case 0:
		return hashtree.Empty{}
	case 1:
		return ns[0]
	}
	mid := len(ns) / 2
	return fork(forkAll(ns[:mid]), forkAll(ns[mid:]))
}

func uleb128(v uint64) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}
