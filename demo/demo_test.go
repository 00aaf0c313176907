package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestPageCarriesConfigAsJSON(t *testing.T) {
	cfg := Config{
		GatewayURL:    "ws://127.0.0.1:8080",
		ICURL:         "http://127.0.0.1:4943",
		CanisterID:    "bkyz2-fmaaa-aaaaa-qaaaq-cai",
		AckIntervalMs: 300000,
	}
	h, err := Handler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := serve(t, h, "/", "")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	body, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`(?s)<script id="icws-config" type="application/json">(.*?)</script>`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no #icws-config in the page:\n%s", body)
	}
	var got Config
	if err := json.Unmarshal(m[1], &got); err != nil {
		t.Fatalf("#icws-config is not JSON (%v): %s", err, m[1])
	}
	if got != cfg {
		t.Errorf("#icws-config = %+v, want %+v", got, cfg)
	}
}

func TestConfigCannotBreakOutOfTheScript(t *testing.T) {
	h, err := Handler(Config{CanisterID: `</script><script>alert(1)</script>`})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(serve(t, h, "/", "").Body)
	if strings.Contains(string(body), "<script>alert(1)") {
		t.Fatalf("config value escaped the JSON script element:\n%s", body)
	}
}

func TestScriptServedWithETag(t *testing.T) {
	h, err := Handler(Config{})
	if err != nil {
		t.Fatal(err)
	}
	res := serve(t, h, "/app.js", "")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || len(body) != len(appJS) || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("GET /app.js: %d, %d bytes, %s", res.StatusCode, len(body), res.Header.Get("Content-Type"))
	}
	tag := res.Header.Get("ETag")
	if res := serve(t, h, "/app.js", tag); res.StatusCode != http.StatusNotModified {
		t.Errorf("GET /app.js with If-None-Match %s: %d, want 304", tag, res.StatusCode)
	}
	if res := serve(t, h, "/other", ""); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", res.StatusCode)
	}
}

func serve(t *testing.T, h http.Handler, path, ifNoneMatch string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}
