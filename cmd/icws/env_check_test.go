package main

import (
	"strings"
	"testing"
)

func TestEnvCheckValidatesWithoutRunning(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      []string
		args     []string
		code     int
		inOutput string
	}{
		{"edge ok", []string{"ICWS_NATS_URL=nats://n1:4222"}, []string{"check", "edge"}, exitOK, "icws edge: configuration ok"},
		{"edge needs NATS", nil, []string{"check", "edge"}, exitUsage, "ICWS_NATS_URL"},
		{"edge bad IC URL", []string{"ICWS_NATS_URL=nats://n1:4222", "ICWS_IC_URL=ftp://x"}, []string{"check", "edge"}, exitUsage, "ICWS_IC_URL"},
		{"edge root key not a BLS key", []string{"ICWS_NATS_URL=nats://n1:4222", "ICWS_IC_ROOT_KEY=00ff"}, []string{"check", "edge"}, exitUsage, "ICWS_IC_ROOT_KEY"},
		{"submitter bad IC URL", []string{"ICWS_NATS_URL=nats://n1:4222", "ICWS_IC_URL=ftp://x"}, []string{"check", "submitter"}, exitUsage, "ICWS_IC_URL"},
		{"poller unparsable duration", []string{"ICWS_NATS_URL=nats://n1:4222", "ICWS_POLL_INTERVAL=often"}, []string{"check", "poller"}, exitUsage, "ICWS_POLL_INTERVAL"},
		{"replica ok", []string{"ICWS_REPLICA_LISTEN=0.0.0.0:4943"}, []string{"check", "replica"}, exitOK, "configuration ok"},
		{"dev bad demo address", []string{"ICWS_DEMO_LISTEN=nowhere"}, []string{"check", "dev"}, exitUsage, "ICWS_DEMO_LISTEN"},
		{"unknown command", nil, []string{"check", "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"command without configuration", nil, []string{"check", "version"}, exitUsage, "no configuration"},
		{"bad arguments", nil, []string{"check"}, exitUsage, "usage: icws env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIcws(t, tc.env, append([]string{"env"}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.inOutput) {
				t.Fatalf("icws env %v with %v: exit %d, stdout %q, stderr %q; want exit %d mentioning %q",
					tc.args, tc.env, r.code, r.stdout, r.stderr, tc.code, tc.inOutput)
			}
		})
	}
}
