package icclient

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// fuzzRequestID is the request id the seeds' certificates answer.
var fuzzRequestID = protocol.RequestID{1, 2, 3}

// seedCertificates returns a request_status certificate (replied, delegated) and a read_state
// [subnet] certificate (root-signed), as the replica simulator would answer.
func seedCertificates(f *testing.F) (status, subnet []byte, rootKey []byte) {
	f.Helper()
	delegated, err := certauth.New(certauth.Options{Delegated: true})
	if err != nil {
		f.Fatal(err)
	}
	tr := certauth.Tree{"time": certauth.TimeLeaf(time.Now())}
	s := tr.Sub([]byte("request_status")).Sub(fuzzRequestID[:])
	s["status"], s["reply"] = []byte("replied"), []byte("DIDL\x00\x00")
	if status, err = delegated.Certify(tr.Node()); err != nil {
		f.Fatal(err)
	}
	root, err := certauth.New(certauth.Options{})
	if err != nil {
		f.Fatal(err)
	}
	tr = certauth.Tree{"time": certauth.TimeLeaf(time.Now())}
	root.AddSubnet(tr)
	if subnet, err = root.Certify(tr.Node()); err != nil {
		f.Fatal(err)
	}
	return status, subnet, root.RootKey()
}

func mustCBOR(f *testing.F, v any) []byte {
	f.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), b...)
}

// readCertificate is what SubmitCall and RequestStatus do with a certificate once it verified:
// everything but the signature check, which random input never passes.
func readCertificate(raw, rootKey []byte) {
	cert, err := certificate.Decode(raw)
	if err != nil {
		return
	}
	_, _ = cert.Time()
	_, _ = outcomeFromCertificate(cert, fuzzRequestID)
	_, _ = nodeKeysOf(cert, rootKey, testCanisterID)
}

func FuzzCallAnswer(f *testing.F) {
	status, _, rootKey := seedCertificates(f)
	f.Add(mustCBOR(f, map[string]any{"status": "replied", "certificate": status}))
	f.Add(mustCBOR(f, map[string]any{"status": "non_replicated_rejection", "reject_code": 3, "reject_message": "no", "error_code": "IC0302"}))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeCallAnswer(body)
		if err != nil {
			return
		}
		readCertificate(a.Certificate, rootKey)
	})
}

func FuzzReadStateAnswer(f *testing.F) {
	status, subnet, rootKey := seedCertificates(f)
	f.Add(mustCBOR(f, map[string]any{"certificate": status}))
	f.Add(mustCBOR(f, map[string]any{"certificate": subnet}))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeReadStateAnswer(body)
		if err != nil {
			return
		}
		readCertificate(a.Certificate, rootKey)
	})
}

func FuzzQueryAnswer(f *testing.F) {
	sig := map[string]any{"timestamp": uint64(1), "signature": make([]byte, 64), "identity": []byte{1, 2}}
	f.Add(mustCBOR(f, map[string]any{"status": "replied", "reply": map[string]any{"arg": []byte("DIDL\x00\x00")}, "signatures": []any{sig}}))
	f.Add(mustCBOR(f, map[string]any{"status": "rejected", "reject_code": 4, "reject_message": "no", "error_code": "IC0406", "signatures": []any{sig}}))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeQueryAnswer(body)
		if err != nil {
			return
		}
		signed, err := a.signedMap(fuzzRequestID)
		if err != nil {
			return
		}
		keys := &nodeKeys{keys: map[string]ed25519.PublicKey{string([]byte{1, 2}): make(ed25519.PublicKey, ed25519.PublicKeySize)}}
		_ = checkQuerySignatures(keys, a.Signatures, signed, time.Minute)
	})
}
