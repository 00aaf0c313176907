package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
	"github.com/icws/icws/protocol/internal/cborread"
	"github.com/icws/icws/protocol/internal/cborwrite"
)

// Canister signatures (IC interface specification, section "Canister signatures") are the key
// type Internet Identity's delegation chains start at: a canister "signs" a payload by putting
// sig/<sha256(seed)>/<sha256(payload)> into a hash tree whose root hash is its certified data,
// and the signature is the IC's certificate of that data together with the tree.

// canisterSigOID is 1.3.6.1.4.1.56387.1.2 (dfinity.mechanisms.canister-signature).
var canisterSigOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 56387, 1, 2}

// canisterSigAlgorithm is the DER AlgorithmIdentifier of canister-signature keys: the OID alone,
// without parameters, as the IC, agent-js and Internet Identity encode it.
var canisterSigAlgorithm = []byte{0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb8, 0x43, 0x01, 0x02}

// ErrCanisterSig is returned (wrapped) for every refused canister signature or key.
var ErrCanisterSig = errors.New("canister signature")

// ErrCanisterSigNoRootKey is returned when a canister signature is to be verified without the IC
// root key.
var ErrCanisterSigNoRootKey = errors.New("canister signatures need the IC root key")

// CanisterSigPublicKey is a canister-signature public key: the signing canister and a seed the
// canister chose (Internet Identity derives it from the user and the app's origin).
type CanisterSigPublicKey struct {
	Canister principal.Principal
	Seed     []byte
}

// spki is a DER SubjectPublicKeyInfo.
type spki struct {
	Algorithm struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.RawValue `asn1:"optional"`
	}
	PublicKey asn1.BitString
}

// isCanisterSigKey is a cheap test of whether a DER key claims to be a canister-signature key.
func isCanisterSigKey(der []byte) bool { return hasAlgorithm(der, canisterSigAlgorithm) }

// ParseCanisterSigPublicKey parses the DER encoding of a canister-signature public key:
// SubjectPublicKeyInfo with OID 1.3.6.1.4.1.56387.1.2 and no parameters, whose key is
// len(canister id) as one byte ‖ canister id ‖ seed. The result does not alias der.
func ParseCanisterSigPublicKey(der []byte) (CanisterSigPublicKey, error) {
	var k spki
	rest, err := asn1.Unmarshal(der, &k)
	switch {
	case err != nil:
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: not DER: %v", ErrCanisterSig, err)
	case len(rest) != 0:
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: %d bytes after the DER", ErrCanisterSig, len(rest))
	case !k.Algorithm.Algorithm.Equal(canisterSigOID):
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: algorithm %v is not 1.3.6.1.4.1.56387.1.2", ErrCanisterSig, k.Algorithm.Algorithm)
	case len(k.Algorithm.Parameters.FullBytes) != 0:
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: algorithm parameters are not allowed", ErrCanisterSig)
	case k.PublicKey.BitLength%8 != 0:
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: bit string of %d bits", ErrCanisterSig, k.PublicKey.BitLength)
	}
	raw := k.PublicKey.Bytes
	if len(raw) == 0 {
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: empty", ErrCanisterSig)
	}
	n := int(raw[0])
	if n > MaxPrincipalBytes || len(raw) < 1+n {
		return CanisterSigPublicKey{}, fmt.Errorf("%w: public key: canister id of %d bytes in a key of %d", ErrCanisterSig, n, len(raw))
	}
	return CanisterSigPublicKey{
		Canister: principal.Principal{Raw: bytes.Clone(raw[1 : 1+n])},
		Seed:     bytes.Clone(raw[1+n:]),
	}, nil
}

// DER returns the DER encoding of k (SubjectPublicKeyInfo, as Internet Identity encodes it).
func (k CanisterSigPublicKey) DER() []byte {
	raw := make([]byte, 0, 1+len(k.Canister.Raw)+len(k.Seed))
	raw = append(append(append(raw, byte(len(k.Canister.Raw))), k.Canister.Raw...), k.Seed...)
	bitString := derTLV(0x03, append([]byte{0x00}, raw...))
	return derTLV(0x30, append(bytes.Clone(canisterSigAlgorithm), bitString...))
}

// derTLV encodes one DER item with a definite length.
func derTLV(tag byte, content []byte) []byte {
	n := len(content)
	out := []byte{tag}
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n <= 0xff:
		out = append(out, 0x81, byte(n))
	case n <= 0xffff:
		out = append(out, 0x82, byte(n>>8), byte(n))
	default:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, content...)
}

// CanisterSignature is a decoded canister signature: the certificate (CBOR, as the IC issued it)
// whose canister/<signing canister>/certified_data is the root hash of Tree, and Tree, which
// holds sig/<sha256(seed)>/<sha256(payload)>.
type CanisterSignature struct {
	Certificate []byte
	Tree        *hashtree.Node
}

// DecodeCanisterSignature parses a canister signature: the self-describe tag (which the IC
// requires), then a map {certificate: blob, tree: hash tree}. Unknown keys are skipped, duplicate
// keys refused; the tree decoder's bounds (hashtree.MaxDepth, hashtree.MaxNodes) apply. The result
// does not alias sig.
func DecodeCanisterSignature(sig []byte) (*CanisterSignature, error) {
	if len(sig) > certificate.MaxInputBytes {
		return nil, fmt.Errorf("%w: signature of %d bytes", ErrCanisterSig, len(sig))
	}
	if !bytes.HasPrefix(sig, SelfDescribeTag) {
		return nil, fmt.Errorf("%w: signature: no self-describe tag", ErrCanisterSig)
	}
	r := cborread.New(bytes.Clone(sig[len(SelfDescribeTag):]))
	pairs, err := r.MapHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrCanisterSig, err)
	}
	s := &CanisterSignature{}
	var sawCert bool
	for range pairs {
		key, err := r.Text()
		if err != nil {
			return nil, fmt.Errorf("%w: signature: key: %v", ErrCanisterSig, err)
		}
		switch string(key) {
		case "certificate":
			if sawCert {
				return nil, fmt.Errorf("%w: signature: duplicate certificate", ErrCanisterSig)
			}
			sawCert = true
			if s.Certificate, err = r.Bytes(); err != nil {
				return nil, fmt.Errorf("%w: signature: certificate: %v", ErrCanisterSig, err)
			}
		case "tree":
			if s.Tree != nil {
				return nil, fmt.Errorf("%w: signature: duplicate tree", ErrCanisterSig)
			}
			if s.Tree, err = hashtree.DecodeFrom(r); err != nil {
				return nil, fmt.Errorf("%w: signature: tree: %w", ErrCanisterSig, err)
			}
		default:
			if err := r.Skip(); err != nil {
				return nil, fmt.Errorf("%w: signature: value of %q: %v", ErrCanisterSig, key, err)
			}
		}
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrCanisterSig, err)
	}
	if !sawCert || s.Tree == nil {
		return nil, fmt.Errorf("%w: signature: certificate or tree missing", ErrCanisterSig)
	}
	return s, nil
}

// Encode returns the CBOR encoding of s behind the self-describe tag.
func (s *CanisterSignature) Encode() []byte {
	out := append(bytes.Clone(SelfDescribeTag), 0xa2)
	out = cborwrite.AppendHead(out, 3, uint64(len("certificate")))
	out = append(out, "certificate"...)
	out = cborwrite.AppendHead(out, 2, uint64(len(s.Certificate)))
	out = append(out, s.Certificate...)
	out = cborwrite.AppendHead(out, 3, uint64(len("tree")))
	out = append(out, "tree"...)
	return append(out, s.Tree.Encode()...)
}

// CanisterSigTree returns the tree a canister certifies to sign payload with the key of seed,
// sig/<sha256(seed)>/<sha256(payload)> with an empty leaf, as Internet Identity builds it for
// one signature.
func CanisterSigTree(seed, payload []byte) *hashtree.Node {
	s, m := sha256.Sum256(seed), sha256.Sum256(payload)
	return hashtree.NewLabeled([]byte("sig"), hashtree.NewLabeled(s[:], hashtree.NewLabeled(m[:], hashtree.NewLeaf(nil))))
}

// VerifyCanisterSignature checks that sig is a canister signature over payload (the domain
// separator included) by the canister-signature key pubDER, as the IC does: the tree is well
// formed and holds sig/<sha256(seed)>/<sha256(payload)> as an empty leaf; the certificate holds
// /time and canister/<signing canister>/certified_data equal to the tree's root hash; the
// certificate is signed by rootKey (DER), directly or through a subnet delegation whose canister
// ranges contain the signing canister. Like the IC's validator, it does not check how old the
// certificate is: a canister signature stays valid, and what it signs bounds its use (a
// delegation's expiration, a request's ingress_expiry). Cheap checks come first; the BLS
// pairings last.
func VerifyCanisterSignature(rootKey, pubDER, payload, sig []byte) error {
	if len(rootKey) == 0 {
		return ErrCanisterSigNoRootKey
	}
	key, err := ParseCanisterSigPublicKey(pubDER)
	if err != nil {
		return err
	}
	s, err := DecodeCanisterSignature(sig)
	if err != nil {
		return err
	}
	if err := s.Tree.WellFormed(); err != nil {
		return fmt.Errorf("%w: tree: %w", ErrCanisterSig, err)
	}
	seedHash, msgHash := sha256.Sum256(key.Seed), sha256.Sum256(payload)
	leaf, st := s.Tree.Lookup([]byte("sig"), seedHash[:], msgHash[:])
	if st != hashtree.Found || len(leaf) != 0 {
		return fmt.Errorf("%w: the tree does not hold sig/%x/%x as an empty leaf (%s)", ErrCanisterSig, seedHash, msgHash, st)
	}
	cert, err := certificate.Decode(s.Certificate)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCanisterSig, err)
	}
	if _, err := cert.Time(); err != nil {
		return fmt.Errorf("%w: %w", ErrCanisterSig, err)
	}
	data, st := cert.Tree.Lookup([]byte("canister"), key.Canister.Raw, []byte("certified_data"))
	if st != hashtree.Found {
		return fmt.Errorf("%w: certificate: canister/%s/certified_data is %s", ErrCanisterSig, key.Canister, st)
	}
	if root := s.Tree.Digest(); !bytes.Equal(data, root[:]) {
		return fmt.Errorf("%w: certified_data %x of canister %s is not the tree's root hash %x", ErrCanisterSig, data, key.Canister, root)
	}
	if err := cert.Verify(rootKey, key.Canister.Raw); err != nil {
		return fmt.Errorf("%w: %w", ErrCanisterSig, err)
	}
	return nil
}

// CanisterSigVerifier verifies canister signatures with state shared by every request an ingress
// policy checks. A canister signature costs two BLS pairing checks (milliseconds of CPU, against
// tens of microseconds for an Ed25519 signature) and can be sent by anyone before any
// authentication, so the verifier
//
//   - remembers the signatures that verified (digests only, a fixed number, the oldest forgotten
//     first), so that the delegation an Internet Identity session attaches to every request costs
//     its pairings once, not on every frame. A verified canister signature does not expire (see
//     VerifyCanisterSignature), so a remembered one is exactly as valid as on its first check;
//   - runs at most a fixed number of verifications at once (the others wait), so that a flood of
//     forged or fresh canister signatures cannot take every core from the frames of sessions
//     already open.
//
// Safe for concurrent use.
type CanisterSigVerifier struct {
	slots chan struct{}

	mu   sync.Mutex
	seen map[[32]byte]struct{}
	ring [][32]byte
	next int
}

// DefaultCanisterSigCacheSize is how many verified signatures NewCanisterSigVerifier(0, _)
// remembers: the sessions of a few thousand Internet Identity users.
const DefaultCanisterSigCacheSize = 4096

// NewCanisterSigVerifier returns a verifier that remembers up to cacheSize signatures (0: 4096)
// and runs at most concurrent verifications at once (0: one less than GOMAXPROCS, at least one).
func NewCanisterSigVerifier(cacheSize, concurrent int) *CanisterSigVerifier {
	if cacheSize <= 0 {
		cacheSize = DefaultCanisterSigCacheSize
	}
	if concurrent <= 0 {
		concurrent = max(1, runtime.GOMAXPROCS(0)-1)
	}
	return &CanisterSigVerifier{
		slots: make(chan struct{}, concurrent),
		seen:  make(map[[32]byte]struct{}, cacheSize),
		ring:  make([][32]byte, 0, cacheSize),
	}
}

// canisterSigDigest names one verification: every input, each length-prefixed.
func canisterSigDigest(parts ...[]byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func (v *CanisterSigVerifier) has(d [32]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.seen[d]
	return ok
}

func (v *CanisterSigVerifier) add(d [32]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[d]; ok {
		return
	}
	if len(v.ring) < cap(v.ring) {
		v.ring = append(v.ring, d)
	} else {
		delete(v.seen, v.ring[v.next])
		v.ring[v.next] = d
		v.next = (v.next + 1) % len(v.ring)
	}
	v.seen[d] = struct{}{}
}

// Verify is VerifyCanisterSignature through the verifier: a signature it verified before (with the
// same root key, key and payload) is accepted at once; any other waits for a free slot. A nil
// verifier checks every signature, without limit.
func (v *CanisterSigVerifier) Verify(rootKey, pubDER, payload, sig []byte) error {
	if v == nil {
		return VerifyCanisterSignature(rootKey, pubDER, payload, sig)
	}
	d := canisterSigDigest(rootKey, pubDER, payload, sig)
	if v.has(d) {
		return nil
	}
	v.slots <- struct{}{}
	err := VerifyCanisterSignature(rootKey, pubDER, payload, sig)
	<-v.slots
	if err != nil {
		return err
	}
	v.add(d)
	return nil
}
