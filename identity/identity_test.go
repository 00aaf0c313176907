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
)

// testdata/test_key_pair is the public test key of the Rust gateway
// (ic-websocket-gateway src/ic-identity/tests/data/test_key_pair), written by ring; the Rust
// gateway's own unit test expects this principal for it.
const rustTestPrincipal = "7cio4-7j2lx-6f3tp-mkfw7-t4amd-tjphs-hkits-6qa7x-hmnmx-yvwxk-nqe"

func TestRustGatewayKeyFile(t *testing.T) {
	p, err := Principal(filepath.Join("testdata", "test_key_pair"))
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != rustTestPrincipal {
		t.Fatalf("principal %s, want %s", p, rustTestPrincipal)
	}
}

func TestMarshalIsRingFormat(t *testing.T) {
	ring, err := os.ReadFile(filepath.Join("testdata", "test_key_pair"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := Parse(ring)
	if err != nil {
		t.Fatal(err)
	}
	der, err := Marshal(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(der, ring) {
		t.Fatalf("Marshal differs from ring's encoding:\n got  %x\n want %x", der, ring)
	}
}

func TestReadsPKCS8v1AndPEM(t *testing.T) {
	ring, err := os.ReadFile(filepath.Join("testdata", "test_key_pair"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := Parse(ring)
	if err != nil {
		t.Fatal(err)
	}
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
		if p.String() != rustTestPrincipal {
			t.Fatalf("%s: principal %s", name, p)
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
	ring, err := os.ReadFile(filepath.Join("testdata", "test_key_pair"))
	if err != nil {
		t.Fatal(err)
	}
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
