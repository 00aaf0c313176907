package client

import (
	"os"
	"testing"
	"time"
)

// TestServeFakeGateway is a manual harness, skipped unless ICWS_CLIENT_SERVE_FAKEGW is a duration:
// it serves the replica simulator and the in-test gateway (with resume) for that long and prints
// their addresses, so `icws connect` can be tried by hand without the real gateway.
func TestServeFakeGateway(t *testing.T) {
	v := os.Getenv("ICWS_CLIENT_SERVE_FAKEGW")
	if v == "" {
		t.Skip("set ICWS_CLIENT_SERVE_FAKEGW=<duration> to serve a fake gateway")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, defaultCanister(), true)
	os.Stderr.WriteString("FAKEGW gateway=" + e.gw.url + " ic=" + e.replicaURL + "\n")
	time.Sleep(d)
}
