package protocol

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/aviate-labs/secp256k1"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/internal/textlimit"
)

// MaxPrincipalBytes is the longest principal the IC accepts.
const MaxPrincipalBytes = 29

// Limits of ingress validation, as in the IC's validator and the interface spec.
const (
	maxNonceBytes     = 32
	maxDelegations    = 20
	maxTargets        = 1000
	anonymousSenderID = 0x04
	// maxCostlySigs bounds the canister signatures and RSA WebAuthn signatures of one envelope,
	// which the IC does not: each costs milliseconds (BLS pairings; an 8192-bit modulus), where
	// the IC's 20 delegations would let one frame cost a third of a second. Internet Identity's
	// chains hold one canister signature.
	maxCostlySigs = 2
)

var (
	ed25519DERPrefix   = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
	secp256k1DERPrefix = []byte{0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00}
	p256DERPrefix      = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}
	delegationDomain   = []byte("\x1Aic-request-auth-delegation")
)

// IngressPolicy holds the knobs of ingress validation.
type IngressPolicy struct {
	MaxTTL time.Duration // longest accepted ingress_expiry ahead of now (IC: 5m)
	Drift  time.Duration // clock drift allowance added to the window (IC: 30s)
	// RootKey is the IC root key (DER) that canister signatures are verified against (the keys
	// Internet Identity's delegation chains start at). Without it, canister-signature keys are
	// refused with ErrCanisterSigNoRootKey.
	RootKey []byte
	// CanisterSigs, when set, remembers canister signatures that verified, so that the same
	// delegation on every request of a session costs its BLS pairings once, and bounds how many
	// are verified at once (see CanisterSigVerifier).
	CanisterSigs *CanisterSigVerifier
}

// Request is a verified request.
type Request struct {
	ID        RequestID
	Type      string // RequestCall, RequestQuery or RequestReadState
	Sender    principal.Principal
	Anonymous bool // sender is the anonymous principal (verified: the envelope carries no key or signature)
	Expiry    time.Time
	Canister  principal.Principal // call and query
	Method    string              // call and query
	Arg       []byte              // call and query; never nil
	Paths     [][][]byte          // read_state
	Nonce     []byte
	// Targets are the canisters the delegation chain allows; nil allows any.
	Targets [][]byte
}

// TargetAllowed reports whether the sender's delegation chain allows requests to canister.
func (r *Request) TargetAllowed(canister principal.Principal) bool {
	if r.Targets == nil {
		return true
	}
	for _, t := range r.Targets {
		if bytes.Equal(t, canister.Raw) {
			return true
		}
	}
	return false
}

// IngressErrorKind tells which check refused a request.
type IngressErrorKind int

// Kinds of IngressError.
const (
	// IngressMalformed: not CBOR, not an envelope, a field missing or of the wrong type.
	IngressMalformed IngressErrorKind = iota + 1
	// IngressRequestType: a well-formed request of another type than the one expected.
	IngressRequestType
	// IngressExpiry: ingress_expiry outside [now, now+MaxTTL+Drift].
	IngressExpiry
	// IngressNonce: a nonce longer than 32 bytes.
	IngressNonce
	// IngressSignature: a missing or wrong sender_sig, a sender that is not the self-authenticating
	// id of sender_pubkey, or an anonymous sender with a key, signature or delegation.
	IngressSignature
	// IngressDelegation: a delegation chain that is malformed, wrongly signed, expired, cyclic, too
	// long, or does not allow the request's canister.
	IngressDelegation
	// IngressRefused: refused by a precheck of the caller.
	IngressRefused
)

func (k IngressErrorKind) String() string {
	switch k {
	case IngressMalformed:
		return "malformed"
	case IngressRequestType:
		return "request_type"
	case IngressExpiry:
		return "expiry"
	case IngressNonce:
		return "nonce"
	case IngressSignature:
		return "signature"
	case IngressDelegation:
		return "delegation"
	case IngressRefused:
		return "refused"
	}
	return fmt.Sprintf("IngressErrorKind(%d)", int(k))
}

// IngressError is a refused request. Msg is worded as the IC words its HTTP 400 answers.
type IngressError struct {
	Kind IngressErrorKind
	Msg  string
	// Err is what a precheck returned (kind IngressRefused); nil otherwise.
	Err error
}

func (e *IngressError) Error() string { return e.Msg }

// Unwrap returns the precheck's error, if any.
func (e *IngressError) Unwrap() error { return e.Err }

func ingressError(kind IngressErrorKind, format string, args ...any) *IngressError {
	return &IngressError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Precheck inspects a decoded request before its expiry and signatures are checked: cheap
// refusals (a canister not served, a method not allowed, the URL's effective canister id) cost no
// signature verification, and they come first as on the IC. The request's fields are set except
// Targets, and nothing in it is authenticated yet.
type Precheck func(*Request) error

// VerifyEnvelope decodes and authenticates an encoded envelope {content, sender_pubkey,
// sender_sig, sender_delegation} (self-describe tag optional) of request type wantType as the IC's
// ingress validator does: CBOR without duplicate keys, the content fields of wantType, a nonce of
// at most 32 bytes, the request id, the prechecks, ingress_expiry within [now, now+MaxTTL+Drift],
// then the sender: anonymous without key or signature, or the self-authenticating id of
// sender_pubkey with sender_sig over "\x0Aic-request" ‖ request id by the last key of the
// delegation chain (Ed25519, ECDSA secp256k1, ECDSA P-256, a canister signature verified against
// RootKey, or a WebAuthn assertion by a COSE key). Errors are *IngressError; a
// precheck's *IngressError is returned as is, any other precheck error is wrapped in one of kind
// IngressRefused.
func (p IngressPolicy) VerifyEnvelope(envelope []byte, wantType string, now time.Time, prechecks ...Precheck) (*Request, error) {
	var env envelopeFields
	if err := icDecMode.Unmarshal(StripSelfDescribe(envelope), &env); err != nil {
		return nil, ingressError(IngressMalformed, "Could not parse body as %s message: %v", wantType, err)
	}
	if len(env.Content) == 0 {
		return nil, ingressError(IngressMalformed, "Could not parse body as %s message: missing field `content`", wantType)
	}
	req, ierr := decodeContent(env.Content, wantType)
	if ierr != nil {
		return nil, ierr
	}
	for _, check := range prechecks {
		if err := check(req); err != nil {
			var ie *IngressError
			if errors.As(err, &ie) {
				return nil, ie
			}
			return nil, &IngressError{Kind: IngressRefused, Msg: err.Error(), Err: err}
		}
	}
	minExpiry, maxExpiry := now, now.Add(p.MaxTTL+p.Drift)
	if req.Expiry.Before(minExpiry) || req.Expiry.After(maxExpiry) {
		return nil, ingressError(IngressExpiry, "Invalid request expiry: Specified ingress_expiry not within expected range: Minimum allowed expiry: %s, Maximum allowed expiry: %s, Provided expiry: %s",
			minExpiry.UTC().Format(time.RFC3339Nano), maxExpiry.UTC().Format(time.RFC3339Nano), req.Expiry.UTC().Format(time.RFC3339Nano))
	}
	if ierr := p.authenticate(req, &env, now); ierr != nil {
		return nil, ierr
	}
	return req, nil
}

type envelopeFields struct {
	Content          cbor.RawMessage    `cbor:"content"`
	SenderPubKey     []byte             `cbor:"sender_pubkey"`
	SenderSig        []byte             `cbor:"sender_sig"`
	SenderDelegation []signedDelegation `cbor:"sender_delegation"`
}

type signedDelegation struct {
	Delegation cbor.RawMessage `cbor:"delegation"`
	Signature  []byte          `cbor:"signature"`
}

type delegation struct {
	PubKey     []byte    `cbor:"pubkey"`
	Expiration uint64    `cbor:"expiration"`
	Targets    *[][]byte `cbor:"targets"`
}

func decodeContent(raw []byte, wantType string) (*Request, *IngressError) {
	malformed := func(format string, args ...any) *IngressError {
		return ingressError(IngressMalformed, "Could not parse body as %s message: "+format, append([]any{wantType}, args...)...)
	}
	switch wantType {
	case RequestCall, RequestQuery, RequestReadState:
	default:
		return nil, malformed("unknown request type")
	}
	var fields map[string]cbor.RawMessage
	if err := icDecMode.Unmarshal(StripSelfDescribe(raw), &fields); err != nil {
		return nil, malformed("content: %v", err)
	}
	// The request id hashes every field, and everything is checked before the signature: a field
	// no request type has may hold a blob, text or nat, never an array or map, whose hash would
	// cost far more than its bytes (a megabyte of small integers, seconds of CPU).
	for name, b := range fields {
		if !isContentField(wantType, name) && !isScalar(b) {
			return nil, malformed("unknown field `%s` is not a blob, text or nat", textlimit.Cut(name, 64))
		}
	}
	req := &Request{}
	field := func(name string, out any, required bool) *IngressError {
		b, ok := fields[name]
		if ok && isNull(b) {
			// The request id leaves a null out, so an optional null is an absent field; a required
			// one must not decode as a zero value (an empty canister_id is the management canister).
			if required {
				return malformed("invalid field `%s`: null", name)
			}
			ok = false
		}
		if !ok {
			if required {
				return malformed("missing field `%s`", name)
			}
			return nil
		}
		if err := icDecMode.Unmarshal(b, out); err != nil {
			return malformed("invalid field `%s`: %v", name, err)
		}
		return nil
	}
	if ierr := field("request_type", &req.Type, true); ierr != nil {
		return nil, ierr
	}
	if req.Type != wantType {
		return nil, ingressError(IngressRequestType, "Could not parse body as %s message: request_type is %q", wantType, req.Type)
	}
	var sender []byte
	var expiry uint64
	if ierr := firstError(
		field("sender", &sender, true),
		field("ingress_expiry", &expiry, true),
		field("nonce", &req.Nonce, false),
	); ierr != nil {
		return nil, ierr
	}
	if len(req.Nonce) > maxNonceBytes {
		return nil, ingressError(IngressNonce, "Invalid nonce: nonce of %d bytes exceeds the maximum of %d bytes", len(req.Nonce), maxNonceBytes)
	}
	if len(sender) > MaxPrincipalBytes {
		return nil, malformed("sender of %d bytes is not a principal", len(sender))
	}
	req.Sender = principal.Principal{Raw: sender}
	req.Anonymous = len(sender) == 1 && sender[0] == anonymousSenderID
	if expiry > uint64(1<<63-1) {
		return nil, ingressError(IngressExpiry, "Invalid request expiry: %d is out of range", expiry)
	}
	req.Expiry = time.Unix(0, int64(expiry))
	switch wantType {
	case RequestCall, RequestQuery:
		var canister []byte
		if ierr := firstError(
			field("canister_id", &canister, true),
			field("method_name", &req.Method, true),
			field("arg", &req.Arg, true),
		); ierr != nil {
			return nil, ierr
		}
		if len(canister) > MaxPrincipalBytes {
			return nil, malformed("canister_id of %d bytes is not a principal", len(canister))
		}
		req.Canister = principal.Principal{Raw: canister}
		if req.Arg == nil {
			req.Arg = []byte{}
		}
	case RequestReadState:
		if ierr := field("paths", &req.Paths, true); ierr != nil {
			return nil, ierr
		}
	}
	// Hashed once every field it knows has the type it must have.
	id, err := RequestIDOfContent(raw)
	if err != nil {
		return nil, malformed("%v", err)
	}
	req.ID = id
	return req, nil
}

// isNull reports whether an encoded value is CBOR null or undefined, self-describe tags aside.
// isContentField reports whether name is a field of the content of requestType (IC interface
// specification).
func isContentField(requestType, name string) bool {
	switch name {
	case "request_type", "sender", "ingress_expiry", "nonce":
		return true
	case "canister_id", "method_name", "arg":
		return requestType == RequestCall || requestType == RequestQuery
	case "paths":
		return requestType == RequestReadState
	}
	return false
}

// isScalar reports whether the CBOR value b is an unsigned integer, a byte or text string, or
// null (after any self-describe tags).
func isScalar(b []byte) bool {
	for bytes.HasPrefix(b, SelfDescribeTag) {
		b = b[len(SelfDescribeTag):]
	}
	if len(b) == 0 {
		return false
	}
	switch b[0] >> 5 {
	case 0, 2, 3: // unsigned integer, byte string, text string
		return true
	}
	return isNull(b)
}

func isNull(b []byte) bool {
	for bytes.HasPrefix(b, SelfDescribeTag) {
		b = b[len(SelfDescribeTag):]
	}
	return len(b) == 1 && (b[0] == 0xf6 || b[0] == 0xf7)
}

func firstError(list ...*IngressError) *IngressError {
	for _, e := range list {
		if e != nil {
			return e
		}
	}
	return nil
}

func (p IngressPolicy) authenticate(req *Request, env *envelopeFields, now time.Time) *IngressError {
	if env.SenderPubKey == nil && env.SenderSig == nil && env.SenderDelegation == nil {
		if !req.Anonymous {
			return ingressError(IngressSignature, "Invalid signature: Missing signature for non-anonymous sender %s", req.Sender)
		}
		return nil
	}
	if req.Anonymous {
		return ingressError(IngressSignature, "Invalid signature: The anonymous user must not send a public key, signature or delegation")
	}
	if env.SenderPubKey == nil || env.SenderSig == nil {
		return ingressError(IngressSignature, "Invalid signature: sender_pubkey and sender_sig must both be present")
	}
	if want := principal.NewSelfAuthenticating(env.SenderPubKey); !want.Equal(req.Sender) {
		return ingressError(IngressSignature, "Invalid signature: The user id %s does not match the public key %x", req.Sender, env.SenderPubKey)
	}
	if len(env.SenderDelegation) > maxDelegations {
		return ingressError(IngressDelegation, "Invalid delegation: Chain of delegations is too long: got %d delegations, but at most %d are allowed", len(env.SenderDelegation), maxDelegations)
	}
	// The cheap checks of the whole chain come first, so that a chain refused for its shape,
	// expiry or size costs no signature verification.
	keys := make([][]byte, 0, len(env.SenderDelegation)+1) // keys[i] signs delegation i; the last one the request
	keys = append(keys, env.SenderPubKey)
	hashes := make([]RequestID, len(env.SenderDelegation))
	seen := map[string]bool{string(env.SenderPubKey): true}
	for i, sd := range env.SenderDelegation {
		var d delegation
		if err := icDecMode.Unmarshal(sd.Delegation, &d); err != nil || d.PubKey == nil {
			return ingressError(IngressDelegation, "Invalid delegation: delegation %d is malformed: %v", i, err)
		}
		h, err := RequestIDOfContent(sd.Delegation)
		if err != nil {
			return ingressError(IngressDelegation, "Invalid delegation: delegation %d: %v", i, err)
		}
		hashes[i] = h
		if d.Expiration < uint64(now.UnixNano()) {
			return ingressError(IngressDelegation, "Invalid delegation: Delegation %d has expired: expiration %s is before the current time %s",
				i, time.Unix(0, int64(min(d.Expiration, 1<<63-1))).UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
		}
		if seen[string(d.PubKey)] {
			return ingressError(IngressDelegation, "Invalid delegation: Chain of delegations contains a cycle: public key %x appears twice", d.PubKey)
		}
		seen[string(d.PubKey)] = true
		if d.Targets != nil {
			if len(*d.Targets) > maxTargets {
				return ingressError(IngressDelegation, "Invalid delegation: delegation %d has %d targets, at most %d are allowed", i, len(*d.Targets), maxTargets)
			}
			req.Targets = intersect(req.Targets, *d.Targets)
		}
		keys = append(keys, d.PubKey)
	}
	costly := 0
	for i, k := range keys {
		switch {
		case isCanisterSigKey(k):
			costly++
			if len(p.RootKey) == 0 {
				if i < len(env.SenderDelegation) {
					return ingressError(IngressDelegation, "Invalid delegation: %v", ErrCanisterSigNoRootKey)
				}
				return ingressError(IngressSignature, "Invalid signature: %v", ErrCanisterSigNoRootKey)
			}
		case isRSAWebAuthnKey(k):
			costly++
		}
	}
	if costly > maxCostlySigs {
		return ingressError(IngressDelegation, "Invalid delegation: %d canister or RSA signatures in one request, at most %d are allowed", costly, maxCostlySigs)
	}
	for i, sd := range env.SenderDelegation {
		if err := p.verifySignature(keys[i], delegationDomain, hashes[i][:], sd.Signature); err != nil {
			return ingressError(IngressDelegation, "Invalid delegation: Invalid signature of delegation %d: %v", i, err)
		}
	}
	key := keys[len(keys)-1]
	if err := p.verifySignature(key, requestSignDomain, req.ID[:], env.SenderSig); err != nil {
		return ingressError(IngressSignature, "Invalid signature: Invalid basic signature: %v", err)
	}
	if req.Type != RequestReadState && !req.TargetAllowed(req.Canister) {
		return ingressError(IngressDelegation, "Invalid delegation: Canister %s is not one of the delegation targets", req.Canister)
	}
	return nil
}

// intersect narrows the allowed targets by one delegation's list.
func intersect(have, next [][]byte) [][]byte {
	if have == nil {
		return append([][]byte{}, next...)
	}
	out := [][]byte{}
	for _, h := range have {
		for _, n := range next {
			if bytes.Equal(h, n) {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

// verifySignature checks sig over domain ‖ hash by a DER public key: Ed25519, ECDSA secp256k1 or
// ECDSA P-256 (r‖s over sha256, high S accepted as the IC does), a canister signature against the
// policy's root key, or a WebAuthn assertion by a COSE key.
func (p IngressPolicy) verifySignature(pubDER, domain, hash, sig []byte) error {
	msg := make([]byte, 0, len(domain)+len(hash))
	msg = append(append(msg, domain...), hash...)
	switch {
	case len(pubDER) == len(ed25519DERPrefix)+ed25519.PublicKeySize && bytes.HasPrefix(pubDER, ed25519DERPrefix):
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("ed25519 signature of %d bytes", len(sig))
		}
		if !ed25519.Verify(ed25519.PublicKey(pubDER[len(ed25519DERPrefix):]), msg, sig) {
			return errors.New("ed25519 signature verification failed")
		}
		return nil
	case len(pubDER) == len(secp256k1DERPrefix)+65 && bytes.HasPrefix(pubDER, secp256k1DERPrefix):
		pk, err := secp256k1.ParsePubKey(pubDER[len(secp256k1DERPrefix):], secp256k1.S256())
		if err != nil {
			return fmt.Errorf("secp256k1 public key: %w", err)
		}
		r, s, err := splitRS(sig)
		if err != nil {
			return err
		}
		h := sha256.Sum256(msg)
		if !(&secp256k1.Signature{R: r, S: s}).Verify(h[:], pk) {
			return errors.New("secp256k1 signature verification failed")
		}
		return nil
	case len(pubDER) == len(p256DERPrefix)+65 && bytes.HasPrefix(pubDER, p256DERPrefix):
		key, err := x509.ParsePKIXPublicKey(pubDER)
		if err != nil {
			return fmt.Errorf("P-256 public key: %w", err)
		}
		pk, ok := key.(*ecdsa.PublicKey)
		if !ok || pk.Curve != elliptic.P256() {
			return errors.New("P-256 public key expected")
		}
		r, s, err := splitRS(sig)
		if err != nil {
			return err
		}
		h := sha256.Sum256(msg)
		if !ecdsa.Verify(pk, h[:], r, s) {
			return errors.New("P-256 signature verification failed")
		}
		return nil
	case isCanisterSigKey(pubDER):
		if len(p.RootKey) == 0 {
			return ErrCanisterSigNoRootKey
		}
		return p.CanisterSigs.Verify(p.RootKey, pubDER, msg, sig)
	case isWebAuthnKey(pubDER):
		return VerifyWebAuthnSignature(pubDER, msg, sig)
	default:
		return fmt.Errorf("unsupported public key %x", pubDER)
	}
}

func splitRS(sig []byte) (*big.Int, *big.Int, error) {
	if len(sig) != 64 {
		return nil, nil, fmt.Errorf("ECDSA signature of %d bytes, want 64 (r‖s)", len(sig))
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, nil, errors.New("ECDSA signature with zero r or s")
	}
	return r, s, nil
}
