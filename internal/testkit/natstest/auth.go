package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// StartWith starts a JetStream nats-server on a free loopback port like StartServer, after
// configure has changed its options (users, TLS, operator mode); it stops at cleanup. It returns
// the server and its client URL (without credentials).
func StartWith(t testing.TB, configure func(*server.Options)) (*server.Server, string) {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	configure(opts)
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		t.Fatalf("nats-server: not ready after %s", readyTimeout)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s, s.ClientURL()
}

// WriteFile writes data to name in dir with mode 0600 and returns its path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// UserSeed makes a user nkey and returns its seed (what a seed file holds) and public key.
func UserSeed(t testing.TB) (seed []byte, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err = kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return seed, public
}

// Operator is a decentralised-auth chain made in the test: an operator, one account with
// JetStream, and the means to issue users of that account.
type Operator struct {
	Claims     *jwt.OperatorClaims
	AccountPub string
	AccountJWT string
	account    nkeys.KeyPair
	// JetStream needs a system account in operator mode; nothing else uses it.
	systemPub, systemJWT string
}

// NewOperator makes an operator and an account with unlimited JetStream signed by it.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "icws-test"
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	if oc, err = jwt.DecodeOperatorClaims(ojwt); err != nil {
		t.Fatal(err)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "ICWS"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	skp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	spub, _ := skp.PublicKey()
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	return &Operator{Claims: oc, AccountPub: apub, AccountJWT: ajwt, account: akp, systemPub: spub, systemJWT: sjwt}
}

// Configure puts the server in operator mode trusting o, with o's account preloaded.
func (o *Operator) Configure(t testing.TB, opts *server.Options) {
	t.Helper()
	res := &server.MemAccResolver{}
	if err := res.Store(o.AccountPub, o.AccountJWT); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(o.systemPub, o.systemJWT); err != nil {
		t.Fatal(err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{o.Claims}
	opts.AccountResolver = res
	opts.SystemAccount = o.systemPub
}

// Creds issues a user of o's account and returns its .creds file content (JWT and seed).
func (o *Operator) Creds(t testing.TB) []byte {
	t.Helper()
	seed, pub := UserSeed(t)
	uc := jwt.NewUserClaims(pub)
	ujwt, err := uc.Encode(o.account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// PKI is a certificate authority with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in a directory.
type PKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	ca                                               *x509.Certificate
	caKey                                            *ecdsa.PrivateKey
	dir                                              string
}

// NewPKI writes a fresh CA, a server certificate (IP SAN 127.0.0.1) and a client certificate into
// dir.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "icws test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{ca: ca, caKey: key, dir: dir}
	p.CA = WriteFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	p.ServerCert, p.ServerKey = p.Issue(t, "server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = p.Issue(t, "client", x509.ExtKeyUsageClientAuth)
	return p
}

// Issue writes a certificate signed by the CA (for 127.0.0.1) and its key, named name*.pem.
func (p *PKI) Issue(t testing.TB, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "icws test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = WriteFile(t, p.dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = WriteFile(t, p.dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

// ConfigureMutualTLS makes the server require TLS with a client certificate signed by the CA.
func (p *PKI) ConfigureMutualTLS(t testing.TB, opts *server.Options) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	opts.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	opts.TLS = true
	opts.TLSVerify = true
	opts.TLSTimeout = 5
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
