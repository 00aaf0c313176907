package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

type Inner struct {
	Size Bytes `envconfig:"SIZE" default:"1MiB" desc:"a size"`
}

type spec struct {
	Common
	Inner
	Wait   time.Duration `envconfig:"WAIT" default:"1s" desc:"a wait"`
	Nested struct {
		X int `envconfig:"X" default:"3" desc:"x"`
	} `envconfig:"NESTED"`
	Untagged string
}

func TestLoadDefaults(t *testing.T) {
	var s spec
	if err := Load(&s); err != nil {
		t.Fatal(err)
	}
	if s.LogLevel != "info" || s.Size != 1<<20 || s.Wait != time.Second || s.Nested.X != 3 {
		t.Fatalf("defaults not applied: %+v", s)
	}
	if got := s.IdentityPath(); got != "data/key_pair" {
		t.Fatalf("IdentityPath = %q", got)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"ICWS_LOG_LEVEL", "loud"},
		{"ICWS_LOG_FORMAT", "xml"},
		{"ICWS_ADMIN_LISTEN", "nonsense"},
		{"ICWS_ADMIN_LISTEN", "127.0.0.1:99999"},
		{"ICWS_WAIT", "soon"},
		{"ICWS_SIZE", "12 parsecs"},
		{"ICWS_NESTED_X", "three"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.key, tc.value)
			var s spec
			err := Load(&s)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q does not name %s", err, tc.key)
			}
		})
	}
}

func TestVars(t *testing.T) {
	var names []string
	for _, v := range Vars(&spec{}) {
		names = append(names, v.Name)
		if v.Desc == "" {
			t.Errorf("%s has no description", v.Name)
		}
	}
	want := "ICWS_LOG_LEVEL ICWS_LOG_FORMAT ICWS_GC_PERCENT ICWS_DATA_DIR ICWS_IDENTITY_FILE ICWS_ADMIN_LISTEN ICWS_ADMIN_PPROF ICWS_SIZE ICWS_WAIT ICWS_NESTED_X"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("Vars = %s\nwant   %s", got, want)
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Bytes
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"256MiB", 256 << 20, true}, {"8GiB", 8 << 30, true},
		{"1KB", 1000, true}, {"10B", 10, true}, {"-1", 0, false}, {"MiB", 0, false}, {"1.5GiB", 0, false},
		{"99999999999TiB", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
	if s := Bytes(256 << 20).String(); s != "256MiB" {
		t.Errorf("String = %s", s)
	}
}

func TestJSONLogsWriteDurationsAsText(t *testing.T) {
	var out bytes.Buffer
	(&Log{LogLevel: "info", LogFormat: "json"}).Logger(&out).Info("x", "grace", 1500*time.Millisecond)
	if !strings.Contains(out.String(), `"grace":"1.5s"`) {
		t.Fatalf("log line %s", out.String())
	}
}
