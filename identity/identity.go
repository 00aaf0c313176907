// Package identity keeps the gateway's Ed25519 key in a PKCS#8 file that the Rust
// ic-websocket-gateway can read too (its data/key_pair), so a deployment keeps its principal
// when it moves from one gateway to the other.
//
// The file is raw DER, not PEM. The Rust gateway writes it with ring's
// Ed25519KeyPair::generate_pkcs8, which produces a PKCS#8 v2 document (RFC 5958 OneAsymmetricKey,
// version 1) that carries the public key in a context-specific [1] field; ring refuses v1 documents
// without the public key, so this package always writes v2 and reads both.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	agentid "github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
)

var oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}

// oneAsymmetricKey is RFC 5958's PrivateKeyInfo/OneAsymmetricKey.
type oneAsymmetricKey struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
	Attributes asn1.RawValue `asn1:"optional,tag:0"`
	PublicKey  asn1.RawValue `asn1:"optional,tag:1"`
}

// Marshal encodes a key as PKCS#8 v2 DER, byte for byte as ring writes it:
// the public key sits in an explicitly tagged [1] BIT STRING.
func Marshal(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("ed25519 private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	seed, err := asn1.Marshal(priv.Seed())
	if err != nil {
		return nil, err
	}
	pubBits, err := asn1.Marshal(asn1.BitString{Bytes: priv.Public().(ed25519.PublicKey), BitLength: 8 * ed25519.PublicKeySize})
	if err != nil {
		return nil, err
	}
	der, err := asn1.Marshal(oneAsymmetricKey{
		Version:    1,
		Algorithm:  pkix.AlgorithmIdentifier{Algorithm: oidEd25519},
		PrivateKey: seed,
		PublicKey:  asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: pubBits},
	})
	if err != nil {
		return nil, fmt.Errorf("encode pkcs#8: %w", err)
	}
	return der, nil
}

// Parse decodes a PKCS#8 v1 or v2 Ed25519 key (DER, or PEM "PRIVATE KEY"). When the document
// carries a public key, it must match the private key.
func Parse(data []byte) (ed25519.PrivateKey, error) {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" {
			return nil, errors.New("not a PEM \"PRIVATE KEY\" block")
		}
		data = block.Bytes
	}
	if len(data) == 0 {
		return nil, errors.New("empty key file")
	}
	var k oneAsymmetricKey
	rest, err := asn1.Unmarshal(data, &k)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 document: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("not a PKCS#8 document: %d bytes after the end", len(rest))
	}
	if k.Version != 0 && k.Version != 1 {
		return nil, fmt.Errorf("PKCS#8 version %d is not supported (want 0 or 1)", k.Version)
	}
	if !k.Algorithm.Algorithm.Equal(oidEd25519) {
		return nil, fmt.Errorf("key algorithm %s is not Ed25519 (%s)", k.Algorithm.Algorithm, oidEd25519)
	}
	var seed []byte
	if rest, err := asn1.Unmarshal(k.PrivateKey, &seed); err != nil || len(rest) != 0 {
		return nil, errors.New("Ed25519 private key is not an OCTET STRING")
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("Ed25519 seed has %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if len(k.PublicKey.FullBytes) > 0 {
		if k.Version != 1 {
			return nil, errors.New("PKCS#8 v1 document carries a public key")
		}
		pub, err := publicKeyField(k.PublicKey)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pub, priv.Public().(ed25519.PublicKey)) {
			return nil, errors.New("public key in the file does not match its private key")
		}
	}
	return priv, nil
}

// publicKeyField reads the [1] public key: ring tags the BIT STRING explicitly (a constructed [1]
// around it); RFC 5958 says IMPLICIT (a primitive [1] holding the BIT STRING's contents).
func publicKeyField(v asn1.RawValue) ([]byte, error) {
	var bits asn1.BitString
	if v.IsCompound {
		if rest, err := asn1.Unmarshal(v.Bytes, &bits); err != nil || len(rest) != 0 {
			return nil, errors.New("public key field is not a BIT STRING")
		}
	} else {
		if len(v.Bytes) < 1 || v.Bytes[0] != 0 {
			return nil, errors.New("public key field is not a whole-byte BIT STRING")
		}
		bits = asn1.BitString{Bytes: v.Bytes[1:], BitLength: 8 * (len(v.Bytes) - 1)}
	}
	if bits.BitLength != 8*ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key has %d bits, want %d", bits.BitLength, 8*ed25519.PublicKeySize)
	}
	return bits.Bytes, nil
}

// ErrKeyFileMode means the key file may be read or written by users other than its owner.
var ErrKeyFileMode = errors.New("gateway key file is accessible to group or others")

// Load reads the key file at path. A file that group or others may read or write is refused
// (ErrKeyFileMode): whoever reads the key can sign as the gateway.
func Load(path string) (*agentid.Ed25519Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read gateway key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read gateway key: %w", err)
	}
	if err := checkMode(path, st.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read gateway key: %w", err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("gateway key %s: larger than %d bytes, not a key file", path, maxKeyFileBytes)
	}
	priv, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("gateway key %s: %w", path, err)
	}
	return newIdentity(priv)
}

// maxKeyFileBytes bounds what Load reads: a PKCS#8 Ed25519 key, even as PEM, is under 200 bytes.
const maxKeyFileBytes = 4096

// checkMode refuses a key file whose permission bits let group or others read or write it.
// Windows has no such bits; its ACLs are the operator's business.
func checkMode(path string, mode fs.FileMode) error {
	if runtime.GOOS == "windows" || mode.Perm()&0o077 == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s has mode %04o; only its owner may read it: run `chmod 600 %s`", ErrKeyFileMode, path, mode.Perm(), path)
}

func newIdentity(priv ed25519.PrivateKey) (*agentid.Ed25519Identity, error) {
	id, err := agentid.NewEd25519Identity(priv.Public().(ed25519.PublicKey), priv)
	if err != nil {
		return nil, fmt.Errorf("gateway identity: %w", err)
	}
	return id, nil
}

// LoadOrCreate reads the key file at path, or creates one (mode 0600, parent directory 0700) when
// there is none. It never overwrites an existing file, not even a broken one.
func LoadOrCreate(path string, logger *slog.Logger) (*agentid.Ed25519Identity, bool, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id, err := Load(path)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate gateway key: %w", err)
	}
	der, err := Marshal(priv)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create gateway key directory: %w", err)
	}
	// O_EXCL: if another process created the file meanwhile, use that one instead.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		id, err := Load(path)
		return id, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create gateway key: %w", err)
	}
	if _, err := f.Write(der); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("write gateway key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, fmt.Errorf("write gateway key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, false, fmt.Errorf("write gateway key: %w", err)
	}
	id, err = newIdentity(priv)
	if err != nil {
		return nil, false, err
	}
	logger.Info("created gateway key", "path", path, "principal", id.Sender().String())
	return id, true, nil
}

// Principal is the gateway principal of the key file at path.
func Principal(path string) (principal.Principal, error) {
	id, err := Load(path)
	if err != nil {
		return principal.Principal{}, err
	}
	return id.Sender(), nil
}
