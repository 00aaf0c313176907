package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/principal"
)

// ringKeyFile is a key file as ring (and so the Rust gateway's data/key_pair) writes it: a raw DER
// PKCS#8 v2 document (RFC 5958 OneAsymmetricKey, version 1) holding the Ed25519 seed and, in the
// [1] field, the public key. It is built byte by byte here from the format, for a fixed seed.
func ringKeyFile(t *testing.T) (file []byte, priv ed25519.PrivateKey) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	priv = ed25519.NewKeyFromSeed(seed)
	file = append([]byte{0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}, seed...)
	file = append(file, 0xa1, 0x23, 0x03, 0x21, 0x00)
	file = append(file, priv.Public().(ed25519.PublicKey)...)
	return file, priv
}

// wantPrincipal is the self-authenticating principal of the key, derived independently of the
// package: SHA-224 of the DER SubjectPublicKeyInfo plus the 0x02 suffix.
func wantPrincipal(t *testing.T, priv ed25519.PrivateKey) string {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return principal.NewSelfAuthenticating(spki).String()
}

func TestRingFormatKeyFile(t *testing.T) {
	file, priv := ringKeyFile(t)
	path := filepath.Join(t.TempDir(), "key_pair")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Principal(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := wantPrincipal(t, priv); p.String() != want {
		t.Fatalf("principal %s, want %s", p, want)
	}
}

func TestMarshalIsRingFormat(t *testing.T) {
	ring, priv := ringKeyFile(t)
	der, err := Marshal(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(der, ring) {
		t.Fatalf("Marshal differs from ring's encoding:\n got  %x\n want %x", der, ring)
	}
}

func TestReadsPKCS8v1AndPEM(t *testing.T) {
	ring, priv := ringKeyFile(t)
	want := wantPrincipal(t, priv)
	v1, err := x509.MarshalPKCS8PrivateKey(priv) // Go writes v1, without the public key
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"v1.der": v1,
		"v1.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: v1}),
		"v2.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ring}),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := Principal(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.String() != want {
			t.Fatalf("%s: principal %s, want %s", name, p, want)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key_pair")
	id, created, err := LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a missing file")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	dst, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v, want 0700", dst.Mode().Perm())
	}
	before, _ := os.ReadFile(path)

	id2, created, err := LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("created = true for an existing file")
	}
	if id.Sender().String() != id2.Sender().String() {
		t.Fatalf("principal changed on reload: %s vs %s", id.Sender(), id2.Sender())
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("key file rewritten")
	}
	// The file is what ring writes: v2 with the public key, raw DER.
	priv, err := Parse(after)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := Marshal(priv); !bytes.Equal(want, after) || len(after) != 85 {
		t.Fatalf("created file is not ring's 85-byte PKCS#8 v2: %x", after)
	}
	// And the identity signs with that key.
	sig := id2.Sign([]byte("msg"))
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), []byte("msg"), sig) {
		t.Fatal("identity does not sign with the file's key")
	}
}

func TestCorruptFiles(t *testing.T) {
	ring, _ := ringKeyFile(t)
	mismatched := bytes.Clone(ring)
	mismatched[len(mismatched)-1] ^= 1
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte("hello world"), "not a PKCS#8"},
		{"truncated", ring[:40], "not a PKCS#8"},
		{"wrong public key", mismatched, "does not match"},
		{"trailing bytes", append(bytes.Clone(ring), 0), "after the end"},
		{"pem of something else", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ring}), "PRIVATE KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key_pair")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreate(path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming the file and %q", err, tc.want)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, tc.data) {
				t.Fatal("corrupt key file overwritten")
			}
		})
	}
	// A non-Ed25519 key.
	t.Run("not ed25519", func(t *testing.T) {
		der, _ := x509.MarshalPKCS8PrivateKey(ed25519Key(t))
		der = bytes.Replace(der, []byte{0x06, 0x03, 0x2b, 0x65, 0x70}, []byte{0x06, 0x03, 0x2b, 0x65, 0x71}, 1) // Ed448 OID
		if _, err := Parse(der); err == nil || !strings.Contains(err.Error(), "not Ed25519") {
			t.Fatalf("got %v", err)
		}
	})
}

func ed25519Key(t *testing.T) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}
