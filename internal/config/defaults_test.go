package config_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/internal/testkit"
)

// everyKind has a default of every field type the project's configurations use, laid out the
// ways they use them (embedded, named nested, pointer to a struct, ignored, untagged).
type everyKind struct {
	config.Log
	Inner struct {
		Wait time.Duration `envconfig:"INNER_WAIT" default:"1m30s"`
	} `envconfig:"NESTED"`
	Ptr *struct {
		N int `envconfig:"PTR_N" default:"7"`
	}
	Text      string        `envconfig:"TEXT" default:"a b"`
	Empty     string        `envconfig:"EMPTY" default:""`
	On        bool          `envconfig:"ON" default:"true"`
	Int       int           `envconfig:"INT" default:"-42"`
	Hex       int           `envconfig:"HEX" default:"0x10"`
	Int32     int32         `envconfig:"INT32" default:"4194304"`
	Int64     int64         `envconfig:"INT64" default:"10000"`
	Uint64    uint64        `envconfig:"UINT64" default:"18446744073709551615"`
	Float     float64       `envconfig:"FLOAT" default:"200.5"`
	Duration  time.Duration `envconfig:"DURATION" default:"6m"`
	Size      config.Bytes  `envconfig:"SIZE" default:"256MiB"`
	List      []string      `envconfig:"LIST" default:"inbound,unicast-saturate"`
	Numbers   []int         `envconfig:"NUMBERS" default:"100,1000"`
	Blank     []string      `envconfig:"BLANK" default:" "`
	NoDefault []string      `envconfig:"NO_DEFAULT"`
	Ignored   int           `envconfig:"IGNORED" default:"9" ignored:"true"`
	Untagged  int
	_         int `default:"9"` // unexported: envconfig skips it, so must Defaults
}

func TestDefaultsAreWhatEnvconfigReadsFromAnEmptyEnvironment(t *testing.T) {
	testkit.ClearEnvironment(t)
	var fromEnv everyKind
	if err := envconfig.Process(config.Prefix, &fromEnv); err != nil {
		t.Fatal(err)
	}
	var got everyKind
	if err := config.Defaults(&got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fromEnv) {
		t.Fatalf("Defaults = %+v\nenvconfig = %+v", got, fromEnv)
	}
	if got.Ptr == nil || got.Ptr.N != 7 || got.Size != 256<<20 || got.Hex != 16 || len(got.Numbers) != 2 || got.Blank == nil {
		t.Fatalf("Defaults = %+v", got)
	}
	if got.Ignored != 0 || got.LogLevel != "info" {
		t.Fatalf("ignored field set or embedded one missed: %+v", got)
	}
	if m := config.MustDefaults[everyKind](); !reflect.DeepEqual(m, got) {
		t.Fatalf("MustDefaults = %+v, Defaults = %+v", m, got)
	}
}

func TestDefaultsRefusesWhatItCannotParse(t *testing.T) {
	for name, spec := range map[string]any{
		"not a pointer": everyKind{},
		"bad duration": &struct {
			D time.Duration `default:"soon"`
		}{},
		"overflow": &struct {
			N int32 `default:"4294967296"`
		}{},
		"bad size": &struct {
			S config.Bytes `default:"12 parsecs"`
		}{},
		"bad list item": &struct {
			L []int `default:"1,two"`
		}{},
		"map": &struct {
			M map[string]int `default:"a:1"`
		}{},
	} {
		t.Run(name, func(t *testing.T) {
			err := config.Defaults(spec)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "config defaults") {
				t.Fatalf("error %q does not say what failed", err)
			}
		})
	}
}
