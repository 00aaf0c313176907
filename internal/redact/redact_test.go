package redact

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://icws:s3cret@127.0.0.1:4222", "nats://redacted@127.0.0.1:4222"},
		{"nats://t0ken@n1:4222", "nats://redacted@n1:4222"},
		{"nats://a:b@n1:4222,nats://n2:4222,tls://c:d@n3:4222", "nats://redacted@n1:4222,nats://n2:4222,tls://redacted@n3:4222"},
		{"nats://us@r:p@ss@n1:4222", "nats://redacted@n1:4222"},
		{"user:pass@n1:4222", "redacted@n1:4222"},
		{"https://u:p@icp-api.io/api", "https://redacted@icp-api.io/api"},
		{"nats://u:p%20q@n1:4222 ", "nats://redacted@n1:4222 "},
		{"ws://127.0.0.1:8080/?token=QTOKEN&icws-resume=1", "ws://127.0.0.1:8080/?token=redacted&icws-resume=redacted"},
		{"http://u:p@ic.example/?token=Q#frag", "http://redacted@ic.example/?token=redacted"},
		{"https://ic.example/?flag", "https://ic.example/?flag"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestErrorMasksEverySecretForm(t *testing.T) {
	const urls = "nats://icws:p%40ss%20word@n1:4222,nats://t0kenXYZ@n2:4222"
	// What url.Parse returns for a URL with a bad port: the whole URL, credentials included.
	parseErr := &url.Error{Op: "parse", URL: "nats://icws:p%40ss%20word@n1:badport", Err: errors.New(`invalid port ":badport" after host`)}
	for _, err := range []error{
		errors.New("dial nats://icws:p%40ss%20word@n1:4222: refused"),
		fmt.Errorf("auth as icws with p@ss word failed: %w", fs.ErrPermission),
		fmt.Errorf("token t0kenXYZ rejected"),
		parseErr,
	} {
		masked := Error(err, urls)
		msg := masked.Error()
		for _, secret := range []string{"p%40ss%20word", "p@ss word", "t0kenXYZ"} {
			if strings.Contains(msg, secret) {
				t.Errorf("Error(%q) = %q still holds %q", err, msg, secret)
			}
		}
		if !errors.Is(masked, err) {
			t.Errorf("Error(%q) hides the original from errors.Is", err)
		}
	}
	if got := Error(fs.ErrNotExist, urls); got != fs.ErrNotExist {
		t.Errorf("an error without secrets was wrapped: %v", got)
	}
	if Error(nil, urls) != nil {
		t.Error("Error(nil) is not nil")
	}
}

func TestStringKeepsTextWithoutSecrets(t *testing.T) {
	const msg = "nats: no servers available for connection"
	if got := String(msg, "nats://n1:4222,nats://n2:4222"); got != msg {
		t.Errorf("String changed %q to %q", msg, got)
	}
	if got := String("connect to nats://u:pw@n1:4222", "nats://u:pw@n1:4222"); got != "connect to nats://redacted@n1:4222" {
		t.Errorf("String = %q", got)
	}
}
