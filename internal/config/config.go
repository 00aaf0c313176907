// Package config loads icws configuration from ICWS_* environment variables, validates it, and
// lists every variable a command reads (for `icws env` and the README).
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is prepended (with "_") to every variable name.
const Prefix = "ICWS"

// Log is the logging configuration of every command that logs.
type Log struct {
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"text" desc:"log format on stderr: text or json"`
}

// Validate checks the level and format names.
func (c *Log) Validate() error {
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return err
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("%s_LOG_FORMAT=%q: must be text or json", Prefix, c.LogFormat)
	}
	return nil
}

// LogSettings gives generic code access to the embedded Log of a command's configuration.
func (c *Log) LogSettings() *Log { return c }

// Logger builds the process logger described by LOG_LEVEL and LOG_FORMAT.
func (c *Log) Logger(w io.Writer) *slog.Logger {
	lvl, err := ParseLevel(c.LogLevel)
	if err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		// slog writes a duration as integer nanoseconds in JSON; "1.5s" is what an operator
		// reads, and what the text format shows.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Runtime tunes the Go runtime of a long-running process.
type Runtime struct {
	GCPercent int `envconfig:"GC_PERCENT" default:"50" desc:"garbage collector target of the process (Go's GOGC, which wins when set): how far the heap grows over live memory before a collection; 50 holds about a quarter less memory per idle session than Go's 100, at a CPU cost within noise (docs/BENCHMARKS.md)"`
}

// Validate checks the collector target.
func (c *Runtime) Validate() error {
	if c.GCPercent < 10 {
		return fmt.Errorf("%s_GC_PERCENT=%d: must be at least 10", Prefix, c.GCPercent)
	}
	return nil
}

// RuntimeSettings gives generic code access to the embedded Runtime of a command's configuration.
func (c *Runtime) RuntimeSettings() *Runtime { return c }

// Apply sets the collector target, unless the environment (getenv) sets GOGC: the Go runtime has
// applied that one already, and an operator who sets it means it.
func (c *Runtime) Apply(getenv func(string) string) {
	if getenv("GOGC") == "" && c.Validate() == nil {
		debug.SetGCPercent(c.GCPercent)
	}
}

// Common is the configuration every long-running role reads.
type Common struct {
	Log
	Runtime
	DataDir      string `envconfig:"DATA_DIR" default:"./data" desc:"directory for the gateway key and the embedded NATS store"`
	IdentityFile string `envconfig:"IDENTITY_FILE" default:"" desc:"gateway Ed25519 key (PKCS#8 DER, the Rust gateway's data/key_pair format); empty means key_pair in ICWS_DATA_DIR"`
	AdminListen  string `envconfig:"ADMIN_LISTEN" default:"127.0.0.1:9090" desc:"host:port of the admin HTTP server (/healthz, /readyz, /metrics)"`
	AdminPprof   bool   `envconfig:"ADMIN_PPROF" default:"false" desc:"serve the Go profiler (net/http/pprof) under /debug/pprof/ on the admin server; profiles show internals, keep the admin address private"`
}

// Validate checks the values envconfig cannot check by type.
func (c *Common) Validate() error {
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if err := c.Runtime.Validate(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return fmt.Errorf("%s_DATA_DIR is empty: must name a directory", Prefix)
	}
	if err := CheckHostPort(c.AdminListen); err != nil {
		return fmt.Errorf("%s_ADMIN_LISTEN=%q: %w", Prefix, c.AdminListen, err)
	}
	return nil
}

// IdentityPath is the key file to use: IDENTITY_FILE, or key_pair in DATA_DIR.
func (c *Common) IdentityPath() string {
	if c.IdentityFile != "" {
		return c.IdentityFile
	}
	return filepath.Join(c.DataDir, "key_pair")
}

// ParseLevel maps a LOG_LEVEL value to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%s_LOG_LEVEL=%q: must be debug, info, warn or error", Prefix, s)
}

// CheckHostPort accepts host:port with a numeric port (host may be empty: all interfaces).
func CheckHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port (for example 127.0.0.1:9090): %w", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	return nil
}

// Validator is implemented by configuration structs that check their own ranges.
type Validator interface {
	Validate() error
}

// Error is a configuration error: the process should exit with status 2.
type Error struct{ Err error }

func (e *Error) Error() string { return "configuration: " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Load fills spec (a pointer to a struct with envconfig tags) from ICWS_* variables and runs its
// Validate method if it has one. Every failure is an *Error naming the variable.
func Load(spec any) error {
	if err := envconfig.Process(Prefix, spec); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return &Error{fmt.Errorf("%s=%q: cannot parse as %s: %w", pe.KeyName, pe.Value, pe.TypeName, pe.Err)}
		}
		return &Error{err}
	}
	if v, ok := spec.(Validator); ok {
		if err := v.Validate(); err != nil {
			return &Error{err}
		}
	}
	return nil
}

// Var describes one environment variable.
type Var struct {
	Name    string
	Default string
	Desc    string
}

// Vars lists the variables that spec reads, in field order, following envconfig's naming rules:
// embedded structs keep the prefix, named struct fields add their own key. Only fields with an
// envconfig tag are configuration; untagged fields (such as a Logger) are set by code.
func Vars(spec any) []Var {
	t := reflect.TypeOf(spec)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return appendVars(nil, Prefix, t)
}

func appendVars(out []Var, prefix string, t reflect.Type) []Var {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || isTrue(f.Tag.Get("ignored")) {
			continue
		}
		tag := f.Tag.Get("envconfig")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !decodes(ft) {
			inner := prefix
			if !f.Anonymous {
				if tag == "" {
					continue
				}
				inner = prefix + "_" + strings.ToUpper(tag)
			}
			out = appendVars(out, inner, ft)
			continue
		}
		if tag == "" {
			continue
		}
		out = append(out, Var{
			Name:    prefix + "_" + strings.ToUpper(tag),
			Default: f.Tag.Get("default"),
			Desc:    f.Tag.Get("desc"),
		})
	}
	return out
}

func isTrue(s string) bool { b, _ := strconv.ParseBool(s); return b }

func decodes(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	for _, it := range []reflect.Type{
		reflect.TypeFor[envconfig.Decoder](),
		reflect.TypeFor[envconfig.Setter](),
		reflect.TypeFor[interface{ UnmarshalText([]byte) error }](),
		reflect.TypeFor[interface{ UnmarshalBinary([]byte) error }](),
	} {
		if t.Implements(it) || p.Implements(it) {
			return true
		}
	}
	return false
}
