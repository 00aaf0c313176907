package certificate

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"

	bls12381 "github.com/consensys/gnark-crypto/ecc/bls12-381"
	"github.com/icws/icws/protocol/hashtree"
)

// Errors returned (wrapped) by Verify.
var (
	ErrSignature  = errors.New("certificate: signature does not verify")
	ErrDelegation = errors.New("certificate: delegation not valid")
	ErrKey        = errors.New("certificate: public key not valid")
)

// domainStateRoot prefixes the root hash that a certificate's signature covers.
var domainStateRoot = []byte("\x0Dic-state-root")

// blsDST is the ciphersuite of IC signatures: BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_.
var blsDST = []byte("BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_")

// Verify checks that c is signed by rootKey (DER), directly or through a delegation to a subnet
// whose canister ranges contain canister (raw principal bytes). It checks signatures and scope,
// not time: see Time.
func (c *Certificate) Verify(rootKey, canister []byte) error {
	key, err := parseBLSKeyDER(rootKey)
	if err != nil {
		return fmt.Errorf("root key: %w", err)
	}
	if d := c.Delegation; d != nil {
		if key, err = d.verify(key, canister); err != nil {
			return err
		}
	}
	return c.verifySignature(key)
}

// VerifyBLS checks a BLS signature (48-byte compressed G1 point) over msg with a public key
// (96-byte compressed G2 point).
func VerifyBLS(publicKey []byte, signature, msg []byte) error {
	var pk bls12381.G2Affine
	if len(publicKey) != bls12381.SizeOfG2AffineCompressed {
		return fmt.Errorf("%w: BLS key of %d bytes", ErrKey, len(publicKey))
	}
	if _, err := pk.SetBytes(publicKey); err != nil || pk.IsInfinity() {
		return fmt.Errorf("%w: not a BLS12-381 G2 point", ErrKey)
	}
	return verifyBLS(&pk, signature, msg)
}

func verifyBLS(pk *bls12381.G2Affine, signature, msg []byte) error {
	return verifyBLSWith(pk, nil, signature, msg)
}

// millerLines are the precomputed Miller-loop lines of a fixed G2 point.
type millerLines = [2][len(bls12381.LoopCounter) - 1]bls12381.LineEvaluationAff

// fixedKeys are the lines of -g2 and of a public key that verifies many signatures: the pairing
// check then skips the G2 arithmetic of its Miller loop.
type fixedKeys struct {
	negG2, pk *millerLines
}

// verifyBLSWith checks the signature with the pairing check over fixed lines when it has them.
func verifyBLSWith(pk *bls12381.G2Affine, fixed *fixedKeys, signature, msg []byte) error {
	var sig bls12381.G1Affine
	if len(signature) != bls12381.SizeOfG1AffineCompressed {
		return fmt.Errorf("%w: signature of %d bytes", ErrSignature, len(signature))
	}
	// SetBytes checks that the point is on the curve and in the prime-order subgroup.
	if _, err := sig.SetBytes(signature); err != nil || sig.IsInfinity() {
		return fmt.Errorf("%w: not a BLS12-381 G1 point", ErrSignature)
	}
	h, err := bls12381.HashToG1(msg, blsDST)
	if err != nil {
		return fmt.Errorf("%w: hash to curve: %w", ErrSignature, err)
	}
	// e(sig, -g2) · e(H(msg), pk) == 1
	var ok bool
	if fixed != nil {
		ok, err = bls12381.PairingCheckFixedQ([]bls12381.G1Affine{sig, h}, []millerLines{*fixed.negG2, *fixed.pk})
	} else {
		ok, err = bls12381.PairingCheck([]bls12381.G1Affine{sig, h}, []bls12381.G2Affine{negG2(), *pk})
	}
	if err != nil || !ok {
		return ErrSignature
	}
	return nil
}

func negG2() bls12381.G2Affine {
	_, _, _, g2 := bls12381.Generators()
	var n bls12381.G2Affine
	n.Neg(&g2)
	return n
}

func (c *Certificate) verifySignature(key *bls12381.G2Affine) error {
	return c.verifySignatureWith(key, nil)
}

func (c *Certificate) verifySignatureWith(key *bls12381.G2Affine, fixed *fixedKeys) error {
	root := c.Tree.Digest()
	return verifyBLSWith(key, fixed, c.Signature, append(bytes.Clone(domainStateRoot), root[:]...))
}

// verify checks the delegation against the root key and the canister, and returns the subnet key.
func (d *Delegation) verify(root *bls12381.G2Affine, canister []byte) (*bls12381.G2Affine, error) {
	return d.verifyWith(root, nil, canister)
}

func (d *Delegation) verifyWith(root *bls12381.G2Affine, fixed *fixedKeys, canister []byte) (*bls12381.G2Affine, error) {
	inner := d.Certificate
	if inner == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrDelegation)
	}
	if inner.Delegation != nil {
		return nil, fmt.Errorf("%w: nested delegation", ErrDelegation)
	}
	if err := inner.verifySignatureWith(root, fixed); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDelegation, err)
	}
	der, st := inner.Tree.Lookup([]byte("subnet"), d.SubnetID, []byte("public_key"))
	if st != hashtree.Found {
		return nil, fmt.Errorf("%w: subnet public key is %s", ErrDelegation, st)
	}
	key, err := parseBLSKeyDER(der)
	if err != nil {
		return nil, fmt.Errorf("%w: subnet public key: %w", ErrDelegation, err)
	}
	if err := d.checkScope(canister); err != nil {
		return nil, err
	}
	return key, nil
}

// checkScope checks that the delegation's subnet holds canister.
func (d *Delegation) checkScope(canister []byte) error {
	ok, err := SubnetHasCanister(d.Certificate.Tree, d.SubnetID, canister)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDelegation, err)
	}
	if !ok {
		return fmt.Errorf("%w: canister %x is not in the subnet's canister ranges", ErrDelegation, canister)
	}
	return nil
}

// DER prefixes of the two key types certificates carry.
var (
	// blsDERPrefix: SubjectPublicKeyInfo with algorithm 1.3.6.1.4.1.44668.5.3.1.2.1 and curve
	// 1.3.6.1.4.1.44668.5.3.2.1, then a 96-byte bit string.
	blsDERPrefix = []byte{
		0x30, 0x81, 0x82, 0x30, 0x1d, 0x06, 0x0d, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05,
		0x03, 0x01, 0x02, 0x01, 0x06, 0x0c, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05, 0x03,
		0x02, 0x01, 0x03, 0x61, 0x00,
	}
	// ed25519DERPrefix: RFC 8410 SubjectPublicKeyInfo, then a 32-byte bit string.
	ed25519DERPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
)

// ParseBLSPublicKeyDER checks the DER encoding of a BLS12-381 public key (the root key, subnet
// keys) and returns the 96-byte compressed key. Only the one encoding the IC uses is accepted.
func ParseBLSPublicKeyDER(der []byte) ([]byte, error) {
	if _, err := parseBLSKeyDER(der); err != nil {
		return nil, err
	}
	return bytes.Clone(der[len(blsDERPrefix):]), nil
}

func parseBLSKeyDER(der []byte) (*bls12381.G2Affine, error) {
	raw, ok := bytes.CutPrefix(der, blsDERPrefix)
	if !ok || len(raw) != bls12381.SizeOfG2AffineCompressed {
		return nil, fmt.Errorf("%w: not a DER BLS12-381 public key", ErrKey)
	}
	var pk bls12381.G2Affine
	if _, err := pk.SetBytes(raw); err != nil || pk.IsInfinity() {
		return nil, fmt.Errorf("%w: not a BLS12-381 G2 point", ErrKey)
	}
	return &pk, nil
}

// BLSPublicKeyDER returns the DER encoding of a 96-byte compressed BLS12-381 public key.
func BLSPublicKeyDER(raw []byte) ([]byte, error) {
	if len(raw) != bls12381.SizeOfG2AffineCompressed {
		return nil, fmt.Errorf("%w: BLS key of %d bytes", ErrKey, len(raw))
	}
	return append(bytes.Clone(blsDERPrefix), raw...), nil
}

// ParseEd25519PublicKeyDER parses the DER encoding of an Ed25519 public key (node keys).
func ParseEd25519PublicKeyDER(der []byte) (ed25519.PublicKey, error) {
	raw, ok := bytes.CutPrefix(der, ed25519DERPrefix)
	if !ok || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: not a DER Ed25519 public key", ErrKey)
	}
	return ed25519.PublicKey(bytes.Clone(raw)), nil
}

// Ed25519PublicKeyDER returns the DER encoding of an Ed25519 public key.
func Ed25519PublicKeyDER(pub ed25519.PublicKey) []byte {
	return append(bytes.Clone(ed25519DERPrefix), pub...)
}
