package edge

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
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/icws/icws/protocol"
)

func TestConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID = "bad.id"
	cfg.SendQueue = 0
	cfg.TLSCert = "x"
	cfg.Canisters = []string{"not a principal"}
	cfg.ResumeGrace = 0
	cfg.LiveSubscription = "client"
	cfg.MaxUnfinishedBytes = 1 << 20 // below the default ICWS_MAX_MESSAGE_BYTES
	err := cfg.validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"ICWS_EDGE_ID", "ICWS_SEND_QUEUE", "ICWS_TLS_KEY", "ICWS_CANISTERS", "ICWS_RESUME_GRACE", "ICWS_EDGE_LIVE_SUBSCRIPTION", "ICWS_MAX_UNFINISHED_BYTES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	ok := DefaultConfig()
	if err := ok.validate(); err != nil || ok.ID == "" {
		t.Fatalf("defaults: %v, id %q", err, ok.ID)
	}
}

func TestOpenTimeoutOriginAndNotRunning(t *testing.T) {
	v := newEnv(t)
	cfg := testConfig("e1")
	cfg.OpenTimeout = 200 * time.Millisecond
	cfg.AllowedOrigins = []string{"https://good.example"}
	e, err := New(cfg, Deps{NC: v.nc, JS: v.js, Gateway: v.gw})
	if err != nil {
		t.Fatal(err)
	}
	// Before Run the handler refuses.
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	re := v.startEdge(cfg)
	if _, resp, err := websocket.DefaultDialer.Dial(re.url, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin accepted: %v", err)
	}
	ws, _, err := websocket.DefaultDialer.Dial(re.url+"any/path", http.Header{"Origin": {"https://good.example"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if code, text := expectClose(t, ws); code != websocket.ClosePolicyViolation || !strings.Contains(text, "open timeout") {
		t.Fatalf("close %d %q", code, text)
	}
	if err := re.Ready(t.Context()); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

func TestTLS(t *testing.T) {
	v := newEnv(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	cfg := testConfig("tls")
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	e := v.startEdge(cfg)
	pool := x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(der)))
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ws, _, err := d.Dial("wss://"+e.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, hs, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if h, err := protocol.DecodeHandshake(hs); err != nil || !h.Gateway().Equal(v.gw) {
		t.Fatalf("handshake over TLS: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
