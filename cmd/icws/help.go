package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

func helpCommand() command {
	return command{
		name:    "help",
		summary: "show the commands",
		run: func(_ context.Context, a *app, _ []string) error {
			a.usage(a.stdout)
			return nil
		},
	}
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintln(w, "icws: WebSocket gateway for Internet Computer canisters")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: icws <command>")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range a.commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration is read from ICWS_* environment variables; `icws env` lists them.")
}
