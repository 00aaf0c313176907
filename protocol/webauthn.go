package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"

	"github.com/icws/icws/protocol/internal/cborread"
)

// WebAuthn keys (IC interface specification, section "Web Authentication"), with which agent-js's
// WebAuthnIdentity signs: a COSE key (ECDSA P-256 or RSA PKCS#1 v1.5, both over SHA-256) wrapped in
// DER, and a signature that is the authenticator's assertion over a challenge that is the payload.

// webAuthnOID is 1.3.6.1.4.1.56387.1.1 (dfinity.mechanisms.der-wrapped-cose).
var webAuthnOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 56387, 1, 1}

// webAuthnAlgorithm is the DER AlgorithmIdentifier of WebAuthn keys.
var webAuthnAlgorithm = []byte{0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb8, 0x43, 0x01, 0x01}

// ErrWebAuthn is returned (wrapped) for every refused WebAuthn key or signature.
var ErrWebAuthn = errors.New("webauthn")

// COSE labels and values (RFC 8152, RFC 8230, RFC 8812) of the two key types the IC accepts.
const (
	coseKty       = 1
	coseAlg       = 3
	coseKeyOps    = 4
	coseEC2Crv    = -1
	coseEC2X      = -2
	coseEC2Y      = -3
	coseRSAN      = -1
	coseRSAE      = -2
	coseKtyEC2    = 2
	coseKtyRSA    = 3
	coseAlgES256  = -7
	coseAlgRS256  = -257
	coseCrvP256   = 1
	minRSAKeyBits = 2048
	maxRSAKeyBits = 8192
	rsaExponent   = 65537
)

// isWebAuthnKey is a cheap test of whether a DER key claims to be a COSE key.
func isWebAuthnKey(der []byte) bool { return hasAlgorithm(der, webAuthnAlgorithm) }

// hasAlgorithm reports whether der is a SEQUENCE whose first element is algorithm.
func hasAlgorithm(der, algorithm []byte) bool {
	if len(der) < 2 || der[0] != 0x30 {
		return false
	}
	rest := der[2:]
	switch der[1] {
	case 0x81:
		rest = der[min(3, len(der)):]
	case 0x82:
		rest = der[min(4, len(der)):]
	}
	return bytes.HasPrefix(rest, algorithm)
}

// isRSAWebAuthnKey reports whether der is a COSE RSA key, whose verification costs the most.
func isRSAWebAuthnKey(der []byte) bool {
	if !isWebAuthnKey(der) {
		return false
	}
	pk, err := ParseWebAuthnPublicKey(der)
	_, rsaKey := pk.(*rsa.PublicKey)
	return err == nil && rsaKey
}

// coseValue is one value of a COSE key map: an integer or a byte or text string.
type coseValue struct {
	isInt bool
	n     int64
	b     []byte
	text  bool
}

// ParseWebAuthnPublicKey parses a DER-wrapped COSE key (SubjectPublicKeyInfo with OID
// 1.3.6.1.4.1.56387.1.1) as the IC does: an EC2 key with alg ES256 on P-256, or an RSA key with
// alg RS256 of 2048 to 8192 bits; key_ops, if present, must be "verify". Unlike the IC, an RSA
// key must have the exponent 65537 (what authenticators use): a large exponent would make one
// verification cost tens of milliseconds. It returns an *ecdsa.PublicKey or an *rsa.PublicKey.
func ParseWebAuthnPublicKey(der []byte) (crypto.PublicKey, error) {
	var k spki
	rest, err := asn1.Unmarshal(der, &k)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: public key: not DER: %v", ErrWebAuthn, err)
	case len(rest) != 0:
		return nil, fmt.Errorf("%w: public key: %d bytes after the DER", ErrWebAuthn, len(rest))
	case !k.Algorithm.Algorithm.Equal(webAuthnOID):
		return nil, fmt.Errorf("%w: public key: algorithm %v is not 1.3.6.1.4.1.56387.1.1", ErrWebAuthn, k.Algorithm.Algorithm)
	case len(k.Algorithm.Parameters.FullBytes) != 0:
		return nil, fmt.Errorf("%w: public key: algorithm parameters are not allowed", ErrWebAuthn)
	case k.PublicKey.BitLength%8 != 0:
		return nil, fmt.Errorf("%w: public key: bit string of %d bits", ErrWebAuthn, k.PublicKey.BitLength)
	}
	fields, err := decodeCOSEKey(k.PublicKey.Bytes)
	if err != nil {
		return nil, err
	}
	num := func(label int64) (int64, bool) {
		v, ok := fields[label]
		return v.n, ok && v.isInt
	}
	bin := func(label int64) ([]byte, bool) {
		v, ok := fields[label]
		return v.b, ok && !v.isInt && !v.text
	}
	kty, ok1 := num(coseKty)
	alg, ok2 := num(coseAlg)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: COSE key without kty or alg", ErrWebAuthn)
	}
	if ops, ok := fields[coseKeyOps]; ok && (!ops.text || string(ops.b) != "verify") {
		return nil, fmt.Errorf("%w: COSE key_ops other than \"verify\"", ErrWebAuthn)
	}
	switch {
	case kty == coseKtyEC2 && alg == coseAlgES256:
		crv, ok := num(coseEC2Crv)
		x, okX := bin(coseEC2X)
		y, okY := bin(coseEC2Y)
		if !ok || crv != coseCrvP256 {
			return nil, fmt.Errorf("%w: COSE EC2 key not on P-256", ErrWebAuthn)
		}
		if !okX || !okY || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("%w: COSE EC2 key without 32-byte x and y", ErrWebAuthn)
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{0x04}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("%w: COSE EC2 key: %v", ErrWebAuthn, err)
		}
		return pk, nil
	case kty == coseKtyRSA && alg == coseAlgRS256:
		n, okN := bin(coseRSAN)
		e, okE := bin(coseRSAE)
		if !okN || !okE {
			return nil, fmt.Errorf("%w: COSE RSA key without n and e", ErrWebAuthn)
		}
		nn, ee := new(big.Int).SetBytes(n), new(big.Int).SetBytes(e)
		if bits := nn.BitLen(); bits < minRSAKeyBits || bits > maxRSAKeyBits {
			return nil, fmt.Errorf("%w: COSE RSA key of %d bits (%d to %d allowed)", ErrWebAuthn, bits, minRSAKeyBits, maxRSAKeyBits)
		}
		if !ee.IsInt64() || ee.Int64() != rsaExponent {
			return nil, fmt.Errorf("%w: COSE RSA key with exponent %v (only %d is served)", ErrWebAuthn, ee, rsaExponent)
		}
		return &rsa.PublicKey{N: nn, E: rsaExponent}, nil
	}
	return nil, fmt.Errorf("%w: COSE key type %d with algorithm %d is not supported", ErrWebAuthn, kty, alg)
}

// decodeCOSEKey reads a COSE key map: integer labels, values that are integers or strings. Other
// values are skipped; a repeated label is refused.
func decodeCOSEKey(b []byte) (map[int64]coseValue, error) {
	r := cborread.New(b)
	pairs, err := r.MapHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: COSE key: %v", ErrWebAuthn, err)
	}
	fields := make(map[int64]coseValue, pairs)
	seen := make(map[int64]bool, pairs)
	readInt := func() (int64, bool, error) {
		major, arg, err := r.Head()
		if err != nil {
			return 0, false, err
		}
		switch {
		case major == cborread.MajorUint && arg <= 1<<62:
			return int64(arg), true, nil
		case major == cborread.MajorNegInt && arg <= 1<<62:
			return -1 - int64(arg), true, nil
		}
		return 0, false, nil
	}
	for range pairs {
		label, ok, err := readInt()
		if err != nil || !ok {
			return nil, fmt.Errorf("%w: COSE key: a label that is not an integer (%v)", ErrWebAuthn, err)
		}
		if seen[label] {
			return nil, fmt.Errorf("%w: COSE key: label %d twice", ErrWebAuthn, label)
		}
		seen[label] = true
		var v coseValue
		major, _ := r.PeekMajor()
		switch major {
		case cborread.MajorBytes:
			v.b, err = r.Bytes()
		case cborread.MajorText:
			v.b, err = r.Text()
			v.text = true
		case cborread.MajorUint, cborread.MajorNegInt:
			v.n, v.isInt, err = readInt()
			if err == nil && !v.isInt {
				continue // an integer beyond int64: no label the IC reads takes one
			}
		default:
			if err := r.Skip(); err != nil {
				return nil, fmt.Errorf("%w: COSE key: %v", ErrWebAuthn, err)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: COSE key: label %d: %v", ErrWebAuthn, label, err)
		}
		fields[label] = v
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("%w: COSE key: %v", ErrWebAuthn, err)
	}
	return fields, nil
}

// WebAuthnSignature is a decoded WebAuthn signature: the authenticator's data, the client data
// (JSON, as the browser produced it) and the signature over authenticator data ‖
// sha256(client data).
type WebAuthnSignature struct {
	AuthenticatorData []byte
	ClientDataJSON    []byte
	Signature         []byte
}

// DecodeWebAuthnSignature parses the CBOR map {authenticator_data, client_data_json, signature}
// (self-describe tag optional; client_data_json a text or byte string, as agent-js sends text).
// Unknown keys are skipped, repeated ones refused. The result does not alias sig.
func DecodeWebAuthnSignature(sig []byte) (*WebAuthnSignature, error) {
	r := cborread.New(bytes.Clone(sig))
	r.SkipSelfDescribe()
	pairs, err := r.MapHeader()
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrWebAuthn, err)
	}
	s := &WebAuthnSignature{}
	for range pairs {
		key, err := r.Text()
		if err != nil {
			return nil, fmt.Errorf("%w: signature: key: %v", ErrWebAuthn, err)
		}
		var field *[]byte
		switch string(key) {
		case "authenticator_data":
			field = &s.AuthenticatorData
		case "client_data_json":
			field = &s.ClientDataJSON
		case "signature":
			field = &s.Signature
		default:
			if err := r.Skip(); err != nil {
				return nil, fmt.Errorf("%w: signature: value of %q: %v", ErrWebAuthn, key, err)
			}
			continue
		}
		if *field != nil {
			return nil, fmt.Errorf("%w: signature: %s twice", ErrWebAuthn, key)
		}
		var v []byte
		if major, _ := r.PeekMajor(); major == cborread.MajorText && string(key) == "client_data_json" {
			v, err = r.Text()
		} else {
			v, err = r.Bytes()
		}
		if err != nil {
			return nil, fmt.Errorf("%w: signature: %s: %v", ErrWebAuthn, key, err)
		}
		*field = v
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrWebAuthn, err)
	}
	if s.AuthenticatorData == nil || s.ClientDataJSON == nil || s.Signature == nil {
		return nil, fmt.Errorf("%w: signature: authenticator_data, client_data_json or signature missing", ErrWebAuthn)
	}
	return s, nil
}

// VerifyWebAuthnSignature checks that sig is a WebAuthn assertion over payload (the domain
// separator included) by the DER-wrapped COSE key pubDER, as the IC does: the client data is a
// JSON object with the string fields type, challenge and origin, whose challenge is the base64url
// encoding (unpadded) of payload, and the signature (DER for ECDSA) verifies over authenticator
// data ‖ sha256(client data). Like the IC, it checks neither type nor origin.
func VerifyWebAuthnSignature(pubDER, payload, sig []byte) error {
	pub, err := ParseWebAuthnPublicKey(pubDER)
	if err != nil {
		return err
	}
	s, err := DecodeWebAuthnSignature(sig)
	if err != nil {
		return err
	}
	var clientData map[string]json.RawMessage
	if err := json.Unmarshal(s.ClientDataJSON, &clientData); err != nil {
		return fmt.Errorf("%w: client data: %v", ErrWebAuthn, err)
	}
	field := func(name string) (string, error) {
		var v string
		raw, ok := clientData[name]
		if !ok {
			return "", fmt.Errorf("%w: client data without %s", ErrWebAuthn, name)
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", fmt.Errorf("%w: client data %s: %v", ErrWebAuthn, name, err)
		}
		return v, nil
	}
	challenge := ""
	for _, name := range []string{"type", "challenge", "origin"} {
		v, err := field(name)
		if err != nil {
			return err
		}
		if name == "challenge" {
			challenge = v
		}
	}
	signed, err := base64.RawURLEncoding.DecodeString(challenge)
	if err != nil {
		return fmt.Errorf("%w: challenge is not base64url: %v", ErrWebAuthn, err)
	}
	if !bytes.Equal(signed, payload) {
		return fmt.Errorf("%w: the challenge is not the signed payload", ErrWebAuthn)
	}
	clientHash := sha256.Sum256(s.ClientDataJSON)
	digest := sha256.Sum256(append(bytes.Clone(s.AuthenticatorData), clientHash[:]...))
	switch pk := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pk, digest[:], s.Signature) {
			return fmt.Errorf("%w: ECDSA signature verification failed", ErrWebAuthn)
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pk, crypto.SHA256, digest[:], s.Signature); err != nil {
			return fmt.Errorf("%w: RSA signature verification failed", ErrWebAuthn)
		}
	}
	return nil
}
