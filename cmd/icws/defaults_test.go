package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/client"
	"github.com/icws/icws/edge"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/internal/testkit"
	"github.com/icws/icws/poller"
	"github.com/icws/icws/replica"
	"github.com/icws/icws/replica/wscanister"
	"github.com/icws/icws/submitter"
)

// The envconfig tags are the one place a default is written: every DefaultConfig is what the
// commands read from an empty environment.
func TestDefaultConfigsAreTheEnvironmentDefaults(t *testing.T) {
	testkit.ClearEnvironment(t)
	for _, tc := range []struct {
		name     string
		defaults any
		fromEnv  any // pointer to a zero value of the same type
	}{
		{"edge.DefaultConfig", edge.DefaultConfig(), &edge.Config{}},
		{"submitter.DefaultConfig", submitter.DefaultConfig(), &submitter.Config{}},
		{"poller.DefaultConfig", poller.DefaultConfig(), &poller.Config{}},
		{"bus.DefaultTopology", bus.DefaultTopology(), &bus.Topology{}},
		{"replica.DefaultConfig", replica.DefaultConfig(), &replica.Config{}},
		{"wscanister.DefaultConfig", wscanister.DefaultConfig(), &wscanister.Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := envconfig.Process(config.Prefix, tc.fromEnv); err != nil {
				t.Fatal(err)
			}
			if got := reflect.ValueOf(tc.fromEnv).Elem().Interface(); !reflect.DeepEqual(tc.defaults, got) {
				t.Fatalf("%s = %+v\nenvironment defaults = %+v", tc.name, tc.defaults, got)
			}
		})
	}
}

// A variable that several configuration structs read (ICWS_DATA_DIR, ICWS_MAX_CANISTERS, ...) has
// one default, or a command would depend on which struct envconfig filled last.
func TestSharedVariablesHaveOneDefault(t *testing.T) {
	seen := map[string]string{} // variable → "default (command)"
	defaults := map[string]string{}
	for _, c := range commands() {
		if c.spec == nil {
			continue
		}
		for _, v := range config.Vars(c.spec()) {
			if d, ok := defaults[v.Name]; ok && d != v.Default {
				t.Errorf("%s: default %q in %s, %q in %s", v.Name, v.Default, c.name, d, seen[v.Name])
				continue
			}
			defaults[v.Name], seen[v.Name] = v.Default, c.name
		}
	}
}

// The commands that stand in for a library's caller default to the library's own defaults.
func TestCommandDefaultsAreTheLibraryDefaults(t *testing.T) {
	testkit.ClearEnvironment(t)
	var connect connectConfig
	var bench benchConfig
	var gw GatewayConfig
	for _, spec := range []any{&connect, &bench, &gw} {
		if err := envconfig.Process(config.Prefix, spec); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		got, want time.Duration
	}{
		{"ICWS_CONNECT_ACK_INTERVAL", connect.AckInterval, client.DefaultAckInterval},
		{"ICWS_CONNECT_RESUME_TIMEOUT", connect.ResumeTimeout, client.DefaultResumeTimeout},
		{"ICWS_CONNECT_MAX_CERT_AGE", connect.MaxCertAge, client.DefaultMaxCertAge},
		{"ICWS_BENCH_ACK_INTERVAL (the demo canister's)", bench.AckInterval, wscanister.DefaultConfig().AckInterval},
	} {
		if tc.got != tc.want {
			t.Errorf("%s defaults to %s, the library to %s", tc.name, tc.got, tc.want)
		}
	}
	if gw.ICURL != mainnetURL {
		t.Errorf("ICWS_IC_URL defaults to %q, mainnetURL is %q", gw.ICURL, mainnetURL)
	}
}
