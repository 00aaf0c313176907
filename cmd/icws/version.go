package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
)

func versionCommand() command {
	return command{
		name:    "version",
		summary: "print the icws version, the Go version and the versions of key modules",
		run: func(_ context.Context, a *app, _ []string) error {
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return errors.New("no build information in this binary")
			}
			v := bi.Main.Version
			if v == "" {
				v = "(devel)"
			}
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					v += " " + s.Value
				}
			}
			fmt.Fprintf(a.stdout, "icws %s\n", v)
			fmt.Fprintf(a.stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			deps := map[string]string{}
			for _, d := range bi.Deps {
				dv := d.Version
				if d.Replace != nil {
					dv += " => " + d.Replace.Path + " " + d.Replace.Version
				}
				deps[d.Path] = dv
			}
			for _, m := range []string{"github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go", "github.com/aviate-labs/agent-go"} {
				dv, ok := deps[m]
				if !ok {
					dv = "(not linked)"
				}
				fmt.Fprintf(a.stdout, "%s %s\n", m, dv)
			}
			return nil
		},
	}
}
